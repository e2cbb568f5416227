use super::{at, open_store, t0};
use crate::store::{
    CredentialStatus, EncryptedPassword, PasswordHash, RotationRecord, StoreError, UploadCounts, UploadReport,
};

fn hash(byte: u8) -> PasswordHash {
    PasswordHash { salt: vec![byte; 16], hash: vec![byte; 32] }
}

fn encrypted(byte: u8) -> EncryptedPassword {
    EncryptedPassword { ciphertext: vec![byte; 40], nonce: vec![byte; 12] }
}

#[tokio::test]
async fn setting_round_trips() {
    let fixture = open_store();
    assert_eq!(fixture.store.get_setting("upload_interval_minutes").await.unwrap(), None);

    fixture.store.set_setting("upload_interval_minutes", "15", t0()).await.unwrap();
    fixture.store.set_setting("upload_interval_minutes", "30", at(1)).await.unwrap();

    assert_eq!(fixture.store.get_setting("upload_interval_minutes").await.unwrap().as_deref(), Some("30"));
    assert_eq!(
        fixture.store.list_settings().await.unwrap(),
        [(String::from("upload_interval_minutes"), String::from("30"))]
    );
}

#[tokio::test]
async fn deleted_setting_is_gone() {
    let fixture = open_store();
    fixture.store.set_setting("auto_manage", "false", t0()).await.unwrap();

    assert!(fixture.store.delete_setting("auto_manage").await.unwrap());
    assert!(!fixture.store.delete_setting("auto_manage").await.unwrap());
    assert_eq!(fixture.store.get_setting("auto_manage").await.unwrap(), None);
}

#[tokio::test]
async fn credential_round_trips() {
    let fixture = open_store();
    assert_eq!(fixture.store.load_credential().await.unwrap(), None);

    fixture.store.save_credential(encrypted(1), t0(), "ok").await.unwrap();
    let status = CredentialStatus {
        state: String::from("rejected"),
        last_error: Some(String::from("535 authentication failed")),
        last_success_at: Some(at(5)),
        rejected: true,
        failed_sign_ins: 1,
    };
    fixture.store.update_credential_status(status.clone()).await.unwrap();

    let record = fixture.store.load_credential().await.unwrap().unwrap();
    assert_eq!(record.password, encrypted(1));
    assert_eq!(record.set_at, t0());
    assert_eq!(record.status, status);
    assert_eq!(record.pending, None);
}

#[tokio::test]
async fn saving_password_clears_rejection() {
    let fixture = open_store();
    fixture.store.save_credential(encrypted(1), t0(), "ok").await.unwrap();
    let rejected = CredentialStatus {
        state: String::from("rejected"),
        last_error: Some(String::from("535")),
        last_success_at: None,
        rejected: true,
        failed_sign_ins: 1,
    };
    fixture.store.update_credential_status(rejected).await.unwrap();

    fixture.store.save_credential(encrypted(2), at(60), "ok").await.unwrap();

    let record = fixture.store.load_credential().await.unwrap().unwrap();
    assert!(!record.status.rejected);
    assert_eq!(record.status.last_error, None);
}

#[tokio::test]
async fn status_update_needs_credential() {
    let fixture = open_store();
    let status = CredentialStatus {
        state: String::from("ok"),
        last_error: None,
        last_success_at: None,
        rejected: false,
        failed_sign_ins: 0,
    };

    let error = fixture.store.update_credential_status(status).await.unwrap_err();

    assert!(matches!(error, StoreError::NotFound { what: "credential", .. }), "{error:?}");
}

#[tokio::test]
async fn pending_password_commits() {
    let fixture = open_store();
    fixture.store.save_credential(encrypted(1), t0(), "ok").await.unwrap();
    fixture.store.save_pending_credential(encrypted(2), at(10)).await.unwrap();

    let pending = fixture.store.load_credential().await.unwrap().unwrap().pending.unwrap();
    assert_eq!(pending.password, encrypted(2));
    assert_eq!(pending.created_at, at(10));

    fixture.store.commit_pending_credential(at(20), "ok", hash(2), "changed").await.unwrap();

    let record = fixture.store.load_credential().await.unwrap().unwrap();
    assert_eq!(record.password, encrypted(2));
    assert_eq!(record.rotation.state, "idle");
    assert_eq!(record.rotation.last_at, Some(at(20)));
    assert_eq!(fixture.store.password_history(4).await.unwrap(), [hash(2)]);
    assert_eq!(record.set_at, at(20));
    assert_eq!(record.status.last_success_at, Some(at(20)));
    assert_eq!(record.pending, None);
}

#[tokio::test]
async fn commit_without_pending_is_conflict() {
    let fixture = open_store();
    fixture.store.save_credential(encrypted(1), t0(), "ok").await.unwrap();

    let error = fixture.store.commit_pending_credential(at(20), "ok", hash(2), "changed").await.unwrap_err();

    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    assert_eq!(fixture.store.load_credential().await.unwrap().unwrap().password, encrypted(1));
}

#[tokio::test]
async fn discarded_pending_password_is_gone() {
    let fixture = open_store();
    fixture.store.save_credential(encrypted(1), t0(), "ok").await.unwrap();
    fixture.store.save_pending_credential(encrypted(2), at(10)).await.unwrap();

    let rotation = RotationRecord { state: "idle".into(), failures: 1, next_at: Some(at(20)), ..Default::default() };

    assert!(fixture.store.discard_pending_credential(rotation.clone(), Some(hash(2)), at(15)).await.unwrap());

    let record = fixture.store.load_credential().await.unwrap().unwrap();
    assert_eq!(record.pending, None);
    assert_eq!(record.password, encrypted(1));
    assert_eq!(record.rotation, rotation);
}

#[tokio::test]
async fn pending_password_marks_rotating() {
    let fixture = open_store();
    fixture.store.save_credential(encrypted(1), t0(), "ok").await.unwrap();
    fixture.store.save_pending_credential(encrypted(2), at(10)).await.unwrap();

    let record = fixture.store.load_credential().await.unwrap().unwrap();
    assert_eq!(record.rotation.state, "rotating");
}

#[tokio::test]
async fn history_keeps_refused_beyond_limit() {
    let fixture = open_store();
    fixture.store.save_credential(encrypted(1), t0(), "ok").await.unwrap();
    fixture.store.save_pending_credential(encrypted(9), at(1)).await.unwrap();
    fixture.store.discard_pending_credential(RotationRecord::default(), Some(hash(9)), at(2)).await.unwrap();
    for byte in 1..=5 {
        fixture.store.add_password_history(hash(byte), at(i64::from(byte) + 10)).await.unwrap();
    }

    let history = fixture.store.password_history(2).await.unwrap();
    assert_eq!(history, [hash(5), hash(4), hash(9)]);
}

#[test]
fn encrypted_password_debug_shows_size_only() {
    let debug = format!("{:?}", encrypted(0x41));
    assert_eq!(debug, "EncryptedPassword(40 bytes)");
}

#[tokio::test]
async fn upload_reports_round_trip() {
    let fixture = open_store();
    assert_eq!(fixture.store.last_upload_report().await.unwrap(), None);
    let first = UploadReport {
        started_at: t0(),
        finished_at: at(2),
        trigger: String::from("schedule"),
        counts: UploadCounts { collected: 4, receipts: 3, matched: 3, other: 1, ..UploadCounts::default() },
        errors: Vec::new(),
    };
    let second = UploadReport {
        started_at: at(900),
        finished_at: at(903),
        trigger: String::from("trigger"),
        counts: UploadCounts::default(),
        errors: vec![String::from("imap login timed out after 30 s")],
    };

    fixture.store.insert_upload_report(first).await.unwrap();
    fixture.store.insert_upload_report(second.clone()).await.unwrap();

    assert_eq!(fixture.store.last_upload_report().await.unwrap(), Some(second));
}
