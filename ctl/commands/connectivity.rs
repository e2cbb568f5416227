//! `connectivity show` and `connectivity set`: the mailbox account, its servers, the upload interval and the
//! password's state.

use nhsmail_agent::proto::{Connectivity, GetConnectivityRequest, UpdateConnectivityRequest};

use crate::cli::{ConnectivitySetArgs, OutputFormat};
use crate::connect::Agent;
use crate::convert::{connectivity_json, enum_label, password_state_name, switch_to_bool};
use crate::output::{self, Details, local_time, or_dash, sending_state, yes_no};

pub async fn show(agent: &Agent, format: OutputFormat) -> anyhow::Result<()> {
    let request = agent.request(GetConnectivityRequest {});
    let connectivity = agent.call(agent.connectivity_service().get_connectivity(request)).await?;

    print(format, &connectivity);
    Ok(())
}

pub async fn set(agent: &Agent, format: OutputFormat, args: ConnectivitySetArgs) -> anyhow::Result<()> {
    let request = agent.request(UpdateConnectivityRequest {
        upload_interval_minutes: args.upload_interval,
        username: args.username,
        auto_manage: args.auto_manage.map(switch_to_bool),
    });
    let connectivity = agent.call(agent.connectivity_service().update_connectivity(request)).await?;

    print(format, &connectivity);
    Ok(())
}

fn print(format: OutputFormat, connectivity: &Connectivity) {
    output::print_result(format, || connectivity_json(connectivity), || render(connectivity));
    output::print_warnings(&connectivity.warnings);
}

/// Renders the connectivity details; also used by `password set`.
pub fn render(connectivity: &Connectivity) -> String {
    let password_state = enum_label(password_state_name(connectivity.password_state), connectivity.password_state);
    let days_until_expiry = match connectivity.days_until_expiry {
        Some(days) => days.to_string(),
        None => "-".to_string(),
    };

    Details::new()
        .row("Username", or_dash(&connectivity.username))
        .row("SMTP server", or_dash(&connectivity.smtp_server))
        .row("IMAP server", or_dash(&connectivity.imap_server))
        .row("Upload interval", minutes(connectivity.upload_interval_minutes))
        .row("Next upload", local_time(connectivity.next_upload_at.as_ref(), "not scheduled"))
        .row("Password stored", yes_no(connectivity.password_set))
        .row("Password state", password_state)
        .row("Password set at", local_time(connectivity.password_set_at.as_ref(), "-"))
        .row("Password expires", local_time(connectivity.password_expires_at.as_ref(), "-"))
        .row("Days until expiry", days_until_expiry)
        .row("Maximum age", format!("{} days", connectivity.max_age_days))
        .row("Auto-manage", if connectivity.auto_manage { "on" } else { "off" })
        .row("Next rotation", local_time(connectivity.next_rotation_at.as_ref(), "not scheduled"))
        .row("Last rotation", last_rotation(connectivity))
        .row("Failed rotations", connectivity.rotation_failures.to_string())
        .row("Failed sign-ins", connectivity.failed_sign_ins.to_string())
        .row("Blocked sign-ins", connectivity.blocked_sign_ins.to_string())
        .row("Last sign-in", local_time(connectivity.last_successful_login.as_ref(), "never"))
        .row("Last error", or_dash(&connectivity.last_error))
        .row("Sending", sending_state(connectivity.sending_paused, &connectivity.sending_paused_reason))
        .render()
}

fn last_rotation(connectivity: &Connectivity) -> String {
    match connectivity.last_rotation_at.as_ref() {
        None => "never".to_string(),
        Some(at) => format!("{}: {}", local_time(Some(at), "-"), or_dash(&connectivity.last_rotation_outcome)),
    }
}

fn minutes(count: u32) -> String {
    if count == 1 { "1 minute".to_string() } else { format!("{count} minutes") }
}
