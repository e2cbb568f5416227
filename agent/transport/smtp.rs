//! SMTP submission: sends one email per call over a small pool of authenticated connections and
//! reports which step failed.
//!
//! The dialogue is driven step by step with lettre's `AsyncSmtpConnection` rather than its
//! high-level transport, because the caller acts differently on each failure. A failure before
//! the message data means nothing was handed over (retry). A lost connection after it means the
//! server may have the message (uncertain, never resend blindly). A rejected recipient is
//! permanent, and a rejected password closes the sending gate.

mod error;
mod message;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials as LettreCredentials, Mechanism as LettreMechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Quit, Rcpt, Rset};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;

pub use self::error::{Phase, Reply, SmtpError, SmtpErrorKind, classify_reply};
use self::message::BuiltEmail;
use super::{ConfigError, Credentials, Endpoint, SecretKind, Security, TlsSettings, tls};

/// A default for [`SmtpSettings::idle_timeout`], well under Postfix's default `smtpd_timeout` of
/// 300 s (Postfix 3.7). A server that closes sooner costs one NOOP on the next send, never a message.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// An SASL mechanism for SMTP AUTH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    /// Google's and Microsoft's mechanism for an OAuth 2.0 access token. It is chosen by credentials of kind
    /// [`SecretKind::AccessToken`], never from [`SmtpSettings::mechanisms`].
    Xoauth2,
}

impl Mechanism {
    fn to_lettre(self) -> LettreMechanism {
        match self {
            Self::Plain => LettreMechanism::Plain,
            Self::Login => LettreMechanism::Login,
            Self::Xoauth2 => LettreMechanism::Xoauth2,
        }
    }
}

impl FromStr for Mechanism {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "plain" => Ok(Self::Plain),
            "login" => Ok(Self::Login),
            _ => Err(ConfigError::InvalidAuthMechanism { value: value.to_owned() }),
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Plain => "PLAIN",
            Self::Login => "LOGIN",
            Self::Xoauth2 => "XOAUTH2",
        })
    }
}

/// Settings for SMTP submission: server, TLS, EHLO name, limits and AUTH mechanisms.
#[derive(Clone, Debug)]
pub struct SmtpSettings {
    pub endpoint: Endpoint,
    pub tls: TlsSettings,
    /// The name sent with EHLO: a host name or an address literal such as `[127.0.0.1]`.
    pub hello_name: String,
    /// The limit for each network step: connect, each command, and the message data with its reply.
    pub timeout: Duration,
    /// The maximum number of idle connections kept for reuse; 0 disables the pool.
    pub pool_size: usize,
    /// How long an idle connection is kept before it is closed instead of reused.
    pub idle_timeout: Duration,
    /// Password mechanisms to try, in order of preference; the first one the server offers is used. An access token
    /// always uses XOAUTH2.
    pub mechanisms: Vec<Mechanism>,
}

/// An email to one recipient. The caller decides what goes in the subject and the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundEmail {
    /// The account's own address.
    pub from: String,
    /// The gateway address, for example `07700900123@sms.nhs.net`.
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// The outcome of an accepted email.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentEmail {
    /// The Message-ID without angle brackets.
    pub message_id: String,
    /// The server's reply to the message data, for example `250 2.0.0 Ok: queued as 4F2A1`.
    pub response: String,
}

/// An SMTP client holding the settings, the credentials and a pool of idle connections.
/// Cloning is cheap and clones share the pool.
///
/// Once the server rejects the credentials, every later call returns an error of kind
/// [`SmtpErrorKind::Auth`] without connecting, so a rejected password is never tried twice. Build
/// a new client for a new password.
#[derive(Clone)]
pub struct SmtpClient {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SmtpSettings,
    credentials: Credentials,
    /// The server as `host:port`, for error messages.
    server: String,
    hello: ClientId,
    /// `None` for [`Security::Plain`].
    tls: Option<TlsParameters>,
    idle: Mutex<Vec<IdleConnection>>,
    credentials_rejected: AtomicBool,
}

struct IdleConnection {
    connection: AsyncSmtpConnection,
    since: Instant,
}

impl fmt::Debug for SmtpClient {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SmtpClient")
            .field("server", &self.inner.server)
            .field("security", &self.inner.settings.endpoint.security)
            .field("username", &self.inner.credentials.username)
            .field("idle_connections", &self.lock_idle().len())
            .finish_non_exhaustive()
    }
}

impl SmtpClient {
    /// Validates the settings and loads the trusted certificates. Does not connect.
    pub fn new(settings: SmtpSettings, credentials: Credentials) -> Result<Self, SmtpError> {
        settings.endpoint.validate()?;
        validate_settings(&settings, &credentials)?;

        let tls = match settings.endpoint.security {
            Security::Plain => None,
            Security::StartTls | Security::Tls => Some(tls_parameters(&settings)?),
        };
        let inner = Inner {
            server: settings.endpoint.to_string(),
            hello: ClientId::Domain(settings.hello_name.clone()),
            tls,
            settings,
            credentials,
            idle: Mutex::new(Vec::new()),
            credentials_rejected: AtomicBool::new(false),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Sends one email and returns its Message-ID and the server's reply.
    ///
    /// `before_data` is called with the Message-ID after the server has accepted `DATA` and
    /// right before the message data is written, so the caller can store the ID durably first.
    /// If it fails, the connection is dropped without the final `.`, so the server discards the
    /// message, and the error is [`SmtpError::BeforeData`] (transient).
    pub async fn send<F, Fut, E>(&self, email: &OutboundEmail, before_data: F) -> Result<SentEmail, SmtpError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.check_credentials_usable()?;
        let built = message::build(email)?;

        let mut connection = self.checkout().await.inspect_err(|error| self.observe(error))?;
        match self.transmit(&mut connection, &built, before_data).await {
            Ok(response) => {
                self.checkin(connection);
                Ok(SentEmail { message_id: built.message_id, response: format_response(&response) })
            }
            Err(error) => {
                self.observe(&error);
                self.recover(connection, &error).await;
                Err(error)
            }
        }
    }

    /// Connects, sends EHLO, upgrades with STARTTLS if configured, authenticates and quits.
    /// The connection is not pooled.
    pub async fn verify_login(&self) -> Result<(), SmtpError> {
        self.check_credentials_usable()?;
        let mut connection = self.open().await.inspect_err(|error| self.observe(error))?;
        self.quit(&mut connection).await;
        Ok(())
    }

    /// Returns whether this client signs in with exactly `credentials`. A caller holding a newer access token builds
    /// a new client when it does not.
    pub fn uses(&self, credentials: &Credentials) -> bool {
        let own = &self.inner.credentials;
        own.kind == credentials.kind
            && own.username == credentials.username
            && own.secret.expose() == credentials.secret.expose()
    }

    /// Sends QUIT on every idle connection and closes it; for shutdown.
    pub async fn close_idle(&self) {
        let idle = std::mem::take(&mut *self.lock_idle());
        for mut entry in idle {
            self.quit(&mut entry.connection).await;
        }
    }

    /// Runs MAIL, RCPT and DATA, calls `before_data`, then writes the message data.
    async fn transmit<F, Fut, E>(
        &self,
        connection: &mut AsyncSmtpConnection,
        built: &BuiltEmail,
        before_data: F,
    ) -> Result<Response, SmtpError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mail = Mail::new(Some(built.from.clone()), Vec::new());
        let reply = self.step(Phase::Mail, connection.command(mail)).await?;
        self.expect_completion(Phase::Mail, &reply)?;

        let rcpt = Rcpt::new(built.to.clone(), Vec::new());
        let reply = self.step(Phase::Rcpt, connection.command(rcpt)).await?;
        self.expect_completion(Phase::Rcpt, &reply)?;

        let reply = self.step(Phase::Data, connection.command(Data)).await?;
        if !reply.has_code(354) {
            return Err(self.unexpected(Phase::Data, &reply));
        }

        before_data(built.message_id.clone()).await.map_err(|error| SmtpError::BeforeData(error.into()))?;

        let reply = self.step(Phase::Message, connection.message(&built.bytes)).await?;
        self.expect_completion(Phase::Message, &reply)?;
        Ok(reply)
    }

    /// Returns a live connection: an idle one that still replies to NOOP, or a new one.
    ///
    /// Checking before MAIL means a connection the server closed while idle costs nothing: it
    /// is replaced before any part of the message is sent.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        while let Some(mut idle) = self.take_idle() {
            let alive = tokio::time::timeout(self.inner.settings.timeout, idle.connection.test_connected())
                .await
                .unwrap_or(false);
            if alive {
                return Ok(idle.connection);
            }
            tracing::debug!(server = %self.inner.server, "idle smtp connection was closed; replacing it");
        }
        self.open().await
    }

    /// Pops the most recently used idle connection, closing those idle for too long.
    fn take_idle(&self) -> Option<IdleConnection> {
        let idle_timeout = self.inner.settings.idle_timeout;
        let mut idle = self.lock_idle();
        idle.retain(|entry| entry.since.elapsed() < idle_timeout);
        idle.pop()
    }

    fn checkin(&self, connection: AsyncSmtpConnection) {
        let mut idle = self.lock_idle();
        if idle.len() < self.inner.settings.pool_size {
            idle.push(IdleConnection { connection, since: Instant::now() });
        }
    }

    /// Puts the connection back in the pool if the server's reply left the dialogue in step,
    /// after RSET; otherwise drops it.
    async fn recover(&self, mut connection: AsyncSmtpConnection, error: &SmtpError) {
        let in_step = matches!(
            error,
            SmtpError::Rejected { phase: Phase::Mail | Phase::Rcpt | Phase::Data | Phase::Message, .. }
        );
        if !in_step {
            return;
        }

        let reset = tokio::time::timeout(self.inner.settings.timeout, connection.command(Rset)).await;
        if matches!(reset, Ok(Ok(_))) {
            self.checkin(connection);
        }
    }

    /// Opens an authenticated connection.
    async fn open(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        let settings = &self.inner.settings;
        let endpoint = &settings.endpoint;
        let implicit_tls = match endpoint.security {
            Security::Tls => self.inner.tls.clone(),
            Security::StartTls | Security::Plain => None,
        };

        let connect = AsyncSmtpConnection::connect_tokio1(
            (endpoint.host.as_str(), endpoint.port),
            Some(settings.timeout),
            &self.inner.hello,
            implicit_tls,
            None,
        );
        let mut connection = self.step(Phase::Connect, connect).await?;

        if endpoint.security == Security::StartTls {
            if !connection.can_starttls() {
                self.quit(&mut connection).await;
                return Err(SmtpError::StartTlsUnavailable { server: self.inner.server.clone() });
            }
            let parameters = self.inner.tls.clone().expect("tls parameters exist for starttls");
            let upgrade = connection.starttls(parameters, &self.inner.hello);
            self.step(Phase::StartTls, upgrade).await?;
        }

        self.authenticate(&mut connection).await?;
        Ok(connection)
    }

    async fn authenticate(&self, connection: &mut AsyncSmtpConnection) -> Result<(), SmtpError> {
        if self.inner.credentials.kind == SecretKind::AccessToken {
            return self.authenticate_xoauth2(connection).await;
        }
        let mechanisms: Vec<LettreMechanism> =
            self.inner.settings.mechanisms.iter().map(|mechanism| mechanism.to_lettre()).collect();
        let offered = mechanisms.iter().any(|mechanism| connection.server_info().supports_auth_mechanism(*mechanism));
        if !offered {
            self.quit(connection).await;
            return Err(SmtpError::AuthUnavailable {
                server: self.inner.server.clone(),
                configured: self.configured_mechanisms(),
            });
        }

        let credentials = LettreCredentials::new(
            self.inner.credentials.username.clone(),
            self.inner.credentials.secret.expose().to_owned(),
        );
        self.step(Phase::Auth, connection.auth(&mechanisms, &credentials)).await?;
        Ok(())
    }

    /// Runs AUTH XOAUTH2 with the access token as the initial response.
    ///
    /// lettre's own `auth` cannot be used: a server that rejects the token sends a 334 challenge with a JSON error
    /// and gives its final 5xx reply only after the client's empty response, a step lettre refuses. Here that 5xx
    /// becomes an error of kind [`SmtpErrorKind::Auth`].
    async fn authenticate_xoauth2(&self, connection: &mut AsyncSmtpConnection) -> Result<(), SmtpError> {
        if !connection.server_info().supports_auth_mechanism(LettreMechanism::Xoauth2) {
            self.quit(connection).await;
            return Err(SmtpError::AuthUnavailable {
                server: self.inner.server.clone(),
                configured: Mechanism::Xoauth2.to_string(),
            });
        }

        let credentials = &self.inner.credentials;
        let response = xoauth2_response(&credentials.username, &credentials.secret);
        let command = SaslLine(format!("AUTH XOAUTH2 {response}"));
        let mut reply = self.step(Phase::Auth, connection.command(command)).await?;
        if reply.has_code(334) {
            reply = self.step(Phase::Auth, connection.command(SaslLine(String::new()))).await?;
            // A server that accepts after its error challenge is outside the convention; do not trust the session.
            return Err(self.unexpected(Phase::Auth, &reply));
        }
        self.expect_completion(Phase::Auth, &reply)
    }

    /// Runs one network step under the per-step timeout.
    async fn step<T>(
        &self,
        phase: Phase,
        future: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
    ) -> Result<T, SmtpError> {
        let timeout = self.inner.settings.timeout;
        match tokio::time::timeout(timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(SmtpError::from_lettre(&self.inner.server, phase, error)),
            Err(_elapsed) => Err(SmtpError::Timeout { server: self.inner.server.clone(), phase, after: timeout }),
        }
    }

    /// Requires a 2xx reply; lettre also lets 3xx through as positive.
    fn expect_completion(&self, phase: Phase, reply: &Response) -> Result<(), SmtpError> {
        if u16::from(reply.code()) / 100 == 2 { Ok(()) } else { Err(self.unexpected(phase, reply)) }
    }

    fn unexpected(&self, phase: Phase, reply: &Response) -> SmtpError {
        SmtpError::UnexpectedReply {
            server: self.inner.server.clone(),
            phase,
            reply: Reply { code: reply.code().into(), text: reply.message().collect::<Vec<_>>().join(" ") },
        }
    }

    async fn quit(&self, connection: &mut AsyncSmtpConnection) {
        let _ = tokio::time::timeout(self.inner.settings.timeout, connection.command(Quit)).await;
    }

    fn check_credentials_usable(&self) -> Result<(), SmtpError> {
        if self.inner.credentials_rejected.load(Ordering::SeqCst) {
            return Err(SmtpError::CredentialsRejected { username: self.inner.credentials.username.clone() });
        }
        Ok(())
    }

    /// Remembers an authentication failure, so these credentials are not tried again.
    fn observe(&self, error: &SmtpError) {
        if error.kind() == SmtpErrorKind::Auth {
            self.inner.credentials_rejected.store(true, Ordering::SeqCst);
            // Idle connections were authenticated with the same credentials.
            self.lock_idle().clear();
        }
    }

    fn configured_mechanisms(&self) -> String {
        let names: Vec<String> = self.inner.settings.mechanisms.iter().map(ToString::to_string).collect();
        names.join(", ")
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<IdleConnection>> {
        self.inner.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One line of an SASL exchange. It may hold a token, so it has no `Debug`.
struct SaslLine(String);

impl fmt::Display for SaslLine {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}\r\n", self.0)
    }
}

/// Encodes the XOAUTH2 initial response: `user=` name `^A` `auth=Bearer ` token `^A^A`, in base64.
pub(crate) fn xoauth2_response(username: &str, token: &crate::secret::Secret) -> String {
    use base64::Engine;
    let raw = format!("user={username}\x01auth=Bearer {}\x01\x01", token.expose());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

fn validate_settings(settings: &SmtpSettings, credentials: &Credentials) -> Result<(), ConfigError> {
    if !is_valid_hello_name(&settings.hello_name) {
        return Err(ConfigError::InvalidSetting {
            name: "smtp hello name",
            reason: "must be a host name or an address literal such as [127.0.0.1]",
        });
    }
    if settings.timeout.is_zero() {
        return Err(ConfigError::InvalidSetting { name: "smtp timeout", reason: "must be greater than zero" });
    }
    if settings.mechanisms.is_empty() || settings.mechanisms.contains(&Mechanism::Xoauth2) {
        return Err(ConfigError::InvalidSetting {
            name: "smtp auth mechanisms",
            reason: "must name at least one of plain and login, and not xoauth2, which access tokens choose",
        });
    }
    if credentials.username.trim().is_empty() {
        return Err(ConfigError::InvalidSetting { name: "smtp username", reason: "must not be empty" });
    }
    Ok(())
}

/// Accepts letters, digits, `-`, `.`, and `[`, `]`, `:` for address literals: nothing that could
/// end the EHLO line.
fn is_valid_hello_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '[' | ']' | ':'))
}

/// Builds lettre's TLS parameters from the agent's trusted roots, replacing lettre's own choice.
fn tls_parameters(settings: &SmtpSettings) -> Result<TlsParameters, ConfigError> {
    let host = &settings.endpoint.host;
    tls::server_name(host)?;

    let mut builder = TlsParameters::builder(host.clone()).certificate_store(CertificateStore::None);
    for root in tls::root_certificates(&settings.tls)? {
        let certificate = Certificate::from_der(root.to_vec())
            .map_err(|error| ConfigError::TlsSetup { reason: error.to_string() })?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build_rustls().map_err(|error| ConfigError::TlsSetup { reason: error.to_string() })
}

fn format_response(response: &Response) -> String {
    let code = u16::from(response.code());
    let text = response.message().collect::<Vec<_>>().join(" ");
    if text.is_empty() { code.to_string() } else { format!("{code} {text}") }
}
