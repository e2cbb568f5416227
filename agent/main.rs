//! nhsmail-agent: the per-practice daemon. Loads the settings, opens the data directory, then runs the gRPC
//! server, the sender, the upload cycle and the mailbox watcher until SIGINT or SIGTERM. With `--sandbox` it
//! first starts a built-in NHSmail sandbox and runs against that ([`sandbox_mode`]).

mod sandbox_mode;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use nhsmail_agent::app::App;
use nhsmail_agent::auth::TokenAuthority;
use nhsmail_agent::config::{Config, MailboxAuth, Overrides};
use nhsmail_agent::credentials::{CredentialManager, Vault};
use nhsmail_agent::oauth::OAuthClient;
use nhsmail_agent::store::Store;
use nhsmail_agent::transport::TlsSettings;
use nhsmail_agent::{api, paths, sender, upload, watcher};
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
    #[arg(long, value_name = "FILE", env = "NHSMAIL_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the database, the key file and the admin token (created with mode 0700).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address and port; loopback only, for example 127.0.0.1:50051. Port 0 picks a free port; the
    /// agent prints "listening on ADDR" on standard output once it accepts calls.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Run against a built-in NHSmail sandbox on 127.0.0.1 with OAuth 2.0 sign-in, for a demonstration or a test.
    /// Its account and mailbox are kept in DIR/sandbox; the data directory defaults to ./nhsmail-sandbox-data, never
    /// to a real agent's. The mailbox settings of the config file and the environment are replaced by the sandbox's.
    #[arg(long)]
    sandbox: bool,
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
    let authority = TokenAuthority::load_or_create(&data_dir)?;
    let oauth = oauth_client(&config)?;
    let credentials = CredentialManager::load(
        store.clone(),
        vault,
        config.nhsmail.username.clone(),
        config.password.max_age_days,
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

    let listener = tokio::net::TcpListener::bind(config.agent.listen)
        .await
        .with_context(|| format!("cannot listen on {}; is another agent running?", config.agent.listen))?;
    let bound = listener.local_addr().context("cannot read the listening address")?;
    // Printed on stdout once ready, so scripts and tests can pass port 0 and learn the port.
    println!("listening on {bound}");
    tracing::info!(
        listen = %bound,
        token_file = %paths::admin_token_path(&data_dir).display(),
        "gRPC API listening (health and reflection on; every other call needs the admin token)"
    );

    let (app, triggers) = App::new(config, store, credentials);
    let shutdown = CancellationToken::new();
    let sender = tokio::spawn(sender::run(app.clone(), shutdown.clone()));
    let cycle = tokio::spawn(upload::run(app.clone(), triggers, shutdown.clone()));
    let watcher = tokio::spawn(watcher::run(app.clone(), shutdown.clone()));
    let companion = sandbox.as_ref().map(|sandbox| {
        let info = sandbox.info().clone();
        tokio::spawn(sandbox_mode::serve(app.clone(), info, bound, data_dir.clone(), shutdown.clone()))
    });
    let server = tokio::spawn(api::serve(app, authority, listener, shutdown.clone()));

    wait_for_signal().await;
    tracing::info!("shutdown begun");
    shutdown.cancel();
    let (sender, cycle, watcher) = tokio::join!(sender, cycle, watcher);
    sender.context("sender task panicked")?;
    cycle.context("upload task panicked")?;
    watcher.context("mailbox watcher task panicked")?;
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
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
