//! End-to-end tests of the built agent's gRPC API that need no mail server: authentication, validation,
//! idempotency, cancellation, settings, restarts and secrecy. The SMTP and IMAP settings point at a loopback port
//! with nothing listening, so any send attempt fails as a connection error.

mod support;

use nhsmail_agent::proto::{self, MessageStatus, PasswordState};
use support::{AgentProcess, submit};
use tonic::Code;

/// A loopback port with nothing listening: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn offline_config() -> String {
    let port = closed_port();
    format!(
        "[nhsmail]\nusername = \"practice.sms@example.org\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\n\
         smtp_security = \"plain\"\nimap_host = \"127.0.0.1\"\nimap_port = {port}\nimap_security = \"plain\"\n\
         network_timeout_seconds = 2\n"
    )
}

fn start() -> (tempfile::TempDir, AgentProcess) {
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &offline_config());
    (dir, agent)
}

#[tokio::test]
async fn call_without_token_is_unauthenticated() {
    let (_dir, agent) = start();
    let channel = tonic::transport::Channel::from_shared(agent.url()).unwrap().connect().await.unwrap();
    let mut client = proto::agent_service_client::AgentServiceClient::new(channel);
    let status = client.get_status(proto::GetStatusRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn wrong_token_is_unauthenticated() {
    let (_dir, agent) = start();
    let channel = tonic::transport::Channel::from_shared(agent.url()).unwrap().connect().await.unwrap();
    let mut client =
        proto::agent_service_client::AgentServiceClient::with_interceptor(channel, |mut request: tonic::Request<()>| {
            request.metadata_mut().insert("authorization", "Bearer not-the-token".parse().unwrap());
            Ok(request)
        });
    let status = client.get_status(proto::GetStatusRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn health_needs_no_token() {
    let (_dir, agent) = start();
    let channel = tonic::transport::Channel::from_shared(agent.url()).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest { service: "nhsmail.agent.v1.MessageService".into() };
    let response = health.check(request).await.unwrap().into_inner();
    assert_eq!(response.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
}

#[tokio::test]
async fn landline_is_rejected_and_not_stored() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let status = clients.messages.submit_message(submit("01632 960123", "Hello")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("to"), "names the field: {}", status.message());
    assert!(status.message().contains("01632 960123"), "names the value: {}", status.message());

    let listed = clients.messages.list_messages(proto::ListMessagesRequest::default()).await.unwrap().into_inner();
    assert!(listed.messages.is_empty());
}

#[tokio::test]
async fn invalid_batch_stores_nothing() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let batch = proto::SubmitMessagesRequest {
        messages: vec![submit("07700900001", "First"), submit("12345", "Second"), submit("07700900003", "Third")],
    };
    let status = clients.messages.submit_messages(batch).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("messages[1].to"), "names the index and field: {}", status.message());

    let listed = clients.messages.list_messages(proto::ListMessagesRequest::default()).await.unwrap().into_inner();
    assert!(listed.messages.is_empty());
}

#[tokio::test]
async fn over_long_text_is_rejected() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let status = clients.messages.submit_message(submit("07700900001", &"a".repeat(919))).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("918"), "names the limit: {}", status.message());
}

#[tokio::test]
async fn answer_reports_encoding_and_parts() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let gsm = clients.messages.submit_message(submit("07700900001", &"a".repeat(161))).await.unwrap().into_inner();
    let gsm = gsm.message.unwrap();
    assert_eq!(gsm.encoding(), proto::Encoding::Gsm7);
    assert_eq!(gsm.parts, 2);

    let ucs2 = clients.messages.submit_message(submit("07700900002", "See you soon 🙂")).await.unwrap().into_inner();
    let ucs2 = ucs2.message.unwrap();
    assert_eq!(ucs2.encoding(), proto::Encoding::Ucs2);
    assert_eq!(ucs2.parts, 1);
}

#[tokio::test]
async fn repeated_idempotency_key_returns_first_message() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let mut request = submit("07700900001", "Your results are ready");
    request.idempotency_key = "emis-appointment-4711".into();

    let first = clients.messages.submit_message(request.clone()).await.unwrap().into_inner();
    let second = clients.messages.submit_message(request).await.unwrap().into_inner();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.message.unwrap().id, second.message.unwrap().id);

    let listed = clients.messages.list_messages(proto::ListMessagesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.messages.len(), 1);
}

#[tokio::test]
async fn queued_message_can_be_cancelled_once() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let submitted = clients.messages.submit_message(submit("07700900001", "Clinic moved")).await.unwrap().into_inner();
    let id = submitted.message.unwrap().id;

    let cancelled =
        clients.messages.cancel_message(proto::CancelMessageRequest { id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(cancelled.status(), MessageStatus::Cancelled);
    let again = clients.messages.cancel_message(proto::CancelMessageRequest { id }).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn unknown_message_is_not_found() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let status = clients.messages.get_message(proto::GetMessageRequest { id: "no-such-id".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn list_pages_through_every_message() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let batch = proto::SubmitMessagesRequest {
        messages: (0..25).map(|index| submit(&format!("07700900{index:03}"), "Recall")).collect(),
    };
    clients.messages.submit_messages(batch).await.unwrap();

    let mut seen = std::collections::HashSet::new();
    let mut token = String::new();
    loop {
        let request =
            proto::ListMessagesRequest { status: MessageStatus::Queued as i32, page_size: 10, page_token: token };
        let page = clients.messages.list_messages(request).await.unwrap().into_inner();
        assert!(page.messages.len() <= 10);
        seen.extend(page.messages.into_iter().map(|message| message.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 25);
}

#[tokio::test]
async fn connectivity_starts_without_password() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let connectivity =
        clients.connectivity.get_connectivity(proto::GetConnectivityRequest {}).await.unwrap().into_inner();
    assert_eq!(connectivity.password_state(), PasswordState::Unset);
    assert!(!connectivity.password_set);
    assert_eq!(connectivity.upload_interval_minutes, 15);
    assert_eq!(connectivity.max_age_days, 90);
    assert!(connectivity.auto_manage);
    assert!(connectivity.sending_paused);
    assert!(connectivity.warnings.iter().any(|warning| warning.code == "password_unset"));
}

#[tokio::test]
async fn upload_interval_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config();
    let mut agent = AgentProcess::start(dir.path(), &config);
    let mut clients = agent.clients().await;
    let update = proto::UpdateConnectivityRequest { upload_interval_minutes: Some(30), ..Default::default() };
    clients.connectivity.update_connectivity(update).await.unwrap();
    agent.stop();

    let agent = AgentProcess::start(dir.path(), &config);
    let mut clients = agent.clients().await;
    let connectivity =
        clients.connectivity.get_connectivity(proto::GetConnectivityRequest {}).await.unwrap().into_inner();
    assert_eq!(connectivity.upload_interval_minutes, 30);
}

#[tokio::test]
async fn zero_upload_interval_is_rejected() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let update = proto::UpdateConnectivityRequest { upload_interval_minutes: Some(0), ..Default::default() };
    let status = clients.connectivity.update_connectivity(update).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("upload_interval_minutes"), "{}", status.message());
}

#[tokio::test]
async fn mismatched_confirmation_is_rejected() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let request = proto::UpdatePasswordRequest {
        password: "Invented-Pass-One-2026".into(),
        confirmation: "Invented-Pass-Two-2026".into(),
        skip_verification: true,
    };
    let status = clients.connectivity.update_password(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("confirmation"), "{}", status.message());
    assert!(!status.message().contains("Invented-Pass"), "the password is not echoed: {}", status.message());
}

#[tokio::test]
async fn unreachable_server_fails_verification() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let request = proto::UpdatePasswordRequest {
        password: "Invented-Pass-One-2026".into(),
        confirmation: "Invented-Pass-One-2026".into(),
        skip_verification: false,
    };
    let status = clients.connectivity.update_password(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let connectivity =
        clients.connectivity.get_connectivity(proto::GetConnectivityRequest {}).await.unwrap().into_inner();
    assert!(!connectivity.password_set, "an unverified password is not stored");
}

#[tokio::test]
async fn killed_agent_keeps_queued_messages() {
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config();
    let mut agent = AgentProcess::start(dir.path(), &config);
    let mut clients = agent.clients().await;
    let batch = proto::SubmitMessagesRequest {
        messages: (0..50).map(|index| submit(&format!("07700900{index:03}"), "Recall")).collect(),
    };
    clients.messages.submit_messages(batch).await.unwrap();
    agent.kill();

    let agent = AgentProcess::start(dir.path(), &config);
    let mut clients = agent.clients().await;
    let status = clients.agent.get_status(proto::GetStatusRequest {}).await.unwrap().into_inner();
    let queued =
        status.queue_counts.iter().find(|count| count.status() == MessageStatus::Queued).map_or(0, |count| count.count);
    assert_eq!(queued, 50);
}

#[tokio::test]
async fn password_never_reaches_log_or_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProcess::start_with_env(dir.path(), &offline_config(), &[("RUST_LOG", "trace")]);
    let mut clients = agent.clients().await;
    let password = "Invented-Secret-Marker-7731";
    let request = proto::UpdatePasswordRequest {
        password: password.into(),
        confirmation: password.into(),
        skip_verification: true,
    };
    clients.connectivity.update_password(request).await.unwrap();
    clients.messages.submit_message(submit("07700900001", "Hello")).await.unwrap();
    clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap();
    let token = agent.token();
    agent.stop();

    let log = agent.log();
    assert!(!log.contains(password), "the log holds the password");
    assert!(!log.contains(&token), "the log holds the admin token");
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("agent.db")) {
            let bytes = std::fs::read(&path).unwrap();
            let found = bytes.windows(password.len()).any(|window| window == password.as_bytes());
            assert!(!found, "{} holds the password in clear", path.display());
        }
    }
}

#[test]
fn invalid_config_exits_with_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, "[nhsmail]\nsmtp_host = \"127.0.0.1\"\nimap_host = \"127.0.0.1\"\nsmtp_port = 0\n")
        .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nhsmail-agent"))
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[nhsmail] smtp_port"), "{stderr}");
}

#[test]
fn non_loopback_listen_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, offline_config()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nhsmail-agent"))
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "0.0.0.0:50051"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}

#[test]
fn ctl_send_prints_encoding_and_parts() {
    let (_dir, agent) = start();
    let output =
        agent.ctl(&["--output", "json", "send", "--to", "+44 (0)7700 900123", "--text", "Clinic moved to room 4 {2}"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let sent: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let message = &sent["message"];
    assert_eq!(message["to"], "+447700900123");
    assert_eq!(message["encoding"], "gsm7");
    assert_eq!(message["parts"], 1);
    assert_eq!(message["length"], 28, "braces count as two GSM-7 characters each");
}

#[test]
fn ctl_prints_warnings_on_stderr() {
    let (_dir, agent) = start();
    let output = agent.ctl(&["--output", "json", "messages", "list"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warning: No mailbox password is set"), "{stderr}");
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stdout holds only JSON");
    assert!(listed["messages"].as_array().unwrap().is_empty());
}

#[test]
fn ctl_invalid_number_exits_one() {
    let (_dir, agent) = start();
    let output = agent.ctl(&["send", "--to", "020 7946 0123", "--text", "Hello"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("020 7946 0123"), "names the value: {stderr}");
    assert!(stderr.contains("landline"), "gives the reason: {stderr}");
}

#[test]
fn opted_out_number_is_rejected_until_removed() {
    let (_dir, agent) = start();
    let added = agent.ctl(&["optouts", "add", "07700 900123", "--note", "asked at reception"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));

    let refused = agent.ctl(&["send", "--to", "07700900123", "--text", "Flu clinic on Saturday"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("+447700900123 opted out of texts on"), "{stderr}");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(stderr.contains(&today), "names the opt-out date: {stderr}");

    let listed = agent.ctl(&["--output", "json", "optouts", "list"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["opt_outs"][0]["number"], "+447700900123");
    assert_eq!(listed["opt_outs"][0]["source"], "manual");

    let removed = agent.ctl(&["optouts", "remove", "+447700900123"]);
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    let accepted = agent.ctl(&["send", "--to", "07700900123", "--text", "Flu clinic on Saturday"]);
    assert!(accepted.status.success(), "{}", String::from_utf8_lossy(&accepted.stderr));
}

#[tokio::test]
async fn opted_out_number_fails_batch_with_index() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let add = agent.ctl(&["optouts", "add", "07700900002"]);
    assert!(add.status.success());

    let batch = proto::SubmitMessagesRequest {
        messages: vec![submit("07700900001", "First"), submit("07700900002", "Second")],
    };
    let status = clients.messages.submit_messages(batch).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("messages[1].to"), "{}", status.message());
    let listed = clients.messages.list_messages(proto::ListMessagesRequest::default()).await.unwrap().into_inner();
    assert!(listed.messages.is_empty());
}

async fn next_event(stream: &mut tonic::Streaming<proto::Event>) -> proto::Event {
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message()).await;
    next.expect("an event within 10 s").expect("the stream is healthy").expect("the stream is open")
}

fn state_change(event: &proto::Event) -> &proto::MessageStateChanged {
    match &event.event {
        Some(proto::event::Event::MessageStateChanged(change)) => change,
        other => panic!("expected a state change, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_streams_state_changes_live() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let request = proto::WatchEventsRequest { after_event_id: None };
    let mut stream = clients.messages.watch_events(request).await.unwrap().into_inner();

    let mut request = submit("07700900001", "Clinic moved");
    request.client_reference = "emis-42".into();
    let id = clients.messages.submit_message(request).await.unwrap().into_inner().message.unwrap().id;
    clients.messages.cancel_message(proto::CancelMessageRequest { id: id.clone() }).await.unwrap();

    let submitted = next_event(&mut stream).await;
    let change = state_change(&submitted);
    assert_eq!(change.message_id, id);
    assert_eq!(change.to_status(), MessageStatus::Queued);
    assert_eq!(change.client_reference, "emis-42");
    let cancelled = next_event(&mut stream).await;
    assert_eq!(state_change(&cancelled).to_status(), MessageStatus::Cancelled);
    assert!(cancelled.event_id > submitted.event_id);
}

#[tokio::test]
async fn watch_resumes_after_event_id() {
    let (_dir, agent) = start();
    let mut clients = agent.clients().await;
    let id = clients
        .messages
        .submit_message(submit("07700900001", "Clinic moved"))
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap()
        .id;
    clients.messages.cancel_message(proto::CancelMessageRequest { id }).await.unwrap();

    let replay = proto::WatchEventsRequest { after_event_id: Some(0) };
    let mut stream = clients.messages.watch_events(replay).await.unwrap().into_inner();
    let first = next_event(&mut stream).await;
    assert_eq!(state_change(&first).to_status(), MessageStatus::Queued);
    drop(stream);

    let resume = proto::WatchEventsRequest { after_event_id: Some(first.event_id) };
    let mut stream = clients.messages.watch_events(resume).await.unwrap().into_inner();
    let next = next_event(&mut stream).await;
    assert_eq!(state_change(&next).to_status(), MessageStatus::Cancelled, "the first event is not sent again");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_retries_queue_one_message() {
    let (_dir, agent) = start();
    let clients = agent.clients().await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut messages = clients.messages.clone();
        tasks.push(tokio::spawn(async move {
            let mut request = submit("07700900410", "Your flu jab is due");
            request.idempotency_key = "race-key".into();
            messages.submit_message(request).await.unwrap().into_inner()
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().message.unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every retry returns the first message: {ids:?}");
}

#[tokio::test]
async fn seven_part_gsm_text_is_rejected() {
    let (_dir, agent) = start();
    let mut messages = agent.clients().await.messages;
    // 918 septets, but a € (two septets) is never split across parts, so this text needs seven parts.
    let text = format!("{}{}", format!("{}€", "a".repeat(152)).repeat(5), "a".repeat(148));

    let status = messages.submit_message(submit("07700900411", &text)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("7 SMS parts"), "{}", status.message());
}

#[tokio::test]
async fn seven_part_emoji_text_is_rejected() {
    let (_dir, agent) = start();
    let mut messages = agent.clients().await.messages;
    // 402 UTF-16 units is the UCS-2 maximum, but no surrogate pair is split, so 201 emoji need seven parts.
    let status = messages.submit_message(submit("07700900412", &"😀".repeat(201))).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn invisible_only_text_is_rejected() {
    let (_dir, agent) = start();
    let mut messages = agent.clients().await.messages;
    let status = messages.submit_message(submit("07700900413", "\u{200B}\u{FEFF}")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn huge_unknown_id_is_not_found() {
    let (_dir, agent) = start();
    let mut messages = agent.clients().await.messages;
    let status = messages.cancel_message(proto::CancelMessageRequest { id: "a".repeat(100_000) }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    assert!(status.message().len() < 200, "the id is shortened in the message");
}

#[tokio::test]
async fn page_token_error_names_field_once() {
    let (_dir, agent) = start();
    let mut messages = agent.clients().await.messages;
    let request = proto::ListMessagesRequest { page_token: "abc".into(), ..Default::default() };
    let status = messages.list_messages(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let mentions = status.message().matches("page token").count() + status.message().matches("page_token").count();
    assert_eq!(mentions, 1, "{}", status.message());
}

#[test]
fn mismatched_key_file_starts_without_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config();
    let mut agent = AgentProcess::start(dir.path(), &config);
    let password = "Invented-Pass-One-2026";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nhsmail-ctl"))
        .args(["--agent", &agent.url(), "--token-file"])
        .arg(dir.path().join("admin.token"))
        .args(["password", "set", "--password-stdin", "--skip-verification"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    assert!(child.wait().unwrap().success());
    agent.stop();

    // A key restored from the wrong backup no longer opens the stored password.
    std::fs::write(dir.path().join("credential.key"), [7u8; 32]).unwrap();
    let agent = AgentProcess::start(dir.path(), &config);
    let status = agent.ctl(&["--output", "json", "connectivity", "show"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let connectivity: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(connectivity["password_state"], "unset");
    assert!(agent.log().contains("starting without a usable password"));
}

/// Starts the agent with its standard error on `/dev/full`, where every write fails with "no space left on device",
/// as a log on a full disk or a closed pipe would. Returns the process and its gRPC address.
fn start_with_unwritable_log(data_dir: &std::path::Path) -> (std::process::Child, String) {
    let config_path = data_dir.join("agent.toml");
    std::fs::write(&config_path, offline_config()).unwrap();
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full opens");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nhsmail-agent"))
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(full)
        .spawn()
        .expect("the agent binary starts");
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let line = std::io::BufRead::lines(stdout).next().expect("the agent prints a line").unwrap();
    let address = line.strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, address.to_string())
}

#[tokio::test]
async fn unwritable_log_keeps_api_working() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = start_with_unwritable_log(dir.path());
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", token.trim()).parse().unwrap();
    let mut messages = proto::message_service_client::MessageServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request.metadata_mut().insert("authorization", bearer.clone());
            Ok(request)
        },
    );

    // Every call writes a log line, so each of these would fail if a failed log write broke the call.
    let mut failures = Vec::new();
    for round in 0..5 {
        let submitted = messages
            .submit_messages(proto::SubmitMessagesRequest {
                messages: (0..10)
                    .map(|index| submit("07700900123", &format!("Clinic reminder {round}-{index}")))
                    .collect(),
            })
            .await;
        if let Err(status) = submitted {
            failures.push(format!("SubmitMessages: {status:?}"));
        }
        let listed = messages
            .list_messages(proto::ListMessagesRequest { status: 0, page_size: 10, page_token: String::new() })
            .await;
        if let Err(status) = listed {
            failures.push(format!("ListMessages: {status:?}"));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(failures.is_empty(), "calls failed while the log could not be written: {failures:?}");
}
