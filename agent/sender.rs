//! The sender task: takes the next due message, hands it to SMTP within the rate limit while the sending gate is
//! open, and records the outcome. It runs continuously and does not wait for the upload cycle.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::{Config, TextIn};
use crate::credentials::{AfterRejection, Gate};
use crate::queue;
use crate::store::MessageRecord;
use crate::transport::smtp::{
    DEFAULT_IDLE_TIMEOUT, Mechanism, OutboundEmail, SentEmail, SmtpClient, SmtpError, SmtpErrorKind, SmtpSettings,
};
use crate::transport::{Credentials, TlsSettings};

/// Maximum time the sender sleeps with nothing due before it reads the queue again.
const IDLE_POLL: Duration = Duration::from_secs(60);
/// Pause after an error that is not about a message, such as the database being unavailable.
const ERROR_PAUSE: Duration = Duration::from_secs(5);

pub fn smtp_settings(config: &Config) -> SmtpSettings {
    let nhsmail = &config.nhsmail;
    SmtpSettings {
        endpoint: nhsmail.smtp.clone(),
        tls: TlsSettings { extra_ca_file: nhsmail.ca_file.clone() },
        hello_name: hello_name(),
        timeout: nhsmail.network_timeout,
        pool_size: 2,
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
        mechanisms: vec![Mechanism::Plain, Mechanism::Login],
    }
}

fn hello_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        .unwrap_or_else(|| "localhost".into())
}

/// Spaces hand-offs to SMTP evenly, so no minute contains more than the configured number.
struct RateLimiter {
    interval: Duration,
    next_allowed: Instant,
}

impl RateLimiter {
    fn new(rate_per_minute: u32) -> RateLimiter {
        RateLimiter { interval: Duration::from_secs(60) / rate_per_minute.max(1), next_allowed: Instant::now() }
    }

    async fn wait(&mut self) {
        tokio::time::sleep_until(self.next_allowed).await;
    }

    fn record_send(&mut self) {
        self.next_allowed = Instant::now().max(self.next_allowed) + self.interval;
    }
}

/// Runs until `shutdown` is cancelled. A message being sent when shutdown begins is finished first.
pub async fn run(app: Arc<App>, shutdown: CancellationToken) {
    let mut gate = app.credentials.gate();
    let mut generation = app.credentials.generation();
    let mut limiter = RateLimiter::new(app.config.sending.rate_per_minute);
    let mut client: Option<SmtpClient> = None;
    tracing::info!(rate_per_minute = app.config.sending.rate_per_minute, "sender started");

    loop {
        let paused = matches!(*gate.borrow_and_update(), Gate::Closed { .. });
        if paused {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = gate.changed() => continue,
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = limiter.wait() => {}
        }
        // Taken before the password generation is read, so a rotation cannot change the password between that
        // check and the send.
        let _sending = app.send_guard.read().await;
        if generation.has_changed().unwrap_or(false) {
            generation.borrow_and_update();
            client = None;
        }

        let claimed = match app.store.claim_next(Utc::now()).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::error!(%error, "cannot read the queue; retrying in 5 seconds");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ERROR_PAUSE) => continue,
                }
            }
        };
        let Some(message) = claimed else {
            wait_for_work(&app, &shutdown, &mut gate).await;
            if shutdown.is_cancelled() {
                break;
            }
            continue;
        };

        if send_one(&app, &mut client, message).await {
            limiter.record_send();
        }
    }
    tracing::info!("sender stopped");
}

/// Sleeps until the next message is due, a new one is submitted, the gate changes or shutdown begins.
async fn wait_for_work(app: &App, shutdown: &CancellationToken, gate: &mut tokio::sync::watch::Receiver<Gate>) {
    let now = Utc::now();
    let sleep_for = match app.store.next_due_at(now).await {
        Ok(Some(due)) => (due - now).to_std().unwrap_or(Duration::ZERO).min(IDLE_POLL),
        Ok(None) => IDLE_POLL,
        Err(error) => {
            tracing::error!(%error, "cannot read the queue; retrying in 5 seconds");
            ERROR_PAUSE
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = app.new_message.notified() => {}
        _ = gate.changed() => {}
        _ = tokio::time::sleep(sleep_for) => {}
    }
}

/// Sends one claimed message and records the outcome. Returns whether SMTP was used, for the rate limit.
async fn send_one(app: &App, client: &mut Option<SmtpClient>, message: MessageRecord) -> bool {
    let id = message.id.clone();
    let sign_in = match app.credentials.sign_in().await {
        Ok(sign_in) => sign_in,
        Err(error) if error.is_transient() => {
            // The token endpoint failed for now; wait like after a failed SMTP connection.
            retry_later(app, &message, &error.to_string()).await;
            return true;
        }
        Err(error) => {
            // The gate closed between the check and the claim; put the message back as it was.
            release(app, &id, &error.to_string()).await;
            return false;
        }
    };

    let credentials = sign_in.credentials.clone();
    if client.as_ref().is_some_and(|client| !client.uses(&credentials)) {
        // A new access token; connections signed in with the old one are dropped with the old client.
        *client = None;
    }
    if client.is_none() {
        match SmtpClient::new(smtp_settings(&app.config), credentials.clone()) {
            Ok(new_client) => *client = Some(new_client),
            Err(error) => {
                tracing::error!(message_id = %id, %error, "cannot set up the SMTP client; check [nhsmail] settings");
                app.credentials.note_error(&error.to_string());
                release(app, &id, &error.to_string()).await;
                return false;
            }
        }
    }
    let smtp = client.as_ref().expect("client was just set");

    let email = outbound_email(&credentials.username, &message, app.text_in());
    let store = app.store.clone();
    let data_id = id.clone();
    let result = smtp
        .send(&email, move |smtp_message_id: String| async move {
            store.mark_data_started(&data_id, &smtp_message_id, Utc::now()).await
        })
        .await;
    drop(sign_in);

    record_outcome(app, client, &message, &credentials, result).await;
    true
}

fn outbound_email(username: &str, message: &MessageRecord, text_in: TextIn) -> OutboundEmail {
    let (subject, body) = match text_in {
        TextIn::Body => (String::new(), message.text.clone()),
        TextIn::Subject => (message.text.clone(), String::new()),
    };
    OutboundEmail { from: username.to_string(), to: message.gateway_address.clone(), subject, body }
}

async fn record_outcome(
    app: &App,
    client: &mut Option<SmtpClient>,
    message: &MessageRecord,
    credentials: &Credentials,
    result: Result<SentEmail, SmtpError>,
) {
    let id = message.id.clone();
    let now = Utc::now();
    let outcome = match result {
        Ok(sent) => {
            tracing::info!(message_id = %id, smtp_message_id = %sent.message_id, "message accepted by NHSmail");
            if let Err(error) = app.credentials.record_success().await {
                tracing::error!(%error, "cannot record the successful sign-in");
            }
            app.store.mark_sent(&id, now, &sent.response).await
        }
        Err(error) => match error.kind() {
            SmtpErrorKind::Transient => {
                let delay = queue::backoff_delay(app.config.sending.retry_base, message.attempts);
                tracing::warn!(message_id = %id, attempt = message.attempts, delay = ?delay, %error, "SMTP attempt failed; will retry");
                app.credentials.note_error(&error.to_string());
                *client = None;
                let next = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
                app.store.mark_retry(&id, next, now, &error.to_string()).await
            }
            SmtpErrorKind::Permanent => {
                tracing::error!(message_id = %id, %error, "NHSmail rejected the message permanently");
                app.store.mark_failed(&id, now, &error.to_string()).await
            }
            SmtpErrorKind::Uncertain => {
                tracing::error!(message_id = %id, %error, "connection lost after the message was sent; NHSmail may have it, so it will not be resent");
                *client = None;
                app.store.mark_uncertain(&id, now, &error.to_string()).await
            }
            SmtpErrorKind::Auth => {
                *client = None;
                let after = app.credentials.record_auth_failure(credentials, &error.to_string()).await;
                let reason = match after {
                    Ok(AfterRejection::SignInAgain) => format!("waiting for a new access token: {error}"),
                    Ok(AfterRejection::GateClosed) => format!("waiting for a working password: {error}"),
                    Err(record_error) => {
                        tracing::error!(error = %record_error, "cannot record the rejected sign-in");
                        format!("waiting for a working password: {error}")
                    }
                };
                app.store.release(&id, now, &reason).await
            }
            SmtpErrorKind::Config => {
                tracing::error!(message_id = %id, %error, "cannot connect to the SMTP server; check [nhsmail] settings");
                app.credentials.note_error(&error.to_string());
                *client = None;
                let next = now + chrono::Duration::minutes(5);
                app.store.mark_retry(&id, next, now, &error.to_string()).await
            }
        },
    };
    if let Err(error) = outcome {
        tracing::error!(message_id = %id, %error, "cannot record the outcome of a send");
    }
}

/// Puts a claimed message back with the same backoff as a failed SMTP connection.
async fn retry_later(app: &App, message: &MessageRecord, reason: &str) {
    let now = Utc::now();
    let delay = queue::backoff_delay(app.config.sending.retry_base, message.attempts);
    tracing::warn!(message_id = %message.id, attempt = message.attempts, delay = ?delay, reason, "cannot sign in; will retry");
    let next = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
    if let Err(error) = app.store.mark_retry(&message.id, next, now, reason).await {
        tracing::error!(message_id = %message.id, %error, "cannot return the message to the queue");
    }
}

async fn release(app: &App, id: &str, reason: &str) {
    if let Err(error) = app.store.release(id, Utc::now(), reason).await {
        tracing::error!(message_id = %id, %error, "cannot return the message to the queue");
    }
}
