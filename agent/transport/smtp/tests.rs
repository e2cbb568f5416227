//! SMTP client tests against a scripted peer on 127.0.0.1: it plays a minimal server dialogue
//! and injects the faults a real server cannot produce on demand.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::*;
use crate::secret::Secret;
use crate::transport::tls::test_certificates;

const PASSWORD: &str = "Invented-Test-Passw0rd-1";
const QUEUED: &str = "250 2.0.0 Ok: queued as 4F2A1";

/// What the peer does at each step. The defaults accept everything.
#[derive(Clone)]
struct Script {
    /// Advertised after EHLO, one per line.
    extensions: Vec<&'static str>,
    auth_reply: &'static str,
    /// Answer AUTH with this 334 challenge first, then read the client's response and send `auth_reply`.
    auth_challenge: Option<&'static str>,
    mail_reply: &'static str,
    rcpt_reply: &'static str,
    drop_after_rcpt: bool,
    /// Close after reading the message data and its final `.`, without replying.
    drop_after_body: bool,
    /// Read the message data, then never reply.
    silent_after_body: bool,
    /// Never reply to MAIL.
    silent_at_mail: bool,
    /// Reply to the message data, then close the connection as an idle timeout would.
    close_after_message: bool,
    starttls: Option<Arc<ServerConfig>>,
    implicit_tls: Option<Arc<ServerConfig>>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            extensions: vec!["AUTH PLAIN LOGIN", "8BITMIME"],
            auth_reply: "235 2.7.0 Authentication successful",
            auth_challenge: None,
            mail_reply: "250 2.1.0 Ok",
            rcpt_reply: "250 2.1.5 Ok",
            drop_after_rcpt: false,
            drop_after_body: false,
            silent_after_body: false,
            silent_at_mail: false,
            close_after_message: false,
            starttls: None,
            implicit_tls: None,
        }
    }
}

/// What the peer saw, per connection.
#[derive(Default)]
struct Record {
    connections: usize,
    /// (connection number, command verb).
    commands: Vec<(usize, String)>,
    /// (connection number, message data) for each message that ended with `.`.
    messages: Vec<(usize, String)>,
    /// Each AUTH line, and each line the client sent in answer to a challenge, without CRLF.
    auth_lines: Vec<String>,
}

impl Record {
    fn count(&self, verb: &str) -> usize {
        self.commands.iter().filter(|(_, seen)| seen == verb).count()
    }
}

struct Peer {
    address: SocketAddr,
    record: Arc<Mutex<Record>>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn start_peer(script: Script) -> Peer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let record = Arc::new(Mutex::new(Record::default()));

    let shared = Arc::clone(&record);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let number = {
                let mut record = shared.lock().unwrap();
                record.connections += 1;
                record.connections
            };
            let script = script.clone();
            let record = Arc::clone(&shared);
            tokio::spawn(async move {
                let _ = serve(script, stream, number, record).await;
            });
        }
    });
    Peer { address, record }
}

async fn serve(script: Script, stream: TcpStream, number: usize, record: Arc<Mutex<Record>>) -> std::io::Result<()> {
    let stream: Box<dyn Stream> = match &script.implicit_tls {
        Some(config) => Box::new(TlsAcceptor::from(Arc::clone(config)).accept(stream).await?),
        None => Box::new(stream),
    };
    let mut reader = BufReader::new(stream);
    let mut encrypted = script.implicit_tls.is_some();
    reply(&mut reader, "220 peer.example.org ESMTP scripted peer").await?;

    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
        record.lock().unwrap().commands.push((number, verb.clone()));

        match verb.as_str() {
            "EHLO" => {
                let mut lines = vec!["peer.example.org"];
                if script.starttls.is_some() && !encrypted {
                    lines.push("STARTTLS");
                }
                lines.extend(script.extensions.iter().copied());
                lines.push("SMTPUTF8");
                let last = lines.len() - 1;
                let mut text = String::new();
                for (index, line) in lines.iter().enumerate() {
                    let separator = if index == last { ' ' } else { '-' };
                    text.push_str(&format!("250{separator}{line}\r\n"));
                }
                reader.get_mut().write_all(text.as_bytes()).await?;
            }
            "STARTTLS" => {
                reply(&mut reader, "220 2.0.0 Ready to start TLS").await?;
                let config = script.starttls.clone().expect("starttls offered");
                let plain = reader.into_inner();
                let tls = TlsAcceptor::from(config).accept(plain).await?;
                reader = BufReader::new(Box::new(tls));
                encrypted = true;
            }
            "AUTH" => {
                record.lock().unwrap().auth_lines.push(line.trim_end().to_owned());
                if let Some(challenge) = script.auth_challenge {
                    reply(&mut reader, challenge).await?;
                    let mut answer = String::new();
                    reader.read_line(&mut answer).await?;
                    record.lock().unwrap().auth_lines.push(answer.trim_end().to_owned());
                }
                reply(&mut reader, script.auth_reply).await?
            }
            "MAIL" => {
                if script.silent_at_mail {
                    return std::future::pending().await;
                }
                reply(&mut reader, script.mail_reply).await?;
            }
            "RCPT" => {
                if script.drop_after_rcpt {
                    return Ok(());
                }
                reply(&mut reader, script.rcpt_reply).await?;
            }
            "DATA" => {
                reply(&mut reader, "354 End data with <CR><LF>.<CR><LF>").await?;
                let data = read_message_data(&mut reader).await?;
                record.lock().unwrap().messages.push((number, data));
                if script.drop_after_body {
                    return Ok(());
                }
                if script.silent_after_body {
                    return std::future::pending().await;
                }
                reply(&mut reader, QUEUED).await?;
                if script.close_after_message {
                    return Ok(());
                }
            }
            "NOOP" | "RSET" => reply(&mut reader, "250 2.0.0 Ok").await?,
            "QUIT" => {
                reply(&mut reader, "221 2.0.0 Bye").await?;
                return Ok(());
            }
            _ => reply(&mut reader, "502 5.5.2 Error: command not recognized").await?,
        }
    }
}

async fn reply(reader: &mut BufReader<Box<dyn Stream>>, line: &str) -> std::io::Result<()> {
    let stream = reader.get_mut();
    stream.write_all(format!("{line}\r\n").as_bytes()).await?;
    stream.flush().await
}

/// Reads message data up to the line holding only `.`; an early end of stream is an error, so
/// only complete messages are recorded.
async fn read_message_data(reader: &mut BufReader<Box<dyn Stream>>) -> std::io::Result<String> {
    let mut data = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == ".\r\n" {
            return Ok(data);
        }
        data.push_str(&line);
    }
}

fn settings(peer: &Peer, security: Security) -> SmtpSettings {
    SmtpSettings {
        endpoint: Endpoint { host: "127.0.0.1".to_owned(), port: peer.address.port(), security },
        tls: TlsSettings::default(),
        hello_name: "agent.example.org".to_owned(),
        timeout: Duration::from_secs(5),
        pool_size: 2,
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
        mechanisms: vec![Mechanism::Plain, Mechanism::Login],
    }
}

fn credentials() -> Credentials {
    Credentials::password("practice@example.org", Secret::new(PASSWORD))
}

fn client(peer: &Peer) -> SmtpClient {
    SmtpClient::new(settings(peer, Security::Plain), credentials()).unwrap()
}

fn email() -> OutboundEmail {
    OutboundEmail {
        from: "practice@example.org".to_owned(),
        to: "07700900123@sms.example.org".to_owned(),
        subject: String::new(),
        body: "Your appointment is on Monday at 09:30.".to_owned(),
    }
}

/// A `before_data` hook that records each Message-ID it is given.
#[derive(Clone, Default)]
struct Hook {
    calls: Arc<Mutex<Vec<String>>>,
}

impl Hook {
    fn call(&self) -> impl FnOnce(String) -> std::future::Ready<Result<(), std::io::Error>> + use<> {
        let calls = Arc::clone(&self.calls);
        move |message_id| {
            calls.lock().unwrap().push(message_id);
            std::future::ready(Ok(()))
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

fn ca_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(test_certificates::CA_PEM.as_bytes()).unwrap();
    file
}

#[tokio::test]
async fn accepted_email_returns_reply() {
    let peer = start_peer(Script::default()).await;
    let hook = Hook::default();

    let sent = client(&peer).send(&email(), hook.call()).await.unwrap();

    assert_eq!(sent.response, QUEUED);
    assert_eq!(hook.calls(), vec![sent.message_id.clone()]);
    let record = peer.record.lock().unwrap();
    assert_eq!(record.messages.len(), 1);
    let expected = format!("Message-ID: <{}>\r\n", sent.message_id);
    assert!(record.messages[0].1.contains(&expected), "{}", record.messages[0].1);
}

#[tokio::test]
async fn dialogue_runs_in_order() {
    let peer = start_peer(Script::default()).await;

    client(&peer).send(&email(), Hook::default().call()).await.unwrap();

    let verbs: Vec<String> = peer.record.lock().unwrap().commands.iter().map(|(_, verb)| verb.clone()).collect();
    assert_eq!(verbs, ["EHLO", "AUTH", "MAIL", "RCPT", "DATA"]);
}

#[tokio::test]
async fn drop_after_message_data_is_uncertain() {
    let peer = start_peer(Script { drop_after_body: true, ..Script::default() }).await;
    let hook = Hook::default();

    let error = client(&peer).send(&email(), hook.call()).await.unwrap_err();

    assert_eq!(error.kind(), SmtpErrorKind::Uncertain, "{error}");
    assert_eq!(error.phase(), Some(Phase::Message));
    assert_eq!(hook.calls().len(), 1);
    assert_eq!(peer.record.lock().unwrap().messages.len(), 1);
}

#[tokio::test]
async fn silence_after_message_data_is_uncertain() {
    let peer = start_peer(Script { silent_after_body: true, ..Script::default() }).await;
    let mut settings = settings(&peer, Security::Plain);
    settings.timeout = Duration::from_millis(300);
    let client = SmtpClient::new(settings, credentials()).unwrap();

    let error = client.send(&email(), Hook::default().call()).await.unwrap_err();

    assert!(matches!(error, SmtpError::Timeout { .. }), "{error}");
    assert_eq!(error.kind(), SmtpErrorKind::Uncertain);
}

#[tokio::test]
async fn drop_after_rcpt_is_transient() {
    let peer = start_peer(Script { drop_after_rcpt: true, ..Script::default() }).await;
    let hook = Hook::default();

    let error = client(&peer).send(&email(), hook.call()).await.unwrap_err();

    assert_eq!(error.kind(), SmtpErrorKind::Transient, "{error}");
    assert_eq!(error.phase(), Some(Phase::Rcpt));
    assert!(hook.calls().is_empty());
}

#[tokio::test]
async fn silence_at_mail_is_transient() {
    let peer = start_peer(Script { silent_at_mail: true, ..Script::default() }).await;
    let mut settings = settings(&peer, Security::Plain);
    settings.timeout = Duration::from_millis(300);
    let client = SmtpClient::new(settings, credentials()).unwrap();

    let error = client.send(&email(), Hook::default().call()).await.unwrap_err();

    assert!(matches!(error, SmtpError::Timeout { phase: Phase::Mail, .. }), "{error}");
    assert_eq!(error.kind(), SmtpErrorKind::Transient);
}

#[tokio::test]
async fn rcpt_451_is_transient() {
    let peer = start_peer(Script { rcpt_reply: "451 4.3.0 Temporary lookup failure", ..Script::default() }).await;
    let hook = Hook::default();

    let error = client(&peer).send(&email(), hook.call()).await.unwrap_err();

    assert_eq!(error.kind(), SmtpErrorKind::Transient, "{error}");
    assert_eq!(error.reply().map(|reply| reply.code), Some(451));
    assert!(hook.calls().is_empty());
}

#[tokio::test]
async fn rcpt_550_is_permanent() {
    let peer = start_peer(Script {
        rcpt_reply: "550 5.1.1 <07700900123@sms.example.org>: Recipient address rejected",
        ..Script::default()
    })
    .await;

    let error = client(&peer).send(&email(), Hook::default().call()).await.unwrap_err();

    assert_eq!(error.kind(), SmtpErrorKind::Permanent, "{error}");
    let message = error.to_string();
    assert!(message.contains("550 5.1.1"), "{message}");
    assert!(message.contains("Recipient address rejected"), "{message}");
}

#[tokio::test]
async fn mail_550_is_permanent_sender_rejection() {
    let peer = start_peer(Script {
        mail_reply: "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
        ..Script::default()
    })
    .await;

    let error = client(&peer).send(&email(), Hook::default().call()).await.unwrap_err();

    assert_eq!(error.kind(), SmtpErrorKind::Permanent, "{error}");
    assert_eq!(error.phase(), Some(Phase::Mail));
    assert!(error.to_string().contains("sender"), "{error}");
}

#[tokio::test]
async fn rejected_recipient_keeps_connection_for_next() {
    let peer = start_peer(Script { rcpt_reply: "550 5.1.1 Recipient address rejected", ..Script::default() }).await;
    let client = client(&peer);

    let _ = client.send(&email(), Hook::default().call()).await;
    let _ = client.send(&email(), Hook::default().call()).await;

    let record = peer.record.lock().unwrap();
    assert_eq!(record.connections, 1);
    assert_eq!(record.count("RSET"), 2);
}

#[tokio::test]
async fn auth_535_is_auth() {
    let peer = start_peer(Script {
        auth_reply: "535 5.7.8 Error: authentication failed: authentication failure",
        ..Script::default()
    })
    .await;
    let hook = Hook::default();

    let error = client(&peer).send(&email(), hook.call()).await.unwrap_err();

    assert_eq!(error.kind(), SmtpErrorKind::Auth, "{error}");
    assert_eq!(error.reply().map(|reply| reply.code), Some(535));
    assert!(hook.calls().is_empty());
    assert_eq!(peer.record.lock().unwrap().count("MAIL"), 0);
}

#[tokio::test]
async fn auth_error_never_shows_password() {
    let peer = start_peer(Script { auth_reply: "535 5.7.8 Error: authentication failed", ..Script::default() }).await;

    let error = client(&peer).send(&email(), Hook::default().call()).await.unwrap_err();

    assert!(!error.to_string().contains(PASSWORD), "{error}");
    assert!(!format!("{error:?}").contains(PASSWORD), "{error:?}");
}

#[tokio::test]
async fn rejected_password_is_not_retried() {
    let peer = start_peer(Script { auth_reply: "535 5.7.8 Error: authentication failed", ..Script::default() }).await;
    let client = client(&peer);
    let _ = client.send(&email(), Hook::default().call()).await;

    let second = client.send(&email(), Hook::default().call()).await.unwrap_err();
    let login = client.verify_login().await.unwrap_err();

    assert!(matches!(second, SmtpError::CredentialsRejected { .. }), "{second}");
    assert_eq!(second.kind(), SmtpErrorKind::Auth);
    assert_eq!(login.kind(), SmtpErrorKind::Auth);
    let record = peer.record.lock().unwrap();
    assert_eq!(record.count("AUTH"), 1);
    assert_eq!(record.connections, 1);
}

#[tokio::test]
async fn auth_not_offered_is_auth() {
    let peer = start_peer(Script { extensions: vec!["8BITMIME"], ..Script::default() }).await;

    let error = client(&peer).send(&email(), Hook::default().call()).await.unwrap_err();

    assert!(matches!(error, SmtpError::AuthUnavailable { .. }), "{error}");
    assert_eq!(error.kind(), SmtpErrorKind::Config, "no AUTH offered says nothing about the password");
}

#[tokio::test]
async fn temporary_auth_failure_is_transient() {
    let peer =
        start_peer(Script { auth_reply: "454 4.7.0 Temporary authentication failure", ..Script::default() }).await;

    let error = client(&peer).send(&email(), Hook::default().call()).await.unwrap_err();

    assert_eq!(error.kind(), SmtpErrorKind::Transient, "{error}");
}

#[tokio::test]
async fn pooled_connection_is_reused() {
    let peer = start_peer(Script::default()).await;
    let client = client(&peer);

    client.send(&email(), Hook::default().call()).await.unwrap();
    client.send(&email(), Hook::default().call()).await.unwrap();

    let record = peer.record.lock().unwrap();
    assert_eq!(record.connections, 1);
    assert_eq!(record.count("AUTH"), 1);
    assert_eq!(record.messages.len(), 2);
}

#[tokio::test]
async fn closed_pooled_connection_is_replaced() {
    let peer = start_peer(Script { close_after_message: true, ..Script::default() }).await;
    let client = client(&peer);
    let first = client.send(&email(), Hook::default().call()).await.unwrap();

    let second = client.send(&email(), Hook::default().call()).await.unwrap();

    let record = peer.record.lock().unwrap();
    assert_eq!(record.connections, 2);
    let second_id = format!("Message-ID: <{}>", second.message_id);
    let copies = record.messages.iter().filter(|(_, data)| data.contains(&second_id)).count();
    assert_eq!(copies, 1);
    assert_eq!(record.messages[1].0, 2, "second message went over the new connection");
    assert_ne!(first.message_id, second.message_id);
    assert_eq!(record.count("DATA"), 2);
}

#[tokio::test]
async fn idle_connection_past_timeout_is_not_reused() {
    let peer = start_peer(Script::default()).await;
    let mut settings = settings(&peer, Security::Plain);
    settings.idle_timeout = Duration::from_millis(50);
    let client = SmtpClient::new(settings, credentials()).unwrap();
    client.send(&email(), Hook::default().call()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    client.send(&email(), Hook::default().call()).await.unwrap();

    assert_eq!(peer.record.lock().unwrap().connections, 2);
}

#[tokio::test]
async fn zero_pool_size_opens_each_time() {
    let peer = start_peer(Script::default()).await;
    let mut settings = settings(&peer, Security::Plain);
    settings.pool_size = 0;
    let client = SmtpClient::new(settings, credentials()).unwrap();

    client.send(&email(), Hook::default().call()).await.unwrap();
    client.send(&email(), Hook::default().call()).await.unwrap();

    assert_eq!(peer.record.lock().unwrap().connections, 2);
}

#[tokio::test]
async fn failed_hook_sends_no_message() {
    let peer = start_peer(Script::default()).await;

    let error = client(&peer)
        .send(&email(), |_message_id| async { Err::<(), _>(std::io::Error::other("database is locked")) })
        .await
        .unwrap_err();

    assert!(matches!(error, SmtpError::BeforeData(_)), "{error}");
    assert_eq!(error.kind(), SmtpErrorKind::Transient);
    // Give the peer time to notice the closed connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(peer.record.lock().unwrap().messages.is_empty());
}

#[tokio::test]
async fn verify_login_authenticates_and_quits() {
    let peer = start_peer(Script::default()).await;

    client(&peer).verify_login().await.unwrap();

    tokio::time::sleep(Duration::from_millis(50)).await;
    let record = peer.record.lock().unwrap();
    assert_eq!(record.count("AUTH"), 1);
    assert_eq!(record.count("QUIT"), 1);
    assert_eq!(record.count("MAIL"), 0);
}

#[tokio::test]
async fn verify_login_reports_rejected_password() {
    let peer = start_peer(Script { auth_reply: "535 5.7.8 Error: authentication failed", ..Script::default() }).await;

    let error = client(&peer).verify_login().await.unwrap_err();

    assert_eq!(error.kind(), SmtpErrorKind::Auth, "{error}");
}

#[tokio::test]
async fn refused_connection_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let peer = Peer { address, record: Arc::default() };

    let error = client(&peer).send(&email(), Hook::default().call()).await.unwrap_err();

    assert_eq!(error.kind(), SmtpErrorKind::Transient, "{error}");
    assert_eq!(error.phase(), Some(Phase::Connect));
    assert!(error.to_string().contains(&address.to_string()), "{error}");
}

#[tokio::test]
async fn starttls_with_extra_ca_sends() {
    let peer = start_peer(Script { starttls: Some(test_certificates::server_config()), ..Script::default() }).await;
    let ca = ca_file();
    let mut settings = settings(&peer, Security::StartTls);
    settings.tls.extra_ca_file = Some(ca.path().to_owned());
    let client = SmtpClient::new(settings, credentials()).unwrap();

    let sent = client.send(&email(), Hook::default().call()).await.unwrap();

    assert_eq!(sent.response, QUEUED);
    let verbs: Vec<String> = peer.record.lock().unwrap().commands.iter().map(|(_, verb)| verb.clone()).collect();
    assert_eq!(verbs[..4], ["EHLO", "STARTTLS", "EHLO", "AUTH"]);
}

#[tokio::test]
async fn implicit_tls_with_extra_ca_sends() {
    let peer = start_peer(Script { implicit_tls: Some(test_certificates::server_config()), ..Script::default() }).await;
    let ca = ca_file();
    let mut settings = settings(&peer, Security::Tls);
    settings.tls.extra_ca_file = Some(ca.path().to_owned());
    let client = SmtpClient::new(settings, credentials()).unwrap();

    let sent = client.send(&email(), Hook::default().call()).await.unwrap();

    assert_eq!(sent.response, QUEUED);
}

#[tokio::test]
async fn untrusted_certificate_is_rejected() {
    let peer = start_peer(Script { starttls: Some(test_certificates::server_config()), ..Script::default() }).await;
    let client = SmtpClient::new(settings(&peer, Security::StartTls), credentials()).unwrap();

    let error = client.send(&email(), Hook::default().call()).await.unwrap_err();

    assert_eq!(error.phase(), Some(Phase::StartTls), "{error}");
    assert_eq!(error.kind(), SmtpErrorKind::Transient);
    assert_eq!(peer.record.lock().unwrap().count("AUTH"), 0);
}

#[tokio::test]
async fn missing_starttls_is_refused() {
    let peer = start_peer(Script::default()).await;
    let client = SmtpClient::new(settings(&peer, Security::StartTls), credentials()).unwrap();

    let error = client.send(&email(), Hook::default().call()).await.unwrap_err();

    assert!(matches!(error, SmtpError::StartTlsUnavailable { .. }), "{error}");
    assert_eq!(peer.record.lock().unwrap().count("AUTH"), 0);
}

#[test]
fn plain_to_remote_host_is_config_error() {
    let settings = SmtpSettings {
        endpoint: Endpoint { host: "smtp.example.org".to_owned(), port: 25, security: Security::Plain },
        tls: TlsSettings::default(),
        hello_name: "agent.example.org".to_owned(),
        timeout: Duration::from_secs(5),
        pool_size: 1,
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
        mechanisms: vec![Mechanism::Plain],
    };

    let error = SmtpClient::new(settings, credentials()).unwrap_err();

    assert_eq!(error.kind(), SmtpErrorKind::Config);
    assert!(error.to_string().contains("smtp.example.org"), "{error}");
}

#[test]
fn hello_name_with_line_break_rejected() {
    let peer = Peer { address: "127.0.0.1:2525".parse().unwrap(), record: Arc::default() };
    let mut settings = settings(&peer, Security::Plain);
    settings.hello_name = "agent\r\nMAIL FROM:<x@example.org>".to_owned();

    let error = SmtpClient::new(settings, credentials()).unwrap_err();

    assert_eq!(error.kind(), SmtpErrorKind::Config, "{error}");
}

#[test]
fn send_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let peer = Peer { address: "127.0.0.1:2525".parse().unwrap(), record: Arc::default() };
    let client = client(&peer);
    let email = email();

    let future = client.send(&email, Hook::default().call());

    assert_send(&future);
}

#[test]
fn mechanism_parses_names() {
    assert_eq!("plain".parse::<Mechanism>().unwrap(), Mechanism::Plain);
    assert_eq!("LOGIN".parse::<Mechanism>().unwrap(), Mechanism::Login);
    assert!("xoauth2".parse::<Mechanism>().is_err());
}

#[test]
fn client_debug_hides_password() {
    let peer = Peer { address: "127.0.0.1:2525".parse().unwrap(), record: Arc::default() };

    let debug = format!("{:?}", client(&peer));

    assert!(!debug.contains(PASSWORD), "{debug}");
}

const TOKEN: &str = "invented-access-token-1";

fn token_client(peer: &Peer) -> SmtpClient {
    let credentials = Credentials::access_token("practice@example.org", Secret::new(TOKEN));
    SmtpClient::new(settings(peer, Security::Plain), credentials).unwrap()
}

fn xoauth2_script() -> Script {
    Script { extensions: vec!["AUTH PLAIN LOGIN XOAUTH2", "8BITMIME"], ..Script::default() }
}

#[tokio::test]
async fn access_token_uses_xoauth2() {
    let peer = start_peer(xoauth2_script()).await;

    token_client(&peer).send(&email(), Hook::default().call()).await.unwrap();

    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD
        .encode(format!("user=practice@example.org\x01auth=Bearer {TOKEN}\x01\x01"));
    let record = peer.record.lock().unwrap();
    assert_eq!(record.auth_lines, [format!("AUTH XOAUTH2 {expected}")]);
    assert_eq!(record.messages.len(), 1);
}

#[tokio::test]
async fn rejected_token_challenge_is_auth() {
    let peer = start_peer(Script {
        auth_challenge: Some("334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0="),
        auth_reply: "535 5.7.3 Authentication unsuccessful",
        ..xoauth2_script()
    })
    .await;

    let error = token_client(&peer).send(&email(), Hook::default().call()).await.unwrap_err();

    assert_eq!(error.kind(), SmtpErrorKind::Auth, "{error}");
    assert_eq!(error.reply().map(|reply| reply.code), Some(535));
    let record = peer.record.lock().unwrap();
    assert_eq!(record.auth_lines.len(), 2);
    assert_eq!(record.auth_lines[1], "", "the client answers the error challenge with an empty line");
    assert_eq!(record.count("MAIL"), 0);
}

#[tokio::test]
async fn rejected_token_error_hides_token() {
    let peer = start_peer(Script { auth_reply: "535 5.7.3 Authentication unsuccessful", ..xoauth2_script() }).await;

    let error = token_client(&peer).send(&email(), Hook::default().call()).await.unwrap_err();

    assert!(!error.to_string().contains(TOKEN), "{error}");
    assert!(!format!("{error:?}").contains(TOKEN), "{error:?}");
}

#[tokio::test]
async fn xoauth2_not_offered_is_config() {
    let peer = start_peer(Script::default()).await;

    let error = token_client(&peer).send(&email(), Hook::default().call()).await.unwrap_err();

    assert!(matches!(error, SmtpError::AuthUnavailable { .. }), "{error}");
    assert!(error.to_string().contains("XOAUTH2"), "{error}");
    assert_eq!(error.kind(), SmtpErrorKind::Config, "a server without XOAUTH2 has not rejected the token");
}

#[test]
fn client_knows_its_credentials() {
    let peer = Peer { address: "127.0.0.1:9".parse().unwrap(), record: Arc::default() };
    let client = token_client(&peer);

    assert!(client.uses(&Credentials::access_token("practice@example.org", Secret::new(TOKEN))));
    assert!(!client.uses(&Credentials::access_token("practice@example.org", Secret::new("another-token"))));
    assert!(!client.uses(&Credentials::password("practice@example.org", Secret::new(TOKEN))));
}
