//! The event feed behind WatchEvents: every state change of a text and every patient reply, in commit order.
//! The rows are written by triggers on `message_events` and `replies`; this module only reads them.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::{ReplyRecord, Store, StoreError, get_time};
use crate::queue::MessageStatus;

/// One entry of the feed. `event_id` increases with every entry and is what a client resumes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    MessageChanged {
        event_id: i64,
        at: DateTime<Utc>,
        message_id: String,
        /// `None` for the first event of a message, its submission.
        from_status: Option<MessageStatus>,
        to_status: MessageStatus,
        reason: String,
        to_e164: String,
        client_reference: String,
    },
    ReplyReceived {
        event_id: i64,
        reply: ReplyRecord,
    },
}

impl FeedEvent {
    pub fn event_id(&self) -> i64 {
        match self {
            FeedEvent::MessageChanged { event_id, .. } | FeedEvent::ReplyReceived { event_id, .. } => *event_id,
        }
    }
}

impl Store {
    /// Returns up to `limit` feed entries with an id above `after`, oldest first.
    pub async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<FeedEvent>, StoreError> {
        self.read(move |connection| {
            let entries: Vec<(i64, String, i64)> = connection
                .prepare_cached("SELECT seq, kind, source_seq FROM event_feed WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
                .query_map(params![after, i64::from(limit)], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let mut events = Vec::with_capacity(entries.len());
            for (event_id, kind, source_seq) in entries {
                let event = match kind.as_str() {
                    "message" => message_event(connection, event_id, source_seq)?,
                    _ => reply_event(connection, event_id, source_seq)?,
                };
                events.push(event);
            }
            Ok(events)
        })
        .await
    }

    /// Returns the id of the newest feed entry, 0 when the feed is empty.
    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        self.read(|connection| {
            Ok(connection
                .prepare_cached("SELECT coalesce(max(seq), 0) FROM event_feed")?
                .query_row([], |row| row.get(0))?)
        })
        .await
    }
}

fn message_event(connection: &Connection, event_id: i64, source_seq: i64) -> rusqlite::Result<FeedEvent> {
    connection
        .prepare_cached(
            "SELECT e.message_id, e.at, e.from_status, e.to_status, e.reason, m.to_e164, m.client_reference \
             FROM message_events e JOIN messages m ON m.id = e.message_id WHERE e.seq = ?1",
        )?
        .query_row(params![source_seq], |row| {
            Ok(FeedEvent::MessageChanged {
                event_id,
                message_id: row.get(0)?,
                at: get_time(row, 1)?,
                from_status: row.get(2)?,
                to_status: row.get(3)?,
                reason: row.get(4)?,
                to_e164: row.get(5)?,
                client_reference: row.get(6)?,
            })
        })
}

fn reply_event(connection: &Connection, event_id: i64, source_seq: i64) -> rusqlite::Result<FeedEvent> {
    connection
        .prepare_cached(
            "SELECT id, from_e164, text, raw_text, received_at, message_id, email_message_id, inbound_id \
             FROM replies WHERE seq = ?1",
        )?
        .query_row(params![source_seq], |row| {
            Ok(FeedEvent::ReplyReceived {
                event_id,
                reply: ReplyRecord {
                    id: row.get(0)?,
                    from_e164: row.get(1)?,
                    text: row.get(2)?,
                    raw_text: row.get(3)?,
                    received_at: get_time(row, 4)?,
                    message_id: row.get(5)?,
                    email_message_id: row.get(6)?,
                    inbound_id: row.get(7)?,
                },
            })
        })
}
