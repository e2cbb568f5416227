//! `nhsmail-agent --sandbox`, part of the binary rather than the library: starts an in-process NHSmail sandbox
//! whose account and mailbox live in `<data dir>/sandbox`, points the mailbox settings at it in OAuth 2.0 mode,
//! stores the sandbox's password on first start, prints how to reach both, and collects mail a moment after each
//! send, because the sandbox sends receipts within seconds while the upload interval is counted in minutes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use nhsmail_agent::app::{App, SubmitRequest};
use nhsmail_agent::config::{Config, ConfigError, Overrides};
use nhsmail_agent::paths;
use nhsmail_agent::rotation::Actor;
use nhsmail_agent::store::FeedEvent;
use nhsmail_sandbox::gateway::{Outcome, RANGES};
use nhsmail_sandbox::{Sandbox, SandboxInfo, SandboxOptions};

/// The data directory in sandbox mode without `--data-dir`: in the current directory, so a demonstration never
/// touches a real practice's data directory.
const DEFAULT_DATA_DIR: &str = "nhsmail-sandbox-data";
/// The client_id the sandbox's token endpoint requires and the agent sends.
const CLIENT_ID: &str = "nhsmail-agent-sandbox";
/// How often the store is read to notice a text that was just handed to the sandbox.
const SEND_POLL: Duration = Duration::from_millis(500);
/// After a send: when to collect the receipt, and when to collect what follows it (a reply, or a receipt after a
/// delay report). The sandbox sends them after its receipt delay, 1 s by default, and again one delay later.
const FIRST_COLLECTION: Duration = Duration::from_millis(1500);
const FOLLOW_UP_COLLECTION: Duration = Duration::from_millis(3500);
/// The number and text of the command printed for a first try.
const EXAMPLE_NUMBER: &str = "07700900123";
const EXAMPLE_TEXT: &str = "Hello from the NHSmail sandbox";

/// Creates the data directory and starts the sandbox in `<data dir>/sandbox`. Sets `overrides.data_dir` to the
/// absolute data directory, so nothing else can choose it.
pub async fn start(overrides: &mut Overrides) -> anyhow::Result<Sandbox> {
    let data_dir = overrides.data_dir.take().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    crate::prepare_data_dir(&data_dir)?;
    let data_dir = std::fs::canonicalize(&data_dir)
        .with_context(|| format!("cannot resolve the data directory {}", data_dir.display()))?;
    overrides.data_dir = Some(data_dir.clone());

    let options = SandboxOptions {
        state_dir: Some(data_dir.join("sandbox")),
        client_id: Some(CLIENT_ID.into()),
        ..SandboxOptions::default()
    };
    Sandbox::start(options).await.context("cannot start the NHSmail sandbox")
}

/// Loads the settings with the sandbox's values in place of the `[nhsmail]` connection keys; the other settings
/// still come from the config file and the environment.
pub fn load_config(sandbox: &Sandbox, overrides: &Overrides) -> Result<Config, ConfigError> {
    let info = sandbox.info();
    let values: HashMap<&str, String> = [
        ("NHSMAIL_USERNAME", info.username.clone()),
        ("NHSMAIL_SMTP_HOST", "127.0.0.1".into()),
        ("NHSMAIL_SMTP_PORT", info.smtp_port.to_string()),
        ("NHSMAIL_SMTP_SECURITY", info.smtp_security.into()),
        ("NHSMAIL_IMAP_HOST", "127.0.0.1".into()),
        ("NHSMAIL_IMAP_PORT", info.imap_port.to_string()),
        ("NHSMAIL_IMAP_SECURITY", info.imap_security.into()),
        ("NHSMAIL_CA_FILE", info.ca_file.display().to_string()),
        ("NHSMAIL_SMS_DOMAIN", info.sms_domain.into()),
        ("NHSMAIL_AUTH", "oauth2".into()),
        ("NHSMAIL_TOKEN_URL", info.token_url.clone()),
        ("NHSMAIL_CLIENT_ID", CLIENT_ID.into()),
        ("NHSMAIL_GRAPH_URL", info.graph_url.clone()),
    ]
    .into_iter()
    .collect();
    Config::load_with_env(overrides, |name| values.get(name).cloned().or_else(|| std::env::var(name).ok()))
}

/// Stores the sandbox's password if none is stored, prints how to reach the agent and the sandbox, then collects
/// mail after each send until `shutdown`.
pub async fn serve(
    app: Arc<App>,
    info: SandboxInfo,
    listening: SocketAddr,
    data_dir: PathBuf,
    shutdown: CancellationToken,
) {
    let first_start = store_password(&app, &info).await;
    print_instructions(&info, listening, &data_dir);
    let printer = tokio::spawn(print_events(app.clone(), shutdown.clone()));
    if first_start {
        submit_examples(&app).await;
    }
    collect_after_sends(&app, &shutdown).await;
    let _ = printer.await;
}

/// Example texts queued on the first start, one per outcome the sandbox simulates, so the flow shows at once.
/// Their idempotency keys make a restart return the same texts instead of sending them again.
const EXAMPLES: [(&str, &str, &str); 3] = [
    ("07700900123", "Your appointment is on Monday at 09:30.", "delivered"),
    ("07700900901", "Please call the surgery about your results.", "failed: number not recognised"),
    ("07700900941", "Flu clinic on Saturday. Can you come?", "delivered, then a reply"),
];

async fn submit_examples(app: &App) {
    let requests = EXAMPLES
        .iter()
        .enumerate()
        .map(|(index, (to, text, _))| SubmitRequest {
            to: (*to).to_string(),
            text: (*text).to_string(),
            idempotency_key: format!("sandbox-example-{}", index + 1),
            client_reference: "sandbox example".into(),
            ..Default::default()
        })
        .collect();
    match app.submit("sandbox", requests, "messages").await {
        Ok(_) => {
            let outcomes: Vec<String> = EXAMPLES.iter().map(|(to, _, outcome)| format!("{to} ({outcome})")).collect();
            println!("queued three example texts: {}", outcomes.join(", "));
        }
        Err(error) => tracing::error!(%error, "cannot queue the example texts"),
    }
}

/// Prints one line per state change and per reply on standard output, so the flow is visible without a client.
async fn print_events(app: Arc<App>, shutdown: CancellationToken) {
    let mut events = match app.watch_events(None).await {
        Ok(events) => events,
        Err(error) => {
            tracing::error!(%error, "cannot follow the event feed");
            return;
        }
    };
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Some(Ok(FeedEvent::MessageChanged { message_id, to_e164, from_status, to_status, reason, .. })) => {
                let from = from_status.map_or("new", |status| status.as_str());
                println!("text {message_id} to {to_e164}: {from} -> {} ({reason})", to_status.as_str());
            }
            Some(Ok(FeedEvent::ReplyReceived { reply, .. })) => {
                println!("reply from {}: {:?}", reply.from_e164, reply.text);
            }
            Some(Err(_)) | None => return,
        }
    }
}

/// Stores the sandbox's password if none is stored. Returns whether this was the first start.
async fn store_password(app: &App, info: &SandboxInfo) -> bool {
    if app.credentials.status(chrono::Utc::now()).password_set {
        return false;
    }
    let password = info.password.clone();
    match app.update_password(Actor::agent(), password.clone(), password, false).await {
        Ok(_) => tracing::info!(username = %info.username, "stored and verified the sandbox's password"),
        Err(error) => {
            tracing::error!(%error, "cannot store the sandbox's password; set it with `nhsmail-ctl password set`")
        }
    }
    true
}

fn print_instructions(info: &SandboxInfo, listening: SocketAddr, data_dir: &Path) {
    let token_file = paths::admin_token_path(data_dir);
    let ctl = format!("{} --agent http://{listening} --token-file {}", ctl_program(), shell_word(&token_file));
    println!(
        "sandbox: NHSmail stand-in for {} on 127.0.0.1, control API {}, state in {}",
        info.username,
        info.control_url,
        shell_word(&info.state_dir)
    );
    println!("sandbox numbers: {}", number_ranges());
    println!("admin token: {}", shell_word(&token_file));
    println!("send a text: {ctl} send --to {EXAMPLE_NUMBER} --text \"{EXAMPLE_TEXT}\"");
    println!("follow it: {ctl} messages list");
    println!("stop with Ctrl-C; the account and the mailbox stay in the data directory for the next start");
}

/// Returns how to run nhsmail-ctl: the binary next to this one when it was built (relative to the current
/// directory when inside it), else the bare name for one on the PATH.
fn ctl_program() -> String {
    let sibling =
        std::env::current_exe().ok().map(|exe| exe.with_file_name("nhsmail-ctl")).filter(|path| path.is_file());
    let Some(path) = sibling else { return "nhsmail-ctl".to_string() };
    let shown = std::env::current_dir()
        .ok()
        .and_then(|dir| path.strip_prefix(&dir).ok().map(Path::to_path_buf))
        .unwrap_or(path);
    shell_word(&shown)
}

/// Describes the sandbox's number ranges in one line, from the sandbox's own table.
fn number_ranges() -> String {
    let ranges: Vec<String> = RANGES
        .iter()
        .map(|(low, high, outcome, _)| {
            let what = match outcome {
                Outcome::Delivered => "delivered",
                Outcome::PermanentFailure => "failed",
                Outcome::TemporaryFailure => "delayed, then delivered",
                Outcome::Reply => "delivered, then a reply",
                Outcome::Stop => "delivered, then STOP",
                Outcome::NoReceipt => "no receipt",
            };
            format!("07700 900{low:03}-900{high:03} {what}")
        })
        .collect();
    ranges.join("; ")
}

/// Quotes a path for a POSIX shell when it contains anything but common file name characters.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+,:@".contains(c));
    if plain { text } else { format!("'{}'", text.replace('\'', r"'\''")) }
}

/// Runs an upload cycle at start, then twice after each send: once for the receipt and once for what follows it.
/// A burst of sends moves the second collection back but never postpones the first.
async fn collect_after_sends(app: &App, shutdown: &CancellationToken) {
    let mut last_sent_at = app.store.last_sent_at().await.ok().flatten();
    let mut first: Option<Instant> = Some(Instant::now());
    let mut follow_up: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SEND_POLL) => {}
        }
        let now = Instant::now();
        match app.store.last_sent_at().await {
            Ok(latest) if latest != last_sent_at => {
                last_sent_at = latest;
                first.get_or_insert(now + FIRST_COLLECTION);
                follow_up = Some(now + FOLLOW_UP_COLLECTION);
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "cannot read the time of the last send"),
        }

        let first_due = first.is_some_and(|at| at <= now);
        let follow_up_due = follow_up.is_some_and(|at| at <= now);
        if !first_due && !follow_up_due {
            continue;
        }
        if first_due {
            first = None;
        }
        if follow_up_due {
            follow_up = None;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            report = app.trigger_upload() => {
                if let Err(error) = report {
                    tracing::warn!(%error, "collection after a send failed");
                }
            }
        }
    }
}
