//! Retention of processed inbound mail: which recorded emails are still due to be moved out of their mailbox, and
//! the record that they were moved.

use chrono::{DateTime, Utc};
use rusqlite::{params, params_from_iter, types::Value};

use super::{Store, StoreError, to_millis};

/// A recorded email still in its mailbox and due to be moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailToMove {
    /// Row id of the inbound email.
    pub id: i64,
    pub uid: u32,
}

impl Store {
    /// Lists the emails recorded from `mailbox` under `uidvalidity`, of one of `kinds`, matched to a message and
    /// not yet moved, lowest UID first.
    ///
    /// An email is recorded before it is moved, so one whose move failed or was cut short by a crash is listed
    /// again at the next cycle.
    pub async fn mail_to_move(
        &self,
        mailbox: &str,
        uidvalidity: u32,
        kinds: &[&str],
    ) -> Result<Vec<MailToMove>, StoreError> {
        let mut values = vec![Value::Text(mailbox.to_owned()), Value::Integer(i64::from(uidvalidity))];
        values.extend(kinds.iter().map(|kind| Value::Text((*kind).to_owned())));
        let placeholders = vec!["?"; kinds.len()].join(", ");
        self.read(move |connection| {
            let sql = format!(
                "SELECT id, uid FROM inbound_mail \
                 WHERE mailbox = ? AND uidvalidity = ? AND moved_at IS NULL AND matched_message_id IS NOT NULL \
                     AND kind IN ({placeholders}) \
                 ORDER BY uid"
            );
            let rows = connection
                .prepare(&sql)?
                .query_map(params_from_iter(values), |row| Ok(MailToMove { id: row.get(0)?, uid: row.get(1)? }))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Records that the emails with these row ids were moved out of their mailbox at `now`.
    pub async fn mark_moved(&self, ids: Vec<i64>, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.write(move |connection| {
            let transaction = connection.transaction()?;
            {
                let mut update = transaction
                    .prepare_cached("UPDATE inbound_mail SET moved_at = ?1 WHERE id = ?2 AND moved_at IS NULL")?;
                for id in ids {
                    update.execute(params![to_millis(now), id])?;
                }
            }
            transaction.commit()?;
            Ok(())
        })
        .await
    }
}
