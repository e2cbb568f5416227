//! IMAP: signs in, selects a mailbox and fetches the messages that arrived after a known UID; moves, deletes
//! and ages out messages ([`folders`]) and waits for new mail with IDLE ([`idle`]).
//!
//! One connection per use, secured with STARTTLS, implicit TLS or, on loopback only, nothing.
//! Every command runs under the configured timeout, and a session that hit a network error or
//! a timeout refuses further commands, because its responses may be out of step.

mod error;
mod folders;
mod idle;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_imap::imap_proto::{Response, Status};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::net::TcpStream;

pub use self::error::{ImapError, ImapErrorKind};
pub use self::folders::ServerFeatures;
pub use self::idle::IdleEvent;
pub use self::stream::ImapStream;
use super::{ConfigError, Credentials, Endpoint, SecretKind, Security, TlsSettings, tls};

/// Settings for reading mail over IMAP: server, TLS and timeout.
#[derive(Clone, Debug)]
pub struct ImapSettings {
    pub endpoint: Endpoint,
    pub tls: TlsSettings,
    /// The limit for connecting, the TLS handshake and each command; while fetching, the limit
    /// between two responses.
    pub timeout: Duration,
}

/// The state of a mailbox after SELECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxStatus {
    /// UIDs are only comparable while this stays the same.
    pub uidvalidity: u32,
    /// The UID the next message will get, if the server reported it.
    pub uidnext: Option<u32>,
    /// The number of messages in the mailbox.
    pub exists: u32,
}

/// One message as stored on the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedMail {
    pub uid: u32,
    /// When the server received the message, if it reported a parsable INTERNALDATE.
    pub internal_date: Option<DateTime<Utc>>,
    /// The whole message, headers and body, as the server stores it.
    pub raw: Vec<u8>,
}

/// Opens IMAP sessions. It is stateless.
pub struct ImapClient;

impl ImapClient {
    /// Connects, secures the connection as configured and signs in: LOGIN with a password, AUTHENTICATE XOAUTH2
    /// with an access token.
    pub async fn connect(settings: &ImapSettings, credentials: &Credentials) -> Result<ImapSession, ImapError> {
        settings.endpoint.validate()?;
        if settings.timeout.is_zero() {
            return Err(
                ConfigError::InvalidSetting { name: "imap timeout", reason: "must be greater than zero" }.into()
            );
        }
        let context = Context { server: settings.endpoint.to_string(), timeout: settings.timeout };

        let client = open(settings, &context).await?;
        let session = login(client, credentials, &context).await?;
        Ok(ImapSession { session, context, broken: false })
    }

    /// Connects, logs in and logs out: checks that the credentials work.
    pub async fn verify_login(settings: &ImapSettings, credentials: &Credentials) -> Result<(), ImapError> {
        Self::connect(settings, credentials).await?.logout().await
    }
}

/// A logged-in IMAP session. After an error of kind [`ImapErrorKind::Transient`], every later
/// command returns [`ImapError::SessionBroken`]; connect again.
pub struct ImapSession {
    session: async_imap::Session<ImapStream>,
    context: Context,
    broken: bool,
}

impl fmt::Debug for ImapSession {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ImapSession")
            .field("server", &self.context.server)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl ImapSession {
    /// Selects `mailbox` read-write and returns its UIDVALIDITY, UIDNEXT and message count.
    pub async fn select(&mut self, mailbox: &str) -> Result<MailboxStatus, ImapError> {
        self.check_usable()?;
        let result = self.context.run("SELECT", self.session.select(mailbox)).await;
        let selected = self.track(result)?;

        let uidvalidity = selected.uid_validity.ok_or_else(|| ImapError::MissingUidValidity {
            server: self.context.server.clone(),
            mailbox: mailbox.to_owned(),
        })?;
        Ok(MailboxStatus { uidvalidity, uidnext: selected.uid_next, exists: selected.exists })
    }

    /// Fetches up to `limit` messages with a UID above `last_uid`, in UID order, without setting
    /// `\Seen`.
    pub async fn fetch_since(&mut self, last_uid: u32, limit: usize) -> Result<Vec<FetchedMail>, ImapError> {
        self.check_usable()?;
        if limit == 0 || last_uid == u32::MAX {
            return Ok(Vec::new());
        }

        let query = format!("UID {}:*", last_uid + 1);
        let result = self.context.run("UID SEARCH", self.session.uid_search(&query)).await;
        let found = self.track(result)?;
        let uids = select_new_uids(found, last_uid, limit);
        if uids.is_empty() {
            return Ok(Vec::new());
        }

        let result = self.fetch_uids(&uids).await;
        self.track(result)
    }

    /// Sends LOGOUT and closes the connection.
    pub async fn logout(mut self) -> Result<(), ImapError> {
        self.check_usable()?;
        self.context.run("LOGOUT", self.session.logout()).await
    }

    async fn fetch_uids(&mut self, uids: &[u32]) -> Result<Vec<FetchedMail>, ImapError> {
        let wanted: HashSet<u32> = uids.iter().copied().collect();
        let mut responses = self
            .context
            .run("UID FETCH", self.session.uid_fetch(uid_set(uids), "(UID INTERNALDATE BODY.PEEK[])"))
            .await?;

        let mut mails = Vec::with_capacity(uids.len());
        loop {
            // The timeout applies between responses, so a large batch is not cut short while
            // the server keeps sending.
            let next = tokio::time::timeout(self.context.timeout, responses.next()).await;
            let fetch = match next {
                Ok(None) => break,
                Ok(Some(Ok(fetch))) => fetch,
                Ok(Some(Err(source))) => {
                    return Err(self.context.command_error("UID FETCH", source));
                }
                Err(_elapsed) => return Err(self.context.timed_out("UID FETCH")),
            };
            // Servers may add unsolicited FETCH responses (flag changes) for other messages.
            let (Some(uid), Some(body)) = (fetch.uid, fetch.body()) else {
                continue;
            };
            if wanted.contains(&uid) {
                mails.push(FetchedMail {
                    uid,
                    internal_date: fetch.internal_date().map(|date| date.with_timezone(&Utc)),
                    raw: body.to_vec(),
                });
            }
        }

        mails.sort_by_key(|mail| mail.uid);
        mails.dedup_by_key(|mail| mail.uid);
        Ok(mails)
    }

    fn check_usable(&self) -> Result<(), ImapError> {
        if self.broken {
            return Err(ImapError::SessionBroken { server: self.context.server.clone() });
        }
        Ok(())
    }

    /// Marks the session broken when `result` failed on the network.
    fn track<T>(&mut self, result: Result<T, ImapError>) -> Result<T, ImapError> {
        if let Err(error) = &result
            && error.kind() == ImapErrorKind::Transient
        {
            self.broken = true;
        }
        result
    }
}

/// The server's name and the timeout, kept apart from the session so both can be borrowed at
/// once.
struct Context {
    /// The server as `host:port`, for error messages.
    server: String,
    timeout: Duration,
}

impl Context {
    /// Runs one command under the timeout.
    async fn run<T>(
        &self,
        command: &'static str,
        future: impl Future<Output = async_imap::error::Result<T>>,
    ) -> Result<T, ImapError> {
        match tokio::time::timeout(self.timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(self.command_error(command, source)),
            Err(_elapsed) => Err(self.timed_out(command)),
        }
    }

    fn command_error(&self, command: &'static str, source: async_imap::error::Error) -> ImapError {
        ImapError::Command { server: self.server.clone(), command, source }
    }

    fn timed_out(&self, command: &'static str) -> ImapError {
        ImapError::Timeout { server: self.server.clone(), command, after: self.timeout }
    }
}

/// Connects and secures the connection, leaving the client ready for LOGIN.
async fn open(settings: &ImapSettings, context: &Context) -> Result<async_imap::Client<ImapStream>, ImapError> {
    let endpoint = &settings.endpoint;
    let tcp = connect_tcp(endpoint, context).await?;

    match endpoint.security {
        Security::Plain => {
            let mut client = async_imap::Client::new(ImapStream::Plain(tcp));
            read_greeting(&mut client, context).await?;
            Ok(client)
        }
        Security::Tls => {
            let config = tls::client_config(&settings.tls)?;
            let name = tls::server_name(&endpoint.host)?;
            let stream = stream::handshake(tcp, config, name, &context.server, context.timeout).await?;
            let mut client = async_imap::Client::new(stream);
            read_greeting(&mut client, context).await?;
            Ok(client)
        }
        Security::StartTls => {
            let config = tls::client_config(&settings.tls)?;
            let name = tls::server_name(&endpoint.host)?;
            let tcp = stream::starttls(tcp, &context.server, context.timeout).await?;
            let stream = stream::handshake(tcp, config, name, &context.server, context.timeout).await?;
            Ok(async_imap::Client::new(stream))
        }
    }
}

async fn connect_tcp(endpoint: &Endpoint, context: &Context) -> Result<TcpStream, ImapError> {
    let connect = TcpStream::connect((endpoint.host.as_str(), endpoint.port));
    match tokio::time::timeout(context.timeout, connect).await {
        Ok(Ok(tcp)) => Ok(tcp),
        Ok(Err(source)) => Err(ImapError::Connect { server: context.server.clone(), source }),
        Err(_elapsed) => Err(context.timed_out("connect")),
    }
}

/// Reads the server's greeting; anything but `* OK` (for example `* BYE` or `* PREAUTH`) ends
/// the attempt.
async fn read_greeting(client: &mut async_imap::Client<ImapStream>, context: &Context) -> Result<(), ImapError> {
    let greeting = match tokio::time::timeout(context.timeout, client.read_response()).await {
        Ok(Ok(Some(greeting))) => greeting,
        Ok(Ok(None)) => {
            return Err(context.command_error("greeting", async_imap::error::Error::ConnectionLost));
        }
        Ok(Err(source)) => {
            return Err(context.command_error("greeting", async_imap::error::Error::Io(source)));
        }
        Err(_elapsed) => return Err(context.timed_out("greeting")),
    };

    match greeting.parsed() {
        Response::Data { status: Status::Ok, .. } => Ok(()),
        other => Err(ImapError::Greeting { server: context.server.clone(), greeting: format!("{other:?}") }),
    }
}

/// Sends LOGIN or AUTHENTICATE XOAUTH2 and classifies a refusal: `NO [UNAVAILABLE]` (RFC 5530,
/// a temporary failure on the server's side) is transient, any other NO rejects the credentials.
async fn login(
    client: async_imap::Client<ImapStream>,
    credentials: &Credentials,
    context: &Context,
) -> Result<async_imap::Session<ImapStream>, ImapError> {
    use async_imap::error::Error;

    let (command, result) = match credentials.kind {
        SecretKind::Password => {
            let attempt = client.login(&credentials.username, credentials.secret.expose());
            ("LOGIN", tokio::time::timeout(context.timeout, attempt).await)
        }
        SecretKind::AccessToken => {
            let attempt = client.authenticate("XOAUTH2", XOAuth2::new(credentials));
            ("AUTHENTICATE", tokio::time::timeout(context.timeout, attempt).await)
        }
    };
    let result = match result {
        Ok(result) => result,
        Err(_elapsed) => return Err(context.timed_out(command)),
    };

    let (error, _client) = match result {
        Ok(session) => return Ok(session),
        Err(failure) => failure,
    };
    let username = credentials.username.clone();
    let server = context.server.clone();
    let error = match error {
        Error::No(response) => Error::No(server_text(&response)),
        other => other,
    };
    Err(match error {
        Error::No(response) if response.to_ascii_uppercase().contains("[UNAVAILABLE]") => {
            ImapError::LoginUnavailable { server, username, response }
        }
        Error::No(response) => ImapError::LoginRejected { server, username, response },
        // async-imap refuses to quote CR or LF; no server could ever accept such a password.
        Error::Validate(_) => ImapError::LoginRejected {
            server,
            username,
            response: "the username or password contains a line break, which LOGIN cannot send".to_owned(),
        },
        other => context.command_error(command, other),
    })
}

/// The client's side of AUTHENTICATE XOAUTH2: the initial response to the server's first
/// continuation, then an empty response to any further one.
///
/// A server that rejects the token sends a continuation with a JSON error, and sends its tagged
/// NO only after the client's empty response.
struct XOAuth2 {
    /// Taken at the first continuation, so the token is sent once.
    initial: Option<String>,
}

impl XOAuth2 {
    fn new(credentials: &Credentials) -> Self {
        let raw = format!("user={}\x01auth=Bearer {}\x01\x01", credentials.username, credentials.secret.expose());
        Self { initial: Some(raw) }
    }
}

impl async_imap::Authenticator for XOAuth2 {
    type Response = String;

    fn process(&mut self, _challenge: &[u8]) -> String {
        self.initial.take().unwrap_or_default()
    }
}

/// Keeps the UIDs above `last_uid`, lowest first, at most `limit` of them.
///
/// `UID SEARCH UID n:*` always matches the message with the highest UID, even when that UID is
/// below `n`, because `*` stands for the highest UID in use and `n:*` is the same range as
/// `*:n` (RFC 3501, section 6.4.8). So the result is filtered here.
fn select_new_uids(found: HashSet<u32>, last_uid: u32, limit: usize) -> Vec<u32> {
    let mut uids: Vec<u32> = found.into_iter().filter(|uid| *uid > last_uid).collect();
    uids.sort_unstable();
    uids.truncate(limit);
    uids
}

/// Formats sorted UIDs as an IMAP sequence set, joining runs: `[1, 2, 3, 7]` becomes `1:3,7`.
fn uid_set(uids: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut index = 0;
    while index < uids.len() {
        let start = uids[index];
        let mut end = start;
        while index + 1 < uids.len() && uids[index + 1] == end + 1 {
            index += 1;
            end = uids[index];
        }
        if start == end {
            parts.push(start.to_string());
        } else {
            parts.push(format!("{start}:{end}"));
        }
        index += 1;
    }
    parts.join(",")
}

/// Returns the server's own words from async-imap's rendering of a NO reply, which looks like
/// `code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")`; other text is returned as it is.
fn server_text(response: &str) -> String {
    let Some(start) = response.find("info: Some(\"") else { return response.to_string() };
    let rest = &response[start + "info: Some(\"".len()..];
    match rest.rfind("\")") {
        Some(end) => rest[..end].replace("\\\"", "\""),
        None => response.to_string(),
    }
}

#[cfg(test)]
mod server_text_tests {
    use super::server_text;

    #[test]
    fn no_reply_keeps_server_words() {
        let rendered = r#"code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")"#;
        assert_eq!(server_text(rendered), "[AUTHENTICATIONFAILED] Authentication failed.");
    }

    #[test]
    fn plain_reply_is_unchanged() {
        assert_eq!(server_text("LOGIN failed"), "LOGIN failed");
    }
}
