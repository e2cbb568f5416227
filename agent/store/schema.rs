//! Opening the database file: checks that it is ours, connection settings, and migrations by `PRAGMA user_version`.

use std::{io::Read, path::Path};

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use super::{BUSY_TIMEOUT, StoreError};

/// `PRAGMA application_id` of our databases: "NHSM" in ASCII. It lets us reject an SQLite file made by another
/// program before changing it.
const APPLICATION_ID: i32 = 0x4E48_534D;

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Prepared statements kept per connection; more than the store uses, so none is recompiled.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// Schema steps: step `i` takes `user_version` from `i` to `i + 1`. Append new steps; never edit a released one.
const MIGRATIONS: &[&str] =
    &[MIGRATION_1, MIGRATION_2, MIGRATION_3, MIGRATION_4, MIGRATION_5, MIGRATION_6, MIGRATION_7, MIGRATION_8];

/// The schema version this code writes.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Numbers that must not be texted (a STOP reply or an operator's request), and the history of opt-outs and
/// opt-ins, which is kept after a number opts back in.
const MIGRATION_2: &str = "
CREATE TABLE opt_outs (
    seq INTEGER PRIMARY KEY,
    e164 TEXT NOT NULL UNIQUE,
    opted_out_at INTEGER NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('reply', 'manual')),
    note TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE TABLE opt_out_events (
    seq INTEGER PRIMARY KEY,
    e164 TEXT NOT NULL,
    at INTEGER NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('opt_out', 'opt_in')),
    source TEXT NOT NULL CHECK (source IN ('reply', 'manual')),
    note TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX opt_out_events_number ON opt_out_events (e164);
";

/// Finds inbound mail a person has not reviewed yet without scanning the whole table.
const MIGRATION_3: &str = "
CREATE INDEX inbound_mail_unreviewed ON inbound_mail (id) WHERE reviewed = 0;
";

/// One ordered feed of what happens to texts (every state change) and of patient replies, for WatchEvents. Filled
/// by triggers, so each feed row commits in the same transaction as the change it reports, and its `seq` is the
/// event id a client resumes from.
const MIGRATION_4: &str = "
CREATE TABLE event_feed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('message', 'reply')),
    source_seq INTEGER NOT NULL
) STRICT;

CREATE TRIGGER message_events_feed AFTER INSERT ON message_events BEGIN
    INSERT INTO event_feed (at, kind, source_seq) VALUES (NEW.at, 'message', NEW.seq);
END;

CREATE TRIGGER replies_feed AFTER INSERT ON replies BEGIN
    INSERT INTO event_feed (at, kind, source_seq) VALUES (NEW.received_at, 'reply', NEW.seq);
END;
";

/// A SHA-256 of each inbound email's bytes: the guard against reading an email twice after UIDVALIDITY changes
/// when it has no Message-ID. Rows recorded before this column existed keep it NULL and are not guarded by it.
const MIGRATION_5: &str = "
ALTER TABLE inbound_mail ADD COLUMN raw_sha256 BLOB;
CREATE INDEX inbound_mail_raw_sha256 ON inbound_mail (raw_sha256) WHERE raw_sha256 IS NOT NULL;
";

/// Retention: when each inbound email was moved out of its mailbox (NULL while it is still there), and how many
/// emails each upload cycle moved and deleted. The partial index finds the emails still due to be moved.
const MIGRATION_6: &str = "
ALTER TABLE inbound_mail ADD COLUMN moved_at INTEGER;
CREATE INDEX inbound_mail_unmoved ON inbound_mail (mailbox, uidvalidity) WHERE moved_at IS NULL;
ALTER TABLE upload_reports ADD COLUMN mail_moved INTEGER NOT NULL DEFAULT 0;
ALTER TABLE upload_reports ADD COLUMN mail_deleted INTEGER NOT NULL DEFAULT 0;
";

/// Password rotation and the audit trail. `rotation_state` is `idle`, `rotating` or `needs_attention`;
/// `failed_sign_ins` counts the server's rejections since the password was last set. The history keeps salted
/// hashes only, of past passwords (`used`) and of candidates the server refused (`refused`).
const MIGRATION_7: &str = "
ALTER TABLE credential ADD COLUMN rotation_state TEXT NOT NULL DEFAULT 'idle'
    CHECK (rotation_state IN ('idle', 'rotating', 'needs_attention'));
ALTER TABLE credential ADD COLUMN rotation_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE credential ADD COLUMN next_rotation_at INTEGER;
ALTER TABLE credential ADD COLUMN last_rotation_at INTEGER;
ALTER TABLE credential ADD COLUMN last_rotation_outcome TEXT;
ALTER TABLE credential ADD COLUMN failed_sign_ins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE credential ADD COLUMN blocked_sign_ins INTEGER NOT NULL DEFAULT 0;

CREATE TABLE password_history (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('used', 'refused')),
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    caller TEXT NOT NULL,
    role TEXT NOT NULL,
    peer TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL,
    detail TEXT
) STRICT;
CREATE INDEX audit_events_at ON audit_events (at);
";

/// Times are integer Unix milliseconds, UTC. `priority_rank` and `due_at` are generated so that the claim index can
/// order by them.
/// API bearer tokens. Only a salted SHA-256 hash of each token's secret is stored; `id` is the public part of the
/// token that finds its row. A revoked row is kept, so the name stays in `token list` and the audit trail.
const MIGRATION_8: &str = "
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'submitter', 'viewer')),
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL;
";

const MIGRATION_1: &str = "
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN
        ('queued', 'sending', 'sent', 'delivered', 'failed', 'expired', 'cancelled', 'uncertain')),
    to_e164 TEXT NOT NULL,
    gateway_address TEXT NOT NULL,
    text TEXT NOT NULL,
    priority TEXT NOT NULL CHECK (priority IN ('urgent', 'normal', 'bulk')),
    priority_rank INTEGER GENERATED ALWAYS AS
        (CASE priority WHEN 'urgent' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END) VIRTUAL,
    encoding TEXT NOT NULL CHECK (encoding IN ('gsm7', 'ucs2')),
    parts INTEGER NOT NULL CHECK (parts >= 1),
    length INTEGER NOT NULL CHECK (length >= 0),
    created_at INTEGER NOT NULL,
    send_after INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    sent_at INTEGER,
    updated_at INTEGER NOT NULL,
    caller TEXT NOT NULL,
    idempotency_key TEXT NOT NULL DEFAULT '',
    client_reference TEXT NOT NULL DEFAULT '',
    smtp_message_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at INTEGER,
    due_at INTEGER GENERATED ALWAYS AS (max(send_after, coalesce(next_attempt_at, send_after))) VIRTUAL,
    data_started_at INTEGER,
    status_reason TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX messages_claim ON messages (status, priority_rank, due_at, created_at);
CREATE INDEX messages_status ON messages (status);
CREATE INDEX messages_expiry ON messages (status, expires_at);
CREATE UNIQUE INDEX messages_idempotency ON messages (caller, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX messages_smtp_message_id ON messages (smtp_message_id) WHERE smtp_message_id IS NOT NULL;
CREATE INDEX messages_recipient_sent ON messages (to_e164, sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX messages_sent_at ON messages (sent_at) WHERE sent_at IS NOT NULL;

CREATE TABLE message_events (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages (id),
    at INTEGER NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX message_events_message ON message_events (message_id);

CREATE TABLE inbound_mail (
    id INTEGER PRIMARY KEY,
    mailbox TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    email_message_id TEXT,
    kind TEXT NOT NULL,
    from_address TEXT NOT NULL,
    subject TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    matched_message_id TEXT REFERENCES messages (id),
    reason TEXT NOT NULL DEFAULT '',
    raw BLOB NOT NULL,
    reviewed INTEGER NOT NULL DEFAULT 0 CHECK (reviewed IN (0, 1)),
    UNIQUE (mailbox, uidvalidity, uid)
) STRICT;

CREATE UNIQUE INDEX inbound_mail_message_id ON inbound_mail (email_message_id) WHERE email_message_id IS NOT NULL;
CREATE INDEX inbound_mail_matched ON inbound_mail (matched_message_id) WHERE matched_message_id IS NOT NULL;

CREATE TABLE replies (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    from_e164 TEXT NOT NULL,
    text TEXT NOT NULL,
    raw_text TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    message_id TEXT REFERENCES messages (id),
    email_message_id TEXT,
    inbound_id INTEGER NOT NULL REFERENCES inbound_mail (id)
) STRICT;

CREATE INDEX replies_message ON replies (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX replies_from ON replies (from_e164);

CREATE TABLE imap_state (
    mailbox TEXT PRIMARY KEY,
    uidvalidity INTEGER NOT NULL,
    last_uid INTEGER NOT NULL
) STRICT;

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE credential (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    ciphertext BLOB NOT NULL,
    nonce BLOB NOT NULL,
    set_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT,
    last_success_at INTEGER,
    rejected INTEGER NOT NULL DEFAULT 0 CHECK (rejected IN (0, 1)),
    pending_ciphertext BLOB,
    pending_nonce BLOB,
    pending_created_at INTEGER,
    CHECK ((pending_ciphertext IS NULL) = (pending_nonce IS NULL)),
    CHECK ((pending_ciphertext IS NULL) = (pending_created_at IS NULL))
) STRICT;

CREATE TABLE upload_reports (
    id INTEGER PRIMARY KEY,
    started_at INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    triggered_by TEXT NOT NULL,
    reordered INTEGER NOT NULL,
    expired INTEGER NOT NULL,
    collected INTEGER NOT NULL,
    failure_reports INTEGER NOT NULL,
    receipts INTEGER NOT NULL,
    replies INTEGER NOT NULL,
    other INTEGER NOT NULL,
    matched INTEGER NOT NULL,
    errors TEXT NOT NULL DEFAULT '[]'
) STRICT;
";

/// Opens the write connection: checks the file, sets WAL, `synchronous = FULL` and foreign keys, then migrates.
pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    check_header(path)?;

    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut connection = Connection::open_with_flags(path, flags).map_err(|error| open_error(path, error))?;
    connection.busy_timeout(BUSY_TIMEOUT)?;

    // Checked before any pragma that writes, so a file we reject stays byte-identical.
    check_ownership(&connection, path)?;

    let journal_mode: String = connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::WalUnavailable { path: path.to_owned(), journal_mode });
    }
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);

    migrate(&mut connection)?;
    Ok(connection)
}

/// Opens a read-only connection to a database that [`open_writer`] has already opened.
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(connection)
}

/// Rejects a non-empty file that does not start with the SQLite header. A missing or empty file becomes a new
/// database.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Io { path: path.to_owned(), source });
        }
    };

    let mut header = Vec::with_capacity(SQLITE_HEADER.len());
    let io_error = |source| StoreError::Io { path: path.to_owned(), source };
    file.by_ref().take(SQLITE_HEADER.len() as u64).read_to_end(&mut header).map_err(io_error)?;

    if header.is_empty() || header == SQLITE_HEADER { Ok(()) } else { Err(not_ours(path, "not an SQLite database")) }
}

/// Rejects an SQLite database that another program created, or that a newer version of the agent migrated.
fn check_ownership(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let read = |error| open_error(path, error);
    let application_id: i32 = connection.pragma_query_value(None, "application_id", |row| row.get(0)).map_err(read)?;
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(read)?;
    let objects: i64 =
        connection.query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0)).map_err(read)?;

    if application_id == 0 {
        return if version == 0 && objects == 0 { Ok(()) } else { Err(not_ours(path, "created by another program")) };
    }
    if application_id != APPLICATION_ID {
        let reason = format!("application_id is {application_id:#010x}");
        return Err(not_ours(path, &reason));
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew { path: path.to_owned(), found: version, known: SCHEMA_VERSION });
    }
    Ok(())
}

/// Applies every migration step above the file's `user_version`, each in its own transaction.
fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    for (index, step) in MIGRATIONS.iter().enumerate() {
        let target = index as i64 + 1;
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;

        // Read inside the write lock, so two processes opening a new file cannot both apply a step.
        let version: i64 = transaction.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version >= target {
            continue;
        }

        transaction.execute_batch(step)?;
        if index == 0 {
            transaction.pragma_update(None, "application_id", APPLICATION_ID)?;
        }
        transaction.pragma_update(None, "user_version", target)?;
        transaction.commit()?;
    }
    Ok(())
}

fn not_ours(path: &Path, reason: &str) -> StoreError {
    StoreError::NotOurDatabase { path: path.to_owned(), reason: reason.to_owned() }
}

/// Maps "file is not a database" on open to [`StoreError::NotOurDatabase`].
fn open_error(path: &Path, error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => not_ours(path, "not an SQLite database"),
        _ => StoreError::Sqlite(error),
    }
}
