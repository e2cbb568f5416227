//! `replies list`: the replies patients sent back, newest first.

use nhsmail_agent::proto::{ListRepliesRequest, ListRepliesResponse};

use crate::cli::{OutputFormat, RepliesListArgs};
use crate::connect::Agent;
use crate::convert::{list_replies_json, timestamp_from};
use crate::output::{self, Table, local_time, or_dash, truncate};

/// Characters of the reply text shown in the table; `--output json` carries all of it.
const LIST_TEXT_CHARS: usize = 60;

pub async fn list(agent: &Agent, format: OutputFormat, args: RepliesListArgs) -> anyhow::Result<()> {
    let request = agent.request(ListRepliesRequest {
        message_id: args.message.unwrap_or_default(),
        from: args.from.unwrap_or_default(),
        since: args.since.map(timestamp_from),
        page_size: args.limit.unwrap_or(0),
        page_token: args.page_token.unwrap_or_default(),
    });
    let response = agent.call(agent.message_service().list_replies(request)).await?;

    output::print_result(format, || list_replies_json(&response), || render(&response));
    super::print_status_warnings(agent).await;
    Ok(())
}

fn render(response: &ListRepliesResponse) -> String {
    let mut table = Table::new(vec!["RECEIVED", "FROM", "MESSAGE", "TEXT"]);
    for reply in &response.replies {
        table.row(vec![
            local_time(reply.received_at.as_ref(), "-"),
            reply.from.clone(),
            or_dash(&reply.message_id),
            truncate(&reply.text, LIST_TEXT_CHARS),
        ]);
    }

    let mut text = if table.is_empty() { "No replies.\n".to_string() } else { table.render() };
    if !response.next_page_token.is_empty() {
        text.push_str(&format!("\nMore replies: add --page-token {}\n", response.next_page_token));
    }
    text
}
