//! Classification of one inbound email from the practice mailbox: failure report, delay report,
//! delivery receipt, patient reply, auto-reply or other, with the Message-IDs that may name the
//! sent message it is about.
//!
//! Pure over bytes so it can be fuzzed: [`classify`] takes any bytes and returns a
//! [`Classified`]; what it cannot parse becomes [`InboundKind::Other`] with a reason, never an
//! error or a panic.
//!
//! # Reports are recognised by structure, never by sender
//!
//! Report senders vary (`MAILER-DAEMON`, `postmaster`, Exchange's `MicrosoftExchange…` address,
//! the SMS gateway), and a From header is as easy to forge as anything else, so the sender is
//! not used. An email is a report only when its MIME structure shows it, in one of two ways:
//! - It has a `message/delivery-status` (RFC 3464) or `message/global-delivery-status`
//!   (RFC 6533) part at any depth. The `multipart/report` container need not name a
//!   `report-type`. When the email has no such part of its own, one inside an attached message
//!   counts.
//! - It is a multipart email without such a part whose top-level type is `multipart/report`
//!   (other than a read receipt) or that carries Exchange's `X-MS-Exchange-Message-Is-Ndr`
//!   header. Its own human-readable part must then give the status code in one of Exchange's
//!   diagnostic forms.
//!
//! # What counts as the mailbox's own server path
//!
//! A report must also show that a mail server wrote it. For a status part, that is the
//! per-message `Reporting-MTA` field, which RFC 3464 §2.2.2 requires of every report and which
//! the reporting server fills in with its own name. A status part without it is kept for review.
//! For a report without a status part, it is the report structure above, which Exchange builds
//! and a person writing or forwarding an email does not. A Received chain is not required,
//! because reports made by the mailbox's own server and the gateway's receipts can arrive
//! without one.
//!
//! Text is never enough: an email that is not structurally a report but whose text carries report
//! fields (`Action: failed`, `Status: 5.1.1`, `Original-Message-ID: <…>`) or an Exchange
//! diagnostic is [`InboundKind::Other`] with a reason saying it looks like a forged or pasted
//! report, even when it carries auto-reply headers. It names no candidates from that text.
//!
//! These rules tell mail written by a server from mail written by a person. They do not
//! authenticate the sender, because anyone can send a well-formed report. What protects the
//! messages is the match: a report changes a message only when a candidate is the Message-ID
//! of a message the agent sent. That is a UUID v7 with a random part that only the servers on
//! the path and the recipient see, so a sender elsewhere cannot guess it. NOTE: SPF, DKIM and
//! DMARC verdicts in `Authentication-Results` are not read.
//!
//! # Match candidates
//!
//! In order, without repeats: `Original-Message-ID` and `X-Original-Message-ID` in the report's
//! fields and headers; the Message-ID in the headers of an attached `message/rfc822`,
//! `message/global`, `text/rfc822-headers` or `message/global-headers` part; In-Reply-To;
//! References from last to first; then a `Message-ID:` or `Original Message-ID:` line in the
//! report's human-readable text (Exchange's "Original message headers", the gateway's summary).
//! Matching by number and time is left to the store.

mod fields;
mod headers;
mod html;
mod reply;
mod report;
mod report_text;
#[cfg(test)]
mod tests;
mod types;

use std::collections::HashSet;

use mail_parser::{Message, MessageParser, MessagePart};

use crate::sms::{MobileNumber, number_from_gateway_address};

pub use types::{Classified, DeliveryReport, InboundKind, PatientReply, ReplyKeyword, ReportAction, ReportSource};

use headers::{date, from_address, has_header, has_standard_header, header_message_ids, header_text};
use reply::TextSource;
use report::Notification;
use report_text::{TextDiagnostic, readable_texts};

/// Classifies one raw email (RFC 5322 bytes, as fetched over IMAP) for a gateway whose
/// addresses are `<number>@<sms_domain>`.
///
/// The first rule that matches decides the kind (the module documentation gives the reasons):
/// 1. A status part (see [`ReportSource`]) makes the email a report. Its strongest recipient
///    `Action` gives [`InboundKind::FailureReport`], [`InboundKind::DelayReport`] or
///    [`InboundKind::DeliveryReceipt`]. A status part without a known action or without
///    `Reporting-MTA` is `Other`.
/// 2. A multipart report without a status part whose text gives an Exchange diagnostic with a
///    failure or delay status is a failure report, or a delay report when its text states that
///    delivery is delayed. Without such a diagnostic it is `Other`.
/// 3. A From address at `sms_domain` whose local part is a UK mobile number is a
///    [`InboundKind::Reply`].
/// 4. Report fields or an Exchange diagnostic in the text of any other email make it `Other`,
///    as a forged or pasted report.
/// 5. `Auto-Submitted` other than `no`, `Precedence: auto_reply`, `bulk` or `junk`, or an
///    `X-Autoreply` or `X-Autorespond` header is an [`InboundKind::AutoReply`]
///    (`X-Auto-Response-Suppress` is not, because Exchange adds it to ordinary mail).
/// 6. Everything else, including bytes that are not an email, is [`InboundKind::Other`].
pub fn classify(raw: &[u8], sms_domain: &str) -> Classified {
    // mail-parser 0.11 has `debug_assert!` checks that malformed nesting can trip, such as a
    // `message/rfc822` part containing only another `message/rfc822` header (the corpus file
    // `garbage-nested-rfc822.eml`). Release builds skip them and parse on, but without this a
    // debug build of the agent would lose its upload cycle to one email.
    let Ok(parsed) = std::panic::catch_unwind(|| MessageParser::default().parse(raw)) else {
        return Classified::unparsable("not parsable: the MIME parser failed on it");
    };
    let Some(message) = parsed else {
        return Classified::unparsable("not an email: no header fields found");
    };
    let Some(root) = message.parts.first().filter(|root| has_standard_header(root)) else {
        return Classified::unparsable("not an email: no standard header fields found");
    };

    let mut classified = Classified {
        message_id: header_message_ids(root, "Message-ID").into_iter().next(),
        from: from_address(root),
        subject: header_text(root, "Subject").map(|subject| subject.trim().to_string()),
        date: date(root),
        ..Classified::unparsable("")
    };

    let mut candidates = Vec::new();
    if let Some(notification) = report::find_notification(&message) {
        classify_notification(&mut classified, &notification);
        candidates.extend(report_candidates(&message, notification.message, &notification.blocks));
    } else if let Some(report_message) = report::find_text_report(&message) {
        classify_text_report(&mut classified, report_message);
        candidates.extend(report_candidates(&message, report_message, &[]));
    } else {
        classify_other(&mut classified, &message, root, sms_domain);
        candidates.extend(thread_message_ids(root));
    }

    classified.original_message_ids = without_repeats(candidates);
    classified
}

/// Sets the kind, report and reason from a delivery status notification.
fn classify_notification(classified: &mut Classified, notification: &Notification<'_, '_>) {
    let part_type = notification.source.as_str();
    let Some(report) = report::delivery_report(&notification.blocks, notification.source) else {
        classified.reason = format!("{part_type} part has no recipient with a known Action");
        return;
    };
    if !report::has_reporting_mta(&notification.blocks) {
        classified.reason = format!("{part_type} part has no Reporting-MTA, so no mail server is named as its author");
        return;
    }

    let recipient = report.final_recipient.as_deref().unwrap_or("an unnamed recipient");
    classified.reason = format!("{part_type} part has Action: {} for {recipient}", report.action.as_str());
    set_report(classified, report);
}

/// Sets the kind, report and reason from a report without a status part, from its text.
fn classify_text_report(classified: &mut Classified, report_message: &Message<'_>) {
    let subject = report_message.parts.first().and_then(|root| header_text(root, "Subject"));
    let diagnostic = report_text::exchange_diagnostic(&readable_texts(report_message), subject);

    let Some(TextDiagnostic { status, diagnostic, final_recipient, delayed }) = diagnostic else {
        classified.reason = "report without a status part, and its text gives no status code".to_string();
        return;
    };
    if status.starts_with("2.") {
        classified.reason = format!("report without a status part, and its text gives success status {status}");
        return;
    }

    let action = if delayed { ReportAction::Delayed } else { ReportAction::Failed };
    classified.reason =
        format!("report without a status part; its text gives {} with status {status}", action.as_str());
    set_report(
        classified,
        DeliveryReport {
            action,
            source: ReportSource::ReportText,
            status: Some(status),
            diagnostic: Some(diagnostic),
            final_recipient,
        },
    );
}

fn set_report(classified: &mut Classified, report: DeliveryReport) {
    classified.kind = match report.action {
        ReportAction::Failed => InboundKind::FailureReport,
        ReportAction::Delayed => InboundKind::DelayReport,
        ReportAction::Delivered | ReportAction::Relayed | ReportAction::Expanded => InboundKind::DeliveryReceipt,
    };
    classified.report = Some(report);
}

/// Returns the match candidates of a report in the order the module documentation gives.
/// `report_message` is the email itself or the attached message that contains the report.
fn report_candidates(email: &Message<'_>, report_message: &Message<'_>, blocks: &[fields::Block]) -> Vec<String> {
    let mut candidates = report::original_message_ids(report_message, blocks);
    if let Some(report_root) = report_message.parts.first() {
        candidates.extend(thread_message_ids(report_root));
    }
    if let Some(root) = email.parts.first() {
        candidates.extend(thread_message_ids(root));
    }
    candidates.extend(report_text::text_message_ids(&readable_texts(report_message)));
    candidates
}

/// Sets the kind, reply and reason of an email that is not a report.
fn classify_other(classified: &mut Classified, message: &Message<'_>, root: &MessagePart<'_>, sms_domain: &str) {
    if let Some((number, address)) = reply_number(root, sms_domain) {
        let (raw_text, source) = reply::reply_text(message, classified.subject.as_deref());
        let text = reply::strip_quotes_and_signature(&raw_text);
        let keyword = reply::reply_keyword(&text);

        classified.kind = InboundKind::Reply;
        classified.reason = match source {
            TextSource::Body => format!("from {address}, the SMS gateway address of {number}"),
            TextSource::Subject => {
                format!(
                    "from {address}, the SMS gateway address of {number}; the body is blank, so the Subject is read"
                )
            }
        };
        classified.reply = Some(PatientReply { from: number, text, raw_text, keyword });
    } else if let Some(found) = report_text::pasted_report(&readable_texts(message)) {
        classified.reason = format!("not a report, but its text has {found}: looks like a forged or pasted report");
    } else if let Some(marker) = auto_reply_marker(root) {
        classified.kind = InboundKind::AutoReply;
        classified.reason = format!("{marker} marks it as automatic");
    } else {
        classified.reason = other_reason(classified.from.as_deref(), sms_domain);
    }
}

/// Returns the patient's number and the From address if the email comes from a gateway
/// address.
fn reply_number(root: &MessagePart<'_>, sms_domain: &str) -> Option<(MobileNumber, String)> {
    let address = from_address(root)?;
    let number = number_from_gateway_address(&address, sms_domain)?;
    Some((number, address))
}

/// Returns the header that marks the email as automatic (RFC 3834 and common practice), as
/// `Name: value` for the reason.
fn auto_reply_marker(root: &MessagePart<'_>) -> Option<String> {
    if let Some(value) = header_text(root, "Auto-Submitted") {
        let keyword = value.split([';', ' ', '\t']).next().unwrap_or("").trim();
        if !keyword.is_empty() && !keyword.eq_ignore_ascii_case("no") {
            return Some(format!("Auto-Submitted: {keyword}"));
        }
    }
    if let Some(value) = header_text(root, "Precedence") {
        let value = value.trim();
        if ["auto_reply", "bulk", "junk"].iter().any(|automatic| value.eq_ignore_ascii_case(automatic)) {
            return Some(format!("Precedence: {value}"));
        }
    }
    ["X-Autoreply", "X-Autorespond"]
        .into_iter()
        .find(|name| has_header(root, name))
        .map(|name| format!("{name} header"))
}

fn other_reason(from: Option<&str>, sms_domain: &str) -> String {
    let in_gateway_domain = from
        .and_then(|address| address.rsplit_once('@'))
        .is_some_and(|(_, host)| host.eq_ignore_ascii_case(sms_domain.trim()));
    match from {
        Some(address) if in_gateway_domain => {
            format!("from {address}, which is in the SMS gateway domain but not a mobile number")
        }
        _ => format!("no delivery status, not from a mobile number at {sms_domain}, and no auto-reply header"),
    }
}

/// Returns In-Reply-To, then References from last to first: the message replied to comes last
/// in References.
fn thread_message_ids(root: &MessagePart<'_>) -> Vec<String> {
    let mut ids = header_message_ids(root, "In-Reply-To");
    let mut references = header_message_ids(root, "References");
    references.reverse();
    ids.extend(references);
    ids
}

fn without_repeats(ids: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.into_iter().filter(|id| seen.insert(id.clone())).collect()
}
