//! The IMAP server (RFC 3501 IMAP4rev1 with IDLE from RFC 2177, UIDPLUS from RFC 4315,
//! MOVE from RFC 6851, LITERAL+ from RFC 7888 and SASL-IR from RFC 4959). One listener
//! speaks implicit TLS, another plain text with STARTTLS; both serve the one account.

mod commands;
mod fetch;
mod message;
mod parse;
mod search;
mod sequence;
mod session;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::net::Conn;
use crate::state::Shared;

/// Accepts connections until the sandbox shuts down, one task per connection. With
/// `implicit_tls` each connection starts with a TLS handshake; without it, STARTTLS.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, implicit_tls: bool) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shared.cancel.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "failed to accept an IMAP connection");
                continue;
            }
        };
        let session_shared = Arc::clone(&shared);
        shared.tasks.spawn(async move {
            let cancel = session_shared.cancel.clone();
            let run = async {
                let conn = if implicit_tls {
                    Conn::accept_tls(stream, &session_shared.tls, peer).await?
                } else {
                    Conn::new(Box::new(stream), false, peer)
                };
                session::Session::new(conn, Arc::clone(&session_shared)).run().await
            };
            tokio::select! {
                outcome = run => {
                    if let Err(error) = outcome {
                        tracing::debug!(%peer, %error, "IMAP session ended");
                    }
                }
                () = cancel.cancelled() => {}
            }
        });
    }
}
