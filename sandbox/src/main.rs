//! The `nhsmail-sandbox` binary: parses flags, starts the sandbox, prints how to reach it
//! as one JSON line on stdout, and serves until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::TimeDelta;
use clap::Parser;
use nhsmail_sandbox::{Policy, Sandbox, SandboxOptions};

#[derive(Debug, Parser)]
#[command(
    name = "nhsmail-sandbox",
    version,
    about = "A local stand-in for NHSmail: SMTP, IMAP, OAuth 2.0, Graph changePassword and the SMS gateway, on 127.0.0.1 only",
    long_about = None,
)]
struct Args {
    /// Folder that keeps the account, mailbox and certificates across restarts [default: a temporary folder]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Account address, used when the state folder contains no account yet
    #[arg(long, default_value = nhsmail_sandbox::DEFAULT_USERNAME)]
    username: String,

    /// Delay before each receipt, report or reply, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    receipt_delay_ms: u64,

    /// Lifetime of access tokens, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    token_lifetime_secs: i64,

    /// Maximum password age, in days
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    password_max_age_days: i64,

    /// Consecutive failed sign-ins, across all protocols, that lock the account
    #[arg(long, value_name = "N", default_value_t = 5)]
    lockout_threshold: u32,

    /// How long a lockout lasts, in minutes
    #[arg(long, value_name = "MINUTES", default_value_t = 30)]
    lockout_minutes: i64,

    /// Largest message SMTP accepts, in octets
    #[arg(long, value_name = "OCTETS", default_value_t = 10 * 1024 * 1024)]
    max_message_size: usize,

    /// Accept only this OAuth client_id at the token endpoint [default: any]
    #[arg(long)]
    client_id: Option<String>,

    /// SMTP submission port (STARTTLS) [default: chosen by the OS]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    smtp_port: u16,

    /// IMAP port with implicit TLS [default: chosen by the OS]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    imap_port: u16,

    /// IMAP port with STARTTLS [default: chosen by the OS]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    imap_starttls_port: u16,

    /// Port of the token and Graph endpoints [default: chosen by the OS]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    identity_port: u16,

    /// Port of the control API [default: chosen by the OS]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    control_port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr so that stdout's first line stays the JSON object.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "nhsmail_sandbox=info".into()),
        )
        .init();

    let after_help = format!(
        "{}\nThe first line of stdout is a JSON object with username, password, smtp_port, imap_port, \
         imap_security, imap_starttls_port, ca_file, token_url, graph_url and control_url.",
        nhsmail_sandbox::number_ranges_help()
    );
    let matches = <Args as clap::CommandFactory>::command().after_help(after_help).get_matches();
    let args = <Args as clap::FromArgMatches>::from_arg_matches(&matches)?;

    let policy = Policy {
        max_age: TimeDelta::days(args.password_max_age_days),
        lockout_threshold: args.lockout_threshold.max(1),
        lockout_duration: TimeDelta::minutes(args.lockout_minutes),
        token_lifetime: TimeDelta::seconds(args.token_lifetime_secs.max(1)),
        ..Policy::default()
    };
    let options = SandboxOptions {
        state_dir: args.state_dir,
        username: args.username,
        policy,
        receipt_delay: Duration::from_millis(args.receipt_delay_ms),
        max_message_size: args.max_message_size,
        client_id: args.client_id,
        smtp_port: args.smtp_port,
        imap_port: args.imap_port,
        imap_starttls_port: args.imap_starttls_port,
        identity_port: args.identity_port,
        control_port: args.control_port,
    };
    let sandbox = Sandbox::start(options).await.context("failed to start the sandbox")?;
    // The handler is installed before the info line, because a caller may send SIGTERM as soon as it reads the line.
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("failed to listen for SIGTERM")?;
    println!("{}", serde_json::to_string(sandbox.info()).context("failed to encode the sandbox info")?);

    wait_for_signal(terminate).await.context("failed to listen for signals")?;
    tracing::info!("stopping on signal");
    sandbox.shutdown().await;
    Ok(())
}

async fn wait_for_signal(mut terminate: tokio::signal::unix::Signal) -> std::io::Result<()> {
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted,
        _ = terminate.recv() => Ok(()),
    }
}
