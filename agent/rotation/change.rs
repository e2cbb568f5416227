//! The client for the password change endpoint, in the shape of Microsoft Graph's `POST /me/changePassword`: a JSON
//! body with `currentPassword` and `newPassword`, authorised by an access token; success is 204 No Content.
//!
//! The outcome is classified for the write-ahead rotation. The candidate can be refused (the account's rules or
//! history), the current password rejected, or the result left unknown: a timeout or a dropped connection may
//! come after the server applied the change, so only a sign-in can tell.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use url::Url;

use crate::secret::Secret;
use crate::transport::http::HttpEndpoint;
use crate::transport::{ConfigError, TlsSettings};

/// The largest response body read from the change endpoint, the same limit as for the token endpoint.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The outcome of a change request that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The server refused the new password, for example for its length or because it was used before. The
    /// current password still applies.
    #[error("the change endpoint refused the new password: {0}")]
    Refused(String),
    /// The server rejected the current password or the access token; nothing changed.
    #[error("the change endpoint rejected the current password or the access token: {0}")]
    CurrentRejected(String),
    /// The request may or may not have been applied.
    #[error("the result of the password change is unknown: {0}")]
    Unknown(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Posts password changes to one endpoint.
pub struct PasswordChanger {
    endpoint: HttpEndpoint,
    timeout: Duration,
}

impl PasswordChanger {
    /// Checks the URL and loads the trusted certificates. Does not connect.
    pub fn new(url: Url, tls: &TlsSettings, timeout: Duration) -> Result<PasswordChanger, ConfigError> {
        let endpoint = HttpEndpoint::new(&url, tls, "[password] change_url")?;
        Ok(PasswordChanger { endpoint, timeout })
    }

    pub fn url(&self) -> &Url {
        self.endpoint.url()
    }

    /// Asks the server to change the password from `current` to `new`. Any failure to get a response is
    /// [`ChangeError::Unknown`], because the server may have applied the change before the failure.
    pub async fn change(&self, access_token: &Secret, current: &Secret, new: &Secret) -> Result<(), ChangeError> {
        let body = serde_json::json!({ "currentPassword": current.expose(), "newPassword": new.expose() }).to_string();
        let authorization = format!("Bearer {}", access_token.expose());
        let headers =
            [(AUTHORIZATION, authorization.as_str()), (CONTENT_TYPE, "application/json"), (ACCEPT, "application/json")];
        let request = self.endpoint.request(Method::POST, &headers, Bytes::from(body))?;
        let response = self
            .endpoint
            .send(request, MAX_RESPONSE_BYTES, self.timeout)
            .await
            .map_err(|error| ChangeError::Unknown(error.to_string()))?;

        let code = response.status.as_u16();
        if response.status.is_success() {
            return Ok(());
        }
        let message = graph_message(&response.body).unwrap_or_else(|| format!("HTTP {code}"));
        match code {
            400 => Err(ChangeError::Refused(message)),
            401 | 403 => Err(ChangeError::CurrentRejected(message)),
            _ => Err(ChangeError::Unknown(format!("{} returned {message}", self.endpoint.label()))),
        }
    }
}

/// Returns the `error.message` of a Graph error body, cut to one line.
fn graph_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value.get("error")?.get("message")?.as_str()?;
    Some(message.lines().next().unwrap_or_default().chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_message_reads_error_message() {
        let body = br#"{"error":{"code":"Request_BadRequest","message":"The password was used recently.\nMore."}}"#;
        assert_eq!(graph_message(body).as_deref(), Some("The password was used recently."));
    }

    #[test]
    fn graph_message_ignores_other_bodies() {
        assert_eq!(graph_message(b"<html>busy</html>"), None);
    }

    #[test]
    fn plain_http_needs_loopback() {
        let url = Url::parse("http://graph.example.org/v1.0/me/changePassword").unwrap();
        let error = PasswordChanger::new(url, &TlsSettings::default(), Duration::from_secs(5)).err().unwrap();
        assert!(error.to_string().contains("[password] change_url"), "{error}");
    }
}
