//! One-shot HTTP/1.1 requests for the agent's small HTTP clients: the OAuth 2.0 token endpoint, the password change
//! endpoint and the software update feed.
//!
//! This module owns what those clients share: checking an http:// or https:// URL, where plain http is allowed only
//! for a loopback host, and building the TLS client configuration. It also runs one request on a new connection
//! (connect, TLS handshake, HTTP/1.1 exchange, a size-limited body) under one timeout. Each caller keeps its own
//! request body, status handling and error wording. An [`HttpError`] never contains a request or response body,
//! so it cannot leak a secret.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::{Host, Url};

use super::{ConfigError, TlsSettings, is_loopback_host, tls};

/// A failed request, named for the step that failed. `server` is the endpoint's `host:port`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("cannot connect to {server}: {source}")]
    Connect { server: String, source: std::io::Error },

    #[error("tls handshake with {server} failed: {source}")]
    TlsHandshake { server: String, source: std::io::Error },

    #[error("http exchange with {server} failed: {source}")]
    Http { server: String, source: hyper::Error },

    #[error("the response body from {server} is larger than {limit} bytes")]
    BodyTooLarge { server: String, limit: usize },

    #[error("cannot read the response body from {server}: {source}")]
    BodyUnreadable { server: String, source: Box<dyn std::error::Error + Send + Sync> },

    #[error("{server} did not respond within {} ms", after.as_millis())]
    Timeout { server: String, after: Duration },
}

/// The status and the whole body of a response.
pub(crate) struct HttpResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

/// One HTTP server, checked and ready to connect to.
pub(crate) struct HttpEndpoint {
    url: Url,
    /// The configuration key the URL came from, named in configuration errors.
    key: &'static str,
    host: String,
    port: u16,
    /// `host:port`, with brackets around an IPv6 address, for messages.
    label: String,
    /// `None` for an http:// URL.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl HttpEndpoint {
    /// Checks the URL and, for https://, loads the trusted certificates. Does not connect.
    ///
    /// `tls` adds CA certificates to the system's. Plain http:// is accepted only for a loopback host, as for mail.
    pub(crate) fn new(url: &Url, tls_settings: &TlsSettings, key: &'static str) -> Result<Self, ConfigError> {
        let invalid = |reason| ConfigError::InvalidSetting { name: key, reason };
        let host = match url.host() {
            Some(Host::Domain(name)) => name.to_owned(),
            Some(Host::Ipv4(address)) => address.to_string(),
            Some(Host::Ipv6(address)) => address.to_string(),
            None => return Err(invalid("must name a host")),
        };
        let port = url.port_or_known_default().ok_or(invalid("must name a port"))?;
        let tls = match url.scheme() {
            "https" => Some((tls::client_config(tls_settings)?, tls::server_name(&host)?)),
            "http" if is_loopback_host(&host) => None,
            "http" => return Err(invalid("plain http is allowed only for a loopback host; use https")),
            _ => return Err(invalid("must be an http:// or https:// URL")),
        };
        let label = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Ok(Self { url: url.clone(), key, host, port, label, tls })
    }

    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// Returns the endpoint as `host:port`.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// Builds a request for the URL's path and query, with the `Host` and `User-Agent` headers set.
    pub(crate) fn request(
        &self,
        method: Method,
        headers: &[(HeaderName, &str)],
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ConfigError> {
        let target = match self.url.query() {
            Some(query) => format!("{}?{query}", self.url.path()),
            None => self.url.path().to_owned(),
        };
        let host = self.url.host_str().unwrap_or_default();
        let host = match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(target)
            .header(HOST, host)
            .header(USER_AGENT, concat!("nhsmail-agent/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            builder = builder.header(name, *value);
        }
        builder.body(Full::new(body)).map_err(|_| ConfigError::InvalidSetting {
            name: self.key,
            reason: "cannot be used as an HTTP request target",
        })
    }

    /// Sends `request` on a new connection and reads a body of at most `max_body` bytes, all within `timeout`.
    pub(crate) async fn send(
        &self,
        request: Request<Full<Bytes>>,
        max_body: usize,
        timeout: Duration,
    ) -> Result<HttpResponse, HttpError> {
        match tokio::time::timeout(timeout, self.connect_and_send(request, max_body)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(HttpError::Timeout { server: self.label.clone(), after: timeout }),
        }
    }

    async fn connect_and_send(
        &self,
        request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<HttpResponse, HttpError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| HttpError::Connect { server: self.label.clone(), source })?;
        let Some((config, name)) = &self.tls else {
            return exchange(tcp, request, max_body, &self.label).await;
        };
        let stream = TlsConnector::from(Arc::clone(config))
            .connect(name.clone(), tcp)
            .await
            .map_err(|source| HttpError::TlsHandshake { server: self.label.clone(), source })?;
        exchange(stream, request, max_body, &self.label).await
    }
}

/// Runs one HTTP/1.1 exchange on `io` and returns the status and the body.
async fn exchange<S>(
    io: S,
    request: Request<Full<Bytes>>,
    max_body: usize,
    server: &str,
) -> Result<HttpResponse, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_error = |source| HttpError::Http { server: server.to_owned(), source };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(http_error)?;

    let exchange = async move {
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), max_body).collect().await.map_err(|source| {
            if source.is::<LengthLimitError>() {
                HttpError::BodyTooLarge { server: server.to_owned(), limit: max_body }
            } else {
                HttpError::BodyUnreadable { server: server.to_owned(), source }
            }
        })?;
        Ok(HttpResponse { status, body: body.to_bytes() })
    };

    // The connection future does the reading and writing, while the exchange only hands over the request and
    // collects the response, so both are polled together. Polling it here rather than spawning it means the
    // connection closes when the caller's timeout drops this future.
    let mut connection = std::pin::pin!(connection);
    let mut exchange = std::pin::pin!(exchange);
    tokio::select! {
        result = &mut exchange => result,
        ended = &mut connection => match ended {
            Ok(()) => exchange.await,
            Err(source) => Err(http_error(source)),
        },
    }
}

#[cfg(test)]
mod tests;
