use super::{at, new_message, open_store, query_count, t0};
use crate::store::{Effect, InboundRecord, OptOutSource, StoreError};

/// Returns a patient reply from +447700900`number` with the given text and opt-out effect.
fn reply(uid: u32, number: u32, text: &str, opt_out: Option<bool>) -> InboundRecord {
    InboundRecord {
        mailbox: String::from("INBOX"),
        uidvalidity: 1,
        uid,
        email_message_id: format!("reply-{uid}@sms.nhs.net"),
        kind: String::from("reply"),
        from: format!("07700900{number:03}@sms.nhs.net"),
        subject: String::new(),
        received_at: at(60),
        raw: text.as_bytes().to_vec(),
        reason: String::from("test"),
        candidate_ids: Vec::new(),
        recipient_e164: None,
        effect: Effect::Reply {
            from_e164: format!("+447700900{number:03}"),
            text: text.to_string(),
            raw_text: text.to_string(),
            opt_out,
        },
    }
}

#[tokio::test]
async fn stop_reply_blocks_submission() {
    let fixture = open_store();
    fixture.store.record_inbound(reply(1, 5, "STOP", Some(true)), t0()).await.unwrap();

    let error = fixture.store.submit(vec![new_message(5)]).await.unwrap_err();
    match error {
        StoreError::OptedOut { index, e164, since } => {
            assert_eq!(index, 0);
            assert_eq!(e164, "+447700900005");
            assert_eq!(since, at(60));
        }
        other => panic!("expected OptedOut, got {other:?}"),
    }
}

#[tokio::test]
async fn opted_out_number_fails_whole_batch() {
    let fixture = open_store();
    fixture.store.add_opt_out("+447700900007", OptOutSource::Manual, "", t0()).await.unwrap();

    let batch = vec![new_message(6), new_message(7), new_message(8)];
    let error = fixture.store.submit(batch).await.unwrap_err();

    assert!(matches!(error, StoreError::OptedOut { index: 1, .. }), "{error:?}");
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM messages"), 0);
}

#[tokio::test]
async fn start_reply_opts_back_in() {
    let fixture = open_store();
    fixture.store.record_inbound(reply(1, 5, "STOP", Some(true)), t0()).await.unwrap();
    fixture.store.record_inbound(reply(2, 5, "Start", Some(false)), t0()).await.unwrap();

    assert!(fixture.store.opt_out("+447700900005").await.unwrap().is_none());
    assert_eq!(fixture.store.submit(vec![new_message(5)]).await.unwrap().len(), 1);
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM opt_out_events"), 2);
}

#[tokio::test]
async fn ordinary_reply_changes_no_opt_out() {
    let fixture = open_store();
    fixture.store.record_inbound(reply(1, 5, "Yes please", None), t0()).await.unwrap();

    assert!(fixture.store.opt_out("+447700900005").await.unwrap().is_none());
}

#[tokio::test]
async fn repeated_opt_out_keeps_first_date() {
    let fixture = open_store();
    fixture.store.add_opt_out("+447700900005", OptOutSource::Manual, "asked at reception", at(10)).await.unwrap();
    let again = fixture.store.add_opt_out("+447700900005", OptOutSource::Reply, "", at(20)).await.unwrap();

    assert_eq!(again.opted_out_at, at(10));
    assert_eq!(again.source, "manual");
    assert_eq!(again.note, "asked at reception");
}

#[tokio::test]
async fn opt_outs_page_newest_first() {
    let fixture = open_store();
    for number in 0..5 {
        fixture
            .store
            .add_opt_out(&format!("+447700900{number:03}"), OptOutSource::Manual, "", at(number))
            .await
            .unwrap();
    }

    let (first, token) = fixture.store.list_opt_outs(3, None).await.unwrap();
    let (second, end) = fixture.store.list_opt_outs(3, token.as_deref()).await.unwrap();

    let numbers: Vec<_> = first.iter().chain(second.iter()).map(|opt_out| opt_out.e164.as_str()).collect();
    assert_eq!(numbers, ["+447700900004", "+447700900003", "+447700900002", "+447700900001", "+447700900000"]);
    assert!(end.is_none());
}

#[tokio::test]
async fn removing_unknown_number_reports_false() {
    let fixture = open_store();
    let removed = fixture.store.remove_opt_out("+447700900005", OptOutSource::Manual, "", t0()).await.unwrap();
    assert!(!removed);
}
