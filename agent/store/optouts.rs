//! Numbers that must not be texted: patients who replied STOP, and numbers an operator opted out. Submission checks
//! this list in the same transaction that queues a message, so no text is queued for an opted-out number.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Store, StoreError, clamp_page_size, get_time, parse_page_token, to_millis};

/// The origin of an opt-out or opt-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptOutSource {
    /// A STOP or START reply from the patient.
    Reply,
    /// An operator, through the API.
    Manual,
}

impl OptOutSource {
    pub fn as_str(self) -> &'static str {
        match self {
            OptOutSource::Reply => "reply",
            OptOutSource::Manual => "manual",
        }
    }
}

/// One opted-out number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOut {
    pub e164: String,
    pub opted_out_at: DateTime<Utc>,
    /// "reply" or "manual".
    pub source: String,
    pub note: String,
}

impl Store {
    /// Lists opted-out numbers, most recent first. `page_size` 0 means 100 and is capped at 1000.
    pub async fn list_opt_outs(
        &self,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<(Vec<OptOut>, Option<String>), StoreError> {
        let before = parse_page_token(page_token)?.unwrap_or(i64::MAX);
        let page_size = clamp_page_size(page_size);
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT seq, e164, opted_out_at, source, note FROM opt_outs WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let rows = statement
                .query_map(params![before, i64::from(page_size) + 1], |row| {
                    let seq: i64 = row.get(0)?;
                    let opt_out = OptOut {
                        e164: row.get(1)?,
                        opted_out_at: get_time(row, 2)?,
                        source: row.get(3)?,
                        note: row.get(4)?,
                    };
                    Ok((seq, opt_out))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(page(rows, page_size))
        })
        .await
    }

    /// Returns the opt-out of one number, if it is opted out.
    pub async fn opt_out(&self, e164: &str) -> Result<Option<OptOut>, StoreError> {
        let e164 = e164.to_owned();
        self.read(move |connection| Ok(find_opt_out(connection, &e164)?)).await
    }

    /// Opts a number out. A number already opted out keeps its original date; the call returns that opt-out.
    pub async fn add_opt_out(
        &self,
        e164: &str,
        source: OptOutSource,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<OptOut, StoreError> {
        let (e164, note) = (e164.to_owned(), note.to_owned());
        self.write(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            set_opted_out(&transaction, &e164, true, source, &note, now)?;
            let opt_out = find_opt_out(&transaction, &e164)?.expect("the opt-out was just written");
            transaction.commit()?;
            Ok(opt_out)
        })
        .await
    }

    /// Opts a number back in. Returns whether it was opted out.
    pub async fn remove_opt_out(
        &self,
        e164: &str,
        source: OptOutSource,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (e164, note) = (e164.to_owned(), note.to_owned());
        self.write(move |connection| {
            let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let removed = set_opted_out(&transaction, &e164, false, source, &note, now)?;
            transaction.commit()?;
            Ok(removed)
        })
        .await
    }
}

/// Returns when `e164` opted out, if it is opted out now.
pub(super) fn opted_out_at(connection: &Connection, e164: &str) -> rusqlite::Result<Option<DateTime<Utc>>> {
    connection
        .prepare_cached("SELECT opted_out_at FROM opt_outs WHERE e164 = ?1")?
        .query_row(params![e164], |row| get_time(row, 0))
        .optional()
}

/// Opts `e164` out (`opted_out` true) or back in, recording an event when the state changes. Returns whether it
/// changed.
pub(super) fn set_opted_out(
    connection: &Connection,
    e164: &str,
    opted_out: bool,
    source: OptOutSource,
    note: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    let changed = if opted_out {
        connection
            .prepare_cached(
                "INSERT INTO opt_outs (e164, opted_out_at, source, note) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (e164) DO NOTHING",
            )?
            .execute(params![e164, to_millis(now), source.as_str(), note])?
    } else {
        connection.prepare_cached("DELETE FROM opt_outs WHERE e164 = ?1")?.execute(params![e164])?
    };
    if changed > 0 {
        let action = if opted_out { "opt_out" } else { "opt_in" };
        connection
            .prepare_cached("INSERT INTO opt_out_events (e164, at, action, source, note) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![e164, to_millis(now), action, source.as_str(), note])?;
    }
    Ok(changed > 0)
}

fn find_opt_out(connection: &Connection, e164: &str) -> rusqlite::Result<Option<OptOut>> {
    connection
        .prepare_cached("SELECT e164, opted_out_at, source, note FROM opt_outs WHERE e164 = ?1")?
        .query_row(params![e164], |row| {
            Ok(OptOut { e164: row.get(0)?, opted_out_at: get_time(row, 1)?, source: row.get(2)?, note: row.get(3)? })
        })
        .optional()
}

fn page(mut rows: Vec<(i64, OptOut)>, page_size: u32) -> (Vec<OptOut>, Option<String>) {
    let more = rows.len() > page_size as usize;
    rows.truncate(page_size as usize);
    let next = if more { rows.last().map(|(seq, _)| seq.to_string()) } else { None };
    (rows.into_iter().map(|(_, opt_out)| opt_out).collect(), next)
}
