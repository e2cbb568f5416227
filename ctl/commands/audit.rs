//! `audit list`: the agent's audit trail of changes, password events and reveals.

use nhsmail_agent::proto::{ListAuditEventsRequest, ListAuditEventsResponse};

use crate::cli::{AuditListArgs, OutputFormat};
use crate::connect::Agent;
use crate::convert::list_audit_events_json;
use crate::output::{self, Table, local_time, or_dash};

pub async fn list(agent: &Agent, format: OutputFormat, args: AuditListArgs) -> anyhow::Result<()> {
    let request = agent.request(ListAuditEventsRequest {
        page_size: args.limit.unwrap_or(0),
        page_token: args.page_token.unwrap_or_default(),
    });
    let response = agent.call(agent.audit_service().list_audit_events(request)).await?;

    output::print_result(format, || list_audit_events_json(&response), || render_list(&response));
    Ok(())
}

fn render_list(response: &ListAuditEventsResponse) -> String {
    let mut table = Table::new(vec!["TIME", "CALLER", "ROLE", "PEER", "ACTION", "TARGET", "OUTCOME", "DETAIL"]);
    for event in &response.events {
        table.row(vec![
            local_time(event.at.as_ref(), "-"),
            event.caller.clone(),
            event.role.clone(),
            or_dash(&event.peer),
            event.action.clone(),
            or_dash(&event.target),
            event.outcome.clone(),
            or_dash(&event.detail),
        ]);
    }

    let mut text = if table.is_empty() { "No audit events.\n".to_string() } else { table.render() };
    if !response.next_page_token.is_empty() {
        text.push_str(&format!("\nMore events: add --page-token {}\n", response.next_page_token));
    }
    text
}
