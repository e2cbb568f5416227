//! The upload cycle: every upload interval and on TriggerUpload, expire overdue messages, reorder the queue,
//! collect replies and reports over IMAP, move processed mail and delete it after the retention period
//! ([`retention`]), refresh the password's state, check the update feed, and store a report.

mod retention;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::{App, UploadTrigger};
use crate::config::Config;
use crate::credentials::AfterRejection;
use crate::mailbox::{self, InboundKind, ReplyKeyword};
use crate::metrics::SignInProtocol;
use crate::store::{Effect, InboundOutcome, InboundRecord, UploadCounts, UploadReport};
use crate::transport::TlsSettings;
use crate::transport::imap::{FetchedMail, ImapClient, ImapErrorKind, ImapSession, ImapSettings};
use crate::update;

/// The mailbox the gateway delivers replies and reports to.
pub(crate) const INBOX: &str = "INBOX";
/// Emails fetched per IMAP round trip.
const FETCH_BATCH: usize = 200;

pub fn imap_settings(config: &Config) -> ImapSettings {
    let nhsmail = &config.nhsmail;
    ImapSettings {
        endpoint: nhsmail.imap.clone(),
        tls: TlsSettings { extra_ca_file: nhsmail.ca_file.clone() },
        timeout: nhsmail.network_timeout,
    }
}

/// Runs cycles on schedule and on request until `shutdown` is cancelled.
pub async fn run(app: Arc<App>, mut triggers: mpsc::Receiver<UploadTrigger>, shutdown: CancellationToken) {
    tracing::info!("upload cycle started");
    loop {
        let minutes = app.upload_interval_minutes().await.unwrap_or(app.config.agent.upload_interval_minutes);
        let interval = Duration::from_secs(u64::from(minutes) * 60);
        app.set_next_upload_at(Some(Utc::now() + chrono::Duration::minutes(i64::from(minutes))));

        let mut waiters = Vec::new();
        let trigger = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = app.schedule_changed.notified() => continue,
            _ = tokio::time::sleep(interval) => "schedule",
            waiter = triggers.recv() => match waiter {
                Some(waiter) => {
                    waiters.push(waiter);
                    "manual"
                }
                None => break,
            },
        };
        app.set_next_upload_at(None);

        let report = run_cycle(&app, trigger).await;

        // Callers who asked while this cycle ran get its report rather than starting another.
        while let Ok(waiter) = triggers.try_recv() {
            waiters.push(waiter);
        }
        for waiter in waiters {
            let _ = waiter.send(report.clone());
        }
    }
    tracing::info!("upload cycle stopped");
}

/// Runs one cycle and stores its report. Errors are recorded in the report, never raised.
pub async fn run_cycle(app: &App, trigger: &str) -> UploadReport {
    let started_at = Utc::now();
    let mut report = UploadReport {
        started_at,
        finished_at: started_at,
        trigger: trigger.to_string(),
        counts: UploadCounts::default(),
        errors: Vec::new(),
    };

    match app.store.expire_due(started_at).await {
        Ok(expired) => report.counts.expired = expired,
        Err(error) => report.errors.push(format!("cannot expire overdue messages: {error}")),
    }
    match app.store.reorder_queue(started_at).await {
        Ok(reordered) => report.counts.reordered = reordered,
        Err(error) => report.errors.push(format!("cannot reorder the queue: {error}")),
    }
    app.credentials.refresh_gate(Utc::now());

    collect(app, &mut report.counts, &mut report.errors).await;
    check_update_feed(app, &mut report.errors).await;

    report.finished_at = Utc::now();
    app.metrics.record_upload((report.finished_at - started_at).to_std().unwrap_or_default());
    if let Err(error) = app.store.insert_upload_report(report.clone()).await {
        report.errors.push(format!("cannot store this report: {error}"));
    }
    tracing::info!(
        trigger,
        expired = report.counts.expired,
        reordered = report.counts.reordered,
        collected = report.counts.collected,
        failure_reports = report.counts.failure_reports,
        receipts = report.counts.receipts,
        replies = report.counts.replies,
        other = report.counts.other,
        matched = report.counts.matched,
        moved = report.counts.moved,
        deleted = report.counts.deleted,
        errors = report.errors.len(),
        "upload cycle finished"
    );
    for error in &report.errors {
        tracing::error!(%error, "upload cycle error");
    }
    report
}

/// Reads `[agent] update_feed`, when set, and keeps the result for GetStatus. A feed that cannot be read or parsed
/// adds an error to the report and a warning to GetStatus, and the rest of the cycle is not affected.
async fn check_update_feed(app: &App, errors: &mut Vec<String>) {
    let Some(feed) = &app.config.agent.update_feed else { return };
    let tls = TlsSettings { extra_ca_file: app.config.nhsmail.ca_file.clone() };
    let outcome = update::check(feed, env!("CARGO_PKG_VERSION"), &tls, app.config.nhsmail.network_timeout).await;
    match &outcome {
        Ok(info) if info.available => {
            tracing::info!(latest_version = %info.latest_version, feed = %feed, "a newer version is available")
        }
        Ok(info) => tracing::debug!(latest_version = %info.latest_version, feed = %feed, "no newer version"),
        Err(error) => errors.push(format!("update feed not checked: {error}")),
    }
    app.set_update_check(outcome.map_err(|error| error.to_string()));
}

/// Signs in, deletes expired emails from the processed folder, reads every email newer than the last one
/// processed, classifies it and records it exactly once, then moves the processed ones out of INBOX. Each step
/// that fails adds an error and the later steps still run where they can.
async fn collect(app: &App, counts: &mut UploadCounts, errors: &mut Vec<String>) {
    let mut session = match connect(app).await {
        Ok(session) => session,
        Err(error) => return errors.push(error),
    };
    if let Err(error) = app.credentials.record_success().await {
        tracing::error!(%error, "cannot record the successful sign-in");
    }

    match session.features().await {
        Ok(features) => {
            if let Err(error) = retention::purge_processed(app, &mut session, features, counts).await {
                errors.push(error);
            }
            match collect_new_mail(app, &mut session, counts).await {
                Ok(uidvalidity) => {
                    if let Err(error) =
                        retention::move_processed(app, &mut session, features, uidvalidity, counts).await
                    {
                        errors.push(error);
                    }
                }
                Err(error) => errors.push(error),
            }
        }
        Err(error) => errors.push(format!("cannot read the IMAP server's capabilities: {error}")),
    }

    if let Err(error) = session.logout().await {
        tracing::debug!(%error, "IMAP logout failed");
    }
}

/// Signs in to IMAP. A rejected access token gets one more attempt with a new one, because it may just have expired.
/// A rejection is recorded with the credentials manager, and the sign-in lock is released before this returns.
pub(crate) async fn connect(app: &App) -> Result<ImapSession, String> {
    let settings = imap_settings(&app.config);
    let mut attempts_left = 2;
    loop {
        attempts_left -= 1;
        let sign_in = app.credentials.sign_in().await.map_err(|error| format!("mail not collected: {error}"))?;
        let error = match ImapClient::connect(&settings, &sign_in.credentials).await {
            Ok(session) => return Ok(session),
            Err(error) => error,
        };
        if error.kind() != ImapErrorKind::Auth {
            app.credentials.note_error(&error.to_string());
            return Err(format!("cannot connect to the IMAP server: {error}"));
        }
        app.metrics.record_sign_in_failure(SignInProtocol::Imap);
        match app.credentials.record_auth_failure(&sign_in.credentials, &error.to_string()).await {
            Ok(AfterRejection::SignInAgain) if attempts_left > 0 => continue,
            Ok(_) => {}
            Err(record_error) => tracing::error!(error = %record_error, "cannot record the rejected sign-in"),
        }
        return Err(format!("IMAP sign-in rejected: {error}"));
    }
}

/// Records the new mail in INBOX and returns INBOX's UIDVALIDITY, leaving INBOX selected.
async fn collect_new_mail(app: &App, session: &mut ImapSession, counts: &mut UploadCounts) -> Result<u32, String> {
    let status = session.select(INBOX).await.map_err(|error| format!("cannot open {INBOX}: {error}"))?;
    let stored = app.store.imap_state(INBOX).await.map_err(|error| format!("cannot read the IMAP state: {error}"))?;
    let mut last_uid = match stored {
        Some(state) if state.uidvalidity == status.uidvalidity => state.last_uid,
        previous => {
            if let Some(previous) = previous {
                tracing::warn!(
                    mailbox = INBOX,
                    old_uidvalidity = previous.uidvalidity,
                    new_uidvalidity = status.uidvalidity,
                    "UIDVALIDITY changed; rereading the mailbox and skipping emails already recorded by Message-ID"
                );
            }
            app.store
                .reset_imap_state(INBOX, status.uidvalidity)
                .await
                .map_err(|error| format!("cannot reset the IMAP state: {error}"))?;
            0
        }
    };

    loop {
        let batch = session
            .fetch_since(last_uid, FETCH_BATCH)
            .await
            .map_err(|error| format!("cannot fetch new mail from {INBOX}: {error}"))?;
        if batch.is_empty() {
            return Ok(status.uidvalidity);
        }
        for mail in batch {
            last_uid = last_uid.max(mail.uid);
            let classified = mailbox::classify(&mail.raw, &app.config.nhsmail.sms_domain);
            let kind = classified.kind;
            let uid = mail.uid;
            let record = inbound_record(status.uidvalidity, mail, classified, &app.config.nhsmail.sms_domain);
            let outcome = app
                .store
                .record_inbound(record, Utc::now())
                .await
                .map_err(|error| format!("cannot record the email with UID {uid}: {error}"))?;
            // An email recorded before, as every one is again after a UIDVALIDITY change, is not new mail.
            if let InboundOutcome::Recorded { matched_message_id, .. } = outcome {
                count_new_mail(counts, kind, matched_message_id.is_some());
            }
        }
    }
}

fn count_new_mail(counts: &mut UploadCounts, kind: InboundKind, matched: bool) {
    counts.collected += 1;
    match kind {
        InboundKind::FailureReport => counts.failure_reports += 1,
        InboundKind::DeliveryReceipt => counts.receipts += 1,
        InboundKind::Reply => counts.replies += 1,
        InboundKind::DelayReport | InboundKind::AutoReply | InboundKind::Other => counts.other += 1,
    }
    if matched {
        counts.matched += 1;
    }
}

fn inbound_record(
    uidvalidity: u32,
    mail: FetchedMail,
    classified: mailbox::Classified,
    sms_domain: &str,
) -> InboundRecord {
    let effect = match classified.kind {
        InboundKind::FailureReport => {
            let detail = classified.report.as_ref();
            let reason =
                [detail.and_then(|report| report.status.clone()), detail.and_then(|report| report.diagnostic.clone())]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
            Effect::Failed {
                reason: format!(
                    "failure report: {}",
                    if reason.is_empty() { "no reason given".into() } else { reason }
                ),
            }
        }
        InboundKind::DeliveryReceipt => Effect::Delivered,
        InboundKind::Reply => {
            let reply = classified.reply.as_ref().expect("a reply carries its details");
            Effect::Reply {
                from_e164: reply.from.e164().to_string(),
                text: reply.text.clone(),
                raw_text: reply.raw_text.clone(),
                opt_out: reply.keyword.map(|keyword| keyword == ReplyKeyword::Stop),
            }
        }
        InboundKind::DelayReport | InboundKind::AutoReply | InboundKind::Other => Effect::None,
    };
    InboundRecord {
        mailbox: INBOX.to_string(),
        uidvalidity,
        uid: mail.uid,
        email_message_id: classified.message_id.clone().unwrap_or_default(),
        kind: classified.kind.as_str().to_string(),
        from: classified.from.clone().unwrap_or_default(),
        subject: classified.subject.clone().unwrap_or_default(),
        received_at: mail.internal_date.or(classified.date).unwrap_or_else(Utc::now),
        raw: mail.raw,
        reason: classified.reason.clone(),
        candidate_ids: classified.original_message_ids.clone(),
        recipient_e164: report_recipient(&classified, sms_domain),
        effect,
    }
}

/// Returns the number a report is about, from its final recipient such as `rfc822; 07700900123@sms.nhs.net`.
fn report_recipient(classified: &mailbox::Classified, sms_domain: &str) -> Option<String> {
    let recipient = classified.report.as_ref()?.final_recipient.as_deref()?;
    crate::sms::number_from_gateway_address(recipient, sms_domain).map(|number| number.e164().to_string())
}
