//! IMAP client tests against a scripted peer on 127.0.0.1 that replies to the few commands the
//! client sends and injects faults on demand.

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

const PASSWORD: &str = "Invented-Test-Passw0rd-2";
const UIDVALIDITY: u32 = 1_764_880_000;

/// A stored message: UID and raw bytes.
type StoredMail = (u32, &'static str);

#[derive(Clone)]
struct Script {
    /// The tagged reply to LOGIN, after the tag.
    login_reply: &'static str,
    /// A command (first word after the tag, or `UID SEARCH` / `UID FETCH`) that gets no reply.
    silent_command: Option<&'static str>,
    mailbox: Vec<StoredMail>,
    starttls: Option<Arc<ServerConfig>>,
    implicit_tls: Option<Arc<ServerConfig>>,
    /// Bytes sent right after the STARTTLS OK, before the handshake.
    injected_after_starttls: Option<&'static str>,
    /// Answer AUTHENTICATE's response with this error continuation, then, after the client's
    /// next line, with a tagged NO.
    authenticate_error: Option<&'static str>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            login_reply: "OK [CAPABILITY IMAP4rev1] Logged in",
            silent_command: None,
            mailbox: Vec::new(),
            starttls: None,
            implicit_tls: None,
            injected_after_starttls: None,
            authenticate_error: None,
        }
    }
}

struct Peer {
    address: SocketAddr,
    /// Each command line as received, password redacted.
    commands: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn start_peer(script: Script) -> Peer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let commands = Arc::new(Mutex::new(Vec::new()));

    let shared = Arc::clone(&commands);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let script = script.clone();
            let commands = Arc::clone(&shared);
            tokio::spawn(async move {
                let _ = serve(script, stream, commands).await;
            });
        }
    });
    Peer { address, commands }
}

async fn serve(script: Script, stream: TcpStream, commands: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    let stream: Box<dyn Stream> = match &script.implicit_tls {
        Some(config) => Box::new(TlsAcceptor::from(Arc::clone(config)).accept(stream).await?),
        None => Box::new(stream),
    };
    let mut reader = BufReader::new(stream);
    send(&mut reader, "* OK [CAPABILITY IMAP4rev1 STARTTLS] scripted peer ready\r\n").await?;

    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_owned();
        let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let words: Vec<&str> = rest.split(' ').collect();
        let command = match words[0].to_ascii_uppercase().as_str() {
            "UID" => format!("UID {}", words.get(1).unwrap_or(&"").to_ascii_uppercase()),
            other => other.to_owned(),
        };
        let recorded = if command == "LOGIN" { format!("{tag} LOGIN [redacted]") } else { line.clone() };
        commands.lock().unwrap().push(recorded);

        if script.silent_command == Some(command.as_str()) {
            return std::future::pending().await;
        }
        match command.as_str() {
            "STARTTLS" => {
                let mut reply = format!("{tag} OK Begin TLS negotiation now\r\n");
                if let Some(injected) = script.injected_after_starttls {
                    reply.push_str(injected);
                }
                send(&mut reader, &reply).await?;
                let Some(config) = script.starttls.clone() else {
                    return Ok(());
                };
                let plain = reader.into_inner();
                let tls = TlsAcceptor::from(config).accept(plain).await?;
                reader = BufReader::new(Box::new(tls));
            }
            "LOGIN" => send(&mut reader, &format!("{tag} {}\r\n", script.login_reply)).await?,
            "AUTHENTICATE" => {
                send(&mut reader, "+ \r\n").await?;
                let mut response = String::new();
                reader.read_line(&mut response).await?;
                commands.lock().unwrap().push(format!("+ {}", response.trim_end()));
                let Some(challenge) = script.authenticate_error else {
                    send(&mut reader, &format!("{tag} OK AUTHENTICATE completed\r\n")).await?;
                    continue;
                };
                send(&mut reader, &format!("+ {challenge}\r\n")).await?;
                let mut answer = String::new();
                reader.read_line(&mut answer).await?;
                commands.lock().unwrap().push(format!("+ {}", answer.trim_end()));
                send(&mut reader, &format!("{tag} NO [AUTHENTICATIONFAILED] AUTHENTICATE failed\r\n")).await?;
            }
            "SELECT" => {
                let next = script.mailbox.iter().map(|(uid, _)| uid + 1).max().unwrap_or(1);
                let reply = format!(
                    "* {} EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen \\Deleted)\r\n\
                     * OK [UIDVALIDITY {UIDVALIDITY}] UIDs valid\r\n\
                     * OK [UIDNEXT {next}] Predicted next UID\r\n\
                     {tag} OK [READ-WRITE] Select completed\r\n",
                    script.mailbox.len()
                );
                send(&mut reader, &reply).await?;
            }
            "UID SEARCH" => {
                // words: UID SEARCH UID <from>:*
                let from: u32 = words[3].trim_end_matches(":*").parse().unwrap();
                let highest = script.mailbox.iter().map(|(uid, _)| *uid).max();
                let mut found: Vec<u32> =
                    script.mailbox.iter().map(|(uid, _)| *uid).filter(|uid| *uid >= from).collect();
                // As real servers do: `n:*` always includes the highest UID.
                if let Some(highest) = highest
                    && !found.contains(&highest)
                {
                    found.push(highest);
                }
                let list: Vec<String> = found.iter().map(ToString::to_string).collect();
                let reply = format!("* SEARCH {}\r\n{tag} OK Search completed\r\n", list.join(" "));
                send(&mut reader, &reply.replace("SEARCH \r\n", "SEARCH\r\n")).await?;
            }
            "UID FETCH" => {
                let wanted = parse_uid_set(words[2]);
                let mut reply = String::new();
                for (index, (uid, raw)) in script.mailbox.iter().enumerate() {
                    if wanted.contains(uid) {
                        reply.push_str(&format!(
                            "* {} FETCH (UID {uid} INTERNALDATE \"04-Dec-2026 20:14:41 +0100\" \
                             BODY[] {{{}}}\r\n{raw})\r\n",
                            index + 1,
                            raw.len()
                        ));
                    }
                }
                // An unsolicited flag update for another message, as servers may send.
                reply.push_str("* 1 FETCH (FLAGS (\\Seen))\r\n");
                reply.push_str(&format!("{tag} OK Fetch completed\r\n"));
                send(&mut reader, &reply).await?;
            }
            "LOGOUT" => {
                send(&mut reader, &format!("* BYE Logging out\r\n{tag} OK Logout completed\r\n")).await?;
                return Ok(());
            }
            _ => send(&mut reader, &format!("{tag} BAD Unknown command\r\n")).await?,
        }
    }
}

async fn send(reader: &mut BufReader<Box<dyn Stream>>, text: &str) -> std::io::Result<()> {
    let stream = reader.get_mut();
    stream.write_all(text.as_bytes()).await?;
    stream.flush().await
}

fn parse_uid_set(set: &str) -> Vec<u32> {
    let mut uids = Vec::new();
    for part in set.split(',') {
        match part.split_once(':') {
            Some((start, end)) => uids.extend(start.parse::<u32>().unwrap()..=end.parse::<u32>().unwrap()),
            None => uids.push(part.parse().unwrap()),
        }
    }
    uids
}

fn settings(peer: &Peer, security: Security) -> ImapSettings {
    ImapSettings {
        endpoint: Endpoint { host: "127.0.0.1".to_owned(), port: peer.address.port(), security },
        tls: TlsSettings::default(),
        timeout: Duration::from_secs(5),
    }
}

fn credentials() -> Credentials {
    Credentials::password("practice@example.org", Secret::new(PASSWORD))
}

fn mail(number: u32) -> String {
    format!("From: 07700900{number:03}@sms.example.org\r\nSubject: reply\r\n\r\nYes please {number}\r\n")
}

fn stored(uids: &[u32]) -> Vec<StoredMail> {
    uids.iter().map(|uid| (*uid, &*mail(*uid).leak())).collect()
}

fn ca_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(test_certificates::CA_PEM.as_bytes()).unwrap();
    file
}

#[tokio::test]
async fn login_no_is_auth() {
    let peer =
        start_peer(Script { login_reply: "NO [AUTHENTICATIONFAILED] Authentication failed.", ..Script::default() })
            .await;

    let error = ImapClient::connect(&settings(&peer, Security::Plain), &credentials()).await.unwrap_err();

    assert_eq!(error.kind(), ImapErrorKind::Auth, "{error}");
    assert!(!error.to_string().contains(PASSWORD), "{error}");
    assert!(!format!("{error:?}").contains(PASSWORD), "{error:?}");
}

#[tokio::test]
async fn login_unavailable_is_transient() {
    let peer =
        start_peer(Script { login_reply: "NO [UNAVAILABLE] Temporary authentication failure", ..Script::default() })
            .await;

    let error = ImapClient::connect(&settings(&peer, Security::Plain), &credentials()).await.unwrap_err();

    assert!(matches!(error, ImapError::LoginUnavailable { .. }), "{error}");
    assert_eq!(error.kind(), ImapErrorKind::Transient);
}

#[tokio::test]
async fn command_timeout_is_transient() {
    let peer = start_peer(Script { silent_command: Some("SELECT"), ..Script::default() }).await;
    let mut settings = settings(&peer, Security::Plain);
    settings.timeout = Duration::from_millis(300);
    let mut session = ImapClient::connect(&settings, &credentials()).await.unwrap();

    let error = session.select("INBOX").await.unwrap_err();

    assert!(matches!(error, ImapError::Timeout { command: "SELECT", .. }), "{error}");
    assert_eq!(error.kind(), ImapErrorKind::Transient);
}

#[tokio::test]
async fn session_after_timeout_is_broken() {
    let peer = start_peer(Script { silent_command: Some("SELECT"), ..Script::default() }).await;
    let mut settings = settings(&peer, Security::Plain);
    settings.timeout = Duration::from_millis(300);
    let mut session = ImapClient::connect(&settings, &credentials()).await.unwrap();
    let _ = session.select("INBOX").await;

    let error = session.fetch_since(0, 10).await.unwrap_err();

    assert!(matches!(error, ImapError::SessionBroken { .. }), "{error}");
}

#[tokio::test]
async fn select_reports_mailbox_status() {
    let peer = start_peer(Script { mailbox: stored(&[3, 4, 9]), ..Script::default() }).await;
    let mut session = ImapClient::connect(&settings(&peer, Security::Plain), &credentials()).await.unwrap();

    let status = session.select("INBOX").await.unwrap();

    assert_eq!(status, MailboxStatus { uidvalidity: UIDVALIDITY, uidnext: Some(10), exists: 3 });
}

#[tokio::test]
async fn fetch_since_returns_newer_in_order() {
    let peer = start_peer(Script { mailbox: stored(&[3, 4, 9]), ..Script::default() }).await;
    let mut session = ImapClient::connect(&settings(&peer, Security::Plain), &credentials()).await.unwrap();
    session.select("INBOX").await.unwrap();

    let mails = session.fetch_since(3, 10).await.unwrap();

    let uids: Vec<u32> = mails.iter().map(|mail| mail.uid).collect();
    assert_eq!(uids, [4, 9]);
    assert_eq!(mails[0].raw, mail(4).into_bytes());
    let expected_date = "2026-12-04T19:14:41Z".parse::<DateTime<Utc>>().unwrap();
    assert_eq!(mails[0].internal_date, Some(expected_date));
}

#[tokio::test]
async fn fetch_since_respects_limit() {
    let peer = start_peer(Script { mailbox: stored(&[3, 4, 5, 9]), ..Script::default() }).await;
    let mut session = ImapClient::connect(&settings(&peer, Security::Plain), &credentials()).await.unwrap();
    session.select("INBOX").await.unwrap();

    let mails = session.fetch_since(0, 2).await.unwrap();

    let uids: Vec<u32> = mails.iter().map(|mail| mail.uid).collect();
    assert_eq!(uids, [3, 4]);
    assert!(peer.commands().iter().any(|line| line.ends_with("UID FETCH 3:4 (UID INTERNALDATE BODY.PEEK[])")));
}

#[tokio::test]
async fn fetch_since_ignores_highest_already_seen() {
    let peer = start_peer(Script { mailbox: stored(&[3, 7]), ..Script::default() }).await;
    let mut session = ImapClient::connect(&settings(&peer, Security::Plain), &credentials()).await.unwrap();
    session.select("INBOX").await.unwrap();

    let mails = session.fetch_since(7, 10).await.unwrap();

    assert!(mails.is_empty(), "{mails:?}");
    assert!(!peer.commands().iter().any(|line| line.contains("UID FETCH")));
}

#[tokio::test]
async fn verify_login_logs_out() {
    let peer = start_peer(Script::default()).await;

    ImapClient::verify_login(&settings(&peer, Security::Plain), &credentials()).await.unwrap();

    let commands = peer.commands();
    assert!(commands[0].ends_with("LOGIN [redacted]"), "{commands:?}");
    assert!(commands[1].ends_with("LOGOUT"), "{commands:?}");
}

#[tokio::test]
async fn starttls_with_extra_ca_logs_in() {
    let peer = start_peer(Script { starttls: Some(test_certificates::server_config()), ..Script::default() }).await;
    let ca = ca_file();
    let mut settings = settings(&peer, Security::StartTls);
    settings.tls.extra_ca_file = Some(ca.path().to_owned());

    ImapClient::verify_login(&settings, &credentials()).await.unwrap();

    let commands = peer.commands();
    assert_eq!(commands[0], "s001 STARTTLS");
    assert!(commands[1].ends_with("LOGIN [redacted]"), "{commands:?}");
}

#[tokio::test]
async fn implicit_tls_with_extra_ca_logs_in() {
    let peer = start_peer(Script { implicit_tls: Some(test_certificates::server_config()), ..Script::default() }).await;
    let ca = ca_file();
    let mut settings = settings(&peer, Security::Tls);
    settings.tls.extra_ca_file = Some(ca.path().to_owned());

    ImapClient::verify_login(&settings, &credentials()).await.unwrap();

    assert!(peer.commands()[0].ends_with("LOGIN [redacted]"));
}

#[tokio::test]
async fn untrusted_certificate_is_rejected() {
    let peer = start_peer(Script { implicit_tls: Some(test_certificates::server_config()), ..Script::default() }).await;

    let error = ImapClient::connect(&settings(&peer, Security::Tls), &credentials()).await.unwrap_err();

    assert!(matches!(error, ImapError::TlsHandshake { .. }), "{error}");
    assert!(peer.commands().is_empty());
}

#[tokio::test]
async fn data_injected_before_handshake_is_refused() {
    let peer = start_peer(Script {
        injected_after_starttls: Some("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n"),
        ..Script::default()
    })
    .await;

    let error = ImapClient::connect(&settings(&peer, Security::StartTls), &credentials()).await.unwrap_err();

    assert!(matches!(error, ImapError::StartTlsInjection { .. }), "{error}");
    assert_eq!(error.kind(), ImapErrorKind::Protocol);
}

#[tokio::test]
async fn refused_connection_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let peer = Peer { address, commands: Arc::default() };

    let error = ImapClient::connect(&settings(&peer, Security::Plain), &credentials()).await.unwrap_err();

    assert!(matches!(error, ImapError::Connect { .. }), "{error}");
    assert_eq!(error.kind(), ImapErrorKind::Transient);
}

#[tokio::test]
async fn plain_to_remote_host_is_config_error() {
    let settings = ImapSettings {
        endpoint: Endpoint { host: "imap.example.org".to_owned(), port: 143, security: Security::Plain },
        tls: TlsSettings::default(),
        timeout: Duration::from_secs(5),
    };

    let error = ImapClient::connect(&settings, &credentials()).await.unwrap_err();

    assert_eq!(error.kind(), ImapErrorKind::Config);
    assert!(error.to_string().contains("imap.example.org"), "{error}");
}

#[test]
fn session_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let peer = Peer { address: "127.0.0.1:143".parse().unwrap(), commands: Arc::default() };
    let settings = settings(&peer, Security::Plain);
    let credentials = credentials();

    let connect = ImapClient::connect(&settings, &credentials);

    assert_send(&connect);
}

#[test]
fn uid_set_joins_runs() {
    assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
    assert_eq!(uid_set(&[5]), "5");
    assert_eq!(uid_set(&[]), "");
}

#[test]
fn new_uids_exclude_last_seen() {
    let found: HashSet<u32> = [7].into_iter().collect();

    assert!(select_new_uids(found, 7, 10).is_empty());
}

#[test]
fn new_uids_sorted_and_limited() {
    let found: HashSet<u32> = [12, 9, 30, 8, 5].into_iter().collect();

    assert_eq!(select_new_uids(found, 5, 3), [8, 9, 12]);
}

const TOKEN: &str = "invented-access-token-2";

fn token_credentials() -> Credentials {
    Credentials::access_token("practice@example.org", Secret::new(TOKEN))
}

#[tokio::test]
async fn access_token_uses_xoauth2() {
    let peer = start_peer(Script::default()).await;

    ImapClient::verify_login(&settings(&peer, Security::Plain), &token_credentials()).await.unwrap();

    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD
        .encode(format!("user=practice@example.org\x01auth=Bearer {TOKEN}\x01\x01"));
    let commands = peer.commands();
    assert!(commands[0].ends_with("AUTHENTICATE XOAUTH2"), "{commands:?}");
    assert_eq!(commands[1], format!("+ {expected}"));
    assert!(commands[2].ends_with("LOGOUT"), "{commands:?}");
}

#[tokio::test]
async fn rejected_token_continuation_is_auth() {
    let peer = start_peer(Script {
        authenticate_error: Some("eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0="),
        ..Script::default()
    })
    .await;

    let error = ImapClient::connect(&settings(&peer, Security::Plain), &token_credentials()).await.unwrap_err();

    assert_eq!(error.kind(), ImapErrorKind::Auth, "{error}");
    assert!(error.to_string().contains("AUTHENTICATIONFAILED"), "{error}");
    assert!(!format!("{error:?}").contains(TOKEN), "{error:?}");
    let commands = peer.commands();
    assert_eq!(commands[2], "+ ", "the client answers the error continuation with an empty line");
}
