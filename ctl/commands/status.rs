//! `status`: the agent's overall health.

use nhsmail_agent::proto::{GetStatusRequest, Status};

use crate::cli::OutputFormat;
use crate::connect::Agent;
use crate::convert::{enum_label, message_status_name, password_state_name, status_json};
use crate::output::{self, Details, Table, duration, local_time, sending_state};

pub async fn show(agent: &Agent, format: OutputFormat) -> anyhow::Result<()> {
    let status = agent.call(agent.agent_service().get_status(agent.request(GetStatusRequest {}))).await?;

    output::print_result(format, || status_json(&status), || render(&status));
    output::print_warnings(&status.warnings);
    Ok(())
}

/// Formats the version with the newer one the update feed names, if any: "0.1.0 (0.2.0 available)".
pub fn version_text(status: &Status) -> String {
    if status.update_available {
        format!("{} ({} available)", status.version, status.latest_version)
    } else {
        status.version.clone()
    }
}

fn render(status: &Status) -> String {
    let mut details = Details::new();
    details
        .row("Version", version_text(status))
        .row("Uptime", duration(status.uptime_seconds))
        .row("Password", enum_label(password_state_name(status.password_state), status.password_state))
        .row("Sending", sending_state(status.sending_paused, &status.sending_paused_reason))
        .row("Last upload", local_time(status.last_upload_at.as_ref(), "never"))
        .row("Last send", local_time(status.last_send_at.as_ref(), "never"))
        .row("Oldest queued", local_time(status.oldest_queued_at.as_ref(), "none queued"));

    if status.queue_counts.is_empty() {
        details.row("Messages", "none");
        return details.render();
    }

    let mut counts = Table::new(vec!["STATE", "MESSAGES"]);
    for count in &status.queue_counts {
        counts.row(vec![enum_label(message_status_name(count.status), count.status), count.count.to_string()]);
    }
    format!("{}\n{}", details.render(), counts.render())
}
