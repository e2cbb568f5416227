//! Shared harness for the end-to-end tests: starts the built `nhsmail-agent` binary, connects gRPC clients with its
//! admin token, runs `nhsmail-ctl`, and reads the real-server stack's settings from `servers.env`.
#![allow(dead_code)]

pub mod sandbox;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nhsmail_agent::proto;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

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

    /// An agent config for this stack: SMTP submission with STARTTLS, IMAP with implicit TLS.
    pub fn agent_config(&self, extra: &str) -> String {
        format!(
            "[agent]\nupload_interval_minutes = 1440\n\n[nhsmail]\nusername = \"{username}\"\nsmtp_host = \"127.0.0.1\"\n\
             smtp_port = {smtp}\nsmtp_security = \"starttls\"\nimap_host = \"127.0.0.1\"\nimap_port = {imap}\n\
             imap_security = \"tls\"\nca_file = \"{ca}\"\nnetwork_timeout_seconds = 20\n\n[sending]\nrate_per_minute = 600\n{extra}",
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

    /// Every email the SMS gateway mailbox holds.
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
}

/// A running `nhsmail-agent` process with its own data directory.
pub struct AgentProcess {
    child: Child,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub address: String,
    log_path: PathBuf,
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
        let log_path = data_dir.join("agent.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();

        let mut child = Command::new(env!("CARGO_BIN_EXE_nhsmail-agent"))
            .arg("--config")
            .arg(&config_path)
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
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("listening on ") {
                    let _ = sender.send(address.to_string());
                }
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
        AgentProcess { child, data_dir: data_dir.to_path_buf(), config_path, address, log_path }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
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
            agent: proto::agent_service_client::AgentServiceClient::with_interceptor(channel, interceptor),
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

/// A short random tag that makes a test's texts unique in the shared gateway mailbox.
pub fn unique_tag() -> String {
    uuid::Uuid::now_v7().simple().to_string()[20..].to_string()
}
