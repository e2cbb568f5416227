//! Harness for end-to-end tests against the NHSmail sandbox: starts an in-process `nhsmail-sandbox`, starts the
//! built agent configured for it in password mode, stores the sandbox's password through UpdatePassword, and calls
//! the sandbox's control API over HTTP/1.1 on loopback.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nhsmail_agent::proto::{self, MessageStatus};
use nhsmail_sandbox::{Sandbox, SandboxInfo, SandboxOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{AgentProcess, Clients, NO_IDLE, submit, wait_for};

/// Bound on each wait for the agent or the sandbox to reach a state.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// Timeout of one control API request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the sandbox's gateway waits before each receipt, report or reply, kept short so the tests stay quick.
const RECEIPT_DELAY: Duration = Duration::from_millis(300);

/// Builds an agent config for `info`: password sign-in, SMTP with STARTTLS, IMAP with implicit TLS, the sandbox's CA.
///
/// The upload cycle runs only on TriggerUpload (its interval is a day, and IMAP IDLE is off), and a transient SMTP
/// failure is retried after 1 s rather than 30 s.
pub fn agent_config(info: &SandboxInfo) -> String {
    agent_config_with_mailbox(info, NO_IDLE)
}

/// Builds an agent config for `info` as [`agent_config`] does, with `mailbox` as its `[mailbox]` section.
pub fn agent_config_with_mailbox(info: &SandboxInfo, mailbox: &str) -> String {
    format!(
        "[agent]\nupload_interval_minutes = 1440\n\n\
         [nhsmail]\nusername = \"{username}\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {smtp}\n\
         smtp_security = \"starttls\"\nimap_host = \"127.0.0.1\"\nimap_port = {imap}\nimap_security = \"tls\"\n\
         ca_file = \"{ca}\"\nnetwork_timeout_seconds = 10\n\n\
         [sending]\nrate_per_minute = 600\nretry_base_seconds = 1\n\n{mailbox}",
        username = info.username,
        smtp = info.smtp_port,
        imap = info.imap_port,
        ca = info.ca_file.display(),
    )
}

/// A sandbox and an agent signed in to it with the sandbox's password.
pub struct SandboxAgent {
    pub agent: AgentProcess,
    pub clients: Clients,
    pub control: Control,
    pub sandbox: Sandbox,
    _data_dir: tempfile::TempDir,
}

impl SandboxAgent {
    /// Starts a sandbox on the current runtime and an agent for it, then stores and verifies the password.
    pub async fn start() -> SandboxAgent {
        Self::start_with_mailbox(NO_IDLE).await
    }

    /// Starts a sandbox and an agent as [`SandboxAgent::start`] does, with `mailbox` as the config's `[mailbox]`
    /// section.
    pub async fn start_with_mailbox(mailbox: &str) -> SandboxAgent {
        let options = SandboxOptions { receipt_delay: RECEIPT_DELAY, ..Default::default() };
        let sandbox = Sandbox::start(options).await.expect("the sandbox starts");
        let control = Control::new(&sandbox.info().control_url);

        let data_dir = tempfile::tempdir().unwrap();
        let agent = AgentProcess::start(data_dir.path(), &agent_config_with_mailbox(sandbox.info(), mailbox));
        let mut clients = agent.clients().await;
        let password = sandbox.info().password.clone();
        let request = proto::UpdatePasswordRequest {
            password: password.clone(),
            confirmation: password,
            skip_verification: false,
        };
        let response = clients.connectivity.update_password(request).await.expect("UpdatePassword succeeds");
        assert!(response.into_inner().verified, "the sandbox accepted its own password");

        SandboxAgent { agent, clients, control, sandbox, _data_dir: data_dir }
    }

    /// Stops the agent with SIGTERM and starts it again on the same data directory, with `mailbox` as the
    /// config's `[mailbox]` section. The stored password is kept.
    pub async fn restart_with_mailbox(&mut self, mailbox: &str) {
        self.agent.stop();
        let config = agent_config_with_mailbox(self.sandbox.info(), mailbox);
        self.agent = AgentProcess::start(self._data_dir.path(), &config);
        self.clients = self.agent.clients().await;
    }

    /// Submits one text and returns the agent's message id.
    pub async fn submit(&self, to: &str, text: &str) -> String {
        let mut clients = self.clients.clone();
        let response = clients.messages.submit_message(submit(to, text)).await.expect("SubmitMessage succeeds");
        response.into_inner().message.expect("a submission returns its message").id
    }

    pub async fn message(&self, id: &str) -> proto::Message {
        let mut clients = self.clients.clone();
        let request = proto::GetMessageRequest { id: id.into() };
        clients.messages.get_message(request).await.expect("GetMessage succeeds").into_inner()
    }

    pub async fn status(&self) -> proto::Status {
        let mut clients = self.clients.clone();
        clients.agent.get_status(proto::GetStatusRequest {}).await.expect("GetStatus succeeds").into_inner()
    }

    /// Runs one upload cycle and returns its report.
    pub async fn upload(&self) -> proto::UploadReport {
        let mut clients = self.clients.clone();
        clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.expect("TriggerUpload succeeds").into_inner()
    }

    /// Lists the replies the agent attached to the message `id`.
    pub async fn replies_to(&self, id: &str) -> Vec<proto::Reply> {
        let mut clients = self.clients.clone();
        let request = proto::ListRepliesRequest { message_id: id.into(), ..Default::default() };
        clients.messages.list_replies(request).await.expect("ListReplies succeeds").into_inner().replies
    }

    /// Waits until the message `id` is in `wanted`.
    pub async fn wait_for_status(&self, id: &str, wanted: MessageStatus) -> proto::Message {
        wait_for(WAIT_LIMIT, &format!("message {id} to become {wanted:?}"), || async move {
            let message = self.message(id).await;
            (message.status() == wanted).then_some(message)
        })
        .await
    }

    /// Waits until the message `id` has left `queued` and `sending` and returns it, whatever its state.
    pub async fn wait_until_settled(&self, id: &str) -> proto::Message {
        wait_for(WAIT_LIMIT, &format!("message {id} to leave the queue"), || async move {
            let message = self.message(id).await;
            let waiting = matches!(message.status(), MessageStatus::Queued | MessageStatus::Sending);
            (!waiting).then_some(message)
        })
        .await
    }

    /// Runs `nhsmail-ctl` against the agent with `input` on its standard input.
    pub fn ctl_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nhsmail-ctl"))
            .arg("--agent")
            .arg(self.agent.url())
            .arg("--token-file")
            .arg(self.agent.data_dir.join("admin.token"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nhsmail-ctl runs");
        child.stdin.take().expect("stdin is piped").write_all(input.as_bytes()).expect("stdin accepts the input");
        child.wait_with_output().expect("nhsmail-ctl exits")
    }
}

/// The sandbox's control API: one HTTP/1.1 request per connection, on loopback only.
#[derive(Debug, Clone)]
pub struct Control {
    address: SocketAddr,
}

impl Control {
    /// Takes the sandbox's `control_url`, such as `http://127.0.0.1:40219`.
    pub fn new(control_url: &str) -> Control {
        let authority = control_url.strip_prefix("http://").expect("the control API is plain HTTP");
        let address: SocketAddr = authority.trim_end_matches('/').parse().expect("control_url has an IP and port");
        assert!(address.ip().is_loopback(), "the control API must be on loopback, not {address}");
        Control { address }
    }

    pub async fn get(&self, path: &str) -> Value {
        self.request("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.request("POST", path, Some(body)).await
    }

    /// Fetches every text the gateway accepted, as `GET /sent` lists them.
    pub async fn sent_texts(&self) -> Vec<Value> {
        let sent = self.get("/sent").await;
        sent["texts"].as_array().expect("/sent lists texts").clone()
    }

    /// Fetches the texts the gateway accepted for `number` in the form it was addressed to, such as `07700900123`.
    pub async fn texts_to(&self, number: &str) -> Vec<Value> {
        self.sent_texts().await.into_iter().filter(|text| text["number"] == number).collect()
    }

    /// Fetches the texts the gateway accepted with this Message-ID, given with or without angle brackets.
    pub async fn texts_with_message_id(&self, message_id: &str) -> Vec<Value> {
        let wanted = message_id.trim_matches(['<', '>']);
        self.sent_texts()
            .await
            .into_iter()
            .filter(|text| text["message_id"].as_str().unwrap_or_default().trim_matches(['<', '>']) == wanted)
            .collect()
    }

    /// Arms a fault, for example `{"kind": "smtp_4xx", "stage": "rcpt"}`.
    pub async fn arm_fault(&self, fault: Value) {
        self.post("/faults", fault).await;
    }

    pub async fn counters(&self) -> Value {
        self.get("/counters").await
    }

    /// Reads how many times a fault of `kind` has fired.
    pub async fn faults_fired(&self, kind: &str) -> u64 {
        self.counters().await["faults_fired"][kind].as_u64().unwrap_or(0)
    }

    /// Sums the failed sign-ins over every protocol.
    pub async fn failed_sign_ins(&self) -> u64 {
        let counters = self.counters().await;
        let by_protocol = counters["sign_ins"].as_object().expect("counters list sign-ins by protocol");
        by_protocol.values().map(|counts| counts["failed"].as_u64().unwrap_or(0)).sum()
    }

    /// Waits until the gateway has put `count` emails of `outcome` (`delivered`, `replied`, ...) in the inbox.
    pub async fn wait_for_gateway(&self, outcome: &str, count: u64) {
        wait_for(WAIT_LIMIT, &format!("{count} {outcome} emails from the gateway"), || async move {
            let done = self.counters().await["messages"][outcome].as_u64().unwrap_or(0) >= count;
            done.then_some(())
        })
        .await
    }

    /// Sets the account's password as an administrator would, behind the agent's back.
    pub async fn change_password(&self, password: &str) {
        self.post("/account/password", json!({ "password": password })).await;
    }

    /// Gives INBOX the next UIDVALIDITY and returns it.
    pub async fn change_uidvalidity(&self) -> u64 {
        let changed = self.post("/uidvalidity", json!({})).await;
        changed["uidvalidity"].as_u64().expect("/uidvalidity returns the new value")
    }

    /// Sends one request and returns the JSON body, or `Value::Null` for an empty one. Panics on a status other
    /// than 2xx, naming the route and the sandbox's error.
    async fn request(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
            address = self.address,
            length = body.len(),
        );
        let exchange = async {
            let mut stream = TcpStream::connect(self.address).await?;
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(HTTP_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {path} timed out after {HTTP_TIMEOUT:?}"))
            .unwrap_or_else(|error| panic!("{method} {path} failed: {error}"));

        let (status, content) = parse_response(&response);
        assert!(
            (200..300).contains(&status),
            "{method} {path} returned {status}: {}",
            String::from_utf8_lossy(&content)
        );
        if content.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&content)
            .unwrap_or_else(|error| panic!("{method} {path} returned invalid JSON: {error}"))
    }
}

/// Splits an HTTP/1.1 response read to its end into the status code and the body, undoing chunked encoding.
fn parse_response(response: &[u8]) -> (u16, Vec<u8>) {
    let split = response.windows(4).position(|window| window == b"\r\n\r\n").expect("the response has a header");
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let body = &response[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("invalid status line in {head:?}"));
    if !head.contains("transfer-encoding: chunked") {
        return (status, body.to_vec());
    }

    let mut decoded = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|window| window == b"\r\n").expect("a chunk size line");
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16)
            .unwrap_or_else(|_| panic!("invalid chunk size {size_text:?}"));
        if size == 0 {
            return (status, decoded);
        }
        let start = line_end + 2;
        decoded.extend_from_slice(&rest[start..start + size]);
        rest = &rest[start + size + 2..];
    }
}
