//! Token client tests: the grants against the sandbox's real token endpoint, and the classification of responses
//! against a scripted HTTP peer on 127.0.0.1 that returns what a real endpoint cannot be made to.

use std::sync::{Arc, Mutex};

use nhsmail_sandbox::{Sandbox, SandboxOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const CLIENT_ID: &str = "nhsmail-agent-tests";
const WRONG_PASSWORD: &str = "Invented-Wrong-Passw0rd-1";

fn settings(token_url: &str) -> OAuthSettings {
    OAuthSettings { token_url: token_url.parse().unwrap(), client_id: CLIENT_ID.into(), scope: DEFAULT_SCOPE.into() }
}

fn client(token_url: &str) -> OAuthClient {
    OAuthClient::new(settings(token_url), &TlsSettings::default(), Duration::from_secs(5)).unwrap()
}

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxOptions { client_id: Some(CLIENT_ID.into()), ..Default::default() }).await.unwrap()
}

/// A peer that responds to every request with one status and body, and keeps each request it read.
struct Peer {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn start_peer(status_line: &'static str, body: &'static str) -> Peer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/tenant/oauth2/v2.0/token", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = vec![0; 16 * 1024];
            let mut read = 0;
            // Read the head and the form body, which the agent always sends with a Content-Length.
            loop {
                let count = stream.read(&mut buffer[read..]).await.unwrap_or(0);
                read += count;
                let text = String::from_utf8_lossy(&buffer[..read]).to_string();
                if count == 0 || request_complete(&text) {
                    seen.lock().unwrap().push(text);
                    break;
                }
            }
            let response = format!(
                "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    Peer { url, requests }
}

/// A TLS peer with the `localhost` test certificate that returns one token response.
async fn start_tls_peer() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://localhost:{}/token", listener.local_addr().unwrap().port());
    let acceptor = tokio_rustls::TlsAcceptor::from(crate::transport::tls::test_certificates::server_config());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(mut stream) = acceptor.accept(stream).await else { continue };
            let mut buffer = vec![0; 16 * 1024];
            let mut read = 0;
            while !request_complete(&String::from_utf8_lossy(&buffer[..read])) {
                match stream.read(&mut buffer[read..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(count) => read += count,
                }
            }
            let body = r#"{"token_type":"Bearer","access_token":"at-tls","expires_in":3600}"#;
            let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    url
}

fn request_complete(text: &str) -> bool {
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|value| value.trim().to_owned()))
        .and_then(|value| value.parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

#[tokio::test]
async fn password_grant_returns_tokens() {
    let sandbox = sandbox().await;
    let info = sandbox.info();

    let tokens = client(&info.token_url).password_grant(&info.username, &Secret::new(&info.password)).await.unwrap();

    assert!(!tokens.access_token.expose().is_empty());
    assert!(tokens.refresh_token.is_some());
    assert!(!tokens.needs_renewal(Instant::now()));
}

#[tokio::test]
async fn refresh_grant_returns_new_access_token() {
    let sandbox = sandbox().await;
    let info = sandbox.info();
    let client = client(&info.token_url);
    let first = client.password_grant(&info.username, &Secret::new(&info.password)).await.unwrap();

    let second = client.refresh_grant(first.refresh_token.as_ref().unwrap()).await.unwrap();

    assert_ne!(second.access_token.expose(), first.access_token.expose());
}

#[tokio::test]
async fn wrong_password_is_rejected() {
    let sandbox = sandbox().await;
    let info = sandbox.info();

    let error = client(&info.token_url).password_grant(&info.username, &Secret::new(WRONG_PASSWORD)).await.unwrap_err();

    assert_eq!(error.kind(), OAuthErrorKind::Rejected, "{error}");
    assert!(error.to_string().contains("invalid_grant"), "{error}");
    assert!(!error.to_string().contains(WRONG_PASSWORD), "{error}");
    assert!(!format!("{error:?}").contains(WRONG_PASSWORD), "{error:?}");
}

#[tokio::test]
async fn unknown_refresh_token_is_rejected() {
    let sandbox = sandbox().await;

    let error = client(&sandbox.info().token_url).refresh_grant(&Secret::new("sbx-rt-invented")).await.unwrap_err();

    assert_eq!(error.kind(), OAuthErrorKind::Rejected, "{error}");
    assert!(matches!(error, OAuthError::Rejected { grant: Grant::RefreshToken, .. }), "{error}");
}

#[tokio::test]
async fn unknown_client_id_is_config() {
    let sandbox = sandbox().await;
    let info = sandbox.info();
    let mut settings = settings(&info.token_url);
    settings.client_id = "another-client".into();
    let client = OAuthClient::new(settings, &TlsSettings::default(), Duration::from_secs(5)).unwrap();

    let error = client.password_grant(&info.username, &Secret::new(&info.password)).await.unwrap_err();

    assert_eq!(error.kind(), OAuthErrorKind::Config, "{error}");
}

#[tokio::test]
async fn form_carries_grant_fields() {
    let peer = start_peer("200 OK", r#"{"token_type":"Bearer","access_token":"at-1","expires_in":3600}"#).await;

    client(&peer.url).password_grant("practice@example.org", &Secret::new("Invented-Passw0rd")).await.unwrap();

    let request = peer.requests.lock().unwrap()[0].clone();
    assert!(request.starts_with("POST /tenant/oauth2/v2.0/token HTTP/1.1\r\n"), "{request}");
    assert!(request.to_ascii_lowercase().contains("content-type: application/x-www-form-urlencoded"), "{request}");
    let body = request.split_once("\r\n\r\n").unwrap().1;
    let fields: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let field = |name: &str| fields.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    assert_eq!(field("grant_type"), Some("password"));
    assert_eq!(field("client_id"), Some(CLIENT_ID));
    assert_eq!(field("scope"), Some(DEFAULT_SCOPE));
    assert_eq!(field("username"), Some("practice@example.org"));
    assert_eq!(field("password"), Some("Invented-Passw0rd"));
}

#[tokio::test]
async fn server_error_is_transient() {
    let peer = start_peer("503 Service Unavailable", r#"{"error":"temporarily_unavailable"}"#).await;

    let error = client(&peer.url).refresh_grant(&Secret::new("rt")).await.unwrap_err();

    assert_eq!(error.kind(), OAuthErrorKind::Transient, "{error}");
}

#[tokio::test]
async fn invalid_grant_401_is_rejected() {
    let peer =
        start_peer("401 Unauthorized", r#"{"error":"invalid_grant","error_description":"AADSTS50126: bad"}"#).await;

    let error = client(&peer.url).password_grant("practice@example.org", &Secret::new("pw")).await.unwrap_err();

    assert_eq!(error.kind(), OAuthErrorKind::Rejected, "{error}");
    assert!(error.to_string().contains("AADSTS50126"), "{error}");
}

#[tokio::test]
async fn unparsable_400_is_rejected() {
    let peer = start_peer("400 Bad Request", "<html>no</html>").await;

    let error = client(&peer.url).password_grant("practice@example.org", &Secret::new("pw")).await.unwrap_err();

    assert_eq!(error.kind(), OAuthErrorKind::Rejected, "{error}");
}

#[tokio::test]
async fn invalid_scope_is_config() {
    let peer = start_peer("400 Bad Request", r#"{"error":"invalid_scope"}"#).await;

    let error = client(&peer.url).password_grant("practice@example.org", &Secret::new("pw")).await.unwrap_err();

    assert_eq!(error.kind(), OAuthErrorKind::Config, "{error}");
}

#[tokio::test]
async fn not_found_is_config() {
    let peer = start_peer("404 Not Found", "").await;

    let error = client(&peer.url).password_grant("practice@example.org", &Secret::new("pw")).await.unwrap_err();

    assert!(matches!(error, OAuthError::Status { status: 404, .. }), "{error}");
    assert_eq!(error.kind(), OAuthErrorKind::Config);
}

#[tokio::test]
async fn response_without_access_token_is_invalid() {
    let peer = start_peer("200 OK", r#"{"token_type":"Bearer","expires_in":3600}"#).await;

    let error = client(&peer.url).password_grant("practice@example.org", &Secret::new("pw")).await.unwrap_err();

    assert!(matches!(error, OAuthError::InvalidResponse { .. }), "{error}");
}

#[tokio::test]
async fn string_expires_in_is_accepted() {
    let peer = start_peer("200 OK", r#"{"token_type":"Bearer","access_token":"at-1","expires_in":"600"}"#).await;
    let before = Instant::now();

    let tokens = client(&peer.url).password_grant("practice@example.org", &Secret::new("pw")).await.unwrap();

    assert!(tokens.expires_at >= before + Duration::from_secs(600));
    assert!(tokens.refresh_token.is_none());
}

#[tokio::test]
async fn silent_endpoint_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (_stream, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
    });
    let client = OAuthClient::new(settings(&url), &TlsSettings::default(), Duration::from_millis(300)).unwrap();

    let error = client.password_grant("practice@example.org", &Secret::new("pw")).await.unwrap_err();

    assert!(matches!(error, OAuthError::Timeout { .. }), "{error}");
    assert_eq!(error.kind(), OAuthErrorKind::Transient);
}

#[tokio::test]
async fn refused_connection_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    drop(listener);

    let error = client(&url).password_grant("practice@example.org", &Secret::new("pw")).await.unwrap_err();

    assert!(matches!(error, OAuthError::Connect { .. }), "{error}");
    assert_eq!(error.kind(), OAuthErrorKind::Transient);
}

#[test]
fn plain_http_needs_loopback_host() {
    let error =
        OAuthClient::new(settings("http://login.example.org/token"), &TlsSettings::default(), Duration::from_secs(5))
            .unwrap_err();

    assert_eq!(error.kind(), OAuthErrorKind::Config);
    assert!(error.to_string().contains("token_url"), "{error}");
}

#[test]
fn https_url_is_accepted() {
    let client =
        OAuthClient::new(settings("https://login.example.org/token"), &TlsSettings::default(), Duration::from_secs(5));

    assert!(client.is_ok());
}

#[test]
fn renewal_starts_before_expiry() {
    let issued = Instant::now();
    let tokens = Tokens::new(Secret::new("at"), None, issued, Duration::from_secs(3600));

    assert!(!tokens.needs_renewal(issued + Duration::from_secs(3400)));
    assert!(tokens.needs_renewal(issued + Duration::from_secs(3481)));
    assert!(!tokens.is_expired(issued + Duration::from_secs(3599)));
}

#[test]
fn short_lifetime_renews_at_four_fifths() {
    let issued = Instant::now();
    let tokens = Tokens::new(Secret::new("at"), None, issued, Duration::from_secs(10));

    assert!(!tokens.needs_renewal(issued + Duration::from_millis(7900)));
    assert!(tokens.needs_renewal(issued + Duration::from_secs(8)));
}

#[test]
fn tokens_debug_hides_values() {
    let tokens =
        Tokens::new(Secret::new("at-value"), Some(Secret::new("rt-value")), Instant::now(), Duration::from_secs(60));

    let debug = format!("{tokens:?}");

    assert!(!debug.contains("at-value"), "{debug}");
    assert!(!debug.contains("rt-value"), "{debug}");
}

#[tokio::test]
async fn https_with_extra_ca_returns_tokens() {
    let url = start_tls_peer().await;
    let mut ca = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut ca, crate::transport::tls::test_certificates::CA_PEM.as_bytes()).unwrap();
    let tls = TlsSettings { extra_ca_file: Some(ca.path().to_owned()) };
    let client = OAuthClient::new(settings(&url), &tls, Duration::from_secs(5)).unwrap();

    let tokens = client.password_grant("practice@example.org", &Secret::new("pw")).await.unwrap();

    assert_eq!(tokens.access_token.expose(), "at-tls");
}

#[tokio::test]
async fn https_untrusted_certificate_fails() {
    let url = start_tls_peer().await;

    let error = client(&url).password_grant("practice@example.org", &Secret::new("pw")).await.unwrap_err();

    assert!(matches!(error, OAuthError::TlsHandshake { .. }), "{error}");
    assert_eq!(error.kind(), OAuthErrorKind::Transient);
}
