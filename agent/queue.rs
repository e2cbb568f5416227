//! Message states, priorities and the rules between them: which state changes are allowed, how long to wait before
//! the next attempt, and when a message expires. Pure: the store applies these rules inside its transactions.

use std::{fmt, str::FromStr, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};

/// Delay before the first retry unless `[sending] retry_base_seconds` sets another. Each later retry doubles it.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(30);

/// Upper bound of [`backoff_delay`].
pub const BACKOFF_MAX: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum QueueError {
    #[error("invalid message status: {0:?}")]
    InvalidStatus(String),
    #[error("invalid priority: {0:?}")]
    InvalidPriority(String),
}

/// The state of one outbound text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    /// Waiting to be sent, also after a transient failure until its next attempt.
    Queued,
    /// Claimed by the sender and being handed to SMTP.
    Sending,
    /// NHSmail accepted the email (SMTP 2xx after DATA).
    Sent,
    /// The SMS gateway reported delivery to the handset.
    Delivered,
    /// Permanently failed: rejected by SMTP or reported failed by the gateway.
    Failed,
    /// Not sent before its expiry time.
    Expired,
    /// Cancelled by a caller before it was sent.
    Cancelled,
    /// The connection dropped after the message data was sent, so NHSmail may have it. Never resent automatically.
    Uncertain,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 8] = [
        MessageStatus::Queued,
        MessageStatus::Sending,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Failed,
        MessageStatus::Expired,
        MessageStatus::Cancelled,
        MessageStatus::Uncertain,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Failed => "failed",
            MessageStatus::Expired => "expired",
            MessageStatus::Cancelled => "cancelled",
            MessageStatus::Uncertain => "uncertain",
        }
    }

    /// Returns whether no transition leaves this state.
    pub fn is_final(self) -> bool {
        MessageStatus::ALL.iter().all(|&to| !can_transition(self, to))
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageStatus {
    type Err = QueueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        MessageStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| QueueError::InvalidStatus(text.to_owned()))
    }
}

/// Returns whether a message may move from `from` to `to`.
///
/// - `queued` → `sending` (claimed), `cancelled`, `expired`;
/// - `sending` → `sent` (2xx after DATA), `queued` (transient failure, authentication failure, or crash recovery
///   before DATA), `failed` (5xx naming the recipient), `uncertain` (connection lost after DATA);
/// - `sent` → `delivered` or `failed`, from the gateway's receipt or failure report;
/// - `uncertain` → `delivered` or `failed`, because a receipt or report proves that NHSmail had the message.
///
/// `delivered`, `failed`, `expired` and `cancelled` are final.
pub fn can_transition(from: MessageStatus, to: MessageStatus) -> bool {
    use MessageStatus::*;

    matches!(
        (from, to),
        (Queued, Sending | Cancelled | Expired)
            | (Sending, Sent | Queued | Failed | Uncertain)
            | (Sent, Delivered | Failed)
            | (Uncertain, Delivered | Failed)
    )
}

/// Sending order among due messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    Urgent,
    #[default]
    Normal,
    Bulk,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Urgent, Priority::Normal, Priority::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::Normal => "normal",
            Priority::Bulk => "bulk",
        }
    }

    /// Sort key: lower ranks are sent first.
    pub fn rank(self) -> u8 {
        match self {
            Priority::Urgent => 0,
            Priority::Normal => 1,
            Priority::Bulk => 2,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = QueueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|priority| priority.as_str() == text)
            .ok_or_else(|| QueueError::InvalidPriority(text.to_owned()))
    }
}

/// Returns how long to wait after the `attempt`-th failed attempt (counting from 1): `base`, twice `base`, four
/// times `base` and so on, capped at one hour. Attempt 0 is treated as attempt 1.
pub fn backoff_delay(base: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    base.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

/// Returns when a message created at `created_at` expires: the earlier of the caller's `requested` time and
/// `created_at + max_lifetime`. A requested time already in the past is returned unchanged.
pub fn effective_expiry(
    created_at: DateTime<Utc>,
    requested: Option<DateTime<Utc>>,
    max_lifetime: Duration,
) -> DateTime<Utc> {
    let latest = TimeDelta::from_std(max_lifetime)
        .ok()
        .and_then(|lifetime| created_at.checked_add_signed(lifetime))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);

    match requested {
        Some(requested) => requested.min(latest),
        None => latest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageStatus::*;

    #[test]
    fn transition_table_matches_design() {
        let allowed = [
            (Queued, Sending),
            (Queued, Cancelled),
            (Queued, Expired),
            (Sending, Sent),
            (Sending, Queued),
            (Sending, Failed),
            (Sending, Uncertain),
            (Sent, Delivered),
            (Sent, Failed),
            (Uncertain, Delivered),
            (Uncertain, Failed),
        ];

        for from in MessageStatus::ALL {
            for to in MessageStatus::ALL {
                let expected = allowed.contains(&(from, to));
                assert_eq!(can_transition(from, to), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn sending_cannot_be_cancelled() {
        assert!(!can_transition(Sending, Cancelled));
    }

    #[test]
    fn uncertain_is_never_requeued() {
        assert!(!can_transition(Uncertain, Queued));
        assert!(!can_transition(Uncertain, Sending));
    }

    #[test]
    fn final_states_are_final() {
        let finals: Vec<_> = MessageStatus::ALL.into_iter().filter(|status| status.is_final()).collect();
        assert_eq!(finals, [Delivered, Failed, Expired, Cancelled]);
    }

    #[test]
    fn status_text_round_trips() {
        for status in MessageStatus::ALL {
            assert_eq!(status.as_str().parse::<MessageStatus>(), Ok(status));
        }
        assert_eq!("Queued".parse::<MessageStatus>(), Err(QueueError::InvalidStatus("Queued".into())));
    }

    #[test]
    fn priority_text_round_trips() {
        for priority in Priority::ALL {
            assert_eq!(priority.as_str().parse::<Priority>(), Ok(priority));
        }
        assert!("high".parse::<Priority>().is_err());
    }

    #[test]
    fn priority_rank_puts_urgent_first() {
        assert!(Priority::Urgent.rank() < Priority::Normal.rank());
        assert!(Priority::Normal.rank() < Priority::Bulk.rank());
    }

    #[test]
    fn backoff_doubles_from_thirty_seconds() {
        let cases = [(0, 30), (1, 30), (2, 60), (3, 120), (4, 240), (7, 1920), (8, 3600), (9, 3600)];
        for (attempt, seconds) in cases {
            assert_eq!(backoff_delay(DEFAULT_BACKOFF_BASE, attempt), Duration::from_secs(seconds), "attempt {attempt}");
        }
    }

    #[test]
    fn backoff_doubles_from_configured_base() {
        let base = Duration::from_secs(1);
        let cases = [(1, 1), (2, 2), (3, 4), (12, 2048), (13, 3600)];
        for (attempt, seconds) in cases {
            assert_eq!(backoff_delay(base, attempt), Duration::from_secs(seconds), "attempt {attempt}");
        }
    }

    #[test]
    fn backoff_caps_at_one_hour() {
        assert_eq!(backoff_delay(DEFAULT_BACKOFF_BASE, u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn expiry_takes_earlier_time() {
        let created = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let lifetime = Duration::from_secs(72 * 3600);
        let cap = created + TimeDelta::hours(72);

        assert_eq!(effective_expiry(created, None, lifetime), cap);
        let soon = created + TimeDelta::hours(1);
        assert_eq!(effective_expiry(created, Some(soon), lifetime), soon);
        let late = created + TimeDelta::days(30);
        assert_eq!(effective_expiry(created, Some(late), lifetime), cap);
    }

    #[test]
    fn expiry_saturates_on_huge_lifetime() {
        let created = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let expiry = effective_expiry(created, None, Duration::MAX);
        assert_eq!(expiry, DateTime::<Utc>::MAX_UTC);
    }
}
