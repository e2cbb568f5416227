//! The command line of nhsmail-ctl: every flag, its validation and its help text. Flags are checked here so that a
//! bad value fails with a usage error (exit code 2) naming the flag before anything is sent to the agent.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Default gRPC address of the agent, on loopback where the agent listens by default.
pub const DEFAULT_AGENT_URL: &str = "http://127.0.0.1:50051";

/// Maximum interval between upload cycles that the agent accepts: 24 hours.
const MAX_UPLOAD_INTERVAL_MINUTES: u32 = 1440;

/// Maximum page size that the agent accepts for one list call.
const MAX_PAGE_SIZE: u32 = 1000;

#[derive(Debug, Parser)]
#[command(
    name = "nhsmail-ctl",
    version,
    about = "Control an nhsmail-agent: status, mailbox connectivity, password, uploads, texts, replies, opt-outs and review",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalOptions {
    /// gRPC address of the agent: http:// for an agent on loopback, https:// for one with TLS on.
    #[arg(long, global = true, value_name = "URL", env = "NHSMAIL_AGENT", default_value = DEFAULT_AGENT_URL,
          value_parser = parse_agent_url)]
    pub agent: String,

    /// File containing the bearer token. Without it, the token is taken from NHSMAIL_TOKEN, or else read from the
    /// agent's admin token file (see "Token" in --help).
    #[arg(long, global = true, value_name = "PATH", env = "NHSMAIL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Output format of results. Errors and warnings always go to stderr as text.
    #[arg(long, global = true, value_name = "FORMAT", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Deadline for connecting and for each call to the agent, in seconds (1 to 3600).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,

    /// TOML file listing the agents of a fleet, one [[agent]] table each with name, url, token_file and optional
    /// ca_file, client_cert and client_key. Needed by `fleet` commands and by --target.
    #[arg(long, global = true, value_name = "FILE", env = "NHSMAIL_INVENTORY")]
    pub inventory: Option<PathBuf>,

    /// Run the command against the inventory's agent of this name, with its URL, token file and TLS files, instead
    /// of --agent and --token-file.
    #[arg(long, global = true, value_name = "NAME", requires = "inventory")]
    pub target: Option<String>,

    /// PEM file of the CA certificates that the agent's TLS certificate must be signed by (https:// only). Without
    /// it, the system's trusted CAs are used.
    #[arg(long, global = true, value_name = "PATH", env = "NHSMAIL_AGENT_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// PEM file of this client's certificate chain, for an agent that requires mutual TLS (https:// only).
    #[arg(long, global = true, value_name = "PATH", env = "NHSMAIL_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// PEM file of the private key of --client-cert.
    #[arg(long, global = true, value_name = "PATH", env = "NHSMAIL_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

/// The TLS files named on the command line.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl GlobalOptions {
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned text for people.
    Table,
    /// JSON with the proto field names, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the agent's version, uptime, password state, sending state, last upload and send, and queue counts.
    Status,

    /// Show or change how the agent reaches its NHSmail mailbox.
    #[command(subcommand)]
    Connectivity(ConnectivityCommand),

    /// Store a new mailbox password.
    #[command(subcommand)]
    Password(PasswordCommand),

    /// Run an upload cycle now.
    #[command(subcommand)]
    Upload(UploadCommand),

    /// Queue one text for a patient's mobile number.
    Send(SendArgs),

    /// List, inspect or cancel texts.
    #[command(subcommand)]
    Messages(MessagesCommand),

    /// List the replies patients sent back.
    #[command(subcommand)]
    Replies(RepliesCommand),

    /// List, add or remove numbers that must not be texted (a STOP reply opts a number out).
    #[command(subcommand)]
    Optouts(OptoutsCommand),

    /// Review inbound mail the agent could not act on by itself.
    #[command(subcommand)]
    Inbox(InboxCommand),

    /// Ask every agent in --inventory at once: status, warnings, upload cycles.
    #[command(subcommand)]
    Fleet(FleetCommand),

    /// Read the audit trail of changes, password events and reveals (operator or admin token).
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// One row per agent, worst first: reachable, version, password, queue, last send and upload, warnings. Each
    /// agent has --timeout seconds to respond. Exits with 5 when any agent needs attention.
    Status(FleetStatusArgs),
    /// Every warning of every agent, worst agent first. Exits with 5 when there is any.
    Warnings,
    /// Run an upload cycle on every agent now.
    #[command(subcommand)]
    Upload(UploadCommand),
}

#[derive(Debug, Args)]
pub struct FleetStatusArgs {
    /// A queued text older than this many minutes makes its agent need attention (1 to 10080).
    #[arg(long, value_name = "MINUTES", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=10080))]
    pub max_queue_age: u32,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit events, newest first.
    List(AuditListArgs),
}

#[derive(Debug, Args)]
pub struct AuditListArgs {
    /// Maximum number of events to list, 1 to 1000 (the agent's default is 100).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_limit)]
    pub limit: Option<u32>,

    /// Token printed by the previous page, to list the next one.
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConnectivityCommand {
    /// Show the account, servers, upload interval and password state. The password itself is never shown.
    Show,
    /// Change the upload interval, the username or automatic password management. Options left out are not changed.
    Set(ConnectivitySetArgs),
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
pub struct ConnectivitySetArgs {
    /// Minutes between upload cycles, 1 to 1440.
    #[arg(long, value_name = "MINUTES", group = "change", allow_negative_numbers = true,
          value_parser = parse_upload_interval)]
    pub upload_interval: Option<u32>,

    /// NHSmail account used for SMTP and IMAP. Changing it marks the stored password as unverified.
    #[arg(long, value_name = "NAME", group = "change")]
    pub username: Option<String>,

    /// Whether the agent changes the password itself before it expires.
    #[arg(long, value_name = "on|off", group = "change", value_enum)]
    pub auto_manage: Option<Switch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum PasswordCommand {
    /// Store a new mailbox password, checked first with an SMTP and an IMAP sign-in unless --skip-verification is
    /// given. Prompts twice without echo when stdin is a terminal.
    Set(PasswordSetArgs),
    /// Change the password now through the change endpoint, as the schedule would, and wait until the new one is
    /// confirmed with SMTP and IMAP or the attempt ends. Needs an operator token.
    Rotate,
    /// Print the current mailbox password, for typing it elsewhere. Needs an admin token, and every call is
    /// audited. Prints only to a terminal unless --force is given.
    Reveal(PasswordRevealArgs),
}

#[derive(Debug, Args)]
pub struct PasswordRevealArgs {
    /// Print the password even when stdout is not a terminal, for example into a pipe or a file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PasswordSetArgs {
    /// Read the password from the first line of stdin instead of prompting, for scripts.
    #[arg(long)]
    pub password_stdin: bool,

    /// Store the password without checking it against the servers. Use only when the servers are unreachable.
    #[arg(long)]
    pub skip_verification: bool,
}

#[derive(Debug, Subcommand)]
pub enum UploadCommand {
    /// Run an upload cycle now, or wait for the one already running, and print its report. A cycle can take longer
    /// than the default --timeout.
    Trigger,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Patient's UK mobile number in any common form, for example "07700 900123" or "+447700900123".
    #[arg(long, value_name = "NUMBER")]
    pub to: String,

    /// Text of the SMS, or "-" to read it from stdin (trailing line breaks are removed).
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub text: String,

    /// Sending order among due texts.
    #[arg(long, value_enum, default_value_t = PriorityArg::Normal)]
    pub priority: PriorityArg,

    /// Do not send before this time, as RFC 3339, for example 2026-12-01T09:30:00Z.
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub send_after: Option<DateTime<Utc>>,

    /// Do not send after this time, as RFC 3339. A text still unsent then expires.
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub expires_at: Option<DateTime<Utc>>,

    /// Caller-chosen key, at most 200 characters. Sending again with the same key returns the first text instead of
    /// queuing a second one, so a retry after a timeout is safe.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,

    /// Your own reference, stored and returned unchanged, at most 200 characters.
    #[arg(long, value_name = "REF")]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PriorityArg {
    Urgent,
    Normal,
    Bulk,
}

#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// List texts, newest first.
    List(MessagesListArgs),
    /// Show one text with the history of its state changes.
    Show {
        /// Message id, as printed by send or messages list.
        id: String,
    },
    /// Cancel a text that has not been handed to NHSmail yet.
    Cancel {
        /// Message id, as printed by send or messages list.
        id: String,
    },
    /// Print each state change of any text and each patient reply as it happens, until Ctrl-C.
    /// With --output json, prints one JSON object per line.
    Watch {
        /// First replay every event after this event id (printed in the first column), so nothing is missed
        /// after a reconnect. Without it, only new events are printed.
        #[arg(long, value_name = "EVENT_ID")]
        after: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub struct MessagesListArgs {
    /// Only texts in this state.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,

    /// Maximum number of texts to list, 1 to 1000 (the agent's default is 100).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_limit)]
    pub limit: Option<u32>,

    /// Token printed by the previous page, to list the next one.
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Queued,
    Sending,
    Sent,
    Delivered,
    Failed,
    Expired,
    Cancelled,
    Uncertain,
}

#[derive(Debug, Subcommand)]
pub enum InboxCommand {
    /// List emails kept for review (unclassified mail, auto-replies, reports that matched no text), newest first.
    Review(InboxReviewArgs),
    /// Show one inbound email, with its content as received.
    Show(InboxIdArgs),
    /// Mark an email reviewed, which takes it off the review list.
    MarkReviewed(InboxIdArgs),
}

#[derive(Debug, Args)]
pub struct InboxReviewArgs {
    /// Also list emails already marked reviewed.
    #[arg(long)]
    pub all: bool,

    /// Maximum number of emails to list, 1 to 1000 (the agent's default is 100).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_limit)]
    pub limit: Option<u32>,

    /// Token printed by the previous page, to list the next one.
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct InboxIdArgs {
    /// The inbound email's id, as listed by `inbox review`.
    #[arg(value_name = "ID")]
    pub id: u64,
}

#[derive(Debug, Subcommand)]
pub enum OptoutsCommand {
    /// List opted-out numbers, most recent first.
    List(OptoutsListArgs),
    /// Opt a number out, so texts to it are rejected.
    Add(OptoutChangeArgs),
    /// Opt a number back in, for example when the patient asks for texts again.
    Remove(OptoutChangeArgs),
}

#[derive(Debug, Args)]
pub struct OptoutsListArgs {
    /// Maximum number of opt-outs to list, 1 to 1000 (the agent's default is 100).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_limit)]
    pub limit: Option<u32>,

    /// Token printed by the previous page, to list the next one.
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct OptoutChangeArgs {
    /// The patient's mobile number, in any common form.
    #[arg(value_name = "NUMBER")]
    pub number: String,

    /// A note stored with the change, for example who asked for it (at most 200 characters).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub note: String,
}

#[derive(Debug, Subcommand)]
pub enum RepliesCommand {
    /// List replies, newest first.
    List(RepliesListArgs),
}

#[derive(Debug, Args)]
pub struct RepliesListArgs {
    /// Only replies matched to this message id.
    #[arg(long, value_name = "ID")]
    pub message: Option<String>,

    /// Only replies from this number, in any common form.
    #[arg(long, value_name = "NUMBER")]
    pub from: Option<String>,

    /// Only replies received at or after this time, as RFC 3339, for example 2026-12-01T00:00:00Z.
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    pub since: Option<DateTime<Utc>>,

    /// Maximum number of replies to list, 1 to 1000 (the agent's default is 100).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_limit)]
    pub limit: Option<u32>,

    /// Token printed by the previous page, to list the next one.
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
}

/// Parses the command line, exiting with clap's usage error (code 2) or help output.
///
/// The help footer is built at run time so that it can show the default token path for the user running the command.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
}

/// Builds the clap command with the footer that documents exit codes, the token and the output formats.
pub fn command() -> clap::Command {
    Cli::command().after_long_help(help_footer()).after_help(help_footer())
}

fn help_footer() -> String {
    let default_token = nhsmail_agent::paths::admin_token_path(&nhsmail_agent::paths::default_data_dir());
    format!(
        "\
Token:
Sent as \"authorization: Bearer <token>\" on every call. It is read from --token-file (or NHSMAIL_TOKEN_FILE), \
otherwise taken from NHSMAIL_TOKEN, otherwise read from the agent's admin token file in its data directory \
(NHSMAIL_DATA_DIR when set). For this user that file is:
  {default_token}

Output:
Table times are in this computer's local time zone. --output json prints one JSON document on stdout using the \
proto field names (snake_case, for example password_state and days_until_expiry), enums as short lower-case names \
(\"queued\", \"ok\", \"gsm7\"; a value this version does not know is printed as its number), times as RFC 3339 \
strings in UTC, and null for unset times. Warnings from the agent go to stderr as \"warning: <message>\".

Exit codes:
  0  success
  1  the agent answered with an error, for example an invalid argument or an unknown message id
  2  usage error: an invalid option or input, so no request was sent
  3  cannot reach the agent, or a call timed out
  4  authentication or permission failure, including a missing or unreadable token file
  5  fleet commands: at least one agent needs attention (unreachable, warnings, or an old queue)",
        default_token = default_token.display()
    )
}

/// Accepts an `http://` or `https://` URL with a host.
fn parse_agent_url(value: &str) -> Result<String, String> {
    let uri: tonic::transport::Uri =
        value.parse().map_err(|_| "expected a URL such as http://127.0.0.1:50051".to_string())?;

    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err("expected a URL starting with http:// or https://, such as http://127.0.0.1:50051".into());
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host; expected for example http://127.0.0.1:50051".into());
    }
    Ok(value.to_string())
}

fn parse_upload_interval(value: &str) -> Result<u32, String> {
    let range = format!("a whole number of minutes from 1 to {MAX_UPLOAD_INTERVAL_MINUTES}");
    let minutes: u32 = value.parse().map_err(|_| format!("expected {range}"))?;
    if !(1..=MAX_UPLOAD_INTERVAL_MINUTES).contains(&minutes) {
        return Err(format!("{minutes} is out of range; expected {range}"));
    }
    Ok(minutes)
}

fn parse_limit(value: &str) -> Result<u32, String> {
    let range = format!("a whole number from 1 to {MAX_PAGE_SIZE}");
    let limit: u32 = value.parse().map_err(|_| format!("expected {range}"))?;
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(format!("{limit} is out of range; expected {range}"));
    }
    Ok(limit)
}

/// Parses an RFC 3339 time with any offset into UTC. Clap adds the flag name to the error.
pub fn parse_rfc3339(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value.trim()).map(|time| time.with_timezone(&Utc)).map_err(|err| {
        format!("{err}; expected an RFC 3339 time such as 2026-12-01T09:30:00Z or 2026-12-01T09:30:00+01:00")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut argv = vec!["nhsmail-ctl"];
        argv.extend_from_slice(args);
        command().try_get_matches_from(argv).and_then(|matches| Cli::from_arg_matches(&matches))
    }

    fn usage_error(args: &[&str]) -> String {
        parse_args(args).expect_err("arguments should be rejected").to_string()
    }

    #[test]
    fn command_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn invalid_send_after_names_flag() {
        let message = usage_error(&["send", "--to", "07700900123", "--text", "hi", "--send-after", "tomorrow"]);
        assert!(message.contains("--send-after"), "{message}");
        assert!(message.contains("RFC 3339"), "{message}");
    }

    #[test]
    fn invalid_expires_at_names_flag() {
        let message = usage_error(&["send", "--to", "07700900123", "--text", "hi", "--expires-at", "2026-12-01"]);
        assert!(message.contains("--expires-at"), "{message}");
        assert!(message.contains("2026-12-01T09:30:00Z"), "{message}");
    }

    #[test]
    fn invalid_since_names_flag() {
        let message = usage_error(&["replies", "list", "--since", "12:00"]);
        assert!(message.contains("--since"), "{message}");
    }

    #[test]
    fn rfc3339_offset_converts_to_utc() {
        let time = parse_rfc3339("2026-12-01T09:30:00+01:00").unwrap();
        assert_eq!(time.to_rfc3339(), "2026-12-01T08:30:00+00:00");
    }

    #[test]
    fn upload_interval_bounds_are_enforced() {
        for bad in ["0", "1441", "-5", "15.5", "ten"] {
            let message = usage_error(&["connectivity", "set", "--upload-interval", bad]);
            assert!(message.contains("--upload-interval"), "{bad}: {message}");
            assert!(message.contains("1 to 1440"), "{bad}: {message}");
        }
        for good in ["1", "15", "1440"] {
            assert!(parse_args(&["connectivity", "set", "--upload-interval", good]).is_ok(), "{good}");
        }
    }

    #[test]
    fn connectivity_set_needs_one_change() {
        let message = usage_error(&["connectivity", "set"]);
        assert!(message.contains("--upload-interval"), "{message}");
        assert!(message.contains("--auto-manage"), "{message}");
    }

    #[test]
    fn auto_manage_accepts_on_and_off() {
        let cli = parse_args(&["connectivity", "set", "--auto-manage", "off"]).unwrap();
        let Command::Connectivity(ConnectivityCommand::Set(args)) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.auto_manage, Some(Switch::Off));
    }

    #[test]
    fn limit_bounds_are_enforced() {
        let message = usage_error(&["messages", "list", "--limit", "1001"]);
        assert!(message.contains("--limit"), "{message}");
        assert!(parse_args(&["messages", "list", "--limit", "1000"]).is_ok());
    }

    #[test]
    fn agent_url_must_be_http_or_https() {
        for bad in ["127.0.0.1:50051", "ftp://127.0.0.1", "http://"] {
            let message = usage_error(&["--agent", bad, "status"]);
            assert!(message.contains("--agent"), "{bad}: {message}");
        }
    }

    #[test]
    fn agent_url_accepts_https() {
        let cli = parse_args(&["--agent", "https://agent.example.org:50051", "status"]).unwrap();
        assert_eq!(cli.global.agent, "https://agent.example.org:50051");
    }

    #[test]
    fn client_cert_needs_client_key() {
        let message = usage_error(&["--client-cert", "client.pem", "status"]);
        assert!(message.contains("--client-key"), "{message}");
    }

    #[test]
    fn global_options_follow_subcommand() {
        let cli = parse_args(&["status", "--output", "json", "--timeout", "3"]).unwrap();
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.timeout, 3);
    }

    #[test]
    fn timeout_zero_is_rejected() {
        let message = usage_error(&["--timeout", "0", "status"]);
        assert!(message.contains("--timeout"), "{message}");
    }

    #[test]
    fn send_text_accepts_hyphen() {
        let cli = parse_args(&["send", "--to", "07700900123", "--text", "-"]).unwrap();
        let Command::Send(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.text, "-");
        assert_eq!(args.priority, PriorityArg::Normal);
    }

    #[test]
    fn help_footer_lists_exit_codes() {
        let help = command().render_help().to_string();
        for code in ["0  success", "1  the agent", "2  usage error", "3  cannot reach", "4  authentication"] {
            assert!(help.contains(code), "missing {code:?}");
        }
    }
}
