//! nhsmail-agent: the per-practice daemon. Loads the settings, opens the data directory, then runs the gRPC
//! server, the sender, the upload cycle and the mailbox watcher until SIGINT or SIGTERM. With `--sandbox` it
//! first starts a built-in NHSmail sandbox and runs against that ([`sandbox_mode`]).

mod sandbox_mode;
mod token_command;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use nhsmail_agent::app::App;
use nhsmail_agent::auth::{Role, TokenAuthority};
use nhsmail_agent::config::{Config, MailboxAuth, Overrides};
use nhsmail_agent::credentials::{CredentialManager, PasswordCalendar, Vault, WARNING_WINDOW_DAYS};
use nhsmail_agent::oauth::OAuthClient;
use nhsmail_agent::store::Store;
use nhsmail_agent::transport::TlsSettings;
use nhsmail_agent::{api, metrics, paths, rotation, sender, upload, watcher};
use nhsmail_sandbox::Sandbox;

/// Exit code for settings that are missing or invalid.
const EXIT_CONFIG: u8 = 2;
/// How long shutdown waits for gRPC calls in progress before closing connections.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// Exit code for a failure to start or run after the settings were accepted.
const EXIT_RUNTIME: u8 = 1;

/// Sends patient SMS through an NHSmail mailbox and manages the mailbox password.
#[derive(Debug, Parser)]
#[command(
    name = "nhsmail-agent",
    version,
    after_help = "Settings come from the config file, then NHSMAIL_* environment variables, then these flags.\n\
                  Logging follows RUST_LOG (default: info).\n\n\
                  Try it without NHSmail: nhsmail-agent --sandbox\n\n\
                  Exit codes:\n  0  stopped cleanly after SIGINT or SIGTERM\n  1  failed while starting or running\n  2  invalid or missing settings"
)]
struct Args {
    /// TOML config file with [agent], [nhsmail], [sending] and [password] sections.
    #[arg(long, global = true, value_name = "FILE", env = "NHSMAIL_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the database, the key file and the admin token (created with mode 0700).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address and port, for example 127.0.0.1:50051; loopback unless [agent] tls_cert and tls_key are
    /// set. Port 0 picks a free port; the agent prints "listening on ADDR" on standard output once it accepts calls.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Run against a built-in NHSmail sandbox on 127.0.0.1 with OAuth 2.0 sign-in, for a demonstration or a test.
    /// Its account and mailbox are kept in DIR/sandbox; the data directory defaults to ./nhsmail-sandbox-data, never
    /// to a real agent's. The mailbox settings of the config file and the environment are replaced by the sandbox's.
    #[arg(long)]
    sandbox: bool,
    #[command(subcommand)]
    command: Option<AgentCommand>,
}

#[derive(Debug, clap::Subcommand)]
enum AgentCommand {
    /// Create, list or revoke API tokens in the data directory's database. Works while the agent runs; a revoked
    /// token fails from its next call.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Create a token and print it, alone on the last line. It is shown once; only a salted hash is stored.
    Create {
        /// A name for the token's holder, such as central-it or emis-bridge: 1 to 64 letters, digits, '.', '_' or
        /// '-', unique among tokens not revoked.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// admin (everything, including revealing the password), operator (connectivity, password, uploads, audit),
        /// submitter (texts, opt-outs, inbox review) or viewer (read only).
        #[arg(long, value_name = "ROLE", value_parser = parse_role)]
        role: Role,
    },
    /// List tokens by name, role, id, creation and revocation time. Never shows a token.
    List,
    /// Revoke the active token with this name.
    Revoke {
        #[arg(long, value_name = "NAME")]
        name: String,
    },
}

fn parse_role(value: &str) -> Result<Role, String> {
    value.parse::<Role>().map_err(|error| error.to_string())
}

fn main() -> ExitCode {
    init_logging();
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };

    if let Some(AgentCommand::Token(command)) = args.command {
        return token_command::run(&runtime, command, args.config, args.data_dir);
    }

    let mut overrides = Overrides { config_file: args.config, listen: args.listen, data_dir: args.data_dir };
    let sandbox = if args.sandbox {
        match runtime.block_on(sandbox_mode::start(&mut overrides)) {
            Ok(sandbox) => Some(sandbox),
            Err(error) => {
                eprintln!("error: {error:#}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    } else {
        None
    };
    let loaded = match &sandbox {
        Some(sandbox) => sandbox_mode::load_config(sandbox, &overrides),
        None => Config::load(&overrides),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    match runtime.block_on(run(config, sandbox)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Keeps lettre and async-imap at info or above whatever RUST_LOG requests, because at debug they log the SMTP and
/// IMAP dialogue, sign-in included.
///
/// A log line that cannot be written (standard error on a full disk or a closed pipe) is dropped. With
/// tracing-subscriber's default, the failure is reported with `eprintln!`, which panics when standard error fails,
/// so the task that logged (a gRPC call, the sender) would die with it.
fn init_logging() {
    let requested = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(format!("{requested},lettre=info,async_imap=info,rustls=info"))
        .unwrap_or_else(|_| EnvFilter::new("info,lettre=info,async_imap=info,rustls=info"));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .log_internal_errors(false)
        .init();
}

async fn run(config: Config, sandbox: Option<Sandbox>) -> anyhow::Result<()> {
    let data_dir = config.agent.data_dir.clone();
    prepare_data_dir(&data_dir)?;
    log_settings(&config);

    let store = Store::open(nhsmail_agent::store::database_path(&data_dir)).context("cannot open the database")?;
    let vault = Vault::open_or_create(&data_dir)?;
    let authority = TokenAuthority::new(store.clone());
    authority.ensure_local_admin(&data_dir).await.context("cannot set up the admin token")?;
    nhsmail_agent::permissions::check_data_dir(&data_dir);
    let tls = config
        .agent
        .tls
        .as_ref()
        .map(api::tls::server_config)
        .transpose()
        .context("cannot set up TLS for the gRPC listener")?;
    let oauth = oauth_client(&config)?;
    let credentials = CredentialManager::load(
        store.clone(),
        vault,
        config.nhsmail.username.clone(),
        PasswordCalendar {
            max_age_days: config.password.max_age_days,
            warning_days: config.password.warn_days.iter().copied().max().unwrap_or(WARNING_WINDOW_DAYS),
        },
        oauth,
    )
    .await
    .context("cannot load the stored password")?;

    let recovered = store.recover_interrupted(chrono::Utc::now()).await.context("cannot recover the queue")?;
    if recovered.requeued + recovered.uncertain > 0 {
        tracing::warn!(
            requeued = recovered.requeued,
            uncertain = recovered.uncertain,
            "recovered messages that were being sent when the agent stopped; uncertain ones may have reached NHSmail and are not resent"
        );
    }

    let metrics_listener = match config.agent.metrics_listen {
        Some(address) => Some(bind_metrics(address).await?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.agent.listen)
        .await
        .with_context(|| format!("cannot listen on {}; is another agent running?", config.agent.listen))?;
    let bound = listener.local_addr().context("cannot read the listening address")?;
    // Printed on stdout once ready, so scripts and tests can pass port 0 and learn the port.
    println!("listening on {bound}");
    tracing::info!(
        listen = %bound,
        tls = tls.is_some(),
        mutual_tls = config.agent.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some()),
        token_file = %paths::admin_token_path(&data_dir).display(),
        "gRPC API listening (health and reflection on; every other call needs a token)"
    );

    let shutdown = CancellationToken::new();
    let audit_purge = tokio::spawn(purge_audit(store.clone(), config.agent.audit_retention_days, shutdown.clone()));
    let (app, triggers) = App::new(config, store, credentials);
    let sender = tokio::spawn(sender::run(app.clone(), shutdown.clone()));
    let cycle = tokio::spawn(upload::run(app.clone(), triggers, shutdown.clone()));
    let watcher = tokio::spawn(watcher::run(app.clone(), shutdown.clone()));
    let rotation_requests = app.take_rotation_requests().expect("the rotation channel is taken once");
    let rotator = tokio::spawn(rotation::run(app.clone(), rotation_requests, shutdown.clone()));
    let metrics_server =
        metrics_listener.map(|listener| tokio::spawn(metrics::serve(app.clone(), listener, shutdown.clone())));
    let companion = sandbox.as_ref().map(|sandbox| {
        let info = sandbox.info().clone();
        tokio::spawn(sandbox_mode::serve(app.clone(), info, bound, data_dir.clone(), shutdown.clone()))
    });
    let server = tokio::spawn(api::serve(app, authority, listener, tls, shutdown.clone()));

    wait_for_signal().await;
    tracing::info!("shutdown begun");
    shutdown.cancel();
    let (sender, cycle, watcher, rotator) = tokio::join!(sender, cycle, watcher, rotator);
    sender.context("sender task panicked")?;
    rotator.context("password rotation task panicked")?;
    cycle.context("upload task panicked")?;
    watcher.context("mailbox watcher task panicked")?;
    if let Some(metrics_server) = metrics_server {
        metrics_server.await.context("metrics task panicked")?;
    }
    audit_purge.await.context("audit purge task panicked")?;
    if let Some(companion) = companion {
        companion.await.context("sandbox companion task panicked")?;
    }
    stop_server(server).await?;
    if let Some(sandbox) = sandbox {
        sandbox.shutdown().await;
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// Binds the Prometheus endpoint and prints "metrics listening on ADDR" on stdout, before the gRPC "listening on"
/// line, so a caller that passed port 0 learns the port.
async fn bind_metrics(address: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for metrics; check [agent] metrics_listen"))?;
    let bound = listener.local_addr().context("cannot read the metrics address")?;
    println!("metrics listening on {bound}");
    tracing::info!(listen = %bound, "Prometheus metrics on http://{bound}/metrics");
    Ok(listener)
}

/// Deletes audit rows older than `retention_days` now and then once a day until `shutdown`. A failure is logged
/// and tried again the next day.
async fn purge_audit(store: Store, retention_days: u32, shutdown: CancellationToken) {
    loop {
        let before = chrono::Utc::now() - chrono::Duration::days(i64::from(retention_days));
        match store.purge_audit(before).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, retention_days, "deleted audit rows past the retention period"),
            Err(error) => tracing::error!(%error, "cannot delete old audit rows"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(24 * 3600)) => {}
        }
    }
}

/// Builds the token endpoint's client when `[nhsmail] auth` is `oauth2`.
fn oauth_client(config: &Config) -> anyhow::Result<Option<OAuthClient>> {
    let MailboxAuth::OAuth2(settings) = &config.nhsmail.auth else { return Ok(None) };
    let tls = TlsSettings { extra_ca_file: config.nhsmail.ca_file.clone() };
    let client = OAuthClient::new(settings.clone(), &tls, config.nhsmail.network_timeout)
        .context("cannot set up the OAuth 2.0 token client; check [nhsmail] token_url and ca_file")?;
    Ok(Some(client))
}

/// Waits for calls in progress to finish, then closes connections that clients keep open, because an idle
/// HTTP/2 connection would otherwise hold the shutdown for ever.
async fn stop_server(mut server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>) -> anyhow::Result<()> {
    match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
        Ok(result) => result.context("gRPC server task panicked")?.context("gRPC server failed"),
        Err(_) => {
            tracing::warn!(
                grace_seconds = SHUTDOWN_GRACE.as_secs(),
                "closing client connections still open after the grace period"
            );
            server.abort();
            Ok(())
        }
    }
}

/// Creates the data directory with mode 0700, or tightens an existing one that others can read.
pub(crate) fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read the data directory {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %dir.display(), mode = format!("{:o}", mode & 0o777), "data directory was open to others; setting mode 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set mode 0700 on {}", dir.display()))?;
    }
    Ok(())
}

fn log_settings(config: &Config) {
    let nhsmail = &config.nhsmail;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config_file = %config.source.as_ref().map_or("none".into(), |path| path.display().to_string()),
        data_dir = %config.agent.data_dir.display(),
        "nhsmail-agent starting"
    );
    tracing::info!(
        username = nhsmail.username.as_deref().unwrap_or("(not set)"),
        smtp = %format!("{}:{} ({:?})", nhsmail.smtp.host, nhsmail.smtp.port, nhsmail.smtp.security),
        imap = %format!("{}:{} ({:?})", nhsmail.imap.host, nhsmail.imap.port, nhsmail.imap.security),
        ca_file = %nhsmail.ca_file.as_ref().map_or("none".into(), |path| path.display().to_string()),
        sms_domain = %nhsmail.sms_domain,
        address_form = ?nhsmail.address_form,
        text_in = ?nhsmail.text_in,
        "mailbox settings"
    );
    match &nhsmail.auth {
        MailboxAuth::Password => tracing::info!(auth = "password", "sign-in with the password (PLAIN, LOGIN)"),
        MailboxAuth::OAuth2(oauth) => tracing::info!(
            auth = "oauth2",
            token_url = %oauth.token_url,
            client_id = %oauth.client_id,
            scope = %oauth.scope,
            graph_url = %nhsmail.graph_url.as_ref().map_or("none".into(), ToString::to_string),
            "sign-in with OAuth 2.0 access tokens (XOAUTH2)"
        ),
    }
    tracing::info!(
        rate_per_minute = config.sending.rate_per_minute,
        max_lifetime_hours = config.sending.max_lifetime.as_secs() / 3600,
        max_text_chars = config.sending.max_text_chars,
        upload_interval_minutes = config.agent.upload_interval_minutes,
        password_max_age_days = config.password.max_age_days,
        auto_manage = config.password.auto_manage,
        "sending and password settings"
    );
    tracing::info!(
        processed_folder = %config.mailbox.processed_folder,
        retention_days = config.mailbox.retention_days,
        idle = config.mailbox.idle,
        "mailbox retention and IDLE settings"
    );
    tracing::info!(
        metrics_listen = %config.agent.metrics_listen.map_or("off".into(), |address| address.to_string()),
        update_feed = %config.agent.update_feed.as_ref().map_or("off".into(), ToString::to_string),
        "metrics and update feed settings"
    );
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
