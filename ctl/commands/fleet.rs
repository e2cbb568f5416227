//! `fleet status|warnings|upload trigger` and `--target NAME`: the agents listed in the `--inventory` file. Every
//! agent is called at once, each under its own `--timeout` deadline that covers connecting and the call, so one
//! stopped agent delays nothing but its own row.

use std::cmp::Reverse;
use std::future::Future;
use std::io::IsTerminal as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use nhsmail_agent::proto::{
    GetStatusRequest, MessageStatus, PasswordState, Status, TriggerUploadRequest, UploadReport,
};
use serde_json::{Value, json};

use super::status::version_text;
use crate::cli::{FleetCommand, FleetStatusArgs, GlobalOptions, OutputFormat, UploadCommand};
use crate::connect::Agent;
use crate::convert::{enum_label, password_state_name, status_json, time_json, time_of, upload_report_json};
use crate::error::CtlError;
use crate::inventory::{Inventory, InventoryAgent};
use crate::output::{self, Table, clean_line};
use crate::token;

pub async fn run(global: &GlobalOptions, command: FleetCommand) -> anyhow::Result<()> {
    let inventory = load_inventory(global)?;
    let timeout = Duration::from_secs(global.timeout);
    match command {
        FleetCommand::Status(args) => status(&inventory, timeout, global.output, &args).await,
        FleetCommand::Warnings => warnings(&inventory, timeout, global.output).await,
        FleetCommand::Upload(UploadCommand::Trigger) => upload(&inventory, timeout, global.output).await,
    }
}

/// Connects to the inventory's agent `name`, for a single-agent command with `--target`.
pub async fn connect_target(global: &GlobalOptions, name: &str) -> Result<Agent, CtlError> {
    let inventory = load_inventory(global)?;
    let agent = inventory.find(name)?;
    connect(&inventory, agent, Duration::from_secs(global.timeout)).await
}

fn load_inventory(global: &GlobalOptions) -> Result<Inventory, CtlError> {
    let path = global.inventory.as_deref().ok_or_else(|| {
        CtlError::Input("fleet commands need --inventory FILE (or NHSMAIL_INVENTORY) listing the agents".into())
    })?;
    Inventory::load(path)
}

async fn connect(inventory: &Inventory, agent: &InventoryAgent, timeout: Duration) -> Result<Agent, CtlError> {
    let token = token::load(Some(&agent.token_file), None, || agent.token_file.clone())?;
    let tls = agent.tls_files(&inventory.path)?.unwrap_or_default();
    Agent::connect(&agent.url, timeout, token, &tls).await
}

/// Runs `call` on every agent at once. Each agent gets `timeout` for connecting and calling together. Results come
/// back in inventory order. On a terminal, a progress line on stderr counts the agents that have responded.
async fn ask_all<T, F, Fut>(inventory: &Inventory, timeout: Duration, call: F) -> Vec<Result<T, CtlError>>
where
    F: Fn(Agent) -> Fut,
    Fut: Future<Output = Result<T, CtlError>>,
{
    let total = inventory.agents.len();
    let mut pending: FuturesUnordered<_> = inventory
        .agents
        .iter()
        .enumerate()
        .map(|(index, agent)| {
            let call = &call;
            async move {
                let attempt = async { call(connect(inventory, agent, timeout).await?).await };
                let result = match tokio::time::timeout(timeout, attempt).await {
                    Ok(result) => result,
                    Err(_) => Err(CtlError::TimedOut { url: agent.url.clone(), seconds: timeout.as_secs() }),
                };
                (index, result)
            }
        })
        .collect();

    let progress = std::io::stderr().is_terminal();
    let mut results: Vec<Option<Result<T, CtlError>>> = (0..total).map(|_| None).collect();
    let mut responded = 0;
    if progress {
        eprint!("\rwaiting for {total} agents ({}s deadline each)", timeout.as_secs());
    }
    while let Some((index, result)) = pending.next().await {
        responded += 1;
        if progress {
            eprint!("\r\x1b[2K{responded} of {total} agents responded");
        }
        results[index] = Some(result);
    }
    if progress {
        eprint!("\r\x1b[2K");
    }
    results.into_iter().map(|result| result.expect("every agent has a result")).collect()
}

/// How much an agent needs attention, worst last so that sorting by `Reverse` puts the worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Health {
    Ok,
    /// Working now, but a person should act soon: an expiring password, an old queue, a warning.
    Warning,
    /// Not sending or not reachable.
    Critical,
}

impl Health {
    fn label(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }
}

/// One agent's row in `fleet status`.
struct Row<'a> {
    agent: &'a InventoryAgent,
    outcome: Result<Status, CtlError>,
    health: Health,
    /// The reasons the agent needs attention, one short phrase each.
    problems: Vec<String>,
}

impl Row<'_> {
    fn status(&self) -> Option<&Status> {
        self.outcome.as_ref().ok()
    }

    /// Worst first: by health, unreachable before reachable, fewest password days, oldest queue, then name.
    fn sort_key(&self, now: DateTime<Utc>) -> (Reverse<Health>, bool, i32, Reverse<i64>, String) {
        let days = self.status().and_then(|status| status.password_days_until_expiry).unwrap_or(i32::MAX);
        let queue_age = self.status().and_then(|status| oldest_age(status, now)).unwrap_or(0);
        (Reverse(self.health), self.outcome.is_ok(), days, Reverse(queue_age), self.agent.name.clone())
    }
}

fn assess(
    agent: &InventoryAgent,
    outcome: Result<Status, CtlError>,
    now: DateTime<Utc>,
    max_queue_age: i64,
) -> Row<'_> {
    let status = match outcome {
        Ok(status) => status,
        Err(error) => {
            let problems = vec![failure_text(&error)];
            return Row { agent, outcome: Err(error), health: Health::Critical, problems };
        }
    };

    let mut health = Health::Ok;
    let mut problems = Vec::new();
    if status.sending_paused {
        health = Health::Critical;
        problems.push("sending paused".to_string());
    }
    match status.password_state() {
        PasswordState::Unset | PasswordState::Rejected | PasswordState::Expired | PasswordState::NeedsAttention => {
            health = Health::Critical;
        }
        PasswordState::Expiring | PasswordState::Unspecified => health = health.max(Health::Warning),
        PasswordState::Ok | PasswordState::Rotating => {}
    }
    if let Some(age) = oldest_age(&status, now)
        && age > max_queue_age
    {
        health = health.max(Health::Warning);
        problems.push(format!("oldest queued text waiting {}", age_text(age)));
    }
    for warning in &status.warnings {
        health = health.max(Health::Warning);
        problems.push(warning.code.clone());
    }
    Row { agent, outcome: Ok(status), health, problems }
}

/// Words an agent's failure for one table cell.
fn failure_text(error: &CtlError) -> String {
    match error {
        CtlError::Unreachable { reason, .. } => format!("unreachable: {reason}"),
        CtlError::TimedOut { seconds, .. } => format!("no response within {seconds} s"),
        CtlError::Unauthenticated(_) => "the agent rejected the token".to_string(),
        CtlError::PermissionDenied(_) => "the token's role cannot read status".to_string(),
        other => other.to_string(),
    }
}

/// Seconds since the oldest queued text was created, or `None` when nothing is queued.
fn oldest_age(status: &Status, now: DateTime<Utc>) -> Option<i64> {
    time_of(status.oldest_queued_at.as_ref()).map(|created| (now - created).num_seconds().max(0))
}

/// Formats an age in its two largest units: "45s", "12m", "3h 20m", "2d 4h".
fn age_text(seconds: i64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds % 86_400 / 3_600, seconds % 3_600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

fn ago(timestamp: Option<&prost_types::Timestamp>, now: DateTime<Utc>) -> String {
    match time_of(timestamp) {
        Some(time) => format!("{} ago", age_text((now - time).num_seconds().max(0))),
        None => "never".to_string(),
    }
}

fn queued(status: &Status) -> u64 {
    let waiting = [MessageStatus::Queued as i32, MessageStatus::Sending as i32];
    status.queue_counts.iter().filter(|count| waiting.contains(&count.status)).map(|count| count.count).sum()
}

fn password_text(status: &Status) -> String {
    let state = enum_label(password_state_name(status.password_state), status.password_state);
    match status.password_days_until_expiry {
        Some(days) if days >= 0 => format!("{state} ({days}d left)"),
        Some(days) => format!("{state} ({}d ago)", -days),
        None => state,
    }
}

async fn status(
    inventory: &Inventory,
    timeout: Duration,
    format: OutputFormat,
    args: &FleetStatusArgs,
) -> anyhow::Result<()> {
    let outcomes = ask_all(inventory, timeout, |agent| async move {
        agent.call(agent.agent_service().get_status(agent.request(GetStatusRequest {}))).await
    })
    .await;

    let now = Utc::now();
    let max_queue_age = i64::from(args.max_queue_age) * 60;
    let mut rows: Vec<Row> = inventory
        .agents
        .iter()
        .zip(outcomes)
        .map(|(agent, outcome)| assess(agent, outcome, now, max_queue_age))
        .collect();
    rows.sort_by_cached_key(|row| row.sort_key(now));

    output::print_result(format, || status_json_rows(&rows, now), || status_table(&rows, now));
    attention(rows.iter().map(|row| row.health), rows.len())
}

fn status_table(rows: &[Row], now: DateTime<Utc>) -> String {
    let mut table = Table::new(vec![
        "AGENT",
        "HEALTH",
        "REACHABLE",
        "VERSION",
        "PASSWORD",
        "QUEUED",
        "OLDEST QUEUED",
        "LAST SEND",
        "LAST UPLOAD",
        "WARNINGS",
    ]);
    for row in rows {
        let problems = if row.problems.is_empty() { "-".to_string() } else { row.problems.join(", ") };
        let cells = match row.status() {
            Some(status) => vec![
                row.agent.name.clone(),
                row.health.label().to_string(),
                "yes".to_string(),
                version_text(status),
                password_text(status),
                queued(status).to_string(),
                oldest_age(status, now).map_or("-".to_string(), age_text),
                ago(status.last_send_at.as_ref(), now),
                ago(status.last_upload_at.as_ref(), now),
                problems,
            ],
            None => {
                let mut cells = vec![row.agent.name.clone(), row.health.label().to_string(), "no".to_string()];
                cells.extend(std::iter::repeat_n("-".to_string(), 6));
                cells.push(problems);
                cells
            }
        };
        table.row(cells);
    }
    table.render()
}

fn status_json_rows(rows: &[Row], now: DateTime<Utc>) -> Value {
    let agents: Vec<Value> = rows
        .iter()
        .map(|row| {
            let mut value = json!({
                "name": row.agent.name,
                "url": row.agent.url,
                "health": row.health.label(),
                "reachable": row.outcome.is_ok(),
                "problems": row.problems,
            });
            match &row.outcome {
                Ok(status) => {
                    value["queued"] = json!(queued(status));
                    value["oldest_queued_age_seconds"] = json!(oldest_age(status, now));
                    value["status"] = status_json(status);
                }
                Err(error) => value["error"] = json!(clean_line(&error.to_string())),
            }
            value
        })
        .collect();
    let needing_attention = rows.iter().filter(|row| row.health != Health::Ok).count();
    json!({ "agents": agents, "needing_attention": needing_attention, "checked_at": time_json(Some(&crate::convert::timestamp_from(now))) })
}

/// Returns `NeedsAttention` when any agent is not `Ok`, so that a script can test the exit code.
fn attention(healths: impl Iterator<Item = Health>, total: usize) -> anyhow::Result<()> {
    let count = healths.filter(|health| *health != Health::Ok).count();
    if count == 0 { Ok(()) } else { Err(CtlError::NeedsAttention { count, total }.into()) }
}

async fn warnings(inventory: &Inventory, timeout: Duration, format: OutputFormat) -> anyhow::Result<()> {
    let outcomes = ask_all(inventory, timeout, |agent| async move {
        agent.call(agent.agent_service().get_status(agent.request(GetStatusRequest {}))).await
    })
    .await;

    let now = Utc::now();
    let mut rows: Vec<Row> =
        inventory.agents.iter().zip(outcomes).map(|(agent, outcome)| assess(agent, outcome, now, i64::MAX)).collect();
    rows.sort_by_cached_key(|row| row.sort_key(now));

    // One line per warning: the agent's own warnings, or why it could not be asked.
    let mut lines: Vec<(&str, String, String)> = Vec::new();
    for row in &rows {
        match &row.outcome {
            Ok(status) => lines.extend(
                status
                    .warnings
                    .iter()
                    .map(|warning| (row.agent.name.as_str(), warning.code.clone(), warning.message.clone())),
            ),
            Err(error) => lines.push((row.agent.name.as_str(), "unreachable".to_string(), error.to_string())),
        }
    }

    let json = || {
        let warnings: Vec<Value> = lines
            .iter()
            .map(|(agent, code, message)| json!({ "agent": agent, "code": code, "message": message }))
            .collect();
        json!({ "warnings": warnings })
    };
    let table = || {
        if lines.is_empty() {
            return "No warnings.\n".to_string();
        }
        let mut table = Table::new(vec!["AGENT", "CODE", "MESSAGE"]);
        for (agent, code, message) in &lines {
            table.row(vec![agent.to_string(), code.clone(), message.clone()]);
        }
        table.render()
    };
    output::print_result(format, json, table);

    let agents_with_warnings = rows.iter().filter(|row| row.outcome.is_err() || !row.problems.is_empty()).count();
    if agents_with_warnings == 0 {
        Ok(())
    } else {
        Err(CtlError::NeedsAttention { count: agents_with_warnings, total: rows.len() }.into())
    }
}

async fn upload(inventory: &Inventory, timeout: Duration, format: OutputFormat) -> anyhow::Result<()> {
    let outcomes: Vec<Result<UploadReport, CtlError>> = ask_all(inventory, timeout, |agent| async move {
        agent.call(agent.agent_service().trigger_upload(agent.request(TriggerUploadRequest {}))).await
    })
    .await;

    let results: Vec<(&InventoryAgent, Result<UploadReport, CtlError>, Health)> = inventory
        .agents
        .iter()
        .zip(outcomes)
        .map(|(agent, outcome)| {
            let health = match &outcome {
                Ok(report) if report.errors.is_empty() => Health::Ok,
                Ok(_) => Health::Warning,
                Err(_) => Health::Critical,
            };
            (agent, outcome, health)
        })
        .collect();

    let json = || {
        let agents: Vec<Value> = results
            .iter()
            .map(|(agent, outcome, health)| match outcome {
                Ok(report) => {
                    json!({ "name": agent.name, "health": health.label(), "report": upload_report_json(report) })
                }
                Err(error) => {
                    json!({ "name": agent.name, "health": health.label(), "error": clean_line(&error.to_string()) })
                }
            })
            .collect();
        json!({ "agents": agents })
    };
    let table = || {
        let mut table = Table::new(vec!["AGENT", "RESULT", "COLLECTED", "MATCHED", "EXPIRED", "ERRORS"]);
        for (agent, outcome, health) in &results {
            let cells = match outcome {
                Ok(report) => vec![
                    agent.name.clone(),
                    health.label().to_string(),
                    report.mail_collected.to_string(),
                    report.matched.to_string(),
                    report.messages_expired.to_string(),
                    if report.errors.is_empty() { "-".to_string() } else { report.errors.join("; ") },
                ],
                Err(error) => vec![
                    agent.name.clone(),
                    health.label().to_string(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    failure_text(error),
                ],
            };
            table.row(cells);
        }
        table.render()
    };
    output::print_result(format, json, table);
    attention(results.iter().map(|(_, _, health)| *health), results.len())
}

#[cfg(test)]
mod tests {
    use nhsmail_agent::proto::{QueueCount, Warning};

    use super::*;
    use crate::convert::timestamp_from;

    fn agent(name: &str) -> InventoryAgent {
        InventoryAgent {
            name: name.into(),
            url: "http://127.0.0.1:1".into(),
            token_file: "t".into(),
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }

    fn healthy() -> Status {
        Status {
            version: "0.1.0".into(),
            password_state: PasswordState::Ok as i32,
            password_days_until_expiry: Some(80),
            ..Status::default()
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z").unwrap().to_utc()
    }

    #[test]
    fn healthy_agent_is_ok() {
        let agent = agent("a");
        let row = assess(&agent, Ok(healthy()), now(), 3600);
        assert_eq!(row.health, Health::Ok);
        assert!(row.problems.is_empty());
    }

    #[test]
    fn unreachable_agent_is_critical() {
        let agent = agent("a");
        let error = CtlError::TimedOut { url: agent.url.clone(), seconds: 3 };
        let row = assess(&agent, Err(error), now(), 3600);
        assert_eq!(row.health, Health::Critical);
        assert_eq!(row.problems, ["no response within 3 s"]);
    }

    #[test]
    fn expiring_password_is_warning() {
        let agent = agent("a");
        let status = Status {
            password_state: PasswordState::Expiring as i32,
            password_days_until_expiry: Some(5),
            warnings: vec![Warning { code: "password_expiring".into(), message: "expires".into() }],
            ..healthy()
        };
        let row = assess(&agent, Ok(status), now(), 3600);
        assert_eq!(row.health, Health::Warning);
        assert_eq!(row.problems, ["password_expiring"]);
    }

    #[test]
    fn rejected_password_is_critical() {
        let agent = agent("a");
        let status = Status { password_state: PasswordState::Rejected as i32, sending_paused: true, ..healthy() };
        assert_eq!(assess(&agent, Ok(status), now(), 3600).health, Health::Critical);
    }

    #[test]
    fn old_queue_is_warning() {
        let agent = agent("a");
        let created = now() - chrono::Duration::minutes(90);
        let status = Status {
            oldest_queued_at: Some(timestamp_from(created)),
            queue_counts: vec![QueueCount { status: MessageStatus::Queued as i32, count: 4 }],
            ..healthy()
        };
        let row = assess(&agent, Ok(status), now(), 3600);
        assert_eq!(row.health, Health::Warning);
        assert_eq!(row.problems, ["oldest queued text waiting 1h 30m"]);
    }

    #[test]
    fn rows_sort_worst_first() {
        let (down, expiring, soon, fine) = (agent("down"), agent("expiring"), agent("soon"), agent("fine"));
        let expiring_status = |days| Status {
            password_state: PasswordState::Expiring as i32,
            password_days_until_expiry: Some(days),
            ..healthy()
        };
        let error = CtlError::TimedOut { url: down.url.clone(), seconds: 3 };
        let mut rows = [
            assess(&fine, Ok(healthy()), now(), 3600),
            assess(&expiring, Ok(expiring_status(10)), now(), 3600),
            assess(&down, Err(error), now(), 3600),
            assess(&soon, Ok(expiring_status(2)), now(), 3600),
        ];

        rows.sort_by_cached_key(|row| row.sort_key(now()));

        let names: Vec<&str> = rows.iter().map(|row| row.agent.name.as_str()).collect();
        assert_eq!(names, ["down", "soon", "expiring", "fine"]);
    }

    #[test]
    fn age_text_keeps_two_units() {
        assert_eq!(age_text(42), "42s");
        assert_eq!(age_text(12 * 60 + 5), "12m");
        assert_eq!(age_text(3 * 3600 + 20 * 60), "3h 20m");
        assert_eq!(age_text(2 * 86_400 + 4 * 3600 + 59), "2d 4h");
    }

    #[test]
    fn password_text_shows_days() {
        assert_eq!(password_text(&healthy()), "ok (80d left)");
        let expired =
            Status { password_state: PasswordState::Expired as i32, password_days_until_expiry: Some(-3), ..healthy() };
        assert_eq!(password_text(&expired), "expired (3d ago)");
    }
}
