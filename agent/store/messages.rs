//! Outbound messages and their event history: submission, claiming, state changes, recovery and listing.
//!
//! Every state change goes through [`change_status`], which checks [`can_transition`] and writes the event row in
//! the caller's transaction.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use uuid::Uuid;

use super::{Store, StoreError, clamp_page_size, get_optional_time, get_time, parse_page_token, to_millis};
use crate::queue::{MessageStatus, Priority, can_transition};

/// A validated message ready to be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The message id; the store assigns a UUIDv7 when `None`.
    pub id: Option<String>,
    pub to_e164: String,
    pub gateway_address: String,
    pub text: String,
    pub priority: Priority,
    /// `"gsm7"` or `"ucs2"`.
    pub encoding: String,
    pub parts: u32,
    /// Length in GSM-7 septets or UCS-2 code units.
    pub length: u32,
    pub created_at: DateTime<Utc>,
    /// Earliest sending time; `None` means `created_at`.
    pub send_after: Option<DateTime<Utc>>,
    /// Expiry time, already capped by the maximum lifetime.
    pub expires_at: DateTime<Utc>,
    /// The submitter, for example the token name. Idempotency keys are unique per caller.
    pub caller: String,
    /// Empty when the caller gave no key.
    pub idempotency_key: String,
    pub client_reference: String,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: String,
    pub status: MessageStatus,
    pub to_e164: String,
    pub gateway_address: String,
    pub text: String,
    pub priority: Priority,
    pub encoding: String,
    pub parts: u32,
    pub length: u32,
    pub created_at: DateTime<Utc>,
    pub send_after: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub caller: String,
    pub idempotency_key: String,
    pub client_reference: String,
    /// The Message-ID of the email sent for this message, without angle brackets.
    pub smtp_message_id: Option<String>,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Set just before the message data is written to SMTP; cleared when the message is queued again.
    pub data_started_at: Option<DateTime<Utc>>,
    pub status_reason: String,
}

/// One state change of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub at: DateTime<Utc>,
    /// `None` for the first event, written on submission.
    pub from_status: Option<MessageStatus>,
    pub to_status: MessageStatus,
    pub reason: String,
}

/// The outcome of submitting one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub message: MessageRecord,
    /// True when the caller's idempotency key matched an earlier message, which is returned instead.
    pub duplicate: bool,
}

/// Messages found in `sending` at start-up, by what [`Store::recover_interrupted`] did with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoveryCounts {
    /// Interrupted before the message data was written, so queued again.
    pub requeued: u64,
    /// Interrupted after the message data was written, so marked uncertain.
    pub uncertain: u64,
}

const MESSAGE_COLUMNS: &str = "id, status, to_e164, gateway_address, text, priority, encoding, parts, length, \
     created_at, send_after, expires_at, sent_at, updated_at, caller, idempotency_key, client_reference, \
     smtp_message_id, attempts, next_attempt_at, data_started_at, status_reason";

const SUBMITTED_REASON: &str = "submitted";

/// Priority ranks in claiming order, as computed by the `priority_rank` column.
const RANKS: [u8; 3] = [0, 1, 2];

impl Store {
    /// Queues a batch of messages in one transaction: either every message is stored or none is.
    ///
    /// NOTE: each call commits once, and with `synchronous = FULL` each commit waits for the disk to sync, so
    /// single-message calls are bounded by the disk's sync rate. Batch where throughput matters.
    ///
    /// A message whose (caller, idempotency key) matches a stored one is not stored, and the stored message is
    /// returned with `duplicate` set. This includes a match with an earlier message in the same batch. A new message
    /// for an opted-out number fails the whole batch with [`StoreError::OptedOut`].
    pub async fn submit(&self, batch: Vec<NewMessage>) -> Result<Vec<Submission>, StoreError> {
        self.write(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut results = Vec::with_capacity(batch.len());
            for (index, message) in batch.into_iter().enumerate() {
                results.push(submit_one(&transaction, index, message)?);
            }
            transaction.commit()?;
            Ok(results)
        })
        .await
    }

    /// Claims the best due message and moves it to `sending`, counting an attempt.
    ///
    /// Due means queued, `send_after` and `next_attempt_at` reached and not expired. Order: priority, then due
    /// time, then creation time. Claims are serialised by the write connection, so no message is claimed twice.
    pub async fn claim_next(&self, now: DateTime<Utc>) -> Result<Option<MessageRecord>, StoreError> {
        self.write(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(id) = find_due(&transaction, now)? else {
                return Ok(None);
            };

            let attempt = read_message(&transaction, &id)?.attempts + 1;
            let reason = format!("claimed for attempt {attempt}");
            change_status(&transaction, &id, MessageStatus::Sending, now, &reason)?;
            transaction
                .prepare_cached("UPDATE messages SET attempts = ?2 WHERE id = ?1")?
                .execute(params![id, attempt])?;

            let claimed = read_message(&transaction, &id)?;
            transaction.commit()?;
            Ok(Some(claimed))
        })
        .await
    }

    /// Records durably that the message data is about to be written to SMTP, with the email's Message-ID.
    ///
    /// After a crash, a `sending` message with this mark becomes `uncertain` instead of being sent again.
    pub async fn mark_data_started(
        &self,
        id: &str,
        smtp_message_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        let smtp_message_id = normalise_message_id(smtp_message_id);
        self.write(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let status = read_status(&transaction, &id)?;
            if status != MessageStatus::Sending {
                return Err(StoreError::Conflict(format!("message {id} is {status}, not sending")));
            }
            transaction
                .prepare_cached(
                    "UPDATE messages SET data_started_at = ?2, smtp_message_id = ?3, updated_at = ?2 WHERE id = ?1",
                )?
                .execute(params![id, to_millis(now), smtp_message_id])?;
            transaction.commit()?;
            Ok(())
        })
        .await
    }

    /// Moves a message to `sent` after NHSmail accepted its data.
    pub async fn mark_sent(&self, id: &str, now: DateTime<Utc>, reason: &str) -> Result<(), StoreError> {
        self.transition(
            id,
            MessageStatus::Sent,
            now,
            reason,
            Some("UPDATE messages SET sent_at = ?2, next_attempt_at = NULL WHERE id = ?1"),
        )
        .await
    }

    /// Queues a message again after a transient failure; it is not claimed before `next_attempt_at`.
    pub async fn mark_retry(
        &self,
        id: &str,
        next_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        let reason = reason.to_owned();
        self.write(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            change_status(&transaction, &id, MessageStatus::Queued, now, &reason)?;
            transaction
                .prepare_cached("UPDATE messages SET next_attempt_at = ?2, data_started_at = NULL WHERE id = ?1")?
                .execute(params![id, to_millis(next_attempt_at)])?;
            transaction.commit()?;
            Ok(())
        })
        .await
    }

    /// Moves a message to `failed`, for example on an SMTP 5xx naming the recipient.
    pub async fn mark_failed(&self, id: &str, now: DateTime<Utc>, reason: &str) -> Result<(), StoreError> {
        self.transition(id, MessageStatus::Failed, now, reason, None).await
    }

    /// Moves a message to `uncertain`: the connection dropped after its data was written.
    pub async fn mark_uncertain(&self, id: &str, now: DateTime<Utc>, reason: &str) -> Result<(), StoreError> {
        self.transition(id, MessageStatus::Uncertain, now, reason, None).await
    }

    /// Returns a `sending` message to the queue as if it had not been claimed: the attempt is not counted. Used when
    /// sending stopped for a reason unrelated to the message, such as an authentication failure.
    pub async fn release(&self, id: &str, now: DateTime<Utc>, reason: &str) -> Result<(), StoreError> {
        self.transition(
            id,
            MessageStatus::Queued,
            now,
            reason,
            Some(
                "UPDATE messages SET attempts = max(attempts - 1, 0), data_started_at = NULL, updated_at = ?2 \
                 WHERE id = ?1",
            ),
        )
        .await
    }

    /// Cancels a queued message. Any other state is a [`StoreError::InvalidTransition`] naming it.
    pub async fn cancel(&self, id: &str, now: DateTime<Utc>, reason: &str) -> Result<MessageRecord, StoreError> {
        let id = id.to_owned();
        let reason = reason.to_owned();
        self.write(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            change_status(&transaction, &id, MessageStatus::Cancelled, now, &reason)?;
            let cancelled = read_message(&transaction, &id)?;
            transaction.commit()?;
            Ok(cancelled)
        })
        .await
    }

    /// Moves every queued message whose expiry time has passed to `expired`. Returns how many.
    pub async fn expire_due(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.write(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let expired = move_all(
                &transaction,
                "status = 'queued' AND expires_at <= ?1",
                MessageStatus::Queued,
                MessageStatus::Expired,
                now,
                "not sent before its expiry time",
            )?;
            transaction.commit()?;
            Ok(expired)
        })
        .await
    }

    /// Settles messages left in `sending` by a previous run. Call once at start-up, before the sender starts.
    ///
    /// A message without `data_started_at` never reached SMTP's DATA, so it is queued again. One with it may have
    /// reached NHSmail, so it becomes `uncertain` and is never resent automatically.
    pub async fn recover_interrupted(&self, now: DateTime<Utc>) -> Result<RecoveryCounts, StoreError> {
        self.write(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let requeued = move_all(
                &transaction,
                "status = 'sending' AND data_started_at IS NULL",
                MessageStatus::Sending,
                MessageStatus::Queued,
                now,
                "interrupted before the data was sent; queued again at start-up",
            )?;
            let uncertain = move_all(
                &transaction,
                "status = 'sending' AND data_started_at IS NOT NULL",
                MessageStatus::Sending,
                MessageStatus::Uncertain,
                now,
                "interrupted after the data was sent; NHSmail may have the message",
            )?;
            transaction.commit()?;
            Ok(RecoveryCounts { requeued, uncertain })
        })
        .await
    }

    /// Returns a message with its events, oldest first.
    pub async fn get_message(&self, id: &str) -> Result<Option<(MessageRecord, Vec<EventRecord>)>, StoreError> {
        let id = id.to_owned();
        self.read(move |connection| {
            let message = match read_message(connection, &id) {
                Ok(message) => message,
                Err(StoreError::NotFound { .. }) => return Ok(None),
                Err(error) => return Err(error),
            };
            let events = connection
                .prepare_cached(
                    "SELECT at, from_status, to_status, reason FROM message_events WHERE message_id = ?1 ORDER BY seq",
                )?
                .query_map([&id], |row| {
                    Ok(EventRecord {
                        at: get_time(row, 0)?,
                        from_status: row.get(1)?,
                        to_status: row.get(2)?,
                        reason: row.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(Some((message, events)))
        })
        .await
    }

    /// Lists messages newest first, optionally in one state. `page_size` 0 means 100 and is capped at 1000.
    /// Returns the page and the token of the next page, `None` on the last page.
    pub async fn list_messages(
        &self,
        status: Option<MessageStatus>,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<(Vec<MessageRecord>, Option<String>), StoreError> {
        let before = parse_page_token(page_token)?.unwrap_or(i64::MAX);
        let page_size = clamp_page_size(page_size);
        self.read(move |connection| {
            let limit = i64::from(page_size) + 1;
            let rows: Vec<(i64, MessageRecord)> = match status {
                Some(status) => connection
                    .prepare_cached(&format!(
                        "SELECT seq, {MESSAGE_COLUMNS} FROM messages WHERE status = ?1 AND seq < ?2 \
                         ORDER BY seq DESC LIMIT ?3"
                    ))?
                    .query_map(params![status, before, limit], sequenced_message_from_row)?
                    .collect::<Result<_, _>>()?,
                None => connection
                    .prepare_cached(&format!(
                        "SELECT seq, {MESSAGE_COLUMNS} FROM messages WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2"
                    ))?
                    .query_map(params![before, limit], sequenced_message_from_row)?
                    .collect::<Result<_, _>>()?,
            };
            Ok(paginate(rows, page_size))
        })
        .await
    }

    /// Returns the number of messages in each state, every state included.
    pub async fn count_by_status(&self) -> Result<Vec<(MessageStatus, u64)>, StoreError> {
        self.read(|connection| {
            let mut counts: Vec<(MessageStatus, u64)> =
                MessageStatus::ALL.into_iter().map(|status| (status, 0)).collect();
            let mut statement = connection.prepare_cached("SELECT status, count(*) FROM messages GROUP BY status")?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let status: MessageStatus = row.get(0)?;
                let count: u64 = row.get(1)?;
                if let Some(entry) = counts.iter_mut().find(|(known, _)| *known == status) {
                    entry.1 = count;
                }
            }
            Ok(counts)
        })
        .await
    }

    /// Returns the creation time of the earliest-submitted message still queued.
    pub async fn oldest_queued_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read(|connection| {
            let time = connection
                .prepare_cached("SELECT created_at FROM messages WHERE status = 'queued' ORDER BY seq LIMIT 1")?
                .query_row([], |row| get_time(row, 0))
                .optional()?;
            Ok(time)
        })
        .await
    }

    /// Returns when NHSmail last accepted a message.
    pub async fn last_sent_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read(|connection| {
            let time = connection
                .prepare_cached("SELECT sent_at FROM messages WHERE sent_at IS NOT NULL ORDER BY sent_at DESC LIMIT 1")?
                .query_row([], |row| get_time(row, 0))
                .optional()?;
            Ok(time)
        })
        .await
    }

    /// Returns the earliest time at which a queued message becomes due, so the sender can sleep until then.
    /// A time at or before `now` means a message is due already. Messages that expire before they become due are
    /// ignored.
    pub async fn next_due_at(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read(move |connection| {
            // Left to itself, SQLite picks messages_expiry and sorts every queued message. The claim index is
            // already in due order, so the scan stops at the first message that has not expired.
            let mut statement = connection.prepare_cached(
                "SELECT due_at FROM messages INDEXED BY messages_claim \
                 WHERE status = 'queued' AND priority_rank = ?1 AND expires_at > ?2 AND due_at < expires_at \
                 ORDER BY due_at LIMIT 1",
            )?;
            let mut earliest: Option<DateTime<Utc>> = None;
            for rank in RANKS {
                let due = statement.query_row(params![rank, to_millis(now)], |row| get_time(row, 0)).optional()?;
                earliest = match (earliest, due) {
                    (Some(earliest), Some(due)) => Some(earliest.min(due)),
                    (earliest, due) => earliest.or(due),
                };
            }
            Ok(earliest)
        })
        .await
    }

    /// Returns the number of queued messages due at `now`.
    ///
    /// The upload cycle calls this as its "reorder the queue" step. No rows are rewritten: [`Store::claim_next`]
    /// orders by priority, due time and age on every claim, so the queue is always in order.
    pub async fn reorder_queue(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT count(*) FROM messages INDEXED BY messages_claim \
                 WHERE status = 'queued' AND priority_rank = ?1 AND due_at <= ?2 AND expires_at > ?2",
            )?;
            let mut due = 0;
            for rank in RANKS {
                due += statement.query_row(params![rank, to_millis(now)], |row| row.get::<_, u64>(0))?;
            }
            Ok(due)
        })
        .await
    }

    /// Applies one state change and then `extra_update`, bound to `?1` = id and `?2` = now, in one transaction.
    async fn transition(
        &self,
        id: &str,
        to: MessageStatus,
        now: DateTime<Utc>,
        reason: &str,
        extra_update: Option<&'static str>,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        let reason = reason.to_owned();
        self.write(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            change_status(&transaction, &id, to, now, &reason)?;
            if let Some(extra_update) = extra_update {
                transaction.prepare_cached(extra_update)?.execute(params![id, to_millis(now)])?;
            }
            transaction.commit()?;
            Ok(())
        })
        .await
    }
}

fn submit_one(connection: &Connection, index: usize, message: NewMessage) -> Result<Submission, StoreError> {
    if !message.idempotency_key.is_empty() {
        // The `<> ''` term lets SQLite use the partial index messages_idempotency; without it every lookup scans.
        let existing = connection
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages \
                 WHERE caller = ?1 AND idempotency_key = ?2 AND idempotency_key <> ''"
            ))?
            .query_row(params![message.caller, message.idempotency_key], message_from_row)
            .optional()?;
        if let Some(existing) = existing {
            return Ok(Submission { message: existing, duplicate: true });
        }
    }

    if let Some(since) = super::optouts::opted_out_at(connection, &message.to_e164)? {
        return Err(StoreError::OptedOut { index, e164: message.to_e164, since });
    }

    let id = message.id.unwrap_or_else(|| Uuid::now_v7().to_string());
    let send_after = message.send_after.unwrap_or(message.created_at);
    let inserted = connection
        .prepare_cached(
            "INSERT INTO messages (id, status, to_e164, gateway_address, text, priority, encoding, parts, length, \
             created_at, send_after, expires_at, updated_at, caller, idempotency_key, client_reference, \
             status_reason) \
             VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?9, ?12, ?13, ?14, ?15)",
        )?
        .execute(params![
            id,
            message.to_e164,
            message.gateway_address,
            message.text,
            message.priority,
            message.encoding,
            message.parts,
            message.length,
            to_millis(message.created_at),
            to_millis(send_after),
            to_millis(message.expires_at),
            message.caller,
            message.idempotency_key,
            message.client_reference,
            SUBMITTED_REASON,
        ]);
    if let Err(error) = inserted {
        return Err(match is_unique_violation(&error) {
            true => StoreError::Conflict(format!("message id {id} already exists")),
            false => error.into(),
        });
    }
    insert_event(connection, &id, message.created_at, None, MessageStatus::Queued, SUBMITTED_REASON)?;

    Ok(Submission {
        message: MessageRecord {
            id,
            status: MessageStatus::Queued,
            to_e164: message.to_e164,
            gateway_address: message.gateway_address,
            text: message.text,
            priority: message.priority,
            encoding: message.encoding,
            parts: message.parts,
            length: message.length,
            created_at: truncate_to_millis(message.created_at),
            send_after: truncate_to_millis(send_after),
            expires_at: truncate_to_millis(message.expires_at),
            sent_at: None,
            updated_at: truncate_to_millis(message.created_at),
            caller: message.caller,
            idempotency_key: message.idempotency_key,
            client_reference: message.client_reference,
            smtp_message_id: None,
            attempts: 0,
            next_attempt_at: None,
            data_started_at: None,
            status_reason: String::from(SUBMITTED_REASON),
        },
        duplicate: false,
    })
}

/// Returns the id of the best due message: the first found in priority order, each rank read through the claim
/// index so that a backlog in one rank does not slow the others.
fn find_due(connection: &Connection, now: DateTime<Utc>) -> Result<Option<String>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT id FROM messages \
         WHERE status = 'queued' AND priority_rank = ?1 AND due_at <= ?2 AND expires_at > ?2 \
         ORDER BY due_at, created_at LIMIT 1",
    )?;
    for rank in RANKS {
        let id = statement.query_row(params![rank, to_millis(now)], |row| row.get::<_, String>(0)).optional()?;
        if id.is_some() {
            return Ok(id);
        }
    }
    Ok(None)
}

/// Moves one message to `to` if [`can_transition`] allows it, and writes the event. Returns the previous state.
pub(super) fn change_status(
    connection: &Connection,
    id: &str,
    to: MessageStatus,
    now: DateTime<Utc>,
    reason: &str,
) -> Result<MessageStatus, StoreError> {
    let from = read_status(connection, id)?;
    if !can_transition(from, to) {
        return Err(StoreError::InvalidTransition { id: id.to_owned(), from, to });
    }

    connection
        .prepare_cached("UPDATE messages SET status = ?2, status_reason = ?3, updated_at = ?4 WHERE id = ?1")?
        .execute(params![id, to, reason, to_millis(now)])?;
    insert_event(connection, id, now, Some(from), to, reason)?;
    Ok(from)
}

/// Moves every message matching `condition` (SQL over `messages`, `?1` = now) from `from` to `to`, writing one
/// event each. Returns how many moved.
fn move_all(
    connection: &Connection,
    condition: &str,
    from: MessageStatus,
    to: MessageStatus,
    now: DateTime<Utc>,
    reason: &str,
) -> Result<u64, StoreError> {
    debug_assert!(can_transition(from, to));
    let now = to_millis(now);

    let events = connection
        .prepare_cached(&format!(
            "INSERT INTO message_events (message_id, at, from_status, to_status, reason) \
             SELECT id, ?1, ?2, ?3, ?4 FROM messages WHERE {condition}"
        ))?
        .execute(params![now, from, to, reason])?;
    let moved = connection
        .prepare_cached(&format!(
            "UPDATE messages SET status = ?2, status_reason = ?3, updated_at = ?1 WHERE {condition}"
        ))?
        .execute(params![now, to, reason])?;

    debug_assert_eq!(events, moved);
    Ok(moved as u64)
}

fn insert_event(
    connection: &Connection,
    id: &str,
    at: DateTime<Utc>,
    from: Option<MessageStatus>,
    to: MessageStatus,
    reason: &str,
) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO message_events (message_id, at, from_status, to_status, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![id, to_millis(at), from, to, reason])?;
    Ok(())
}

fn read_status(connection: &Connection, id: &str) -> Result<MessageStatus, StoreError> {
    connection
        .prepare_cached("SELECT status FROM messages WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?
        .ok_or_else(|| message_not_found(id))
}

pub(super) fn read_message(connection: &Connection, id: &str) -> Result<MessageRecord, StoreError> {
    connection
        .prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"))?
        .query_row([id], message_from_row)
        .optional()?
        .ok_or_else(|| message_not_found(id))
}

fn message_not_found(id: &str) -> StoreError {
    StoreError::NotFound { what: "message", id: id.to_owned() }
}

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    message_from_row_at(row, 0)
}

fn sequenced_message_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, MessageRecord)> {
    Ok((row.get(0)?, message_from_row_at(row, 1)?))
}

/// Reads [`MESSAGE_COLUMNS`] starting at column `first`.
fn message_from_row_at(row: &Row<'_>, first: usize) -> rusqlite::Result<MessageRecord> {
    let column = |offset: usize| first + offset;
    Ok(MessageRecord {
        id: row.get(column(0))?,
        status: row.get(column(1))?,
        to_e164: row.get(column(2))?,
        gateway_address: row.get(column(3))?,
        text: row.get(column(4))?,
        priority: row.get(column(5))?,
        encoding: row.get(column(6))?,
        parts: row.get(column(7))?,
        length: row.get(column(8))?,
        created_at: get_time(row, column(9))?,
        send_after: get_time(row, column(10))?,
        expires_at: get_time(row, column(11))?,
        sent_at: get_optional_time(row, column(12))?,
        updated_at: get_time(row, column(13))?,
        caller: row.get(column(14))?,
        idempotency_key: row.get(column(15))?,
        client_reference: row.get(column(16))?,
        smtp_message_id: row.get(column(17))?,
        attempts: row.get(column(18))?,
        next_attempt_at: get_optional_time(row, column(19))?,
        data_started_at: get_optional_time(row, column(20))?,
        status_reason: row.get(column(21))?,
    })
}

/// Splits a page read with one extra row into the page and the next page token.
pub(super) fn paginate<T>(mut rows: Vec<(i64, T)>, page_size: u32) -> (Vec<T>, Option<String>) {
    let next_token = if rows.len() > page_size as usize {
        rows.truncate(page_size as usize);
        rows.last().map(|(seq, _)| seq.to_string())
    } else {
        None
    };
    (rows.into_iter().map(|(_, row)| row).collect(), next_token)
}

/// Strips surrounding whitespace and angle brackets, so `<a@b>` and `a@b` compare equal. Returns `None` when
/// nothing remains.
pub(super) fn normalise_message_id(message_id: &str) -> Option<String> {
    let trimmed = message_id.trim();
    let inner = trimmed.strip_prefix('<').and_then(|rest| rest.strip_suffix('>')).unwrap_or(trimmed).trim();
    (!inner.is_empty()).then(|| inner.to_owned())
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// Drops sub-millisecond precision, matching what a read from the database returns.
fn truncate_to_millis(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(to_millis(time)).unwrap_or(time)
}
