use super::{open_store, t0};
use crate::store::AuditEvent;

fn event(action: &str, minutes: i64) -> AuditEvent {
    AuditEvent {
        at: t0() + chrono::TimeDelta::minutes(minutes),
        caller: "practice-manager".into(),
        role: "operator".into(),
        peer: Some("127.0.0.1:50000".into()),
        action: action.into(),
        target: String::new(),
        outcome: "ok".into(),
        detail: None,
    }
}

#[tokio::test]
async fn audit_rows_list_newest_first() {
    let fixture = open_store();
    for (minutes, action) in ["UpdatePassword", "RotatePassword", "RevealPassword"].into_iter().enumerate() {
        fixture.store.record_audit(event(action, minutes as i64)).await.unwrap();
    }

    let listed = fixture.store.list_audit(None, 10).await.unwrap();
    let actions: Vec<&str> = listed.iter().map(|record| record.event.action.as_str()).collect();
    assert_eq!(actions, ["RevealPassword", "RotatePassword", "UpdatePassword"]);
}

#[tokio::test]
async fn audit_listing_pages_by_id() {
    let fixture = open_store();
    for minutes in 0..5 {
        fixture.store.record_audit(event("UpdateConnectivity", minutes)).await.unwrap();
    }

    let first = fixture.store.list_audit(None, 2).await.unwrap();
    let next = fixture.store.list_audit(Some(first[1].id), 10).await.unwrap();
    assert_eq!((first.len(), next.len()), (2, 3));
}

#[tokio::test]
async fn audit_row_keeps_every_field() {
    let fixture = open_store();
    let written = event("RevealPassword", 0);
    fixture.store.record_audit(written.clone()).await.unwrap();

    let listed = fixture.store.list_audit(None, 1).await.unwrap();
    assert_eq!(listed[0].event, written);
}
