//! End-to-end scenarios against the NHSmail sandbox, started in-process per test, with the built agent binary. Each
//! scenario of `real_servers.rs` runs twice: with password sign-in (`password::*`) and with OAuth 2.0 access tokens
//! (`oauth2::*`). The sandbox's control API shows what reached the gateway and counts the sign-ins.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use chrono::TimeDelta;
use nhsmail_agent::proto::{self, MessageStatus, PasswordState};
use nhsmail_sandbox::Policy;
use serde_json::json;
use support::{
    AgentProcess, AuthMode, Clients, SEND_LIMIT, TestSandbox, message, set_password, submit, unique_tag,
    upload_until_status, wait_for, wait_for_status,
};

/// A password the sandbox never issued; invented for the tests.
const WRONG_PASSWORD: &str = "Invented-Wrong-Passw0rd-123";
/// The password the tests set behind the agent's back, as an administrator would.
const CHANGED_PASSWORD: &str = "Invented-Changed-Passw0rd-456";

/// A sandbox, an agent configured for it in `mode`, and gRPC clients. The temporary directory lives as long as this.
struct Setup {
    sandbox: TestSandbox,
    agent: AgentProcess,
    clients: Clients,
    config: String,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start(mode: AuthMode) -> Setup {
        Self::start_with(mode, TestSandbox::start().await).await
    }

    async fn start_with(mode: AuthMode, sandbox: TestSandbox) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = sandbox.agent_config(mode, "");
        let agent = AgentProcess::start(dir.path(), &config);
        let clients = agent.clients().await;
        Setup { sandbox, agent, clients, config, dir }
    }

    /// Stores the sandbox's current password after the agent checked it with the servers.
    async fn set_sandbox_password(&mut self) {
        let password = self.sandbox.info().password.clone();
        let response = set_password(&mut self.clients, &password, false).await;
        assert!(response.verified, "the sandbox's password was verified");
    }

    async fn submit(&mut self, to: &str, text: &str) -> String {
        let submitted = self.clients.messages.submit_message(submit(to, text)).await.unwrap().into_inner();
        submitted.message.unwrap().id
    }

    /// Returns the texts the gateway accepted whose text contains `tag`.
    async fn gateway_copies(&self, tag: &str) -> Vec<serde_json::Value> {
        let texts = self.sandbox.sent().await;
        texts.into_iter().filter(|text| text["text"].as_str().unwrap_or_default().contains(tag)).collect()
    }
}

async fn wait_for_password_state(clients: &mut Clients, wanted: PasswordState) -> proto::Connectivity {
    wait_for(SEND_LIMIT, &format!("the password to become {wanted:?}"), || {
        let mut client = clients.connectivity.clone();
        async move {
            let connectivity = client.get_connectivity(proto::GetConnectivityRequest {}).await.unwrap().into_inner();
            (connectivity.password_state() == wanted).then_some(connectivity)
        }
    })
    .await
}

/// Failed sign-ins that used the password itself: SMTP and IMAP in password mode, the token endpoint's password
/// grant in OAuth 2.0 mode. These are the attempts NHSmail counts towards its lockout.
async fn failed_password_sign_ins(sandbox: &TestSandbox, mode: AuthMode) -> u64 {
    match mode {
        AuthMode::Password => sandbox.failed_sign_ins("smtp").await + sandbox.failed_sign_ins("imap").await,
        AuthMode::OAuth2 => sandbox.failed_sign_ins("token").await,
    }
}

/// Runs `nhsmail-ctl password set --password-stdin` against the agent, off the async workers because the agent
/// checks the password with the in-process sandbox meanwhile.
async fn ctl_set_password(agent: &AgentProcess, password: &str) {
    let url = agent.url();
    let token_file = agent.data_dir.join("admin.token");
    let password = password.to_string();
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut ctl = std::process::Command::new(env!("CARGO_BIN_EXE_nhsmail-ctl"))
            .args(["--agent", &url, "--token-file"])
            .arg(token_file)
            .args(["password", "set", "--password-stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(ctl.stdin.take().unwrap(), "{password}").unwrap();
        ctl.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "password set failed: {}", String::from_utf8_lossy(&output.stderr));
}

async fn text_reaches_gateway(mode: AuthMode) {
    let mut setup = Setup::start(mode).await;
    setup.set_sandbox_password().await;

    let tag = unique_tag();
    let text = format!("Your appointment is on Monday at 09:30. Reply YES to confirm. £0 charge. Ref {tag}");
    let submitted = setup.clients.messages.submit_message(submit("07700 900123", &text)).await.unwrap().into_inner();
    let queued = submitted.message.unwrap();
    assert_eq!(queued.to, "+447700900123");
    assert_eq!(queued.gateway_address, "07700900123@sms.nhs.net");

    let sent = wait_for_status(&mut setup.clients, &queued.id, MessageStatus::Sent).await;
    let copies = setup.gateway_copies(&tag).await;
    assert_eq!(copies.len(), 1, "the gateway received the text once");
    let copy = &copies[0];
    assert_eq!(copy["address"], "07700900123@sms.nhs.net");
    assert_eq!(copy["text"].as_str().unwrap(), text);
    assert_eq!(copy["message_id"].as_str().unwrap().trim_matches(['<', '>']), sent.smtp_message_id);
    assert_eq!(copy["count"], 1);
}

async fn failure_number_ends_failed(mode: AuthMode) {
    let mut setup = Setup::start(mode).await;
    setup.set_sandbox_password().await;

    let id = setup.submit("07700900900", &format!("Please call the surgery. Ref {}", unique_tag())).await;
    wait_for_status(&mut setup.clients, &id, MessageStatus::Sent).await;

    let failed = upload_until_status(&mut setup.clients, &id, MessageStatus::Failed).await;
    assert!(failed.status_reason.contains("5.1.1"), "reason names the DSN status: {}", failed.status_reason);
    assert!(failed.status_reason.contains("not recognised"), "reason has the diagnostic: {}", failed.status_reason);
    assert_eq!(failed.events.last().unwrap().to_status(), MessageStatus::Failed);
}

async fn receipt_number_ends_delivered(mode: AuthMode) {
    let mut setup = Setup::start(mode).await;
    setup.set_sandbox_password().await;

    let id = setup.submit("+447700900125", &format!("Your results are ready. Ref {}", unique_tag())).await;
    wait_for_status(&mut setup.clients, &id, MessageStatus::Sent).await;

    let delivered = upload_until_status(&mut setup.clients, &id, MessageStatus::Delivered).await;
    assert_eq!(delivered.events.last().unwrap().to_status(), MessageStatus::Delivered);
}

async fn reply_attaches_to_message(mode: AuthMode) {
    let mut setup = Setup::start(mode).await;
    setup.set_sandbox_password().await;

    let id = setup.submit("07700900940", "Flu clinic on Saturday. Can you come?").await;
    wait_for_status(&mut setup.clients, &id, MessageStatus::Sent).await;

    let replies = wait_for(SEND_LIMIT, "the patient's reply", || {
        let mut clients = setup.clients.clone();
        let id = id.clone();
        async move {
            clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap();
            let request = proto::ListRepliesRequest { message_id: id, ..Default::default() };
            let replies = clients.messages.list_replies(request).await.unwrap().into_inner().replies;
            (!replies.is_empty()).then_some(replies)
        }
    })
    .await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].from, "+447700900940");
    assert_eq!(replies[0].text, "Yes, thank you");
    assert_eq!(replies[0].message_id, id);
}

async fn wrong_password_pauses_until_corrected(mode: AuthMode) {
    let mut setup = Setup::start(mode).await;
    set_password(&mut setup.clients, WRONG_PASSWORD, true).await;

    let tag = unique_tag();
    let mut ids = Vec::new();
    for number in ["07700900131", "07700900132", "07700900133"] {
        ids.push(setup.submit(number, &format!("Reminder {tag}")).await);
    }
    let connectivity = wait_for_password_state(&mut setup.clients, PasswordState::Rejected).await;
    assert!(connectivity.sending_paused);
    assert!(connectivity.warnings.iter().any(|warning| warning.code == "password_rejected"));

    // A cycle and some idle time must not cause a second attempt with the rejected password.
    setup.clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(setup.sandbox.all_failed_sign_ins().await, 1, "exactly one failed sign-in");
    assert_eq!(failed_password_sign_ins(&setup.sandbox, mode).await, 1, "the failure was the password's");
    for id in &ids {
        assert_eq!(message(&mut setup.clients, id).await.status(), MessageStatus::Queued, "message {id} waits");
    }
    assert!(setup.gateway_copies(&tag).await.is_empty(), "nothing reached the gateway");

    let password = setup.sandbox.info().password.clone();
    ctl_set_password(&setup.agent, &password).await;
    for id in &ids {
        wait_for_status(&mut setup.clients, id, MessageStatus::Sent).await;
    }
    let copies = setup.gateway_copies(&tag).await;
    assert_eq!(copies.len(), 3, "each waiting text went out");
    assert!(copies.iter().all(|copy| copy["count"] == 1), "each once: {copies:?}");
}

async fn killed_agent_loses_and_repeats_nothing(mode: AuthMode) {
    let mut setup = Setup::start(mode).await;
    setup.set_sandbox_password().await;

    let tag = unique_tag();
    let count = 40;
    let batch = proto::SubmitMessagesRequest {
        messages: (0..count)
            .map(|index| submit(&format!("07700900{:03}", 200 + index), &format!("Recall {tag} #{index:02}")))
            .collect(),
    };
    let response = setup.clients.messages.submit_messages(batch).await.unwrap().into_inner();
    let ids: Vec<String> = response.results.into_iter().map(|result| result.message.unwrap().id).collect();
    assert_eq!(ids.len(), count);

    // 600 a minute is one every 100 ms, so after a second some are sent and most still wait.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before_kill =
        setup.clients.agent.get_status(proto::GetStatusRequest {}).await.unwrap().into_inner().queue_counts;
    eprintln!("queue when the agent was killed: {before_kill:?}");
    setup.agent.kill();
    let agent = AgentProcess::start(setup.dir.path(), &setup.config);
    let clients = agent.clients().await;

    let statuses = wait_for(SEND_LIMIT, "every message to leave the queue", || {
        let mut clients = clients.clone();
        let ids = ids.clone();
        async move {
            let mut statuses = HashMap::new();
            for id in &ids {
                let status = message(&mut clients, id).await.status();
                if matches!(status, MessageStatus::Queued | MessageStatus::Sending) {
                    return None;
                }
                statuses.insert(id.clone(), status);
            }
            Some(statuses)
        }
    })
    .await;

    let copies = setup.gateway_copies(&tag).await;
    for (index, id) in ids.iter().enumerate() {
        let marker = format!("Recall {tag} #{index:02}");
        let received = copies.iter().filter(|copy| copy["text"].as_str().unwrap_or_default() == marker).count();
        match statuses[id] {
            MessageStatus::Sent => assert_eq!(received, 1, "{marker} was sent once"),
            MessageStatus::Uncertain => {
                assert!(received <= 1, "{marker} is uncertain and reached the gateway {received} times")
            }
            other => panic!("{marker} ended {other:?}"),
        }
    }
}

async fn password_changed_behind_agent(mode: AuthMode) {
    let mut setup = Setup::start(mode).await;
    setup.set_sandbox_password().await;
    let first = setup.submit("07700900141", &format!("Before the change {}", unique_tag())).await;
    wait_for_status(&mut setup.clients, &first, MessageStatus::Sent).await;
    let failed_before = failed_password_sign_ins(&setup.sandbox, mode).await;

    setup.sandbox.post("/account/password", json!({ "password": CHANGED_PASSWORD })).await;
    setup.clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap();
    let connectivity = wait_for_password_state(&mut setup.clients, PasswordState::Rejected).await;
    assert!(connectivity.sending_paused);

    let tag = unique_tag();
    let waiting = setup.submit("07700900142", &format!("After the change {tag}")).await;
    setup.clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failed_after = failed_password_sign_ins(&setup.sandbox, mode).await;
    assert_eq!(failed_after - failed_before, 1, "exactly one failed sign-in with the old password");
    let account = setup.sandbox.get("/account").await;
    assert_eq!(account["failed_sign_ins"], 1, "one failure counts towards the lockout");
    assert_eq!(message(&mut setup.clients, &waiting).await.status(), MessageStatus::Queued);
    assert!(setup.gateway_copies(&tag).await.is_empty(), "nothing was sent after the change");

    let status = setup.agent.ctl(&["status"]);
    assert!(status.status.success(), "status failed: {}", String::from_utf8_lossy(&status.stderr));
    let warnings = String::from_utf8_lossy(&status.stderr);
    assert!(warnings.contains("warning: NHSmail rejected the stored password"), "ctl status stderr: {warnings}");
}

/// Defines one test per scenario and auth mode, in modules `password` and `oauth2`.
macro_rules! in_both_modes {
    ($($scenario:ident),* $(,)?) => {
        mod password {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::$scenario(super::AuthMode::Password).await;
                }
            )*
        }
        mod oauth2 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::$scenario(super::AuthMode::OAuth2).await;
                }
            )*
        }
    };
}

in_both_modes!(
    text_reaches_gateway,
    failure_number_ends_failed,
    receipt_number_ends_delivered,
    reply_attaches_to_message,
    wrong_password_pauses_until_corrected,
    killed_agent_loses_and_repeats_nothing,
    password_changed_behind_agent,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_expiry_keeps_texts_flowing() {
    let policy = Policy { token_lifetime: TimeDelta::seconds(3), ..Policy::default() };
    let mut setup = Setup::start_with(AuthMode::OAuth2, TestSandbox::start_with_policy(policy).await).await;
    setup.set_sandbox_password().await;

    // Eight texts over about seven seconds, so access tokens expire twice while texts flow.
    let tag = unique_tag();
    let mut ids = Vec::new();
    for index in 0..8 {
        let id = setup.submit(&format!("07700900{:03}", 300 + index), &format!("Flowing {tag} #{index}")).await;
        wait_for_status(&mut setup.clients, &id, MessageStatus::Sent).await;
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(900)).await;
    }

    assert!(setup.sandbox.token_grants("refresh_token").await >= 1, "tokens were renewed with the refresh grant");
    assert_eq!(setup.sandbox.token_grants("password").await, 1, "the password was sent once, to verify it");
    assert_eq!(setup.sandbox.all_failed_sign_ins().await, 0, "no sign-in used an expired token");
    assert_eq!(setup.gateway_copies(&tag).await.len(), ids.len());
    let connectivity =
        setup.clients.connectivity.get_connectivity(proto::GetConnectivityRequest {}).await.unwrap().into_inner();
    assert_eq!(connectivity.password_state(), PasswordState::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejected_token_is_refreshed_once() {
    let mut setup = Setup::start(AuthMode::OAuth2).await;
    setup.set_sandbox_password().await;

    // Two hours on the sandbox's clock expire the token the agent still holds as valid for an hour.
    setup.sandbox.post("/clock", json!({ "offset_secs": 7200 })).await;
    let id = setup.submit("07700900151", &format!("After the clock moved {}", unique_tag())).await;

    wait_for_status(&mut setup.clients, &id, MessageStatus::Sent).await;
    assert_eq!(setup.sandbox.failed_sign_ins("smtp").await, 1, "the expired token was rejected once");
    assert_eq!(setup.sandbox.token_grants("refresh_token").await, 1, "one refresh grant replaced it");
    assert_eq!(setup.sandbox.token_grants("password").await, 1, "the password was not needed again");
    assert_eq!(setup.sandbox.failed_sign_ins("token").await, 0);
    let connectivity =
        setup.clients.connectivity.get_connectivity(proto::GetConnectivityRequest {}).await.unwrap().into_inner();
    assert_eq!(connectivity.password_state(), PasswordState::Ok);
}

/// Replaces the leading `nhsmail-ctl` of a printed command with the built binary and runs it through `sh`.
/// Runs a printed command line exactly as a person would paste it into a shell.
fn run_printed_command(line: &str) -> std::process::Output {
    let program = line.split_whitespace().next().unwrap_or_default();
    assert!(program.ends_with("nhsmail-ctl"), "the line starts with nhsmail-ctl: {line}");
    std::process::Command::new("sh").arg("-c").arg(line).output().unwrap()
}

/// Waits until the agent printed a line starting with `prefix` and returns the rest of it.
async fn printed_line(agent: &AgentProcess, prefix: &str) -> String {
    wait_for(SEND_LIMIT, &format!("a line starting with {prefix:?}"), || {
        let found = agent.stdout_lines().iter().find_map(|line| line.strip_prefix(prefix).map(str::to_string));
        async move { found }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sandbox_mode_delivers_printed_command() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo");
    let mut agent = AgentProcess::start_sandbox_mode(&data_dir);

    let send = printed_line(&agent, "send a text: ").await;
    let token = printed_line(&agent, "admin token: ").await;
    assert_eq!(token, data_dir.join("admin.token").display().to_string());
    assert!(agent.stdout_lines()[0].starts_with("listening on "), "{:?}", agent.stdout_lines());
    assert!(printed_line(&agent, "sandbox: ").await.contains("control API http://127.0.0.1:"));
    assert!(printed_line(&agent, "sandbox numbers: ").await.contains("07700 900900-900919 failed"));

    let output = tokio::task::spawn_blocking(move || run_printed_command(&send)).await.unwrap();
    assert!(output.status.success(), "send failed: {}", String::from_utf8_lossy(&output.stderr));
    let mut clients = agent.clients().await;
    let listed = clients.messages.list_messages(proto::ListMessagesRequest::default()).await.unwrap().into_inner();
    let id = listed.messages[0].id.clone();
    wait_for_status(&mut clients, &id, MessageStatus::Delivered).await;

    // A restart finds the account and the mailbox as the agent left them: no new password is needed.
    agent.kill();
    let agent = AgentProcess::start_sandbox_mode(&data_dir);
    printed_line(&agent, "send a text: ").await;
    let mut clients = agent.clients().await;
    let after_restart = clients.messages.submit_message(submit("07700900126", "After a restart")).await.unwrap();
    let id = after_restart.into_inner().message.unwrap().id;
    wait_for_status(&mut clients, &id, MessageStatus::Delivered).await;
    let connectivity =
        clients.connectivity.get_connectivity(proto::GetConnectivityRequest {}).await.unwrap().into_inner();
    assert_eq!(connectivity.password_state(), PasswordState::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sandbox_mode_shows_examples_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo");
    let mut agent = AgentProcess::start_sandbox_mode(&data_dir);

    let reply = printed_line(&agent, "reply from +447700900941: ").await;
    assert_eq!(reply, "\"Yes, thank you\"");
    let lines = agent.stdout_lines();
    let failed = lines.iter().any(|line| line.contains("to +447700900901: sent -> failed"));
    assert!(failed, "the failure example is printed: {lines:#?}");
    let delivered = lines.iter().any(|line| line.contains("to +447700900123: sent -> delivered"));
    assert!(delivered, "the receipt example is printed: {lines:#?}");

    // The examples are queued on the first start only.
    agent.kill();
    let agent = AgentProcess::start_sandbox_mode(&data_dir);
    printed_line(&agent, "send a text: ").await;
    let mut clients = agent.clients().await;
    let listed = clients.messages.list_messages(proto::ListMessagesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.messages.len(), 3);
}
