//! The optional Prometheus endpoint (`[agent] metrics_listen`): counters kept in memory since the agent started,
//! and gauges read from the store and the password state at each scrape, served as the text exposition format
//! 0.0.4 on `GET /metrics`.
//!
//! The format is written by hand because the agent exports a dozen series with fixed labels, so a metrics crate
//! would add a registry and dependencies for no gain. Counters restart from zero with the agent, as Prometheus expects.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::credentials::PasswordState;
use crate::queue::MessageStatus;

/// Content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Maximum time a scrape connection may stay open, so an idle client cannot hold a task for ever.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The reason a send did not end in `sent`: the `reason` label of `nhsmail_send_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// A 4xx reply or a dropped connection before the data; the message is retried.
    Transient,
    /// A 5xx reply naming the recipient; the message failed.
    Permanent,
    /// The connection dropped after the data; NHSmail may have the message.
    Uncertain,
    /// The server rejected the sign-in.
    Authentication,
    /// The SMTP server could not be reached or the TLS settings are wrong.
    Connection,
}

impl SendFailure {
    const ALL: [SendFailure; 5] = [
        SendFailure::Transient,
        SendFailure::Permanent,
        SendFailure::Uncertain,
        SendFailure::Authentication,
        SendFailure::Connection,
    ];

    fn label(self) -> &'static str {
        match self {
            SendFailure::Transient => "transient",
            SendFailure::Permanent => "permanent",
            SendFailure::Uncertain => "uncertain",
            SendFailure::Authentication => "authentication",
            SendFailure::Connection => "connection",
        }
    }
}

/// The protocol of a rejected sign-in; the `protocol` label of `nhsmail_sign_in_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInProtocol {
    Smtp,
    Imap,
}

/// Counters updated by the sender and the upload cycle.
#[derive(Debug, Default)]
pub struct Metrics {
    sends: AtomicU64,
    send_failures: [AtomicU64; 5],
    sign_in_failures: [AtomicU64; 2],
    upload_count: AtomicU64,
    upload_microseconds: AtomicU64,
    last_upload_microseconds: AtomicU64,
}

impl Metrics {
    /// Counts a message NHSmail accepted.
    pub fn record_send(&self) {
        self.sends.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_send_failure(&self, reason: SendFailure) {
        let index = SendFailure::ALL.iter().position(|candidate| *candidate == reason).unwrap_or(0);
        self.send_failures[index].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_sign_in_failure(&self, protocol: SignInProtocol) {
        self.sign_in_failures[protocol as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_upload(&self, duration: Duration) {
        let microseconds = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.upload_count.fetch_add(1, Ordering::Relaxed);
        self.upload_microseconds.fetch_add(microseconds, Ordering::Relaxed);
        self.last_upload_microseconds.store(microseconds, Ordering::Relaxed);
    }
}

/// Renders every series for one scrape.
pub async fn render(app: &App) -> String {
    let metrics = &app.metrics;
    let mut text = String::new();

    family(&mut text, "nhsmail_messages", "gauge", "Messages in the store by state.");
    let counts = app.store.count_by_status().await.unwrap_or_default();
    for status in MessageStatus::ALL {
        let count = counts.iter().find(|(candidate, _)| *candidate == status).map_or(0, |(_, count)| *count);
        let _ = writeln!(text, "nhsmail_messages{{state=\"{}\"}} {count}", status.as_str());
    }

    family(&mut text, "nhsmail_sends_total", "counter", "Messages NHSmail accepted since the agent started.");
    let _ = writeln!(text, "nhsmail_sends_total {}", metrics.sends.load(Ordering::Relaxed));

    family(&mut text, "nhsmail_send_failures_total", "counter", "Send attempts that did not end in sent, by reason.");
    for (reason, count) in SendFailure::ALL.iter().zip(&metrics.send_failures) {
        let _ = writeln!(
            text,
            "nhsmail_send_failures_total{{reason=\"{}\"}} {}",
            reason.label(),
            count.load(Ordering::Relaxed)
        );
    }

    family(&mut text, "nhsmail_sign_in_failures_total", "counter", "Sign-ins the mail servers rejected.");
    for (protocol, count) in ["smtp", "imap"].iter().zip(&metrics.sign_in_failures) {
        let _ = writeln!(
            text,
            "nhsmail_sign_in_failures_total{{protocol=\"{protocol}\"}} {}",
            count.load(Ordering::Relaxed)
        );
    }

    let now = Utc::now();
    let password = app.credentials.status(now);
    family(&mut text, "nhsmail_password_ok", "gauge", "1 when the stored password is usable, else 0.");
    let usable = matches!(password.state, PasswordState::Ok | PasswordState::Expiring);
    let _ = writeln!(text, "nhsmail_password_ok {}", u8::from(usable));
    if let Some(days) = password.days_until_expiry {
        family(
            &mut text,
            "nhsmail_password_days_until_expiry",
            "gauge",
            "Whole days until the password expires, negative once expired.",
        );
        let _ = writeln!(text, "nhsmail_password_days_until_expiry {days}");
    }

    family(&mut text, "nhsmail_upload_duration_seconds", "summary", "Duration of upload cycles.");
    let total = metrics.upload_microseconds.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(text, "nhsmail_upload_duration_seconds_sum {total}");
    let _ = writeln!(text, "nhsmail_upload_duration_seconds_count {}", metrics.upload_count.load(Ordering::Relaxed));
    family(&mut text, "nhsmail_last_upload_duration_seconds", "gauge", "Duration of the last upload cycle.");
    let last = metrics.last_upload_microseconds.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(text, "nhsmail_last_upload_duration_seconds {last}");

    family(
        &mut text,
        "nhsmail_oldest_queued_message_age_seconds",
        "gauge",
        "Age of the oldest queued message; 0 when none is queued.",
    );
    let oldest = app.store.oldest_queued_at().await.ok().flatten();
    let age = oldest.map_or(0, |created| (now - created).num_seconds().max(0));
    let _ = writeln!(text, "nhsmail_oldest_queued_message_age_seconds {age}");

    family(&mut text, "nhsmail_update_available", "gauge", "1 when the update feed names a newer version, else 0.");
    let available = app.update_info().is_some_and(|info| info.available);
    let _ = writeln!(text, "nhsmail_update_available {}", u8::from(available));

    family(&mut text, "nhsmail_build_info", "gauge", "Always 1; the version label is the agent's version.");
    let _ = writeln!(text, "nhsmail_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    text
}

fn family(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} {kind}");
}

/// Serves `GET /metrics` on `listener` until `shutdown` is cancelled. Any other path returns 404.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a metrics connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let service = service_fn(move |request: http::Request<Incoming>| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(respond(&app, &request).await) }
        });
        tokio::spawn(async move {
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%peer, %error, "metrics connection failed"),
                Err(_) => tracing::debug!(%peer, "metrics connection closed after the timeout"),
            }
        });
    }
    tracing::info!("metrics endpoint stopped");
}

async fn respond(app: &App, request: &http::Request<Incoming>) -> http::Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&http::Method::GET, "/metrics") => (http::StatusCode::OK, CONTENT_TYPE, render(app).await),
        (_, "/metrics") => (http::StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n".to_string()),
        _ => (http::StatusCode::NOT_FOUND, "text/plain", "metrics are at /metrics\n".to_string()),
    };
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a response with a valid status and header builds")
}
