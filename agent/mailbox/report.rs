//! Delivery status notifications. This module finds the `message/delivery-status` part of an
//! RFC 3464 report (or `message/global-delivery-status`, RFC 6533), or a report that has no
//! such part. It reads the per-recipient fields and collects the Message-IDs that the report
//! carries for the message it is about.

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use super::fields::{Block, field, message_ids, parse_blocks, strip_value_type};
use super::headers::{has_header, header_message_ids, header_text, is_content_type, part_text};
use super::{DeliveryReport, ReportAction, ReportSource};

/// Maximum depth of attached messages searched for a delivery-status part. mail-parser itself
/// parses at most three levels of attached messages.
const MAX_ATTACHED_DEPTH: usize = 3;

/// Field names under which reports carry the Message-ID of the message they are about.
const ORIGINAL_MESSAGE_ID_FIELDS: [&str; 2] = ["Original-Message-ID", "X-Original-Message-ID"];

/// The delivery-status parts of an email and the message that contains them.
pub(super) struct Notification<'a, 'x> {
    /// The email itself, or a message attached to it when the report was forwarded or wrapped.
    pub message: &'a Message<'x>,
    /// Content type of the first delivery-status part.
    pub source: ReportSource,
    /// Field blocks of every delivery-status part, in order.
    pub blocks: Vec<Block>,
}

/// Finds the delivery-status parts at any MIME depth of the email. Only when it has none are
/// attached messages searched, because those are usually the returned original.
pub(super) fn find_notification<'a, 'x>(message: &'a Message<'x>) -> Option<Notification<'a, 'x>> {
    find_at_depth(message, 0)
}

fn find_at_depth<'a, 'x>(message: &'a Message<'x>, depth: usize) -> Option<Notification<'a, 'x>> {
    let mut source = None;
    let mut blocks = Vec::new();
    for part in &message.parts {
        if let Some(part_source) = status_part_source(part) {
            source.get_or_insert(part_source);
            blocks.extend(parse_blocks(&part_text(message, part)));
        }
    }
    if let Some(source) = source {
        return Some(Notification { message, source, blocks });
    }

    if depth >= MAX_ATTACHED_DEPTH {
        return None;
    }
    message.parts.iter().find_map(|part| match &part.body {
        PartType::Message(attached) => find_at_depth(attached, depth + 1),
        _ => None,
    })
}

fn status_part_source(part: &MessagePart<'_>) -> Option<ReportSource> {
    if is_content_type(part, "message", "delivery-status") {
        Some(ReportSource::DeliveryStatus)
    } else if is_content_type(part, "message", "global-delivery-status") {
        Some(ReportSource::GlobalDeliveryStatus)
    } else {
        None
    }
}

/// Finds a report without a status part: the email, or else an attached message, that is
/// multipart and whose top-level type is `multipart/report` (other than a read receipt,
/// `report-type=disposition-notification`) or that carries `X-MS-Exchange-Message-Is-Ndr`.
/// Call it only when [`find_notification`] finds nothing.
pub(super) fn find_text_report<'a, 'x>(message: &'a Message<'x>) -> Option<&'a Message<'x>> {
    find_text_report_at_depth(message, 0)
}

fn find_text_report_at_depth<'a, 'x>(message: &'a Message<'x>, depth: usize) -> Option<&'a Message<'x>> {
    if has_report_shape(message) {
        return Some(message);
    }
    if depth >= MAX_ATTACHED_DEPTH {
        return None;
    }
    message.parts.iter().find_map(|part| match &part.body {
        PartType::Message(attached) => find_text_report_at_depth(attached, depth + 1),
        _ => None,
    })
}

fn has_report_shape(message: &Message<'_>) -> bool {
    let Some(root) = message.parts.first() else {
        return false;
    };
    if !matches!(root.body, PartType::Multipart(_)) {
        return false;
    }
    let is_report_container = is_content_type(root, "multipart", "report")
        && !root
            .content_type()
            .and_then(|content_type| content_type.attribute("report-type"))
            .is_some_and(|report_type| report_type.trim().eq_ignore_ascii_case("disposition-notification"));
    is_report_container || has_header(root, "X-MS-Exchange-Message-Is-Ndr")
}

/// Returns whether a block has the `Reporting-MTA` field that RFC 3464 §2.2.2 requires.
pub(super) fn has_reporting_mta(blocks: &[Block]) -> bool {
    blocks.iter().any(|block| field(block, "Reporting-MTA").is_some_and(|value| !strip_value_type(value).is_empty()))
}

/// Reads the per-recipient block that decides the report, or `None` if no block has an
/// `Action` that RFC 3464 §2.3.3 defines.
///
/// The agent sends one recipient per email, but a report may list several. The strongest action
/// wins (failed, then delayed, delivered, relayed, expanded), and among equals the first block.
pub(super) fn delivery_report(blocks: &[Block], source: ReportSource) -> Option<DeliveryReport> {
    let (action, block) = blocks
        .iter()
        .filter_map(|block| Some((parse_action(field(block, "Action")?)?, block)))
        .min_by_key(|(action, _)| strength_rank(*action))?;

    let final_recipient =
        field(block, "Final-Recipient").or_else(|| field(block, "Original-Recipient")).map(strip_value_type);
    Some(DeliveryReport {
        action,
        source,
        status: field(block, "Status").and_then(status_code),
        diagnostic: non_empty(field(block, "Diagnostic-Code").map(strip_value_type)),
        final_recipient: non_empty(final_recipient),
    })
}

pub(super) fn parse_action(value: &str) -> Option<ReportAction> {
    let word = value.split_whitespace().next()?.to_ascii_lowercase();
    match word.as_str() {
        "failed" => Some(ReportAction::Failed),
        "delayed" => Some(ReportAction::Delayed),
        "delivered" => Some(ReportAction::Delivered),
        "relayed" => Some(ReportAction::Relayed),
        "expanded" => Some(ReportAction::Expanded),
        _ => None,
    }
}

fn strength_rank(action: ReportAction) -> u8 {
    match action {
        ReportAction::Failed => 0,
        ReportAction::Delayed => 1,
        ReportAction::Delivered => 2,
        ReportAction::Relayed => 3,
        ReportAction::Expanded => 4,
    }
}

/// Returns the status code at the start of a `Status` value if it has the RFC 3464 §2.3.4
/// shape: class 2, 4 or 5, then subject and detail of 1 to 3 digits (`5.1.1`, `5.1.10`).
pub(super) fn status_code(value: &str) -> Option<String> {
    let code = value.split_whitespace().next()?;
    let mut pieces = code.split('.');
    let class = pieces.next()?;
    let subject = pieces.next()?;
    let detail = pieces.next()?;
    let is_number = |piece: &str| (1..=3).contains(&piece.len()) && piece.bytes().all(|byte| byte.is_ascii_digit());
    let valid = matches!(class, "2" | "4" | "5") && is_number(subject) && is_number(detail) && pieces.next().is_none();
    valid.then(|| code.to_string())
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value.filter(|text| !text.is_empty()).map(str::to_string)
}

/// Collects the Message-IDs that the report itself names for the original message: fields
/// such as `Original-Message-ID` in the delivery-status `blocks` or the report's headers first,
/// then the Message-ID of each attached original (`message/rfc822`, `message/global`,
/// `text/rfc822-headers` or `message/global-headers`).
pub(super) fn original_message_ids(message: &Message<'_>, blocks: &[Block]) -> Vec<String> {
    let mut ids = Vec::new();
    for block in blocks {
        for name in ORIGINAL_MESSAGE_ID_FIELDS {
            if let Some(value) = field(block, name) {
                ids.extend(message_ids(value));
            }
        }
    }

    if let Some(root) = message.parts.first() {
        for name in ORIGINAL_MESSAGE_ID_FIELDS {
            if let Some(value) = header_text(root, name) {
                ids.extend(message_ids(value));
            }
        }
    }

    for part in message.parts.iter().skip(1) {
        ids.extend(attached_original_ids(message, part));
    }
    ids
}

fn attached_original_ids(message: &Message<'_>, part: &MessagePart<'_>) -> Vec<String> {
    if let PartType::Message(attached) = &part.body {
        return attached.parts.first().map(|root| header_message_ids(root, "Message-ID")).unwrap_or_default();
    }

    let is_header_copy = is_content_type(part, "text", "rfc822-headers")
        || is_content_type(part, "message", "global-headers")
        || is_content_type(part, "message", "rfc822")
        || is_content_type(part, "message", "global");
    if !is_header_copy {
        return Vec::new();
    }
    let text = part_text(message, part);
    parse_blocks(&text).first().and_then(|headers| field(headers, "Message-ID")).map(message_ids).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(text: &str) -> Vec<Block> {
        parse_blocks(text)
    }

    fn delivery_report(blocks: &[Block]) -> Option<DeliveryReport> {
        super::delivery_report(blocks, ReportSource::DeliveryStatus)
    }

    #[test]
    fn failed_recipient_fields_are_read() {
        let report = delivery_report(&blocks(
            "Reporting-MTA: dns; mail.example.org\n\n\
             Final-Recipient: rfc822; 07700900404@sms.nhs.net\n\
             Action: failed\n\
             Status: 5.1.1\n\
             Diagnostic-Code: smtp; 550 5.1.1 User unknown\n",
        ));
        let expected = DeliveryReport {
            action: ReportAction::Failed,
            source: ReportSource::DeliveryStatus,
            status: Some("5.1.1".to_string()),
            diagnostic: Some("550 5.1.1 User unknown".to_string()),
            final_recipient: Some("07700900404@sms.nhs.net".to_string()),
        };
        assert_eq!(report, Some(expected));
    }

    #[test]
    fn failure_outranks_other_recipients() {
        let report = delivery_report(&blocks(
            "Final-Recipient: rfc822; a@example.org\nAction: delivered\nStatus: 2.0.0\n\n\
             Final-Recipient: rfc822; b@example.org\nAction: delayed\nStatus: 4.4.1\n\n\
             Final-Recipient: rfc822; c@example.org\nAction: failed\nStatus: 5.2.2\n",
        ))
        .unwrap();
        assert_eq!(report.action, ReportAction::Failed);
        assert_eq!(report.final_recipient.as_deref(), Some("c@example.org"));
    }

    #[test]
    fn each_action_is_recognised() {
        let cases = [
            ("failed", ReportAction::Failed),
            ("Delayed", ReportAction::Delayed),
            ("DELIVERED", ReportAction::Delivered),
            ("relayed", ReportAction::Relayed),
            ("expanded (to 2 recipients)", ReportAction::Expanded),
        ];
        for (value, expected) in cases {
            let report = delivery_report(&blocks(&format!("Action: {value}\n")));
            assert_eq!(report.map(|report| report.action), Some(expected), "action {value:?}");
        }
    }

    #[test]
    fn unknown_action_gives_no_report() {
        assert_eq!(delivery_report(&blocks("Action: bounced\nStatus: 5.0.0\n")), None);
        assert_eq!(delivery_report(&blocks("Status: 5.0.0\n")), None);
    }

    #[test]
    fn missing_final_recipient_uses_original() {
        let report = delivery_report(&blocks("Original-Recipient: rfc822;07700900123@sms.nhs.net\nAction: failed\n"));
        assert_eq!(report.and_then(|report| report.final_recipient), Some("07700900123@sms.nhs.net".to_string()));
    }

    #[test]
    fn reporting_mta_must_name_a_server() {
        assert!(has_reporting_mta(&blocks("Reporting-MTA: dns; mail.example.org\n\nAction: failed\n")));
        assert!(!has_reporting_mta(&blocks("Action: failed\nStatus: 5.1.1\n")));
        assert!(!has_reporting_mta(&blocks("Reporting-MTA: dns;\nAction: failed\n")));
    }

    #[test]
    fn status_codes_are_checked() {
        let cases = [
            ("5.1.1", Some("5.1.1")),
            ("5.1.10 (recipient not found)", Some("5.1.10")),
            ("4.4.1", Some("4.4.1")),
            ("2.0.0", Some("2.0.0")),
            ("3.1.1", None),
            ("5.1", None),
            ("5.1.1.1", None),
            ("5.1234.1", None),
            ("5.x.1", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(status_code(value).as_deref(), expected, "status {value:?}");
        }
    }
}
