//! Failures of nhsmail-ctl, the exit code of each, and the mapping from gRPC status codes to messages a person can
//! act on.

use std::io;

use tonic::{Code, Status};

/// Exit codes documented in `--help`. Clap itself exits with 2 on a usage error.
pub mod exit {
    pub const AGENT_ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNREACHABLE: u8 = 3;
    pub const AUTHENTICATION: u8 = 4;
    pub const NEEDS_ATTENTION: u8 = 5;
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Local input that cannot be sent, found after clap accepted the command line.
    #[error("{0}")]
    Input(String),

    #[error("cannot read the token file {path}: {reason}; pass --token-file PATH or set NHSMAIL_TOKEN")]
    TokenFile { path: String, reason: String },

    #[error("the token from {origin} contains characters not allowed in a header; check {origin}")]
    TokenInvalid { origin: String },

    #[error("unauthenticated: the agent rejected the token; check --token-file or NHSMAIL_TOKEN")]
    Unauthenticated(#[source] AgentMessage),

    #[error(
        "permission denied: the token's role does not allow this command; use a token whose role does (see the agent \
         message below)"
    )]
    PermissionDenied(#[source] AgentMessage),

    #[error("cannot reach the agent at {url}: {reason}; {hint}")]
    Unreachable {
        url: String,
        reason: String,
        /// What to check next, which depends on the reason.
        hint: String,
        #[source]
        source: Option<BoxError>,
    },

    #[error(
        "timed out after {} waiting for the agent at {url}; the agent may still carry out the request; raise \
         --timeout to wait longer",
        seconds_text(*.seconds)
    )]
    TimedOut { url: String, seconds: u64 },

    /// An error status returned by the agent, with its message already worded for the user.
    #[error("{0}")]
    Rejected(String),

    /// A fleet command finished, and some agents need attention. Their rows give the reasons.
    #[error("{count} of {total} agents need attention")]
    NeedsAttention { count: usize, total: usize },
}

/// The message text of a `tonic::Status`, kept as the cause of an error worded for the user.
#[derive(Debug, thiserror::Error)]
#[error("agent message: {0}")]
pub struct AgentMessage(pub String);

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Input(_) => exit::USAGE,
            CtlError::TokenFile { .. }
            | CtlError::TokenInvalid { .. }
            | CtlError::Unauthenticated(_)
            | CtlError::PermissionDenied(_) => exit::AUTHENTICATION,
            CtlError::Unreachable { .. } | CtlError::TimedOut { .. } => exit::UNREACHABLE,
            CtlError::Rejected(_) => exit::AGENT_ERROR,
            CtlError::NeedsAttention { .. } => exit::NEEDS_ATTENTION,
        }
    }

    /// Builds the error for a failed connection attempt, naming the underlying TLS or I/O failure when there is
    /// one.
    pub fn unreachable(url: &str, source: BoxError) -> CtlError {
        let reason = io_reason(source.as_ref()).unwrap_or_else(|| "connection failed".to_string());
        unreachable_with_hint(url, reason, source)
    }

    /// Maps the status of a failed call to an error worded for the user.
    ///
    /// Every code is listed, so a new code in tonic fails to compile here instead of falling into a default.
    pub fn from_status(status: Status, url: &str, timeout_seconds: u64) -> CtlError {
        let message = status.message().to_string();
        let detail = |prefix: &str| {
            if message.is_empty() { prefix.to_string() } else { format!("{prefix}: {message}") }
        };

        // A status with a source was made by this client from a connection failure, never sent by the agent: a TLS
        // alert arrives as Unknown "transport error", and TLS bytes read as HTTP/2 as Internal "h2 protocol error".
        if matches!(status.code(), Code::Unknown | Code::Internal) && std::error::Error::source(&status).is_some() {
            let reason = io_reason(&status).unwrap_or_else(|| message.clone());
            return unreachable_with_hint(url, reason, Box::new(status));
        }

        match status.code() {
            Code::InvalidArgument if message.is_empty() => CtlError::Rejected("invalid argument".into()),
            Code::InvalidArgument => CtlError::Rejected(message),
            Code::NotFound => CtlError::Rejected(detail("not found")),
            Code::AlreadyExists => CtlError::Rejected(detail("already exists")),
            Code::FailedPrecondition => CtlError::Rejected(detail("failed precondition")),
            Code::OutOfRange => CtlError::Rejected(detail("out of range")),
            Code::Aborted => CtlError::Rejected(format!("{}; try again", detail("aborted"))),
            Code::ResourceExhausted => CtlError::Rejected(format!("{}; try again later", detail("resource exhausted"))),
            Code::Unimplemented => CtlError::Rejected(format!(
                "{}; the agent does not support this command, so upgrade nhsmail-agent",
                detail("unimplemented")
            )),
            Code::Internal => CtlError::Rejected(format!("{}; see the agent's log", detail("internal error"))),
            Code::DataLoss => CtlError::Rejected(format!("{}; see the agent's log", detail("data loss"))),
            Code::Unknown if is_transport_failure(&status) => {
                let reason = io_reason(&status).unwrap_or_else(|| "the connection failed".to_string());
                unreachable_with_hint(url, reason, Box::new(status))
            }
            Code::Unknown => CtlError::Rejected(detail("unknown error")),
            Code::Ok => CtlError::Rejected(detail("the agent returned a failure with status OK")),
            Code::Unauthenticated => CtlError::Unauthenticated(AgentMessage(message)),
            Code::PermissionDenied => CtlError::PermissionDenied(AgentMessage(message)),
            Code::DeadlineExceeded => CtlError::TimedOut { url: url.to_string(), seconds: timeout_seconds },
            Code::Unavailable | Code::Cancelled => {
                let reason = io_reason(&status).unwrap_or_else(|| detail(status_word(status.code())));
                unreachable_with_hint(url, reason, Box::new(status))
            }
        }
    }
}

fn seconds_text(seconds: u64) -> String {
    if seconds == 1 { "1 second".to_string() } else { format!("{seconds} seconds") }
}

fn status_word(code: Code) -> &'static str {
    if code == Code::Cancelled { "the call was cancelled" } else { "unavailable" }
}

/// Adds the hint for `reason`: TLS failures carry their own advice. A plain http:// connection that fails other
/// than by refusal may have reached an agent with TLS on.
fn unreachable_with_hint(url: &str, reason: String, source: BoxError) -> CtlError {
    let hint = if reason.starts_with("TLS") {
        "check the agent's TLS settings and this command's TLS options".to_string()
    } else if url.starts_with("http://") && reason != io::ErrorKind::ConnectionRefused.to_string() {
        "is nhsmail-agent running? If it has TLS on, use an https:// URL with --ca-file".to_string()
    } else {
        "is nhsmail-agent running?".to_string()
    };
    CtlError::Unreachable { url: url.to_string(), reason, hint, source: Some(source) }
}

/// Returns the TLS failure in the chain in words with its fix, else the kind of the first I/O error, such as
/// "connection refused".
fn io_reason(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut first_io = None;
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(tls_error) = error.downcast_ref::<rustls::Error>() {
            return Some(tls_reason(tls_error));
        }
        if let Some(io_error) = error.downcast_ref::<io::Error>() {
            // io::Error::source skips the wrapped error itself, so look inside for rustls's.
            if let Some(tls_error) = io_error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                return Some(tls_reason(tls_error));
            }
            first_io.get_or_insert_with(|| io_error.kind().to_string());
        }
        current = error.source();
    }
    first_io
}

/// Words a TLS failure for the user, with what to change.
fn tls_reason(error: &rustls::Error) -> String {
    use rustls::{AlertDescription, CertificateError, Error};
    let advice = match error {
        Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "the agent's certificate is not signed by a trusted CA; pass the CA that signed it with --ca-file"
        }
        Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "the agent's certificate has expired; renew [agent] tls_cert on the agent"
        }
        Error::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => {
            "the agent's certificate is not valid yet; check the clocks of both machines"
        }
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the agent's certificate does not name the host in --agent; use a host name the certificate lists",
        Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "the agent requires a client certificate; pass --client-cert and --client-key"
        }
        Error::AlertReceived(
            AlertDescription::BadCertificate | AlertDescription::UnknownCA | AlertDescription::CertificateUnknown,
        ) => "the agent rejected this client certificate; use one signed by the agent's [agent] tls_client_ca",
        Error::InvalidMessage(_) => "the agent does not speak TLS on this port; use an http:// URL if it has TLS off",
        _ => "",
    };
    if advice.is_empty() {
        format!("TLS handshake failed ({error})")
    } else {
        format!("TLS handshake failed ({error}): {advice}")
    }
}

/// Tells a call that failed in the connection (tonic reports it as UNKNOWN "transport error") from an UNKNOWN
/// status the agent returned.
fn is_transport_failure(status: &Status) -> bool {
    std::error::Error::source(status).is_some_and(|source| source.is::<tonic::transport::Error>())
}

/// Returns the exit code for an error: the first `CtlError` in the chain decides, and anything else counts as a
/// failure reported by the agent.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error.chain().find_map(|cause| cause.downcast_ref::<CtlError>()).map_or(exit::AGENT_ERROR, CtlError::exit_code)
}

/// Formats an error as `error: <message>` followed by one `  caused by: <cause>` line per cause. A fleet command's
/// `NeedsAttention` is a result rather than a failure, so it is printed without the `error:` prefix.
pub fn render(error: &anyhow::Error) -> String {
    if let Some(attention @ CtlError::NeedsAttention { .. }) = error.downcast_ref::<CtlError>() {
        return attention.to_string();
    }
    let mut text = format!("error: {error}");
    let mut previous = error.to_string();
    for cause in error.chain().skip(1) {
        // hyper-util repeats some causes word for word; print each run of equal causes once.
        let cause = cause.to_string();
        if cause != previous {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
        previous = cause;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:50051";

    fn mapped(code: Code, message: &str) -> CtlError {
        CtlError::from_status(Status::new(code, message), URL, 10)
    }

    #[test]
    fn status_codes_map_to_exit_codes() {
        let cases = [
            (Code::Ok, exit::AGENT_ERROR),
            (Code::Cancelled, exit::UNREACHABLE),
            (Code::Unknown, exit::AGENT_ERROR),
            (Code::InvalidArgument, exit::AGENT_ERROR),
            (Code::DeadlineExceeded, exit::UNREACHABLE),
            (Code::NotFound, exit::AGENT_ERROR),
            (Code::AlreadyExists, exit::AGENT_ERROR),
            (Code::PermissionDenied, exit::AUTHENTICATION),
            (Code::ResourceExhausted, exit::AGENT_ERROR),
            (Code::FailedPrecondition, exit::AGENT_ERROR),
            (Code::Aborted, exit::AGENT_ERROR),
            (Code::OutOfRange, exit::AGENT_ERROR),
            (Code::Unimplemented, exit::AGENT_ERROR),
            (Code::Internal, exit::AGENT_ERROR),
            (Code::Unavailable, exit::UNREACHABLE),
            (Code::DataLoss, exit::AGENT_ERROR),
            (Code::Unauthenticated, exit::AUTHENTICATION),
        ];
        for (code, expected) in cases {
            assert_eq!(mapped(code, "detail").exit_code(), expected, "{code:?}");
        }
    }

    #[test]
    fn invalid_argument_keeps_agent_message() {
        let error = mapped(Code::InvalidArgument, "to: 01632 960000 is not a UK mobile number");
        assert_eq!(error.to_string(), "to: 01632 960000 is not a UK mobile number");
    }

    #[test]
    fn not_found_prefixes_agent_message() {
        let error = mapped(Code::NotFound, "message 0190 not found");
        assert_eq!(error.to_string(), "not found: message 0190 not found");
    }

    #[test]
    fn unauthenticated_points_to_token_flag() {
        let error = anyhow::Error::new(mapped(Code::Unauthenticated, "unknown token"));
        let text = render(&error);
        assert!(text.starts_with("error: unauthenticated: the agent rejected the token; check --token-file"));
        assert!(text.contains("\n  caused by: agent message: unknown token"), "{text}");
    }

    #[test]
    fn deadline_exceeded_names_url_and_timeout() {
        let text = mapped(Code::DeadlineExceeded, "").to_string();
        assert!(text.contains(URL), "{text}");
        assert!(text.contains("10 seconds"), "{text}");
    }

    #[test]
    fn unreachable_names_io_error_kind() {
        let io_error = io::Error::from(io::ErrorKind::ConnectionRefused);
        let error = CtlError::unreachable(URL, Box::new(io_error));
        assert_eq!(
            error.to_string(),
            "cannot reach the agent at http://127.0.0.1:50051: connection refused; is nhsmail-agent running?"
        );
    }

    #[test]
    fn unknown_issuer_points_to_ca_file() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io_error = io::Error::new(io::ErrorKind::InvalidData, tls);
        let message = CtlError::unreachable("https://127.0.0.1:50051", Box::new(io_error)).to_string();
        assert!(message.contains("not signed by a trusted CA"), "{message}");
        assert!(message.contains("--ca-file"), "{message}");
    }

    #[test]
    fn certificate_required_points_to_client_cert() {
        let tls = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let io_error = io::Error::new(io::ErrorKind::InvalidData, tls);
        let message = CtlError::unreachable("https://127.0.0.1:50051", Box::new(io_error)).to_string();
        assert!(message.contains("--client-cert"), "{message}");
    }

    #[test]
    fn reset_plain_connection_suggests_https() {
        let io_error = io::Error::from(io::ErrorKind::ConnectionReset);
        let message = CtlError::unreachable(URL, Box::new(io_error)).to_string();
        assert!(message.contains("use an https:// URL"), "{message}");
    }

    #[test]
    fn exit_code_found_under_context() {
        let error = anyhow::Error::new(CtlError::Input("bad".into())).context("reading the password");
        assert_eq!(exit_code(&error), exit::USAGE);
    }

    #[test]
    fn needs_attention_has_no_error_prefix() {
        let error = anyhow::Error::new(CtlError::NeedsAttention { count: 2, total: 20 });
        assert_eq!(render(&error), "2 of 20 agents need attention");
        assert_eq!(exit_code(&error), exit::NEEDS_ATTENTION);
    }

    #[test]
    fn unclassified_error_exits_one() {
        assert_eq!(exit_code(&anyhow::anyhow!("something else")), exit::AGENT_ERROR);
    }
}
