//! SMTP failures, each tied to the step that failed so the caller can tell a message that was
//! never handed over (retry) from one that may have been (uncertain).

use std::fmt;
use std::time::Duration;

use crate::transport::ConfigError;

/// The classification of a failed send, named for the caller's next action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpErrorKind {
    /// Nothing was handed over; send again later.
    Transient,
    /// The server refused this message for good; do not send it again.
    Permanent,
    /// The server refused the credentials or offers no usable AUTH; close the sending gate and
    /// never try this password again.
    Auth,
    /// The message data was written but no final reply arrived: the server may have the message.
    /// Never resend it blindly.
    Uncertain,
    /// The settings are wrong; a person must fix them.
    Config,
}

/// The step of the SMTP dialogue that was running when the failure happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// TCP connect, implicit TLS handshake, greeting and EHLO.
    Connect,
    /// STARTTLS, the handshake and the second EHLO.
    StartTls,
    Auth,
    /// `MAIL FROM`, which names the sender.
    Mail,
    /// `RCPT TO`, which names the recipient.
    Rcpt,
    /// The `DATA` command, before any message data is written.
    Data,
    /// Writing the message data and its final `.`, then reading the server's reply.
    Message,
}

impl fmt::Display for Phase {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Connect => "the connection",
            Self::StartTls => "starttls",
            Self::Auth => "authentication",
            Self::Mail => "the sender (MAIL FROM)",
            Self::Rcpt => "the recipient (RCPT TO)",
            Self::Data => "DATA",
            Self::Message => "the message data",
        })
    }
}

/// A reply line from the server, for example `550 5.1.1 unknown recipient`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl fmt::Display for Reply {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            write!(formatter, "{}", self.code)
        } else {
            write!(formatter, "{} {}", self.code, self.text)
        }
    }
}

/// A failed SMTP send or login, classified by [`SmtpError::kind`]. No variant contains the
/// password.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("invalid sender address {address:?}: {reason}")]
    InvalidSender { address: String, reason: String },

    #[error("invalid recipient address {address:?}: {reason}")]
    InvalidRecipient { address: String, reason: String },

    #[error("cannot build the email: {reason}")]
    InvalidEmail { reason: String },

    #[error("smtp server {server} rejected {phase}: {reply}")]
    Rejected { server: String, phase: Phase, reply: Reply },

    #[error("smtp server {server} sent an unexpected reply to {phase}: {reply}")]
    UnexpectedReply { server: String, phase: Phase, reply: Reply },

    #[error("smtp connection to {server} failed during {phase}: {detail}")]
    Connection { server: String, phase: Phase, detail: String },

    #[error("smtp server {server} did not reply during {phase} within {} ms", after.as_millis())]
    Timeout { server: String, phase: Phase, after: Duration },

    #[error("smtp server {server} does not offer starttls")]
    StartTlsUnavailable { server: String },

    #[error("smtp server {server} offers none of the configured auth mechanisms ({configured})")]
    AuthUnavailable { server: String, configured: String },

    #[error(
        "smtp credentials for {username} were rejected earlier and are not tried again; \
         set a new password"
    )]
    CredentialsRejected { username: String },

    #[error("the step before the message data failed, so nothing was sent: {0}")]
    BeforeData(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl SmtpError {
    /// Classifies the failure; see [`SmtpErrorKind`].
    pub fn kind(&self) -> SmtpErrorKind {
        match self {
            Self::Config(_) | Self::InvalidSender { .. } => SmtpErrorKind::Config,
            Self::InvalidRecipient { .. } | Self::InvalidEmail { .. } => SmtpErrorKind::Permanent,
            Self::Rejected { phase, reply, .. } => classify_reply(*phase, reply.code),
            Self::UnexpectedReply { phase, .. } | Self::Connection { phase, .. } | Self::Timeout { phase, .. } => {
                if *phase == Phase::Message {
                    SmtpErrorKind::Uncertain
                } else {
                    SmtpErrorKind::Transient
                }
            }
            Self::StartTlsUnavailable { .. } | Self::BeforeData(_) => SmtpErrorKind::Transient,
            // A server that offers no usable AUTH mechanism has not judged the password, so it is not rejected.
            Self::AuthUnavailable { .. } => SmtpErrorKind::Config,
            Self::CredentialsRejected { .. } => SmtpErrorKind::Auth,
        }
    }

    /// Returns the step that failed, when the failure happened on the network.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Self::Rejected { phase, .. }
            | Self::UnexpectedReply { phase, .. }
            | Self::Connection { phase, .. }
            | Self::Timeout { phase, .. } => Some(*phase),
            Self::StartTlsUnavailable { .. } => Some(Phase::StartTls),
            Self::AuthUnavailable { .. } => Some(Phase::Auth),
            _ => None,
        }
    }

    /// Returns the server's reply, when the failure is one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Self::Rejected { reply, .. } | Self::UnexpectedReply { reply, .. } => Some(reply),
            _ => None,
        }
    }

    /// Converts an error from lettre's connection into one tied to `phase`.
    pub(super) fn from_lettre(server: &str, phase: Phase, error: lettre::transport::smtp::Error) -> Self {
        match error.status() {
            Some(code) => {
                // lettre keeps the reply's text as the error's source.
                let text = std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default();
                Self::Rejected { server: server.to_owned(), phase, reply: Reply { code: code.into(), text } }
            }
            None => Self::Connection { server: server.to_owned(), phase, detail: error.to_string() },
        }
    }
}

/// Classifies a negative reply (4xx or 5xx) to `phase`.
///
/// At AUTH, every 5xx (530 authentication required, 534 mechanism too weak, 535 credentials
/// invalid) is [`SmtpErrorKind::Auth`], so a password is never retried in a loop that could lock
/// the account. A 454 at AUTH is RFC 4954's temporary authentication failure: the server could not
/// check the password (its authentication backend is down), so it is transient. A 530 at MAIL or RCPT means the server
/// does not consider the session authenticated, which is also `Auth` rather than a fault of the
/// message. A refusal during connect or STARTTLS concerns the server, not this message, so it is
/// transient.
pub fn classify_reply(phase: Phase, code: u16) -> SmtpErrorKind {
    let permanent = (500..600).contains(&code);
    match phase {
        Phase::Auth if permanent => SmtpErrorKind::Auth,
        Phase::Mail | Phase::Rcpt if code == 530 => SmtpErrorKind::Auth,
        Phase::Mail | Phase::Rcpt | Phase::Data | Phase::Message if permanent => SmtpErrorKind::Permanent,
        _ => SmtpErrorKind::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(phase: Phase, code: u16) -> SmtpError {
        SmtpError::Rejected {
            server: "smtp.example.org:587".to_owned(),
            phase,
            reply: Reply { code, text: "5.0.0 test reply".to_owned() },
        }
    }

    #[test]
    fn reply_codes_classify_by_phase() {
        use Phase as P;
        use SmtpErrorKind as K;
        let table = [
            (P::Connect, 421, K::Transient),
            (P::Connect, 554, K::Transient),
            (P::StartTls, 454, K::Transient),
            (P::Auth, 535, K::Auth),
            (P::Auth, 534, K::Auth),
            (P::Auth, 530, K::Auth),
            (P::Auth, 454, K::Transient),
            (P::Auth, 504, K::Auth),
            (P::Auth, 421, K::Transient),
            (P::Mail, 451, K::Transient),
            (P::Mail, 452, K::Transient),
            (P::Mail, 550, K::Permanent),
            (P::Mail, 553, K::Permanent),
            (P::Mail, 530, K::Auth),
            (P::Rcpt, 450, K::Transient),
            (P::Rcpt, 451, K::Transient),
            (P::Rcpt, 550, K::Permanent),
            (P::Rcpt, 554, K::Permanent),
            (P::Rcpt, 530, K::Auth),
            (P::Data, 451, K::Transient),
            (P::Data, 554, K::Permanent),
            (P::Message, 451, K::Transient),
            (P::Message, 552, K::Permanent),
            (P::Message, 554, K::Permanent),
        ];

        for (phase, code, expected) in table {
            assert_eq!(classify_reply(phase, code), expected, "{phase:?} {code}");
            assert_eq!(rejected(phase, code).kind(), expected, "{phase:?} {code}");
        }
    }

    #[test]
    fn lost_connection_after_data_is_uncertain() {
        let error = SmtpError::Connection {
            server: "smtp.example.org:587".to_owned(),
            phase: Phase::Message,
            detail: "connection reset".to_owned(),
        };

        assert_eq!(error.kind(), SmtpErrorKind::Uncertain);
    }

    #[test]
    fn lost_connection_before_data_is_transient() {
        for phase in [Phase::Connect, Phase::StartTls, Phase::Auth, Phase::Mail, Phase::Rcpt, Phase::Data] {
            let error = SmtpError::Connection {
                server: "smtp.example.org:587".to_owned(),
                phase,
                detail: "connection reset".to_owned(),
            };

            assert_eq!(error.kind(), SmtpErrorKind::Transient, "{phase:?}");
        }
    }

    #[test]
    fn timeout_after_data_is_uncertain() {
        let error = SmtpError::Timeout {
            server: "smtp.example.org:587".to_owned(),
            phase: Phase::Message,
            after: Duration::from_secs(30),
        };

        assert_eq!(error.kind(), SmtpErrorKind::Uncertain);
    }

    #[test]
    fn rejected_sender_says_sender() {
        let message = rejected(Phase::Mail, 550).to_string();

        assert!(message.contains("sender"), "{message}");
        assert!(message.contains("550 5.0.0 test reply"), "{message}");
    }

    #[test]
    fn rejected_recipient_names_reply() {
        let message = rejected(Phase::Rcpt, 550).to_string();

        assert_eq!(message, "smtp server smtp.example.org:587 rejected the recipient (RCPT TO): 550 5.0.0 test reply");
    }
}
