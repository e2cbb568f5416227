//! Every conversion between the generated proto types and what nhsmail-ctl reads or prints: command-line values to
//! proto enums and timestamps, and proto messages to JSON.
//!
//! JSON uses the proto field names (snake_case), enums as their short lower-case names (`MESSAGE_STATUS_QUEUED`
//! becomes `"queued"`, or the bare number for a value this build does not know), and timestamps as RFC 3339 strings
//! in UTC (`null` when unset). Every field is present, so scripts need not guess defaults.

use chrono::{DateTime, SecondsFormat, Utc};
use nhsmail_agent::proto::{
    Connectivity, Encoding, Event, InboundEmail, ListAuditEventsResponse, ListInboundForReviewResponse,
    ListMessagesResponse, ListOptOutsResponse, ListRepliesResponse, Message, MessageEvent, MessageStatus, OptOut,
    PasswordState, Priority, QueueCount, Reply, Status, SubmitMessageResponse, UpdatePasswordResponse, UploadReport,
    Warning,
};
use prost_types::Timestamp;
use serde_json::{Value, json};

use crate::cli::{PriorityArg, StatusArg, Switch};

// Command-line values to proto values.

pub fn status_to_proto(status: StatusArg) -> MessageStatus {
    match status {
        StatusArg::Queued => MessageStatus::Queued,
        StatusArg::Sending => MessageStatus::Sending,
        StatusArg::Sent => MessageStatus::Sent,
        StatusArg::Delivered => MessageStatus::Delivered,
        StatusArg::Failed => MessageStatus::Failed,
        StatusArg::Expired => MessageStatus::Expired,
        StatusArg::Cancelled => MessageStatus::Cancelled,
        StatusArg::Uncertain => MessageStatus::Uncertain,
    }
}

pub fn priority_to_proto(priority: PriorityArg) -> Priority {
    match priority {
        PriorityArg::Urgent => Priority::Urgent,
        PriorityArg::Normal => Priority::Normal,
        PriorityArg::Bulk => Priority::Bulk,
    }
}

pub fn switch_to_bool(switch: Switch) -> bool {
    switch == Switch::On
}

pub fn timestamp_from(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        // Always below 2e9, because chrono keeps leap seconds in 1_000_000_000..2_000_000_000.
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

// Proto values to names and times.

/// Returns `None` for an unset timestamp or one outside chrono's range.
pub fn time_of(timestamp: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    let timestamp = timestamp?;
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

fn short_name(full_name: &str, prefix: &str) -> String {
    full_name.strip_prefix(prefix).unwrap_or(full_name).to_ascii_lowercase()
}

/// Returns the short lower-case name of a proto enum value, or `None` when this build does not know the value.
fn enum_name<E: TryFrom<i32>>(value: i32, full_name: fn(&E) -> &'static str, prefix: &str) -> Option<String> {
    let known = E::try_from(value).ok()?;
    Some(short_name(full_name(&known), prefix))
}

pub fn message_status_name(value: i32) -> Option<String> {
    enum_name(value, MessageStatus::as_str_name, "MESSAGE_STATUS_")
}

pub fn priority_name(value: i32) -> Option<String> {
    enum_name(value, Priority::as_str_name, "PRIORITY_")
}

pub fn encoding_name(value: i32) -> Option<String> {
    enum_name(value, Encoding::as_str_name, "ENCODING_")
}

pub fn password_state_name(value: i32) -> Option<String> {
    enum_name(value, PasswordState::as_str_name, "PASSWORD_STATE_")
}

/// Formats an enum for a table: its short name, or "unknown (N)".
pub fn enum_label(name: Option<String>, value: i32) -> String {
    name.unwrap_or_else(|| format!("unknown ({value})"))
}

// Proto messages to JSON.

fn enum_json(name: Option<String>, value: i32) -> Value {
    match name {
        Some(name) => Value::String(name),
        None => Value::from(value),
    }
}

pub fn time_json(timestamp: Option<&Timestamp>) -> Value {
    match time_of(timestamp) {
        Some(time) => Value::String(time.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        None => Value::Null,
    }
}

pub fn warning_json(warning: &Warning) -> Value {
    json!({ "code": warning.code, "message": warning.message })
}

fn warnings_json(warnings: &[Warning]) -> Value {
    Value::Array(warnings.iter().map(warning_json).collect())
}

pub fn queue_count_json(count: &QueueCount) -> Value {
    json!({
        "status": enum_json(message_status_name(count.status), count.status),
        "count": count.count,
    })
}

pub fn status_json(status: &Status) -> Value {
    json!({
        "version": status.version,
        "uptime_seconds": status.uptime_seconds,
        "queue_counts": status.queue_counts.iter().map(queue_count_json).collect::<Vec<_>>(),
        "warnings": warnings_json(&status.warnings),
        "password_state": enum_json(password_state_name(status.password_state), status.password_state),
        "sending_paused": status.sending_paused,
        "sending_paused_reason": status.sending_paused_reason,
        "last_upload_at": time_json(status.last_upload_at.as_ref()),
        "last_send_at": time_json(status.last_send_at.as_ref()),
        "oldest_queued_at": time_json(status.oldest_queued_at.as_ref()),
        "password_days_until_expiry": status.password_days_until_expiry,
        "update_available": status.update_available,
        "latest_version": status.latest_version,
        "update_notes": status.update_notes,
    })
}

pub fn connectivity_json(connectivity: &Connectivity) -> Value {
    json!({
        "upload_interval_minutes": connectivity.upload_interval_minutes,
        "username": connectivity.username,
        "password_set": connectivity.password_set,
        "password_set_at": time_json(connectivity.password_set_at.as_ref()),
        "password_expires_at": time_json(connectivity.password_expires_at.as_ref()),
        "days_until_expiry": connectivity.days_until_expiry,
        "auto_manage": connectivity.auto_manage,
        "password_state": enum_json(password_state_name(connectivity.password_state), connectivity.password_state),
        "last_successful_login": time_json(connectivity.last_successful_login.as_ref()),
        "last_error": connectivity.last_error,
        "next_upload_at": time_json(connectivity.next_upload_at.as_ref()),
        "max_age_days": connectivity.max_age_days,
        "smtp_server": connectivity.smtp_server,
        "imap_server": connectivity.imap_server,
        "sending_paused": connectivity.sending_paused,
        "sending_paused_reason": connectivity.sending_paused_reason,
        "warnings": warnings_json(&connectivity.warnings),
        "next_rotation_at": time_json(connectivity.next_rotation_at.as_ref()),
        "last_rotation_at": time_json(connectivity.last_rotation_at.as_ref()),
        "last_rotation_outcome": connectivity.last_rotation_outcome,
        "rotation_failures": connectivity.rotation_failures,
        "failed_sign_ins": connectivity.failed_sign_ins,
        "blocked_sign_ins": connectivity.blocked_sign_ins,
        "pending_password": connectivity.pending_password,
    })
}

pub fn update_password_json(response: &UpdatePasswordResponse) -> Value {
    json!({
        "verified": response.verified,
        "connectivity": response.connectivity.as_ref().map(connectivity_json),
    })
}

pub fn upload_report_json(report: &UploadReport) -> Value {
    json!({
        "started_at": time_json(report.started_at.as_ref()),
        "finished_at": time_json(report.finished_at.as_ref()),
        "trigger": report.trigger,
        "messages_reordered": report.messages_reordered,
        "messages_expired": report.messages_expired,
        "mail_collected": report.mail_collected,
        "failure_reports": report.failure_reports,
        "delivery_receipts": report.delivery_receipts,
        "replies": report.replies,
        "other": report.other,
        "matched": report.matched,
        "mail_moved": report.mail_moved,
        "mail_deleted": report.mail_deleted,
        "errors": report.errors,
    })
}

pub fn message_event_json(event: &MessageEvent) -> Value {
    json!({
        "at": time_json(event.at.as_ref()),
        "from_status": enum_json(message_status_name(event.from_status), event.from_status),
        "to_status": enum_json(message_status_name(event.to_status), event.to_status),
        "reason": event.reason,
    })
}

pub fn message_json(message: &Message) -> Value {
    json!({
        "id": message.id,
        "status": enum_json(message_status_name(message.status), message.status),
        "to": message.to,
        "gateway_address": message.gateway_address,
        "text": message.text,
        "priority": enum_json(priority_name(message.priority), message.priority),
        "encoding": enum_json(encoding_name(message.encoding), message.encoding),
        "parts": message.parts,
        "length": message.length,
        "created_at": time_json(message.created_at.as_ref()),
        "send_after": time_json(message.send_after.as_ref()),
        "expires_at": time_json(message.expires_at.as_ref()),
        "sent_at": time_json(message.sent_at.as_ref()),
        "updated_at": time_json(message.updated_at.as_ref()),
        "idempotency_key": message.idempotency_key,
        "client_reference": message.client_reference,
        "smtp_message_id": message.smtp_message_id,
        "attempts": message.attempts,
        "next_attempt_at": time_json(message.next_attempt_at.as_ref()),
        "status_reason": message.status_reason,
        "events": message.events.iter().map(message_event_json).collect::<Vec<_>>(),
    })
}

pub fn submit_response_json(response: &SubmitMessageResponse) -> Value {
    json!({
        "message": response.message.as_ref().map(message_json),
        "duplicate": response.duplicate,
    })
}

pub fn list_messages_json(response: &ListMessagesResponse) -> Value {
    json!({
        "messages": response.messages.iter().map(message_json).collect::<Vec<_>>(),
        "next_page_token": response.next_page_token,
    })
}

pub fn reply_json(reply: &Reply) -> Value {
    json!({
        "id": reply.id,
        "from": reply.from,
        "text": reply.text,
        "received_at": time_json(reply.received_at.as_ref()),
        "message_id": reply.message_id,
        "email_message_id": reply.email_message_id,
    })
}

/// Converts an inbound email; the raw content is included as text (lossy UTF-8) when the agent sent it.
pub fn event_json(event: &Event) -> Value {
    use nhsmail_agent::proto::event::Event as Kind;
    let (kind, detail) = match &event.event {
        Some(Kind::MessageStateChanged(change)) => (
            "message_state_changed",
            json!({
                "message_id": change.message_id,
                "from_status": enum_json(message_status_name(change.from_status), change.from_status),
                "to_status": enum_json(message_status_name(change.to_status), change.to_status),
                "reason": change.reason,
                "to": change.to,
                "client_reference": change.client_reference,
            }),
        ),
        Some(Kind::ReplyReceived(reply)) => ("reply_received", reply_json(reply)),
        None => ("unknown", Value::Null),
    };
    json!({ "event_id": event.event_id, "at": time_json(event.at.as_ref()), kind: detail })
}

/// Converts an inbound email; the raw content is included as text (lossy UTF-8) when the agent sent it.
pub fn inbound_email_json(email: &InboundEmail) -> Value {
    json!({
        "id": email.id,
        "kind": email.kind,
        "from": email.from,
        "subject": email.subject,
        "received_at": time_json(email.received_at.as_ref()),
        "reason": email.reason,
        "email_message_id": email.email_message_id,
        "matched_message_id": email.matched_message_id,
        "reviewed": email.reviewed,
        "raw": if email.raw.is_empty() { Value::Null } else { Value::String(String::from_utf8_lossy(&email.raw).into_owned()) },
    })
}

pub fn list_inbound_json(response: &ListInboundForReviewResponse) -> Value {
    json!({
        "emails": response.emails.iter().map(inbound_email_json).collect::<Vec<_>>(),
        "next_page_token": response.next_page_token,
    })
}

pub fn opt_out_json(opt_out: &OptOut) -> Value {
    json!({
        "number": opt_out.number,
        "opted_out_at": time_json(opt_out.opted_out_at.as_ref()),
        "source": opt_out.source,
        "note": opt_out.note,
    })
}

pub fn list_opt_outs_json(response: &ListOptOutsResponse) -> Value {
    json!({
        "opt_outs": response.opt_outs.iter().map(opt_out_json).collect::<Vec<_>>(),
        "next_page_token": response.next_page_token,
    })
}

pub fn list_audit_events_json(response: &ListAuditEventsResponse) -> Value {
    let events = response
        .events
        .iter()
        .map(|event| {
            json!({
                "id": event.id,
                "at": time_json(event.at.as_ref()),
                "caller": event.caller,
                "role": event.role,
                "peer": event.peer,
                "action": event.action,
                "target": event.target,
                "outcome": event.outcome,
                "detail": event.detail,
            })
        })
        .collect::<Vec<_>>();
    json!({ "events": events, "next_page_token": response.next_page_token })
}

pub fn list_replies_json(response: &ListRepliesResponse) -> Value {
    json!({
        "replies": response.replies.iter().map(reply_json).collect::<Vec<_>>(),
        "next_page_token": response.next_page_token,
    })
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    fn at(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    /// 2026-12-01T09:30:00Z.
    const DEC_1_0930: i64 = 1_796_117_400;

    #[test]
    fn enum_names_are_short_lowercase() {
        assert_eq!(message_status_name(MessageStatus::Queued as i32).as_deref(), Some("queued"));
        assert_eq!(password_state_name(PasswordState::NeedsAttention as i32).as_deref(), Some("needs_attention"));
        assert_eq!(encoding_name(Encoding::Gsm7 as i32).as_deref(), Some("gsm7"));
        assert_eq!(priority_name(Priority::Bulk as i32).as_deref(), Some("bulk"));
    }

    #[test]
    fn unknown_enum_value_has_no_name() {
        assert_eq!(message_status_name(99), None);
        assert_eq!(enum_label(None, 99), "unknown (99)");
        assert_eq!(enum_json(message_status_name(99), 99), json!(99));
    }

    #[test]
    fn status_flag_values_match_proto_names() {
        for variant in StatusArg::value_variants() {
            let flag_name = variant.to_possible_value().unwrap().get_name().to_string();
            let proto_name = message_status_name(status_to_proto(*variant) as i32);
            assert_eq!(Some(flag_name), proto_name);
        }
    }

    #[test]
    fn priority_flag_values_match_proto_names() {
        for variant in PriorityArg::value_variants() {
            let flag_name = variant.to_possible_value().unwrap().get_name().to_string();
            let proto_name = priority_name(priority_to_proto(*variant) as i32);
            assert_eq!(Some(flag_name), proto_name);
        }
    }

    #[test]
    fn timestamp_round_trips_through_chrono() {
        let time = DateTime::parse_from_rfc3339("2026-12-01T09:30:00.250Z").unwrap().to_utc();
        let timestamp = timestamp_from(time);
        assert_eq!(timestamp.seconds, DEC_1_0930);
        assert_eq!(timestamp.nanos, 250_000_000);
        assert_eq!(time_of(Some(&timestamp)), Some(time));
    }

    #[test]
    fn negative_nanos_are_treated_as_unset() {
        let timestamp = Timestamp { seconds: 0, nanos: -1 };
        assert_eq!(time_of(Some(&timestamp)), None);
    }

    #[test]
    fn status_json_uses_proto_names() {
        let status = Status {
            version: "0.1.0".into(),
            uptime_seconds: 3600,
            queue_counts: vec![QueueCount { status: MessageStatus::Queued as i32, count: 12 }],
            warnings: vec![Warning {
                code: "password_expiring".into(),
                message: "The mailbox password expires in 5 days.".into(),
            }],
            password_state: PasswordState::Expiring as i32,
            sending_paused: false,
            sending_paused_reason: String::new(),
            last_upload_at: at(DEC_1_0930),
            last_send_at: None,
            oldest_queued_at: None,
            ..Status::default()
        };

        let value = status_json(&status);

        assert_eq!(value["password_state"], "expiring");
        assert_eq!(value["uptime_seconds"], 3600);
        assert_eq!(value["queue_counts"][0]["status"], "queued");
        assert_eq!(value["queue_counts"][0]["count"], 12);
        assert_eq!(value["warnings"][0]["code"], "password_expiring");
        assert_eq!(value["last_upload_at"], "2026-12-01T09:30:00Z");
        assert_eq!(value["last_send_at"], Value::Null);
    }

    #[test]
    fn connectivity_json_keeps_optional_days() {
        let mut connectivity = Connectivity {
            days_until_expiry: Some(-2),
            password_state: PasswordState::Expired as i32,
            ..Connectivity::default()
        };
        assert_eq!(connectivity_json(&connectivity)["days_until_expiry"], -2);
        assert_eq!(connectivity_json(&connectivity)["password_state"], "expired");

        connectivity.days_until_expiry = None;
        assert_eq!(connectivity_json(&connectivity)["days_until_expiry"], Value::Null);
    }

    #[test]
    fn message_json_names_every_proto_field() {
        let message = Message {
            id: "01890a5d-ac96-774b-bcce-b302099a8057".into(),
            status: MessageStatus::Sent as i32,
            to: "+447700900123".into(),
            encoding: Encoding::Ucs2 as i32,
            priority: Priority::Urgent as i32,
            parts: 2,
            sent_at: at(DEC_1_0930),
            events: vec![MessageEvent {
                at: at(DEC_1_0930),
                from_status: MessageStatus::Unspecified as i32,
                to_status: MessageStatus::Queued as i32,
                reason: "submitted".into(),
            }],
            ..Message::default()
        };

        let value = message_json(&message);
        let fields: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();

        assert_eq!(fields.len(), 21, "{fields:?}");
        assert_eq!(value["status"], "sent");
        assert_eq!(value["encoding"], "ucs2");
        assert_eq!(value["priority"], "urgent");
        assert_eq!(value["sent_at"], "2026-12-01T09:30:00Z");
        assert_eq!(value["events"][0]["from_status"], "unspecified");
        assert_eq!(value["events"][0]["to_status"], "queued");
    }

    #[test]
    fn upload_report_json_lists_errors() {
        let report = UploadReport {
            trigger: "manual".into(),
            errors: vec!["imap login failed".into()],
            ..UploadReport::default()
        };
        let value = upload_report_json(&report);
        assert_eq!(value["trigger"], "manual");
        assert_eq!(value["errors"][0], "imap login failed");
        assert_eq!(value["started_at"], Value::Null);
    }
}
