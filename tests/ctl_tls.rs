//! Runs `nhsmail-ctl --inventory FILE --target NAME` against an in-test gRPC server on 127.0.0.1 that speaks TLS with
//! the NHSmail sandbox's CA-signed certificate, to check the inventory's TLS options on the client side. The server
//! implements only GetStatus, with a fixed response.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nhsmail_agent::proto::agent_service_server::{AgentService, AgentServiceServer};
use nhsmail_agent::proto::{
    GetStatusRequest, PasswordState, Status as AgentStatus, TriggerUploadRequest, UploadReport,
};
use nhsmail_sandbox::{Sandbox, SandboxOptions};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

const CTL: &str = env!("CARGO_BIN_EXE_nhsmail-ctl");
/// The version the fixed status reports, so a test can tell it reached this server.
const FIXED_VERSION: &str = "9.8.7";

struct FixedAgent;

#[tonic::async_trait]
impl AgentService for FixedAgent {
    async fn get_status(&self, _request: Request<GetStatusRequest>) -> Result<Response<AgentStatus>, Status> {
        Ok(Response::new(AgentStatus {
            version: FIXED_VERSION.into(),
            password_state: PasswordState::Ok as i32,
            ..AgentStatus::default()
        }))
    }

    async fn trigger_upload(&self, _request: Request<TriggerUploadRequest>) -> Result<Response<UploadReport>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }
}

/// A TLS gRPC server and the files a client needs for it.
struct TlsServer {
    url: String,
    ca_file: PathBuf,
    dir: tempfile::TempDir,
    _sandbox: Sandbox,
    _state: tempfile::TempDir,
}

/// Starts the server with the certificate and key the sandbox generated for `localhost` and `127.0.0.1`. With
/// `require_client_certificate`, the server also requires a client certificate signed by the sandbox's CA.
async fn start_server(require_client_certificate: bool) -> TlsServer {
    let state = tempfile::tempdir().unwrap();
    let options = SandboxOptions { state_dir: Some(state.path().to_path_buf()), ..SandboxOptions::default() };
    let sandbox = Sandbox::start(options).await.expect("the sandbox starts");
    let ca_file = sandbox.info().ca_file.clone();
    // The sandbox keeps its server certificate and key next to the CA certificate.
    let tls_dir = ca_file.parent().expect("the CA file is in a directory");
    let certificate = std::fs::read(tls_dir.join("server.pem")).expect("the sandbox writes server.pem");
    let key = std::fs::read(tls_dir.join("server-key.pem")).expect("the sandbox writes server-key.pem");

    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(certificate, key));
    if require_client_certificate {
        tls = tls.client_ca_root(Certificate::from_pem(std::fs::read(&ca_file).unwrap()));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let server = Server::builder()
        .tls_config(tls)
        .expect("the TLS settings are valid")
        .add_service(AgentServiceServer::new(FixedAgent))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent.token"), "invented-token-for-tls-tests\n").unwrap();
    TlsServer { url, ca_file, dir, _sandbox: sandbox, _state: state }
}

impl TlsServer {
    /// Writes an inventory with one agent, "practice", and `extra` lines in its table.
    fn inventory(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("fleet.toml");
        let text =
            format!("[[agent]]\nname = \"practice\"\nurl = \"{}\"\ntoken_file = \"agent.token\"\n{extra}", self.url);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn ca_line(&self) -> String {
        format!("ca_file = \"{}\"\n", self.ca_file.display())
    }
}

/// Runs nhsmail-ctl from a blocking thread, so the server on this test's runtime keeps running meanwhile.
async fn ctl(inventory: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(CTL);
    command.arg("--inventory").arg(inventory).args(args).args(["--timeout", "10"]);
    tokio::task::spawn_blocking(move || command.output().expect("nhsmail-ctl runs")).await.unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_verifies_agent() {
    let server = start_server(false).await;
    let inventory = server.inventory(&server.ca_line());

    let output = ctl(&inventory, &["--target", "practice", "status", "--output", "json"]).await;

    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["version"], FIXED_VERSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_roots_reject_private_ca() {
    let server = start_server(false).await;
    let inventory = server.inventory("");

    let output = ctl(&inventory, &["--target", "practice", "status"]).await;

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains(&server.url), "{}", stderr(&output));
    assert!(stderr(&output).contains("UnknownIssuer"), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_status_over_tls() {
    let server = start_server(false).await;
    let inventory = server.inventory(&server.ca_line());

    let output = ctl(&inventory, &["fleet", "status", "--output", "json"]).await;

    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["agents"][0]["reachable"], true, "{value}");
    assert_eq!(value["agents"][0]["status"]["version"], FIXED_VERSION);
}

// With TLS 1.3 the client learns of the rejection after its handshake has finished, so the message varies (the
// server's alert, a broken pipe or a cancelled call) but the exit code does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_client_certificate_is_rejected() {
    let server = start_server(true).await;
    let inventory = server.inventory(&server.ca_line());

    let output = ctl(&inventory, &["--target", "practice", "status"]).await;

    assert_eq!(output.status.code(), Some(3), "{:?} {}", output.status, stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_client_key_names_agent() {
    let server = start_server(true).await;
    let extra = format!("{}client_cert = \"central.pem\"\nclient_key = \"central.key\"\n", server.ca_line());
    let inventory = server.inventory(&extra);
    std::fs::write(server.dir.path().join("central.pem"), std::fs::read(&server.ca_file).unwrap()).unwrap();

    let output = ctl(&inventory, &["--target", "practice", "status"]).await;

    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let key_path = server.dir.path().join("central.key").display().to_string();
    let message = stderr(&output);
    assert!(message.contains("agent \"practice\""), "{message}");
    assert!(message.contains(&format!("client_key {key_path}: entity not found")), "{message}");
}
