//! Faults armed through the control API and consumed by the SMTP and IMAP sessions. Each
//! armed fault fires for its next `count` matching commands, then disarms itself.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultKind {
    /// A 451 reply instead of the normal one at the chosen SMTP stage.
    #[serde(rename = "smtp_4xx")]
    Smtp4xx,
    /// A 554 reply instead of the normal one at the chosen SMTP stage.
    #[serde(rename = "smtp_5xx")]
    Smtp5xx,
    /// The connection is closed in place of the 354 reply to DATA, before any message data is read.
    #[serde(rename = "smtp_drop_at_data")]
    SmtpDropAtData,
    /// The connection is closed while the message data arrives, before the final ".".
    #[serde(rename = "smtp_drop_before_dot")]
    SmtpDropBeforeDot,
    /// The message is accepted and stored, then the connection is closed without the 250.
    #[serde(rename = "smtp_drop_after_dot")]
    SmtpDropAfterDot,
    /// A UID FETCH sends part of its first message literal, then the connection is closed.
    #[serde(rename = "imap_drop_mid_fetch")]
    ImapDropMidFetch,
    /// Each SMTP reply and IMAP command's response is delayed by `delay_ms`.
    #[serde(rename = "slow")]
    Slow,
    /// Graph's changePassword responds 503 without changing anything.
    #[serde(rename = "change_5xx")]
    Change5xx,
    /// Graph's changePassword refuses the new password with 400, as for a password used before.
    #[serde(rename = "change_refuse")]
    ChangeRefuse,
    /// Graph's changePassword changes the password, then responds 504 as if the reply were lost on the way.
    #[serde(rename = "change_lost_reply")]
    ChangeLostReply,
    /// Graph's changePassword waits `delay_ms` before changing anything; a client that disconnects meanwhile
    /// cancels the change.
    #[serde(rename = "change_hold")]
    ChangeHold,
    /// Graph's changePassword changes the password, then waits `delay_ms` before answering.
    #[serde(rename = "change_hold_after_apply")]
    ChangeHoldAfterApply,
    /// After the next password change, sign-ins with the new password fail for now (SMTP 454, IMAP
    /// `NO [UNAVAILABLE]`, token endpoint 503) for `delay_ms`, as while the change replicates.
    #[serde(rename = "change_propagation")]
    ChangePropagation,
    /// Graph's changePassword changes the password, but for `delay_ms` afterwards every sign-in with the new one is
    /// rejected, as while the change spreads to every server. These rejections do not count toward the lockout.
    #[serde(rename = "change_propagation_delay")]
    ChangePropagationDelay,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Smtp4xx => "smtp_4xx",
            FaultKind::Smtp5xx => "smtp_5xx",
            FaultKind::SmtpDropAtData => "smtp_drop_at_data",
            FaultKind::SmtpDropBeforeDot => "smtp_drop_before_dot",
            FaultKind::SmtpDropAfterDot => "smtp_drop_after_dot",
            FaultKind::ImapDropMidFetch => "imap_drop_mid_fetch",
            FaultKind::Slow => "slow",
            FaultKind::Change5xx => "change_5xx",
            FaultKind::ChangeRefuse => "change_refuse",
            FaultKind::ChangeLostReply => "change_lost_reply",
            FaultKind::ChangeHold => "change_hold",
            FaultKind::ChangeHoldAfterApply => "change_hold_after_apply",
            FaultKind::ChangePropagation => "change_propagation",
            FaultKind::ChangePropagationDelay => "change_propagation_delay",
        }
    }
}

/// The SMTP command whose reply a 4xx or 5xx fault replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpStage {
    Mail,
    #[default]
    Rcpt,
    /// The reply to the final "." of DATA; nothing is stored.
    Data,
}

/// A fault as the control API arms it and lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub count: u32,
    /// Only for `smtp_4xx` and `smtp_5xx`; RCPT when absent.
    #[serde(default)]
    pub stage: SmtpStage,
    /// Only for `slow`; milliseconds added before each answer.
    #[serde(default = "default_delay_ms")]
    pub delay_ms: u64,
}

fn one() -> u32 {
    1
}

fn default_delay_ms() -> u64 {
    500
}

#[derive(Debug, Default)]
pub struct Faults {
    armed: Mutex<Vec<Fault>>,
}

impl Faults {
    pub fn arm(&self, fault: Fault) {
        if fault.count > 0 {
            self.lock().push(fault);
        }
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn list(&self) -> Vec<Fault> {
        self.lock().clone()
    }

    /// Consumes one firing of the first armed fault of `kind` (at `stage`, for SMTP replies).
    pub fn take(&self, kind: FaultKind, stage: Option<SmtpStage>) -> Option<Fault> {
        let mut armed = self.lock();
        let index =
            armed.iter().position(|fault| fault.kind == kind && stage.is_none_or(|stage| fault.stage == stage))?;
        let fired = armed[index].clone();
        armed[index].count -= 1;
        if armed[index].count == 0 {
            armed.remove(index);
        }
        Some(fired)
    }

    /// Consumes one firing of a `slow` fault and returns its delay.
    pub fn take_slow(&self) -> Option<Duration> {
        self.take(FaultKind::Slow, None).map(|fault| Duration::from_millis(fault.delay_ms))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.armed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: FaultKind, count: u32, stage: SmtpStage) -> Fault {
        Fault { kind, count, stage, delay_ms: 0 }
    }

    #[test]
    fn fault_disarms_after_count() {
        let faults = Faults::default();
        faults.arm(fault(FaultKind::Smtp4xx, 2, SmtpStage::Rcpt));
        assert!(faults.take(FaultKind::Smtp4xx, Some(SmtpStage::Rcpt)).is_some());
        assert!(faults.take(FaultKind::Smtp4xx, Some(SmtpStage::Rcpt)).is_some());
        assert!(faults.take(FaultKind::Smtp4xx, Some(SmtpStage::Rcpt)).is_none());
    }

    #[test]
    fn fault_fires_only_at_its_stage() {
        let faults = Faults::default();
        faults.arm(fault(FaultKind::Smtp5xx, 1, SmtpStage::Mail));
        assert!(faults.take(FaultKind::Smtp5xx, Some(SmtpStage::Rcpt)).is_none());
        assert!(faults.take(FaultKind::Smtp5xx, Some(SmtpStage::Mail)).is_some());
    }
}
