//! IMAP IDLE (RFC 2177) on the selected mailbox: waits until the server announces new mail.

use std::future::Future;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::imap_proto::{MailboxDatum, Response};
use async_imap::types::UnsolicitedResponse;

use super::{ImapError, ImapSession};

/// Why [`ImapSession::idle`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleEvent {
    /// The server sent EXISTS: the mailbox has more messages than before.
    NewMail,
    /// `renew_after` passed without new mail; call again to start a new IDLE.
    Renew,
    /// The caller's `stop` future completed.
    Stopped,
}

impl ImapSession {
    /// Sends IDLE and waits until the server sends EXISTS, `renew_after` passes or `stop` completes, then sends
    /// DONE and returns the session for further commands.
    ///
    /// Servers may end an IDLE after 30 minutes of inactivity (RFC 2177), so `renew_after` should be well under
    /// that. Sending IDLE and DONE each run under the session's timeout; the wait itself does not.
    pub async fn idle(
        self,
        renew_after: Duration,
        stop: impl Future<Output = ()>,
    ) -> Result<(ImapSession, IdleEvent), ImapError> {
        self.check_usable()?;
        let ImapSession { session, context, .. } = self;
        let mut stop = std::pin::pin!(stop);
        let mut handle = session.idle();
        context.run("IDLE", handle.init()).await?;

        let deadline = tokio::time::Instant::now() + renew_after;
        let event = loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                break IdleEvent::Renew;
            }
            let (wait, interrupt) = handle.wait_with_timeout(remaining);
            let outcome = tokio::select! {
                outcome = wait => Some(outcome),
                () = &mut stop => None,
            };
            drop(interrupt);
            match outcome {
                None => break IdleEvent::Stopped,
                Some(Ok(IdleResponse::NewData(data))) if is_exists(data.parsed()) => break IdleEvent::NewMail,
                // EXPUNGE, flag changes and other updates do not bring new mail.
                Some(Ok(IdleResponse::NewData(_))) => continue,
                Some(Ok(IdleResponse::Timeout | IdleResponse::ManualInterrupt)) => break IdleEvent::Renew,
                Some(Err(source)) => return Err(context.command_error("IDLE", source)),
            }
        };

        let session = context.run("DONE", handle.done()).await?;
        let session = ImapSession { session, context, broken: false };
        // An EXISTS that arrived with the reply to DONE went to the unsolicited channel rather than to the wait.
        let mut event = event;
        while let Ok(response) = session.session.unsolicited_responses.try_recv() {
            if matches!(response, UnsolicitedResponse::Exists(_)) && event == IdleEvent::Renew {
                event = IdleEvent::NewMail;
            }
        }
        Ok((session, event))
    }
}

fn is_exists(response: &Response<'_>) -> bool {
    matches!(response, Response::MailboxData(MailboxDatum::Exists(_)))
}
