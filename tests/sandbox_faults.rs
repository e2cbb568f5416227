//! Faults injected through the sandbox's control API, and the gateway's number ranges, against the built agent.
//! Each test starts its own sandbox in process and its own agent, so the tests run in parallel. Upload cycles run
//! on TriggerUpload. Waits poll with a bound, and no assertion depends on how fast the machine runs.

mod support;

use std::time::Duration;

use nhsmail_agent::proto::{self, MessageStatus, PasswordState};
use serde_json::json;
use support::sandbox::SandboxAgent;

/// Idle time after which a second send or sign-in would have happened if the agent were going to make one.
const QUIET_PERIOD: Duration = Duration::from_secs(2);

/// Events of `message` that moved it into `status`.
fn transitions_to(message: &proto::Message, status: MessageStatus) -> Vec<&proto::MessageEvent> {
    message.events.iter().filter(|event| event.to_status() == status).collect()
}

fn millis(timestamp: &prost_types::Timestamp) -> i64 {
    timestamp.seconds * 1000 + i64::from(timestamp.nanos) / 1_000_000
}

#[tokio::test(flavor = "multi_thread")]
async fn rcpt_4xx_retries_then_sends_once() {
    let harness = SandboxAgent::start().await;
    harness.control.arm_fault(json!({ "kind": "smtp_4xx", "stage": "rcpt" })).await;

    let id = harness.submit("07700900123", "Your appointment is on Monday at 09:30.").await;
    let sent = harness.wait_for_status(&id, MessageStatus::Sent).await;

    assert_eq!(harness.control.faults_fired("smtp_4xx").await, 1, "the 451 was sent to the agent");
    assert_eq!(sent.attempts, 2, "one failed attempt, then one that succeeded");
    let retries: Vec<_> = sent
        .events
        .iter()
        .filter(|event| event.from_status() == MessageStatus::Sending && event.to_status() == MessageStatus::Queued)
        .collect();
    assert_eq!(retries.len(), 1, "one retry: {:?}", sent.events);
    assert!(retries[0].reason.contains("451 4.3.2"), "the retry names the server's reply: {}", retries[0].reason);

    // The second claim may not come before the 1 s backoff of `retry_base_seconds = 1` has passed.
    let claims = transitions_to(&sent, MessageStatus::Sending);
    assert_eq!(claims.len(), 2, "{:?}", sent.events);
    let retry_at = millis(retries[0].at.as_ref().unwrap());
    let second_claim_at = millis(claims[1].at.as_ref().unwrap());
    assert!(second_claim_at - retry_at >= 1000, "retried {} ms after the 451", second_claim_at - retry_at);

    assert_eq!(harness.control.texts_with_message_id(&sent.smtp_message_id).await.len(), 1);
    assert_eq!(harness.control.texts_to("07700900123").await.len(), 1, "the gateway accepted one text");
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_at_data_retries_and_sends_once() {
    let harness = SandboxAgent::start().await;
    harness.control.arm_fault(json!({ "kind": "smtp_drop_at_data" })).await;

    // The connection closes in place of the 354 reply, before any message data is written, so the agent knows the
    // text was not accepted and sends it again after the backoff.
    let id = harness.submit("07700900127", "Your prescription is ready.").await;
    let sent = harness.wait_for_status(&id, MessageStatus::Sent).await;

    assert_eq!(harness.control.faults_fired("smtp_drop_at_data").await, 1, "the connection was dropped");
    assert_eq!(sent.attempts, 2, "one retry");
    assert_eq!(harness.control.texts_to("07700900127").await.len(), 1, "the gateway has exactly one copy");
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_before_dot_ends_uncertain() {
    let harness = SandboxAgent::start().await;
    harness.control.arm_fault(json!({ "kind": "smtp_drop_before_dot" })).await;

    // The sandbox closes the connection after the first line of the message data. The agent has by then written
    // the data and the final "." (lettre writes both before it reads the reply), so the lost reply looks the same
    // as one lost after the dot, and the agent must not risk a second SMS by retrying.
    let id = harness.submit("07700900124", "Please call the surgery.").await;
    let settled = harness.wait_until_settled(&id).await;
    assert_eq!(settled.status(), MessageStatus::Uncertain, "ended {:?}: {}", settled.status(), settled.status_reason);

    harness.upload().await;
    tokio::time::sleep(QUIET_PERIOD).await;

    let later = harness.message(&id).await;
    assert_eq!(harness.control.faults_fired("smtp_drop_before_dot").await, 1, "the connection was dropped");
    assert_eq!(later.status(), MessageStatus::Uncertain, "still uncertain: {}", later.status_reason);
    assert_eq!(later.attempts, 1, "never attempted again");
    assert!(harness.control.texts_to("07700900124").await.is_empty(), "the gateway accepted nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_after_dot_ends_uncertain() {
    let harness = SandboxAgent::start().await;
    harness.control.arm_fault(json!({ "kind": "smtp_drop_after_dot" })).await;

    // 900980 to 900999 get no receipt, so no report can move the message on from `uncertain`.
    let id = harness.submit("07700900980", "Your test results are ready.").await;
    let settled = harness.wait_until_settled(&id).await;
    assert_eq!(settled.status(), MessageStatus::Uncertain, "ended {:?}: {}", settled.status(), settled.status_reason);

    harness.upload().await;
    tokio::time::sleep(QUIET_PERIOD).await;

    let later = harness.message(&id).await;
    assert_eq!(harness.control.faults_fired("smtp_drop_after_dot").await, 1, "the connection was dropped");
    assert_eq!(later.status(), MessageStatus::Uncertain, "still uncertain: {}", later.status_reason);
    assert_eq!(later.attempts, 1, "never attempted again");
    assert_eq!(harness.control.texts_to("07700900980").await.len(), 1, "the gateway has exactly one copy");
}

#[tokio::test(flavor = "multi_thread")]
async fn rcpt_5xx_fails_with_reply() {
    let harness = SandboxAgent::start().await;
    harness.control.arm_fault(json!({ "kind": "smtp_5xx", "stage": "rcpt" })).await;

    let id = harness.submit("07700900125", "Flu clinic on Saturday.").await;
    let settled = harness.wait_until_settled(&id).await;

    assert_eq!(settled.status(), MessageStatus::Failed, "ended {:?}: {}", settled.status(), settled.status_reason);
    assert!(settled.status_reason.contains("554 5.3.0"), "the reason names the reply: {}", settled.status_reason);
    assert_eq!(settled.attempts, 1, "a permanent refusal is not retried");
    assert!(harness.control.texts_to("07700900125").await.is_empty(), "the gateway accepted nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_drop_loses_and_repeats_nothing() {
    let harness = SandboxAgent::start().await;
    let numbers = ["07700900131", "07700900132", "07700900945"];
    let mut ids = Vec::new();
    for number in numbers {
        ids.push(harness.submit(number, "Your prescription is ready to collect.").await);
    }
    for id in &ids {
        harness.wait_for_status(id, MessageStatus::Sent).await;
    }
    harness.control.wait_for_gateway("delivered", 3).await;
    harness.control.wait_for_gateway("replied", 1).await;

    harness.control.arm_fault(json!({ "kind": "imap_drop_mid_fetch" })).await;
    let dropped = harness.upload().await;
    assert_eq!(harness.control.faults_fired("imap_drop_mid_fetch").await, 1, "the FETCH was cut off");
    assert!(!dropped.errors.is_empty(), "the cycle reports the dropped connection: {dropped:?}");

    let recovered = harness.upload().await;
    assert!(recovered.errors.is_empty(), "the next cycle succeeds: {:?}", recovered.errors);
    assert_eq!(recovered.delivery_receipts, 3, "{recovered:?}");
    assert_eq!(recovered.replies, 1, "{recovered:?}");

    let again = harness.upload().await;
    assert_eq!(again.mail_collected, 0, "a third cycle finds nothing new: {again:?}");
    for id in &ids {
        let message = harness.message(id).await;
        assert_eq!(message.status(), MessageStatus::Delivered, "message {id}");
        assert_eq!(transitions_to(&message, MessageStatus::Delivered).len(), 1, "one receipt for {id}");
    }
    assert_eq!(harness.replies_to(&ids[2]).await.len(), 1, "the reply is recorded once");
}

#[tokio::test(flavor = "multi_thread")]
async fn uidvalidity_change_processes_new_mail_once() {
    let harness = SandboxAgent::start().await;
    let before = harness.submit("07700900141", "Your flu jab is due.").await;
    let replied = harness.submit("07700900946", "Can you come on Tuesday?").await;
    harness.wait_for_status(&before, MessageStatus::Sent).await;
    harness.wait_for_status(&replied, MessageStatus::Sent).await;
    harness.control.wait_for_gateway("delivered", 2).await;
    harness.control.wait_for_gateway("replied", 1).await;
    let first = harness.upload().await;
    assert_eq!(first.matched, 3, "two receipts and a reply matched: {first:?}");

    harness.control.change_uidvalidity().await;
    let after = harness.submit("07700900142", "The surgery is closed on Friday.").await;
    harness.wait_for_status(&after, MessageStatus::Sent).await;
    harness.control.wait_for_gateway("delivered", 3).await;
    let second = harness.upload().await;

    assert!(second.errors.is_empty(), "{:?}", second.errors);
    assert_eq!(second.matched, 1, "only the new receipt is recorded: {second:?}");
    assert_eq!(second.mail_collected, 1, "only the new receipt counts as new mail: {second:?}");
    for id in [&before, &replied, &after] {
        let message = harness.message(id).await;
        assert_eq!(message.status(), MessageStatus::Delivered, "message {id}");
        assert_eq!(transitions_to(&message, MessageStatus::Delivered).len(), 1, "one receipt for {id}");
    }
    assert_eq!(harness.replies_to(&replied).await.len(), 1, "the reply is recorded once");
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_password_pauses_until_corrected() {
    let harness = SandboxAgent::start().await;
    assert_eq!(harness.control.failed_sign_ins().await, 0);
    let new_password = "Changed-Behind-The-Agent-2026";
    harness.control.change_password(new_password).await;

    let numbers = ["07700900151", "07700900152", "07700900153"];
    let mut ids = Vec::new();
    for number in numbers {
        ids.push(harness.submit(number, "Your blood test results are normal.").await);
    }
    support::wait_for(support::sandbox::WAIT_LIMIT, "sending to pause", || async {
        harness.status().await.sending_paused.then_some(())
    })
    .await;

    // Neither an upload cycle nor idle time may sign in again with the rejected password.
    harness.upload().await;
    tokio::time::sleep(QUIET_PERIOD).await;
    assert_eq!(harness.control.failed_sign_ins().await, 1, "exactly one failed sign-in");
    let status = harness.status().await;
    assert!(status.sending_paused, "the gate is closed");
    assert_eq!(status.password_state(), PasswordState::Rejected);
    for id in &ids {
        assert_eq!(harness.message(id).await.status(), MessageStatus::Queued, "message {id} waits");
    }

    let shown = harness.agent.ctl(&["status"]);
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(shown.status.success(), "nhsmail-ctl status failed: {stderr}");
    assert!(stderr.contains("warning: NHSmail rejected the stored password"), "stderr: {stderr}");

    let set = harness.ctl_with_stdin(&["password", "set", "--password-stdin"], &format!("{new_password}\n"));
    assert!(set.status.success(), "password set failed: {}", String::from_utf8_lossy(&set.stderr));
    for id in &ids {
        harness.wait_for_status(id, MessageStatus::Sent).await;
    }
    for number in numbers {
        assert_eq!(harness.control.texts_to(number).await.len(), 1, "{number} got one text");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn receipt_number_reaches_delivered() {
    let harness = SandboxAgent::start().await;
    let id = harness.submit("07700900161", "Your appointment is confirmed.").await;
    harness.wait_for_status(&id, MessageStatus::Sent).await;
    harness.control.wait_for_gateway("delivered", 1).await;

    let report = harness.upload().await;
    assert_eq!(report.delivery_receipts, 1, "{report:?}");
    let message = harness.message(&id).await;
    assert_eq!(message.status(), MessageStatus::Delivered, "{}", message.status_reason);
}

#[tokio::test(flavor = "multi_thread")]
async fn reply_number_attaches_reply() {
    let harness = SandboxAgent::start().await;
    let id = harness.submit("07700900947", "Can you attend on Thursday?").await;
    harness.wait_for_status(&id, MessageStatus::Sent).await;
    harness.control.wait_for_gateway("replied", 1).await;

    let report = harness.upload().await;
    assert_eq!(report.replies, 1, "{report:?}");
    let replies = harness.replies_to(&id).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].from, "+447700900947");
    assert_eq!(replies[0].text, "Yes, thank you");
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_reply_opts_number_out() {
    let harness = SandboxAgent::start().await;
    let id = harness.submit("07700900962", "Your flu jab is due.").await;
    harness.wait_for_status(&id, MessageStatus::Sent).await;
    harness.control.wait_for_gateway("replied", 1).await;
    let report = harness.upload().await;
    assert_eq!(report.replies, 1, "{report:?}");

    let mut clients = harness.clients.clone();
    let refused = clients.messages.submit_message(support::submit("07700900962", "Clinic closed on Friday.")).await;
    let status = refused.expect_err("a second text to an opted-out number is refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("+447700900962 opted out"), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_arriving_while_down_is_recorded_once() {
    let mut harness = SandboxAgent::start().await;
    let numbers = ["07700900151", "07700900905", "07700900947"];
    let mut ids = Vec::new();
    for number in numbers {
        ids.push(harness.submit(number, "Your blood test results are back.").await);
    }
    for id in &ids {
        harness.wait_for_status(id, MessageStatus::Sent).await;
    }

    // The receipts, the failure report and the reply reach the mailbox while the agent is down.
    harness.agent.kill();
    harness.control.wait_for_gateway("delivered", 2).await;
    harness.control.wait_for_gateway("replied", 1).await;
    harness.restart_with_mailbox(support::NO_IDLE).await;
    harness.upload().await;
    let again = harness.upload().await;

    assert_eq!(again.mail_collected, 0, "the second cycle finds nothing new: {again:?}");
    let delivered = harness.message(&ids[0]).await;
    assert_eq!(transitions_to(&delivered, MessageStatus::Delivered).len(), 1, "one receipt recorded");
    let failed = harness.message(&ids[1]).await;
    assert_eq!(
        transitions_to(&failed, MessageStatus::Failed).len(),
        1,
        "one failure recorded: {}",
        failed.status_reason
    );
    assert_eq!(harness.replies_to(&ids[2]).await.len(), 1, "the reply is recorded once");
}
