//! Inbound mail recorded exactly once, its effect on the message it refers to, patient replies, and the last IMAP
//! UID read from each mailbox.

use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter, types::Value};
use uuid::Uuid;

use super::optouts::{OptOutSource, set_opted_out};
use super::{
    Store, StoreError, clamp_page_size, get_time,
    messages::{change_status, normalise_message_id, paginate},
    parse_page_token, to_millis,
};
use crate::queue::{MessageStatus, can_transition};

/// How far back a reply that names no message is matched to the latest text sent to its number.
pub const REPLY_MATCH_WINDOW: TimeDelta = TimeDelta::days(7);
/// How far back a report without a matching Message-ID is matched by its number: the agent's default maximum
/// lifetime of a text, 72 hours, since a text is not sent later than that.
pub const REPORT_MATCH_WINDOW: TimeDelta = TimeDelta::hours(72);

/// One classified email, ready to be recorded.
#[derive(Clone, PartialEq, Eq)]
pub struct InboundRecord {
    pub mailbox: String,
    pub uidvalidity: u32,
    pub uid: u32,
    /// The email's own Message-ID; empty when it has none.
    pub email_message_id: String,
    /// The classification, for example "failure_report", "receipt", "reply" or "other".
    pub kind: String,
    pub from: String,
    pub subject: String,
    pub received_at: DateTime<Utc>,
    pub raw: Vec<u8>,
    /// The classifier's explanation, shown when the email is reviewed.
    pub reason: String,
    /// Message-IDs of the original message this email may refer to, strongest evidence first.
    pub candidate_ids: Vec<String>,
    /// For a report, the number it is about (its final recipient), used to match it by number and time when no
    /// Message-ID matches.
    pub recipient_e164: Option<String>,
    pub effect: Effect,
}

impl std::fmt::Debug for InboundRecord {
    // The raw email can be large and contains patient data, so only its size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundRecord")
            .field("mailbox", &self.mailbox)
            .field("uidvalidity", &self.uidvalidity)
            .field("uid", &self.uid)
            .field("email_message_id", &self.email_message_id)
            .field("kind", &self.kind)
            .field("raw_len", &self.raw.len())
            .field("candidate_ids", &self.candidate_ids)
            .finish_non_exhaustive()
    }
}

/// The change an inbound email makes to the message it is matched to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Stored only, for example an auto-reply or an unclassified email kept for review.
    None,
    /// A delivery receipt: the matched message becomes `delivered`.
    Delivered,
    /// A failure report: the matched message becomes `failed` with this reason.
    Failed { reason: String },
    /// A patient reply, stored as a reply row whether or not a message matches. `opt_out` is `Some(true)` for a
    /// STOP reply and `Some(false)` for START, which opt the number out of texts and back in.
    Reply { from_e164: String, text: String, raw_text: String, opt_out: Option<bool> },
}

/// The result of [`Store::record_inbound`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundOutcome {
    /// The same (mailbox, UIDVALIDITY, UID) or the same Message-ID was recorded before; nothing changed except
    /// the mailbox's last UID.
    AlreadySeen,
    Recorded {
        matched_message_id: Option<String>,
        /// Whether the effect changed the matched message's state. False when the state did not allow it, for
        /// example a second receipt for a delivered message.
        status_changed: bool,
    },
}

/// Progress through one IMAP mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImapState {
    pub uidvalidity: u32,
    pub last_uid: u32,
}

/// Filters for [`Store::list_replies`]; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyFilter {
    pub message_id: Option<String>,
    pub from_e164: Option<String>,
    /// Only replies received at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// A stored patient reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRecord {
    pub id: String,
    pub from_e164: String,
    pub text: String,
    pub raw_text: String,
    pub received_at: DateTime<Utc>,
    /// The message this reply is matched to, `None` when none matched.
    pub message_id: Option<String>,
    pub email_message_id: Option<String>,
    /// Row id of the inbound email the reply came in.
    pub inbound_id: i64,
}

impl Store {
    /// Records one inbound email and applies its effect, in one transaction, exactly once.
    ///
    /// An email whose (mailbox, UIDVALIDITY, UID) or Message-ID is already stored returns
    /// [`InboundOutcome::AlreadySeen`] and changes nothing else. Otherwise the email is stored and matched to the
    /// first candidate equal to a message's SMTP Message-ID; a reply that matches none is matched to the latest
    /// text sent or delivered to its number within [`REPLY_MATCH_WINDOW`] before it arrived.
    ///
    /// In both cases the mailbox's last UID advances to `uid` in the same transaction, so a crash cannot leave an
    /// email processed but due to be fetched again.
    pub async fn record_inbound(
        &self,
        record: InboundRecord,
        now: DateTime<Utc>,
    ) -> Result<InboundOutcome, StoreError> {
        self.write(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            advance_imap_state(&transaction, &record.mailbox, record.uidvalidity, record.uid)?;

            let email_message_id = normalise_message_id(&record.email_message_id);
            if is_seen(&transaction, &record, email_message_id.as_deref())? {
                relocate_unmoved(&transaction, &record, email_message_id.as_deref())?;
                transaction.commit()?;
                return Ok(InboundOutcome::AlreadySeen);
            }

            let matched_message_id = match_message(&transaction, &record)?;
            let inbound_id =
                insert_inbound(&transaction, &record, email_message_id.as_deref(), &matched_message_id, now)?;
            let status_changed = apply_effect(
                &transaction,
                &record,
                inbound_id,
                email_message_id.as_deref(),
                matched_message_id.as_deref(),
                now,
            )?;

            transaction.commit()?;
            Ok(InboundOutcome::Recorded { matched_message_id, status_changed })
        })
        .await
    }

    /// Returns the stored UIDVALIDITY and last processed UID of `mailbox`.
    pub async fn imap_state(&self, mailbox: &str) -> Result<Option<ImapState>, StoreError> {
        let mailbox = mailbox.to_owned();
        self.read(move |connection| {
            let state = connection
                .prepare_cached("SELECT uidvalidity, last_uid FROM imap_state WHERE mailbox = ?1")?
                .query_row([mailbox], |row| Ok(ImapState { uidvalidity: row.get(0)?, last_uid: row.get(1)? }))
                .optional()?;
            Ok(state)
        })
        .await
    }

    /// Starts `mailbox` again from UID 0 under a new UIDVALIDITY. Emails already recorded stay recorded and are
    /// recognised by their Message-ID when fetched again.
    pub async fn reset_imap_state(&self, mailbox: &str, uidvalidity: u32) -> Result<(), StoreError> {
        let mailbox = mailbox.to_owned();
        self.write(move |connection| {
            connection
                .prepare_cached(
                    "INSERT INTO imap_state (mailbox, uidvalidity, last_uid) VALUES (?1, ?2, 0) \
                     ON CONFLICT (mailbox) DO UPDATE SET uidvalidity = excluded.uidvalidity, last_uid = 0",
                )?
                .execute(params![mailbox, uidvalidity])?;
            Ok(())
        })
        .await
    }

    /// Lists replies newest first. `page_size` 0 means 100 and is capped at 1000. Returns the page and the token
    /// of the next page, `None` on the last page.
    pub async fn list_replies(
        &self,
        filter: ReplyFilter,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<(Vec<ReplyRecord>, Option<String>), StoreError> {
        let before = parse_page_token(page_token)?.unwrap_or(i64::MAX);
        let page_size = clamp_page_size(page_size);
        self.read(move |connection| {
            let mut conditions = vec!["seq < ?"];
            let mut values = vec![Value::Integer(before)];
            if let Some(message_id) = filter.message_id {
                conditions.push("message_id = ?");
                values.push(Value::Text(message_id));
            }
            if let Some(from_e164) = filter.from_e164 {
                conditions.push("from_e164 = ?");
                values.push(Value::Text(from_e164));
            }
            if let Some(since) = filter.since {
                conditions.push("received_at >= ?");
                values.push(Value::Integer(to_millis(since)));
            }
            values.push(Value::Integer(i64::from(page_size) + 1));

            let sql = format!(
                "SELECT seq, id, from_e164, text, raw_text, received_at, message_id, email_message_id, inbound_id \
                 FROM replies WHERE {} ORDER BY seq DESC LIMIT ?",
                conditions.join(" AND ")
            );
            let rows = connection
                .prepare_cached(&sql)?
                .query_map(params_from_iter(values), |row| {
                    let reply = ReplyRecord {
                        id: row.get(1)?,
                        from_e164: row.get(2)?,
                        text: row.get(3)?,
                        raw_text: row.get(4)?,
                        received_at: get_time(row, 5)?,
                        message_id: row.get(6)?,
                        email_message_id: row.get(7)?,
                        inbound_id: row.get(8)?,
                    };
                    Ok((row.get::<_, i64>(0)?, reply))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(paginate(rows, page_size))
        })
        .await
    }
}

/// Moves the mailbox's last UID up to `uid`. A different UIDVALIDITY replaces the stored one and its last UID.
fn advance_imap_state(connection: &Connection, mailbox: &str, uidvalidity: u32, uid: u32) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO imap_state (mailbox, uidvalidity, last_uid) VALUES (?1, ?2, ?3) \
             ON CONFLICT (mailbox) DO UPDATE SET \
                 last_uid = CASE WHEN uidvalidity = excluded.uidvalidity \
                     THEN max(last_uid, excluded.last_uid) ELSE excluded.last_uid END, \
                 uidvalidity = excluded.uidvalidity",
        )?
        .execute(params![mailbox, uidvalidity, uid])?;
    Ok(())
}

fn is_seen(connection: &Connection, record: &InboundRecord, email_message_id: Option<&str>) -> rusqlite::Result<bool> {
    let by_uid = connection
        .prepare_cached("SELECT 1 FROM inbound_mail WHERE mailbox = ?1 AND uidvalidity = ?2 AND uid = ?3")?
        .exists(params![record.mailbox, record.uidvalidity, record.uid])?;
    if by_uid {
        return Ok(true);
    }
    match email_message_id {
        Some(message_id) => {
            connection.prepare_cached("SELECT 1 FROM inbound_mail WHERE email_message_id = ?1")?.exists([message_id])
        }
        // Without a Message-ID, byte-identical mail recorded under an earlier UIDVALIDITY is the same email read
        // again. Under the same UIDVALIDITY the UID decides, so two identical emails there are both kept.
        None => connection
            .prepare_cached("SELECT 1 FROM inbound_mail WHERE raw_sha256 = ?1 AND mailbox = ?2 AND uidvalidity <> ?3")?
            .exists(params![raw_sha256(&record.raw), record.mailbox, record.uidvalidity]),
    }
}

/// Points a recorded email that is still due to be moved at its new UID, when it is read again under another
/// UIDVALIDITY, so the move uses a UID that is valid now. Changes nothing when `record`'s UID is already stored.
fn relocate_unmoved(
    connection: &Connection,
    record: &InboundRecord,
    email_message_id: Option<&str>,
) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "UPDATE inbound_mail SET uidvalidity = ?1, uid = ?2 WHERE id = ( \
                 SELECT id FROM inbound_mail \
                 WHERE mailbox = ?3 AND uidvalidity <> ?1 AND moved_at IS NULL \
                     AND (email_message_id = ?4 OR (?4 IS NULL AND raw_sha256 = ?5)) \
                 LIMIT 1) \
             AND NOT EXISTS (SELECT 1 FROM inbound_mail WHERE mailbox = ?3 AND uidvalidity = ?1 AND uid = ?2)",
        )?
        .execute(params![record.uidvalidity, record.uid, record.mailbox, email_message_id, raw_sha256(&record.raw)])?;
    Ok(())
}

fn raw_sha256(raw: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(raw).to_vec()
}

/// Returns the id of the message `record` refers to: the first candidate Message-ID that a message was sent
/// with, or for a reply the latest text sent to its number within [`REPLY_MATCH_WINDOW`].
fn match_message(connection: &Connection, record: &InboundRecord) -> rusqlite::Result<Option<String>> {
    let mut by_smtp_id = connection.prepare_cached("SELECT id FROM messages WHERE smtp_message_id = ?1 LIMIT 1")?;
    for candidate in &record.candidate_ids {
        let Some(candidate) = normalise_message_id(candidate) else {
            continue;
        };
        let found = by_smtp_id.query_row([candidate], |row| row.get::<_, String>(0)).optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }

    if let (Effect::Failed { .. } | Effect::Delivered, Some(number)) = (&record.effect, &record.recipient_e164) {
        return match_report_by_number(connection, number, record.received_at);
    }
    let Effect::Reply { from_e164, .. } = &record.effect else {
        return Ok(None);
    };
    connection
        .prepare_cached(
            "SELECT id FROM messages \
             WHERE to_e164 = ?1 AND sent_at IS NOT NULL AND sent_at BETWEEN ?2 AND ?3 \
                 AND status IN ('sent', 'delivered') \
             ORDER BY sent_at DESC LIMIT 1",
        )?
        .query_row(
            params![
                from_e164,
                to_millis(record.received_at) - REPLY_MATCH_WINDOW.num_milliseconds(),
                to_millis(record.received_at)
            ],
            |row| row.get(0),
        )
        .optional()
}

/// Returns the one text sent to `number` within [`REPORT_MATCH_WINDOW`] before `received_at` that still awaits its
/// outcome. With two or more such texts the report is ambiguous and matches none, so it cannot fail the wrong one.
fn match_report_by_number(
    connection: &Connection,
    number: &str,
    received_at: DateTime<Utc>,
) -> rusqlite::Result<Option<String>> {
    let ids: Vec<String> = connection
        .prepare_cached(
            "SELECT id FROM messages \
             WHERE to_e164 = ?1 AND sent_at IS NOT NULL AND sent_at BETWEEN ?2 AND ?3 \
                 AND status IN ('sent', 'uncertain') \
             ORDER BY sent_at DESC LIMIT 2",
        )?
        .query_map(
            params![number, to_millis(received_at) - REPORT_MATCH_WINDOW.num_milliseconds(), to_millis(received_at)],
            |row| row.get(0),
        )?
        .collect::<Result<_, _>>()?;
    Ok(if ids.len() == 1 { ids.into_iter().next() } else { None })
}

fn insert_inbound(
    connection: &Connection,
    record: &InboundRecord,
    email_message_id: Option<&str>,
    matched_message_id: &Option<String>,
    now: DateTime<Utc>,
) -> rusqlite::Result<i64> {
    connection
        .prepare_cached(
            "INSERT INTO inbound_mail (mailbox, uidvalidity, uid, email_message_id, kind, from_address, subject, \
             received_at, recorded_at, matched_message_id, reason, raw, raw_sha256) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            record.mailbox,
            record.uidvalidity,
            record.uid,
            email_message_id,
            record.kind,
            record.from,
            record.subject,
            to_millis(record.received_at),
            to_millis(now),
            matched_message_id,
            record.reason,
            record.raw,
            raw_sha256(&record.raw),
        ])?;
    Ok(connection.last_insert_rowid())
}

/// Applies the record's effect. Returns whether the matched message changed state.
fn apply_effect(
    connection: &Connection,
    record: &InboundRecord,
    inbound_id: i64,
    email_message_id: Option<&str>,
    matched_message_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    match &record.effect {
        Effect::None => Ok(false),
        Effect::Delivered => {
            change_if_allowed(connection, matched_message_id, MessageStatus::Delivered, now, "delivery receipt")
        }
        Effect::Failed { reason } => {
            change_if_allowed(connection, matched_message_id, MessageStatus::Failed, now, reason)
        }
        Effect::Reply { from_e164, text, raw_text, opt_out } => {
            connection
                .prepare_cached(
                    "INSERT INTO replies (id, from_e164, text, raw_text, received_at, message_id, email_message_id, \
                     inbound_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    Uuid::now_v7().to_string(),
                    from_e164,
                    text,
                    raw_text,
                    to_millis(record.received_at),
                    matched_message_id,
                    email_message_id,
                    inbound_id,
                ])?;
            if let Some(opted_out) = *opt_out {
                let note = if opted_out { "replied STOP" } else { "replied START" };
                set_opted_out(connection, from_e164, opted_out, OptOutSource::Reply, note, record.received_at)?;
            }
            Ok(false)
        }
    }
}

/// Moves the matched message to `to` when its current state allows it; otherwise leaves it as it is.
fn change_if_allowed(
    connection: &Connection,
    matched_message_id: Option<&str>,
    to: MessageStatus,
    now: DateTime<Utc>,
    reason: &str,
) -> Result<bool, StoreError> {
    let Some(id) = matched_message_id else {
        return Ok(false);
    };
    let from: MessageStatus =
        connection.prepare_cached("SELECT status FROM messages WHERE id = ?1")?.query_row([id], |row| row.get(0))?;
    if !can_transition(from, to) {
        return Ok(false);
    }
    change_status(connection, id, to, now, reason)?;
    Ok(true)
}
