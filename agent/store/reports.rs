//! Upload cycle reports: one row per run of the periodic cycle or TriggerUpload.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, get_time, to_millis};

/// Counts from one upload cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadCounts {
    /// Queued messages due when the cycle ran.
    pub reordered: u64,
    pub expired: u64,
    /// Emails fetched from the mailbox.
    pub collected: u64,
    pub failure_reports: u64,
    pub receipts: u64,
    pub replies: u64,
    pub other: u64,
    /// Fetched emails matched to a sent message.
    pub matched: u64,
    /// Emails moved from INBOX to the processed folder.
    pub moved: u64,
    /// Emails deleted from the processed folder after the retention period.
    pub deleted: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadReport {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The cause of the cycle, for example "schedule" or "trigger".
    pub trigger: String,
    pub counts: UploadCounts,
    /// One message per step that failed; empty when the cycle succeeded.
    pub errors: Vec<String>,
}

impl Store {
    /// Stores a report. Returns its row id.
    pub async fn insert_upload_report(&self, report: UploadReport) -> Result<i64, StoreError> {
        let errors = serde_json::to_string(&report.errors).expect("a list of strings always serialises");
        self.write(move |connection| {
            let counts = report.counts;
            connection
                .prepare_cached(
                    "INSERT INTO upload_reports (started_at, finished_at, triggered_by, reordered, expired, \
                     collected, failure_reports, receipts, replies, other, matched, errors, mail_moved, mail_deleted) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )?
                .execute(params![
                    to_millis(report.started_at),
                    to_millis(report.finished_at),
                    report.trigger,
                    counts.reordered,
                    counts.expired,
                    counts.collected,
                    counts.failure_reports,
                    counts.receipts,
                    counts.replies,
                    counts.other,
                    counts.matched,
                    errors,
                    counts.moved,
                    counts.deleted,
                ])?;
            Ok(connection.last_insert_rowid())
        })
        .await
    }

    /// Returns the most recently stored report.
    pub async fn last_upload_report(&self) -> Result<Option<UploadReport>, StoreError> {
        self.read(|connection| {
            let row = connection
                .prepare_cached(
                    "SELECT started_at, finished_at, triggered_by, reordered, expired, collected, failure_reports, \
                     receipts, replies, other, matched, errors, mail_moved, mail_deleted \
                     FROM upload_reports ORDER BY id DESC LIMIT 1",
                )?
                .query_row([], |row| {
                    let report = UploadReport {
                        started_at: get_time(row, 0)?,
                        finished_at: get_time(row, 1)?,
                        trigger: row.get(2)?,
                        counts: UploadCounts {
                            reordered: row.get(3)?,
                            expired: row.get(4)?,
                            collected: row.get(5)?,
                            failure_reports: row.get(6)?,
                            receipts: row.get(7)?,
                            replies: row.get(8)?,
                            other: row.get(9)?,
                            matched: row.get(10)?,
                            moved: row.get(12)?,
                            deleted: row.get(13)?,
                        },
                        errors: Vec::new(),
                    };
                    Ok((report, row.get::<_, String>(11)?))
                })
                .optional()?;

            let Some((mut report, errors)) = row else {
                return Ok(None);
            };
            report.errors = serde_json::from_str(&errors)
                .map_err(|_| StoreError::InvalidData { column: "upload_reports.errors", value: errors })?;
            Ok(Some(report))
        })
        .await
    }
}
