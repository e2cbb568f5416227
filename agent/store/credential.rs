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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    pub password: EncryptedPassword,
    pub set_at: DateTime<Utc>,
    pub status: CredentialStatus,
    pub pending: Option<PendingPassword>,
}

impl Store {
    /// Returns the stored credential, `None` when no password was ever set.
    pub async fn load_credential(&self) -> Result<Option<CredentialRecord>, StoreError> {
        self.read(|connection| {
            let record = connection
                .prepare_cached(
                    "SELECT ciphertext, nonce, set_at, state, last_error, last_success_at, rejected, \
                     pending_ciphertext, pending_nonce, pending_created_at FROM credential WHERE id = 1",
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
                        },
                        pending,
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
                         pending_created_at = NULL",
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
                    "UPDATE credential SET state = ?1, last_error = ?2, last_success_at = ?3, rejected = ?4 \
                     WHERE id = 1",
                )?
                .execute(params![
                    status.state,
                    status.last_error,
                    status.last_success_at.map(to_millis),
                    status.rejected,
                ])?;
            require_credential(updated)
        })
        .await
    }

    /// Stores `password` as pending before the server is asked to change to it, replacing an earlier pending one.
    pub async fn save_pending_credential(
        &self,
        password: EncryptedPassword,
        created_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(move |connection| {
            let updated = connection
                .prepare_cached(
                    "UPDATE credential SET pending_ciphertext = ?1, pending_nonce = ?2, pending_created_at = ?3 \
                     WHERE id = 1",
                )?
                .execute(params![password.ciphertext, password.nonce, to_millis(created_at)])?;
            require_credential(updated)
        })
        .await
    }

    /// Makes the pending password current in `state`. Its last success time becomes `set_at`, because a pending
    /// password is committed only after the server accepted it. Fails with a conflict when none is pending.
    pub async fn commit_pending_credential(&self, set_at: DateTime<Utc>, state: &str) -> Result<(), StoreError> {
        let state = state.to_owned();
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
                         pending_ciphertext = NULL, pending_nonce = NULL, pending_created_at = NULL \
                     WHERE id = 1",
                )?
                .execute(params![to_millis(set_at), state])?;
            transaction.commit()?;
            Ok(())
        })
        .await
    }

    /// Forgets the pending password. Returns whether one was pending.
    pub async fn discard_pending_credential(&self) -> Result<bool, StoreError> {
        self.write(|connection| {
            let updated = connection
                .prepare_cached(
                    "UPDATE credential SET pending_ciphertext = NULL, pending_nonce = NULL, pending_created_at = NULL \
                     WHERE id = 1 AND pending_ciphertext IS NOT NULL",
                )?
                .execute([])?;
            Ok(updated > 0)
        })
        .await
    }
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
