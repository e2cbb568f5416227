//! Tests of the store against real SQLite files in temporary directories.

mod audit;
mod inbound;
mod messages;
mod optouts;
mod review;
mod schema;
mod settings;

use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::Connection;
use tempfile::TempDir;

use super::{NewMessage, Store};
use crate::queue::Priority;

/// A store in its own temporary directory, removed on drop.
struct Fixture {
    _dir: TempDir,
    store: Store,
}

fn open_store() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("agent.db")).unwrap();
    Fixture { _dir: dir, store }
}

/// The fixed "now" of every test.
fn t0() -> DateTime<Utc> {
    "2026-12-01T09:00:00Z".parse().unwrap()
}

fn at(seconds: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(seconds)
}

/// A valid message to +447700900`nnn`, created at t0, due at once, expiring after 72 hours.
fn new_message(number: u32) -> NewMessage {
    NewMessage {
        id: None,
        to_e164: format!("+447700900{number:03}"),
        gateway_address: format!("07700900{number:03}@sms.nhs.net"),
        text: String::from("Your appointment is on Tuesday at 10:30."),
        priority: Priority::Normal,
        encoding: String::from("gsm7"),
        parts: 1,
        length: 40,
        created_at: t0(),
        send_after: None,
        expires_at: t0() + TimeDelta::hours(72),
        caller: String::from("clinical-system"),
        idempotency_key: String::new(),
        client_reference: String::new(),
    }
}

/// Runs a single-number query against the store's file through a separate connection.
fn query_count(store: &Store, sql: &str) -> i64 {
    let connection = Connection::open(store.path()).unwrap();
    connection.query_row(sql, [], |row| row.get(0)).unwrap()
}
