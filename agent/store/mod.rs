//! The SQLite database `<data_dir>/agent.db`: messages and their events, inbound mail, replies, IMAP progress,
//! settings, the stored credential and upload reports. This is the only module that writes SQL.
//!
//! Writes go through one connection behind a mutex, so every write transaction is serialised; reads use a small
//! pool of read-only connections. Every async method runs its SQLite work on `tokio::task::spawn_blocking`. The
//! database runs in WAL mode with `synchronous = FULL`, so a write that has returned survives a power loss.
//!
//! Times are stored as integer Unix milliseconds (UTC), so finer precision in a passed-in time is truncated.

mod audit;
mod credential;
mod feed;
mod inbound;
mod messages;
mod optouts;
mod reports;
mod retention;
mod review;
mod schema;
mod settings;
mod tokens;

#[cfg(test)]
mod tests;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use chrono::{DateTime, Utc};
use rusqlite::{
    Connection, ErrorCode,
    types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef},
};

use crate::queue::{MessageStatus, Priority};

pub use audit::{AuditEvent, AuditRecord};
pub use credential::{
    CredentialRecord, CredentialStatus, EncryptedPassword, PasswordHash, PendingPassword, RotationRecord,
};
pub use feed::FeedEvent;
pub use inbound::{Effect, ImapState, InboundOutcome, InboundRecord, ReplyFilter, ReplyRecord};
pub use messages::{EventRecord, MessageRecord, NewMessage, RecoveryCounts, Submission};
pub use optouts::{OptOut, OptOutSource};
pub use reports::{UploadCounts, UploadReport};
pub use retention::MailToMove;
pub use review::InboundEmail;
pub use tokens::TokenRecord;

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "agent.db";

/// How long a statement waits for a lock held by another connection before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections kept open between calls; more are opened on demand and closed after use.
const MAX_IDLE_READERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} not found: {id}")]
    NotFound { what: &'static str, id: String },
    #[error("message {id} is {from} and cannot become {to}")]
    InvalidTransition { id: String, from: MessageStatus, to: MessageStatus },
    #[error("conflict: {0}")]
    Conflict(String),
    /// A message in a submission is for a number that opted out; nothing in the submission was stored.
    #[error("{e164} opted out of texts on {since}")]
    OptedOut { index: usize, e164: String, since: DateTime<Utc> },
    #[error("invalid page token: {0:?}")]
    InvalidPageToken(String),
    #[error("disk full writing {}: free space on that disk", path.display())]
    DiskFull { path: PathBuf },
    #[error(
        "{} is not an nhsmail-agent database ({reason}); move it aside or choose another data directory",
        path.display()
    )]
    NotOurDatabase { path: PathBuf, reason: String },
    #[error(
        "{} has schema version {found}, newer than the {known} this agent supports; run a newer agent",
        path.display()
    )]
    SchemaTooNew { path: PathBuf, found: i64, known: i64 },
    #[error(
        "{} cannot use WAL mode (journal_mode is {journal_mode}); put the data directory on a local disk",
        path.display()
    )]
    WalUnavailable { path: PathBuf, journal_mode: String },
    #[error("database {} is corrupt: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("invalid value in column {column}: {value:?}")]
    InvalidData { column: &'static str, value: String },
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sqlite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl StoreError {
    /// Reclassifies a raw SQLite error that names a condition callers act on (disk full, corruption) and attaches
    /// the database path.
    fn with_path(self, path: &Path) -> StoreError {
        let StoreError::Sqlite(error) = self else {
            return self;
        };
        match error.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::DiskFull { path: path.to_owned() },
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                StoreError::Corrupt { path: path.to_owned(), source: error }
            }
            _ => StoreError::Sqlite(error),
        }
    }
}

/// Handle to the database. Cheap to clone; every clone shares the same connections.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

// Callers share one `Store` across tasks.
const _: () = {
    const fn assert_shareable<T: Clone + Send + Sync>() {}
    assert_shareable::<Store>();
};

/// Returns the database path inside `data_dir`.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DATABASE_FILE)
}

impl Store {
    /// Opens the database at `path`, creating it if missing and applying pending migrations.
    ///
    /// Rejects, without writing to it, a file that is not an SQLite database, an SQLite database that another
    /// program created, and a database whose schema version is newer than this code supports.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_owned();
        create_owner_only(&path)?;
        let writer = schema::open_writer(&path).map_err(|error| error.with_path(&path))?;
        Ok(Store { inner: Arc::new(Inner { path, writer: Mutex::new(writer), readers: Mutex::new(Vec::new()) }) })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `work` on the write connection on a blocking thread. Calls are serialised by the writer mutex.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut connection = lock(&inner.writer);
            work(&mut connection).map_err(|error| error.with_path(&inner.path))
        })
        .await?
    }

    /// Runs `work` on a read-only connection on a blocking thread.
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let idle = lock(&inner.readers).pop();
            let connection = match idle {
                Some(connection) => connection,
                None => schema::open_reader(&inner.path).map_err(|error| error.with_path(&inner.path))?,
            };

            let result = work(&connection).map_err(|error| error.with_path(&inner.path));

            let mut readers = lock(&inner.readers);
            if readers.len() < MAX_IDLE_READERS {
                readers.push(connection);
            }
            result
        })
        .await?
    }

    /// Caps the database size, so tests can provoke "disk full" without filling a disk.
    #[cfg(test)]
    fn set_max_page_count(&self, pages: u64) {
        lock(&self.inner.writer).pragma_update(None, "max_page_count", pages).unwrap();
    }
}

/// Creates a missing database file with mode 0600. SQLite would create it with the process umask (usually 0644),
/// and it gives the `-wal` and `-shm` files the database file's mode.
fn create_owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Io { path: path.to_owned(), source }),
    }
}

/// Locks `mutex`, recovering from poisoning: a panic inside a rusqlite transaction rolls it back on drop, so the
/// connection is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn to_millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

fn from_millis(millis: i64) -> FromSqlResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis).ok_or(FromSqlError::OutOfRange(millis))
}

/// A UTC time read from an integer column of Unix milliseconds.
struct Millis(DateTime<Utc>);

impl FromSql for Millis {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        from_millis(value.as_i64()?).map(Millis)
    }
}

impl ToSql for MessageStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for MessageStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value.as_str()?.parse().map_err(|error| FromSqlError::Other(Box::new(error)))
    }
}

impl ToSql for Priority {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Priority {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value.as_str()?.parse().map_err(|error| FromSqlError::Other(Box::new(error)))
    }
}

/// Reads a column of Unix milliseconds.
fn get_time(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<DateTime<Utc>> {
    Ok(row.get::<_, Millis>(index)?.0)
}

/// Reads a nullable column of Unix milliseconds.
fn get_optional_time(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    Ok(row.get::<_, Option<Millis>>(index)?.map(|millis| millis.0))
}

/// Parses a keyset page token: the sequence number of the last row of the previous page.
fn parse_page_token(token: Option<&str>) -> Result<Option<i64>, StoreError> {
    match token {
        None | Some("") => Ok(None),
        Some(token) => token
            .parse::<i64>()
            .ok()
            .filter(|seq| *seq > 0)
            .map(Some)
            .ok_or_else(|| StoreError::InvalidPageToken(token.to_owned())),
    }
}

/// Clamps a requested page size to 1..=1000; 0 means 100.
fn clamp_page_size(page_size: u32) -> u32 {
    match page_size {
        0 => 100,
        size => size.min(1000),
    }
}
