//! The emails the SMS gateway puts in the inbox: delivery receipts, delay and failure
//! reports (all RFC 3464 `multipart/report` DSNs) and patient replies. NHSmail's own
//! receipt wording is not public; this format is the sandbox's design, described in its
//! README.

use chrono::{DateTime, Utc};
use rand::Rng;

/// A text the gateway accepted, with what a report about it needs.
#[derive(Debug, Clone)]
pub struct SubmittedText {
    /// The recipient's digits as addressed, national (`07…`) or international (`447…`).
    pub number: String,
    pub address: String,
    pub text: String,
    /// The original Message-ID with its angle brackets.
    pub message_id: String,
    pub subject: Option<String>,
    /// The original message's header block, CRLF line ends, without the blank line.
    pub original_headers: String,
    pub submitted_at: DateTime<Utc>,
}

/// Sender address and domain of the gateway's reports and receipts.
pub const GATEWAY_ADDRESS: &str = "gateway@sms.nhs.net";
pub const GATEWAY_DOMAIN: &str = "sms.nhs.net";

/// Kind of delivery status notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnKind {
    Delivered,
    Delayed { retry_until: DateTime<Utc> },
    Failed,
}

/// Composes a DSN about `text` for `account`, dated `at`.
pub fn delivery_status_notification(text: &SubmittedText, account: &str, kind: DsnKind, at: DateTime<Utc>) -> Vec<u8> {
    let (subject, status_word, human, fields) = match kind {
        DsnKind::Delivered => (
            format!("Delivered: SMS to {}", text.number),
            "delivered",
            format!("Your text message to {} was delivered to the handset at {}.", text.number, at.to_rfc2822()),
            "Action: delivered\r\nStatus: 2.0.0\r\n".to_string(),
        ),
        DsnKind::Delayed { retry_until } => (
            format!("Delayed: SMS to {}", text.number),
            "delayed",
            format!(
                "Your text message to {} has not been delivered yet because the handset \
                 is not reachable. The gateway will keep trying until {}.",
                text.number,
                retry_until.to_rfc2822()
            ),
            format!(
                "Action: delayed\r\nStatus: 4.4.1\r\n\
                 Diagnostic-Code: smtp; 451 4.4.1 handset not reachable, will retry\r\n\
                 Will-Retry-Until: {}\r\n",
                retry_until.to_rfc2822()
            ),
        ),
        DsnKind::Failed => (
            format!("Undeliverable: SMS to {}", text.number),
            "failed",
            format!(
                "Your text message to {} could not be delivered: the number is not a \
                 reachable mobile number. The gateway will not try again.",
                text.number
            ),
            "Action: failed\r\nStatus: 5.1.1\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 number not recognised by the mobile network\r\n"
                .to_string(),
        ),
    };
    let boundary = format!("=_sandbox_report_{}", random_hex());
    let message_id = new_message_id("report");

    let mut out = String::new();
    out.push_str(&format!("From: NHSmail SMS Gateway <{GATEWAY_ADDRESS}>\r\n"));
    out.push_str(&format!("To: <{account}>\r\n"));
    out.push_str(&format!("Subject: {subject}\r\n"));
    out.push_str(&format!("Date: {}\r\n", at.to_rfc2822()));
    out.push_str(&format!("Message-ID: {message_id}\r\n"));
    out.push_str(&format!("In-Reply-To: {}\r\n", text.message_id));
    out.push_str(&format!("References: {}\r\n", text.message_id));
    out.push_str(&format!("X-Original-Message-ID: {}\r\n", text.message_id));
    out.push_str(&format!("X-SMS-Recipient: {}\r\n", text.number));
    out.push_str(&format!("X-SMS-Status: {status_word}\r\n"));
    out.push_str("Auto-Submitted: auto-replied\r\n");
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n"
    ));
    out.push_str("\r\n");
    out.push_str("This is a MIME-encapsulated delivery status notification.\r\n\r\n");

    out.push_str(&format!("--{boundary}\r\n"));
    out.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
    out.push_str(&human);
    out.push_str("\r\n\r\n");
    out.push_str(&format!("Number: {}\r\n", text.number));
    out.push_str(&format!("Status: {status_word}\r\n"));
    out.push_str(&format!("Time: {}\r\n", at.to_rfc2822()));
    out.push_str(&format!("Original Message-ID: {}\r\n\r\n", text.message_id));

    out.push_str(&format!("--{boundary}\r\n"));
    out.push_str("Content-Type: message/delivery-status\r\n\r\n");
    out.push_str(&format!("Reporting-MTA: dns; {GATEWAY_DOMAIN}\r\n"));
    out.push_str(&format!("Arrival-Date: {}\r\n\r\n", text.submitted_at.to_rfc2822()));
    out.push_str(&format!("Original-Recipient: rfc822;{}\r\n", text.address));
    out.push_str(&format!("Final-Recipient: rfc822;{}\r\n", text.address));
    out.push_str(&fields);
    out.push_str(&format!("Last-Attempt-Date: {}\r\n\r\n", at.to_rfc2822()));

    out.push_str(&format!("--{boundary}\r\n"));
    out.push_str("Content-Type: text/rfc822-headers\r\n\r\n");
    out.push_str(&text.original_headers);
    out.push_str("\r\n\r\n");
    out.push_str(&format!("--{boundary}--\r\n"));
    out.into_bytes()
}

/// Composes a patient's reply `body` to `text`, from the number it was sent to.
pub fn patient_reply(text: &SubmittedText, account: &str, body: &str, at: DateTime<Utc>) -> Vec<u8> {
    let subject = match &text.subject {
        Some(subject) if !subject.is_empty() => format!("Re: {subject}"),
        _ => format!("SMS reply from {}", text.number),
    };
    let mut out = String::new();
    out.push_str(&format!("From: <{}>\r\n", text.address));
    out.push_str(&format!("To: <{account}>\r\n"));
    out.push_str(&format!("Subject: {subject}\r\n"));
    out.push_str(&format!("Date: {}\r\n", at.to_rfc2822()));
    out.push_str(&format!("Message-ID: {}\r\n", new_message_id("reply")));
    out.push_str(&format!("In-Reply-To: {}\r\n", text.message_id));
    out.push_str(&format!("References: {}\r\n", text.message_id));
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    out.push_str("Content-Transfer-Encoding: 8bit\r\n");
    out.push_str("\r\n");
    out.push_str(body);
    out.push_str("\r\n");
    out.into_bytes()
}

/// Returns a new Message-ID in the gateway's domain, with angle brackets.
pub fn new_message_id(kind: &str) -> String {
    format!("<{kind}.{}@{GATEWAY_DOMAIN}>", random_hex())
}

fn random_hex() -> String {
    let bytes: [u8; 12] = rand::rng().random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use mail_parser::MimeHeaders;

    use super::*;

    fn text() -> SubmittedText {
        SubmittedText {
            number: "07700900123".to_string(),
            address: "07700900123@sms.nhs.net".to_string(),
            text: "Your appointment is at 10:00".to_string(),
            message_id: "<abc@example.org>".to_string(),
            subject: None,
            original_headers: "From: practice.sms@example.org\r\nMessage-ID: <abc@example.org>".to_string(),
            submitted_at: Utc::now(),
        }
    }

    #[test]
    fn receipt_parses_as_delivery_report() {
        let raw = delivery_status_notification(&text(), "practice.sms@example.org", DsnKind::Delivered, Utc::now());
        let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
        let content_type = message.content_type().unwrap();
        assert_eq!(content_type.subtype(), Some("report"));
        assert_eq!(content_type.attribute("report-type"), Some("delivery-status"));
        assert_eq!(message.in_reply_to().as_text(), Some("abc@example.org"));
    }

    #[test]
    fn failure_report_carries_original_headers() {
        let raw = delivery_status_notification(&text(), "practice.sms@example.org", DsnKind::Failed, Utc::now());
        let raw = String::from_utf8(raw).unwrap();
        let attached = raw.split("text/rfc822-headers\r\n\r\n").nth(1).unwrap();
        assert!(attached.starts_with("From: practice.sms@example.org\r\nMessage-ID: <abc@example.org>"));
    }
}
