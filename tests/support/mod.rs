//! Shared harness for the end-to-end tests: starts the built `nhsmail-agent` binary, connects gRPC clients with its
//! admin token, runs `nhsmail-ctl`, starts an in-process NHSmail sandbox and calls its control API, and reads the
//! real-server stack's settings from `servers.env`.
#![allow(dead_code)]

pub mod rotation;
pub mod sandbox;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use nhsmail_sandbox::{Policy, Sandbox, SandboxInfo, SandboxOptions};

use nhsmail_agent::proto;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The `[mailbox]` section of the tests' agent configs: without IMAP IDLE, mail is collected only when a test
/// calls TriggerUpload, so each upload report counts what the test expects.
pub const NO_IDLE: &str = "[mailbox]\nidle = false\n";

/// Serialises tests that share the real servers' mailboxes or count their sign-in failures.
pub static REAL_SERVER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Names the `servers.env` file written by `scripts/real-servers.sh start`. When set, the real-server tests must run.
pub const REAL_SERVERS_VAR: &str = "NHSMAIL_REAL_SERVERS";

/// Settings of a running Postfix and Dovecot stack, from its `servers.env`.
#[derive(Debug, Clone)]
pub struct RealServers {
    pub vars: HashMap<String, String>,
}

impl RealServers {
    /// Returns the stack's settings, or `None` after printing why the test is skipped.
    /// Panics when the variable is set but the file cannot be read, because then the tests are mandatory.
    pub fn from_env(test: &str) -> Option<RealServers> {
        let Some(path) = std::env::var_os(REAL_SERVERS_VAR) else {
            eprintln!(
                "skipped {test}: {REAL_SERVERS_VAR} is not set. Start Postfix and Dovecot with \
                 `scripts/real-servers.sh start DIR` and set {REAL_SERVERS_VAR}=DIR/servers.env to run it"
            );
            return None;
        };
        let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
            panic!("{REAL_SERVERS_VAR}={} cannot be read: {error}", Path::new(&path).display())
        });
        let vars = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix("export "))
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_string(), value.trim_matches(['"', '\'']).to_string()))
            .collect();
        Some(RealServers { vars })
    }

    pub fn var(&self, name: &str) -> &str {
        self.vars.get(name).unwrap_or_else(|| panic!("servers.env has no {name}"))
    }

    pub fn username(&self) -> &str {
        self.var("NHSMAIL_TEST_USERNAME")
    }

    pub fn password(&self) -> &str {
        self.var("NHSMAIL_TEST_PASSWORD")
    }

    /// Returns an agent config for this stack: SMTP submission with STARTTLS, IMAP with implicit TLS.
    pub fn agent_config(&self, extra: &str) -> String {
        format!(
            "[agent]\nupload_interval_minutes = 1440\n\n[nhsmail]\nusername = \"{username}\"\nsmtp_host = \"127.0.0.1\"\n\
             smtp_port = {smtp}\nsmtp_security = \"starttls\"\nimap_host = \"127.0.0.1\"\nimap_port = {imap}\n\
             imap_security = \"tls\"\nca_file = \"{ca}\"\nnetwork_timeout_seconds = 20\n\n[sending]\nrate_per_minute = 600\n{extra}\n\
             {NO_IDLE}",
            username = self.username(),
            smtp = self.var("NHSMAIL_TEST_SMTP_PORT"),
            imap = self.var("NHSMAIL_TEST_IMAPS_PORT"),
            ca = self.var("NHSMAIL_TEST_CA_FILE"),
        )
    }

    /// Runs `tests/support/mailbox.py` with the stack's settings in its environment.
    pub fn mailbox_tool(&self, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/mailbox.py");
        let output = Command::new("python3").arg(script).args(args).envs(&self.vars).output().expect("python3 runs");
        assert!(output.status.success(), "mailbox.py {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("mailbox.py prints UTF-8")
    }

    /// Returns every email in the SMS gateway mailbox.
    pub fn gateway_messages(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.mailbox_tool(&["gateway-messages"])).expect("mailbox.py prints JSON")
    }

    /// Appends a raw email to the practice INBOX, as if the gateway had delivered it.
    pub fn append_to_practice_inbox(&self, raw: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), raw).unwrap();
        self.mailbox_tool(&["append-practice", file.path().to_str().unwrap()]);
    }

    /// Counts Dovecot's log lines that record a failed sign-in for `username`.
    pub fn failed_sign_ins(&self, username: &str) -> usize {
        let log = Path::new(self.var("NHSMAIL_TEST_STATE_DIR")).join("dovecot.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .filter(|line| line.contains(username))
            .filter(|line| line.contains("Password mismatch") || line.contains("password mismatch"))
            .count()
    }
}

pub type Authed = InterceptedService<Channel, TokenInterceptor>;

#[derive(Clone)]
pub struct TokenInterceptor(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

#[derive(Clone)]
pub struct Clients {
    pub messages: proto::message_service_client::MessageServiceClient<Authed>,
    pub connectivity: proto::connectivity_service_client::ConnectivityServiceClient<Authed>,
    pub agent: proto::agent_service_client::AgentServiceClient<Authed>,
    pub opt_outs: proto::opt_out_service_client::OptOutServiceClient<Authed>,
    pub inbox: proto::inbox_service_client::InboxServiceClient<Authed>,
}

/// A running `nhsmail-agent` process with its own data directory.
pub struct AgentProcess {
    child: Child,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub address: String,
    log_path: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl AgentProcess {
    /// Writes `config` into `data_dir/agent.toml`, starts the agent on a free loopback port and waits until it listens.
    pub fn start(data_dir: &Path, config: &str) -> AgentProcess {
        Self::start_with_env(data_dir, config, &[])
    }

    pub fn start_with_env(data_dir: &Path, config: &str, env: &[(&str, &str)]) -> AgentProcess {
        std::fs::create_dir_all(data_dir).unwrap();
        let config_path = data_dir.join("agent.toml");
        std::fs::write(&config_path, config).unwrap();
        let args: Vec<OsString> = vec!["--config".into(), config_path.clone().into()];
        Self::spawn(data_dir, config_path, args, env)
    }

    /// Starts `nhsmail-agent --sandbox` with `data_dir` on a free loopback port and waits until it listens.
    pub fn start_sandbox_mode(data_dir: &Path) -> AgentProcess {
        Self::spawn(data_dir, data_dir.join("agent.toml"), vec!["--sandbox".into()], &[])
    }

    fn spawn(data_dir: &Path, config_path: PathBuf, args: Vec<OsString>, env: &[(&str, &str)]) -> AgentProcess {
        std::fs::create_dir_all(data_dir).unwrap();
        let log_path = data_dir.join("agent.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();

        let mut child = Command::new(env!("CARGO_BIN_EXE_nhsmail-agent"))
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "info,nhsmail_agent=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("the agent binary starts");

        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (sender, receiver) = std::sync::mpsc::channel();
        let kept = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("listening on ") {
                    let _ = sender.send(address.to_string());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let address = match receiver.recv_timeout(Duration::from_secs(30)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the agent did not start listening within 30 s; log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
        };
        AgentProcess { child, data_dir: data_dir.to_path_buf(), config_path, address, log_path, stdout: lines }
    }

    /// Returns every line the agent printed on stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Returns the agent's process id, for reading its memory use from `/proc` or sending it signals such as SIGSTOP.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token")).unwrap().trim().to_string()
    }

    pub async fn clients(&self) -> Clients {
        let channel = Channel::from_shared(self.url()).unwrap().connect().await.expect("gRPC connects");
        let interceptor = TokenInterceptor(format!("Bearer {}", self.token()).parse().unwrap());
        Clients {
            messages: proto::message_service_client::MessageServiceClient::with_interceptor(
                channel.clone(),
                interceptor.clone(),
            ),
            connectivity: proto::connectivity_service_client::ConnectivityServiceClient::with_interceptor(
                channel.clone(),
                interceptor.clone(),
            ),
            agent: proto::agent_service_client::AgentServiceClient::with_interceptor(
                channel.clone(),
                interceptor.clone(),
            ),
            opt_outs: proto::opt_out_service_client::OptOutServiceClient::with_interceptor(
                channel.clone(),
                interceptor.clone(),
            ),
            inbox: proto::inbox_service_client::InboxServiceClient::with_interceptor(channel, interceptor),
        }
    }

    /// Runs `nhsmail-ctl` against this agent with its admin token.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nhsmail-ctl"))
            .arg("--agent")
            .arg(self.url())
            .arg("--token-file")
            .arg(self.data_dir.join("admin.token"))
            .args(args)
            .output()
            .expect("nhsmail-ctl runs")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Kills the agent with SIGKILL, as a power cut or the OOM killer would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the agent with SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        self.child.wait().unwrap()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 200 ms until it returns `Some` or `limit` passes.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn submit(to: &str, text: &str) -> proto::SubmitMessageRequest {
    proto::SubmitMessageRequest { to: to.into(), text: text.into(), ..Default::default() }
}

/// Returns a short random tag that makes a test's texts unique in the shared gateway mailbox.
pub fn unique_tag() -> String {
    uuid::Uuid::now_v7().simple().to_string()[20..].to_string()
}

/// How the agent signs in to the sandbox's SMTP and IMAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// AUTH PLAIN or LOGIN, and IMAP LOGIN.
    Password,
    /// An access token from the sandbox's token endpoint, with XOAUTH2.
    OAuth2,
}

/// The client_id the sandbox's token endpoint requires in the tests.
pub const SANDBOX_CLIENT_ID: &str = "nhsmail-agent-tests";

/// An in-process NHSmail sandbox with a temporary state folder, one per test.
pub struct TestSandbox {
    sandbox: Sandbox,
}

impl TestSandbox {
    /// Starts a sandbox that sends each receipt, report or reply 300 ms after the text.
    pub async fn start() -> TestSandbox {
        Self::start_with_policy(Policy::default()).await
    }

    pub async fn start_with_policy(policy: Policy) -> TestSandbox {
        let options = SandboxOptions {
            policy,
            receipt_delay: Duration::from_millis(300),
            client_id: Some(SANDBOX_CLIENT_ID.into()),
            ..SandboxOptions::default()
        };
        TestSandbox { sandbox: Sandbox::start(options).await.expect("the sandbox starts") }
    }

    pub fn info(&self) -> &SandboxInfo {
        self.sandbox.info()
    }

    /// Returns an agent config for this sandbox: SMTP with STARTTLS, IMAP with implicit TLS, and `mode`'s sign-in.
    pub fn agent_config(&self, mode: AuthMode, extra: &str) -> String {
        let info = self.info();
        let auth = match mode {
            AuthMode::Password => "auth = \"password\"\n".to_string(),
            AuthMode::OAuth2 => format!(
                "auth = \"oauth2\"\ntoken_url = \"{}\"\nclient_id = \"{SANDBOX_CLIENT_ID}\"\ngraph_url = \"{}\"\n",
                info.token_url, info.graph_url
            ),
        };
        format!(
            "[agent]\nupload_interval_minutes = 1440\n\n[nhsmail]\nusername = \"{username}\"\nsmtp_host = \"127.0.0.1\"\n\
             smtp_port = {smtp}\nsmtp_security = \"starttls\"\nimap_host = \"127.0.0.1\"\nimap_port = {imap}\n\
             imap_security = \"tls\"\nca_file = \"{ca}\"\nnetwork_timeout_seconds = 20\n{auth}\n\
             [sending]\nrate_per_minute = 600\n{extra}\n{NO_IDLE}",
            username = info.username,
            smtp = info.smtp_port,
            imap = info.imap_port,
            ca = info.ca_file.display(),
        )
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        control_request(&self.info().control_url, "GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        control_request(&self.info().control_url, "POST", path, Some(body)).await
    }

    /// Returns every text the gateway accepted, as `GET /sent` lists them.
    pub async fn sent(&self) -> Vec<serde_json::Value> {
        self.get("/sent").await["texts"].as_array().cloned().unwrap_or_default()
    }

    /// Returns the failed sign-ins counted for `protocol` (smtp, imap, token or graph).
    pub async fn failed_sign_ins(&self, protocol: &str) -> u64 {
        self.get("/counters").await["sign_ins"][protocol]["failed"].as_u64().unwrap_or(0)
    }

    /// Returns the failed sign-ins over every protocol.
    pub async fn all_failed_sign_ins(&self) -> u64 {
        let counters = self.get("/counters").await;
        let sign_ins = counters["sign_ins"].as_object().cloned().unwrap_or_default();
        sign_ins.values().map(|counts| counts["failed"].as_u64().unwrap_or(0)).sum()
    }

    /// Returns how many grants of `grant_type` (password or refresh_token) the token endpoint issued.
    pub async fn token_grants(&self, grant_type: &str) -> u64 {
        self.get("/counters").await["token_grants"][grant_type].as_u64().unwrap_or(0)
    }
}

/// Sends one JSON request to the sandbox's control API and returns the JSON response, or null for an empty body.
async fn control_request(base: &str, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
    let authority = base.strip_prefix("http://").expect("the control URL is plain http");
    let stream = tokio::net::TcpStream::connect(authority).await.expect("the control API accepts connections");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);

    let bytes = body.map(|body| serde_json::to_vec(&body).unwrap()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(bytes)))
        .unwrap();
    let response = sender.send_request(request).await.expect("the control API responds");
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(status.is_success(), "{method} {path} returned {status}: {}", String::from_utf8_lossy(&body));
    if body.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&body).unwrap() }
}

/// How long a test waits for a text to reach a state.
pub const SEND_LIMIT: Duration = Duration::from_secs(60);

pub async fn set_password(
    clients: &mut Clients,
    password: &str,
    skip_verification: bool,
) -> proto::UpdatePasswordResponse {
    let request =
        proto::UpdatePasswordRequest { password: password.into(), confirmation: password.into(), skip_verification };
    clients.connectivity.update_password(request).await.expect("UpdatePassword succeeds").into_inner()
}

pub async fn message(clients: &mut Clients, id: &str) -> proto::Message {
    let request = proto::GetMessageRequest { id: id.into() };
    clients.messages.get_message(request).await.expect("GetMessage succeeds").into_inner()
}

pub async fn wait_for_status(clients: &mut Clients, id: &str, wanted: proto::MessageStatus) -> proto::Message {
    wait_for(SEND_LIMIT, &format!("message {id} to become {wanted:?}"), || {
        let mut clients = clients.clone();
        let id = id.to_string();
        async move {
            let found = message(&mut clients, &id).await;
            (found.status() == wanted).then_some(found)
        }
    })
    .await
}

/// Runs upload cycles until the message reaches `wanted`, for outcomes that arrive by IMAP.
pub async fn upload_until_status(clients: &mut Clients, id: &str, wanted: proto::MessageStatus) -> proto::Message {
    for _ in 0..60 {
        clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.expect("TriggerUpload succeeds");
        let found = message(clients, id).await;
        if found.status() == wanted {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("message {id} did not become {wanted:?}; it is {:?}", message(clients, id).await.status());
}
