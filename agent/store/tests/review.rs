use super::{at, open_store, t0};
use crate::store::{Effect, InboundRecord, StoreError};

fn inbound(uid: u32, kind: &str, candidate: Option<&str>) -> InboundRecord {
    InboundRecord {
        mailbox: String::from("INBOX"),
        uidvalidity: 1,
        uid,
        email_message_id: format!("mail-{uid}@example.org"),
        kind: String::from(kind),
        from: String::from("someone@example.org"),
        subject: format!("Email {uid}"),
        received_at: at(i64::from(uid)),
        raw: format!("Subject: Email {uid}\r\n\r\nbody").into_bytes(),
        reason: String::from("test"),
        candidate_ids: candidate.map(|id| vec![id.to_string()]).unwrap_or_default(),
        recipient_e164: None,
        effect: if kind == "failure_report" { Effect::Failed { reason: "5.1.1".into() } } else { Effect::None },
    }
}

#[tokio::test]
async fn review_lists_unclassified_and_unmatched() {
    let fixture = open_store();
    fixture.store.record_inbound(inbound(1, "other", None), t0()).await.unwrap();
    fixture.store.record_inbound(inbound(2, "failure_report", Some("unknown@example.org")), t0()).await.unwrap();
    fixture.store.record_inbound(inbound(3, "auto_reply", None), t0()).await.unwrap();

    let (emails, next) = fixture.store.list_inbound_for_review(false, 10, None).await.unwrap();
    let subjects: Vec<_> = emails.iter().map(|email| email.subject.as_str()).collect();
    assert_eq!(subjects, ["Email 3", "Email 2", "Email 1"]);
    assert!(next.is_none());
}

#[tokio::test]
async fn reviewed_email_leaves_the_list() {
    let fixture = open_store();
    fixture.store.record_inbound(inbound(1, "other", None), t0()).await.unwrap();
    let (emails, _) = fixture.store.list_inbound_for_review(false, 10, None).await.unwrap();

    let marked = fixture.store.mark_reviewed(emails[0].id).await.unwrap();
    assert!(marked.reviewed);
    assert!(fixture.store.list_inbound_for_review(false, 10, None).await.unwrap().0.is_empty());
    assert_eq!(fixture.store.list_inbound_for_review(true, 10, None).await.unwrap().0.len(), 1);
}

#[tokio::test]
async fn raw_email_is_kept_unchanged() {
    let fixture = open_store();
    fixture.store.record_inbound(inbound(1, "other", None), t0()).await.unwrap();
    let (emails, _) = fixture.store.list_inbound_for_review(false, 10, None).await.unwrap();

    let email = fixture.store.inbound_email(emails[0].id).await.unwrap().unwrap();
    assert_eq!(email.raw.unwrap(), b"Subject: Email 1\r\n\r\nbody");
}

#[tokio::test]
async fn unknown_email_cannot_be_marked() {
    let fixture = open_store();
    let error = fixture.store.mark_reviewed(99).await.unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
}
