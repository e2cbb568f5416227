//! IMAP failures, classified so the caller knows whether to retry later, close the sending gate
//! or report a server that does not speak IMAP as expected.

use std::time::Duration;

use crate::transport::ConfigError;

/// The classification of an IMAP failure, named for the caller's next action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImapErrorKind {
    /// The network or the server failed for now; try again at the next cycle.
    Transient,
    /// The server rejected the login; never try this password again.
    Auth,
    /// The server sent a response that IMAP does not allow here, or rejected a command.
    Protocol,
    /// The settings are wrong; a person must fix them.
    Config,
}

/// A failed IMAP operation. No variant contains the password.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("imap connection to {server} failed: {source}")]
    Connect { server: String, source: std::io::Error },

    #[error("tls handshake with imap server {server} failed: {source}")]
    TlsHandshake { server: String, source: std::io::Error },

    #[error("imap server {server} refused the session: {greeting}")]
    Greeting { server: String, greeting: String },

    #[error("imap server {server} refused starttls: {response}")]
    StartTlsRefused { server: String, response: String },

    #[error("imap server {server} sent data after accepting starttls and before the tls handshake")]
    StartTlsInjection { server: String },

    #[error("imap server {server} rejected the login for {username}: {response}")]
    LoginRejected { server: String, username: String, response: String },

    #[error("imap server {server} cannot log in {username} for now: {response}")]
    LoginUnavailable { server: String, username: String, response: String },

    #[error("imap {command} on {server} timed out after {} ms", after.as_millis())]
    Timeout { server: String, command: &'static str, after: Duration },

    #[error("imap {command} on {server} failed: {source}")]
    Command { server: String, command: &'static str, source: async_imap::error::Error },

    #[error("imap mailbox {mailbox:?} on {server} reported no UIDVALIDITY")]
    MissingUidValidity { server: String, mailbox: String },

    #[error("imap session with {server} is unusable after an earlier network error; connect again")]
    SessionBroken { server: String },
}

impl ImapError {
    /// Classifies the failure; see [`ImapErrorKind`].
    pub fn kind(&self) -> ImapErrorKind {
        match self {
            Self::Config(_) => ImapErrorKind::Config,
            Self::Connect { .. }
            | Self::TlsHandshake { .. }
            | Self::Greeting { .. }
            | Self::LoginUnavailable { .. }
            | Self::Timeout { .. }
            | Self::SessionBroken { .. } => ImapErrorKind::Transient,
            Self::LoginRejected { .. } => ImapErrorKind::Auth,
            Self::StartTlsRefused { .. } | Self::StartTlsInjection { .. } | Self::MissingUidValidity { .. } => {
                ImapErrorKind::Protocol
            }
            Self::Command { source, .. } => classify_command_error(source),
        }
    }
}

/// Classifies a command error: a lost connection is transient, while a NO, a BAD or an
/// unparsable response is a protocol error.
fn classify_command_error(error: &async_imap::error::Error) -> ImapErrorKind {
    use async_imap::error::Error;
    match error {
        Error::Io(_) | Error::ConnectionLost => ImapErrorKind::Transient,
        _ => ImapErrorKind::Protocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command_error(source: async_imap::error::Error) -> ImapError {
        ImapError::Command { server: "imap.example.org:993".to_owned(), command: "SELECT", source }
    }

    #[test]
    fn lost_connection_is_transient() {
        let error = command_error(async_imap::error::Error::ConnectionLost);

        assert_eq!(error.kind(), ImapErrorKind::Transient);
    }

    #[test]
    fn io_error_is_transient() {
        let source = std::io::Error::from(std::io::ErrorKind::ConnectionReset);

        let error = command_error(async_imap::error::Error::Io(source));

        assert_eq!(error.kind(), ImapErrorKind::Transient);
    }

    #[test]
    fn no_reply_is_protocol() {
        let error = command_error(async_imap::error::Error::No("Mailbox doesn't exist".to_owned()));

        assert_eq!(error.kind(), ImapErrorKind::Protocol);
    }

    #[test]
    fn login_rejected_is_auth() {
        let error = ImapError::LoginRejected {
            server: "imap.example.org:993".to_owned(),
            username: "practice@example.org".to_owned(),
            response: "[AUTHENTICATIONFAILED] Authentication failed.".to_owned(),
        };

        assert_eq!(error.kind(), ImapErrorKind::Auth);
        assert!(error.to_string().contains("practice@example.org"), "{error}");
    }
}
