//! The agent's Prometheus endpoint, scraped over HTTP after real sends to the sandbox, and the update feed read by
//! the upload cycle from a file.

mod support;

use std::path::Path;

use http_body_util::BodyExt;
use nhsmail_agent::proto::{self, MessageStatus};
use support::sandbox::agent_config;
use support::{AgentProcess, AuthMode, TestSandbox, set_password, submit, wait_for_status};

/// Returns the value of the sample `series` (name and labels exactly as exposed) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Fetches `GET /metrics` over HTTP/1.1 and returns the status, content type and body.
async fn scrape(address: &str) -> (u16, String, String) {
    let stream = tokio::net::TcpStream::connect(address).await.expect("the metrics endpoint accepts connections");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/metrics")
        .header("host", address)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("the metrics endpoint responds");
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, String::from_utf8(body.to_vec()).unwrap())
}

fn metrics_address(agent: &AgentProcess) -> String {
    agent
        .stdout_lines()
        .iter()
        .find_map(|line| line.strip_prefix("metrics listening on ").map(str::to_string))
        .expect("the agent prints the metrics address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_sends_and_states() {
    let sandbox = TestSandbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = sandbox.agent_config(AuthMode::Password, "").replacen(
        "[agent]\n",
        "[agent]\nmetrics_listen = \"127.0.0.1:0\"\n",
        1,
    );
    let agent = AgentProcess::start(dir.path(), &config);
    let address = metrics_address(&agent);
    let mut clients = agent.clients().await;
    set_password(&mut clients, &sandbox.info().password, false).await;

    let response = clients.messages.submit_message(submit("07700 900123", "Your appointment is at 10:00")).await;
    let id = response.unwrap().into_inner().message.unwrap().id;
    wait_for_status(&mut clients, &id, MessageStatus::Sent).await;
    clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap();
    let (status, content_type, body) = scrape(&address).await;

    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    assert_eq!(sample(&body, "nhsmail_sends_total"), Some(1.0), "{body}");
    let sent = sample(&body, "nhsmail_messages{state=\"sent\"}").unwrap();
    let delivered = sample(&body, "nhsmail_messages{state=\"delivered\"}").unwrap();
    assert_eq!(sent + delivered, 1.0, "{body}");
    assert_eq!(sample(&body, "nhsmail_messages{state=\"queued\"}"), Some(0.0), "{body}");
    assert_eq!(sample(&body, "nhsmail_send_failures_total{reason=\"permanent\"}"), Some(0.0), "{body}");
    assert_eq!(sample(&body, "nhsmail_sign_in_failures_total{protocol=\"smtp\"}"), Some(0.0), "{body}");
    assert_eq!(sample(&body, "nhsmail_upload_duration_seconds_count"), Some(1.0), "{body}");
    assert_eq!(sample(&body, "nhsmail_oldest_queued_message_age_seconds"), Some(0.0), "{body}");
    assert_eq!(sample(&body, "nhsmail_password_ok"), Some(1.0), "{body}");
    let days = sample(&body, "nhsmail_password_days_until_expiry").unwrap();
    assert!((89.0..=90.0).contains(&days), "{body}");
    assert!(body.contains("# TYPE nhsmail_sends_total counter"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_other_paths_not_found() {
    let sandbox = TestSandbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(sandbox.info()).replacen("[agent]\n", "[agent]\nmetrics_listen = \"127.0.0.1:0\"\n", 1);
    let agent = AgentProcess::start(dir.path(), &config);
    let address = metrics_address(&agent);

    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request =
        http::Request::get("/").header("host", &address).body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();

    assert_eq!(response.status().as_u16(), 404);
}

/// Starts an agent whose update feed is `feed`, with no password, so the upload cycle reaches the feed check after
/// failing to collect mail.
async fn agent_with_feed(sandbox: &TestSandbox, dir: &Path, feed: &Path) -> AgentProcess {
    let config = agent_config(sandbox.info()).replacen(
        "[agent]\n",
        &format!("[agent]\nupdate_feed = \"{}\"\n", feed.display()),
        1,
    );
    AgentProcess::start(dir, &config)
}

async fn upload_then_status(agent: &AgentProcess) -> (proto::UploadReport, proto::Status) {
    let mut clients = agent.clients().await;
    let report = clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap().into_inner();
    let status = clients.agent.get_status(proto::GetStatusRequest {}).await.unwrap().into_inner();
    (report, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_feed_version_is_available() {
    let sandbox = TestSandbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("latest.json");
    std::fs::write(&feed, r#"{"latest_version": "99.0.0", "notes": "Adds the fleet view."}"#).unwrap();
    let agent = agent_with_feed(&sandbox, &dir.path().join("agent"), &feed).await;

    let (_, status) = upload_then_status(&agent).await;

    assert!(status.update_available);
    assert_eq!(status.latest_version, "99.0.0");
    assert_eq!(status.update_notes, "Adds the fleet view.");
    let output = agent.ctl(&["status"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("(99.0.0 available)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_or_older_feed_version_not_available() {
    let sandbox = TestSandbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("latest.json");
    std::fs::write(&feed, format!(r#"{{"latest_version": "{}"}}"#, env!("CARGO_PKG_VERSION"))).unwrap();
    let agent = agent_with_feed(&sandbox, &dir.path().join("agent"), &feed).await;

    let (_, same) = upload_then_status(&agent).await;
    std::fs::write(&feed, r#"{"latest_version": "0.0.1"}"#).unwrap();
    let (_, older) = upload_then_status(&agent).await;

    assert!(!same.update_available);
    assert_eq!(same.latest_version, env!("CARGO_PKG_VERSION"));
    assert!(!older.update_available);
    assert_eq!(older.latest_version, "0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_feed_warns_without_crash() {
    let sandbox = TestSandbox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("latest.json");
    std::fs::write(&feed, "<html>Not found</html>").unwrap();
    let agent = agent_with_feed(&sandbox, &dir.path().join("agent"), &feed).await;

    let (report, status) = upload_then_status(&agent).await;

    assert!(!status.update_available);
    let warning = status.warnings.iter().find(|warning| warning.code == "update_feed_invalid").expect("a feed warning");
    assert!(warning.message.contains("is not a valid update feed"), "{}", warning.message);
    assert!(warning.message.contains(&feed.display().to_string()), "{}", warning.message);
    assert!(report.errors.iter().any(|error| error.contains("update feed not checked")), "{:?}", report.errors);

    // The agent keeps serving after the bad feed, and a fixed feed clears the warning.
    std::fs::write(&feed, r#"{"latest_version": "99.0.0"}"#).unwrap();
    let (_, fixed) = upload_then_status(&agent).await;
    assert!(fixed.update_available);
    assert!(fixed.warnings.iter().all(|warning| warning.code != "update_feed_invalid"));
}

/// Serves `body` as `application/json` to each HTTP request on `listener`, over TLS with the sandbox's certificate
/// for 127.0.0.1, until the test ends.
fn serve_feed_over_tls(listener: tokio::net::TcpListener, ca_file: &Path, body: &'static str) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // The sandbox keeps its server certificate and key next to the CA certificate.
    let tls_dir = ca_file.parent().unwrap();
    let chain = vec![CertificateDer::from_pem_file(tls_dir.join("server.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(tls_dir.join("server-key.pem")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));

    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut stream) = acceptor.accept(tcp).await else { continue };
            let mut request = vec![0u8; 4096];
            let _ = stream.read(&mut request).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_feed_is_fetched() {
    let sandbox = TestSandbox::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}/feed/latest.json", listener.local_addr().unwrap().port());
    serve_feed_over_tls(listener, &sandbox.info().ca_file, r#"{"latest_version": "99.1.0", "notes": "Over HTTPS."}"#);
    let dir = tempfile::tempdir().unwrap();
    // The agent trusts [nhsmail] ca_file, the sandbox's CA, for the feed as for mail.
    let config = agent_config(sandbox.info()).replacen("[agent]\n", &format!("[agent]\nupdate_feed = \"{url}\"\n"), 1);
    let agent = AgentProcess::start(dir.path(), &config);

    let (report, status) = upload_then_status(&agent).await;

    assert!(status.update_available, "upload errors: {:?}", report.errors);
    assert_eq!(status.latest_version, "99.1.0");
    assert_eq!(status.update_notes, "Over HTTPS.");
}
