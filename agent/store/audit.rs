//! The audit trail: one row per change, password event and reveal, saying who did what, when and with what
//! outcome. Rows never hold a password or a token; callers put only names, ids and outcomes in them.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{Store, StoreError, get_time, to_millis};

/// One audited action. `caller` and `role` are "agent" and "system" for what the agent does on its own, such as a
/// scheduled password rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub caller: String,
    pub role: String,
    /// The caller's network address, when the action came over the API.
    pub peer: Option<String>,
    /// The RPC's name, or a step of an internal process such as `rotation.change`.
    pub action: String,
    /// The object of the action, for example a message id. Empty when there is nothing more specific.
    pub target: String,
    /// The result: `ok`, or a short word for what went wrong, such as `rejected` or `failed`.
    pub outcome: String,
    /// One sentence of explanation, never a secret.
    pub detail: Option<String>,
}

/// A stored audit row with its id, newest first in listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub event: AuditEvent,
}

impl Store {
    /// Appends `event` to the audit trail.
    pub async fn record_audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.write(move |connection| {
            connection
                .prepare_cached(
                    "INSERT INTO audit_events (at, caller, role, peer, action, target, outcome, detail) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    to_millis(event.at),
                    event.caller,
                    event.role,
                    event.peer,
                    event.action,
                    event.target,
                    event.outcome,
                    event.detail,
                ])?;
            Ok(())
        })
        .await
    }

    /// Returns up to `limit` audit rows with an id below `before_id` (all when `None`), newest first.
    pub async fn list_audit(&self, before_id: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT id, at, caller, role, peer, action, target, outcome, detail FROM audit_events \
                 WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = statement.query_map(params![before_id.unwrap_or(i64::MAX), limit], |row| {
                Ok(AuditRecord {
                    id: row.get(0)?,
                    event: AuditEvent {
                        at: get_time(row, 1)?,
                        caller: row.get(2)?,
                        role: row.get(3)?,
                        peer: row.get(4)?,
                        action: row.get(5)?,
                        target: row.get(6)?,
                        outcome: row.get(7)?,
                        detail: row.get(8)?,
                    },
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Deletes audit rows older than `before` and returns how many went.
    pub async fn purge_audit(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        self.write(move |connection| {
            Ok(connection
                .prepare_cached("DELETE FROM audit_events WHERE at < ?1")?
                .execute(params![to_millis(before)])?)
        })
        .await
    }
}
