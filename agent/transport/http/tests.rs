//! Endpoint checks on URLs, and requests against a scripted HTTP peer on 127.0.0.1.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const KEY: &str = "[test] url";
const TIMEOUT: Duration = Duration::from_secs(5);

fn endpoint(url: &str) -> Result<HttpEndpoint, ConfigError> {
    HttpEndpoint::new(&Url::parse(url).unwrap(), &TlsSettings::default(), KEY)
}

fn get(endpoint: &HttpEndpoint) -> Request<Full<Bytes>> {
    endpoint.request(Method::GET, &[], Bytes::new()).unwrap()
}

/// A peer that responds to every request with `response` and keeps the head of each request it read.
async fn start_peer(response: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = vec![0; 16 * 1024];
            let mut read = 0;
            while !String::from_utf8_lossy(&buffer[..read]).contains("\r\n\r\n") {
                match stream.read(&mut buffer[read..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(count) => read += count,
                }
            }
            seen.lock().unwrap().push(String::from_utf8_lossy(&buffer[..read]).into_owned());
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (address, heads)
}

fn response_with_body(status_line: &str, body: &str) -> String {
    format!("HTTP/1.1 {status_line}\r\ncontent-length: {}\r\n\r\n{body}", body.len())
}

#[test]
fn plain_http_needs_loopback_host() {
    let error = endpoint("http://updates.example.org/feed.json").err().unwrap();

    assert!(error.to_string().contains(KEY), "{error}");
    assert!(error.to_string().contains("loopback"), "{error}");
}

#[test]
fn plain_http_loopback_hosts_are_accepted() {
    for url in ["http://127.0.0.1:8080/token", "http://localhost/token", "http://[::1]:8080/token"] {
        assert!(endpoint(url).is_ok(), "{url}");
    }
}

#[test]
fn https_remote_host_is_accepted() {
    let endpoint = endpoint("https://login.example.org/token").unwrap();

    assert_eq!(endpoint.label(), "login.example.org:443");
}

#[test]
fn ipv6_label_has_brackets() {
    let endpoint = endpoint("http://[::1]:8080/token").unwrap();

    assert_eq!(endpoint.label(), "[::1]:8080");
}

#[test]
fn url_without_host_is_rejected() {
    let error = endpoint("mailto:practice@example.org").err().unwrap();

    assert!(error.to_string().contains("must name a host"), "{error}");
    assert!(error.to_string().contains(KEY), "{error}");
}

#[test]
fn other_scheme_is_rejected() {
    let error = endpoint("ftp://updates.example.org/feed.json").err().unwrap();

    assert!(error.to_string().contains("must be an http:// or https:// URL"), "{error}");
}

#[test]
fn request_sets_target_and_host() {
    let endpoint = endpoint("http://127.0.0.1:8080/v1.0/me?x=1").unwrap();

    let request = get(&endpoint);

    assert_eq!(request.uri(), "/v1.0/me?x=1");
    assert_eq!(request.headers()[HOST], "127.0.0.1:8080");
}

#[test]
fn user_info_stays_out_of_request() {
    let endpoint = endpoint("http://practice:Invented-Passw0rd@127.0.0.1:8080/token").unwrap();

    let request = get(&endpoint);

    assert_eq!(request.headers()[HOST], "127.0.0.1:8080");
    assert_eq!(endpoint.label(), "127.0.0.1:8080");
}

#[tokio::test]
async fn send_returns_status_and_body() {
    let (address, heads) = start_peer(response_with_body("404 Not Found", "no such feed")).await;
    let endpoint = endpoint(&format!("http://{address}/feed.json")).unwrap();

    let response = endpoint.send(get(&endpoint), 1024, TIMEOUT).await.unwrap();

    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(&response.body[..], b"no such feed");
    assert!(heads.lock().unwrap()[0].starts_with("GET /feed.json HTTP/1.1\r\n"), "{:?}", heads.lock().unwrap());
}

#[tokio::test]
async fn body_at_limit_is_read() {
    let (address, _) = start_peer(response_with_body("200 OK", &"x".repeat(100))).await;
    let endpoint = endpoint(&format!("http://{address}/feed.json")).unwrap();

    let response = endpoint.send(get(&endpoint), 100, TIMEOUT).await.unwrap();

    assert_eq!(response.body.len(), 100);
}

#[tokio::test]
async fn body_over_limit_is_too_large() {
    let (address, _) = start_peer(response_with_body("200 OK", &"x".repeat(101))).await;
    let endpoint = endpoint(&format!("http://{address}/feed.json")).unwrap();

    let error = endpoint.send(get(&endpoint), 100, TIMEOUT).await.err().unwrap();

    assert!(matches!(error, HttpError::BodyTooLarge { limit: 100, .. }), "{error}");
}

#[tokio::test]
async fn truncated_body_is_unreadable() {
    let (address, _) = start_peer("HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nonly part".into()).await;
    let endpoint = endpoint(&format!("http://{address}/feed.json")).unwrap();

    let error = endpoint.send(get(&endpoint), 100, TIMEOUT).await.err().unwrap();

    assert!(matches!(error, HttpError::BodyUnreadable { .. }), "{error}");
}

#[tokio::test]
async fn refused_connection_is_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let endpoint = endpoint(&format!("http://{address}/token")).unwrap();

    let error = endpoint.send(get(&endpoint), 100, TIMEOUT).await.err().unwrap();

    assert!(matches!(error, HttpError::Connect { .. }), "{error}");
}

#[tokio::test]
async fn silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (_stream, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
    });
    let endpoint = endpoint(&format!("http://{address}/token")).unwrap();

    let error = endpoint.send(get(&endpoint), 100, Duration::from_millis(300)).await.err().unwrap();

    assert!(matches!(error, HttpError::Timeout { .. }), "{error}");
}

#[tokio::test]
async fn untrusted_certificate_fails_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::test_certificates::server_config());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = acceptor.accept(stream).await;
        }
    });
    let endpoint = endpoint(&format!("https://localhost:{port}/token")).unwrap();

    let error = endpoint.send(get(&endpoint), 100, TIMEOUT).await.err().unwrap();

    assert!(matches!(error, HttpError::TlsHandshake { .. }), "{error}");
}
