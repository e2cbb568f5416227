//! The SMS gateway: which addresses it accepts, what each number range does, and the tasks
//! that put receipts, reports and replies in the inbox after the configured delay.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::mailbox::INBOX;
use crate::report::{self, DsnKind, GATEWAY_DOMAIN, SubmittedText};
use crate::state::Shared;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipientError {
    #[error("{0} is not an address of the SMS gateway")]
    NotGateway(String),
    #[error("{0} is not a UK mobile number in national (07…) or international (447…) form")]
    InvalidNumber(String),
}

/// Returns the digits of a gateway address: `07` and 9 digits, or `447` and 9 digits, at
/// `sms.nhs.net`.
pub fn parse_gateway_address(address: &str) -> Result<String, RecipientError> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(RecipientError::NotGateway(address.to_string()));
    };
    if !domain.eq_ignore_ascii_case(GATEWAY_DOMAIN) {
        return Err(RecipientError::NotGateway(address.to_string()));
    }
    let digits_only = !local.is_empty() && local.bytes().all(|b| b.is_ascii_digit());
    let national = local.len() == 11 && local.starts_with("07");
    let international = local.len() == 12 && local.starts_with("447");
    if digits_only && (national || international) {
        Ok(local.to_string())
    } else {
        Err(RecipientError::InvalidNumber(address.to_string()))
    }
}

/// The gateway's handling of a text, chosen by the number it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered,
    PermanentFailure,
    TemporaryFailure,
    Reply,
    Stop,
    NoReceipt,
}

/// The number ranges within Ofcom's drama range 07700 900000 to 900999: the last three
/// digits, inclusive, and what the gateway does. Any other valid mobile number is delivered.
pub const RANGES: &[(u16, u16, Outcome, &str)] = &[
    (0, 899, Outcome::Delivered, "delivery receipt"),
    (900, 919, Outcome::PermanentFailure, "permanent failure report (Action: failed, Status: 5.1.1)"),
    (920, 939, Outcome::TemporaryFailure, "delay report (Action: delayed, Status: 4.4.1), then a delivery receipt"),
    (940, 959, Outcome::Reply, "delivery receipt, then the patient replies \"Yes, thank you\""),
    (960, 979, Outcome::Stop, "delivery receipt, then the patient replies \"STOP\""),
    (980, 999, Outcome::NoReceipt, "accepted, but no receipt ever comes (handset off)"),
];

/// The text of the reply from numbers in the reply range.
pub const REPLY_TEXT: &str = "Yes, thank you";
pub const STOP_TEXT: &str = "STOP";

/// Returns the outcome for a national or international number.
pub fn outcome_for(number: &str) -> Outcome {
    let drama_suffix = number.strip_prefix("07700900").or_else(|| number.strip_prefix("447700900"));
    let Some(last_three) = drama_suffix.and_then(|suffix| suffix.parse::<u16>().ok()) else {
        return Outcome::Delivered;
    };
    RANGES
        .iter()
        .find(|(low, high, _, _)| (*low..=*high).contains(&last_three))
        .map_or(Outcome::Delivered, |(_, _, outcome, _)| *outcome)
}

/// The number ranges as `--help` and the README show them.
pub fn ranges_help() -> String {
    let mut help = String::from("SMS gateway number ranges (07700 900xxx or +44 7700 900xxx, Ofcom's drama range):\n");
    for (low, high, _, description) in RANGES {
        help.push_str(&format!("  900{low:03}-900{high:03}  {description}\n"));
    }
    help.push_str("  any other valid UK mobile number: delivery receipt\n");
    help
}

/// A text as the control API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SentText {
    pub number: String,
    pub address: String,
    pub text: String,
    pub message_id: String,
    pub subject: Option<String>,
    pub time: DateTime<Utc>,
    pub outcome: Outcome,
}

/// The gateway retries a delayed text for this long, as NHS Notify does.
const RETRY_WINDOW_HOURS: i64 = 72;

/// Records an accepted text and starts the task that answers it.
///
/// NOTE: pending answers live only in that task, so a text whose receipt is still waiting
/// when the sandbox stops never gets one, even with a state directory.
pub fn submit(shared: &Arc<Shared>, text: SubmittedText) {
    let outcome = outcome_for(&text.number);
    shared.record_sent(SentText {
        number: text.number.clone(),
        address: text.address.clone(),
        text: text.text.clone(),
        message_id: text.message_id.clone(),
        subject: text.subject.clone(),
        time: text.submitted_at,
        outcome,
    });
    tracing::info!(number = %text.number, message_id = %text.message_id, ?outcome, "text accepted");

    let task_shared = Arc::clone(shared);
    shared.tasks.spawn(async move {
        let cancel = task_shared.cancel.clone();
        tokio::select! {
            () = answer(&task_shared, &text, outcome) => {}
            () = cancel.cancelled() => {}
        }
    });
}

async fn answer(shared: &Shared, text: &SubmittedText, outcome: Outcome) {
    let delay = shared.settings.receipt_delay;
    match outcome {
        Outcome::Delivered => {
            deliver_dsn(shared, text, DsnKind::Delivered, delay).await;
        }
        Outcome::PermanentFailure => {
            deliver_dsn(shared, text, DsnKind::Failed, delay).await;
        }
        Outcome::TemporaryFailure => {
            let retry_until = shared.clock.now() + TimeDelta::hours(RETRY_WINDOW_HOURS);
            deliver_dsn(shared, text, DsnKind::Delayed { retry_until }, delay).await;
            deliver_dsn(shared, text, DsnKind::Delivered, delay).await;
        }
        Outcome::Reply | Outcome::Stop => {
            deliver_dsn(shared, text, DsnKind::Delivered, delay).await;
            tokio::time::sleep(delay).await;
            let body = if outcome == Outcome::Stop { STOP_TEXT } else { REPLY_TEXT };
            let username = shared.username();
            let raw = report::patient_reply(text, &username, body, shared.clock.now());
            append(shared, &raw, "replied");
        }
        Outcome::NoReceipt => shared.counters.message("no_receipt"),
    }
}

async fn deliver_dsn(shared: &Shared, text: &SubmittedText, kind: DsnKind, delay: Duration) {
    tokio::time::sleep(delay).await;
    let username = shared.username();
    let raw = report::delivery_status_notification(text, &username, kind, shared.clock.now());
    let counter = match kind {
        DsnKind::Delivered => "delivered",
        DsnKind::Delayed { .. } => "delayed",
        DsnKind::Failed => "failed",
    };
    append(shared, &raw, counter);
}

fn append(shared: &Shared, raw: &[u8], counter: &'static str) {
    let now = shared.clock.now();
    match shared.mailbox().append(INBOX, raw, BTreeSet::new(), now) {
        Ok(_) => shared.counters.message(counter),
        Err(error) => tracing::error!(%error, "failed to put a gateway message in the inbox"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_address_forms_accepted() {
        assert_eq!(parse_gateway_address("07700900123@sms.nhs.net"), Ok("07700900123".into()));
        assert_eq!(parse_gateway_address("447700900123@SMS.NHS.NET"), Ok("447700900123".into()));
    }

    #[test]
    fn gateway_address_rejects_bad_forms() {
        let cases = [
            ("07700900123@example.org", true),
            ("0770090012@sms.nhs.net", false),
            ("+447700900123@sms.nhs.net", false),
            ("01632960123@sms.nhs.net", false),
            ("4477009001234@sms.nhs.net", false),
            ("no-at-sign", true),
        ];
        for (address, other_domain) in cases {
            let error = parse_gateway_address(address).unwrap_err();
            assert_eq!(matches!(error, RecipientError::NotGateway(_)), other_domain, "{address}");
        }
    }

    #[test]
    fn ranges_pick_outcomes() {
        let cases = [
            ("07700900000", Outcome::Delivered),
            ("447700900899", Outcome::Delivered),
            ("07700900900", Outcome::PermanentFailure),
            ("07700900939", Outcome::TemporaryFailure),
            ("447700900940", Outcome::Reply),
            ("07700900979", Outcome::Stop),
            ("07700900999", Outcome::NoReceipt),
            ("07123456789", Outcome::Delivered),
        ];
        for (number, expected) in cases {
            assert_eq!(outcome_for(number), expected, "{number}");
        }
    }
}
