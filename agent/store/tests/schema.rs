use rusqlite::Connection;

use super::{new_message, open_store, query_count};
use crate::store::{Store, StoreError, schema::SCHEMA_VERSION};

#[test]
fn new_database_is_migrated() {
    let fixture = open_store();
    let connection = Connection::open(fixture.store.path()).unwrap();

    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
    let journal_mode: String = connection.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
    let application_id: i32 = connection.pragma_query_value(None, "application_id", |row| row.get(0)).unwrap();

    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(journal_mode, "wal");
    assert_eq!(application_id, 0x4E48_534D);
}

#[test]
fn writer_uses_durable_settings() {
    let fixture = open_store();
    let writer = super::super::lock(&fixture.store.inner.writer);

    let synchronous: i64 = writer.pragma_query_value(None, "synchronous", |row| row.get(0)).unwrap();
    let foreign_keys: i64 = writer.pragma_query_value(None, "foreign_keys", |row| row.get(0)).unwrap();

    assert_eq!(synchronous, 2, "synchronous = FULL");
    assert_eq!(foreign_keys, 1);
}

#[tokio::test]
async fn reopened_database_keeps_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");

    let store = Store::open(&path).unwrap();
    let submitted = store.submit(vec![new_message(1)]).await.unwrap();
    drop(store);

    let reopened = Store::open(&path).unwrap();
    let found = reopened.get_message(&submitted[0].message.id).await.unwrap();
    assert_eq!(found.map(|(message, _)| message), Some(submitted[0].message.clone()));
}

#[test]
fn empty_file_becomes_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    std::fs::write(&path, b"").unwrap();

    let store = Store::open(&path).unwrap();
    assert_eq!(query_count(&store, "SELECT count(*) FROM messages"), 0);
}

#[test]
fn text_file_is_rejected_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    let contents = b"appointment list, not a database\n".repeat(200);
    std::fs::write(&path, &contents).unwrap();

    let error = Store::open(&path).unwrap_err();

    assert!(matches!(error, StoreError::NotOurDatabase { .. }), "{error:?}");
    assert!(error.to_string().contains(&path.display().to_string()), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), contents);
}

#[test]
fn short_file_is_rejected_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    std::fs::write(&path, b"SQLite").unwrap();

    let error = Store::open(&path).unwrap_err();

    assert!(matches!(error, StoreError::NotOurDatabase { .. }), "{error:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"SQLite");
}

#[test]
fn foreign_database_is_rejected_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    let other = Connection::open(&path).unwrap();
    other.execute_batch("CREATE TABLE patients (name TEXT); INSERT INTO patients VALUES ('x');").unwrap();
    drop(other);
    let before = std::fs::read(&path).unwrap();

    let error = Store::open(&path).unwrap_err();

    assert!(matches!(error, StoreError::NotOurDatabase { .. }), "{error:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn corrupt_database_error_names_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    drop(Store::open(&path).unwrap());
    // Keep the first 100 bytes (the header, with our application_id) and make the rest unreadable.
    let mut bytes = std::fs::read(&path).unwrap();
    for byte in &mut bytes[100..] {
        *byte = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();

    let error = Store::open(&path).unwrap_err();

    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains(&path.display().to_string()), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn other_application_id_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    let other = Connection::open(&path).unwrap();
    other.pragma_update(None, "application_id", 0x1234_5678).unwrap();
    drop(other);
    let before = std::fs::read(&path).unwrap();

    let error = Store::open(&path).unwrap_err();

    assert!(error.to_string().contains("0x12345678"), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn future_schema_version_is_rejected_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    drop(Store::open(&path).unwrap());
    let newer = Connection::open(&path).unwrap();
    newer.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    // Fold the WAL back into the file, so the bytes compared below are the whole database.
    newer.pragma_update(None, "journal_mode", "DELETE").unwrap();
    drop(newer);
    let before = std::fs::read(&path).unwrap();

    let error = Store::open(&path).unwrap_err();

    let message = error.to_string();
    let StoreError::SchemaTooNew { found, known, .. } = error else {
        panic!("expected SchemaTooNew, got {error:?}");
    };
    assert_eq!(found, SCHEMA_VERSION + 1);
    assert_eq!(known, SCHEMA_VERSION);
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[tokio::test]
async fn full_disk_maps_to_disk_full() {
    let fixture = open_store();
    let pages = query_count(&fixture.store, "PRAGMA page_count");
    fixture.store.set_max_page_count(pages as u64 + 2);

    let batch: Vec<_> = (0..1000).map(|index| new_message(index % 1000)).collect();
    let error = fixture.store.submit(batch).await.unwrap_err();

    assert!(matches!(error, StoreError::DiskFull { .. }), "{error:?}");
    assert_eq!(query_count(&fixture.store, "SELECT count(*) FROM messages"), 0);
}
