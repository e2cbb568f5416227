use std::collections::HashSet;

use chrono::TimeDelta;

use super::{Fixture, at, new_message, open_store, query_count, t0};
use crate::queue::{MessageStatus, Priority};
use crate::store::{NewMessage, RecoveryCounts, Store, StoreError};

async fn submit_one(store: &Store, message: NewMessage) -> String {
    let mut results = store.submit(vec![message]).await.unwrap();
    results.remove(0).message.id
}

async fn status_of(store: &Store, id: &str) -> MessageStatus {
    store.get_message(id).await.unwrap().unwrap().0.status
}

/// Submits one message and claims it, leaving it in `sending`.
async fn sending_message(fixture: &Fixture, number: u32) -> String {
    let id = submit_one(&fixture.store, new_message(number)).await;
    let claimed = fixture.store.claim_next(t0()).await.unwrap().unwrap();
    assert_eq!(claimed.id, id);
    id
}

#[tokio::test]
async fn submit_returns_queued_record() {
    let fixture = open_store();
    let results = fixture.store.submit(vec![new_message(123)]).await.unwrap();

    let submitted = &results[0];
    assert!(!submitted.duplicate);
    assert_eq!(submitted.message.status, MessageStatus::Queued);
    assert_eq!(submitted.message.to_e164, "+447700900123");
    assert_eq!(submitted.message.send_after, t0());
    assert_eq!(uuid::Uuid::parse_str(&submitted.message.id).unwrap().get_version_num(), 7);

    let (stored, _) = fixture.store.get_message(&submitted.message.id).await.unwrap().unwrap();
    assert_eq!(stored, submitted.message);
}

#[tokio::test]
async fn repeated_key_returns_first_message() {
    let fixture = open_store();
    let mut message = new_message(1);
    message.idempotency_key = String::from("appointment-42");
    let first = fixture.store.submit(vec![message.clone()]).await.unwrap().remove(0);

    message.text = String::from("A different text for the same key.");
    let second = fixture.store.submit(vec![message]).await.unwrap().remove(0);

    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(second.message, first.message);
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM messages"), 1);
}

#[tokio::test]
async fn same_key_other_caller_is_new() {
    let fixture = open_store();
    let mut message = new_message(1);
    message.idempotency_key = String::from("appointment-42");
    let mut other = message.clone();
    other.caller = String::from("recall-script");

    let results = fixture.store.submit(vec![message, other]).await.unwrap();

    assert!(!results[0].duplicate);
    assert!(!results[1].duplicate);
    assert_ne!(results[0].message.id, results[1].message.id);
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM messages"), 2);
}

#[tokio::test]
async fn repeated_key_within_batch_is_duplicate() {
    let fixture = open_store();
    let mut message = new_message(1);
    message.idempotency_key = String::from("batch-key");

    let results = fixture.store.submit(vec![message.clone(), message]).await.unwrap();

    assert!(!results[0].duplicate);
    assert!(results[1].duplicate);
    assert_eq!(results[1].message.id, results[0].message.id);
}

#[tokio::test]
async fn empty_keys_never_collide() {
    let fixture = open_store();
    let results = fixture.store.submit(vec![new_message(1), new_message(1)]).await.unwrap();

    assert!(results.iter().all(|result| !result.duplicate));
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM messages"), 2);
}

#[tokio::test]
async fn failing_batch_stores_nothing() {
    let fixture = open_store();
    let mut invalid = new_message(3);
    invalid.encoding = String::from("utf8");

    let result = fixture.store.submit(vec![new_message(1), new_message(2), invalid]).await;

    assert!(result.is_err());
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM messages"), 0);
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM message_events"), 0);
}

#[tokio::test]
async fn repeated_id_is_conflict() {
    let fixture = open_store();
    let mut message = new_message(1);
    message.id = Some(String::from("0190a0d6-0000-7000-8000-000000000001"));

    let error = fixture.store.submit(vec![message.clone(), message]).await.unwrap_err();

    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM messages"), 0);
}

#[tokio::test]
async fn claim_takes_urgent_normal_bulk() {
    let fixture = open_store();
    let mut batch = Vec::new();
    for (number, priority) in [(1, Priority::Bulk), (2, Priority::Normal), (3, Priority::Urgent)] {
        let mut message = new_message(number);
        message.priority = priority;
        batch.push(message);
    }
    fixture.store.submit(batch).await.unwrap();

    let mut order = Vec::new();
    while let Some(claimed) = fixture.store.claim_next(t0()).await.unwrap() {
        order.push(claimed.priority);
    }
    assert_eq!(order, [Priority::Urgent, Priority::Normal, Priority::Bulk]);
}

#[tokio::test]
async fn claim_waits_for_send_after() {
    let fixture = open_store();
    let mut later = new_message(1);
    later.send_after = Some(at(600));
    submit_one(&fixture.store, later).await;

    assert_eq!(fixture.store.claim_next(at(599)).await.unwrap(), None);
    assert!(fixture.store.claim_next(at(600)).await.unwrap().is_some());
}

#[tokio::test]
async fn claim_skips_expired_message() {
    let fixture = open_store();
    let mut short_lived = new_message(1);
    short_lived.expires_at = at(60);
    submit_one(&fixture.store, short_lived).await;

    assert_eq!(fixture.store.claim_next(at(60)).await.unwrap(), None);
}

#[tokio::test]
async fn claim_orders_by_due_time_then_age() {
    let fixture = open_store();
    let mut due_late = new_message(1);
    due_late.created_at = at(-5);
    due_late.send_after = Some(at(30));
    let mut due_early_newer = new_message(2);
    due_early_newer.send_after = Some(at(10));
    let mut due_early_older = new_message(3);
    due_early_older.created_at = at(-10);
    due_early_older.send_after = Some(at(10));
    fixture.store.submit(vec![due_late, due_early_newer, due_early_older]).await.unwrap();

    let mut order = Vec::new();
    while let Some(claimed) = fixture.store.claim_next(at(60)).await.unwrap() {
        order.push(claimed.to_e164);
    }
    assert_eq!(order, ["+447700900003", "+447700900002", "+447700900001"]);
}

#[tokio::test]
async fn claim_counts_attempts() {
    let fixture = open_store();
    let id = sending_message(&fixture, 1).await;
    fixture.store.mark_retry(&id, at(30), t0(), "421 try later").await.unwrap();

    let claimed = fixture.store.claim_next(at(30)).await.unwrap().unwrap();
    assert_eq!(claimed.attempts, 2);
    assert_eq!(claimed.status, MessageStatus::Sending);
}

#[tokio::test]
async fn retry_waits_for_next_attempt() {
    let fixture = open_store();
    let id = sending_message(&fixture, 1).await;

    fixture.store.mark_retry(&id, at(30), t0(), "421 try later").await.unwrap();

    assert_eq!(fixture.store.claim_next(at(29)).await.unwrap(), None);
    assert_eq!(fixture.store.next_due_at(at(1)).await.unwrap(), Some(at(30)));
    assert!(fixture.store.claim_next(at(30)).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_share_message() {
    let fixture = open_store();
    let batch: Vec<_> = (0..500).map(new_message).collect();
    fixture.store.submit(batch).await.unwrap();

    let claimers: Vec<_> = (0..2)
        .map(|_| {
            let store = fixture.store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while let Some(claimed) = store.claim_next(t0()).await.unwrap() {
                    ids.push(claimed.id);
                }
                ids
            })
        })
        .collect();
    let mut all_ids = Vec::new();
    for claimer in claimers {
        all_ids.extend(claimer.await.unwrap());
    }

    let distinct: HashSet<_> = all_ids.iter().collect();
    assert_eq!(all_ids.len(), 500);
    assert_eq!(distinct.len(), 500);
}

#[tokio::test]
async fn every_transition_writes_event() {
    let fixture = open_store();
    let id = sending_message(&fixture, 1).await;
    fixture.store.mark_data_started(&id, "<abc@example.org>", at(1)).await.unwrap();
    fixture.store.mark_sent(&id, at(2), "250 queued").await.unwrap();

    let (message, events) = fixture.store.get_message(&id).await.unwrap().unwrap();

    let steps: Vec<_> = events.iter().map(|event| (event.from_status, event.to_status)).collect();
    assert_eq!(
        steps,
        [
            (None, MessageStatus::Queued),
            (Some(MessageStatus::Queued), MessageStatus::Sending),
            (Some(MessageStatus::Sending), MessageStatus::Sent),
        ]
    );
    assert_eq!(events[2].reason, "250 queued");
    assert_eq!(events[2].at, at(2));
    assert_eq!(message.sent_at, Some(at(2)));
    assert_eq!(message.smtp_message_id.as_deref(), Some("abc@example.org"));
    assert_eq!(message.status_reason, "250 queued");
}

#[tokio::test]
async fn failed_and_uncertain_write_events() {
    let fixture = open_store();
    let failed = sending_message(&fixture, 1).await;
    fixture.store.mark_failed(&failed, at(1), "550 no such recipient").await.unwrap();
    let uncertain = sending_message(&fixture, 2).await;
    fixture.store.mark_uncertain(&uncertain, at(1), "connection reset after DATA").await.unwrap();

    for (id, status) in [(failed, MessageStatus::Failed), (uncertain, MessageStatus::Uncertain)] {
        let (_, events) = fixture.store.get_message(&id).await.unwrap().unwrap();
        let last = events.last().unwrap();
        assert_eq!(last.from_status, Some(MessageStatus::Sending));
        assert_eq!(last.to_status, status);
    }
}

#[tokio::test]
async fn invalid_transition_changes_nothing() {
    let fixture = open_store();
    let id = submit_one(&fixture.store, new_message(1)).await;

    let error = fixture.store.mark_sent(&id, at(1), "250 queued").await.unwrap_err();

    assert!(
        matches!(error, StoreError::InvalidTransition { from: MessageStatus::Queued, to: MessageStatus::Sent, .. }),
        "{error:?}"
    );
    assert_eq!(status_of(&fixture.store, &id).await, MessageStatus::Queued);
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM message_events"), 1);
}

#[tokio::test]
async fn cancel_stops_queued_message() {
    let fixture = open_store();
    let id = submit_one(&fixture.store, new_message(1)).await;

    let cancelled = fixture.store.cancel(&id, at(1), "cancelled by practice").await.unwrap();

    assert_eq!(cancelled.status, MessageStatus::Cancelled);
    assert_eq!(fixture.store.claim_next(at(2)).await.unwrap(), None);
}

#[tokio::test]
async fn cancel_names_current_state() {
    let fixture = open_store();
    let id = sending_message(&fixture, 1).await;

    let error = fixture.store.cancel(&id, at(1), "cancelled by practice").await.unwrap_err();

    assert!(error.to_string().contains("is sending"), "{error}");
    assert_eq!(status_of(&fixture.store, &id).await, MessageStatus::Sending);
}

#[tokio::test]
async fn unknown_message_is_not_found() {
    let fixture = open_store();

    let error = fixture.store.cancel("no-such-id", t0(), "test").await.unwrap_err();

    assert!(matches!(error, StoreError::NotFound { what: "message", .. }), "{error:?}");
    assert_eq!(fixture.store.get_message("no-such-id").await.unwrap(), None);
}

#[tokio::test]
async fn data_started_requires_sending() {
    let fixture = open_store();
    let id = submit_one(&fixture.store, new_message(1)).await;

    let error = fixture.store.mark_data_started(&id, "abc@example.org", t0()).await.unwrap_err();

    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
}

#[tokio::test]
async fn release_does_not_count_attempt() {
    let fixture = open_store();
    let id = sending_message(&fixture, 1).await;

    fixture.store.release(&id, at(1), "authentication failed").await.unwrap();

    let (message, events) = fixture.store.get_message(&id).await.unwrap().unwrap();
    assert_eq!(message.status, MessageStatus::Queued);
    assert_eq!(message.attempts, 0);
    assert_eq!(message.next_attempt_at, None);
    assert_eq!(events.last().unwrap().reason, "authentication failed");
}

#[tokio::test]
async fn retry_clears_data_started() {
    let fixture = open_store();
    let id = sending_message(&fixture, 1).await;
    fixture.store.mark_data_started(&id, "abc@example.org", at(1)).await.unwrap();

    fixture.store.mark_retry(&id, at(31), at(1), "451 try later").await.unwrap();

    let (message, _) = fixture.store.get_message(&id).await.unwrap().unwrap();
    assert_eq!(message.data_started_at, None);
    assert_eq!(message.next_attempt_at, Some(at(31)));
}

#[tokio::test]
async fn expire_due_expires_past_messages() {
    let fixture = open_store();
    let mut short_lived = new_message(1);
    short_lived.expires_at = at(60);
    let short_id = submit_one(&fixture.store, short_lived).await;
    let long_id = submit_one(&fixture.store, new_message(2)).await;

    let expired = fixture.store.expire_due(at(60)).await.unwrap();

    assert_eq!(expired, 1);
    assert_eq!(status_of(&fixture.store, &short_id).await, MessageStatus::Expired);
    assert_eq!(status_of(&fixture.store, &long_id).await, MessageStatus::Queued);
    let (_, events) = fixture.store.get_message(&short_id).await.unwrap().unwrap();
    assert_eq!(events.last().unwrap().to_status, MessageStatus::Expired);
}

#[tokio::test]
async fn recovery_splits_by_data_started() {
    let fixture = open_store();
    let before_data = sending_message(&fixture, 1).await;
    let after_data = sending_message(&fixture, 2).await;
    fixture.store.mark_data_started(&after_data, "abc@example.org", at(1)).await.unwrap();

    let counts = fixture.store.recover_interrupted(at(10)).await.unwrap();

    assert_eq!(counts, RecoveryCounts { requeued: 1, uncertain: 1 });
    assert_eq!(status_of(&fixture.store, &before_data).await, MessageStatus::Queued);
    assert_eq!(status_of(&fixture.store, &after_data).await, MessageStatus::Uncertain);
    for id in [before_data, after_data] {
        let (_, events) = fixture.store.get_message(&id).await.unwrap().unwrap();
        assert_eq!(events.len(), 3, "events of {id}");
        assert_eq!(events[2].at, at(10));
    }
}

#[tokio::test]
async fn list_pages_newest_first() {
    let fixture = open_store();
    let batch: Vec<_> = (0..5).map(new_message).collect();
    let ids: Vec<_> = fixture.store.submit(batch).await.unwrap().into_iter().map(|s| s.message.id).collect();

    let (first, token) = fixture.store.list_messages(None, 2, None).await.unwrap();
    let (second, token) = fixture.store.list_messages(None, 2, token.as_deref()).await.unwrap();
    let (third, token) = fixture.store.list_messages(None, 2, token.as_deref()).await.unwrap();

    let listed: Vec<_> = first.iter().chain(&second).chain(&third).map(|m| m.id.clone()).collect();
    let newest_first: Vec<_> = ids.into_iter().rev().collect();
    assert_eq!(listed, newest_first);
    assert_eq!(token, None);
}

#[tokio::test]
async fn list_filters_by_status() {
    let fixture = open_store();
    fixture.store.submit((0..3).map(new_message).collect()).await.unwrap();
    let claimed = fixture.store.claim_next(t0()).await.unwrap().unwrap();

    let (sending, token) = fixture.store.list_messages(Some(MessageStatus::Sending), 0, None).await.unwrap();
    let (queued, _) = fixture.store.list_messages(Some(MessageStatus::Queued), 0, None).await.unwrap();

    assert_eq!(sending.iter().map(|m| &m.id).collect::<Vec<_>>(), [&claimed.id]);
    assert_eq!(token, None);
    assert_eq!(queued.len(), 2);
}

#[tokio::test]
async fn list_rejects_invalid_token() {
    let fixture = open_store();

    let error = fixture.store.list_messages(None, 10, Some("abc")).await.unwrap_err();

    assert!(matches!(error, StoreError::InvalidPageToken(_)), "{error:?}");
}

#[tokio::test]
async fn counts_include_every_state() {
    let fixture = open_store();
    fixture.store.submit((0..3).map(new_message).collect()).await.unwrap();
    fixture.store.claim_next(t0()).await.unwrap();

    let counts = fixture.store.count_by_status().await.unwrap();

    assert_eq!(counts.len(), MessageStatus::ALL.len());
    assert!(counts.contains(&(MessageStatus::Queued, 2)));
    assert!(counts.contains(&(MessageStatus::Sending, 1)));
    assert!(counts.contains(&(MessageStatus::Delivered, 0)));
}

#[tokio::test]
async fn queue_times_reflect_messages() {
    let fixture = open_store();
    assert_eq!(fixture.store.oldest_queued_at().await.unwrap(), None);
    assert_eq!(fixture.store.last_sent_at().await.unwrap(), None);

    let mut older = new_message(1);
    older.created_at = at(-120);
    fixture.store.submit(vec![older, new_message(2)]).await.unwrap();
    let claimed = fixture.store.claim_next(t0()).await.unwrap().unwrap();
    fixture.store.mark_sent(&claimed.id, at(5), "250 ok").await.unwrap();

    assert_eq!(fixture.store.oldest_queued_at().await.unwrap(), Some(t0()));
    assert_eq!(fixture.store.last_sent_at().await.unwrap(), Some(at(5)));
}

#[tokio::test]
async fn next_due_ignores_never_due_messages() {
    let fixture = open_store();
    let mut too_late = new_message(1);
    too_late.send_after = Some(at(100));
    too_late.expires_at = at(50);
    let mut later = new_message(2);
    later.priority = Priority::Bulk;
    later.send_after = Some(at(300));
    fixture.store.submit(vec![too_late, later]).await.unwrap();

    assert_eq!(fixture.store.next_due_at(t0()).await.unwrap(), Some(at(300)));
}

#[tokio::test]
async fn reorder_counts_due_messages() {
    let fixture = open_store();
    let mut later = new_message(1);
    later.send_after = t0().checked_add_signed(TimeDelta::hours(1));
    fixture.store.submit(vec![later, new_message(2), new_message(3)]).await.unwrap();

    assert_eq!(fixture.store.reorder_queue(t0()).await.unwrap(), 2);
}
