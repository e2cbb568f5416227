//! `inbox review|show|mark-reviewed`: inbound mail the agent could not act on by itself.

use nhsmail_agent::proto::{
    GetInboundRequest, InboundEmail, ListInboundForReviewRequest, ListInboundForReviewResponse, MarkReviewedRequest,
};

use crate::cli::{InboxIdArgs, InboxReviewArgs, OutputFormat};
use crate::connect::Agent;
use crate::convert::{inbound_email_json, list_inbound_json};
use crate::output::{self, Details, Table, clean_text, local_time, or_dash, truncate, yes_no};

/// Characters of the subject and reason shown in the table; `--output json` carries all of them.
const LIST_TEXT_CHARS: usize = 40;

pub async fn review(agent: &Agent, format: OutputFormat, args: InboxReviewArgs) -> anyhow::Result<()> {
    let request = agent.request(ListInboundForReviewRequest {
        include_reviewed: args.all,
        page_size: args.limit.unwrap_or(0),
        page_token: args.page_token.unwrap_or_default(),
    });
    let response = agent.call(agent.inbox_service().list_inbound_for_review(request)).await?;

    output::print_result(format, || list_inbound_json(&response), || render_list(&response));
    super::print_status_warnings(agent).await;
    Ok(())
}

pub async fn show(agent: &Agent, format: OutputFormat, args: InboxIdArgs) -> anyhow::Result<()> {
    let request = agent.request(GetInboundRequest { id: args.id });
    let email = agent.call(agent.inbox_service().get_inbound(request)).await?;

    output::print_result(format, || inbound_email_json(&email), || render_one(&email));
    super::print_status_warnings(agent).await;
    Ok(())
}

pub async fn mark_reviewed(agent: &Agent, format: OutputFormat, args: InboxIdArgs) -> anyhow::Result<()> {
    let request = agent.request(MarkReviewedRequest { id: args.id });
    let email = agent.call(agent.inbox_service().mark_reviewed(request)).await?;

    output::print_result(format, || inbound_email_json(&email), || render_one(&email));
    super::print_status_warnings(agent).await;
    Ok(())
}

fn render_one(email: &InboundEmail) -> String {
    let mut text = Details::new()
        .row("ID", email.id.to_string())
        .row("Kind", &email.kind)
        .row("From", or_dash(&email.from))
        .row("Subject", or_dash(&email.subject))
        .row("Received", local_time(email.received_at.as_ref(), "-"))
        .row("Reason", or_dash(&email.reason))
        .row("Message-ID", or_dash(&email.email_message_id))
        .row("Matched text", or_dash(&email.matched_message_id))
        .row("Reviewed", yes_no(email.reviewed))
        .render();
    if !email.raw.is_empty() {
        text.push_str("\nAs received:\n");
        text.push_str(&clean_text(&String::from_utf8_lossy(&email.raw)));
        text.push('\n');
    }
    text
}

fn render_list(response: &ListInboundForReviewResponse) -> String {
    let mut table = Table::new(vec!["ID", "RECEIVED", "KIND", "FROM", "SUBJECT", "REASON"]);
    for email in &response.emails {
        table.row(vec![
            email.id.to_string(),
            local_time(email.received_at.as_ref(), "-"),
            email.kind.clone(),
            or_dash(&email.from),
            truncate(&email.subject, LIST_TEXT_CHARS),
            truncate(&email.reason, LIST_TEXT_CHARS),
        ]);
    }

    let mut text = if table.is_empty() { "Nothing to review.\n".to_string() } else { table.render() };
    if !response.next_page_token.is_empty() {
        text.push_str(&format!("\nMore emails: add --page-token {}\n", response.next_page_token));
    }
    text
}
