//! Retention and IMAP IDLE against the sandbox. Matched receipts and reports move to the processed folder and are
//! deleted from it after the retention period, while replies and unclassified mail stay in INBOX. A failed move is
//! retried after a restart. The IDLE watcher collects new mail without TriggerUpload.
//!
//! The folders are read over IMAP with the agent's own IMAP client, signed in with the sandbox's password.

mod support;

use std::time::Duration;

use nhsmail_agent::proto::MessageStatus;
use nhsmail_agent::secret::Secret;
use nhsmail_agent::transport::imap::{ImapClient, ImapSettings};
use nhsmail_agent::transport::{Credentials, Endpoint, Security, TlsSettings};
use serde_json::json;
use support::sandbox::SandboxAgent;

/// Retention period of these tests, in days.
const RETENTION_DAYS: i64 = 30;

/// An email from an outside address that the classifier cannot place, so it is kept for review.
const UNCLASSIFIED: &str = "From: Someone <someone@example.org>\r\nTo: practice.sms@example.org\r\n\
    Subject: Parking at the surgery\r\nMessage-ID: <parking.1@example.org>\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n\
    \r\nIs there parking at the surgery?\r\n";

/// Lists the UIDs in `folder`, or an empty list when it does not exist.
async fn uids_in(harness: &SandboxAgent, folder: &str) -> Vec<u32> {
    let info = harness.sandbox.info();
    let settings = ImapSettings {
        endpoint: Endpoint { host: "127.0.0.1".into(), port: info.imap_port, security: Security::Tls },
        tls: TlsSettings { extra_ca_file: Some(info.ca_file.clone()) },
        timeout: Duration::from_secs(10),
    };
    let credentials = Credentials::password(info.username.clone(), Secret::new(info.password.clone()));
    let mut session = ImapClient::connect(&settings, &credentials).await.expect("the test signs in over IMAP");
    let uids = match session.select(folder).await {
        Ok(_) => session.fetch_since(0, 1000).await.expect("FETCH succeeds").into_iter().map(|m| m.uid).collect(),
        Err(_) => Vec::new(),
    };
    let _ = session.logout().await;
    uids
}

/// Sends a receipt, a failure report, a delay report (followed by a receipt) and a reply with its receipt, and
/// appends an unclassified email. Waits until the gateway has delivered all of them to INBOX.
async fn fill_inbox(harness: &SandboxAgent) -> Vec<String> {
    let ids = vec![
        harness.submit("07700900101", "Your appointment is on Monday.").await,
        harness.submit("07700900901", "Your results are ready.").await,
        harness.submit("07700900921", "Please book your review.").await,
        harness.submit("07700900941", "Can you come on Tuesday?").await,
    ];
    for id in &ids {
        harness.wait_for_status(id, MessageStatus::Sent).await;
    }
    harness.control.post("/inbox", json!({ "raw": UNCLASSIFIED })).await;
    harness.control.wait_for_gateway("failed", 1).await;
    harness.control.wait_for_gateway("replied", 1).await;
    harness.control.wait_for_gateway("delivered", 3).await;
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn processed_reports_move_replies_stay() {
    let harness = SandboxAgent::start().await;
    fill_inbox(&harness).await;
    let before = uids_in(&harness, "INBOX").await;
    assert_eq!(before.len(), 7, "3 receipts for the 3 delivered texts, a failure, a delay, a reply and 1 other");

    let report = harness.upload().await;

    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.mail_collected, 7);
    assert_eq!(report.mail_moved, 5, "3 receipts, 1 failure report and 1 delay report");
    assert_eq!(report.mail_deleted, 0);
    assert_eq!(uids_in(&harness, "Processed").await.len(), 5);
    assert_eq!(uids_in(&harness, "INBOX").await.len(), 2, "the reply and the unclassified email stay");

    let again = harness.upload().await;
    assert_eq!(again.mail_moved, 0, "nothing is moved twice");
    assert!(again.errors.is_empty(), "{:?}", again.errors);
}

#[tokio::test(flavor = "multi_thread")]
async fn old_processed_mail_is_deleted() {
    let harness = SandboxAgent::start().await;
    // Mail arriving while the sandbox's clock is behind gets an INTERNALDATE older than the retention period.
    let behind = -(RETENTION_DAYS + 2) * 86_400;
    harness.control.post("/clock", json!({ "offset_secs": behind })).await;
    fill_inbox(&harness).await;
    harness.control.post("/clock", json!({ "offset_secs": 0 })).await;

    let first = harness.upload().await;
    assert_eq!(first.mail_moved, 5, "{:?}", first.errors);
    assert_eq!(first.mail_deleted, 0, "the processed folder is purged before new mail is moved into it");

    let second = harness.upload().await;

    assert!(second.errors.is_empty(), "{:?}", second.errors);
    assert_eq!(second.mail_deleted, 5);
    assert!(uids_in(&harness, "Processed").await.is_empty(), "the processed folder is empty");
    assert_eq!(uids_in(&harness, "INBOX").await.len(), 2, "old replies and unclassified mail stay in INBOX");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_move_is_retried_once() {
    // The sandbox rejects a folder name with "*", so the first agent records the mail but cannot move it.
    let mut harness =
        SandboxAgent::start_with_mailbox("[mailbox]\nidle = false\nprocessed_folder = \"Bad*Name\"\n").await;
    let id = harness.submit("07700900102", "Your flu jab is due.").await;
    harness.wait_for_status(&id, MessageStatus::Sent).await;
    harness.control.wait_for_gateway("delivered", 1).await;

    let failed = harness.upload().await;
    assert_eq!(failed.mail_collected, 1);
    assert_eq!(failed.mail_moved, 0);
    assert!(!failed.errors.is_empty(), "the failed move is reported");
    assert_eq!(uids_in(&harness, "INBOX").await.len(), 1, "the receipt is still in INBOX");

    harness.restart_with_mailbox("[mailbox]\nidle = false\n").await;
    let retried = harness.upload().await;

    assert!(retried.errors.is_empty(), "{:?}", retried.errors);
    assert_eq!(retried.mail_collected, 0, "the receipt is not recorded again");
    assert_eq!(retried.mail_moved, 1);
    assert!(uids_in(&harness, "INBOX").await.is_empty());
    assert_eq!(uids_in(&harness, "Processed").await.len(), 1);
    let delivered = harness.message(&id).await;
    let deliveries = delivered.events.iter().filter(|event| event.to_status() == MessageStatus::Delivered).count();
    assert_eq!(deliveries, 1, "one delivery event: {:?}", delivered.events);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_collects_without_trigger() {
    let harness = SandboxAgent::start_with_mailbox("[mailbox]\nidle = true\n").await;

    let id = harness.submit("07700900103", "Your repeat prescription is ready.").await;

    let delivered = harness.wait_for_status(&id, MessageStatus::Delivered).await;
    assert_eq!(delivered.status(), MessageStatus::Delivered);
}

#[tokio::test(flavor = "multi_thread")]
async fn polling_only_without_idle() {
    let harness = SandboxAgent::start_with_mailbox("[mailbox]\nidle = false\n").await;

    let id = harness.submit("07700900104", "Your repeat prescription is ready.").await;
    harness.wait_for_status(&id, MessageStatus::Sent).await;
    harness.control.wait_for_gateway("delivered", 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(harness.message(&id).await.status(), MessageStatus::Sent, "nothing collected the receipt");
}
