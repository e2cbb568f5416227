//! The mailbox watcher: keeps one IMAP connection in IDLE on INBOX and starts an upload cycle as soon as new mail
//! arrives, so receipts and replies do not wait for the upload interval. The upload cycle's schedule stays the
//! fallback when the server does not offer IDLE, when `[mailbox] idle` is off, and while the connection is down.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::transport::imap::IdleEvent;
use crate::upload::{self, INBOX};

/// Timing of the watcher. Only tests change it from [`WatchTiming::default`].
#[derive(Clone, Copy, Debug)]
pub struct WatchTiming {
    /// How long one IDLE lasts before it is ended and sent again. RFC 2177 advises clients to re-issue IDLE at
    /// least every 29 minutes, because servers may log off a client inactive for 30.
    pub renew_after: Duration,
    /// The wait after new mail is announced before a cycle starts, so a burst of emails starts one cycle.
    pub debounce: Duration,
    /// The wait before the first reconnection; each later one doubles it, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for WatchTiming {
    fn default() -> Self {
        Self {
            renew_after: Duration::from_secs(25 * 60),
            debounce: Duration::from_secs(1),
            first_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(10 * 60),
        }
    }
}

/// The outcome of a connection's watch that ended without an error.
enum Ended {
    Stopped,
    IdleNotOffered,
}

/// Watches INBOX until `shutdown` is cancelled; returns at once when `[mailbox] idle` is off and after finding
/// that the server does not offer IDLE.
pub async fn run(app: Arc<App>, shutdown: CancellationToken) {
    run_with(app, WatchTiming::default(), shutdown).await;
}

pub async fn run_with(app: Arc<App>, timing: WatchTiming, shutdown: CancellationToken) {
    if !app.config.mailbox.idle {
        tracing::info!("IMAP IDLE off ([mailbox] idle = false); new mail is collected every upload interval");
        return;
    }
    tracing::info!("mailbox watcher started");
    let mut password_changes = app.credentials.generation();
    let mut backoff = timing.first_backoff;
    let mut attempt: u32 = 0;

    loop {
        match watch(&app, &timing, &shutdown, &mut backoff).await {
            Ok(Ended::Stopped) => break,
            Ok(Ended::IdleNotOffered) => {
                tracing::info!("the IMAP server does not offer IDLE; new mail is collected every upload interval");
                break;
            }
            Err(error) => {
                attempt += 1;
                tracing::warn!(%error, attempt, delay_seconds = backoff.as_secs(), "mailbox watcher failed; retrying");
            }
        }

        // A new password may be what the last attempt lacked, so it ends the wait.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(timing.max_backoff),
            _ = password_changes.changed() => backoff = timing.first_backoff,
        }
    }
    tracing::info!("mailbox watcher stopped");
}

/// Signs in as the upload cycle does, selects INBOX and idles, starting a cycle for mail that arrived while no
/// connection was watching and then for each announcement of new mail. The sign-in lock is released before the
/// first IDLE. `backoff` is reset once a connection is established.
async fn watch(
    app: &App,
    timing: &WatchTiming,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
) -> Result<Ended, String> {
    let mut session = upload::connect(app).await?;
    if let Err(error) = app.credentials.record_success().await {
        tracing::error!(%error, "cannot record the successful sign-in");
    }
    let features = session.features().await.map_err(|error| format!("cannot read capabilities: {error}"))?;
    if !features.idle {
        let _ = session.logout().await;
        return Ok(Ended::IdleNotOffered);
    }
    session.select(INBOX).await.map_err(|error| format!("cannot open {INBOX}: {error}"))?;
    *backoff = timing.first_backoff;
    tracing::info!("watching {INBOX} with IMAP IDLE");
    start_cycle(app);

    loop {
        let (next, event) = session
            .idle(timing.renew_after, shutdown.cancelled())
            .await
            .map_err(|error| format!("IDLE on {INBOX} failed: {error}"))?;
        session = next;
        match event {
            IdleEvent::Renew => continue,
            IdleEvent::Stopped => break,
            IdleEvent::NewMail => {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(timing.debounce) => start_cycle(app),
                }
            }
        }
    }

    if let Err(error) = session.logout().await {
        tracing::debug!(%error, "IMAP logout failed");
    }
    Ok(Ended::Stopped)
}

/// Asks the upload task for a cycle without waiting for its report. A full queue of requests already contains one
/// that will collect this mail.
fn start_cycle(app: &App) {
    let (report, _ignored) = oneshot::channel();
    if app.upload_triggers.try_send(report).is_err() {
        tracing::debug!("upload cycle already requested");
    }
}
