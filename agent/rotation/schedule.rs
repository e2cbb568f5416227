//! When a rotation is due, how long to wait after a failed one, and which password warnings to show. Pure
//! functions of the password's status and the clock, so tests pass the time in.

use chrono::{DateTime, Duration, Utc};

use crate::app::Warning;
use crate::credentials::{IDLE, PasswordState, PasswordStatus};

/// The first wait after a failed rotation; each further failure doubles it.
const FIRST_BACKOFF: Duration = Duration::minutes(10);
/// The maximum wait between failed rotations.
const MAX_BACKOFF: Duration = Duration::hours(24);

/// Returns the wait before the next attempt after `failures` failed rotations in a row: 10 minutes doubling up to
/// 24 hours.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2_i32.pow(doublings)).min(MAX_BACKOFF)
}

/// Returns when the next automatic rotation is due, or `None` when none will run on its own: automatic
/// management is off, no password is set, or the password's state needs a person first.
pub fn next_rotation_at(
    status: &PasswordStatus,
    auto_manage: bool,
    rotate_days_before_expiry: u32,
) -> Option<DateTime<Utc>> {
    if !auto_manage || status.rotation.state != IDLE {
        return None;
    }
    if !matches!(status.state, PasswordState::Ok | PasswordState::Expiring) {
        return None;
    }
    let due = status.expires_at? - Duration::days(i64::from(rotate_days_before_expiry));
    Some(status.rotation.next_at.map_or(due, |retry_at| retry_at.max(due)))
}

/// Returns the warnings about the password at `now`. An expiry warning appears from the largest of `warn_days`
/// before expiry, and only while automatic management is off or failing, because otherwise the agent changes the
/// password before then.
pub fn password_warnings(
    status: &PasswordStatus,
    auto_manage: bool,
    rotation_unavailable: Option<&str>,
    warn_days: &[u32],
    now: DateTime<Utc>,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    match status.state {
        PasswordState::Unset => warnings.push(Warning {
            code: "password_unset",
            message: "No mailbox password is set, so no texts are being sent. Set it with `nhsmail-ctl password set`."
                .into(),
        }),
        PasswordState::Rejected => warnings.push(Warning {
            code: "password_rejected",
            message: "NHSmail rejected the stored password, so texts are waiting. Set the current password with `nhsmail-ctl password set`.".into(),
        }),
        PasswordState::Expired => warnings.push(Warning {
            code: "password_expired",
            message: "The mailbox password has expired, so texts are waiting. Change it on the NHSmail portal, then run `nhsmail-ctl password set`.".into(),
        }),
        PasswordState::NeedsAttention => warnings.push(Warning {
            code: "password_needs_attention",
            message: "An automatic password change could not be confirmed, so texts are waiting and the agent has stopped signing in to protect the account from lockout. Find the working password, then run `nhsmail-ctl password set`.".into(),
        }),
        PasswordState::Ok | PasswordState::Expiring | PasswordState::Rotating => {}
    }

    let failing = status.rotation.failures > 0 && status.rotation.state == IDLE;
    if failing && status.state != PasswordState::NeedsAttention {
        let outcome = status.rotation.last_outcome.as_deref().unwrap_or("no reason was recorded");
        let retry = status
            .rotation
            .next_at
            .map_or_else(String::new, |at| format!(" The next attempt is at {}.", at.format("%Y-%m-%d %H:%M UTC")));
        warnings.push(Warning {
            code: "password_rotation_failing",
            message: format!(
                "The last {} automatic password change{} failed: {outcome}.{retry}",
                status.rotation.failures,
                if status.rotation.failures == 1 { "" } else { "s" }
            ),
        });
    }

    let expiring = matches!(status.state, PasswordState::Ok | PasswordState::Expiring | PasswordState::Rotating);
    let first_warning_day = warn_days.iter().copied().max().unwrap_or(0);
    if let (true, Some(expires_at)) = (expiring, status.expires_at) {
        let days = crate::credentials::whole_days_until(now, expires_at);
        let managed = auto_manage && rotation_unavailable.is_none() && !failing;
        let inside_window = expires_at - now <= Duration::days(i64::from(first_warning_day));
        if inside_window && !managed {
            let why = match rotation_unavailable {
                Some(reason) if auto_manage => format!(" The agent cannot change it itself: {reason}."),
                _ if failing => String::new(),
                _ => " Automatic management is off.".into(),
            };
            warnings.push(Warning {
                code: "password_expiring",
                message: format!(
                    "The mailbox password expires in {days} day{} ({}).{why} Change it on the NHSmail portal, then run `nhsmail-ctl password set`, or turn automatic management on.",
                    if days == 1 { "" } else { "s" },
                    expires_at.format("%Y-%m-%d %H:%M UTC"),
                ),
            });
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RotationRecord;

    const WARN_DAYS: [u32; 5] = [18, 10, 5, 2, 1];

    fn status(state: PasswordState, expires_at: DateTime<Utc>, rotation: RotationRecord) -> PasswordStatus {
        PasswordStatus {
            username: Some("practice.sms@example.org".into()),
            password_set: true,
            set_at: Some(expires_at - Duration::days(90)),
            expires_at: Some(expires_at),
            days_until_expiry: None,
            state,
            last_success_at: None,
            last_error: None,
            failed_sign_ins: 0,
            blocked_sign_ins: 0,
            rotation,
            pending: false,
        }
    }

    fn expiry_warning(warnings: &[Warning]) -> Option<&Warning> {
        warnings.iter().find(|warning| warning.code == "password_expiring")
    }

    #[test]
    fn backoff_doubles_to_a_day() {
        let cases = [(1, 10), (2, 20), (3, 40), (8, 1280), (9, 1440), (40, 1440)];
        for (failures, minutes) in cases {
            assert_eq!(backoff(failures), Duration::minutes(minutes), "after {failures} failures");
        }
    }

    #[test]
    fn expiry_warned_on_each_warn_day() {
        let expires_at = Utc::now();
        let current = status(PasswordState::Expiring, expires_at, RotationRecord::default());
        for day in WARN_DAYS {
            let now = expires_at - Duration::days(i64::from(day));
            let warnings = password_warnings(&current, false, None, &WARN_DAYS, now);
            let warning = expiry_warning(&warnings).unwrap_or_else(|| panic!("no warning {day} days before expiry"));
            let expected = format!("expires in {day} day");
            assert!(warning.message.contains(&expected), "{day} days before: {}", warning.message);
        }
    }

    #[test]
    fn no_expiry_warning_before_first_day() {
        let expires_at = Utc::now();
        let current = status(PasswordState::Ok, expires_at, RotationRecord::default());
        let now = expires_at - Duration::days(18) - Duration::seconds(1);
        let warnings = password_warnings(&current, false, None, &WARN_DAYS, now);
        assert!(expiry_warning(&warnings).is_none(), "{warnings:?}");
    }

    #[test]
    fn managed_password_not_warned() {
        let expires_at = Utc::now();
        let current = status(PasswordState::Expiring, expires_at, RotationRecord::default());
        let now = expires_at - Duration::days(5);
        let warnings = password_warnings(&current, true, None, &WARN_DAYS, now);
        assert!(expiry_warning(&warnings).is_none(), "{warnings:?}");
    }

    #[test]
    fn failing_rotation_warns_twice() {
        let expires_at = Utc::now();
        let rotation = RotationRecord {
            failures: 2,
            last_outcome: Some("the change endpoint timed out".into()),
            ..RotationRecord::default()
        };
        let current = status(PasswordState::Expiring, expires_at, rotation);
        let warnings = password_warnings(&current, true, None, &WARN_DAYS, expires_at - Duration::days(3));
        let codes: Vec<&str> = warnings.iter().map(|warning| warning.code).collect();
        assert_eq!(codes, ["password_rotation_failing", "password_expiring"]);
    }

    #[test]
    fn unavailable_rotation_says_why() {
        let expires_at = Utc::now();
        let current = status(PasswordState::Expiring, expires_at, RotationRecord::default());
        let reason = "automatic changes need [nhsmail] auth = \"oauth2\"";
        let warnings = password_warnings(&current, true, Some(reason), &WARN_DAYS, expires_at - Duration::days(3));
        let warning = expiry_warning(&warnings).expect("an expiry warning");
        assert!(warning.message.contains(reason), "{}", warning.message);
    }

    #[test]
    fn due_date_is_before_expiry() {
        let expires_at = Utc::now();
        let current = status(PasswordState::Ok, expires_at, RotationRecord::default());
        assert_eq!(next_rotation_at(&current, true, 14), Some(expires_at - Duration::days(14)));
    }

    #[test]
    fn failed_rotation_delays_due_date() {
        let expires_at = Utc::now();
        let retry_at = expires_at - Duration::days(3);
        let rotation = RotationRecord { failures: 1, next_at: Some(retry_at), ..RotationRecord::default() };
        let current = status(PasswordState::Expiring, expires_at, rotation);
        assert_eq!(next_rotation_at(&current, true, 14), Some(retry_at));
    }

    #[test]
    fn nothing_due_without_auto_manage() {
        let current = status(PasswordState::Ok, Utc::now(), RotationRecord::default());
        assert_eq!(next_rotation_at(&current, false, 14), None);
    }

    #[test]
    fn nothing_due_after_rejection() {
        let current = status(PasswordState::Rejected, Utc::now(), RotationRecord::default());
        assert_eq!(next_rotation_at(&current, true, 14), None);
    }
}
