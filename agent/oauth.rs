//! An OAuth 2.0 client for the token endpoint. It runs the resource owner password grant (RFC 6749 section 4.3) and
//! the refresh grant (section 6), as Microsoft Entra ID serves them to applications that sign in to Exchange
//! Online's SMTP and IMAP with XOAUTH2.
//!
//! Each request is one form-encoded HTTP/1.1 POST on a new connection, over TLS or, for a loopback host only, plain
//! HTTP, with one timeout over connect, handshake, request and response. Failures are classified by
//! [`OAuthError::kind`]: the credentials were rejected, the endpoint failed for now, or the settings are wrong.
//! Neither the password nor a token appears in an error, a log line or `Debug` output.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use hyper::StatusCode;
use hyper::header::{ACCEPT, CONTENT_TYPE};
use serde::Deserialize;
use url::Url;

use crate::secret::Secret;
use crate::transport::http::{HttpEndpoint, HttpError};
use crate::transport::{ConfigError, TlsSettings};

/// The scope that grants IMAP and SMTP access to Exchange Online, plus a refresh token. It names a resource; the
/// agent never contacts that host.
pub const DEFAULT_SCOPE: &str = "https://outlook.office365.com/.default offline_access";

/// The largest response body read from the token endpoint. Entra ID's responses are a few KiB.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The lifetime assumed when a response has no `expires_in`. It is short, so a wrong guess costs one early renewal.
const ASSUMED_LIFETIME: Duration = Duration::from_secs(300);
/// How long before expiry a token is renewed, at most; never more than a fifth of its lifetime.
const RENEW_BEFORE: Duration = Duration::from_secs(120);

/// OAuth error codes (RFC 6749 section 5.2) that blame the request or the client registration rather than the
/// user's credentials.
const CLIENT_ERRORS: &[&str] =
    &["invalid_request", "invalid_client", "unauthorized_client", "unsupported_grant_type", "invalid_scope"];

/// The token endpoint and the client the agent requests tokens as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthSettings {
    pub token_url: Url,
    /// The application (client) ID registered for the agent; public, not a secret.
    pub client_id: String,
    /// Space-separated scopes requested with the password grant.
    pub scope: String,
}

/// The grant a request used, for messages and for the caller's next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    Password,
    RefreshToken,
}

impl fmt::Display for Grant {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Password => "password grant",
            Self::RefreshToken => "refresh grant",
        })
    }
}

/// The tokens one grant returned.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub access_token: Secret,
    /// `None` when the server issued none. The cache keeps the previous one after a refresh grant without one.
    pub refresh_token: Option<Secret>,
    /// When the access token expires, on this process's monotonic clock, counted from when the request was sent.
    pub expires_at: Instant,
    renew_at: Instant,
}

impl Tokens {
    /// Builds tokens that expire `lifetime` after `issued_at`.
    pub fn new(access_token: Secret, refresh_token: Option<Secret>, issued_at: Instant, lifetime: Duration) -> Self {
        let renew_before = RENEW_BEFORE.min(lifetime / 5);
        Self {
            access_token,
            refresh_token,
            expires_at: issued_at + lifetime,
            renew_at: issued_at + lifetime - renew_before,
        }
    }

    /// Returns whether the access token is close enough to its expiry to be renewed before use.
    pub fn needs_renewal(&self, now: Instant) -> bool {
        now >= self.renew_at
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires_at
    }
}

/// The classification of a failed grant, named for the caller's next action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OAuthErrorKind {
    /// The server rejected the grant's credentials. After a password grant the password must never be used again.
    /// After a refresh grant only the refresh token is bad, so the next step is one password grant.
    Rejected,
    /// The network or the endpoint failed for now; try again later.
    Transient,
    /// The settings are wrong or the endpoint does not speak OAuth 2.0 as expected; a person must fix them.
    Config,
}

/// A failed grant, classified by [`OAuthError::kind`]. No variant contains the password or a token.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("cannot connect to the token endpoint {server}: {source}")]
    Connect { server: String, source: std::io::Error },

    #[error("tls handshake with the token endpoint {server} failed: {source}")]
    TlsHandshake { server: String, source: std::io::Error },

    #[error("http exchange with the token endpoint {server} failed: {source}")]
    Http { server: String, source: hyper::Error },

    #[error("the token endpoint {server} did not respond within {} ms", after.as_millis())]
    Timeout { server: String, after: Duration },

    #[error("the token endpoint {server} rejected the {grant}: {}", detail(error, description))]
    Rejected { server: String, grant: Grant, status: u16, error: String, description: String },

    #[error(
        "the token endpoint {server} rejected the {grant} as misconfigured: {}; check [nhsmail] client_id, scope and \
         token_url",
        detail(error, description)
    )]
    Misconfigured { server: String, grant: Grant, status: u16, error: String, description: String },

    #[error("the token endpoint {server} returned HTTP {status} to the {grant}")]
    Status { server: String, grant: Grant, status: u16 },

    #[error("invalid response from the token endpoint {server}: {reason}")]
    InvalidResponse { server: String, reason: String },
}

fn detail(error: &str, description: &str) -> String {
    if description.is_empty() { error.to_owned() } else { format!("{error} ({description})") }
}

impl OAuthError {
    /// Classifies the failure; see [`OAuthErrorKind`].
    pub fn kind(&self) -> OAuthErrorKind {
        match self {
            Self::Rejected { .. } => OAuthErrorKind::Rejected,
            Self::Connect { .. } | Self::TlsHandshake { .. } | Self::Http { .. } | Self::Timeout { .. } => {
                OAuthErrorKind::Transient
            }
            Self::Status { status, .. } if is_transient_status(*status) => OAuthErrorKind::Transient,
            Self::Config(_) | Self::Misconfigured { .. } | Self::Status { .. } | Self::InvalidResponse { .. } => {
                OAuthErrorKind::Config
            }
        }
    }
}

/// 408 Request Timeout, 429 Too Many Requests and every 5xx are temporary failures of the server.
fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// Requests tokens from one token endpoint. It keeps no tokens; the caller caches them.
pub struct OAuthClient {
    settings: OAuthSettings,
    endpoint: HttpEndpoint,
    timeout: Duration,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("OAuthClient")
            .field("token_url", &self.settings.token_url.as_str())
            .field("client_id", &self.settings.client_id)
            .field("scope", &self.settings.scope)
            .finish_non_exhaustive()
    }
}

impl OAuthClient {
    /// Checks the URL and loads the trusted certificates. Does not connect.
    ///
    /// `tls` adds CA certificates to the system's for an https:// URL. Plain http:// is accepted only for a loopback
    /// host, as for mail.
    pub fn new(settings: OAuthSettings, tls: &TlsSettings, timeout: Duration) -> Result<Self, OAuthError> {
        if timeout.is_zero() {
            return Err(
                ConfigError::InvalidSetting { name: "token timeout", reason: "must be greater than zero" }.into()
            );
        }
        let endpoint = HttpEndpoint::new(&settings.token_url, tls, "token_url")?;
        Ok(Self { settings, endpoint, timeout })
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    /// Signs in with the username and password and returns the tokens.
    pub async fn password_grant(&self, username: &str, password: &Secret) -> Result<Tokens, OAuthError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "password")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("scope", &self.settings.scope)
            .append_pair("username", username)
            .append_pair("password", password.expose())
            .finish();
        self.request(Grant::Password, form).await
    }

    /// Exchanges a refresh token for new tokens.
    pub async fn refresh_grant(&self, refresh_token: &Secret) -> Result<Tokens, OAuthError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("scope", &self.settings.scope)
            .append_pair("refresh_token", refresh_token.expose())
            .finish();
        self.request(Grant::RefreshToken, form).await
    }

    /// Posts the form and reads the response, over TLS if the URL is https://.
    async fn request(&self, grant: Grant, form: String) -> Result<Tokens, OAuthError> {
        let headers = [(CONTENT_TYPE, "application/x-www-form-urlencoded"), (ACCEPT, "application/json")];
        let request = self.endpoint.request(Method::POST, &headers, Bytes::from(form))?;
        let sent_at = Instant::now();
        let response = self.endpoint.send(request, MAX_RESPONSE_BYTES, self.timeout).await.map_err(transport_error)?;
        read_response(self.endpoint.label(), grant, response.status, &response.body, sent_at)
    }
}

/// Converts a failed request into the token endpoint's wording. A body that cannot be read is an invalid response.
fn transport_error(error: HttpError) -> OAuthError {
    let body_error = |server, reason| OAuthError::InvalidResponse { server, reason };
    match error {
        HttpError::Connect { server, source } => OAuthError::Connect { server, source },
        HttpError::TlsHandshake { server, source } => OAuthError::TlsHandshake { server, source },
        HttpError::Http { server, source } => OAuthError::Http { server, source },
        HttpError::Timeout { server, after } => OAuthError::Timeout { server, after },
        HttpError::BodyTooLarge { server, limit } => {
            body_error(server, format!("the body is larger than {limit} bytes"))
        }
        HttpError::BodyUnreadable { server, source } => {
            body_error(server, format!("cannot read the body of at most {MAX_RESPONSE_BYTES} bytes: {source}"))
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    /// A number of seconds; some servers send it as a string.
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    error_description: Option<String>,
}

/// Turns the endpoint's response into tokens or a classified error. The body is never copied into an error, because
/// a successful response contains tokens.
fn read_response(
    server: &str,
    grant: Grant,
    status: StatusCode,
    body: &[u8],
    sent_at: Instant,
) -> Result<Tokens, OAuthError> {
    let invalid = |reason: String| OAuthError::InvalidResponse { server: server.to_owned(), reason };
    let code = status.as_u16();

    if status.is_success() {
        let response: TokenResponse =
            serde_json::from_slice(body).map_err(|_| invalid(format!("HTTP {code} with a body that is not JSON")))?;
        let access_token = response
            .access_token
            .filter(|token| !token.is_empty())
            .ok_or_else(|| invalid("the response has no access_token".into()))?;
        if let Some(token_type) = &response.token_type
            && !token_type.eq_ignore_ascii_case("bearer")
        {
            return Err(invalid(format!("token_type {token_type:?} is not Bearer")));
        }
        let lifetime = match &response.expires_in {
            None => ASSUMED_LIFETIME,
            Some(value) => {
                parse_seconds(value).ok_or_else(|| invalid("expires_in is not a number of seconds".into()))?
            }
        };
        let refresh_token = response.refresh_token.filter(|token| !token.is_empty()).map(Secret::new);
        return Ok(Tokens::new(Secret::new(access_token), refresh_token, sent_at, lifetime));
    }

    let parsed: Option<ErrorResponse> = serde_json::from_slice(body).ok();
    if code == 400 || code == 401 {
        // A 400 or 401 that names no client fault is taken as a rejection of the credentials, so a response that
        // cannot be classified never leads to the password being tried again.
        let (error, description) = match parsed {
            Some(parsed) => (parsed.error, first_line(parsed.error_description.as_deref().unwrap_or_default())),
            None => (format!("HTTP {code}"), String::new()),
        };
        let server = server.to_owned();
        if CLIENT_ERRORS.contains(&error.as_str()) {
            return Err(OAuthError::Misconfigured { server, grant, status: code, error, description });
        }
        return Err(OAuthError::Rejected { server, grant, status: code, error, description });
    }
    Err(OAuthError::Status { server: server.to_owned(), grant, status: code })
}

fn parse_seconds(value: &serde_json::Value) -> Option<Duration> {
    let seconds = match value {
        serde_json::Value::Number(number) => number.as_u64()?,
        serde_json::Value::String(text) => text.trim().parse().ok()?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

/// Keeps the first line of an error description, at most 200 characters: Entra ID appends trace and correlation
/// IDs on later lines.
fn first_line(description: &str) -> String {
    let line = description.lines().next().unwrap_or_default().trim();
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests;
