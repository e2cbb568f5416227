//! Inbound mail kept for a person to review: emails that could not be classified, auto-replies, and reports or
//! receipts that matched no sent text. Nothing is dropped; reviewing only marks an email as seen.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, StoreError, clamp_page_size, get_time, parse_page_token};

/// The condition that puts an email on the review list, in SQL over `inbound_mail`.
const NEEDS_REVIEW: &str = "(kind IN ('other', 'auto_reply') \
     OR (kind IN ('failure_report', 'delivery_receipt', 'delay_report') AND matched_message_id IS NULL))";

/// An inbound email with the fields a reviewer needs.
#[derive(Clone, PartialEq, Eq)]
pub struct InboundEmail {
    pub id: i64,
    pub kind: String,
    pub from: String,
    pub subject: String,
    pub received_at: DateTime<Utc>,
    pub reason: String,
    pub email_message_id: Option<String>,
    pub matched_message_id: Option<String>,
    pub reviewed: bool,
    /// The email as received; filled only by [`Store::inbound_email`].
    pub raw: Option<Vec<u8>>,
}

impl std::fmt::Debug for InboundEmail {
    // The raw email can hold a patient's words; Debug shows only its size.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("InboundEmail")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("reviewed", &self.reviewed)
            .field("raw_bytes", &self.raw.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str =
    "id, kind, from_address, subject, received_at, reason, email_message_id, matched_message_id, reviewed";

impl Store {
    /// Lists emails kept for review, newest first; with `include_reviewed`, also those already reviewed.
    /// `page_size` 0 means 100 and is capped at 1000.
    pub async fn list_inbound_for_review(
        &self,
        include_reviewed: bool,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<(Vec<InboundEmail>, Option<String>), StoreError> {
        let before = parse_page_token(page_token)?.unwrap_or(i64::MAX);
        let page_size = clamp_page_size(page_size);
        self.read(move |connection| {
            let reviewed = if include_reviewed { "" } else { "AND reviewed = 0" };
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM inbound_mail WHERE id < ?1 AND {NEEDS_REVIEW} {reviewed} \
                 ORDER BY id DESC LIMIT ?2"
            ))?;
            let mut emails = statement
                .query_map(params![before, i64::from(page_size) + 1], email_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            let more = emails.len() > page_size as usize;
            emails.truncate(page_size as usize);
            let next = if more { emails.last().map(|email| email.id.to_string()) } else { None };
            Ok((emails, next))
        })
        .await
    }

    /// Returns one inbound email with its raw bytes.
    pub async fn inbound_email(&self, id: i64) -> Result<Option<InboundEmail>, StoreError> {
        self.read(move |connection| Ok(find(connection, id, true)?)).await
    }

    /// Marks an inbound email as reviewed and returns it. Marking it twice is harmless.
    pub async fn mark_reviewed(&self, id: i64) -> Result<InboundEmail, StoreError> {
        self.write(move |connection| {
            let updated = connection
                .prepare_cached("UPDATE inbound_mail SET reviewed = 1 WHERE id = ?1")?
                .execute(params![id])?;
            if updated == 0 {
                return Err(StoreError::NotFound { what: "inbound email", id: id.to_string() });
            }
            Ok(find(connection, id, false)?.expect("the email was just updated"))
        })
        .await
    }
}

fn find(connection: &Connection, id: i64, with_raw: bool) -> rusqlite::Result<Option<InboundEmail>> {
    let mut email = connection
        .prepare_cached(&format!("SELECT {COLUMNS} FROM inbound_mail WHERE id = ?1"))?
        .query_row(params![id], email_from_row)
        .optional()?;
    if with_raw && let Some(email) = email.as_mut() {
        email.raw = Some(
            connection
                .prepare_cached("SELECT raw FROM inbound_mail WHERE id = ?1")?
                .query_row(params![id], |row| row.get(0))?,
        );
    }
    Ok(email)
}

fn email_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<InboundEmail> {
    Ok(InboundEmail {
        id: row.get(0)?,
        kind: row.get(1)?,
        from: row.get(2)?,
        subject: row.get(3)?,
        received_at: get_time(row, 4)?,
        reason: row.get(5)?,
        email_message_id: row.get(6)?,
        matched_message_id: row.get(7)?,
        reviewed: row.get::<_, i64>(8)? == 1,
        raw: None,
    })
}
