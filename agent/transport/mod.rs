//! SMTP out and IMAP in, protocol only, with every failure classified so the caller knows
//! whether to retry, fail the message, hold it as uncertain or close the sending gate.
//! [`http`] runs the one-shot HTTP/1.1 requests to the token endpoint, the password change
//! endpoint and the update feed.
//!
//! This module owns the settings both protocols share: where the server is ([`Endpoint`]), how
//! the connection is secured ([`Security`], [`TlsSettings`]) and who signs in ([`Credentials`]).
//! An unencrypted connection is allowed only to a loopback host.

pub(crate) mod http;
pub mod imap;
pub mod smtp;
pub(crate) mod tls;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::secret::Secret;

/// The protection of the connection to a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain TCP, then the protocol's STARTTLS command before anything else is sent.
    StartTls,
    /// TLS from the first byte (SMTP submission on 465, IMAP on 993).
    Tls,
    /// No encryption at all; allowed only when the host is a loopback address.
    Plain,
}

impl FromStr for Security {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "starttls" => Ok(Self::StartTls),
            "tls" => Ok(Self::Tls),
            "plain" => Ok(Self::Plain),
            _ => Err(ConfigError::InvalidSecurity { value: value.to_owned() }),
        }
    }
}

impl fmt::Display for Security {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::StartTls => "starttls",
            Self::Tls => "tls",
            Self::Plain => "plain",
        })
    }
}

/// A server address and how to secure the connection to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
}

impl Endpoint {
    /// Checks that the endpoint may be used: [`Security::Plain`] only with a loopback host.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.host.trim().is_empty() {
            return Err(ConfigError::MissingHost);
        }
        if self.security == Security::Plain && !is_loopback_host(&self.host) {
            return Err(ConfigError::PlainNotLoopback { host: self.host.clone() });
        }
        Ok(())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(formatter, "[{}]:{}", self.host, self.port)
        } else {
            write!(formatter, "{}:{}", self.host, self.port)
        }
    }
}

/// Certificates trusted for TLS, in addition to the system's root certificates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// A PEM file of extra CA certificates, for example a private CA in a test lab.
    pub extra_ca_file: Option<PathBuf>,
}

/// What proves the account's identity to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// The mailbox password: SMTP AUTH PLAIN or LOGIN, IMAP LOGIN.
    Password,
    /// An OAuth 2.0 access token: the XOAUTH2 mechanism of SMTP AUTH and IMAP AUTHENTICATE.
    AccessToken,
}

/// The mailbox account and its password or access token, used for both SMTP and IMAP.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub secret: Secret,
    pub kind: SecretKind,
}

impl Credentials {
    pub fn password(username: impl Into<String>, password: Secret) -> Self {
        Self { username: username.into(), secret: password, kind: SecretKind::Password }
    }

    pub fn access_token(username: impl Into<String>, token: Secret) -> Self {
        Self { username: username.into(), secret: token, kind: SecretKind::AccessToken }
    }
}

/// A setting that makes a connection impossible or unsafe; fixing it needs a person.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing server host")]
    MissingHost,

    #[error(
        "unencrypted connection to {host} rejected: security \"plain\" is allowed only for a \
         loopback host; use \"starttls\" or \"tls\""
    )]
    PlainNotLoopback { host: String },

    #[error("invalid security {value:?}: expected \"starttls\", \"tls\" or \"plain\"")]
    InvalidSecurity { value: String },

    #[error("invalid server name {host:?} for tls")]
    InvalidServerName { host: String },

    #[error("cannot read extra ca file {}: {source}", path.display())]
    CaFileUnreadable { path: PathBuf, source: std::io::Error },

    #[error("invalid pem in extra ca file {}: {reason}", path.display())]
    CaFileInvalid { path: PathBuf, reason: String },

    #[error("extra ca file {} contains no certificate", path.display())]
    CaFileEmpty { path: PathBuf },

    #[error("tls setup failed: {reason}")]
    TlsSetup { reason: String },

    #[error("invalid auth mechanism {value:?}: expected \"plain\" or \"login\"")]
    InvalidAuthMechanism { value: String },

    #[error("invalid {name}: {reason}")]
    InvalidSetting { name: &'static str, reason: &'static str },
}

/// Returns whether `host` is `localhost` or a loopback address (`127.0.0.0/8`, `::1`).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }

    let bare = host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(address)) => address.is_loopback(),
        Ok(IpAddr::V6(address)) => address.is_loopback() || address.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str, security: Security) -> Endpoint {
        Endpoint { host: host.to_owned(), port: 2525, security }
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in
            ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "::ffff:127.0.0.1", "localhost", "LocalHost", "localhost."]
        {
            assert!(is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn remote_hosts_are_not_loopback() {
        for host in
            ["128.0.0.1", "10.0.0.1", "0.0.0.0", "::", "send.nhs.net", "localhost.example.org", "mylocalhost", ""]
        {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn plain_allowed_on_loopback() {
        assert!(endpoint("127.0.0.1", Security::Plain).validate().is_ok());
    }

    #[test]
    fn plain_rejected_for_remote_host() {
        let error = endpoint("smtp.example.org", Security::Plain).validate().unwrap_err();

        assert!(matches!(error, ConfigError::PlainNotLoopback { .. }));
        assert!(error.to_string().contains("smtp.example.org"), "{error}");
    }

    #[test]
    fn tls_allowed_for_remote_host() {
        assert!(endpoint("smtp.example.org", Security::Tls).validate().is_ok());
        assert!(endpoint("smtp.example.org", Security::StartTls).validate().is_ok());
    }

    #[test]
    fn empty_host_is_rejected() {
        let error = endpoint(" ", Security::Tls).validate().unwrap_err();

        assert!(matches!(error, ConfigError::MissingHost));
    }

    #[test]
    fn security_parses_each_name() {
        assert_eq!("starttls".parse::<Security>().unwrap(), Security::StartTls);
        assert_eq!("tls".parse::<Security>().unwrap(), Security::Tls);
        assert_eq!("plain".parse::<Security>().unwrap(), Security::Plain);
        assert_eq!("STARTTLS".parse::<Security>().unwrap(), Security::StartTls);
    }

    #[test]
    fn security_rejects_unknown_name() {
        let error = "ssl".parse::<Security>().unwrap_err();

        assert!(error.to_string().contains("\"ssl\""), "{error}");
    }

    #[test]
    fn security_display_round_trips() {
        for security in [Security::StartTls, Security::Tls, Security::Plain] {
            assert_eq!(security.to_string().parse::<Security>().unwrap(), security);
        }
    }

    #[test]
    fn credentials_debug_hides_password() {
        let credentials = Credentials::password("practice@example.org", Secret::new("Invented-Test-Passw0rd"));

        let debug = format!("{credentials:?}");

        assert!(!debug.contains("Invented-Test-Passw0rd"), "{debug}");
    }
}
