//! nhsmail-sandbox: a local stand-in for NHSmail on 127.0.0.1, for demonstrations, tests
//! and anyone writing a client. It speaks the real protocols, written from their RFCs:
//!
//! - [`smtp`]: SMTP submission with STARTTLS and AUTH PLAIN, LOGIN and XOAUTH2;
//! - [`imap`]: IMAP4rev1 over implicit TLS and STARTTLS, with IDLE, UIDPLUS and MOVE;
//! - [`identity`]: an OAuth 2.0 token endpoint and Graph's changePassword;
//! - [`gateway`] and [`report`]: the SMS gateway and the receipts, reports and replies it
//!   puts in the inbox, chosen by number range;
//! - [`account`]: the password policy, expiry and lockout across every protocol;
//! - [`mailbox`]: folders, UIDs, UIDVALIDITY and flags, persisted;
//! - [`control`]: the HTTP control API that tests use to look inside and inject faults.
//!
//! [`Sandbox::start`] runs everything in the caller's tokio runtime; the binary
//! `nhsmail-sandbox` wraps it and prints [`SandboxInfo`] as one JSON line.

pub mod account;
pub mod clock;
pub mod control;
pub mod counters;
pub mod faults;
pub mod gateway;
pub mod identity;
mod imap;
pub mod mailbox;
mod net;
pub mod persist;
pub mod report;
mod sasl;
mod smtp;
mod state;
mod tls;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;

pub use account::Policy;
pub use clock::Clock;

use account::Account;
use mailbox::Mailbox;
use state::{Settings, Shared};

/// The account's address unless the options name another.
pub const DEFAULT_USERNAME: &str = "practice.sms@example.org";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("failed to create the state directory {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("failed to listen on 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
    #[error(transparent)]
    Mailbox(#[from] mailbox::MailboxError),
}

/// Settings for starting a sandbox. Ports of 0 are chosen by the operating system.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Folder of the account, mailbox and certificates, or a temporary folder when `None`.
    pub state_dir: Option<PathBuf>,
    /// The account's address, used only when the state directory contains no account yet.
    pub username: String,
    pub policy: Policy,
    /// How long the SMS gateway waits before each receipt, report or reply.
    pub receipt_delay: Duration,
    /// The largest message SMTP accepts, in octets.
    pub max_message_size: usize,
    /// When set, the token endpoint accepts only this client_id; otherwise any.
    pub client_id: Option<String>,
    pub smtp_port: u16,
    pub imap_port: u16,
    pub imap_starttls_port: u16,
    pub identity_port: u16,
    pub control_port: u16,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            state_dir: None,
            username: DEFAULT_USERNAME.to_string(),
            policy: Policy::default(),
            receipt_delay: Duration::from_secs(1),
            max_message_size: 10 * 1024 * 1024,
            client_id: None,
            smtp_port: 0,
            imap_port: 0,
            imap_starttls_port: 0,
            identity_port: 0,
            control_port: 0,
        }
    }
}

/// How to reach a running sandbox; the binary prints this as its first line of JSON.
#[derive(Clone, Serialize)]
pub struct SandboxInfo {
    pub username: String,
    /// The account's password when the sandbox started; the control API shows later ones.
    pub password: String,
    pub smtp_port: u16,
    /// Always "starttls": submission on a plain port upgraded with STARTTLS.
    pub smtp_security: &'static str,
    /// The implicit-TLS IMAP port.
    pub imap_port: u16,
    /// Always "tls", for `imap_port`.
    pub imap_security: &'static str,
    pub imap_starttls_port: u16,
    /// The PEM file of the CA that signed the servers' certificate.
    pub ca_file: PathBuf,
    pub token_url: String,
    /// Graph's base URL, up to and including `/v1.0`.
    pub graph_url: String,
    pub control_url: String,
    /// The client_id the token endpoint requires, or `None` when it accepts any.
    pub client_id: Option<String>,
    pub sms_domain: &'static str,
    pub state_dir: PathBuf,
}

impl fmt::Debug for SandboxInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxInfo")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("smtp_port", &self.smtp_port)
            .field("imap_port", &self.imap_port)
            .field("imap_starttls_port", &self.imap_starttls_port)
            .field("token_url", &self.token_url)
            .field("graph_url", &self.graph_url)
            .field("control_url", &self.control_url)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// A running sandbox. Dropping it stops the servers; [`Sandbox::shutdown`] also waits.
pub struct Sandbox {
    info: SandboxInfo,
    shared: Arc<Shared>,
    _temp_dir: Option<tempfile::TempDir>,
}

impl Sandbox {
    /// Loads or creates the state, binds every listener on 127.0.0.1 and starts serving
    /// on the current tokio runtime.
    pub async fn start(options: SandboxOptions) -> Result<Sandbox, SandboxError> {
        let (state_dir, temp_dir) = match &options.state_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("nhsmail-sandbox-")
                    .tempdir()
                    .map_err(|source| SandboxError::StateDir { path: std::env::temp_dir(), source })?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(&state_dir)
            .map_err(|source| SandboxError::StateDir { path: state_dir.clone(), source })?;

        let clock = Clock::default();
        let now = clock.now();
        let tls = tls::load_or_generate(&state_dir)?;
        let account =
            Account::load_or_create(state_dir.join("account.json"), &options.username, options.policy.clone(), now)?;
        let mailbox = Mailbox::load_or_create(state_dir.clone(), now)?;

        let smtp = bind(options.smtp_port).await?;
        let imap_tls = bind(options.imap_port).await?;
        let imap_plain = bind(options.imap_starttls_port).await?;
        let identity = bind(options.identity_port).await?;
        let control = bind(options.control_port).await?;
        let port = |listener: &TcpListener| listener.local_addr().map(|addr| addr.port()).unwrap_or(0);
        let identity_base = format!("http://127.0.0.1:{}", port(&identity));

        let info = SandboxInfo {
            username: account.username().to_string(),
            password: account.password().to_string(),
            smtp_port: port(&smtp),
            smtp_security: "starttls",
            imap_port: port(&imap_tls),
            imap_security: "tls",
            imap_starttls_port: port(&imap_plain),
            ca_file: tls.ca_file.clone(),
            token_url: format!("{identity_base}{}", identity::TOKEN_PATH),
            graph_url: format!("{identity_base}{}", identity::GRAPH_PREFIX),
            control_url: format!("http://127.0.0.1:{}", port(&control)),
            client_id: options.client_id.clone(),
            sms_domain: report::GATEWAY_DOMAIN,
            state_dir: state_dir.clone(),
        };

        let settings = Settings {
            receipt_delay: options.receipt_delay,
            max_message_size: options.max_message_size,
            client_id: options.client_id.clone(),
            hostname: "localhost".to_string(),
            state_dir,
        };
        let shared = Arc::new(Shared::new(clock, settings, account, mailbox, tls.acceptor));

        shared.tasks.spawn(smtp::serve(smtp, Arc::clone(&shared)));
        shared.tasks.spawn(imap::serve(imap_tls, Arc::clone(&shared), true));
        shared.tasks.spawn(imap::serve(imap_plain, Arc::clone(&shared), false));
        spawn_http(&shared, identity, identity::router(Arc::clone(&shared)));
        spawn_http(&shared, control, control::router(Arc::clone(&shared)));
        tracing::info!(smtp = info.smtp_port, imap = info.imap_port, control = %info.control_url, "sandbox started");

        Ok(Sandbox { info, shared, _temp_dir: temp_dir })
    }

    pub fn info(&self) -> &SandboxInfo {
        &self.info
    }

    /// Returns the sandbox's clock, which the control API can also move.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Stops every server and pending gateway task and waits for them to finish.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        tracing::info!("sandbox stopped");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

async fn bind(port: u16) -> Result<TcpListener, SandboxError> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .map_err(|source| SandboxError::Bind { port, source })
}

fn spawn_http(shared: &Arc<Shared>, listener: TcpListener, router: axum::Router) {
    let cancel = shared.cancel.clone();
    shared.tasks.spawn(async move {
        let served =
            axum::serve(listener, router).with_graceful_shutdown(async move { cancel.cancelled().await }).await;
        if let Err(error) = served {
            tracing::error!(%error, "HTTP server failed");
        }
    });
}

/// Returns the gateway's number ranges as text, for `--help` and for embedding programs.
pub fn number_ranges_help() -> String {
    gateway::ranges_help()
}
