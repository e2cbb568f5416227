//! Classification of one inbound email from the practice mailbox: failure report, delay report,
//! delivery receipt, patient reply, auto-reply or other, with the Message-IDs that may name the
//! sent message it is about.
//!
//! Pure over bytes so it can be fuzzed: [`classify`] takes any bytes and returns a
//! [`Classified`]; what it cannot parse becomes [`InboundKind::Other`] with a reason, never an
//! error. The steps are: detect a delivery report, extract its fields, otherwise recognise a
//! reply or an auto-reply, then collect the match candidates.

mod fields;
mod headers;
mod reply;
mod report;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use mail_parser::{MessageParser, MessagePart};

use crate::sms::{MobileNumber, number_from_gateway_address};

use headers::{date, from_address, has_header, has_standard_header, header_message_ids, header_text};
use report::Notification;

/// Kind of an inbound email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InboundKind {
    /// A delivery status notification saying the message could not be delivered.
    FailureReport,
    /// A delivery status notification saying the message was delivered, relayed or expanded.
    DeliveryReceipt,
    /// A delivery status notification saying delivery is delayed and still being retried.
    DelayReport,
    /// A text from a patient, arriving from the SMS gateway address of their number.
    Reply,
    /// An automatic message such as an out-of-office notice.
    AutoReply,
    /// Anything else, kept for a person to review.
    Other,
}

impl InboundKind {
    /// Returns the snake_case name used in storage and logs, such as `failure_report`.
    pub fn as_str(self) -> &'static str {
        match self {
            InboundKind::FailureReport => "failure_report",
            InboundKind::DeliveryReceipt => "delivery_receipt",
            InboundKind::DelayReport => "delay_report",
            InboundKind::Reply => "reply",
            InboundKind::AutoReply => "auto_reply",
            InboundKind::Other => "other",
        }
    }
}

/// The `Action` of a delivery status notification's recipient (RFC 3464 §2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportAction {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl ReportAction {
    /// Returns the value as RFC 3464 writes it, such as `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportAction::Failed => "failed",
            ReportAction::Delayed => "delayed",
            ReportAction::Delivered => "delivered",
            ReportAction::Relayed => "relayed",
            ReportAction::Expanded => "expanded",
        }
    }
}

/// The fields of the recipient a delivery status notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub action: ReportAction,
    /// Enhanced status code such as `5.1.1`, when present and well formed.
    pub status: Option<String>,
    /// `Diagnostic-Code` without its type, such as `550 5.1.1 User unknown`.
    pub diagnostic: Option<String>,
    /// `Final-Recipient` (or else `Original-Recipient`) without its type, such as
    /// `07700900123@sms.nhs.net`.
    pub final_recipient: Option<String>,
}

/// A text from a patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientReply {
    pub from: MobileNumber,
    /// The patient's words: the body without quoted history or signature, trimmed.
    pub text: String,
    /// The decoded text body with line endings as `\n`, converted from HTML if there is no
    /// plain text part.
    pub raw_text: String,
}

/// The result of classifying one email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub kind: InboundKind,
    /// This email's own Message-ID, without angle brackets.
    pub message_id: Option<String>,
    /// The first From address (or its display name if it has no address).
    pub from: Option<String>,
    pub subject: Option<String>,
    pub date: Option<DateTime<Utc>>,
    /// Message-IDs that may name the sent message this email is about, strongest first, without
    /// angle brackets and without repeats.
    pub original_message_ids: Vec<String>,
    pub report: Option<DeliveryReport>,
    pub reply: Option<PatientReply>,
    /// One short sentence on why the email got its kind, for review and logs.
    pub reason: String,
}

impl Classified {
    fn unparsable(reason: &str) -> Classified {
        Classified {
            kind: InboundKind::Other,
            message_id: None,
            from: None,
            subject: None,
            date: None,
            original_message_ids: Vec::new(),
            report: None,
            reply: None,
            reason: reason.to_string(),
        }
    }
}

/// Classifies one raw email (RFC 5322 bytes, as fetched over IMAP) for a gateway whose
/// addresses are `<number>@<sms_domain>`.
///
/// The first rule that matches decides the kind:
/// 1. A `message/delivery-status` or `message/global-delivery-status` part at any MIME depth
///    (or, failing that, inside an attached message) makes the email a report. Its strongest
///    recipient `Action` gives [`InboundKind::FailureReport`], [`InboundKind::DelayReport`] or
///    [`InboundKind::DeliveryReceipt`]. A report without a known action is `Other`.
/// 2. A From address at `sms_domain` whose local part is a UK mobile number is a
///    [`InboundKind::Reply`].
/// 3. `Auto-Submitted` other than `no`, `Precedence: auto_reply`, `bulk` or `junk`, or an
///    `X-Autoreply` or `X-Autorespond` header is an [`InboundKind::AutoReply`]
///    (`X-Auto-Response-Suppress` is not, because Exchange adds it to ordinary mail).
/// 4. Everything else, including bytes that are not an email, is [`InboundKind::Other`].
///
/// Match candidates are, in order: Message-IDs in the report's own fields, the Message-ID of
/// an attached original, then In-Reply-To, then References from last to first.
pub fn classify(raw: &[u8], sms_domain: &str) -> Classified {
    let Some(message) = MessageParser::default().parse(raw) else {
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
        classify_report(&mut classified, &notification);
        candidates.extend(report::report_message_ids(&notification));
        if let Some(report_root) = notification.message.parts.first() {
            candidates.extend(thread_message_ids(report_root));
        }
    } else if let Some((number, address)) = reply_number(root, sms_domain) {
        let raw_text = reply::body_text(&message);
        classified.kind = InboundKind::Reply;
        classified.reason = format!("from {address}, the SMS gateway address of {number}");
        classified.reply =
            Some(PatientReply { from: number, text: reply::strip_quotes_and_signature(&raw_text), raw_text });
    } else if let Some(marker) = auto_reply_marker(root) {
        classified.kind = InboundKind::AutoReply;
        classified.reason = format!("{marker} marks it as automatic");
    } else {
        classified.reason = other_reason(classified.from.as_deref(), sms_domain);
    }

    candidates.extend(thread_message_ids(root));
    classified.original_message_ids = without_repeats(candidates);
    classified
}

/// Sets the kind, report and reason from a delivery status notification.
fn classify_report(classified: &mut Classified, notification: &Notification<'_, '_>) {
    let Some(report) = report::delivery_report(&notification.blocks) else {
        classified.reason = format!("{} part has no recipient with a known Action", notification.part_type);
        return;
    };

    classified.kind = match report.action {
        ReportAction::Failed => InboundKind::FailureReport,
        ReportAction::Delayed => InboundKind::DelayReport,
        ReportAction::Delivered | ReportAction::Relayed | ReportAction::Expanded => InboundKind::DeliveryReceipt,
    };
    let recipient = report.final_recipient.as_deref().unwrap_or("an unnamed recipient");
    classified.reason =
        format!("{} part has Action: {} for {recipient}", notification.part_type, report.action.as_str());
    classified.report = Some(report);
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
