//! `upload trigger`: runs an upload cycle now and prints its report.

use nhsmail_agent::proto::{TriggerUploadRequest, UploadReport};

use crate::cli::OutputFormat;
use crate::connect::Agent;
use crate::convert::upload_report_json;
use crate::output::{self, Details, local_time};

pub async fn trigger(agent: &Agent, format: OutputFormat) -> anyhow::Result<()> {
    let request = agent.request(TriggerUploadRequest {});
    let report = agent.call(agent.agent_service().trigger_upload(request)).await?;

    output::print_result(format, || upload_report_json(&report), || render(&report));
    super::print_status_warnings(agent).await;
    Ok(())
}

fn render(report: &UploadReport) -> String {
    let errors = if report.errors.is_empty() { "none".to_string() } else { report.errors.join("\n") };

    Details::new()
        .row("Trigger", &report.trigger)
        .row("Started", local_time(report.started_at.as_ref(), "-"))
        .row("Finished", local_time(report.finished_at.as_ref(), "-"))
        .row("Messages reordered", report.messages_reordered.to_string())
        .row("Messages expired", report.messages_expired.to_string())
        .row("Mail collected", report.mail_collected.to_string())
        .row("Failure reports", report.failure_reports.to_string())
        .row("Delivery receipts", report.delivery_receipts.to_string())
        .row("Replies", report.replies.to_string())
        .row("Kept for review", report.other.to_string())
        .row("Matched to texts", report.matched.to_string())
        .row("Mail moved", report.mail_moved.to_string())
        .row("Mail deleted", report.mail_deleted.to_string())
        .row("Errors", errors)
        .render()
}
