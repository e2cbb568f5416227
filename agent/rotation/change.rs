//! The client for the password change endpoint, in the shape of Microsoft Graph's `POST /me/changePassword`: a JSON
//! body with `currentPassword` and `newPassword`, authorised by an access token; success is 204 No Content.
//!
//! The outcome is classified for the write-ahead rotation. The candidate can be refused (the account's rules or
//! history), the current password rejected, or the result left unknown: a timeout or a dropped connection may
//! come after the server applied the change, so only a sign-in can tell.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::{Host, Url};

use crate::secret::Secret;
use crate::transport::{ConfigError, TlsSettings, is_loopback_host, tls};

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
    url: Url,
    host: String,
    port: u16,
    server: String,
    /// `None` for an http:// URL.
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl PasswordChanger {
    /// Checks the URL and loads the trusted certificates. Does not connect.
    pub fn new(url: Url, tls: &TlsSettings, timeout: Duration) -> Result<PasswordChanger, ConfigError> {
        let invalid = |reason| ConfigError::InvalidSetting { name: "[password] change_url", reason };
        let host = match url.host() {
            Some(Host::Domain(name)) => name.to_owned(),
            Some(Host::Ipv4(address)) => address.to_string(),
            Some(Host::Ipv6(address)) => address.to_string(),
            None => return Err(invalid("must name a host")),
        };
        let port = url.port_or_known_default().ok_or(invalid("must name a port"))?;
        let tls = match url.scheme() {
            "https" => {
                tls::server_name(&host)?;
                Some(tls::client_config(tls)?)
            }
            "http" if is_loopback_host(&host) => None,
            "http" => return Err(invalid("plain http is allowed only for a loopback host; use https")),
            _ => return Err(invalid("must be an http:// or https:// URL")),
        };
        let server = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Ok(PasswordChanger { url, host, port, server, tls, timeout })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Asks the server to change the password from `current` to `new`.
    pub async fn change(&self, access_token: &Secret, current: &Secret, new: &Secret) -> Result<(), ChangeError> {
        let body = serde_json::json!({ "currentPassword": current.expose(), "newPassword": new.expose() }).to_string();
        let request = self.build_request(access_token, body)?;
        let (status, body) = match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(result) => result?,
            Err(_elapsed) => {
                return Err(ChangeError::Unknown(format!(
                    "{} did not respond within {} ms",
                    self.server,
                    self.timeout.as_millis()
                )));
            }
        };
        let code = status.as_u16();
        if status.is_success() {
            return Ok(());
        }
        let message = graph_message(&body).unwrap_or_else(|| format!("HTTP {code}"));
        match code {
            400 => Err(ChangeError::Refused(message)),
            401 | 403 => Err(ChangeError::CurrentRejected(message)),
            _ => Err(ChangeError::Unknown(format!("{} returned {message}", self.server))),
        }
    }

    async fn exchange(&self, request: http::Request<Full<Bytes>>) -> Result<(hyper::StatusCode, Bytes), ChangeError> {
        let unknown = |reason: String| ChangeError::Unknown(reason);
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|error| unknown(format!("cannot connect to {}: {error}", self.server)))?;
        let result = match &self.tls {
            None => crate::oauth::send(tcp, request, &self.server).await,
            Some(config) => {
                let name = tls::server_name(&self.host)?;
                let stream = TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|error| unknown(format!("tls handshake with {} failed: {error}", self.server)))?;
                crate::oauth::send(stream, request, &self.server).await
            }
        };
        result.map_err(|error| unknown(format!("http exchange with {} failed: {}", self.server, error_source(&error))))
    }

    fn build_request(&self, access_token: &Secret, body: String) -> Result<http::Request<Full<Bytes>>, ChangeError> {
        let target = match self.url.query() {
            Some(query) => format!("{}?{query}", self.url.path()),
            None => self.url.path().to_owned(),
        };
        let host = match self.url.port() {
            Some(port) => format!("{}:{port}", self.url.host_str().unwrap_or_default()),
            None => self.url.host_str().unwrap_or_default().to_owned(),
        };
        http::Request::post(target)
            .header(HOST, host)
            .header(AUTHORIZATION, format!("Bearer {}", access_token.expose()))
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("nhsmail-agent/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| {
                ConfigError::InvalidSetting {
                    name: "[password] change_url",
                    reason: "cannot be used as an HTTP request target",
                }
                .into()
            })
    }
}

/// Returns the `error.message` of a Graph error body, cut to one line.
fn graph_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value.get("error")?.get("message")?.as_str()?;
    Some(message.lines().next().unwrap_or_default().chars().take(200).collect())
}

/// Returns the underlying cause of a transport failure without the token endpoint's wording.
fn error_source(error: &crate::oauth::OAuthError) -> String {
    match std::error::Error::source(error) {
        Some(source) => source.to_string(),
        None => error.to_string(),
    }
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
