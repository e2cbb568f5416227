//! The byte stream under an IMAP session, plain TCP or TLS, and the STARTTLS upgrade that
//! async-imap does not provide for tokio.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::ImapError;

/// Tag of the STARTTLS command, sent before async-imap takes over the connection.
const STARTTLS_TAG: &str = "s001";

/// The maximum line length, in bytes, read while negotiating STARTTLS.
const MAX_LINE_BYTES: u64 = 8 * 1024;

/// A connection to the IMAP server; plain only for loopback hosts.
pub enum ImapStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl fmt::Debug for ImapStream {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Plain(_) => "ImapStream::Plain",
            Self::Tls(_) => "ImapStream::Tls",
        })
    }
}

impl AsyncRead for ImapStream {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(context, buffer),
            Self::Tls(stream) => Pin::new(stream).poll_read(context, buffer),
        }
    }
}

impl AsyncWrite for ImapStream {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(context, buffer),
            Self::Tls(stream) => Pin::new(stream).poll_write(context, buffer),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(context),
            Self::Tls(stream) => Pin::new(stream).poll_flush(context),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(context),
            Self::Tls(stream) => Pin::new(stream).poll_shutdown(context),
        }
    }
}

/// Performs the TLS handshake on `tcp`.
pub(super) async fn handshake(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    server: &str,
    timeout: Duration,
) -> Result<ImapStream, ImapError> {
    let connect = TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => Ok(ImapStream::Tls(Box::new(stream))),
        Ok(Err(source)) => Err(ImapError::TlsHandshake { server: server.to_owned(), source }),
        Err(_elapsed) => Err(timed_out(server, "tls handshake", timeout)),
    }
}

/// Reads the greeting, sends STARTTLS and waits for its tagged OK, leaving `tcp` ready for the
/// TLS handshake. The server sends no new greeting after the handshake.
///
/// Any byte buffered after the OK is an error: it arrived before encryption, so an attacker on
/// the path could have injected it to be read later as if it came over TLS.
pub(super) async fn starttls(tcp: TcpStream, server: &str, timeout: Duration) -> Result<TcpStream, ImapError> {
    let mut reader = BufReader::new(tcp);

    let greeting = read_line(&mut reader, server, "greeting", timeout).await?;
    if !starts_with_ignore_case(&greeting, "* OK") {
        return Err(ImapError::Greeting { server: server.to_owned(), greeting });
    }

    let command = format!("{STARTTLS_TAG} STARTTLS\r\n");
    let write = async {
        reader.get_mut().write_all(command.as_bytes()).await?;
        reader.get_mut().flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => {}
        Ok(Err(source)) => return Err(connection_lost(server, "STARTTLS", source)),
        Err(_elapsed) => return Err(timed_out(server, "STARTTLS", timeout)),
    }

    let tagged = format!("{STARTTLS_TAG} ");
    loop {
        let line = read_line(&mut reader, server, "STARTTLS", timeout).await?;
        if !starts_with_ignore_case(&line, &tagged) {
            // An untagged response such as CAPABILITY; nothing to act on.
            continue;
        }
        if !starts_with_ignore_case(&line[tagged.len()..], "OK") {
            return Err(ImapError::StartTlsRefused { server: server.to_owned(), response: line });
        }
        break;
    }

    if !reader.buffer().is_empty() {
        return Err(ImapError::StartTlsInjection { server: server.to_owned() });
    }
    Ok(reader.into_inner())
}

/// Reads one line, without its line ending, under the timeout.
async fn read_line(
    reader: &mut BufReader<TcpStream>,
    server: &str,
    command: &'static str,
    timeout: Duration,
) -> Result<String, ImapError> {
    let mut line = Vec::new();
    let mut limited = (&mut *reader).take(MAX_LINE_BYTES);
    match tokio::time::timeout(timeout, limited.read_until(b'\n', &mut line)).await {
        Ok(Ok(0)) => Err(ImapError::Command {
            server: server.to_owned(),
            command,
            source: async_imap::error::Error::ConnectionLost,
        }),
        Ok(Ok(_)) => Ok(String::from_utf8_lossy(&line).trim_end().to_owned()),
        Ok(Err(source)) => Err(connection_lost(server, command, source)),
        Err(_elapsed) => Err(timed_out(server, command, timeout)),
    }
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len()).is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

fn connection_lost(server: &str, command: &'static str, source: io::Error) -> ImapError {
    ImapError::Command { server: server.to_owned(), command, source: async_imap::error::Error::Io(source) }
}

fn timed_out(server: &str, command: &'static str, after: Duration) -> ImapError {
    ImapError::Timeout { server: server.to_owned(), command, after }
}
