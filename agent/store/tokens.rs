//! API bearer tokens: names, roles and salted hashes. The token itself is never stored; the auth module hashes it
//! and compares.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, get_optional_time, get_time, to_millis};

/// One stored token. `salt` and `hash` are SHA-256 inputs and output, so `Debug` leaves them out.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The public part of the token, which finds this row.
    pub id: String,
    pub name: String,
    /// `admin`, `operator`, `submitter` or `viewer`.
    pub role: String,
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, name, role, salt, hash, created_at, revoked_at";

fn token_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        role: row.get(2)?,
        salt: row.get(3)?,
        hash: row.get(4)?,
        created_at: get_time(row, 5)?,
        revoked_at: get_optional_time(row, 6)?,
    })
}

impl Store {
    /// Stores a new token. Fails with `Conflict` when an active token already has the name.
    pub async fn insert_token(&self, record: TokenRecord) -> Result<(), StoreError> {
        self.write(move |connection| {
            let taken: bool = connection
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM api_tokens WHERE name = ?1 AND revoked_at IS NULL)")?
                .query_row(params![record.name], |row| row.get(0))?;
            if taken {
                return Err(StoreError::Conflict(format!(
                    "an active token is already named {:?}; revoke it first or choose another name",
                    record.name
                )));
            }
            connection
                .prepare_cached(&format!("INSERT INTO api_tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"))?
                .execute(params![
                    record.id,
                    record.name,
                    record.role,
                    record.salt,
                    record.hash,
                    to_millis(record.created_at),
                    record.revoked_at.map(to_millis),
                ])?;
            Ok(())
        })
        .await
    }

    /// Returns the token with `id`, revoked or not.
    pub async fn find_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |connection| {
            let record = connection
                .prepare_cached(&format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?1"))?
                .query_row(params![id], token_from_row)
                .optional()?;
            Ok(record)
        })
        .await
    }

    /// Returns every token, revoked ones included, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.read(move |connection| {
            let mut statement =
                connection.prepare_cached(&format!("SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, id"))?;
            let rows = statement.query_map([], token_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Marks the active token named `name` as revoked at `at` and returns it. Fails with `NotFound` when no active
    /// token has that name.
    pub async fn revoke_token(&self, name: &str, at: DateTime<Utc>) -> Result<TokenRecord, StoreError> {
        let name = name.to_owned();
        self.write(move |connection| {
            let record = connection
                .prepare_cached(&format!("SELECT {COLUMNS} FROM api_tokens WHERE name = ?1 AND revoked_at IS NULL"))?
                .query_row(params![name], token_from_row)
                .optional()?
                .ok_or_else(|| StoreError::NotFound { what: "active token", id: name.clone() })?;
            connection
                .prepare_cached("UPDATE api_tokens SET revoked_at = ?1 WHERE id = ?2")?
                .execute(params![to_millis(at), record.id])?;
            Ok(TokenRecord { revoked_at: Some(at), ..record })
        })
        .await
    }
}
