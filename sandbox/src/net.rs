//! A line-oriented connection shared by the SMTP and IMAP servers: bounded line reads with
//! timeouts, exact reads for IMAP literals, and the upgrade to TLS in place for STARTTLS.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_rustls::TlsAcceptor;

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("line longer than {0} octets")]
    LineTooLong(usize),
    #[error("connection closed by the client")]
    Closed,
    #[error("client sent nothing for {0:?}")]
    TimedOut(Duration),
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Conn {
    io: BufReader<Box<dyn Stream>>,
    pub tls: bool,
    pub peer: SocketAddr,
}

impl Conn {
    pub fn new(stream: Box<dyn Stream>, tls: bool, peer: SocketAddr) -> Conn {
        Conn { io: BufReader::new(stream), tls, peer }
    }

    /// Accepts a TLS handshake on a new connection (implicit TLS).
    pub async fn accept_tls(
        stream: tokio::net::TcpStream,
        acceptor: &TlsAcceptor,
        peer: SocketAddr,
    ) -> Result<Conn, ConnError> {
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
            .await
            .map_err(|_| ConnError::TimedOut(HANDSHAKE_TIMEOUT))?
            .map_err(ConnError::Tls)?;
        Ok(Conn::new(Box::new(tls), true, peer))
    }

    /// Upgrades the connection to TLS after a STARTTLS reply. Anything the client sent
    /// after the STARTTLS command is discarded unread, as RFC 3207 section 4.2 requires.
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> Result<(), ConnError> {
        let placeholder: Box<dyn Stream> = Box::new(tokio::io::duplex(1).0);
        let plain = std::mem::replace(&mut self.io, BufReader::new(placeholder)).into_inner();
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(plain))
            .await
            .map_err(|_| ConnError::TimedOut(HANDSHAKE_TIMEOUT))?
            .map_err(ConnError::Tls)?;
        self.io = BufReader::new(Box::new(tls));
        self.tls = true;
        Ok(())
    }

    /// Reads one line of at most `max` octets including its end, and returns it without
    /// the CRLF or LF. A longer line is read to its end and discarded.
    pub async fn read_line(&mut self, max: usize, timeout: Duration) -> Result<Vec<u8>, ConnError> {
        let mut line = Vec::new();
        tokio::time::timeout(timeout, self.read_line_into(&mut line, max))
            .await
            .map_err(|_| ConnError::TimedOut(timeout))??;
        Ok(line)
    }

    /// Appends one line to `line`, stripping its end. Cancelling this future keeps the
    /// octets read so far in `line`, so IDLE can call it again inside `select!`.
    pub async fn read_line_into(&mut self, line: &mut Vec<u8>, max: usize) -> Result<(), ConnError> {
        loop {
            let room = (max + 1).saturating_sub(line.len()) as u64;
            let read = (&mut self.io).take(room).read_until(b'\n', line).await?;
            if line.ends_with(b"\n") {
                line.pop();
                if line.ends_with(b"\r") {
                    line.pop();
                }
                return Ok(());
            }
            if read == 0 && line.len() <= max {
                return Err(ConnError::Closed);
            }
            if line.len() > max {
                self.discard_line().await?;
                line.clear();
                return Err(ConnError::LineTooLong(max));
            }
        }
    }

    async fn discard_line(&mut self) -> Result<(), ConnError> {
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let read = (&mut self.io).take(64 * 1024).read_until(b'\n', &mut rest).await?;
            if read == 0 {
                return Err(ConnError::Closed);
            }
            if rest.ends_with(b"\n") {
                return Ok(());
            }
        }
    }

    /// Reads exactly `len` octets, for an IMAP literal.
    pub async fn read_exact(&mut self, len: usize, timeout: Duration) -> Result<Vec<u8>, ConnError> {
        let mut bytes = vec![0; len];
        tokio::time::timeout(timeout, self.io.read_exact(&mut bytes))
            .await
            .map_err(|_| ConnError::TimedOut(timeout))?
            .map_err(|error| match error.kind() {
                io::ErrorKind::UnexpectedEof => ConnError::Closed,
                _ => ConnError::Io(error),
            })?;
        Ok(bytes)
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        let stream = self.io.get_mut();
        stream.write_all(bytes).await?;
        stream.flush().await?;
        Ok(())
    }

    /// Closes the connection without a reply, as a fault does; errors are irrelevant then.
    pub async fn drop_connection(mut self) {
        let _ = self.io.get_mut().shutdown().await;
    }
}
