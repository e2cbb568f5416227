//! Conversions between the core's types and the generated proto types, and the one mapping from
//! [`AppError`] to a gRPC status.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use tonic::Status;

use crate::app::{AgentStatus, AppError, Connectivity, SubmitRequest, Warning};
use crate::credentials::PasswordState;
use crate::proto;
use crate::queue::{MessageStatus, Priority};
use crate::store::{
    EventRecord, FeedEvent, InboundEmail, MessageRecord, OptOut, ReplyRecord, Submission, UploadReport,
};

/// Maps every core error to its gRPC code. No wildcard arm: a new variant must be mapped here.
pub fn status_from_error(error: &AppError) -> Status {
    let message = error.to_string();
    match error {
        AppError::InvalidArgument { .. } => Status::invalid_argument(message),
        AppError::NotFound { .. } => Status::not_found(message),
        AppError::FailedPrecondition(_) => Status::failed_precondition(message),
        AppError::Unavailable(_) => Status::unavailable(message),
        AppError::DiskFull => Status::resource_exhausted(message),
        AppError::Internal(_) => Status::internal(message),
    }
}

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 }
}

/// Converts a request's timestamp, naming `field` if it is out of range.
pub fn time(field: &str, value: Timestamp) -> Result<DateTime<Utc>, AppError> {
    u32::try_from(value.nanos).ok().and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos)).ok_or_else(|| {
        AppError::InvalidArgument {
            field: field.to_string(),
            message: format!("{}s {}ns is not a valid time", value.seconds, value.nanos),
        }
    })
}

pub fn submit_request(request: proto::SubmitMessageRequest, prefix: &str) -> Result<SubmitRequest, AppError> {
    let priority = match proto::Priority::try_from(request.priority) {
        Ok(proto::Priority::Unspecified) => None,
        Ok(proto::Priority::Urgent) => Some(Priority::Urgent),
        Ok(proto::Priority::Normal) => Some(Priority::Normal),
        Ok(proto::Priority::Bulk) => Some(Priority::Bulk),
        Err(_) => {
            return Err(AppError::InvalidArgument {
                field: format!("{prefix}priority"),
                message: format!("{} is not a known priority; use URGENT, NORMAL or BULK", request.priority),
            });
        }
    };
    Ok(SubmitRequest {
        to: request.to,
        text: request.text,
        priority,
        send_after: request.send_after.map(|value| time(&format!("{prefix}send_after"), value)).transpose()?,
        expires_at: request.expires_at.map(|value| time(&format!("{prefix}expires_at"), value)).transpose()?,
        idempotency_key: request.idempotency_key,
        client_reference: request.client_reference,
    })
}

pub fn status_filter(value: i32) -> Result<Option<MessageStatus>, AppError> {
    match proto::MessageStatus::try_from(value) {
        Ok(proto::MessageStatus::Unspecified) => Ok(None),
        Ok(status) => Ok(Some(core_status(status))),
        Err(_) => {
            Err(AppError::InvalidArgument { field: "status".into(), message: format!("{value} is not a known status") })
        }
    }
}

fn core_status(status: proto::MessageStatus) -> MessageStatus {
    match status {
        proto::MessageStatus::Unspecified | proto::MessageStatus::Queued => MessageStatus::Queued,
        proto::MessageStatus::Sending => MessageStatus::Sending,
        proto::MessageStatus::Sent => MessageStatus::Sent,
        proto::MessageStatus::Delivered => MessageStatus::Delivered,
        proto::MessageStatus::Failed => MessageStatus::Failed,
        proto::MessageStatus::Expired => MessageStatus::Expired,
        proto::MessageStatus::Cancelled => MessageStatus::Cancelled,
        proto::MessageStatus::Uncertain => MessageStatus::Uncertain,
    }
}

pub fn message_status(status: MessageStatus) -> proto::MessageStatus {
    match status {
        MessageStatus::Queued => proto::MessageStatus::Queued,
        MessageStatus::Sending => proto::MessageStatus::Sending,
        MessageStatus::Sent => proto::MessageStatus::Sent,
        MessageStatus::Delivered => proto::MessageStatus::Delivered,
        MessageStatus::Failed => proto::MessageStatus::Failed,
        MessageStatus::Expired => proto::MessageStatus::Expired,
        MessageStatus::Cancelled => proto::MessageStatus::Cancelled,
        MessageStatus::Uncertain => proto::MessageStatus::Uncertain,
    }
}

fn priority(priority: Priority) -> proto::Priority {
    match priority {
        Priority::Urgent => proto::Priority::Urgent,
        Priority::Normal => proto::Priority::Normal,
        Priority::Bulk => proto::Priority::Bulk,
    }
}

fn encoding(name: &str) -> proto::Encoding {
    match name {
        "gsm7" => proto::Encoding::Gsm7,
        "ucs2" => proto::Encoding::Ucs2,
        _ => proto::Encoding::Unspecified,
    }
}

pub fn password_state(state: PasswordState) -> proto::PasswordState {
    match state {
        PasswordState::Unset => proto::PasswordState::Unset,
        PasswordState::Ok => proto::PasswordState::Ok,
        PasswordState::Expiring => proto::PasswordState::Expiring,
        PasswordState::Expired => proto::PasswordState::Expired,
        PasswordState::Rejected => proto::PasswordState::Rejected,
        PasswordState::Rotating => proto::PasswordState::Rotating,
        PasswordState::NeedsAttention => proto::PasswordState::NeedsAttention,
    }
}

fn warnings(warnings: Vec<Warning>) -> Vec<proto::Warning> {
    warnings.into_iter().map(|warning| proto::Warning { code: warning.code.into(), message: warning.message }).collect()
}

pub fn message(record: MessageRecord, events: Vec<EventRecord>) -> proto::Message {
    proto::Message {
        id: record.id,
        status: message_status(record.status) as i32,
        to: record.to_e164,
        gateway_address: record.gateway_address,
        text: record.text,
        priority: priority(record.priority) as i32,
        encoding: encoding(&record.encoding) as i32,
        parts: record.parts,
        length: record.length,
        created_at: Some(timestamp(record.created_at)),
        send_after: Some(timestamp(record.send_after)),
        expires_at: Some(timestamp(record.expires_at)),
        sent_at: record.sent_at.map(timestamp),
        updated_at: Some(timestamp(record.updated_at)),
        idempotency_key: record.idempotency_key,
        client_reference: record.client_reference,
        smtp_message_id: record.smtp_message_id.unwrap_or_default(),
        attempts: record.attempts,
        next_attempt_at: record.next_attempt_at.map(timestamp),
        status_reason: record.status_reason,
        events: events
            .into_iter()
            .map(|event| proto::MessageEvent {
                at: Some(timestamp(event.at)),
                from_status: event.from_status.map_or(proto::MessageStatus::Unspecified, message_status) as i32,
                to_status: message_status(event.to_status) as i32,
                reason: event.reason,
            })
            .collect(),
    }
}

pub fn submission(submission: Submission) -> proto::SubmitMessageResponse {
    proto::SubmitMessageResponse {
        message: Some(message(submission.message, Vec::new())),
        duplicate: submission.duplicate,
    }
}

pub fn audit_event(record: crate::store::AuditRecord) -> proto::AuditEvent {
    let event = record.event;
    proto::AuditEvent {
        id: record.id as u64,
        at: Some(timestamp(event.at)),
        caller: event.caller,
        role: event.role,
        peer: event.peer.unwrap_or_default(),
        action: event.action,
        target: event.target,
        outcome: event.outcome,
        detail: event.detail.unwrap_or_default(),
    }
}

pub fn opt_out(opt_out: OptOut) -> proto::OptOut {
    proto::OptOut {
        number: opt_out.e164,
        opted_out_at: Some(timestamp(opt_out.opted_out_at)),
        source: opt_out.source,
        note: opt_out.note,
    }
}

pub fn inbound_email(email: InboundEmail) -> proto::InboundEmail {
    proto::InboundEmail {
        id: u64::try_from(email.id).unwrap_or_default(),
        kind: email.kind,
        from: email.from,
        subject: email.subject,
        received_at: Some(timestamp(email.received_at)),
        reason: email.reason,
        email_message_id: email.email_message_id.unwrap_or_default(),
        matched_message_id: email.matched_message_id.unwrap_or_default(),
        reviewed: email.reviewed,
        raw: email.raw.unwrap_or_default(),
    }
}

pub fn event(event: FeedEvent) -> proto::Event {
    match event {
        FeedEvent::MessageChanged {
            event_id,
            at,
            message_id,
            from_status,
            to_status,
            reason,
            to_e164,
            client_reference,
        } => proto::Event {
            event_id: u64::try_from(event_id).unwrap_or_default(),
            at: Some(timestamp(at)),
            event: Some(proto::event::Event::MessageStateChanged(proto::MessageStateChanged {
                message_id,
                from_status: from_status.map_or(proto::MessageStatus::Unspecified, message_status) as i32,
                to_status: message_status(to_status) as i32,
                reason,
                to: to_e164,
                client_reference,
            })),
        },
        FeedEvent::ReplyReceived { event_id, reply: record } => proto::Event {
            event_id: u64::try_from(event_id).unwrap_or_default(),
            at: Some(timestamp(record.received_at)),
            event: Some(proto::event::Event::ReplyReceived(reply(record))),
        },
    }
}

pub fn reply(reply: ReplyRecord) -> proto::Reply {
    proto::Reply {
        id: reply.id,
        from: reply.from_e164,
        text: reply.text,
        received_at: Some(timestamp(reply.received_at)),
        message_id: reply.message_id.unwrap_or_default(),
        email_message_id: reply.email_message_id.unwrap_or_default(),
    }
}

pub fn agent_status(status: AgentStatus) -> proto::Status {
    proto::Status {
        version: status.version.into(),
        uptime_seconds: status.uptime_seconds,
        queue_counts: status
            .queue_counts
            .into_iter()
            .map(|(state, count)| proto::QueueCount { status: message_status(state) as i32, count })
            .collect(),
        warnings: warnings(status.warnings),
        password_state: password_state(status.password_state) as i32,
        sending_paused: status.sending_paused_reason.is_some(),
        sending_paused_reason: status.sending_paused_reason.unwrap_or_default(),
        last_upload_at: status.last_upload_at.map(timestamp),
        last_send_at: status.last_send_at.map(timestamp),
        oldest_queued_at: status.oldest_queued_at.map(timestamp),
        password_days_until_expiry: status
            .password_days_until_expiry
            .map(|days| days.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32),
        update_available: status.update.as_ref().is_some_and(|update| update.available),
        latest_version: status.update.as_ref().map(|update| update.latest_version.clone()).unwrap_or_default(),
        update_notes: status.update.map(|update| update.notes).unwrap_or_default(),
    }
}

pub fn connectivity(connectivity: Connectivity) -> proto::Connectivity {
    let password = connectivity.password;
    proto::Connectivity {
        upload_interval_minutes: connectivity.upload_interval_minutes,
        username: password.username.unwrap_or_default(),
        password_set: password.password_set,
        password_set_at: password.set_at.map(timestamp),
        password_expires_at: password.expires_at.map(timestamp),
        days_until_expiry: password
            .days_until_expiry
            .map(|days| days.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32),
        auto_manage: connectivity.auto_manage,
        password_state: password_state(password.state) as i32,
        last_successful_login: password.last_success_at.map(timestamp),
        last_error: password.last_error.unwrap_or_default(),
        next_upload_at: connectivity.next_upload_at.map(timestamp),
        max_age_days: connectivity.max_age_days,
        smtp_server: connectivity.smtp_server,
        imap_server: connectivity.imap_server,
        sending_paused: connectivity.sending_paused_reason.is_some(),
        sending_paused_reason: connectivity.sending_paused_reason.unwrap_or_default(),
        warnings: warnings(connectivity.warnings),
        next_rotation_at: connectivity.next_rotation_at.map(timestamp),
        last_rotation_at: password.rotation.last_at.map(timestamp),
        last_rotation_outcome: password.rotation.last_outcome.unwrap_or_default(),
        rotation_failures: password.rotation.failures,
        failed_sign_ins: password.failed_sign_ins,
        blocked_sign_ins: password.blocked_sign_ins,
        pending_password: password.pending,
    }
}

pub fn upload_report(report: UploadReport) -> proto::UploadReport {
    proto::UploadReport {
        started_at: Some(timestamp(report.started_at)),
        finished_at: Some(timestamp(report.finished_at)),
        trigger: report.trigger,
        messages_reordered: saturating_u32(report.counts.reordered),
        messages_expired: saturating_u32(report.counts.expired),
        mail_collected: saturating_u32(report.counts.collected),
        failure_reports: saturating_u32(report.counts.failure_reports),
        delivery_receipts: saturating_u32(report.counts.receipts),
        replies: saturating_u32(report.counts.replies),
        other: saturating_u32(report.counts.other),
        matched: saturating_u32(report.counts.matched),
        errors: report.errors,
        mail_moved: saturating_u32(report.counts.moved),
        mail_deleted: saturating_u32(report.counts.deleted),
    }
}

fn saturating_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn every_error_maps_to_its_code() {
        let cases = [
            (AppError::InvalidArgument { field: "to".into(), message: "x".into() }, Code::InvalidArgument),
            (AppError::NotFound { what: "message", id: "m1".into() }, Code::NotFound),
            (AppError::FailedPrecondition("x".into()), Code::FailedPrecondition),
            (AppError::Unavailable("x".into()), Code::Unavailable),
            (AppError::DiskFull, Code::ResourceExhausted),
            (AppError::Internal("x".into()), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(status_from_error(&error).code(), code, "{error}");
        }
    }

    #[test]
    fn invalid_argument_names_field() {
        let error =
            AppError::InvalidArgument { field: "messages[3].to".into(), message: "\"123\" is too short".into() };
        assert!(status_from_error(&error).message().contains("messages[3].to"));
    }

    #[test]
    fn message_status_round_trips() {
        for status in [
            MessageStatus::Queued,
            MessageStatus::Sending,
            MessageStatus::Sent,
            MessageStatus::Delivered,
            MessageStatus::Failed,
            MessageStatus::Expired,
            MessageStatus::Cancelled,
            MessageStatus::Uncertain,
        ] {
            assert_eq!(status_filter(message_status(status) as i32).unwrap(), Some(status));
        }
    }

    #[test]
    fn out_of_range_time_names_field() {
        let error = time("send_after", Timestamp { seconds: 0, nanos: -1 }).unwrap_err();
        assert!(error.to_string().contains("send_after"));
    }
}
