use chrono::TimeDelta;

use super::{Fixture, at, new_message, open_store, query_count, t0};
use crate::queue::MessageStatus;
use crate::store::{Effect, ImapState, InboundOutcome, InboundRecord, ReplyFilter, Store};

const INBOX: &str = "INBOX";

/// Returns an unclassified email in INBOX with the given UID and Message-ID.
fn email(uidvalidity: u32, uid: u32, message_id: &str) -> InboundRecord {
    InboundRecord {
        mailbox: String::from(INBOX),
        uidvalidity,
        uid,
        email_message_id: String::from(message_id),
        kind: String::from("other"),
        from: String::from("postmaster@example.org"),
        subject: String::from("Undeliverable"),
        received_at: at(3600),
        raw: b"From: postmaster@example.org\r\n\r\nbody".to_vec(),
        reason: String::from("test"),
        candidate_ids: Vec::new(),
        recipient_e164: None,
        effect: Effect::None,
    }
}

/// Submits, claims and sends a message to +447700900`number` with the given SMTP Message-ID, sent at `sent_at`
/// seconds after t0.
async fn sent_message(fixture: &Fixture, number: u32, smtp_message_id: &str, sent_at: i64) -> String {
    let mut message = new_message(number);
    message.send_after = Some(at(sent_at));
    let id = fixture.store.submit(vec![message]).await.unwrap().remove(0).message.id;
    fixture.store.claim_next(at(sent_at)).await.unwrap().unwrap();
    fixture.store.mark_data_started(&id, smtp_message_id, at(sent_at)).await.unwrap();
    fixture.store.mark_sent(&id, at(sent_at), "250 ok").await.unwrap();
    id
}

async fn status_of(store: &Store, id: &str) -> MessageStatus {
    store.get_message(id).await.unwrap().unwrap().0.status
}

#[tokio::test]
async fn same_uid_is_recorded_once() {
    let fixture = open_store();

    let first = fixture.store.record_inbound(email(7, 1, "a@example.org"), t0()).await.unwrap();
    let second = fixture.store.record_inbound(email(7, 1, "b@example.org"), t0()).await.unwrap();

    assert!(matches!(first, InboundOutcome::Recorded { .. }));
    assert_eq!(second, InboundOutcome::AlreadySeen);
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM inbound_mail"), 1);
}

#[tokio::test]
async fn message_id_guards_new_uidvalidity() {
    let fixture = open_store();
    fixture.store.record_inbound(email(7, 1, "<a@example.org>"), t0()).await.unwrap();
    fixture.store.reset_imap_state(INBOX, 8).await.unwrap();

    let again = fixture.store.record_inbound(email(8, 1, "a@example.org"), t0()).await.unwrap();

    assert_eq!(again, InboundOutcome::AlreadySeen);
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM inbound_mail"), 1);
}

#[tokio::test]
async fn emails_without_message_id_are_distinct() {
    let fixture = open_store();
    fixture.store.record_inbound(email(7, 1, ""), t0()).await.unwrap();
    fixture.store.record_inbound(email(7, 2, ""), t0()).await.unwrap();

    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM inbound_mail"), 2);
}

#[tokio::test]
async fn record_advances_last_uid() {
    let fixture = open_store();
    assert_eq!(fixture.store.imap_state(INBOX).await.unwrap(), None);

    fixture.store.record_inbound(email(7, 5, "a@example.org"), t0()).await.unwrap();
    fixture.store.record_inbound(email(7, 3, "b@example.org"), t0()).await.unwrap();

    let state = fixture.store.imap_state(INBOX).await.unwrap();
    assert_eq!(state, Some(ImapState { uidvalidity: 7, last_uid: 5 }));
}

#[tokio::test]
async fn already_seen_still_advances_last_uid() {
    let fixture = open_store();
    fixture.store.record_inbound(email(7, 1, "a@example.org"), t0()).await.unwrap();
    fixture.store.reset_imap_state(INBOX, 8).await.unwrap();

    let outcome = fixture.store.record_inbound(email(8, 4, "a@example.org"), t0()).await.unwrap();

    assert_eq!(outcome, InboundOutcome::AlreadySeen);
    let state = fixture.store.imap_state(INBOX).await.unwrap();
    assert_eq!(state, Some(ImapState { uidvalidity: 8, last_uid: 4 }));
}

#[tokio::test]
async fn reset_restarts_from_uid_zero() {
    let fixture = open_store();
    fixture.store.record_inbound(email(7, 9, "a@example.org"), t0()).await.unwrap();

    fixture.store.reset_imap_state(INBOX, 8).await.unwrap();

    let state = fixture.store.imap_state(INBOX).await.unwrap();
    assert_eq!(state, Some(ImapState { uidvalidity: 8, last_uid: 0 }));
}

#[tokio::test]
async fn failure_report_fails_matched_message() {
    let fixture = open_store();
    let id = sent_message(&fixture, 1, "<sent-1@example.org>", 0).await;
    let mut report = email(7, 1, "report-1@example.org");
    report.kind = String::from("failure_report");
    report.candidate_ids = vec![String::from("unknown@example.org"), String::from("<sent-1@example.org>")];
    report.effect = Effect::Failed { reason: String::from("5.1.1 number not recognised") };

    let outcome = fixture.store.record_inbound(report, at(4000)).await.unwrap();

    assert_eq!(outcome, InboundOutcome::Recorded { matched_message_id: Some(id.clone()), status_changed: true });
    let (message, events) = fixture.store.get_message(&id).await.unwrap().unwrap();
    assert_eq!(message.status, MessageStatus::Failed);
    assert_eq!(message.status_reason, "5.1.1 number not recognised");
    assert_eq!(events.last().unwrap().at, at(4000));
}

#[tokio::test]
async fn failure_report_fails_uncertain_message() {
    let fixture = open_store();
    let id = fixture.store.submit(vec![new_message(1)]).await.unwrap().remove(0).message.id;
    fixture.store.claim_next(t0()).await.unwrap();
    fixture.store.mark_data_started(&id, "sent-1@example.org", t0()).await.unwrap();
    fixture.store.mark_uncertain(&id, t0(), "connection reset").await.unwrap();
    let mut report = email(7, 1, "report-1@example.org");
    report.candidate_ids = vec![String::from("sent-1@example.org")];
    report.effect = Effect::Failed { reason: String::from("unknown number") };

    fixture.store.record_inbound(report, at(60)).await.unwrap();

    assert_eq!(status_of(&fixture.store, &id).await, MessageStatus::Failed);
}

#[tokio::test]
async fn receipt_delivers_matched_message() {
    let fixture = open_store();
    let id = sent_message(&fixture, 1, "sent-1@example.org", 0).await;
    let mut receipt = email(7, 1, "receipt-1@example.org");
    receipt.candidate_ids = vec![String::from("sent-1@example.org")];
    receipt.effect = Effect::Delivered;

    fixture.store.record_inbound(receipt, at(60)).await.unwrap();

    assert_eq!(status_of(&fixture.store, &id).await, MessageStatus::Delivered);
}

#[tokio::test]
async fn report_for_final_message_is_kept() {
    let fixture = open_store();
    let id = sent_message(&fixture, 1, "sent-1@example.org", 0).await;
    let mut receipt = email(7, 1, "receipt-1@example.org");
    receipt.candidate_ids = vec![String::from("sent-1@example.org")];
    receipt.effect = Effect::Delivered;
    fixture.store.record_inbound(receipt, at(60)).await.unwrap();
    let mut late_report = email(7, 2, "report-1@example.org");
    late_report.candidate_ids = vec![String::from("sent-1@example.org")];
    late_report.effect = Effect::Failed { reason: String::from("late") };

    let outcome = fixture.store.record_inbound(late_report, at(120)).await.unwrap();

    assert_eq!(outcome, InboundOutcome::Recorded { matched_message_id: Some(id.clone()), status_changed: false });
    assert_eq!(status_of(&fixture.store, &id).await, MessageStatus::Delivered);
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM inbound_mail"), 2);
}

#[tokio::test]
async fn unmatched_report_is_stored() {
    let fixture = open_store();
    let mut report = email(7, 1, "report-1@example.org");
    report.candidate_ids = vec![String::from("unknown@example.org")];
    report.effect = Effect::Failed { reason: String::from("unknown") };

    let outcome = fixture.store.record_inbound(report, t0()).await.unwrap();

    assert_eq!(outcome, InboundOutcome::Recorded { matched_message_id: None, status_changed: false });
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM inbound_mail"), 1);
}

fn reply(uid: u32, from_e164: &str, received_after: i64) -> InboundRecord {
    let mut record = email(7, uid, &format!("reply-{uid}@example.org"));
    record.kind = String::from("reply");
    record.received_at = at(received_after);
    record.effect = Effect::Reply {
        from_e164: String::from(from_e164),
        text: String::from("Yes, I can come"),
        raw_text: String::from("Yes, I can come\n\nSent from my phone"),
        opt_out: None,
    };
    record
}

#[tokio::test]
async fn reply_matches_by_candidate() {
    let fixture = open_store();
    let first = sent_message(&fixture, 1, "sent-1@example.org", 0).await;
    sent_message(&fixture, 1, "sent-2@example.org", 60).await;
    let mut answer = reply(1, "+447700900001", 120);
    answer.candidate_ids = vec![String::from("sent-1@example.org")];

    let outcome = fixture.store.record_inbound(answer, at(120)).await.unwrap();

    assert_eq!(outcome, InboundOutcome::Recorded { matched_message_id: Some(first.clone()), status_changed: false });
    let (replies, _) = fixture.store.list_replies(ReplyFilter::default(), 0, None).await.unwrap();
    assert_eq!(replies[0].message_id, Some(first));
    assert_eq!(replies[0].email_message_id.as_deref(), Some("reply-1@example.org"));
}

#[tokio::test]
async fn reply_matches_latest_sent_to_number() {
    let fixture = open_store();
    sent_message(&fixture, 1, "sent-1@example.org", 0).await;
    let latest = sent_message(&fixture, 1, "sent-2@example.org", 60).await;
    sent_message(&fixture, 2, "sent-3@example.org", 90).await;

    let outcome = fixture.store.record_inbound(reply(1, "+447700900001", 120), at(120)).await.unwrap();

    assert_eq!(outcome, InboundOutcome::Recorded { matched_message_id: Some(latest), status_changed: false });
}

#[tokio::test]
async fn reply_after_window_is_unmatched() {
    let fixture = open_store();
    sent_message(&fixture, 1, "sent-1@example.org", 0).await;
    let eight_days = TimeDelta::days(8).num_seconds();

    let outcome = fixture.store.record_inbound(reply(1, "+447700900001", eight_days), at(eight_days)).await.unwrap();

    assert_eq!(outcome, InboundOutcome::Recorded { matched_message_id: None, status_changed: false });
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM replies"), 1);
}

#[tokio::test]
async fn replies_filter_and_page() {
    let fixture = open_store();
    let sent = sent_message(&fixture, 1, "sent-1@example.org", 0).await;
    fixture.store.record_inbound(reply(1, "+447700900001", 10), at(10)).await.unwrap();
    fixture.store.record_inbound(reply(2, "+447700900002", 20), at(20)).await.unwrap();
    fixture.store.record_inbound(reply(3, "+447700900001", 30), at(30)).await.unwrap();

    let from_first = ReplyFilter { from_e164: Some(String::from("+447700900001")), ..ReplyFilter::default() };
    let (page, token) = fixture.store.list_replies(from_first.clone(), 1, None).await.unwrap();
    let (next, last_token) = fixture.store.list_replies(from_first, 1, token.as_deref()).await.unwrap();
    assert_eq!(page[0].received_at, at(30));
    assert_eq!(next[0].received_at, at(10));
    assert_eq!(last_token, None);

    let for_message = ReplyFilter { message_id: Some(sent), ..ReplyFilter::default() };
    let (matched, _) = fixture.store.list_replies(for_message, 0, None).await.unwrap();
    assert_eq!(matched.len(), 2);

    let recent = ReplyFilter { since: Some(at(20)), ..ReplyFilter::default() };
    let (recent, _) = fixture.store.list_replies(recent, 0, None).await.unwrap();
    assert_eq!(recent.len(), 2);
}

#[tokio::test]
async fn reread_email_without_message_id_is_seen() {
    let fixture = open_store();
    fixture.store.record_inbound(email(7, 1, ""), t0()).await.unwrap();
    fixture.store.reset_imap_state(INBOX, 8).await.unwrap();

    let again = fixture.store.record_inbound(email(8, 1, ""), t0()).await.unwrap();

    assert_eq!(again, InboundOutcome::AlreadySeen);
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM inbound_mail"), 1);
}

fn failure_report_for_number(uid: u32, e164: &str, received_after: i64) -> InboundRecord {
    let mut record = email(7, uid, &format!("report-{uid}@example.org"));
    record.kind = String::from("failure_report");
    record.received_at = at(received_after);
    record.recipient_e164 = Some(String::from(e164));
    record.effect = Effect::Failed { reason: String::from("failure report: 5.1.1") };
    record
}

#[tokio::test]
async fn report_without_id_matches_by_number() {
    let fixture = open_store();
    let id = sent_message(&fixture, 21, "sent-21@example.org", 60).await;

    let outcome = fixture.store.record_inbound(failure_report_for_number(1, "+447700900021", 120), t0()).await.unwrap();

    assert_eq!(outcome, InboundOutcome::Recorded { matched_message_id: Some(id.clone()), status_changed: true });
    assert_eq!(status_of(&fixture.store, &id).await, MessageStatus::Failed);
}

#[tokio::test]
async fn ambiguous_report_matches_nothing() {
    let fixture = open_store();
    let first = sent_message(&fixture, 22, "sent-22a@example.org", 60).await;
    let second = sent_message(&fixture, 22, "sent-22b@example.org", 70).await;

    let outcome = fixture.store.record_inbound(failure_report_for_number(1, "+447700900022", 120), t0()).await.unwrap();

    assert_eq!(outcome, InboundOutcome::Recorded { matched_message_id: None, status_changed: false });
    assert_eq!(status_of(&fixture.store, &first).await, MessageStatus::Sent);
    assert_eq!(status_of(&fixture.store, &second).await, MessageStatus::Sent);
}
