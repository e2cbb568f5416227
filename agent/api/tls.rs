//! TLS for the gRPC listener (rustls): the server configuration from `[agent] tls_cert`, `tls_key` and
//! `tls_client_ca`, and the accept loop that hands finished handshakes to tonic. With `tls_client_ca` set, a client
//! without a certificate signed by that CA fails during the handshake, before any call is read.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::config::ServerTls;

/// Maximum time a client may take over the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {key} {}: {reason}; check the file", path.display())]
    Read { key: &'static str, path: PathBuf, reason: String },
    #[error("{key} {} contains no {what}; expected a PEM file", path.display())]
    Empty { key: &'static str, path: PathBuf, what: &'static str },
    #[error("the certificate or key is not usable: {0}; check that [agent] tls_key is the key of [agent] tls_cert")]
    Rejected(rustls::Error),
    #[error("[agent] tls_client_ca {}: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
}

/// Builds the rustls server configuration, offering HTTP/2 only as gRPC needs.
pub fn server_config(settings: &ServerTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificates = read_certificates("[agent] tls_cert", &settings.cert)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|error| TlsError::Read {
        key: "[agent] tls_key",
        path: settings.key.clone(),
        reason: error.to_string(),
    })?;

    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rejected)?;
    let builder = match &settings.client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in read_certificates("[agent] tls_client_ca", path)? {
                roots
                    .add(certificate)
                    .map_err(|error| TlsError::ClientCa { path: path.clone(), reason: error.to_string() })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| TlsError::ClientCa { path: path.clone(), reason: error.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certificates, key).map_err(TlsError::Rejected)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn read_certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |reason: String| TlsError::Read { key, path: path.to_owned(), reason };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| read_error(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| read_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(TlsError::Empty { key, path: path.to_owned(), what: "certificate" });
    }
    Ok(certificates)
}

/// A connection whose TLS handshake has finished. tonic receives its TCP addresses, so `remote_addr()` works as it does
/// for plain TCP.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: TcpConnectInfo,
}

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}

/// Accepts TCP connections on `listener` until `shutdown`, runs each TLS handshake in its own task under
/// [`HANDSHAKE_TIMEOUT`], and yields the connections whose handshake succeeded. A failed handshake is logged with
/// the client's address and rustls's reason, and closes only that connection.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConnection>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let local = listener.local_addr().ok();
    let failures = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // For example EMFILE: wait for connections to close rather than spin.
                    tracing::warn!(%error, "cannot accept a connection; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // As on the plain listener: without it, each response waits for the client's delayed ACK.
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, %peer, "cannot set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            let failures = failures.clone();
            tokio::spawn(async move {
                if let Some(stream) = handshake(acceptor, tcp, peer, &failures).await {
                    let info = TcpConnectInfo { local_addr: local, remote_addr: Some(peer) };
                    let _ = sender.send(Ok(TlsConnection { stream, info })).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// Runs one handshake. Failures are counted and logged at warn for the 1st, 10th, 100th and so on, so a port
/// scanner cannot flood the log. The others are logged at debug.
async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    failures: &AtomicU64,
) -> Option<TlsStream<TcpStream>> {
    let error = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("timed out after {} seconds", HANDSHAKE_TIMEOUT.as_secs()),
    };
    let count = failures.fetch_add(1, Ordering::Relaxed) + 1;
    if is_power_of_ten(count) {
        tracing::warn!(%peer, error, failures = count, "TLS handshake failed");
    } else {
        tracing::debug!(%peer, error, failures = count, "TLS handshake failed");
    }
    None
}

/// Returns whether `number` is 1, 10, 100 and so on: the counts at which repeated failures are logged at warn.
pub(super) fn is_power_of_ten(mut number: u64) -> bool {
    while number >= 10 && number.is_multiple_of(10) {
        number /= 10;
    }
    number == 1
}
