//! `messages watch`: a live line per text state change and per patient reply.

use nhsmail_agent::proto::event::Event as Kind;
use nhsmail_agent::proto::{Event, WatchEventsRequest};
use tonic::Request;

use crate::cli::OutputFormat;
use crate::connect::Agent;
use crate::convert::{enum_label, event_json, message_status_name};
use crate::output::{clean_line, local_time};

pub async fn run(agent: &Agent, format: OutputFormat, after: Option<u64>) -> anyhow::Result<()> {
    super::print_status_warnings(agent).await;
    let request = Request::new(WatchEventsRequest { after_event_id: after });
    let mut stream = agent.open_stream(agent.message_service().watch_events(request)).await?;
    loop {
        let event = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            event = stream.message() => event,
        };
        match event {
            Ok(Some(event)) => print_event(format, &event),
            Ok(None) => return Ok(()),
            Err(status) => return Err(agent.stream_failure(status).into()),
        }
    }
}

fn print_event(format: OutputFormat, event: &Event) {
    match format {
        OutputFormat::Json => crate::output::write_stdout(&format!("{}\n", event_json(event))),
        OutputFormat::Table => crate::output::write_stdout(&format!("{}\n", line(event))),
    }
}

fn line(event: &Event) -> String {
    let time = local_time(event.at.as_ref(), "-");
    match &event.event {
        Some(Kind::MessageStateChanged(change)) => format!(
            "{:>8}  {time}  text {}  {}  {} -> {}  {}",
            event.event_id,
            change.message_id,
            change.to,
            super::messages::from_label(change.from_status),
            enum_label(message_status_name(change.to_status), change.to_status),
            clean_line(&change.reason),
        ),
        Some(Kind::ReplyReceived(reply)) => format!(
            "{:>8}  {time}  reply from {}  to text {}  {}",
            event.event_id,
            reply.from,
            if reply.message_id.is_empty() { "-" } else { &reply.message_id },
            clean_line(&reply.text),
        ),
        None => format!("{:>8}  {time}  (an event this version of nhsmail-ctl does not know)", event.event_id),
    }
}
