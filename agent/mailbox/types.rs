//! The result of classifying an inbound email: its kind, the report or reply it carries, and
//! why it got that kind.

use chrono::{DateTime, Utc};

use crate::sms::MobileNumber;

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

/// The part of a report that its status was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportSource {
    /// A `message/delivery-status` part (RFC 3464).
    DeliveryStatus,
    /// A `message/global-delivery-status` part (RFC 6533).
    GlobalDeliveryStatus,
    /// The human-readable text of a report without a status part, as Exchange writes it.
    ReportText,
}

impl ReportSource {
    /// Returns the content type, or `report text`, for reasons and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportSource::DeliveryStatus => "message/delivery-status",
            ReportSource::GlobalDeliveryStatus => "message/global-delivery-status",
            ReportSource::ReportText => "report text",
        }
    }
}

/// The fields of the recipient a delivery status notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub action: ReportAction,
    pub source: ReportSource,
    /// Enhanced status code such as `5.1.1`, when present and well formed.
    pub status: Option<String>,
    /// `Diagnostic-Code` without its type, such as `550 5.1.1 User unknown`.
    pub diagnostic: Option<String>,
    /// `Final-Recipient` (or else `Original-Recipient`) without its type, such as
    /// `07700900123@sms.nhs.net`.
    pub final_recipient: Option<String>,
}

/// A keyword that changes how the practice may text a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyKeyword {
    /// A request from the patient for no more texts.
    Stop,
    /// A request from the patient for texts again after a `Stop`.
    Start,
}

impl ReplyKeyword {
    /// Returns the keyword in capitals: `STOP` or `START`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyKeyword::Stop => "STOP",
            ReplyKeyword::Start => "START",
        }
    }
}

/// A text from a patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientReply {
    pub from: MobileNumber,
    /// The patient's words: `raw_text` without quoted history or signature, trimmed.
    pub text: String,
    /// The reply as received: the decoded text body with line endings as `\n` (converted from
    /// HTML when there is no plain text), or the decoded Subject when the body is blank.
    pub raw_text: String,
    /// `Some` when `text` is only `STOP` or `START`, in any case, with spaces and punctuation
    /// around it.
    pub keyword: Option<ReplyKeyword>,
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
    pub(super) fn unparsable(reason: &str) -> Classified {
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
