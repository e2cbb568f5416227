//! The SMTP submission server (RFC 5321 with STARTTLS from RFC 3207 and AUTH from
//! RFC 4954). Only a TLS-protected, authenticated session may send, only from the account's
//! own address, and only to the SMS gateway; each accepted recipient becomes a text.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::account::SignInError;
use crate::counters::Protocol;
use crate::faults::{FaultKind, SmtpStage};
use crate::gateway::{self, RecipientError};
use crate::net::{Conn, ConnError};
use crate::report::SubmittedText;
use crate::sasl::{self, Credentials, SaslError};
use crate::state::Shared;

/// A command line may hold 512 octets (RFC 5321 section 4.5.3.1.4), but AUTH may carry
/// 12288 (RFC 4954 section 4), which a long OAuth token needs.
const MAX_COMMAND_LINE: usize = 512;
const MAX_AUTH_LINE: usize = 12_288;
/// A text line may hold 1000 octets with its CRLF (RFC 5321 section 4.5.3.1.6).
const MAX_TEXT_LINE: usize = 1000;
const MAX_RECIPIENTS: usize = 100;
/// The server's wait for a command or a line of data (RFC 5321 section 4.5.3.2).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Accepts connections until the sandbox shuts down, one task per connection.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shared.cancel.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "failed to accept an SMTP connection");
                continue;
            }
        };
        let session_shared = Arc::clone(&shared);
        shared.tasks.spawn(async move {
            let cancel = session_shared.cancel.clone();
            let conn = Conn::new(Box::new(stream), false, peer);
            let mut session = Session::new(conn, session_shared);
            tokio::select! {
                outcome = session.run() => {
                    if let Err(error) = outcome {
                        tracing::debug!(%peer, %error, "SMTP session ended");
                    }
                }
                () = cancel.cancelled() => {}
            }
        });
    }
}

/// Reason a session ended early.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("connection dropped by an injected fault")]
    Fault,
}

struct Envelope {
    recipients: Vec<(String, String)>,
}

struct Session {
    conn: Option<Conn>,
    shared: Arc<Shared>,
    greeted: bool,
    authenticated: bool,
    envelope: Option<Envelope>,
}

impl Session {
    fn new(conn: Conn, shared: Arc<Shared>) -> Session {
        Session { conn: Some(conn), shared, greeted: false, authenticated: false, envelope: None }
    }

    fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("connection present until the session ends")
    }

    async fn reply(&mut self, text: &str) -> Result<(), SessionEnd> {
        if let Some(delay) = self.shared.faults.take_slow() {
            self.shared.counters.fault_fired(FaultKind::Slow.name());
            tokio::time::sleep(delay).await;
        }
        let mut bytes = text.replace('\n', "\r\n");
        bytes.push_str("\r\n");
        self.conn().write_all(bytes.as_bytes()).await?;
        Ok(())
    }

    async fn drop_connection(&mut self, kind: FaultKind) -> SessionEnd {
        self.shared.counters.fault_fired(kind.name());
        if let Some(conn) = self.conn.take() {
            conn.drop_connection().await;
        }
        SessionEnd::Fault
    }

    async fn run(&mut self) -> Result<(), SessionEnd> {
        let greeting = format!("220 {} ESMTP nhsmail-sandbox ready", self.shared.settings.hostname);
        self.reply(&greeting).await?;
        loop {
            let line = match self.conn().read_line(MAX_AUTH_LINE, COMMAND_TIMEOUT).await {
                Ok(line) => line,
                Err(ConnError::LineTooLong(_)) => {
                    self.reply("500 5.5.2 Line too long").await?;
                    continue;
                }
                Err(ConnError::TimedOut(_)) => {
                    self.reply("421 4.4.2 Idle too long, closing connection").await?;
                    return Ok(());
                }
                Err(error) => return Err(error.into()),
            };
            let line = String::from_utf8_lossy(&line).into_owned();
            let (verb, args) = match line.split_once(' ') {
                Some((verb, args)) => (verb.to_ascii_uppercase(), args.trim().to_string()),
                None => (line.trim().to_ascii_uppercase(), String::new()),
            };
            if verb != "AUTH" && line.len() + 2 > MAX_COMMAND_LINE {
                self.reply("500 5.5.2 Line too long").await?;
                continue;
            }
            match verb.as_str() {
                "EHLO" => self.ehlo(&args).await?,
                "HELO" => {
                    self.greeted = true;
                    self.envelope = None;
                    let reply = format!("250 {}", self.shared.settings.hostname);
                    self.reply(&reply).await?;
                }
                "STARTTLS" => self.starttls(&args).await?,
                "AUTH" => self.auth(&args).await?,
                "MAIL" => self.mail(&args).await?,
                "RCPT" => self.rcpt(&args).await?,
                "DATA" => self.data(&args).await?,
                "RSET" => {
                    self.envelope = None;
                    self.reply("250 2.0.0 Reset state").await?;
                }
                "NOOP" => self.reply("250 2.0.0 OK").await?,
                "VRFY" => self.reply("252 2.5.0 Cannot VRFY user").await?,
                "QUIT" => {
                    self.reply("221 2.0.0 Service closing transmission channel").await?;
                    return Ok(());
                }
                _ => self.reply("500 5.5.2 Command unrecognised").await?,
            }
        }
    }

    async fn ehlo(&mut self, args: &str) -> Result<(), SessionEnd> {
        if args.is_empty() {
            return self.reply("501 5.5.4 EHLO requires a domain or address").await;
        }
        self.greeted = true;
        self.envelope = None;
        let peer = self.conn().peer.ip();
        let tls = self.conn().tls;
        let settings = &self.shared.settings;
        let mut lines = vec![
            format!("{} Hello [{peer}]", settings.hostname),
            format!("SIZE {}", settings.max_message_size),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "PIPELINING".to_string(),
        ];
        if tls {
            lines.push("AUTH PLAIN LOGIN XOAUTH2".to_string());
        } else {
            lines.push("STARTTLS".to_string());
        }
        let last = lines.len() - 1;
        let reply: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(index, line)| format!("250{}{line}", if index == last { ' ' } else { '-' }))
            .collect();
        self.reply(&reply.join("\n")).await
    }

    async fn starttls(&mut self, args: &str) -> Result<(), SessionEnd> {
        if !args.is_empty() {
            return self.reply("501 5.5.4 STARTTLS takes no arguments").await;
        }
        if self.conn().tls {
            return self.reply("503 5.5.1 TLS already active").await;
        }
        self.reply("220 2.0.0 Ready to start TLS").await?;
        let acceptor = self.shared.tls.clone();
        self.conn().start_tls(&acceptor).await?;
        // RFC 3207 section 4.2: the client starts again from EHLO, and nothing from before TLS is kept.
        self.greeted = false;
        self.authenticated = false;
        self.envelope = None;
        Ok(())
    }

    async fn auth(&mut self, args: &str) -> Result<(), SessionEnd> {
        if !self.conn().tls {
            return self.reply("530 5.7.0 Must issue a STARTTLS command first").await;
        }
        if !self.greeted {
            return self.reply("503 5.5.1 Send EHLO first").await;
        }
        if self.authenticated {
            return self.reply("503 5.5.1 Already authenticated").await;
        }
        if self.envelope.is_some() {
            return self.reply("503 5.5.1 AUTH not allowed during a mail transaction").await;
        }
        let (mechanism, initial) = match args.split_once(' ') {
            Some((mechanism, initial)) => (mechanism.to_ascii_uppercase(), Some(initial.trim().to_string())),
            None => (args.to_ascii_uppercase(), None),
        };

        let credentials = match mechanism.as_str() {
            "PLAIN" => {
                let Some(response) = self.sasl_response(initial, "").await? else {
                    return self.reply("501 5.7.0 Authentication cancelled").await;
                };
                sasl::decode_plain(response.as_bytes())
            }
            "LOGIN" => {
                let Some(username) = self.sasl_response(initial, &sasl::encode("Username:")).await? else {
                    return self.reply("501 5.7.0 Authentication cancelled").await;
                };
                let Some(password) = self.sasl_response(None, &sasl::encode("Password:")).await? else {
                    return self.reply("501 5.7.0 Authentication cancelled").await;
                };
                sasl::decode_text(username.as_bytes()).and_then(|username| {
                    Ok(Credentials::Password { username, password: sasl::decode_text(password.as_bytes())? })
                })
            }
            "XOAUTH2" => {
                let Some(response) = self.sasl_response(initial, "").await? else {
                    return self.reply("501 5.7.0 Authentication cancelled").await;
                };
                sasl::decode_xoauth2(response.as_bytes())
            }
            _ => {
                return self.reply("504 5.5.4 Unrecognised authentication type").await;
            }
        };
        let credentials = match credentials {
            Ok(credentials) => credentials,
            Err(SaslError::Base64 | SaslError::Utf8) => {
                return self.reply("501 5.5.2 Cannot decode the SASL response").await;
            }
            Err(SaslError::Malformed(_)) => {
                return self.reply("535 5.7.8 Authentication unsuccessful: malformed response").await;
            }
        };

        match self.shared.sign_in(Protocol::Smtp, &credentials) {
            Ok(()) => {
                self.authenticated = true;
                self.reply("235 2.7.0 Authentication successful").await
            }
            Err(SignInError::InvalidToken) => {
                // The XOAUTH2 convention: a JSON challenge, the client's empty line, then 535.
                let challenge = format!("334 {}", sasl::xoauth2_error_challenge());
                self.reply(&challenge).await?;
                self.conn().read_line(MAX_AUTH_LINE, COMMAND_TIMEOUT).await?;
                self.reply("535 5.7.3 Authentication unsuccessful: invalid or expired access token").await
            }
            Err(error @ SignInError::Propagating) => {
                let reply = format!("454 4.7.0 Temporary authentication failure: {error}");
                self.reply(&reply).await
            }
            Err(error) => {
                let reply = format!("535 5.7.8 Authentication unsuccessful: {error}");
                self.reply(&reply).await
            }
        }
    }

    /// Returns the initial response, or sends a 334 with `prompt` and reads the client's
    /// line; `None` when the client cancels with "*".
    async fn sasl_response(&mut self, initial: Option<String>, prompt: &str) -> Result<Option<String>, SessionEnd> {
        let response = match initial {
            Some(initial) => initial,
            None => {
                self.reply(&format!("334 {prompt}")).await?;
                let line = self.conn().read_line(MAX_AUTH_LINE, COMMAND_TIMEOUT).await?;
                String::from_utf8_lossy(&line).into_owned()
            }
        };
        Ok((response.trim() != "*").then_some(response))
    }

    async fn mail(&mut self, args: &str) -> Result<(), SessionEnd> {
        if !self.greeted {
            return self.reply("503 5.5.1 Send EHLO first").await;
        }
        if !self.authenticated {
            return self.reply("530 5.7.0 Authentication required").await;
        }
        if self.envelope.is_some() {
            return self.reply("503 5.5.1 Sender already specified").await;
        }
        let Some((sender, parameters)) = parse_path(args, "FROM:") else {
            return self.reply("501 5.5.4 Syntax: MAIL FROM:<address>").await;
        };
        if !sender.eq_ignore_ascii_case(&self.shared.username()) {
            let reply = format!(
                "550 5.7.60 Client does not have permissions to send as <{sender}>; send from the account's own address"
            );
            return self.reply(&reply).await;
        }
        let declared_size = parameters
            .iter()
            .find_map(|parameter| parameter.to_ascii_uppercase().strip_prefix("SIZE=").map(str::to_string))
            .and_then(|size| size.parse::<usize>().ok());
        if declared_size.is_some_and(|size| size > self.shared.settings.max_message_size) {
            return self.reply("552 5.3.4 Message size exceeds fixed maximum message size").await;
        }
        if let Some(reply) = self.injected_reply(SmtpStage::Mail) {
            return self.reply(&reply).await;
        }
        self.envelope = Some(Envelope { recipients: Vec::new() });
        self.reply("250 2.1.0 Sender OK").await
    }

    async fn rcpt(&mut self, args: &str) -> Result<(), SessionEnd> {
        let Some(recipient_count) = self.envelope.as_ref().map(|envelope| envelope.recipients.len()) else {
            return self.reply("503 5.5.1 Need MAIL command first").await;
        };
        let Some((address, _)) = parse_path(args, "TO:") else {
            return self.reply("501 5.5.4 Syntax: RCPT TO:<address>").await;
        };
        if recipient_count >= MAX_RECIPIENTS {
            return self.reply("452 4.5.3 Too many recipients").await;
        }
        if let Some(reply) = self.injected_reply(SmtpStage::Rcpt) {
            return self.reply(&reply).await;
        }
        match gateway::parse_gateway_address(&address) {
            Ok(number) => {
                if let Some(envelope) = self.envelope.as_mut() {
                    envelope.recipients.push((number, address));
                }
                self.reply("250 2.1.5 Recipient OK").await
            }
            Err(error) => {
                self.shared.counters.message("rejected");
                let code = match error {
                    RecipientError::NotGateway(_) => "550 5.7.1",
                    RecipientError::InvalidNumber(_) => "550 5.1.1",
                };
                self.reply(&format!("{code} Recipient rejected: {error}")).await
            }
        }
    }

    /// Consumes an armed 4xx or 5xx fault for `stage` and returns its reply.
    fn injected_reply(&self, stage: SmtpStage) -> Option<String> {
        let faults = &self.shared.faults;
        if let Some(fault) = faults.take(FaultKind::Smtp4xx, Some(stage)) {
            self.shared.counters.fault_fired(fault.kind.name());
            return Some("451 4.3.2 System not accepting messages now (injected fault)".to_string());
        }
        if let Some(fault) = faults.take(FaultKind::Smtp5xx, Some(stage)) {
            self.shared.counters.fault_fired(fault.kind.name());
            return Some("554 5.3.0 Message refused (injected fault)".to_string());
        }
        None
    }

    async fn data(&mut self, args: &str) -> Result<(), SessionEnd> {
        if !args.is_empty() {
            return self.reply("501 5.5.4 DATA takes no arguments").await;
        }
        let Some(envelope) = self.envelope.as_ref() else {
            return self.reply("503 5.5.1 Need MAIL command first").await;
        };
        if envelope.recipients.is_empty() {
            return self.reply("554 5.5.1 No valid recipients").await;
        }
        if self.shared.faults.take(FaultKind::SmtpDropAtData, None).is_some() {
            return Err(self.drop_connection(FaultKind::SmtpDropAtData).await);
        }
        let drop_before_dot = self.shared.faults.take(FaultKind::SmtpDropBeforeDot, None).is_some();
        self.reply("354 Start mail input; end with <CRLF>.<CRLF>").await?;

        let max_size = self.shared.settings.max_message_size;
        let mut message = Vec::new();
        let mut line_too_long = false;
        let mut too_big = false;
        loop {
            let line = match self.conn().read_line(MAX_TEXT_LINE - 2, COMMAND_TIMEOUT).await {
                Ok(line) => line,
                Err(ConnError::LineTooLong(_)) => {
                    line_too_long = true;
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            if drop_before_dot {
                return Err(self.drop_connection(FaultKind::SmtpDropBeforeDot).await);
            }
            if line == b"." {
                break;
            }
            // Dot-unstuffing (RFC 5321 section 4.5.2).
            let line = line.strip_prefix(b".").unwrap_or(&line);
            if message.len() + line.len() + 2 > max_size {
                too_big = true;
                continue;
            }
            message.extend_from_slice(line);
            message.extend_from_slice(b"\r\n");
        }

        let envelope = self.envelope.take().expect("checked above");
        if too_big {
            return self.reply("552 5.3.4 Message size exceeds fixed maximum message size").await;
        }
        if line_too_long {
            return self.reply("554 5.6.0 Message has a line longer than 998 characters").await;
        }
        if let Some(reply) = self.injected_reply(SmtpStage::Data) {
            return self.reply(&reply).await;
        }

        let queue_id = self.accept_message(&message, envelope.recipients);
        if self.shared.faults.take(FaultKind::SmtpDropAfterDot, None).is_some() {
            return Err(self.drop_connection(FaultKind::SmtpDropAfterDot).await);
        }
        self.reply(&format!("250 2.0.0 OK queued as {queue_id}")).await
    }

    /// Hands each recipient's text to the gateway and returns a queue identifier.
    fn accept_message(&self, message: &[u8], recipients: Vec<(String, String)>) -> String {
        let parsed = mail_parser::MessageParser::default().parse(message);
        let subject = parsed.as_ref().and_then(|m| m.subject()).map(str::to_string);
        let body = parsed
            .as_ref()
            .and_then(|m| m.body_text(0))
            .map(|text| text.replace("\r\n", "\n").trim().to_string())
            .unwrap_or_default();
        let text = if body.is_empty() { subject.clone().unwrap_or_default() } else { body };
        let message_id = parsed
            .as_ref()
            .and_then(|m| m.message_id())
            .map(|id| format!("<{id}>"))
            // A submission server adds a Message-ID when the client sent none (RFC 6409 section 8.3).
            .unwrap_or_else(|| crate::report::new_message_id("submitted"));
        let original_headers = header_block(message);
        let now = self.shared.clock.now();

        for (number, address) in recipients {
            self.shared.counters.message("accepted");
            gateway::submit(
                &self.shared,
                SubmittedText {
                    number,
                    address,
                    text: text.clone(),
                    message_id: message_id.clone(),
                    subject: subject.clone(),
                    original_headers: original_headers.clone(),
                    submitted_at: now,
                },
            );
        }
        message_id.trim_matches(['<', '>']).to_string()
    }
}

/// Splits `FROM:<address> PARAM...` into the address and its parameters. The null path
/// `<>` yields an empty address.
fn parse_path(args: &str, keyword: &str) -> Option<(String, Vec<String>)> {
    let rest = args.get(..keyword.len())?;
    if !rest.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = args[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let (address, parameters) = rest.split_once('>')?;
    if address.contains(['<', ' ']) {
        return None;
    }
    let parameters = parameters.split_whitespace().map(str::to_string).collect();
    Some((address.to_string(), parameters))
}

/// Returns the message's header block without the blank line after it.
fn header_block(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let end = text.find("\r\n\r\n").unwrap_or(text.len());
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parses_address_and_parameters() {
        let (address, parameters) = parse_path("FROM:<a@example.org> SIZE=100", "FROM:").unwrap();
        assert_eq!(address, "a@example.org");
        assert_eq!(parameters, vec!["SIZE=100"]);
    }

    #[test]
    fn path_without_brackets_rejected() {
        assert!(parse_path("TO:a@example.org", "TO:").is_none());
    }
}
