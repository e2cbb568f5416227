//! Password rotation against the sandbox's Graph changePassword, token endpoint, SMTP and IMAP: the write-ahead
//! steps, the change endpoint's failures, reconciliation, and the lockout protection. Each test starts its own
//! sandbox and agent.

mod support;

use std::time::Duration;

use nhsmail_agent::proto::{self, MessageStatus, PasswordState};
use serde_json::json;
use support::rotation::RotationRig;
use support::{AuthMode, set_password, submit, wait_for_status};

/// A password set on the server behind the agent's back, as a person on the portal would.
const OUTSIDE_PASSWORD: &str = "Someone-Else-Set-This-1";

/// Idle time after which a sign-in would have happened if the agent were going to make one.
const QUIET_PERIOD: Duration = Duration::from_secs(2);

/// Moves the stored password's set-at `days` into the past while the agent is stopped, as if it had been set then.
fn backdate_password(data_dir: &std::path::Path, days: i64) {
    let connection = rusqlite::Connection::open(nhsmail_agent::store::database_path(data_dir)).unwrap();
    let updated = connection
        .execute("UPDATE credential SET set_at = set_at - ?1", [days * 86_400_000])
        .expect("the credential row can be backdated");
    assert_eq!(updated, 1, "one stored credential");
}

async fn arm(rig: &RotationRig, fault: serde_json::Value) {
    rig.sandbox.post("/faults", fault).await;
}

/// Rotates while someone changes the password on the server between the change and its verification, so neither
/// the agent's new nor its current password works, and returns the rotation's outcome.
async fn change_behind_back_during_rotation(rig: &RotationRig) -> proto::RotatePasswordResponse {
    arm(rig, json!({ "kind": "change_hold_after_apply", "delay_ms": 2000 })).await;
    let mut clients = rig.clients.clone();
    let rotation =
        tokio::spawn(async move { clients.connectivity.rotate_password(proto::RotatePasswordRequest {}).await });
    support::wait_for(support::rotation::LIMIT, "the sandbox to apply the change", || async {
        (rig.counter("password_changes").await == 1).then_some(())
    })
    .await;
    rig.sandbox.post("/account/password", json!({ "password": OUTSIDE_PASSWORD })).await;
    rotation.await.unwrap().expect("RotatePassword returns an outcome").into_inner()
}

async fn send_one(rig: &RotationRig, text: &str) -> proto::Message {
    let mut clients = rig.clients.clone();
    let response = clients.messages.submit_message(submit("07700900123", text)).await.expect("SubmitMessage succeeds");
    let id = response.into_inner().message.expect("a submission returns its message").id;
    wait_for_status(&mut clients, &id, MessageStatus::Sent).await
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_rotation_changes_password() {
    let rig = RotationRig::start().await;
    let old = rig.server_password().await;

    let response = rig.rotate().await.expect("RotatePassword succeeds");

    assert!(response.rotated, "{}", response.outcome);
    let new = rig.server_password().await;
    assert_ne!(new, old, "the sandbox's password changed");
    assert_eq!(rig.reveal().await, new, "the agent holds the server's password");
    send_one(&rig, "Your flu jab is on Tuesday at 10:00.").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_password_meets_policy() {
    let rig = RotationRig::start().await;
    rig.rotate().await.expect("RotatePassword succeeds");

    let password = rig.reveal().await;

    assert_eq!(password.chars().count(), 24);
    assert!(password.chars().any(|c| c.is_ascii_uppercase()), "an upper-case letter");
    assert!(password.chars().any(|c| c.is_ascii_lowercase()), "a lower-case letter");
    assert!(password.chars().any(|c| c.is_ascii_digit()), "a digit");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_shows_in_connectivity() {
    let rig = RotationRig::start().await;
    rig.rotate().await.expect("RotatePassword succeeds");

    let connectivity = rig.connectivity().await;

    assert_eq!(connectivity.password_state(), PasswordState::Ok);
    assert!(connectivity.last_rotation_at.is_some(), "last rotation time");
    assert_eq!(connectivity.rotation_failures, 0);
    assert!(connectivity.next_rotation_at.is_some(), "the next rotation is scheduled");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_candidate_replaced_next_time() {
    let rig = RotationRig::start().await;
    let old = rig.server_password().await;
    arm(&rig, json!({ "kind": "change_refuse" })).await;

    let refused = rig.rotate().await.expect("RotatePassword returns an outcome");
    assert!(!refused.rotated, "the first attempt is refused");
    assert!(refused.outcome.contains("refused"), "{}", refused.outcome);
    assert_eq!(rig.server_password().await, old, "nothing changed on the server");
    assert_eq!(rig.connectivity().await.rotation_failures, 1);

    let second = rig.rotate().await.expect("RotatePassword succeeds");
    assert!(second.rotated, "{}", second.outcome);
    assert_eq!(rig.reveal().await, rig.server_password().await);
    assert_eq!(rig.sandbox.all_failed_sign_ins().await, 0, "no sign-in failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_reply_reconciled_to_new() {
    let rig = RotationRig::start().await;
    arm(&rig, json!({ "kind": "change_lost_reply" })).await;

    let response = rig.rotate().await.expect("RotatePassword returns an outcome");

    assert!(response.rotated, "{}", response.outcome);
    assert_eq!(rig.reveal().await, rig.server_password().await);
    assert_eq!(rig.sandbox.all_failed_sign_ins().await, 0, "the new password was tried first and worked");
}

#[tokio::test(flavor = "multi_thread")]
async fn slowly_spreading_change_commits() {
    let rig = RotationRig::start().await;
    // The rig waits up to 5 seconds for a new password to reach every server.
    arm(&rig, json!({ "kind": "change_propagation_delay", "delay_ms": 2500 })).await;

    let response = rig.rotate().await.expect("RotatePassword returns an outcome");

    assert!(response.rotated, "{}", response.outcome);
    assert_eq!(rig.reveal().await, rig.server_password().await, "the agent holds the server's password");
    assert_eq!(rig.counter("lockouts").await, 0, "the account is not locked");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_change_keeps_current() {
    let rig = RotationRig::start().await;
    let old = rig.server_password().await;
    arm(&rig, json!({ "kind": "change_5xx" })).await;

    let response = rig.rotate().await.expect("RotatePassword returns an outcome");

    assert!(!response.rotated, "{}", response.outcome);
    assert_eq!(rig.server_password().await, old);
    assert_eq!(rig.reveal().await, old, "the agent kept the current password");
    assert_eq!(rig.sandbox.all_failed_sign_ins().await, 1, "the candidate was tried once");
    let connectivity = rig.connectivity().await;
    assert_eq!(connectivity.password_state(), PasswordState::Ok);
    assert_eq!(connectivity.rotation_failures, 1);
    assert!(!connectivity.pending_password, "the candidate was discarded");
    send_one(&rig, "Please call the surgery about your results.").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_change_delays_next_attempt() {
    let rig = RotationRig::start().await;
    arm(&rig, json!({ "kind": "change_5xx" })).await;
    rig.rotate().await.expect("RotatePassword returns an outcome");

    let connectivity = rig.connectivity().await;

    let next = connectivity.next_rotation_at.expect("a retry is scheduled");
    let wait = next.seconds - chrono::Utc::now().timestamp();
    assert!(wait >= 540, "the next attempt is at least 10 minutes away, not {wait} s");
    let warnings: Vec<&str> = connectivity.warnings.iter().map(|warning| warning.code.as_str()).collect();
    assert!(warnings.contains(&"password_rotation_failing"), "{warnings:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn password_changed_behind_back_needs_attention() {
    let rig = RotationRig::start().await;

    let response = change_behind_back_during_rotation(&rig).await;

    assert!(!response.rotated, "{}", response.outcome);
    let connectivity = rig.connectivity().await;
    assert_eq!(connectivity.password_state(), PasswordState::NeedsAttention);
    assert!(connectivity.sending_paused, "sending is paused");
    assert_eq!(rig.counter("lockouts").await, 0, "the account is not locked");
}

#[tokio::test(flavor = "multi_thread")]
async fn needs_attention_makes_no_sign_ins() {
    let rig = RotationRig::start().await;
    change_behind_back_during_rotation(&rig).await;
    let failed = rig.sandbox.all_failed_sign_ins().await;

    let mut clients = rig.clients.clone();
    clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.expect("TriggerUpload returns a report");
    tokio::time::sleep(QUIET_PERIOD).await;

    assert_eq!(rig.sandbox.all_failed_sign_ins().await, failed, "no sign-in after needs_attention");
    assert!(rig.connectivity().await.blocked_sign_ins > 0, "the upload's sign-in was blocked");
}

/// Runs a rotation whose new password someone replaces on the server before it is confirmed, which ends in
/// needs_attention after three rejected sign-ins: the candidate twice and the old password once.
async fn rotate_into_needs_attention(rig: &RotationRig) {
    change_behind_back_during_rotation(rig).await;
    assert_eq!(rig.connectivity().await.password_state(), PasswordState::NeedsAttention);
}

#[tokio::test(flavor = "multi_thread")]
async fn needs_attention_survives_restart_silently() {
    let mut rig = RotationRig::start().await;
    rotate_into_needs_attention(&rig).await;
    let failed = rig.sandbox.all_failed_sign_ins().await;

    rig.restart_with_env(&[]).await;
    tokio::time::sleep(QUIET_PERIOD).await;

    assert_eq!(rig.sandbox.all_failed_sign_ins().await, failed, "no sign-in after the restart");
    assert_eq!(rig.counter("lockouts").await, 0, "the account is not locked");
    assert_eq!(rig.connectivity().await.password_state(), PasswordState::NeedsAttention);
}

#[tokio::test(flavor = "multi_thread")]
async fn undecryptable_pending_needs_attention() {
    let mut rig = RotationRig::start().await;
    rig.agent.stop();
    let connection = rusqlite::Connection::open(nhsmail_agent::store::database_path(&rig.agent.data_dir)).unwrap();
    let updated = connection
        .execute(
            "UPDATE credential SET pending_ciphertext = zeroblob(40), pending_nonce = zeroblob(12), \
             pending_created_at = set_at, rotation_state = 'rotating'",
            [],
        )
        .expect("a pending password can be written");
    assert_eq!(updated, 1, "one stored credential");
    drop(connection);

    rig.restart_with_env(&[]).await;
    tokio::time::sleep(QUIET_PERIOD).await;

    let connectivity = rig.connectivity().await;
    assert_eq!(connectivity.password_state(), PasswordState::NeedsAttention);
    assert!(connectivity.sending_paused, "sending is paused");
    assert_eq!(rig.sandbox.all_failed_sign_ins().await, 0, "no sign-in with a password that cannot be read");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_waits_for_update_password() {
    let rig = RotationRig::start().await;
    let typed = "Practice-Set-New-One-2";
    rig.sandbox.post("/account/password", json!({ "password": typed })).await;
    // Slow SMTP replies keep UpdatePassword's check, and its hold on sign-ins, going while the rotation is asked for.
    arm(&rig, json!({ "kind": "slow", "count": 4, "delay_ms": 1500 })).await;
    let mut clients = rig.clients.clone();
    let update = tokio::spawn(async move { set_password(&mut clients, typed, false).await });
    support::wait_for(support::rotation::LIMIT, "UpdatePassword to reach SMTP", || async {
        let counters = rig.sandbox.get("/counters").await;
        (counters["faults_fired"]["slow"].as_u64() >= Some(1)).then_some(())
    })
    .await;

    let rotation = rig.rotate().await.expect("RotatePassword returns an outcome");
    assert!(update.await.unwrap().verified, "UpdatePassword checked the typed password");

    assert!(rotation.rotated, "{}", rotation.outcome);
    assert_eq!(rig.reveal().await, rig.server_password().await, "the agent holds the server's password");
    assert_eq!(rig.sandbox.all_failed_sign_ins().await, 0, "the replaced password was not tried");
}

#[tokio::test(flavor = "multi_thread")]
async fn update_password_recovers_needs_attention() {
    let rig = RotationRig::start().await;
    change_behind_back_during_rotation(&rig).await;

    let mut clients = rig.clients.clone();
    let response = set_password(&mut clients, OUTSIDE_PASSWORD, false).await;

    assert!(response.verified, "the typed password was checked");
    let connectivity = rig.wait_until_settled().await;
    assert!(!connectivity.sending_paused, "sending resumed");
    send_one(&rig, "Your repeat prescription is ready to collect.").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn early_expiry_warns_without_retrying() {
    let rig = RotationRig::start_in(AuthMode::Password).await;
    rig.sandbox.post("/account/expire-password", json!({})).await;
    let mut clients = rig.clients.clone();
    let response = clients.messages.submit_message(submit("07700900123", "Your review is due.")).await.unwrap();
    let id = response.into_inner().message.unwrap().id;

    support::wait_for(support::rotation::LIMIT, "the agent to notice the rejection", || async {
        (rig.connectivity().await.password_state() == PasswordState::Rejected).then_some(())
    })
    .await;
    clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.expect("TriggerUpload returns a report");
    tokio::time::sleep(QUIET_PERIOD).await;

    assert_eq!(rig.sandbox.all_failed_sign_ins().await, 1, "one failed sign-in, no retry loop");
    let status = clients.agent.get_status(proto::GetStatusRequest {}).await.unwrap().into_inner();
    let codes: Vec<&str> = status.warnings.iter().map(|warning| warning.code.as_str()).collect();
    assert!(codes.contains(&"password_rejected"), "{codes:?}");

    rig.sandbox.post("/account/password", json!({ "password": "Practice-Set-New-One-2" })).await;
    assert!(set_password(&mut clients, "Practice-Set-New-One-2", false).await.verified, "UpdatePassword works");
    wait_for_status(&mut clients, &id, MessageStatus::Sent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reveal_is_audited() {
    let mut rig = RotationRig::start().await;
    rig.reveal().await;
    rig.agent.stop();

    let store = nhsmail_agent::store::Store::open(nhsmail_agent::store::database_path(&rig.agent.data_dir)).unwrap();
    let audit = store.list_audit(None, 100).await.unwrap();

    let reveal = audit.iter().find(|record| record.event.action == "RevealPassword").expect("an audit row");
    assert_eq!(reveal.event.caller, "admin");
    assert_eq!(reveal.event.outcome, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn update_password_is_audited() {
    let mut rig = RotationRig::start().await;
    rig.agent.stop();

    let store = nhsmail_agent::store::Store::open(nhsmail_agent::store::database_path(&rig.agent.data_dir)).unwrap();
    let audit = store.list_audit(None, 100).await.unwrap();

    let update = audit.iter().find(|record| record.event.action == "UpdatePassword").expect("an audit row");
    assert_eq!(update.event.caller, "admin");
    assert_eq!(update.event.outcome, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn due_rotation_runs_by_itself() {
    let mut rig = RotationRig::start().await;
    let old = rig.server_password().await;
    rig.agent.stop();
    backdate_password(&rig.agent.data_dir, 80);

    rig.restart_with_env(&[]).await;

    support::wait_for(support::rotation::LIMIT, "the scheduled rotation", || async {
        (rig.server_password().await != old).then_some(())
    })
    .await;
    let connectivity = rig.wait_until_settled().await;
    assert_eq!(rig.reveal().await, rig.server_password().await);
    assert_eq!(connectivity.days_until_expiry, Some(89), "the new password has a full 90 days");
}

#[tokio::test(flavor = "multi_thread")]
async fn unstartable_rotation_not_retried_at_once() {
    let sandbox = support::TestSandbox::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let username_line = format!("username = \"{}\"\n", sandbox.info().username);
    let config = sandbox.agent_config(AuthMode::OAuth2, "").replace(&username_line, "");
    let mut agent = support::AgentProcess::start(data_dir.path(), &config);
    let mut clients = agent.clients().await;
    set_password(&mut clients, "Invented-Password-2026", true).await;
    agent.stop();
    backdate_password(data_dir.path(), 80);

    // Without a username a due rotation fails to start, as it does when the disk is full.
    let agent = support::AgentProcess::start(data_dir.path(), &config);
    tokio::time::sleep(QUIET_PERIOD).await;

    let attempts = agent.log().matches("scheduled password rotation did not start").count();
    assert_eq!(attempts, 1, "one attempt, then a wait");
}

#[tokio::test(flavor = "multi_thread")]
async fn unmanaged_password_only_warns() {
    let mut rig = RotationRig::start().await;
    let mut clients = rig.clients.clone();
    let update = proto::UpdateConnectivityRequest { auto_manage: Some(false), ..Default::default() };
    clients.connectivity.update_connectivity(update).await.expect("UpdateConnectivity succeeds");
    rig.agent.stop();
    backdate_password(&rig.agent.data_dir, 80);

    rig.restart_with_env(&[]).await;
    tokio::time::sleep(QUIET_PERIOD).await;

    assert_eq!(rig.counter("password_changes").await, 0, "no automatic change");
    let connectivity = rig.connectivity().await;
    assert_eq!(connectivity.password_state(), PasswordState::Expiring);
    let warning = connectivity.warnings.iter().find(|warning| warning.code == "password_expiring");
    let message = &warning.expect("an expiry warning").message;
    assert!(message.contains("expires in 9 days"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_propagation_waited_out() {
    let rig = RotationRig::start().await;
    arm(&rig, json!({ "kind": "change_propagation", "delay_ms": 2000 })).await;

    let response = rig.rotate().await.expect("RotatePassword succeeds");

    assert!(response.rotated, "{}", response.outcome);
    assert_eq!(rig.reveal().await, rig.server_password().await);
    assert_eq!(rig.sandbox.all_failed_sign_ins().await, 0, "temporary refusals are not failures");
}

#[tokio::test(flavor = "multi_thread")]
async fn unconfirmed_change_reconciled_later() {
    let rig = RotationRig::start().await;
    arm(&rig, json!({ "kind": "change_propagation", "delay_ms": 8000 })).await;

    let response = rig.rotate().await.expect("RotatePassword returns an outcome");
    assert!(!response.rotated, "not confirmed within the 5 s propagation wait: {}", response.outcome);
    let waiting = rig.connectivity().await;
    assert_eq!(waiting.password_state(), PasswordState::Rotating);
    assert!(waiting.pending_password, "the new password stays pending");

    rig.wait_until_settled().await;
    assert_eq!(rig.reveal().await, rig.server_password().await);
    assert_eq!(rig.sandbox.all_failed_sign_ins().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn needs_attention_reveals_pending_password() {
    let rig = RotationRig::start().await;
    arm(&rig, json!({ "kind": "change_lost_reply" })).await;
    arm(&rig, json!({ "kind": "change_propagation_delay", "delay_ms": 2500 })).await;

    let response = rig.rotate().await.expect("RotatePassword returns an outcome");
    assert!(!response.rotated, "{}", response.outcome);
    assert_eq!(rig.connectivity().await.password_state(), PasswordState::NeedsAttention);

    let mut clients = rig.clients.clone();
    let revealed = clients.connectivity.reveal_password(proto::RevealPasswordRequest {}).await.unwrap().into_inner();
    assert_eq!(revealed.pending_password, rig.server_password().await, "the working password can be recovered");
}
