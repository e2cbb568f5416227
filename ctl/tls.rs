//! TLS to an agent reached with an https:// URL: the rustls client configuration from --ca-file, --client-cert
//! and --client-key, and the connector that tonic's channel uses, offering HTTP/2 only as gRPC needs.

use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::Uri;

use crate::cli::TlsFiles;
use crate::error::CtlError;

/// Builds the client configuration: the CAs of --ca-file, or the system's when it is not given, and the client
/// certificate when --client-cert is given.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, CtlError> {
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca_file {
        Some(path) => {
            for certificate in read_certificates("--ca-file", path)? {
                roots.add(certificate).map_err(|error| file_error("--ca-file", path, error.to_string()))?;
            }
        }
        None => {
            // Unreadable system certificates are skipped; an agent signed by none of them fails with a clear error.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| CtlError::Input(format!("cannot set up TLS: {error}")))?
        .with_root_certificates(roots);
    let mut config = match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certificates("--client-cert", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|error| file_error("--client-key", key, error.to_string()))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|error| {
                CtlError::Input(format!(
                    "--client-cert and --client-key do not form a usable pair: {error}; check that the key belongs to the certificate"
                ))
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn read_certificates(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, CtlError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(flag, path, error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(flag, path, error.to_string()))?;
    if certificates.is_empty() {
        return Err(file_error(flag, path, "it contains no PEM certificate".into()));
    }
    Ok(certificates)
}

fn file_error(flag: &str, path: &Path, reason: String) -> CtlError {
    CtlError::Input(format!("cannot read {flag} {}: {reason}", path.display()))
}

/// Opens a TCP connection to the URL's host and port and runs the TLS handshake, checking the certificate against
/// the host name in the URL.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
}

impl TlsConnector {
    pub fn new(config: Arc<rustls::ClientConfig>) -> TlsConnector {
        TlsConnector { config }
    }
}

impl tonic::codegen::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<Self::Response, std::io::Error>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        Box::pin(async move {
            let invalid = |message: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, message.to_owned());
            let host = uri.host().ok_or_else(|| invalid("the URL has no host"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let server_name =
                ServerName::try_from(host.clone()).map_err(|_| invalid("the URL's host is not a valid name"))?;

            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let mut stream = connector.connect(server_name, tcp).await?;
            await_first_records(&mut stream).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Maximum wait for the agent's first records after the handshake.
const FIRST_RECORDS_WAIT: Duration = Duration::from_secs(2);

/// Waits for the agent's first TLS records after the handshake and processes them.
///
/// In TLS 1.3 the client finishes its handshake before the server has checked the client certificate, so a
/// rejection arrives afterwards as an alert. A rustls server sends session tickets as soon as it accepts the
/// client, so reading here turns a rejection into a TLS error with its alert, instead of a broken pipe on the first
/// call. Plain text read here stays buffered in the connection for the HTTP/2 layer.
async fn await_first_records(stream: &mut TlsStream<TcpStream>) -> std::io::Result<()> {
    let wait = async {
        let mut buffer = [0u8; 4096];
        loop {
            let (tcp, connection) = stream.get_mut();
            tcp.readable().await?;
            let read = match tcp.try_read(&mut buffer) {
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            };
            if read == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the agent closed the connection right after the TLS handshake",
                ));
            }
            let mut records = &buffer[..read];
            while !records.is_empty() {
                connection.read_tls(&mut records)?;
                connection
                    .process_new_packets()
                    .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))?;
            }
            return Ok(());
        }
    };
    // NOTE: a server that sends nothing after the handshake costs this wait once per connection; the agent's rustls
    // listener always sends session tickets.
    tokio::time::timeout(FIRST_RECORDS_WAIT, wait).await.unwrap_or(Ok(()))
}
