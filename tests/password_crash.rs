//! Crash tests of the write-ahead rotation: the agent is killed with SIGKILL right before and right after each
//! step, restarted, and must end `ok` with the password the sandbox accepts, with no lockout and at most one failed
//! sign-in per crash. Then a soak of many rotations with random crashes and faults while texts flow.
//!
//! The agent's crash points exist only with the `failpoints` feature: `cargo test --features failpoints`, as
//! `.ci/run` runs it.
#![cfg(feature = "failpoints")]

mod support;

use std::collections::HashMap;

use nhsmail_agent::proto::{self, MessageStatus};
use rand::Rng;
use serde_json::json;
use support::rotation::{LIMIT, RotationRig};
use support::{submit, wait_for};

/// The agent's crash points, in the order a rotation reaches them.
const FAILPOINTS: [&str; 8] = [
    "rotation.before_store_pending",
    "rotation.after_store_pending",
    "rotation.before_change",
    "rotation.after_change",
    "rotation.before_verify",
    "rotation.after_verify",
    "rotation.before_commit",
    "rotation.after_commit",
];

/// Rotations in the soak, unless NHSMAIL_SOAK_ROTATIONS sets another number.
const SOAK_ROTATIONS: usize = 200;

/// Restarts a rig whose agent was killed, and checks it settles on the server's password without a lockout.
async fn check_recovered(rig: &mut RotationRig, point: &str, failed_before: u64) {
    rig.restart_with_env(&[]).await;
    rig.wait_until_settled().await;

    assert_eq!(rig.reveal().await, rig.server_password().await, "after a crash at {point}");
    assert_eq!(rig.counter("lockouts").await, 0, "no lockout after a crash at {point}");
    let failed = rig.sandbox.all_failed_sign_ins().await - failed_before;
    assert!(failed <= 1, "{failed} failed sign-ins after a crash at {point}");
}

async fn crash_at(point: &str) {
    let mut rig = RotationRig::start().await;
    rig.restart_with_env(&[("NHSMAIL_FAILPOINT", point)]).await;

    let result = rig.rotate().await;
    assert!(result.is_err(), "the agent died at {point}, so RotatePassword has no answer");
    check_recovered(&mut rig, point, 0).await;
}

macro_rules! crash_tests {
    ($($name:ident => $point:expr),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                crash_at($point).await;
            }
        )*
    };
}

crash_tests! {
    crash_before_store_pending => FAILPOINTS[0],
    crash_after_store_pending => FAILPOINTS[1],
    crash_before_change_call => FAILPOINTS[2],
    crash_after_change_call => FAILPOINTS[3],
    crash_before_verification => FAILPOINTS[4],
    crash_after_verification => FAILPOINTS[5],
    crash_before_commit => FAILPOINTS[6],
    crash_after_commit => FAILPOINTS[7],
}

/// Kills the agent while the sandbox delays its change request, before (`change_hold`) or after
/// (`change_hold_after_apply`) the new password takes effect on the server.
async fn crash_around_server_change(fault: &str, applied: bool) {
    let mut rig = RotationRig::start().await;
    rig.sandbox.post("/faults", json!({ "kind": fault, "delay_ms": 3000 })).await;
    let mut clients = rig.clients.clone();
    let rotation =
        tokio::spawn(async move { clients.connectivity.rotate_password(proto::RotatePasswordRequest {}).await });

    wait_for(LIMIT, "the sandbox to hold the change request", || async {
        let counters = rig.sandbox.get("/counters").await;
        let held = counters["faults_fired"][fault].as_u64() == Some(1);
        let changes = counters["password_changes"].as_u64().unwrap_or(0);
        (held && (changes == 1) == applied).then_some(())
    })
    .await;
    rig.agent.kill();
    rotation.abort();

    check_recovered(&mut rig, fault, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_before_server_change_applies() {
    crash_around_server_change("change_hold", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_server_change_applies() {
    crash_around_server_change("change_hold_after_apply", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_candidate_not_retried_after_crash() {
    let mut rig = RotationRig::start().await;
    rig.restart_with_env(&[("NHSMAIL_FAILPOINT", "rotation.after_verify")]).await;
    rig.sandbox.post("/faults", json!({ "kind": "change_hold_after_apply", "delay_ms": 2000 })).await;
    let mut clients = rig.clients.clone();
    let rotation =
        tokio::spawn(async move { clients.connectivity.rotate_password(proto::RotatePasswordRequest {}).await });
    wait_for(LIMIT, "the sandbox to apply the change", || async {
        (rig.counter("password_changes").await == 1).then_some(())
    })
    .await;
    // Someone replaces the new password on the server, so verification rejects it twice and the agent dies.
    rig.sandbox.post("/account/password", json!({ "password": "Someone-Else-Set-This-1" })).await;
    assert!(rotation.await.unwrap().is_err(), "the agent died after verification");
    assert_eq!(rig.sandbox.all_failed_sign_ins().await, 2, "verification tried the candidate twice");

    rig.restart_with_env(&[]).await;
    wait_for(LIMIT, "reconciliation to end in needs_attention", || async {
        (rig.connectivity().await.password_state() == proto::PasswordState::NeedsAttention).then_some(())
    })
    .await;

    assert_eq!(rig.sandbox.all_failed_sign_ins().await, 3, "only the old password was tried after the restart");
    assert_eq!(rig.counter("lockouts").await, 0, "the account is not locked");
}

/// What the soak did, for its report.
#[derive(Debug, Default)]
struct SoakFigures {
    rotations: usize,
    committed: u64,
    crashes: usize,
    /// Crash rounds whose rotation ended before reaching its crash point.
    ended_early: usize,
    faults: usize,
    texts: usize,
}

#[tokio::test(flavor = "multi_thread")]
async fn soak_rotations_with_crashes_and_faults() {
    let rotations = std::env::var("NHSMAIL_SOAK_ROTATIONS").ok().and_then(|value| value.parse().ok());
    let rotations = rotations.unwrap_or(SOAK_ROTATIONS);
    let mut rig = RotationRig::start().await;
    let mut figures = SoakFigures { rotations, ..SoakFigures::default() };
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut rng = rand::rng();

    for round in 0..rotations {
        // Texts flow throughout: two per round, each with its own idempotency key, retried with that key until
        // the agent takes it, so a crash never makes a second message.
        for slot in 0..2 {
            let key = format!("soak-{round}-{slot}");
            let text = format!("Soak text {round}.{slot}: your appointment is confirmed.");
            let request = proto::SubmitMessageRequest { idempotency_key: key.clone(), ..submit("07700900123", &text) };
            let id = wait_for(LIMIT, "a submission to be accepted", || {
                let mut clients = rig.clients.clone();
                let request = request.clone();
                async move { clients.messages.submit_message(request).await.ok()?.into_inner().message.map(|m| m.id) }
            })
            .await;
            ids.insert(key, id);
            figures.texts += 1;
        }

        match rng.random_range(0..10) {
            0..=2 => {
                let point = FAILPOINTS[rng.random_range(0..FAILPOINTS.len())];
                rig.restart_with_env(&[("NHSMAIL_FAILPOINT", point)]).await;
                match rig.rotate().await {
                    Err(_) => figures.crashes += 1,
                    // A rotation can end before the crash point for a reason outside the agent, such as a
                    // timeout on a loaded machine. The checks after each round still apply.
                    Ok(response) => {
                        println!("round {round}: the rotation ended before {point}: {}", response.outcome);
                        figures.ended_early += 1;
                    }
                }
                rig.restart_with_env(&[]).await;
            }
            3..=4 => {
                let fault = ["change_5xx", "change_refuse", "change_lost_reply"][rng.random_range(0..3)];
                rig.sandbox.post("/faults", json!({ "kind": fault })).await;
                rig.rotate().await.expect("RotatePassword returns an outcome despite a fault");
                figures.faults += 1;
            }
            _ => {
                let response = rig.rotate().await.expect("RotatePassword succeeds");
                assert!(response.rotated, "round {round}: {}", response.outcome);
            }
        }
        rig.wait_until_settled().await;
        assert_eq!(rig.counter("lockouts").await, 0, "round {round}: no lockout");
    }

    assert_eq!(rig.reveal().await, rig.server_password().await, "the agent ends with the server's password");
    figures.committed = rig.counter("password_changes").await;
    let failed_sign_ins = rig.sandbox.all_failed_sign_ins().await;
    assert!(
        failed_sign_ins <= (figures.crashes + figures.ended_early + figures.faults) as u64,
        "{failed_sign_ins} failed sign-ins for {} crashes and {} faults",
        figures.crashes,
        figures.faults
    );

    let clients = rig.clients.clone();
    let mut final_states: HashMap<String, MessageStatus> = HashMap::new();
    for id in ids.values() {
        let message = wait_for(LIMIT, "each text to leave the queue", || {
            let mut clients = clients.clone();
            let id = id.clone();
            async move {
                let request = proto::GetMessageRequest { id };
                let message = clients.messages.get_message(request).await.ok()?.into_inner();
                (!matches!(message.status(), MessageStatus::Queued | MessageStatus::Sending)).then_some(message)
            }
        })
        .await;
        final_states.insert(message.smtp_message_id.trim_matches(['<', '>']).to_string(), message.status());
    }
    let lost = final_states
        .values()
        .filter(|status| !matches!(status, MessageStatus::Sent | MessageStatus::Delivered | MessageStatus::Uncertain))
        .count();
    assert_eq!(lost, 0, "every text was sent or marked uncertain: {final_states:?}");

    let mut received: HashMap<String, usize> = HashMap::new();
    for text in rig.sandbox.sent().await {
        let message_id = text["message_id"].as_str().unwrap_or_default().trim_matches(['<', '>']).to_string();
        *received.entry(message_id).or_default() += 1;
    }
    let twice: Vec<_> = received
        .iter()
        .filter(|(message_id, count)| **count > 1 && final_states.get(*message_id) != Some(&MessageStatus::Uncertain))
        .collect();
    assert!(twice.is_empty(), "texts received twice without being marked uncertain: {twice:?}");

    println!(
        "soak: {} rotations, {} password changes committed on the server, {} crashes, {} injected faults, \
         {} texts, {failed_sign_ins} failed sign-ins, 0 lockouts, {} crash rounds ended before their crash point",
        figures.rotations, figures.committed, figures.crashes, figures.faults, figures.texts, figures.ended_early
    );
}
