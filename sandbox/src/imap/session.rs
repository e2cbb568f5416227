//! One IMAP connection: reading commands with their literals, the connection states of
//! RFC 3501 section 3, sign-in, STARTTLS, the untagged updates a selected folder owes the
//! client, and IDLE.

use std::sync::Arc;
use std::time::Duration;

use super::parse::{self, Token};
use crate::account::SignInError;
use crate::counters::Protocol;
use crate::faults::FaultKind;
use crate::net::{Conn, ConnError};
use crate::sasl::{self, Credentials, SaslError};
use crate::state::Shared;

/// Maximum length of a command line, literals excluded.
const MAX_LINE: usize = 64 * 1024;
/// The inactivity autologout timer: at least 30 minutes (RFC 3501 section 5.4).
const AUTOLOGOUT: Duration = Duration::from_secs(30 * 60);
/// How long one IDLE may last before the server ends it (RFC 2177 section 3).
const IDLE_TIMEOUT: Duration = Duration::from_secs(29 * 60);

#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("connection dropped by an injected fault")]
    Fault,
}

/// The folder a session selected, and the UIDs reported to the client, in sequence order.
pub struct Selected {
    pub name: String,
    pub read_only: bool,
    pub uidvalidity: u32,
    pub uids: Vec<u32>,
}

/// The next step a command handler requests from the dispatcher.
pub enum Reply {
    /// Send pending updates, then this tagged status (e.g. "OK SELECT completed").
    Tagged(String),
    /// Send this tagged status and close the connection.
    Close(String),
    /// The handler has sent the tagged status itself (STARTTLS must, before the handshake).
    Sent,
}

pub struct Session {
    pub(super) conn: Option<Conn>,
    pub(super) shared: Arc<Shared>,
    pub(super) authenticated: bool,
    pub(super) selected: Option<Selected>,
    /// A reason to end the session at the next chance, e.g. "UIDVALIDITY changed".
    pub(super) bye: Option<String>,
}

impl Session {
    pub fn new(conn: Conn, shared: Arc<Shared>) -> Session {
        Session { conn: Some(conn), shared, authenticated: false, selected: None, bye: None }
    }

    pub(super) fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("connection present until the session ends")
    }

    pub(super) async fn send(&mut self, bytes: &[u8]) -> Result<(), SessionEnd> {
        self.conn().write_all(bytes).await?;
        Ok(())
    }

    pub(super) async fn drop_connection(&mut self, kind: FaultKind) -> SessionEnd {
        self.shared.counters.fault_fired(kind.name());
        if let Some(conn) = self.conn.take() {
            conn.drop_connection().await;
        }
        SessionEnd::Fault
    }

    pub(super) fn capabilities(&mut self) -> String {
        let mut capabilities = vec![
            "IMAP4rev1",
            "LITERAL+",
            "SASL-IR",
            "IDLE",
            "UIDPLUS",
            "MOVE",
            "UNSELECT",
            "NAMESPACE",
            "ID",
            "ENABLE",
        ];
        if !self.authenticated {
            if self.conn().tls {
                capabilities.extend(["AUTH=PLAIN", "AUTH=XOAUTH2"]);
            } else {
                capabilities.extend(["STARTTLS", "LOGINDISABLED"]);
            }
        }
        capabilities.join(" ")
    }

    pub async fn run(mut self) -> Result<(), SessionEnd> {
        let greeting = format!("* OK [CAPABILITY {}] nhsmail-sandbox IMAP4rev1 service ready\r\n", self.capabilities());
        self.send(greeting.as_bytes()).await?;
        loop {
            let command = match self.read_command().await {
                Ok(command) => command,
                Err(SessionEnd::Conn(ConnError::TimedOut(_))) => {
                    self.send(b"* BYE Autologout; idle for too long\r\n").await?;
                    return Ok(());
                }
                Err(SessionEnd::Conn(ConnError::LineTooLong(max))) => {
                    let reply = format!("* BAD Command line longer than {max} octets\r\n");
                    self.send(reply.as_bytes()).await?;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let Some(command) = command else { continue };
            let tokens = match parse::tokenize(&command) {
                Ok(tokens) => tokens,
                Err(error) => {
                    let tag = command.split(|b| *b == b' ').next().map(String::from_utf8_lossy).unwrap_or_default();
                    let tag = if tag.is_empty() { "*".into() } else { tag };
                    self.send(format!("{tag} BAD {error}\r\n").as_bytes()).await?;
                    continue;
                }
            };
            let (Some(Token::Atom(tag)), Some(Token::Atom(name))) = (tokens.first(), tokens.get(1)) else {
                self.send(b"* BAD Missing tag or command\r\n").await?;
                continue;
            };
            let tag = tag.clone();
            let name = name.to_ascii_uppercase();
            let args = tokens[2..].to_vec();

            let reply = self.dispatch(&tag, &name, &args).await?;
            if let Some(delay) = self.shared.faults.take_slow() {
                self.shared.counters.fault_fired(FaultKind::Slow.name());
                tokio::time::sleep(delay).await;
            }
            match reply {
                Reply::Tagged(status) => {
                    let allow_expunge = allows_expunge(&name, &args);
                    self.send_updates(allow_expunge).await?;
                    // A BYE instead of the tagged reply, so the client cannot take the
                    // command as done against the folder it knew.
                    if let Some(reason) = self.bye.take() {
                        self.send(format!("* BYE {reason}\r\n").as_bytes()).await?;
                        return Ok(());
                    }
                    self.send(format!("{tag} {status}\r\n").as_bytes()).await?;
                }
                Reply::Close(status) => {
                    self.send(format!("{tag} {status}\r\n").as_bytes()).await?;
                    return Ok(());
                }
                Reply::Sent => {}
            }
        }
    }

    /// Reads one command with its literals in place. Returns `None` after rejecting a
    /// literal that is too large.
    async fn read_command(&mut self) -> Result<Option<Vec<u8>>, SessionEnd> {
        let max_literal = self.shared.settings.max_message_size;
        let mut command = Vec::new();
        loop {
            let line = self.conn().read_line(MAX_LINE, AUTOLOGOUT).await?;
            command.extend_from_slice(&line);
            let Some((len, non_sync)) = parse::trailing_literal(&line) else {
                return Ok(Some(command));
            };
            if len > max_literal {
                if non_sync {
                    // The client sends the literal regardless, so the stream cannot be resynchronised.
                    self.send(b"* BYE Literal too large\r\n").await?;
                    return Err(ConnError::Closed.into());
                }
                let tag = String::from_utf8_lossy(command.split(|b| *b == b' ').next().unwrap_or(b"*")).into_owned();
                self.send(format!("{tag} NO [TOOBIG] Literal larger than {max_literal} octets\r\n").as_bytes()).await?;
                return Ok(None);
            }
            if !non_sync {
                self.send(b"+ Ready for literal data\r\n").await?;
            }
            let literal = self.conn().read_exact(len, AUTOLOGOUT).await?;
            command.extend_from_slice(b"\r\n");
            command.extend_from_slice(&literal);
        }
    }

    async fn dispatch(&mut self, tag: &str, name: &str, args: &[Token]) -> Result<Reply, SessionEnd> {
        let any_state = match name {
            "CAPABILITY" => {
                let line = format!("* CAPABILITY {}\r\n", self.capabilities());
                self.send(line.as_bytes()).await?;
                Some(Reply::Tagged("OK CAPABILITY completed".into()))
            }
            "NOOP" => Some(Reply::Tagged("OK NOOP completed".into())),
            "LOGOUT" => {
                self.send(b"* BYE nhsmail-sandbox logging out\r\n").await?;
                Some(Reply::Close("OK LOGOUT completed".into()))
            }
            "ID" => {
                self.send(b"* ID (\"name\" \"nhsmail-sandbox\")\r\n").await?;
                Some(Reply::Tagged("OK ID completed".into()))
            }
            _ => None,
        };
        if let Some(reply) = any_state {
            return Ok(reply);
        }

        if !self.authenticated {
            return match name {
                "STARTTLS" => self.starttls(tag).await,
                "LOGIN" => self.login(args).await,
                "AUTHENTICATE" => self.authenticate(args).await,
                _ => Ok(Reply::Tagged(format!("BAD {name} is not valid before sign-in"))),
            };
        }

        match name {
            "STARTTLS" | "LOGIN" | "AUTHENTICATE" => Ok(Reply::Tagged("BAD Already signed in".into())),
            "SELECT" | "EXAMINE" => self.select(args, name == "EXAMINE").await,
            "CREATE" => Ok(self.create(args)),
            "DELETE" => Ok(self.delete(args)),
            "LIST" | "LSUB" => self.list(name, args).await,
            "SUBSCRIBE" | "UNSUBSCRIBE" => Ok(Reply::Tagged(format!("OK {name} completed"))),
            "STATUS" => self.status(args).await,
            "APPEND" => Ok(self.append(args)),
            "NAMESPACE" => {
                self.send(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n").await?;
                Ok(Reply::Tagged("OK NAMESPACE completed".into()))
            }
            "ENABLE" => {
                self.send(b"* ENABLED\r\n").await?;
                Ok(Reply::Tagged("OK ENABLE completed".into()))
            }
            "IDLE" => self.idle().await,
            _ if self.selected.is_none() => Ok(Reply::Tagged(format!("BAD {name} needs a selected folder"))),
            "CHECK" => Ok(Reply::Tagged("OK CHECK completed".into())),
            "CLOSE" => Ok(self.close(true)),
            "UNSELECT" => Ok(self.close(false)),
            "EXPUNGE" => Ok(self.expunge(None)),
            "SEARCH" => self.search(args, false).await,
            "FETCH" => self.fetch(args, false).await,
            "STORE" => self.store(args, false).await,
            "COPY" => self.copy(args, false, false).await,
            "MOVE" => self.copy(args, false, true).await,
            "UID" => {
                let sub = args.first().and_then(Token::atom_upper).unwrap_or_default();
                let rest = args.get(1..).unwrap_or_default();
                match sub.as_str() {
                    "SEARCH" => self.search(rest, true).await,
                    "FETCH" => self.fetch(rest, true).await,
                    "STORE" => self.store(rest, true).await,
                    "COPY" => self.copy(rest, true, false).await,
                    "MOVE" => self.copy(rest, true, true).await,
                    "EXPUNGE" => match rest.first().and_then(Token::text) {
                        Some(set) => Ok(self.expunge(Some(&set))),
                        None => Ok(Reply::Tagged("BAD UID EXPUNGE needs a UID set".into())),
                    },
                    _ => Ok(Reply::Tagged(format!("BAD Unknown UID command {sub}"))),
                }
            }
            _ => Ok(Reply::Tagged(format!("BAD Unknown command {name}"))),
        }
    }

    async fn starttls(&mut self, tag: &str) -> Result<Reply, SessionEnd> {
        if self.conn().tls {
            return Ok(Reply::Tagged("BAD TLS already active".into()));
        }
        self.send(format!("{tag} OK Begin TLS negotiation now\r\n").as_bytes()).await?;
        let acceptor = self.shared.tls.clone();
        self.conn().start_tls(&acceptor).await?;
        Ok(Reply::Sent)
    }
}

/// Returns whether the reply to `name` may include EXPUNGE responses (RFC 3501 section 7.4.1
/// forbids them during FETCH, STORE and SEARCH by sequence number).
fn allows_expunge(name: &str, args: &[Token]) -> bool {
    match name {
        "FETCH" | "STORE" | "SEARCH" => false,
        // RFC 3501 allows them for the UID forms, but sequence numbers in the FETCH
        // responses would then shift under the client.
        "UID" => args
            .first()
            .and_then(Token::atom_upper)
            .is_some_and(|sub| !matches!(sub.as_str(), "SEARCH" | "FETCH" | "STORE")),
        _ => true,
    }
}

impl Session {
    async fn login(&mut self, args: &[Token]) -> Result<Reply, SessionEnd> {
        if !self.conn().tls {
            return Ok(Reply::Tagged("NO [PRIVACYREQUIRED] LOGIN is disabled until STARTTLS".into()));
        }
        let (Some(username), Some(password), None) =
            (args.first().and_then(Token::text), args.get(1).and_then(Token::text), args.get(2))
        else {
            return Ok(Reply::Tagged("BAD LOGIN needs a user name and a password".into()));
        };
        let credentials = Credentials::Password { username, password };
        Ok(self.finish_sign_in(&credentials, "LOGIN"))
    }

    async fn authenticate(&mut self, args: &[Token]) -> Result<Reply, SessionEnd> {
        if !self.conn().tls {
            return Ok(Reply::Tagged("NO [PRIVACYREQUIRED] AUTHENTICATE is disabled until STARTTLS".into()));
        }
        let Some(mechanism) = args.first().and_then(Token::text) else {
            return Ok(Reply::Tagged("BAD AUTHENTICATE needs a mechanism".into()));
        };
        let mechanism = mechanism.to_ascii_uppercase();
        if mechanism != "PLAIN" && mechanism != "XOAUTH2" {
            return Ok(Reply::Tagged(format!("NO Unsupported authentication mechanism {mechanism}")));
        }

        // SASL-IR (RFC 4959) puts the initial response on the command line.
        let response = match args.get(1).and_then(Token::text) {
            Some(initial) => initial,
            None => {
                self.send(b"+ \r\n").await?;
                let line = self.conn().read_line(MAX_LINE, AUTOLOGOUT).await?;
                String::from_utf8_lossy(&line).into_owned()
            }
        };
        if response.trim() == "*" {
            return Ok(Reply::Tagged("BAD AUTHENTICATE cancelled".into()));
        }
        let decoded = if mechanism == "PLAIN" {
            sasl::decode_plain(response.as_bytes())
        } else {
            sasl::decode_xoauth2(response.as_bytes())
        };
        let credentials = match decoded {
            Ok(credentials) => credentials,
            Err(SaslError::Base64 | SaslError::Utf8) => {
                return Ok(Reply::Tagged("BAD Cannot decode the SASL response".into()));
            }
            Err(SaslError::Malformed(_)) => {
                return Ok(Reply::Tagged("NO [AUTHENTICATIONFAILED] Malformed SASL response".into()));
            }
        };

        if let Credentials::Token { .. } = credentials {
            if self.shared.sign_in(Protocol::Imap, &credentials).is_err() {
                // The XOAUTH2 convention: a JSON challenge, the client's empty line, then NO.
                let challenge = format!("+ {}\r\n", sasl::xoauth2_error_challenge());
                self.send(challenge.as_bytes()).await?;
                self.conn().read_line(MAX_LINE, AUTOLOGOUT).await?;
                return Ok(Reply::Tagged(
                    "NO [AUTHENTICATIONFAILED] AUTHENTICATE failed: invalid or expired access token".into(),
                ));
            }
            self.authenticated = true;
            return Ok(Reply::Tagged(format!("OK [CAPABILITY {}] AUTHENTICATE completed", self.capabilities())));
        }
        Ok(self.finish_sign_in(&credentials, "AUTHENTICATE"))
    }

    fn finish_sign_in(&mut self, credentials: &Credentials, command: &str) -> Reply {
        match self.shared.sign_in(Protocol::Imap, credentials) {
            Ok(()) => {
                self.authenticated = true;
                Reply::Tagged(format!("OK [CAPABILITY {}] {command} completed", self.capabilities()))
            }
            Err(error @ SignInError::Expired { .. }) => {
                Reply::Tagged(format!("NO [EXPIRED] {command} failed: {error}"))
            }
            Err(error @ SignInError::Propagating) => {
                Reply::Tagged(format!("NO [UNAVAILABLE] {command} failed: {error}"))
            }
            Err(error) => Reply::Tagged(format!("NO [AUTHENTICATIONFAILED] {command} failed: {error}")),
        }
    }

    /// Sends what changed in the selected folder since the client last heard: EXPUNGE
    /// responses (only when `allow_expunge`), then EXISTS and RECENT for new mail. A
    /// deleted folder or a new UIDVALIDITY ends the session with BYE after this command.
    pub(super) async fn send_updates(&mut self, allow_expunge: bool) -> Result<(), SessionEnd> {
        let updates = self.collect_updates(allow_expunge);
        if !updates.is_empty() {
            self.send(&updates).await?;
        }
        Ok(())
    }

    fn collect_updates(&mut self, allow_expunge: bool) -> Vec<u8> {
        let Some(selected) = self.selected.as_mut() else {
            return Vec::new();
        };
        let mailbox = self.shared.mailbox();
        let Some(folder) = mailbox.folder(&selected.name) else {
            self.bye = Some(format!("Folder {} was deleted", selected.name));
            return Vec::new();
        };
        if folder.uidvalidity != selected.uidvalidity {
            self.bye = Some(format!(
                "[UIDVALIDITY {}] UIDVALIDITY of {} changed; select it again",
                folder.uidvalidity, selected.name
            ));
            return Vec::new();
        }

        let mut out = Vec::new();
        if allow_expunge {
            // From the highest sequence number down, so each number is still valid when sent.
            for index in (0..selected.uids.len()).rev() {
                if folder.find(selected.uids[index]).is_none() {
                    out.extend(format!("* {} EXPUNGE\r\n", index + 1).into_bytes());
                    selected.uids.remove(index);
                }
            }
        }
        let highest_known = selected.uids.last().copied().unwrap_or(0);
        let new: Vec<u32> =
            folder.messages.iter().map(|message| message.uid).filter(|uid| *uid > highest_known).collect();
        if !new.is_empty() {
            selected.uids.extend(new);
            let recent = folder.messages.iter().filter(|message| message.recent).count();
            out.extend(format!("* {} EXISTS\r\n* {recent} RECENT\r\n", selected.uids.len()).into_bytes());
        }
        out
    }

    /// IDLE (RFC 2177): pushes updates as the folder changes until the client sends DONE.
    async fn idle(&mut self) -> Result<Reply, SessionEnd> {
        let mut changes = self.shared.mailbox().watch();
        changes.borrow_and_update();
        self.send(b"+ idling\r\n").await?;
        let deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
        let mut line = Vec::new();
        loop {
            self.send_updates(true).await?;
            if let Some(reason) = self.bye.take() {
                self.send(format!("* BYE {reason}\r\n").as_bytes()).await?;
                return Err(ConnError::Closed.into());
            }
            let conn = self.conn.as_mut().expect("connection present until the session ends");
            tokio::select! {
                read = conn.read_line_into(&mut line, MAX_LINE) => {
                    read?;
                    return if line.eq_ignore_ascii_case(b"DONE") {
                        Ok(Reply::Tagged("OK IDLE terminated".into()))
                    } else {
                        Ok(Reply::Tagged("BAD Expected DONE".into()))
                    };
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(ConnError::Closed.into());
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.send(b"* BYE IDLE lasted too long\r\n").await?;
                    return Err(ConnError::Closed.into());
                }
            }
        }
    }
}
