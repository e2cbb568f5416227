//! `send` and `messages list|show|cancel`: submitting, inspecting and cancelling texts.

use std::io::{self, Read};

use anyhow::Context as _;
use nhsmail_agent::proto::{
    CancelMessageRequest, GetMessageRequest, ListMessagesRequest, ListMessagesResponse, Message, MessageStatus,
    SubmitMessageRequest,
};

use crate::cli::{MessagesListArgs, OutputFormat, SendArgs};
use crate::connect::Agent;
use crate::convert::{
    encoding_name, enum_label, list_messages_json, message_json, message_status_name, priority_name, priority_to_proto,
    status_to_proto, submit_response_json, timestamp_from,
};
use crate::error::CtlError;
use crate::output::{self, Details, Table, local_time, or_dash, truncate};

/// Characters of the text shown in `messages list`; `messages show` prints all of it.
const LIST_TEXT_CHARS: usize = 40;

pub async fn send(agent: &Agent, format: OutputFormat, args: SendArgs) -> anyhow::Result<()> {
    let text = if args.text == "-" { read_stdin_text()? } else { args.text };

    let request = agent.request(SubmitMessageRequest {
        to: args.to,
        text,
        priority: priority_to_proto(args.priority) as i32,
        send_after: args.send_after.map(timestamp_from),
        expires_at: args.expires_at.map(timestamp_from),
        idempotency_key: args.idempotency_key.unwrap_or_default(),
        client_reference: args.reference.unwrap_or_default(),
    });
    let response = agent.call(agent.message_service().submit_message(request)).await?;
    let message = response.message.as_ref().context("the agent's SubmitMessage response contains no message")?;

    output::print_result(format, || submit_response_json(&response), || render_submitted(message, response.duplicate));
    super::print_status_warnings(agent).await;
    Ok(())
}

/// Reads the whole of stdin as the text, without trailing line breaks (such as the one `echo` adds).
fn read_stdin_text() -> Result<String, CtlError> {
    let mut text = String::new();
    io::stdin()
        .read_to_string(&mut text)
        .map_err(|err| CtlError::Input(format!("cannot read the text from stdin (--text -): {err}")))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn render_submitted(message: &Message, duplicate: bool) -> String {
    let mut details = Details::new();
    details
        .row("ID", &message.id)
        .row("Status", enum_label(message_status_name(message.status), message.status))
        .row("To", &message.to)
        .row("Encoding", enum_label(encoding_name(message.encoding), message.encoding))
        .row("Parts", message.parts.to_string());
    if duplicate {
        details.row("Duplicate", "yes: the idempotency key was used before, so nothing new was queued");
    }
    details.render()
}

pub async fn list(agent: &Agent, format: OutputFormat, args: MessagesListArgs) -> anyhow::Result<()> {
    let status = args.status.map_or(MessageStatus::Unspecified, status_to_proto);
    let request = agent.request(ListMessagesRequest {
        status: status as i32,
        page_size: args.limit.unwrap_or(0),
        page_token: args.page_token.unwrap_or_default(),
    });
    let response = agent.call(agent.message_service().list_messages(request)).await?;

    output::print_result(format, || list_messages_json(&response), || render_list(&response));
    super::print_status_warnings(agent).await;
    Ok(())
}

fn render_list(response: &ListMessagesResponse) -> String {
    let mut table = Table::new(vec!["CREATED", "ID", "TO", "STATUS", "PARTS", "TEXT"]);
    for message in &response.messages {
        table.row(vec![
            local_time(message.created_at.as_ref(), "-"),
            message.id.clone(),
            message.to.clone(),
            enum_label(message_status_name(message.status), message.status),
            message.parts.to_string(),
            truncate(&message.text, LIST_TEXT_CHARS),
        ]);
    }

    let mut text = if table.is_empty() { "No messages.\n".to_string() } else { table.render() };
    if !response.next_page_token.is_empty() {
        text.push_str(&format!("\nMore messages: add --page-token {}\n", response.next_page_token));
    }
    text
}

pub async fn show(agent: &Agent, format: OutputFormat, id: String) -> anyhow::Result<()> {
    let request = agent.request(GetMessageRequest { id });
    let message = agent.call(agent.message_service().get_message(request)).await?;

    output::print_result(format, || message_json(&message), || render_message(&message));
    super::print_status_warnings(agent).await;
    Ok(())
}

pub async fn cancel(agent: &Agent, format: OutputFormat, id: String) -> anyhow::Result<()> {
    let request = agent.request(CancelMessageRequest { id });
    let message = agent.call(agent.message_service().cancel_message(request)).await?;

    output::print_result(format, || message_json(&message), || render_message(&message));
    super::print_status_warnings(agent).await;
    Ok(())
}

fn render_message(message: &Message) -> String {
    let details = Details::new()
        .row("ID", &message.id)
        .row("Status", enum_label(message_status_name(message.status), message.status))
        .row("Reason", or_dash(&message.status_reason))
        .row("To", &message.to)
        .row("Gateway address", or_dash(&message.gateway_address))
        .row("Priority", enum_label(priority_name(message.priority), message.priority))
        .row("Encoding", enum_label(encoding_name(message.encoding), message.encoding))
        .row("Parts", message.parts.to_string())
        .row("Length", message.length.to_string())
        .row("Created", local_time(message.created_at.as_ref(), "-"))
        .row("Send after", local_time(message.send_after.as_ref(), "as soon as possible"))
        .row("Expires", local_time(message.expires_at.as_ref(), "-"))
        .row("Sent", local_time(message.sent_at.as_ref(), "not yet"))
        .row("Updated", local_time(message.updated_at.as_ref(), "-"))
        .row("Attempts", message.attempts.to_string())
        .row("Next attempt", local_time(message.next_attempt_at.as_ref(), "-"))
        .row("Idempotency key", or_dash(&message.idempotency_key))
        .row("Reference", or_dash(&message.client_reference))
        .row("SMTP Message-ID", or_dash(&message.smtp_message_id))
        .row("Text", &message.text)
        .render();

    if message.events.is_empty() {
        return details;
    }

    let mut history = Table::new(vec!["TIME", "FROM", "TO", "REASON"]);
    for event in &message.events {
        history.row(vec![
            local_time(event.at.as_ref(), "-"),
            from_label(event.from_status),
            enum_label(message_status_name(event.to_status), event.to_status),
            event.reason.clone(),
        ]);
    }
    format!("{details}\nHistory\n{}", history.render())
}

/// Labels the state before a change; the first event of a text has none, which the table shows as "new".
pub fn from_label(from_status: i32) -> String {
    if from_status == nhsmail_agent::proto::MessageStatus::Unspecified as i32 {
        return "new".to_string();
    }
    enum_label(message_status_name(from_status), from_status)
}
