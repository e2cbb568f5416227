//! Runs the built nhsmail-ctl binary: against nothing for usage and connection errors, and against an in-test tonic
//! server on 127.0.0.1 with fixed responses for output formats, the bearer token, warnings and exit codes.
//!
//! The server implements only the agent's gRPC services, with no queue or mailbox behind them. Tests of nhsmail-ctl
//! against the real agent are separate.

use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nhsmail_agent::proto::agent_service_server::{AgentService, AgentServiceServer};
use nhsmail_agent::proto::connectivity_service_server::{ConnectivityService, ConnectivityServiceServer};
use nhsmail_agent::proto::message_service_server::{MessageService, MessageServiceServer};
use nhsmail_agent::proto::{
    CancelMessageRequest, Connectivity, Encoding, GetConnectivityRequest, GetMessageRequest, GetStatusRequest,
    ListMessagesRequest, ListMessagesResponse, ListRepliesRequest, ListRepliesResponse, Message, MessageEvent,
    MessageStatus, PasswordState, Priority, QueueCount, Reply, Status as AgentStatus, SubmitMessageRequest,
    SubmitMessageResponse, SubmitMessagesRequest, SubmitMessagesResponse, TriggerUploadRequest,
    UpdateConnectivityRequest, UpdatePasswordRequest, UpdatePasswordResponse, UploadReport, Warning,
};
use prost_types::Timestamp;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

const CTL: &str = env!("CARGO_BIN_EXE_nhsmail-ctl");

/// The admin token the fake agent accepts.
const ADMIN_TOKEN: &str = "test-admin-token-0123";

/// A token the fake agent accepts for reads only, as the agent's viewer role does.
const VIEWER_TOKEN: &str = "test-viewer-token-4567";

/// 2026-12-01T09:30:00Z.
const DEC_1_0930: i64 = 1_796_117_400;

const STATUS_WARNING: &str = "The mailbox password expires in 5 days; set a new one with nhsmail-ctl password set.";
const CONNECTIVITY_WARNING: &str = "Automatic password management is off.";
const MESSAGE_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";
const TEST_PASSWORD: &str = "Invented-Passw0rd-For-Tests";

// The fake agent.

/// Requests the fake agent received, for the tests to inspect.
#[derive(Default)]
struct Received {
    authorization: Vec<String>,
    submitted: Vec<SubmitMessageRequest>,
    list_messages: Vec<ListMessagesRequest>,
    list_replies: Vec<ListRepliesRequest>,
    update_connectivity: Vec<UpdateConnectivityRequest>,
    update_password: Vec<UpdatePasswordRequest>,
}

#[derive(Clone, Default)]
struct FakeAgent {
    received: Arc<Mutex<Received>>,
    /// How long every call waits before it responds.
    delay: Duration,
}

impl FakeAgent {
    /// Records the authorization header and checks it: any call with the admin token, reads with the viewer token.
    async fn authorise<T>(&self, request: &Request<T>, writes: bool) -> Result<(), Status> {
        tokio::time::sleep(self.delay).await;

        let header =
            request.metadata().get("authorization").and_then(|value| value.to_str().ok()).unwrap_or("").to_string();
        self.received.lock().unwrap().authorization.push(header.clone());

        if header == format!("Bearer {ADMIN_TOKEN}") {
            return Ok(());
        }
        if header == format!("Bearer {VIEWER_TOKEN}") {
            return match writes {
                true => Err(Status::permission_denied("the viewer role cannot change settings")),
                false => Ok(()),
            };
        }
        Err(Status::unauthenticated("unknown token"))
    }
}

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn fixed_status() -> AgentStatus {
    AgentStatus {
        version: "0.1.0".into(),
        uptime_seconds: 3_661,
        queue_counts: vec![
            QueueCount { status: MessageStatus::Queued as i32, count: 12 },
            QueueCount { status: MessageStatus::Delivered as i32, count: 340 },
        ],
        warnings: vec![Warning { code: "password_expiring".into(), message: STATUS_WARNING.into() }],
        password_state: PasswordState::Expiring as i32,
        sending_paused: false,
        sending_paused_reason: String::new(),
        last_upload_at: at(DEC_1_0930),
        last_send_at: None,
        oldest_queued_at: at(DEC_1_0930 - 60),
        password_days_until_expiry: Some(5),
        ..AgentStatus::default()
    }
}

fn fixed_connectivity() -> Connectivity {
    Connectivity {
        upload_interval_minutes: 15,
        username: "practice.sms@example.org".into(),
        password_set: true,
        password_set_at: at(DEC_1_0930 - 85 * 86_400),
        password_expires_at: at(DEC_1_0930 + 5 * 86_400),
        days_until_expiry: Some(5),
        auto_manage: false,
        password_state: PasswordState::Expiring as i32,
        max_age_days: 90,
        smtp_server: "127.0.0.1:2587".into(),
        imap_server: "127.0.0.1:2993".into(),
        warnings: vec![Warning { code: "auto_manage_off".into(), message: CONNECTIVITY_WARNING.into() }],
        ..Connectivity::default()
    }
}

fn fixed_message(status: MessageStatus) -> Message {
    Message {
        id: MESSAGE_ID.into(),
        status: status as i32,
        to: "+447700900123".into(),
        gateway_address: "07700900123@sms.nhs.net".into(),
        text: "Your appointment is at 9:30 on Tuesday.".into(),
        priority: Priority::Normal as i32,
        encoding: Encoding::Gsm7 as i32,
        parts: 1,
        length: 39,
        created_at: at(DEC_1_0930),
        ..Message::default()
    }
}

#[tonic::async_trait]
impl AgentService for FakeAgent {
    async fn get_status(&self, request: Request<GetStatusRequest>) -> Result<Response<AgentStatus>, Status> {
        self.authorise(&request, false).await?;
        Ok(Response::new(fixed_status()))
    }

    async fn trigger_upload(&self, request: Request<TriggerUploadRequest>) -> Result<Response<UploadReport>, Status> {
        self.authorise(&request, true).await?;
        Ok(Response::new(UploadReport {
            started_at: at(DEC_1_0930),
            finished_at: at(DEC_1_0930 + 4),
            trigger: "manual".into(),
            mail_collected: 7,
            replies: 2,
            errors: vec!["imap: purge of old receipts failed: mailbox busy".into()],
            ..UploadReport::default()
        }))
    }
}

#[tonic::async_trait]
impl ConnectivityService for FakeAgent {
    async fn get_connectivity(
        &self,
        request: Request<GetConnectivityRequest>,
    ) -> Result<Response<Connectivity>, Status> {
        self.authorise(&request, false).await?;
        Ok(Response::new(fixed_connectivity()))
    }

    async fn update_connectivity(
        &self,
        request: Request<UpdateConnectivityRequest>,
    ) -> Result<Response<Connectivity>, Status> {
        self.authorise(&request, true).await?;
        self.received.lock().unwrap().update_connectivity.push(request.into_inner());
        Ok(Response::new(fixed_connectivity()))
    }

    async fn update_password(
        &self,
        request: Request<UpdatePasswordRequest>,
    ) -> Result<Response<UpdatePasswordResponse>, Status> {
        self.authorise(&request, true).await?;
        let request = request.into_inner();
        let verified = !request.skip_verification;
        self.received.lock().unwrap().update_password.push(request);
        Ok(Response::new(UpdatePasswordResponse { verified, connectivity: Some(fixed_connectivity()) }))
    }

    async fn rotate_password(
        &self,
        request: Request<nhsmail_agent::proto::RotatePasswordRequest>,
    ) -> Result<Response<nhsmail_agent::proto::RotatePasswordResponse>, Status> {
        self.authorise(&request, true).await?;
        Ok(Response::new(nhsmail_agent::proto::RotatePasswordResponse {
            rotated: false,
            outcome: "the change endpoint refused the new password: it was used recently".into(),
            connectivity: Some(fixed_connectivity()),
        }))
    }

    async fn reveal_password(
        &self,
        request: Request<nhsmail_agent::proto::RevealPasswordRequest>,
    ) -> Result<Response<nhsmail_agent::proto::RevealPasswordResponse>, Status> {
        self.authorise(&request, true).await?;
        Ok(Response::new(nhsmail_agent::proto::RevealPasswordResponse {
            password: TEST_PASSWORD.into(),
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl MessageService for FakeAgent {
    type WatchEventsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<nhsmail_agent::proto::Event, Status>> + Send>>;

    async fn watch_events(
        &self,
        _request: Request<nhsmail_agent::proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        Err(Status::unimplemented("the fake agent does not stream events"))
    }

    async fn submit_message(
        &self,
        request: Request<SubmitMessageRequest>,
    ) -> Result<Response<SubmitMessageResponse>, Status> {
        self.authorise(&request, true).await?;
        let request = request.into_inner();
        let landline = request.to.starts_with("01632");
        self.received.lock().unwrap().submitted.push(request);

        if landline {
            return Err(Status::invalid_argument("to: 01632 960000 is a landline, not a UK mobile number"));
        }
        Ok(Response::new(SubmitMessageResponse {
            message: Some(fixed_message(MessageStatus::Queued)),
            duplicate: false,
        }))
    }

    async fn submit_messages(
        &self,
        _request: Request<SubmitMessagesRequest>,
    ) -> Result<Response<SubmitMessagesResponse>, Status> {
        Err(Status::unimplemented("not used by nhsmail-ctl"))
    }

    async fn get_message(&self, request: Request<GetMessageRequest>) -> Result<Response<Message>, Status> {
        self.authorise(&request, false).await?;
        let id = request.into_inner().id;
        if id != MESSAGE_ID {
            return Err(Status::not_found(format!("message {id} not found")));
        }

        let mut message = fixed_message(MessageStatus::Sent);
        message.events = vec![
            MessageEvent {
                at: at(DEC_1_0930),
                from_status: MessageStatus::Unspecified as i32,
                to_status: MessageStatus::Queued as i32,
                reason: "submitted".into(),
            },
            MessageEvent {
                at: at(DEC_1_0930 + 2),
                from_status: MessageStatus::Queued as i32,
                to_status: MessageStatus::Sent as i32,
                reason: "250 2.0.0 OK queued".into(),
            },
        ];
        Ok(Response::new(message))
    }

    async fn list_messages(
        &self,
        request: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        self.authorise(&request, false).await?;
        self.received.lock().unwrap().list_messages.push(request.into_inner());
        Ok(Response::new(ListMessagesResponse {
            messages: vec![fixed_message(MessageStatus::Failed)],
            next_page_token: "page-2".into(),
        }))
    }

    async fn cancel_message(&self, request: Request<CancelMessageRequest>) -> Result<Response<Message>, Status> {
        self.authorise(&request, true).await?;
        if request.into_inner().id != MESSAGE_ID {
            return Err(Status::failed_precondition("message is already sent"));
        }
        Ok(Response::new(fixed_message(MessageStatus::Cancelled)))
    }

    async fn list_replies(
        &self,
        request: Request<ListRepliesRequest>,
    ) -> Result<Response<ListRepliesResponse>, Status> {
        self.authorise(&request, false).await?;
        self.received.lock().unwrap().list_replies.push(request.into_inner());
        Ok(Response::new(ListRepliesResponse {
            replies: vec![Reply {
                id: "reply-1".into(),
                from: "+447700900123".into(),
                text: "Yes I will come\u{1b}[2J\nThanks".into(),
                received_at: at(DEC_1_0930 + 600),
                message_id: MESSAGE_ID.into(),
                email_message_id: "<reply-1@example.org>".into(),
            }],
            next_page_token: String::new(),
        }))
    }
}

// Running the fake agent and the binary.

/// A fake agent listening on 127.0.0.1, and a token file with the admin token.
struct Harness {
    url: String,
    agent: FakeAgent,
    dir: TempDir,
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_with(FakeAgent::default()).await
    }

    async fn start_with(agent: FakeAgent) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());

        let server = tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(agent.clone()))
            .add_service(ConnectivityServiceServer::new(agent.clone()))
            .add_service(MessageServiceServer::new(agent.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener));
        tokio::spawn(server);

        let dir = tempfile::tempdir().unwrap();
        // The trailing newline and spaces check that the token is trimmed.
        std::fs::write(dir.path().join("admin.token"), format!("  {ADMIN_TOKEN}\n")).unwrap();
        Harness { url, agent, dir }
    }

    fn token_file(&self) -> String {
        self.dir.path().join("admin.token").display().to_string()
    }

    /// Runs nhsmail-ctl against this agent with the admin token file.
    async fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_with(args, &[], None).await
    }

    async fn ctl_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let token_file = self.token_file();
        let mut full_args = vec!["--agent", &self.url, "--token-file", &token_file];
        full_args.extend_from_slice(args);
        run_ctl(&full_args, env, stdin).await
    }

    fn received(&self) -> std::sync::MutexGuard<'_, Received> {
        self.agent.received.lock().unwrap()
    }
}

/// Runs the binary with a clean environment for its own variables, UTC as the local time zone, and `stdin` piped in
/// (an empty pipe when `None`, so stdin is never a terminal).
async fn run_ctl(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut command = tokio::process::Command::new(CTL);
    command
        .args(args)
        .env_remove("NHSMAIL_AGENT")
        .env_remove("NHSMAIL_TOKEN")
        .env_remove("NHSMAIL_TOKEN_FILE")
        .env("NHSMAIL_DATA_DIR", "/nonexistent/nhsmail-ctl-test")
        .env("TZ", "UTC")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let mut child = command.spawn().expect("nhsmail-ctl starts");
    let mut pipe = child.stdin.take().unwrap();
    // nhsmail-ctl may exit before it reads stdin (for example when it refuses to prompt), which closes the pipe.
    match pipe.write_all(stdin.unwrap_or("").as_bytes()).await {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => panic!("cannot write stdin: {error}"),
        _ => {}
    }
    drop(pipe);

    let run = child.wait_with_output();
    tokio::time::timeout(Duration::from_secs(30), run).await.expect("nhsmail-ctl finishes").unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {}", stdout(output)))
}

fn exit_code(output: &Output) -> i32 {
    output.status.code().expect("nhsmail-ctl exits with a code")
}

// Without an agent.

#[tokio::test]
async fn help_lists_exit_codes() {
    let output = run_ctl(&["--help"], &[], None).await;
    let help = stdout(&output);

    assert_eq!(exit_code(&output), 0);
    assert!(help.contains("Exit codes:"), "{help}");
    for line in ["0  success", "1  the agent answered", "2  usage error", "3  cannot reach", "4  authentication"] {
        assert!(help.contains(line), "missing {line:?} in {help}");
    }
}

#[tokio::test]
async fn help_documents_json_names() {
    let help = stdout(&run_ctl(&["--help"], &[], None).await);
    assert!(help.contains("proto field names"), "{help}");
    assert!(help.contains("\"queued\""), "{help}");
    assert!(help.contains("RFC 3339"), "{help}");
}

#[tokio::test]
async fn missing_token_file_exits_four() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.token").display().to_string();

    let output = run_ctl(&["--token-file", &path, "status"], &[], None).await;
    let message = stderr(&output);

    assert_eq!(exit_code(&output), 4, "{message}");
    assert!(message.contains(&format!("cannot read the token file {path}")), "{message}");
    assert!(message.contains("--token-file"), "{message}");
    assert!(message.contains("NHSMAIL_TOKEN"), "{message}");
}

#[tokio::test]
async fn default_token_path_named_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();

    let output = run_ctl(&["status"], &[("NHSMAIL_DATA_DIR", &data_dir)], None).await;
    let message = stderr(&output);

    assert_eq!(exit_code(&output), 4, "{message}");
    assert!(message.contains(&format!("{data_dir}/admin.token")), "{message}");
}

#[tokio::test]
async fn unreachable_agent_exits_three() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let output = run_ctl(&["--agent", &url, "status"], &[("NHSMAIL_TOKEN", ADMIN_TOKEN)], None).await;
    let message = stderr(&output);

    assert_eq!(exit_code(&output), 3, "{message}");
    assert!(message.starts_with(&format!("error: cannot reach the agent at {url}: connection refused")), "{message}");
    assert!(message.contains("is nhsmail-agent running?"), "{message}");
}

#[tokio::test]
async fn zero_upload_interval_exits_two() {
    let output = run_ctl(&["connectivity", "set", "--upload-interval", "0"], &[], None).await;
    let message = stderr(&output);

    assert_eq!(exit_code(&output), 2, "{message}");
    assert!(message.contains("--upload-interval"), "{message}");
    assert!(message.contains("1 to 1440"), "{message}");
}

#[tokio::test]
async fn invalid_send_time_exits_two() {
    let args = ["send", "--to", "07700900123", "--text", "hi", "--expires-at", "next week"];
    let output = run_ctl(&args, &[], None).await;
    let message = stderr(&output);

    assert_eq!(exit_code(&output), 2, "{message}");
    assert!(message.contains("--expires-at"), "{message}");
    assert!(message.contains("RFC 3339"), "{message}");
}

// Against the fake agent: status and warnings.

#[tokio::test]
async fn status_table_shows_state() {
    let harness = Harness::start().await;

    let output = harness.ctl(&["status"]).await;
    let table = stdout(&output);

    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(table.contains("Version        0.1.0\n"), "{table}");
    assert!(table.contains("Uptime         1h 1m 1s\n"), "{table}");
    assert!(table.contains("Password       expiring\n"), "{table}");
    assert!(table.contains("Sending        running\n"), "{table}");
    assert!(table.contains("Last upload    2026-12-01 09:30:00\n"), "{table}");
    assert!(table.contains("Last send      never\n"), "{table}");
    assert!(table.contains("queued     12\n"), "{table}");
    assert!(table.contains("delivered  340\n"), "{table}");
}

#[tokio::test]
async fn status_json_uses_proto_names() {
    let harness = Harness::start().await;

    let output = harness.ctl(&["status", "--output", "json"]).await;
    let status = json(&output);

    assert_eq!(status["version"], "0.1.0");
    assert_eq!(status["uptime_seconds"], 3_661);
    assert_eq!(status["password_state"], "expiring");
    assert_eq!(status["sending_paused"], false);
    assert_eq!(status["queue_counts"][0]["status"], "queued");
    assert_eq!(status["queue_counts"][0]["count"], 12);
    assert_eq!(status["last_upload_at"], "2026-12-01T09:30:00Z");
    assert_eq!(status["last_send_at"], Value::Null);
    assert_eq!(status["warnings"][0]["code"], "password_expiring");
}

#[tokio::test]
async fn warnings_go_to_stderr() {
    let harness = Harness::start().await;

    let output = harness.ctl(&["status", "--output", "json"]).await;

    assert_eq!(stderr(&output), format!("warning: {STATUS_WARNING}\n"));
    assert!(!stdout(&output).contains("warning:"), "{}", stdout(&output));
}

#[tokio::test]
async fn connectivity_warnings_printed() {
    let harness = Harness::start().await;

    let output = harness.ctl(&["connectivity", "show"]).await;

    assert_eq!(stderr(&output), format!("warning: {CONNECTIVITY_WARNING}\n"));
}

#[tokio::test]
async fn send_adds_status_warnings() {
    let harness = Harness::start().await;

    let output = harness.ctl(&["send", "--to", "07700 900123", "--text", "Hello"]).await;

    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert_eq!(stderr(&output), format!("warning: {STATUS_WARNING}\n"));
}

// Against the fake agent: the token.

#[tokio::test]
async fn bearer_token_sent_trimmed() {
    let harness = Harness::start().await;

    harness.ctl(&["status"]).await;

    assert_eq!(harness.received().authorization, vec![format!("Bearer {ADMIN_TOKEN}")]);
}

#[tokio::test]
async fn environment_token_is_sent() {
    let harness = Harness::start().await;
    let args = ["--agent", &harness.url, "status"];

    let output = run_ctl(&args, &[("NHSMAIL_TOKEN", ADMIN_TOKEN)], None).await;

    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert_eq!(harness.received().authorization, vec![format!("Bearer {ADMIN_TOKEN}")]);
}

#[tokio::test]
async fn rejected_token_exits_four() {
    let harness = Harness::start().await;
    let args = ["--agent", &harness.url, "status"];

    let output = run_ctl(&args, &[("NHSMAIL_TOKEN", "wrong-token")], None).await;
    let message = stderr(&output);

    assert_eq!(exit_code(&output), 4, "{message}");
    assert!(
        message.starts_with("error: unauthenticated: the agent rejected the token; check --token-file"),
        "{message}"
    );
    assert!(message.contains("caused by: agent message: unknown token"), "{message}");
    assert!(!message.contains("wrong-token"), "{message}");
}

#[tokio::test]
async fn viewer_token_cannot_change_settings() {
    let harness = Harness::start().await;
    let args = ["--agent", &harness.url, "connectivity", "set", "--upload-interval", "30"];

    let output = run_ctl(&args, &[("NHSMAIL_TOKEN", VIEWER_TOKEN)], None).await;
    let message = stderr(&output);

    assert_eq!(exit_code(&output), 4, "{message}");
    assert!(message.starts_with("error: permission denied:"), "{message}");
}

// Against the fake agent: connectivity and password.

#[tokio::test]
async fn connectivity_show_json_fields() {
    let harness = Harness::start().await;

    let connectivity = json(&harness.ctl(&["connectivity", "show", "--output", "json"]).await);

    assert_eq!(connectivity["username"], "practice.sms@example.org");
    assert_eq!(connectivity["upload_interval_minutes"], 15);
    assert_eq!(connectivity["days_until_expiry"], 5);
    assert_eq!(connectivity["password_state"], "expiring");
    assert_eq!(connectivity["password_expires_at"], "2026-12-06T09:30:00Z");
    assert_eq!(connectivity["last_successful_login"], Value::Null);
}

#[tokio::test]
async fn connectivity_set_sends_given_fields() {
    let harness = Harness::start().await;

    let output = harness.ctl(&["connectivity", "set", "--auto-manage", "off"]).await;

    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    let received = harness.received();
    let update = &received.update_connectivity[0];
    assert_eq!(update.auto_manage, Some(false));
    assert_eq!(update.upload_interval_minutes, None);
    assert_eq!(update.username, None);
}

#[tokio::test]
async fn password_stdin_sent_not_printed() {
    let harness = Harness::start().await;

    let output =
        harness.ctl_with(&["password", "set", "--password-stdin"], &[], Some(&format!("{TEST_PASSWORD}\r\n"))).await;

    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(!stdout(&output).contains(TEST_PASSWORD));
    assert!(!stderr(&output).contains(TEST_PASSWORD));
    assert!(stdout(&output).contains("Password stored after an SMTP and an IMAP sign-in"), "{}", stdout(&output));

    let received = harness.received();
    let update = &received.update_password[0];
    assert_eq!(update.password, TEST_PASSWORD);
    assert_eq!(update.confirmation, TEST_PASSWORD);
    assert!(!update.skip_verification);
}

#[tokio::test]
async fn reveal_refuses_non_terminal() {
    let harness = Harness::start().await;

    let output = harness.ctl_with(&["password", "reveal"], &[], None).await;

    assert_eq!(exit_code(&output), 2, "{}", stderr(&output));
    assert!(stderr(&output).contains("--force"), "{}", stderr(&output));
    assert!(!stdout(&output).contains(TEST_PASSWORD));
}

#[tokio::test]
async fn reveal_with_force_prints_password() {
    let harness = Harness::start().await;

    let output = harness.ctl_with(&["password", "reveal", "--force"], &[], None).await;

    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), TEST_PASSWORD);
}

#[tokio::test]
async fn failed_rotation_exits_one_with_outcome() {
    let harness = Harness::start().await;

    let output = harness.ctl_with(&["password", "rotate"], &[], None).await;

    assert_eq!(exit_code(&output), 1);
    assert!(stderr(&output).contains("it was used recently"), "{}", stderr(&output));
}

#[tokio::test]
async fn password_skip_verification_is_sent() {
    let harness = Harness::start().await;
    let args = ["password", "set", "--password-stdin", "--skip-verification", "--output", "json"];

    let output = harness.ctl_with(&args, &[], Some(TEST_PASSWORD)).await;

    assert_eq!(json(&output)["verified"], false);
    assert!(harness.received().update_password[0].skip_verification);
}

#[tokio::test]
async fn password_prompt_needs_terminal() {
    let harness = Harness::start().await;

    let output = harness.ctl_with(&["password", "set"], &[], Some(TEST_PASSWORD)).await;
    let message = stderr(&output);

    assert_eq!(exit_code(&output), 2, "{message}");
    assert!(message.contains("--password-stdin"), "{message}");
    assert!(harness.received().update_password.is_empty());
}

#[tokio::test]
async fn empty_password_stdin_exits_two() {
    let harness = Harness::start().await;

    let output = harness.ctl_with(&["password", "set", "--password-stdin"], &[], Some("\n")).await;

    assert_eq!(exit_code(&output), 2, "{}", stderr(&output));
    assert!(harness.received().update_password.is_empty());
}

// Against the fake agent: upload, texts and replies.

#[tokio::test]
async fn upload_report_lists_errors() {
    let harness = Harness::start().await;

    let output = harness.ctl(&["upload", "trigger"]).await;
    let table = stdout(&output);

    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(table.contains("Trigger             manual\n"), "{table}");
    assert!(table.contains("Mail collected      7\n"), "{table}");
    assert!(table.contains("Errors              imap: purge of old receipts failed"), "{table}");
}

#[tokio::test]
async fn send_json_reports_parts() {
    let harness = Harness::start().await;

    let output = harness.ctl(&["send", "--to", "07700 900123", "--text", "Hello", "--output", "json"]).await;
    let response = json(&output);

    assert_eq!(response["duplicate"], false);
    assert_eq!(response["message"]["id"], MESSAGE_ID);
    assert_eq!(response["message"]["status"], "queued");
    assert_eq!(response["message"]["to"], "+447700900123");
    assert_eq!(response["message"]["encoding"], "gsm7");
    assert_eq!(response["message"]["parts"], 1);
}

#[tokio::test]
async fn send_table_shows_number() {
    let harness = Harness::start().await;

    let output = harness.ctl(&["send", "--to", "07700 900123", "--text", "Hello"]).await;
    let table = stdout(&output);

    assert!(table.contains(&format!("ID        {MESSAGE_ID}\n")), "{table}");
    assert!(table.contains("To        +447700900123\n"), "{table}");
    assert!(table.contains("Encoding  gsm7\n"), "{table}");
    assert!(table.contains("Parts     1\n"), "{table}");
}

#[tokio::test]
async fn send_passes_every_option() {
    let harness = Harness::start().await;
    let args = [
        "send",
        "--to",
        "07700 900123",
        "--text",
        "Hello",
        "--priority",
        "urgent",
        "--send-after",
        "2026-12-01T10:30:00+01:00",
        "--expires-at",
        "2026-12-02T09:30:00Z",
        "--idempotency-key",
        "recall-42",
        "--reference",
        "EMIS-7",
    ];

    let output = harness.ctl(&args).await;

    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    let received = harness.received();
    let request = &received.submitted[0];
    assert_eq!(request.to, "07700 900123");
    assert_eq!(request.priority, Priority::Urgent as i32);
    assert_eq!(request.send_after, at(DEC_1_0930));
    assert_eq!(request.expires_at, at(DEC_1_0930 + 86_400));
    assert_eq!(request.idempotency_key, "recall-42");
    assert_eq!(request.client_reference, "EMIS-7");
}

#[tokio::test]
async fn send_reads_text_from_stdin() {
    let harness = Harness::start().await;
    let text = "Your appointment is at 9:30.\nReply STOP to opt out.\n\n";

    let output = harness.ctl_with(&["send", "--to", "07700900123", "--text", "-"], &[], Some(text)).await;

    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert_eq!(harness.received().submitted[0].text, "Your appointment is at 9:30.\nReply STOP to opt out.");
}

#[tokio::test]
async fn invalid_argument_keeps_agent_message() {
    let harness = Harness::start().await;

    let output = harness.ctl(&["send", "--to", "01632 960000", "--text", "Hello"]).await;

    assert_eq!(exit_code(&output), 1);
    assert_eq!(stderr(&output), "error: to: 01632 960000 is a landline, not a UK mobile number\n");
    assert_eq!(stdout(&output), "");
}

#[tokio::test]
async fn unknown_message_exits_one() {
    let harness = Harness::start().await;

    let output = harness.ctl(&["messages", "show", "no-such-id"]).await;

    assert_eq!(exit_code(&output), 1);
    assert_eq!(stderr(&output), "error: not found: message no-such-id not found\n");
}

#[tokio::test]
async fn message_show_lists_history() {
    let harness = Harness::start().await;

    let output = harness.ctl(&["messages", "show", MESSAGE_ID]).await;
    let table = stdout(&output);

    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(table.contains("Gateway address  07700900123@sms.nhs.net\n"), "{table}");
    assert!(table.contains("\nHistory\nTIME                 FROM    TO      REASON\n"), "{table}");
    assert!(table.contains("2026-12-01 09:30:00  new     queued  submitted\n"), "{table}");
    assert!(table.contains("2026-12-01 09:30:02  queued  sent    250 2.0.0 OK queued\n"), "{table}");
}

#[tokio::test]
async fn message_show_json_has_events() {
    let harness = Harness::start().await;

    let message = json(&harness.ctl(&["messages", "show", MESSAGE_ID, "--output", "json"]).await);

    assert_eq!(message["status"], "sent");
    assert_eq!(message["events"][1]["from_status"], "queued");
    assert_eq!(message["events"][1]["to_status"], "sent");
    assert_eq!(message["events"][1]["at"], "2026-12-01T09:30:02Z");
}

#[tokio::test]
async fn cancel_after_sending_exits_one() {
    let harness = Harness::start().await;

    let output = harness.ctl(&["messages", "cancel", "already-sent"]).await;

    assert_eq!(exit_code(&output), 1);
    assert_eq!(stderr(&output), "error: failed precondition: message is already sent\n");
}

#[tokio::test]
async fn messages_list_passes_filters() {
    let harness = Harness::start().await;
    let args = ["messages", "list", "--status", "failed", "--limit", "5", "--page-token", "page-1"];

    let output = harness.ctl(&args).await;
    let table = stdout(&output);

    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(table.starts_with("CREATED              ID"), "{table}");
    assert!(table.contains("More messages: add --page-token page-2"), "{table}");

    let received = harness.received();
    let request = &received.list_messages[0];
    assert_eq!(request.status, MessageStatus::Failed as i32);
    assert_eq!(request.page_size, 5);
    assert_eq!(request.page_token, "page-1");
}

#[tokio::test]
async fn replies_table_strips_control_characters() {
    let harness = Harness::start().await;

    let output = harness.ctl(&["replies", "list", "--from", "07700900123", "--since", "2026-12-01T00:00:00Z"]).await;
    let table = stdout(&output);

    assert_eq!(exit_code(&output), 0, "{}", stderr(&output));
    assert!(!table.contains('\u{1b}'), "{table:?}");
    assert!(table.contains("Yes I will come\u{FFFD}[2J Thanks"), "{table}");

    let received = harness.received();
    let request = &received.list_replies[0];
    assert_eq!(request.from, "07700900123");
    assert_eq!(request.since, at(DEC_1_0930 - 9 * 3_600 - 30 * 60));
}

#[tokio::test]
async fn replies_json_keeps_text() {
    let harness = Harness::start().await;

    let replies = json(&harness.ctl(&["replies", "list", "--output", "json"]).await);

    assert_eq!(replies["replies"][0]["text"], "Yes I will come\u{1b}[2J\nThanks");
    assert_eq!(replies["replies"][0]["message_id"], MESSAGE_ID);
    assert_eq!(replies["next_page_token"], "");
}

// Against the fake agent: deadlines.

#[tokio::test]
async fn slow_agent_times_out() {
    let slow = FakeAgent { delay: Duration::from_secs(5), ..FakeAgent::default() };
    let harness = Harness::start_with(slow).await;

    let output = harness.ctl(&["--timeout", "1", "status"]).await;
    let message = stderr(&output);

    assert_eq!(exit_code(&output), 3, "{message}");
    assert!(message.starts_with(&format!("error: timed out after 1 second waiting for the agent at {}", harness.url)));
}
