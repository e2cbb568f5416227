//! End-to-end tests of the agent's security. They cover TLS and mutual TLS with certificates made here by rcgen,
//! tokens with roles checked on every rpc, and revocation while the agent runs. They also cover the audit trail, and
//! secrets kept out of logs, errors, audit rows and the database.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nhsmail_agent::proto;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use support::{AgentProcess, AuthMode, TestSandbox, submit};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Returns a loopback port with nothing listening, bound and then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn offline_config(extra_agent: &str) -> String {
    let port = closed_port();
    format!(
        "[agent]\n{extra_agent}\n[nhsmail]\nusername = \"practice.sms@example.org\"\nsmtp_host = \"127.0.0.1\"\n\
         smtp_port = {port}\nsmtp_security = \"plain\"\nimap_host = \"127.0.0.1\"\nimap_port = {port}\n\
         imap_security = \"plain\"\nnetwork_timeout_seconds = 2\n"
    )
}

// ---- certificates ----

/// A CA made for one test, which signs server and client certificates.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { issuer: Issuer::new(params, key), pem }
    }

    /// Signs a certificate for `names`, valid from `not_before` to `not_after` years from now (negative for the
    /// past), and returns its PEM and its key's PEM.
    fn sign(&self, names: &[&str], not_before: i32, not_after: i32) -> (String, String) {
        let mut params = CertificateParams::new(names.iter().map(|name| name.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("client"));
        let now = time_now_year();
        params.not_before = rcgen::date_time_ymd(now + not_before, 1, 1);
        params.not_after = rcgen::date_time_ymd(now + not_after, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn time_now_year() -> i32 {
    use chrono::Datelike;
    chrono::Utc::now().year()
}

/// The PEM files of one TLS set-up, written into the test's directory.
struct TlsFiles {
    server_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes a server CA and a certificate for 127.0.0.1 it signed (expired when `expired`), a client CA and a client
/// certificate it signed, and an unrelated CA.
fn tls_files(dir: &Path, expired: bool) -> TlsFiles {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let server_ca = TestCa::new("test server CA");
    let (not_before, not_after) = if expired { (-3, -1) } else { (-1, 2) };
    let (server_cert, server_key) = server_ca.sign(&["localhost", "127.0.0.1"], not_before, not_after);
    let client_ca = TestCa::new("test client CA");
    let (client_cert, client_key) = client_ca.sign(&["central-it.example.org"], -1, 2);
    TlsFiles {
        server_ca: write(&certs, "server-ca.pem", &server_ca.pem),
        server_cert: write(&certs, "server.pem", &server_cert),
        server_key: write(&certs, "server.key", &server_key),
        client_ca: write(&certs, "client-ca.pem", &client_ca.pem),
        client_cert: write(&certs, "client.pem", &client_cert),
        client_key: write(&certs, "client.key", &client_key),
        other_ca: write(&certs, "other-ca.pem", &TestCa::new("unrelated CA").pem),
    }
}

fn tls_agent(dir: &Path, files: &TlsFiles, mutual: bool) -> AgentProcess {
    let mut agent_keys =
        format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", files.server_cert.display(), files.server_key.display());
    if mutual {
        agent_keys.push_str(&format!("tls_client_ca = \"{}\"\n", files.client_ca.display()));
    }
    AgentProcess::start(&dir.join("agent"), &offline_config(&agent_keys))
}

fn https_url(agent: &AgentProcess) -> String {
    format!("https://{}", agent.address)
}

/// Runs nhsmail-ctl with `args` and the agent's admin token file.
fn ctl(agent: &AgentProcess, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nhsmail-ctl"))
        .arg("--token-file")
        .arg(agent.data_dir.join("admin.token"))
        .arg("--timeout")
        .arg("10")
        .args(args)
        .output()
        .expect("nhsmail-ctl runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

// ---- TLS ----

#[test]
fn right_ca_connects_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path(), false);
    let agent = tls_agent(dir.path(), &files, false);

    let ca = files.server_ca.to_str().unwrap();
    let output = ctl(&agent, &["--agent", &https_url(&agent), "--ca-file", ca, "status"]);

    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn wrong_ca_fails_naming_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path(), false);
    let agent = tls_agent(dir.path(), &files, false);

    let other = files.other_ca.to_str().unwrap();
    let output = ctl(&agent, &["--agent", &https_url(&agent), "--ca-file", other, "status"]);

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("not signed by a trusted CA"), "{message}");
    assert!(message.contains("--ca-file"), "{message}");
}

#[test]
fn expired_certificate_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path(), true);
    let agent = tls_agent(dir.path(), &files, false);

    let ca = files.server_ca.to_str().unwrap();
    let output = ctl(&agent, &["--agent", &https_url(&agent), "--ca-file", ca, "status"]);

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("certificate has expired"), "{}", stderr(&output));
}

#[test]
fn plain_text_client_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path(), false);
    let agent = tls_agent(dir.path(), &files, false);

    let output = ctl(&agent, &["--agent", &agent.url(), "status"]);

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("use an https:// URL"), "{}", stderr(&output));
}

#[test]
fn mutual_tls_without_client_certificate_fails() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path(), false);
    let agent = tls_agent(dir.path(), &files, true);

    let ca = files.server_ca.to_str().unwrap();
    let output = ctl(&agent, &["--agent", &https_url(&agent), "--ca-file", ca, "status"]);

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("requires a client certificate"), "{}", stderr(&output));
    assert!(agent.log().contains("TLS handshake failed"), "{}", agent.log());
}

#[test]
fn mutual_tls_with_client_certificate_works() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path(), false);
    let agent = tls_agent(dir.path(), &files, true);

    let output = ctl(
        &agent,
        &[
            "--agent",
            &https_url(&agent),
            "--ca-file",
            files.server_ca.to_str().unwrap(),
            "--client-cert",
            files.client_cert.to_str().unwrap(),
            "--client-key",
            files.client_key.to_str().unwrap(),
            "status",
        ],
    );

    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn mutual_tls_rejects_other_ca_client() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path(), false);
    let agent = tls_agent(dir.path(), &files, true);
    // A client certificate signed by the server CA, which the agent does not accept for clients.
    let (cert, key) = {
        let other = TestCa::new("client CA the agent does not trust");
        other.sign(&["intruder.example.org"], -1, 2)
    };
    let cert = write(dir.path(), "intruder.pem", &cert);
    let key = write(dir.path(), "intruder.key", &key);

    let output = ctl(
        &agent,
        &[
            "--agent",
            &https_url(&agent),
            "--ca-file",
            files.server_ca.to_str().unwrap(),
            "--client-cert",
            cert.to_str().unwrap(),
            "--client-key",
            key.to_str().unwrap(),
            "status",
        ],
    );

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("rejected this client certificate"), "{}", stderr(&output));
}

/// Writes an inventory with the one agent "practice" at `agent`'s https:// URL, with `extra` lines in its table.
fn tls_inventory(dir: &Path, agent: &AgentProcess, extra: &str) -> PathBuf {
    let token_file = agent.data_dir.join("admin.token");
    let text = format!(
        "[[agent]]\nname = \"practice\"\nurl = \"{}\"\ntoken_file = \"{}\"\n{extra}",
        https_url(agent),
        token_file.display()
    );
    write(dir, "fleet.toml", &text)
}

fn ctl_inventory(inventory: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nhsmail-ctl"))
        .arg("--inventory")
        .arg(inventory)
        .args(["--timeout", "10"])
        .args(args)
        .output()
        .expect("nhsmail-ctl runs")
}

#[test]
fn inventory_ca_file_reaches_agent() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path(), false);
    let agent = tls_agent(dir.path(), &files, false);
    let inventory = tls_inventory(dir.path(), &agent, &format!("ca_file = \"{}\"\n", files.server_ca.display()));

    let output = ctl_inventory(&inventory, &["fleet", "status", "--output", "json"]);

    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    assert_eq!(value["agents"][0]["reachable"], true, "{value} {}", stderr(&output));
    assert_eq!(value["agents"][0]["status"]["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn inventory_without_ca_rejects_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path(), false);
    let agent = tls_agent(dir.path(), &files, false);
    let inventory = tls_inventory(dir.path(), &agent, "");

    let output = ctl_inventory(&inventory, &["--target", "practice", "status"]);

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("not signed by a trusted CA"), "{}", stderr(&output));
}

#[test]
fn inventory_client_certificate_passes_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path(), false);
    let agent = tls_agent(dir.path(), &files, true);
    let extra = format!(
        "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        files.server_ca.display(),
        files.client_cert.display(),
        files.client_key.display()
    );
    let inventory = tls_inventory(dir.path(), &agent, &extra);

    let output = ctl_inventory(&inventory, &["--target", "practice", "status"]);

    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn inventory_missing_client_key_names_agent() {
    let dir = tempfile::tempdir().unwrap();
    let files = tls_files(dir.path(), false);
    let agent = tls_agent(dir.path(), &files, true);
    let key = dir.path().join("absent.key");
    let extra = format!(
        "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        files.server_ca.display(),
        files.client_cert.display(),
        key.display()
    );
    let inventory = tls_inventory(dir.path(), &agent, &extra);

    let output = ctl_inventory(&inventory, &["--target", "practice", "status"]);

    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("agent \"practice\""), "{}", stderr(&output));
    assert!(stderr(&output).contains(&format!("client_key {}", key.display())), "{}", stderr(&output));
}

#[test]
fn non_loopback_without_tls_names_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, offline_config("")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_nhsmail-agent"))
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("[agent] tls_cert"), "{}", stderr(&output));
    assert!(stderr(&output).contains("[agent] tls_key"), "{}", stderr(&output));
}

// ---- tokens and roles ----

/// Creates a token with `nhsmail-agent token create` and returns the last line it printed.
fn create_token(data_dir: &Path, name: &str, role: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_nhsmail-agent"))
        .args(["token", "create", "--name", name, "--role", role, "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "token create failed: {}", stderr(&output));
    stdout(&output).lines().last().expect("token create prints the token").to_string()
}

fn revoke_token(data_dir: &Path, name: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_nhsmail-agent"))
        .args(["token", "revoke", "--name", name, "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "token revoke failed: {}", stderr(&output));
}

type Authed = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

#[derive(Clone)]
struct Bearer(Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        Ok(request)
    }
}

/// Every rpc of the API with the role it needs. Requests are chosen to change nothing when they are allowed:
/// invalid values, unknown ids, and a rotation or reveal with no password stored.
const RPCS: &[(&str, &str)] = &[
    ("GetStatus", "viewer"),
    ("TriggerUpload", "operator"),
    ("GetConnectivity", "viewer"),
    ("UpdateConnectivity", "operator"),
    ("UpdatePassword", "operator"),
    ("RotatePassword", "operator"),
    ("RevealPassword", "admin"),
    ("SubmitMessage", "submitter"),
    ("SubmitMessages", "submitter"),
    ("GetMessage", "viewer"),
    ("ListMessages", "viewer"),
    ("CancelMessage", "submitter"),
    ("ListReplies", "viewer"),
    ("WatchEvents", "viewer"),
    ("ListOptOuts", "viewer"),
    ("AddOptOut", "submitter"),
    ("RemoveOptOut", "submitter"),
    ("ListInboundForReview", "viewer"),
    ("GetInbound", "viewer"),
    ("MarkReviewed", "submitter"),
    ("ListAuditEvents", "operator"),
];

/// Makes one call of `rpc` and returns its status code.
async fn call(channel: &Channel, token: Option<&str>, rpc: &str) -> Code {
    let bearer = Bearer(token.map(str::to_owned));
    let service = Authed::new(channel.clone(), bearer);
    let mut agent = proto::agent_service_client::AgentServiceClient::new(service.clone());
    let mut connectivity = proto::connectivity_service_client::ConnectivityServiceClient::new(service.clone());
    let mut messages = proto::message_service_client::MessageServiceClient::new(service.clone());
    let mut opt_outs = proto::opt_out_service_client::OptOutServiceClient::new(service.clone());
    let mut inbox = proto::inbox_service_client::InboxServiceClient::new(service.clone());
    let mut audit = proto::audit_service_client::AuditServiceClient::new(service);
    let landline = || submit("01632 960000", "not sent");
    let result: Result<(), Status> = match rpc {
        "GetStatus" => agent.get_status(proto::GetStatusRequest {}).await.map(drop),
        "TriggerUpload" => agent.trigger_upload(proto::TriggerUploadRequest {}).await.map(drop),
        "GetConnectivity" => connectivity.get_connectivity(proto::GetConnectivityRequest {}).await.map(drop),
        "UpdateConnectivity" => {
            connectivity.update_connectivity(proto::UpdateConnectivityRequest::default()).await.map(drop)
        }
        "UpdatePassword" => {
            let request = proto::UpdatePasswordRequest {
                password: "Invented-Matrix-1".into(),
                confirmation: "Invented-Matrix-2".into(),
                skip_verification: true,
            };
            connectivity.update_password(request).await.map(drop)
        }
        "RotatePassword" => connectivity.rotate_password(proto::RotatePasswordRequest::default()).await.map(drop),
        "RevealPassword" => connectivity.reveal_password(proto::RevealPasswordRequest::default()).await.map(drop),
        "SubmitMessage" => messages.submit_message(landline()).await.map(drop),
        "SubmitMessages" => {
            let request = proto::SubmitMessagesRequest { messages: vec![landline()] };
            messages.submit_messages(request).await.map(drop)
        }
        "GetMessage" => messages.get_message(proto::GetMessageRequest { id: "unknown".into() }).await.map(drop),
        "ListMessages" => messages.list_messages(proto::ListMessagesRequest::default()).await.map(drop),
        "CancelMessage" => {
            messages.cancel_message(proto::CancelMessageRequest { id: "unknown".into() }).await.map(drop)
        }
        "ListReplies" => messages.list_replies(proto::ListRepliesRequest::default()).await.map(drop),
        "WatchEvents" => messages.watch_events(proto::WatchEventsRequest::default()).await.map(drop),
        "ListOptOuts" => opt_outs.list_opt_outs(proto::ListOptOutsRequest::default()).await.map(drop),
        "AddOptOut" => {
            let request = proto::AddOptOutRequest { number: "not a number".into(), note: String::new() };
            opt_outs.add_opt_out(request).await.map(drop)
        }
        "RemoveOptOut" => {
            let request = proto::RemoveOptOutRequest { number: "not a number".into(), note: String::new() };
            opt_outs.remove_opt_out(request).await.map(drop)
        }
        "ListInboundForReview" => {
            inbox.list_inbound_for_review(proto::ListInboundForReviewRequest::default()).await.map(drop)
        }
        "GetInbound" => inbox.get_inbound(proto::GetInboundRequest { id: 999_999 }).await.map(drop),
        "MarkReviewed" => inbox.mark_reviewed(proto::MarkReviewedRequest { id: 999_999 }).await.map(drop),
        "ListAuditEvents" => audit.list_audit_events(proto::ListAuditEventsRequest::default()).await.map(drop),
        other => panic!("no call written for {other}"),
    };
    match result {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

fn allows(held: &str, required: &str) -> bool {
    match (held, required) {
        ("admin", _) | (_, "viewer") => true,
        (held, required) => held == required,
    }
}

#[tokio::test]
async fn every_rpc_checks_every_role() {
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &offline_config(""));
    let mut tokens = vec![("admin", Some(agent.token()))];
    for role in ["operator", "submitter", "viewer"] {
        tokens.push((role, Some(create_token(dir.path(), &format!("matrix-{role}"), role))));
    }
    tokens.push(("none", None));
    let channel = Channel::from_shared(agent.url()).unwrap().connect().await.unwrap();

    for (rpc, required) in RPCS {
        for (role, token) in &tokens {
            let code = call(&channel, token.as_deref(), rpc).await;
            match *role {
                "none" => assert_eq!(code, Code::Unauthenticated, "{rpc} without a token"),
                role if allows(role, required) => assert!(
                    code != Code::Unauthenticated && code != Code::PermissionDenied,
                    "{rpc} with the {role} role returned {code:?}"
                ),
                role => assert_eq!(code, Code::PermissionDenied, "{rpc} with the {role} role"),
            }
        }
    }
}

#[tokio::test]
async fn revoked_token_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &offline_config(""));
    let token = create_token(dir.path(), "leaving-script", "viewer");
    let channel = Channel::from_shared(agent.url()).unwrap().connect().await.unwrap();
    assert_eq!(call(&channel, Some(&token), "GetStatus").await, Code::Ok);

    revoke_token(dir.path(), "leaving-script");

    assert_eq!(call(&channel, Some(&token), "GetStatus").await, Code::Unauthenticated);
}

#[tokio::test]
async fn unknown_tokens_are_logged_as_counts() {
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &offline_config(""));
    let channel = Channel::from_shared(agent.url()).unwrap().connect().await.unwrap();
    let guess = "0123456789abcdef.invented-guess-marker";

    for _ in 0..10 {
        assert_eq!(call(&channel, Some(guess), "GetStatus").await, Code::Unauthenticated);
    }

    let log = agent.log();
    let warned = |count: &str| log.lines().any(|line| line.contains(" WARN ") && line.ends_with(count));
    assert!(warned("failures=1"), "{log}");
    assert!(warned("failures=10"), "{log}");
    assert!(!warned("failures=5"), "{log}");
    assert!(!log.contains("invented-guess-marker"), "{log}");
}

#[test]
fn ctl_names_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &offline_config(""));
    let token = create_token(dir.path(), "read-only", "viewer");

    let output = Command::new(env!("CARGO_BIN_EXE_nhsmail-ctl"))
        .args(["--agent", &agent.url(), "upload", "trigger"])
        .env("NHSMAIL_TOKEN", &token)
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(4));
    assert!(stderr(&output).contains("permission denied"), "{}", stderr(&output));
}

#[test]
fn ctl_names_unknown_token_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &offline_config(""));

    let output = Command::new(env!("CARGO_BIN_EXE_nhsmail-ctl"))
        .args(["--agent", &agent.url(), "status"])
        .env("NHSMAIL_TOKEN", "0123456789abcdef.invented-wrong-secret")
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(4));
    assert!(stderr(&output).contains("unauthenticated"), "{}", stderr(&output));
}

#[test]
fn token_list_shows_names_not_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let token = create_token(dir.path(), "emis-bridge", "submitter");

    let output = Command::new(env!("CARGO_BIN_EXE_nhsmail-agent"))
        .args(["token", "list", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();

    assert!(output.status.success(), "{}", stderr(&output));
    let listing = stdout(&output);
    assert!(listing.contains("emis-bridge"), "{listing}");
    assert!(listing.contains("submitter"), "{listing}");
    let (_, secret) = token.split_once('.').unwrap();
    assert!(!listing.contains(secret), "{listing}");
}

// ---- audit ----

#[test]
fn changes_and_denials_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &offline_config(""));
    let operator = create_token(dir.path(), "central-it", "operator");
    let viewer = create_token(dir.path(), "front-desk", "viewer");
    let run = |token: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nhsmail-ctl"))
            .args(["--agent", &agent.url()])
            .args(args)
            .env("NHSMAIL_TOKEN", token)
            .output()
            .unwrap()
    };
    assert!(run(&operator, &["connectivity", "set", "--upload-interval", "30"]).status.success());
    assert_eq!(run(&viewer, &["connectivity", "set", "--upload-interval", "45"]).status.code(), Some(4));

    let listed = run(&operator, &["audit", "list", "--output", "json"]);

    assert!(listed.status.success(), "{}", stderr(&listed));
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let events = json["events"].as_array().unwrap();
    let find = |caller: &str| events.iter().find(|event| event["caller"] == caller).cloned().unwrap_or_default();
    let changed = find("central-it");
    assert_eq!(changed["action"], "UpdateConnectivity");
    assert_eq!(changed["role"], "operator");
    assert_eq!(changed["outcome"], "ok");
    assert!(changed["peer"].as_str().unwrap_or_default().starts_with("127.0.0.1:"), "{changed}");
    let denied = find("front-desk");
    assert_eq!(denied["outcome"], "denied");
    let created = events.iter().filter(|event| event["action"] == "token.create").count();
    assert_eq!(created, 2);
}

// ---- secrets ----

/// Returns the files under `dir` whose bytes contain `needle`.
fn found_in_files(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(found_in_files(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|window| window == needle.as_bytes())
        {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn secrets_never_leave_memory_in_clear() {
    let sandbox = TestSandbox::start().await;
    let password = sandbox.info().password.clone();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("agent");
    let mut agent = AgentProcess::start_with_env(
        &data_dir,
        &sandbox.agent_config(AuthMode::Password, ""),
        &[("RUST_LOG", "trace")],
    );
    let token = create_token(&data_dir, "end-to-end", "admin");
    let (_, token_secret) = token.split_once('.').unwrap();
    let channel = Channel::from_shared(agent.url()).unwrap().connect().await.unwrap();
    let service = Authed::new(channel.clone(), Bearer(Some(token.clone())));
    let mut connectivity = proto::connectivity_service_client::ConnectivityServiceClient::new(service.clone());
    let mut messages = proto::message_service_client::MessageServiceClient::new(service.clone());
    let mut status = proto::agent_service_client::AgentServiceClient::new(service.clone());
    let mut audit = proto::audit_service_client::AuditServiceClient::new(service);

    let request = proto::UpdatePasswordRequest {
        password: password.clone(),
        confirmation: password.clone(),
        skip_verification: false,
    };
    let response = connectivity.update_password(request).await.expect("UpdatePassword succeeds").into_inner();
    assert!(response.verified);
    let id = messages.submit_message(submit("07700900123", "Your appointment is on Monday")).await.unwrap();
    let id = id.into_inner().message.expect("the response carries the message").id;
    let mut clients = agent.clients().await;
    support::wait_for_status(&mut clients, &id, proto::MessageStatus::Sent).await;
    status.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap();
    let mismatched = proto::UpdatePasswordRequest {
        password: password.clone(),
        confirmation: format!("{password}x"),
        skip_verification: true,
    };
    let error = connectivity.update_password(mismatched).await.unwrap_err();
    let wrong_token = format!("{token}x");
    let ctl_error = Command::new(env!("CARGO_BIN_EXE_nhsmail-ctl"))
        .args(["--agent", &agent.url(), "status"])
        .env("NHSMAIL_TOKEN", &wrong_token)
        .output()
        .unwrap();
    let audit_rows = audit.list_audit_events(proto::ListAuditEventsRequest::default()).await.unwrap().into_inner();
    agent.stop();

    let log = agent.log();
    assert!(log.contains("TRACE"), "the agent did not log at trace level");
    for (what, secret) in [("password", password.as_str()), ("token", token_secret)] {
        assert!(!log.contains(secret), "the log contains the {what}");
        assert!(!error.message().contains(secret), "the error contains the {what}");
        assert!(!stderr(&ctl_error).contains(secret), "nhsmail-ctl's error contains the {what}");
        assert!(!format!("{audit_rows:?}").contains(secret), "the audit rows contain the {what}");
        let files = found_in_files(&data_dir, secret);
        assert!(files.is_empty(), "{files:?} contain the {what}");
    }
    assert!(!audit_rows.events.is_empty());
}

// ---- files ----

#[test]
fn data_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProcess::start(&dir.path().join("agent"), &offline_config(""));
    agent.stop();

    let mode = |name: &str| std::fs::metadata(agent.data_dir.join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("."), 0o700);
    for file in ["agent.db", "credential.key", "admin.token"] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
    assert!(!agent.log().contains("open to other users"), "{}", agent.log());
}

#[test]
fn open_database_is_tightened_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("agent");
    let mut agent = AgentProcess::start(&data_dir, &offline_config(""));
    agent.stop();
    let database = data_dir.join("agent.db");
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut agent = AgentProcess::start(&data_dir, &offline_config(""));
    agent.stop();

    assert_eq!(std::fs::metadata(&database).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(agent.log().contains("open to other users"), "{}", agent.log());
}
