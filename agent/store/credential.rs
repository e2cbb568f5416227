//! The single stored credential: the mailbox password encrypted by the credentials module, a pending replacement
//! during rotation, and the password's lifecycle state. The store receives only ciphertext.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Store, StoreError, get_optional_time, get_time, to_millis};

/// A password encrypted by the credentials module.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedPassword {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
}

impl std::fmt::Debug for EncryptedPassword {
    // Ciphertext is not secret on its own, but nothing about a password belongs in logs beyond its size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptedPassword({} bytes)", self.ciphertext.len())
    }
}

/// A new password written ahead of a change on the server, kept until the change is committed or discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPassword {
    pub password: EncryptedPassword,
    pub created_at: DateTime<Utc>,
}

/// The lifecycle fields of the credential, updated as a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialStatus {
    /// The lifecycle state, for example "ok", "expiring" or "rejected".
    pub state: String,
    pub last_error: Option<String>,
    /// When the server last accepted this password.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The server refused this password, so the agent must not sign in with it again.
    pub rejected: bool,
    /// Sign-ins the server rejected since this password was set.
    pub failed_sign_ins: u32,
}

/// The rotation fields of the credential, updated as a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRecord {
    /// `idle`, `rotating` (a pending password may be live on the server) or `needs_attention`.
    pub state: String,
    /// Failed rotations in a row, for the backoff.
    pub failures: u32,
    /// The earliest time of the next automatic attempt after a failure.
    pub next_at: Option<DateTime<Utc>>,
    pub last_at: Option<DateTime<Utc>>,
    /// One sentence on how the last rotation ended, never a secret.
    pub last_outcome: Option<String>,
}

impl Default for RotationRecord {
    fn default() -> RotationRecord {
        RotationRecord { state: "idle".into(), failures: 0, next_at: None, last_at: None, last_outcome: None }
    }
}

/// A salted SHA-256 hash of a past password or of a candidate the server refused.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    pub password: EncryptedPassword,
    pub set_at: DateTime<Utc>,
    pub status: CredentialStatus,
    pub pending: Option<PendingPassword>,
    pub rotation: RotationRecord,
}

impl Store {
    /// Returns the stored credential, `None` when no password was ever set.
    pub async fn load_credential(&self) -> Result<Option<CredentialRecord>, StoreError> {
        self.read(|connection| {
            let record = connection
                .prepare_cached(
                    "SELECT ciphertext, nonce, set_at, state, last_error, last_success_at, rejected, \
                     pending_ciphertext, pending_nonce, pending_created_at, failed_sign_ins, rotation_state, \
                     rotation_failures, next_rotation_at, last_rotation_at, last_rotation_outcome \
                     FROM credential WHERE id = 1",
                )?
                .query_row([], |row| {
                    let pending_ciphertext: Option<Vec<u8>> = row.get(7)?;
                    let pending_nonce: Option<Vec<u8>> = row.get(8)?;
                    let pending_created_at = get_optional_time(row, 9)?;
                    let pending = match (pending_ciphertext, pending_nonce, pending_created_at) {
                        (Some(ciphertext), Some(nonce), Some(created_at)) => {
                            Some(PendingPassword { password: EncryptedPassword { ciphertext, nonce }, created_at })
                        }
                        _ => None,
                    };
                    Ok(CredentialRecord {
                        password: EncryptedPassword { ciphertext: row.get(0)?, nonce: row.get(1)? },
                        set_at: get_time(row, 2)?,
                        status: CredentialStatus {
                            state: row.get(3)?,
                            last_error: row.get(4)?,
                            last_success_at: get_optional_time(row, 5)?,
                            rejected: row.get(6)?,
                            failed_sign_ins: row.get(10)?,
                        },
                        pending,
                        rotation: RotationRecord {
                            state: row.get(11)?,
                            failures: row.get(12)?,
                            next_at: get_optional_time(row, 13)?,
                            last_at: get_optional_time(row, 14)?,
                            last_outcome: row.get(15)?,
                        },
                    })
                })
                .optional()?;
            Ok(record)
        })
        .await
    }

    /// Stores `password` as the current password, for example one a person set by hand. Clears the rejected flag,
    /// the last error, the last success time and any pending password.
    pub async fn save_credential(
        &self,
        password: EncryptedPassword,
        set_at: DateTime<Utc>,
        state: &str,
    ) -> Result<(), StoreError> {
        let state = state.to_owned();
        self.write(move |connection| {
            connection
                .prepare_cached(
                    "INSERT INTO credential (id, ciphertext, nonce, set_at, state) VALUES (1, ?1, ?2, ?3, ?4) \
                     ON CONFLICT (id) DO UPDATE SET ciphertext = excluded.ciphertext, nonce = excluded.nonce, \
                         set_at = excluded.set_at, state = excluded.state, last_error = NULL, \
                         last_success_at = NULL, rejected = 0, pending_ciphertext = NULL, pending_nonce = NULL, \
                         pending_created_at = NULL, failed_sign_ins = 0, rotation_state = 'idle', \
                         rotation_failures = 0, next_rotation_at = NULL",
                )?
                .execute(params![password.ciphertext, password.nonce, to_millis(set_at), state])?;
            Ok(())
        })
        .await
    }

    /// Replaces the lifecycle fields of the stored credential.
    pub async fn update_credential_status(&self, status: CredentialStatus) -> Result<(), StoreError> {
        self.write(move |connection| {
            let updated = connection
                .prepare_cached(
                    "UPDATE credential SET state = ?1, last_error = ?2, last_success_at = ?3, rejected = ?4, \
                     failed_sign_ins = ?5 WHERE id = 1",
                )?
                .execute(params![
                    status.state,
                    status.last_error,
                    status.last_success_at.map(to_millis),
                    status.rejected,
                    status.failed_sign_ins,
                ])?;
            require_credential(updated)
        })
        .await
    }

    /// Stores `password` as pending before the server is asked to change to it, replacing an earlier pending one, and
    /// marks a rotation as under way. The write is durable before this returns, so a crash after it leaves a record
    /// of the password that may be live on the server.
    pub async fn save_pending_credential(
        &self,
        password: EncryptedPassword,
        created_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(move |connection| {
            let updated = connection
                .prepare_cached(
                    "UPDATE credential SET pending_ciphertext = ?1, pending_nonce = ?2, pending_created_at = ?3, \
                     rotation_state = 'rotating' WHERE id = 1",
                )?
                .execute(params![password.ciphertext, password.nonce, to_millis(created_at)])?;
            require_credential(updated)
        })
        .await
    }

    /// Makes the pending password current in `state`, records its hash in the history and ends the rotation. Its
    /// last success time becomes `set_at`, because a pending password is committed only after the server accepted
    /// it. Fails with a conflict when none is pending.
    pub async fn commit_pending_credential(
        &self,
        set_at: DateTime<Utc>,
        state: &str,
        hash: PasswordHash,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let state = state.to_owned();
        let outcome = outcome.to_owned();
        self.write(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let has_pending: bool = transaction
                .prepare_cached("SELECT pending_ciphertext IS NOT NULL FROM credential WHERE id = 1")?
                .query_row([], |row| row.get(0))
                .optional()?
                .ok_or_else(credential_not_found)?;
            if !has_pending {
                return Err(StoreError::Conflict(String::from("no pending password to commit")));
            }

            transaction
                .prepare_cached(
                    "UPDATE credential SET ciphertext = pending_ciphertext, nonce = pending_nonce, set_at = ?1, \
                         state = ?2, last_error = NULL, last_success_at = ?1, rejected = 0, \
                         pending_ciphertext = NULL, pending_nonce = NULL, pending_created_at = NULL, \
                         failed_sign_ins = 0, rotation_state = 'idle', rotation_failures = 0, \
                         next_rotation_at = NULL, last_rotation_at = ?1, last_rotation_outcome = ?3 \
                     WHERE id = 1",
                )?
                .execute(params![to_millis(set_at), state, outcome])?;
            insert_history(&transaction, "used", &hash, set_at)?;
            transaction.commit()?;
            Ok(())
        })
        .await
    }

    /// Discards the pending password, ending the rotation with the fields of `rotation`, and records `refused` (the pending
    /// password's hash, when the server refused it) so it is never generated again. Returns whether one was pending.
    pub async fn discard_pending_credential(
        &self,
        rotation: RotationRecord,
        refused: Option<PasswordHash>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.write(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let updated = transaction
                .prepare_cached(
                    "UPDATE credential SET pending_ciphertext = NULL, pending_nonce = NULL, pending_created_at = NULL \
                     WHERE id = 1 AND pending_ciphertext IS NOT NULL",
                )?
                .execute([])?;
            write_rotation(&transaction, &rotation)?;
            if let Some(hash) = refused {
                insert_history(&transaction, "refused", &hash, now)?;
            }
            transaction.commit()?;
            Ok(updated > 0)
        })
        .await
    }

    /// Replaces the rotation fields of the stored credential.
    pub async fn update_rotation(&self, rotation: RotationRecord) -> Result<(), StoreError> {
        self.write(move |connection| write_rotation(connection, &rotation)).await
    }

    /// Adds a password's hash to the history, for a password a person set.
    pub async fn add_password_history(&self, hash: PasswordHash, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.write(move |connection| insert_history(connection, "used", &hash, at)).await
    }

    /// Adds the hash of a candidate the server rejected, so it is never tried or generated again.
    pub async fn add_refused_password(&self, hash: PasswordHash, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.write(move |connection| insert_history(connection, "refused", &hash, at)).await
    }

    /// Returns the hashes a new password must not match: the last `used` passwords and every refused candidate.
    pub async fn password_history(&self, used: u32) -> Result<Vec<PasswordHash>, StoreError> {
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT salt, hash FROM (SELECT salt, hash FROM password_history WHERE kind = 'used' \
                 ORDER BY id DESC LIMIT ?1) UNION ALL SELECT salt, hash FROM password_history WHERE kind = 'refused'",
            )?;
            let rows = statement.query_map([used], |row| Ok(PasswordHash { salt: row.get(0)?, hash: row.get(1)? }))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

fn write_rotation(connection: &rusqlite::Connection, rotation: &RotationRecord) -> Result<(), StoreError> {
    let updated = connection
        .prepare_cached(
            "UPDATE credential SET rotation_state = ?1, rotation_failures = ?2, next_rotation_at = ?3, \
             last_rotation_at = ?4, last_rotation_outcome = ?5 WHERE id = 1",
        )?
        .execute(params![
            rotation.state,
            rotation.failures,
            rotation.next_at.map(to_millis),
            rotation.last_at.map(to_millis),
            rotation.last_outcome,
        ])?;
    require_credential(updated)
}

fn insert_history(
    connection: &rusqlite::Connection,
    kind: &str,
    hash: &PasswordHash,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    connection
        .prepare_cached("INSERT INTO password_history (kind, salt, hash, created_at) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![kind, hash.salt, hash.hash, to_millis(at)])?;
    Ok(())
}

fn require_credential(updated_rows: usize) -> Result<(), StoreError> {
    match updated_rows {
        0 => Err(credential_not_found()),
        _ => Ok(()),
    }
}

fn credential_not_found() -> StoreError {
    StoreError::NotFound { what: "credential", id: String::from("1") }
}
