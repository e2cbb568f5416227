//! Retention of processed mail: matched receipts and reports leave INBOX for the processed folder once recorded,
//! and the processed folder is emptied of emails older than the retention period.

use chrono::{Duration, Utc};

use crate::app::App;
use crate::mailbox::InboundKind;
use crate::store::UploadCounts;
use crate::transport::imap::{ImapSession, ServerFeatures};

use super::INBOX;

/// The kinds of email moved once matched to a sent text. Replies and everything else stay in INBOX until a
/// person has read them.
const MOVED_KINDS: [InboundKind; 3] =
    [InboundKind::DeliveryReceipt, InboundKind::FailureReport, InboundKind::DelayReport];

/// UIDs per MOVE or EXPUNGE command, so one command stays short.
const UID_BATCH: usize = 500;

/// Creates the processed folder if missing and deletes from it every email older than the retention period.
/// Leaves the processed folder selected, so the caller selects INBOX afterwards.
pub(super) async fn purge_processed(
    app: &App,
    session: &mut ImapSession,
    features: ServerFeatures,
    counts: &mut UploadCounts,
) -> Result<(), String> {
    let folder = &app.config.mailbox.processed_folder;
    session.ensure_folder(folder).await.map_err(|error| format!("cannot create the folder {folder:?}: {error}"))?;
    session.select(folder).await.map_err(|error| format!("cannot open {folder:?}: {error}"))?;

    let days = i64::from(app.config.mailbox.retention_days);
    let cutoff = (Utc::now() - Duration::days(days)).date_naive();
    let old = session
        .search_before(cutoff)
        .await
        .map_err(|error| format!("cannot search {folder:?} for emails older than {days} days: {error}"))?;
    for batch in old.chunks(UID_BATCH) {
        session
            .delete_uids(batch, features)
            .await
            .map_err(|error| format!("cannot delete old emails from {folder:?}: {error}"))?;
        counts.deleted += batch.len() as u64;
    }
    Ok(())
}

/// Moves every recorded, matched receipt and report still in INBOX to the processed folder. INBOX must be
/// selected under `uidvalidity`.
///
/// The store lists what to move, so an email whose move failed, or was cut short by a crash, is moved at the next
/// cycle. It is marked moved only after the server confirmed the move.
pub(super) async fn move_processed(
    app: &App,
    session: &mut ImapSession,
    features: ServerFeatures,
    uidvalidity: u32,
    counts: &mut UploadCounts,
) -> Result<(), String> {
    let folder = &app.config.mailbox.processed_folder;
    let kinds = MOVED_KINDS.map(InboundKind::as_str);
    let due = app
        .store
        .mail_to_move(INBOX, uidvalidity, &kinds)
        .await
        .map_err(|error| format!("cannot list the emails to move: {error}"))?;

    for batch in due.chunks(UID_BATCH) {
        let uids: Vec<u32> = batch.iter().map(|mail| mail.uid).collect();
        session
            .move_uids(&uids, folder, features)
            .await
            .map_err(|error| format!("cannot move {} emails to {folder:?}: {error}", uids.len()))?;
        let ids = batch.iter().map(|mail| mail.id).collect();
        app.store
            .mark_moved(ids, Utc::now())
            .await
            .map_err(|error| format!("cannot record {} emails as moved: {error}", uids.len()))?;
        counts.moved += batch.len() as u64;
    }
    Ok(())
}
