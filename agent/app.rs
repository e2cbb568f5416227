//! The agent's operations as the gRPC layer calls them: validate, call the store, the credentials or the upload
//! cycle, and return core types. Nothing here knows about tonic; [`AppError`] is mapped to a gRPC status in `api`.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::config::{Config, TextIn};
use crate::credentials::{CredentialError, CredentialManager, Gate, PasswordState, PasswordStatus};
use crate::metrics::Metrics;
use crate::oauth::{OAuthErrorKind, Tokens};
use crate::queue::{MessageStatus, Priority};
use crate::rotation::{Actor, RotationOutcome, RotationRequest, schedule};
use crate::secret::Secret;
use crate::sms::{self, Encoding};
use crate::store::{
    AuditEvent, EventRecord, FeedEvent, InboundEmail, MessageRecord, NewMessage, OptOut, OptOutSource, ReplyFilter,
    ReplyRecord, Store, StoreError, Submission, UploadReport,
};
use crate::transport::Credentials;
use crate::transport::imap::{ImapClient, ImapErrorKind};
use crate::transport::smtp::{SmtpClient, SmtpErrorKind};
use crate::update::UpdateInfo;

/// Maximum length of an idempotency key, a client reference or an opt-out note, in characters.
pub const MAX_KEY_CHARS: usize = 200;
/// How often a watch looks for new events when it has caught up.
const WATCH_POLL: std::time::Duration = std::time::Duration::from_millis(250);
/// Events read from the feed per query.
const WATCH_BATCH: u32 = 500;
/// Events buffered per watcher before it waits for the client to read.
const WATCH_BUFFER: usize = 256;
/// Most messages accepted in one SubmitMessages call.
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A request field is unacceptable; `field` is the proto field path, e.g. `messages[3].to`.
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    /// The request is valid but the current state forbids it, e.g. cancelling a sent message.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A dependency (the mailbox servers) could not be reached; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    /// The disk is full: nothing was stored.
    #[error("the agent's disk is full; nothing was stored. Free space in the data directory and try again")]
    DiskFull,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> AppError {
        match error {
            StoreError::DiskFull { .. } => AppError::DiskFull,
            StoreError::NotFound { what, id } => AppError::NotFound { what, id: shorten(&id) },
            error @ (StoreError::Conflict(_) | StoreError::InvalidTransition { .. }) => {
                AppError::FailedPrecondition(error.to_string())
            }
            StoreError::InvalidPageToken(token) => AppError::InvalidArgument {
                field: "page_token".into(),
                message: format!(
                    "{:?} is not a token from a previous page; omit it to start at the first page",
                    shorten(&token)
                ),
            },
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<CredentialError> for AppError {
    fn from(error: CredentialError) -> AppError {
        match error {
            CredentialError::Store(error) => error.into(),
            other => AppError::FailedPrecondition(other.to_string()),
        }
    }
}

/// One submission as the API received it, before validation.
#[derive(Debug, Clone, Default)]
pub struct SubmitRequest {
    pub to: String,
    pub text: String,
    pub priority: Option<Priority>,
    pub send_after: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub idempotency_key: String,
    pub client_reference: String,
}

/// A condition for a person to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct AgentStatus {
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub queue_counts: Vec<(MessageStatus, u64)>,
    pub warnings: Vec<Warning>,
    pub password_state: PasswordState,
    pub sending_paused_reason: Option<String>,
    pub last_upload_at: Option<DateTime<Utc>>,
    pub last_send_at: Option<DateTime<Utc>>,
    pub oldest_queued_at: Option<DateTime<Utc>>,
    pub password_days_until_expiry: Option<i64>,
    /// The last successful update feed check; `None` without a feed or before the first check.
    pub update: Option<UpdateInfo>,
}

#[derive(Debug, Clone)]
pub struct Connectivity {
    pub upload_interval_minutes: u32,
    pub password: PasswordStatus,
    pub auto_manage: bool,
    pub next_rotation_at: Option<DateTime<Utc>>,
    pub max_age_days: u32,
    pub next_upload_at: Option<DateTime<Utc>>,
    pub smtp_server: String,
    pub imap_server: String,
    pub sending_paused_reason: Option<String>,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, Default)]
pub struct ConnectivityUpdate {
    pub upload_interval_minutes: Option<u32>,
    pub username: Option<String>,
    pub auto_manage: Option<bool>,
}

/// A request to run the upload cycle now. The cycle sends its report through this channel.
pub type UploadTrigger = oneshot::Sender<UploadReport>;

/// Shared state of the running agent.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub credentials: Arc<CredentialManager>,
    /// Woken on every submission so the sender does not wait for its next poll.
    pub new_message: Notify,
    /// Woken when the upload interval changes.
    pub schedule_changed: Notify,
    /// Woken when `auto_manage` changes, so a rotation that became due starts at once.
    pub rotation_changed: Notify,
    pub upload_triggers: mpsc::Sender<UploadTrigger>,
    /// Held for reading while a message is handed to SMTP, and for writing by a rotation, which must not start
    /// while a send signed in with the old password is under way.
    pub send_guard: tokio::sync::RwLock<()>,
    rotation_requests: mpsc::Sender<RotationRequest>,
    rotation_receiver: std::sync::Mutex<Option<mpsc::Receiver<RotationRequest>>>,
    pub metrics: Metrics,
    started: Instant,
    next_upload_at: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// The last update feed check: its result, or why the feed could not be used. Kept in memory only, because the
    /// next upload cycle checks again.
    update_check: std::sync::Mutex<Option<Result<UpdateInfo, String>>>,
}

impl App {
    pub fn new(
        config: Config,
        store: Store,
        credentials: Arc<CredentialManager>,
    ) -> (Arc<App>, mpsc::Receiver<UploadTrigger>) {
        let (upload_triggers, trigger_receiver) = mpsc::channel(16);
        let (rotation_requests, rotation_receiver) = mpsc::channel(4);
        let app = App {
            config,
            store,
            credentials,
            new_message: Notify::new(),
            schedule_changed: Notify::new(),
            rotation_changed: Notify::new(),
            upload_triggers,
            send_guard: tokio::sync::RwLock::new(()),
            rotation_requests,
            rotation_receiver: std::sync::Mutex::new(Some(rotation_receiver)),
            metrics: Metrics::default(),
            started: Instant::now(),
            next_upload_at: std::sync::Mutex::new(None),
            update_check: std::sync::Mutex::new(None),
        };
        (Arc::new(app), trigger_receiver)
    }

    /// Validates every request, then queues them all in one transaction; one invalid request stores nothing.
    ///
    /// `field_prefix` is `""` for SubmitMessage and `"messages"` for SubmitMessages, so errors name the index.
    pub async fn submit(
        &self,
        caller: &str,
        requests: Vec<SubmitRequest>,
        field_prefix: &str,
    ) -> Result<Vec<Submission>, AppError> {
        if field_prefix.is_empty() && requests.len() != 1 {
            return Err(AppError::Internal("a single submission must carry exactly one message".into()));
        }
        if requests.is_empty() || requests.len() > MAX_BATCH {
            return Err(AppError::InvalidArgument {
                field: field_prefix.to_string(),
                message: format!("must contain 1 to {MAX_BATCH} messages, not {}", requests.len()),
            });
        }
        let now = Utc::now();
        let mut batch = Vec::with_capacity(requests.len());
        for (index, request) in requests.into_iter().enumerate() {
            let prefix = if field_prefix.is_empty() { String::new() } else { format!("{field_prefix}[{index}].") };
            batch.push(self.validate(caller, request, now, &prefix)?);
        }
        let stored = match self.store.submit(batch).await {
            Err(StoreError::OptedOut { index, e164, since }) => {
                let field =
                    if field_prefix.is_empty() { "to".to_string() } else { format!("{field_prefix}[{index}].to") };
                return Err(AppError::FailedPrecondition(format!(
                    "{field}: {e164} opted out of texts on {}, so nothing was queued. If the patient asks to \
                     receive texts again, run `nhsmail-ctl optouts remove {e164}`",
                    since.format("%Y-%m-%d %H:%M UTC")
                )));
            }
            other => other?,
        };
        if stored.iter().any(|submission| !submission.duplicate) {
            self.new_message.notify_one();
        }
        Ok(stored)
    }

    fn validate(
        &self,
        caller: &str,
        request: SubmitRequest,
        now: DateTime<Utc>,
        prefix: &str,
    ) -> Result<NewMessage, AppError> {
        let invalid =
            |field: &str, message: String| AppError::InvalidArgument { field: format!("{prefix}{field}"), message };
        let nhsmail = &self.config.nhsmail;

        let number = sms::normalise_number(&request.to).map_err(|error| invalid("to", error.to_string()))?;
        let text = sms::validate_text(&request.text, self.config.sending.max_text_chars)
            .map_err(|error| invalid("text", error.to_string()))?;
        for (field, value) in
            [("idempotency_key", &request.idempotency_key), ("client_reference", &request.client_reference)]
        {
            let length = value.chars().count();
            if length > MAX_KEY_CHARS {
                return Err(invalid(field, format!("is {length} characters long; the maximum is {MAX_KEY_CHARS}")));
            }
            if value.chars().any(char::is_control) {
                return Err(invalid(field, "contains a control character".into()));
            }
        }

        let lifetime =
            chrono::Duration::from_std(self.config.sending.max_lifetime).unwrap_or(chrono::Duration::hours(72));
        let latest = now + lifetime;
        if let Some(expires_at) = request.expires_at
            && expires_at <= now
        {
            return Err(invalid("expires_at", format!("{} is in the past", expires_at.to_rfc3339())));
        }
        if let Some(send_after) = request.send_after {
            if send_after >= latest {
                return Err(invalid(
                    "send_after",
                    format!(
                        "{} is beyond the maximum lifetime of {} hours",
                        send_after.to_rfc3339(),
                        lifetime.num_hours()
                    ),
                ));
            }
            if let Some(expires_at) = request.expires_at
                && expires_at <= send_after
            {
                return Err(invalid("expires_at", format!("{} is not after send_after", expires_at.to_rfc3339())));
            }
        }

        Ok(NewMessage {
            id: None,
            to_e164: number.e164().to_string(),
            gateway_address: sms::gateway_address(&number, nhsmail.address_form, &nhsmail.sms_domain),
            text: request.text,
            priority: request.priority.unwrap_or(Priority::Normal),
            encoding: match text.encoding {
                Encoding::Gsm7 => "gsm7".into(),
                Encoding::Ucs2 => "ucs2".into(),
            },
            parts: text.parts,
            length: text.length,
            created_at: now,
            send_after: request.send_after,
            expires_at: request.expires_at.map_or(latest, |expires_at| expires_at.min(latest)),
            caller: caller.to_string(),
            idempotency_key: request.idempotency_key,
            client_reference: request.client_reference,
        })
    }

    pub async fn get_message(&self, id: &str) -> Result<(MessageRecord, Vec<EventRecord>), AppError> {
        self.store.get_message(id).await?.ok_or_else(|| AppError::NotFound { what: "message", id: shorten(id) })
    }

    /// Returns one page of messages, newest first, and the token of the next page if there is one.
    pub async fn list_messages(
        &self,
        status: Option<MessageStatus>,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<MessageRecord>, Option<String>), AppError> {
        let page_size = page_size_or_default(page_size, "page_size")?;
        let token = Some(page_token).filter(|token| !token.is_empty());
        Ok(self.store.list_messages(status, page_size, token).await?)
    }

    pub async fn cancel_message(&self, id: &str) -> Result<MessageRecord, AppError> {
        Ok(self.store.cancel(id, Utc::now(), "cancelled by a caller").await?)
    }

    /// Returns one page of replies, newest first; `filter.from_e164` may hold a number in any accepted form.
    pub async fn list_replies(
        &self,
        mut filter: ReplyFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<ReplyRecord>, Option<String>), AppError> {
        let page_size = page_size_or_default(page_size, "page_size")?;
        if let Some(from) = filter.from_e164.take() {
            let number = sms::normalise_number(&from)
                .map_err(|error| AppError::InvalidArgument { field: "from".into(), message: error.to_string() })?;
            filter.from_e164 = Some(number.e164().to_string());
        }
        let token = Some(page_token).filter(|token| !token.is_empty());
        Ok(self.store.list_replies(filter, page_size, token).await?)
    }

    /// Returns one page of opted-out numbers, most recent first.
    pub async fn list_opt_outs(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<OptOut>, Option<String>), AppError> {
        let page_size = page_size_or_default(page_size, "page_size")?;
        let token = Some(page_token).filter(|token| !token.is_empty());
        Ok(self.store.list_opt_outs(page_size, token).await?)
    }

    /// Opts a number out by an operator's request; a number already opted out keeps its date.
    pub async fn add_opt_out(&self, number: &str, note: &str) -> Result<OptOut, AppError> {
        let e164 = opt_out_number(number)?;
        check_note(note)?;
        let opt_out = self.store.add_opt_out(&e164, OptOutSource::Manual, note, Utc::now()).await?;
        tracing::info!(number = %e164, "number opted out by an operator");
        Ok(opt_out)
    }

    /// Opts a number back in; returns whether it was opted out.
    pub async fn remove_opt_out(&self, number: &str, note: &str) -> Result<bool, AppError> {
        let e164 = opt_out_number(number)?;
        check_note(note)?;
        let removed = self.store.remove_opt_out(&e164, OptOutSource::Manual, note, Utc::now()).await?;
        tracing::info!(number = %e164, removed, "number opted back in by an operator");
        Ok(removed)
    }

    /// Returns one page of inbound emails kept for review, newest first.
    pub async fn list_inbound_for_review(
        &self,
        include_reviewed: bool,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<InboundEmail>, Option<String>), AppError> {
        let page_size = page_size_or_default(page_size, "page_size")?;
        let token = Some(page_token).filter(|token| !token.is_empty());
        Ok(self.store.list_inbound_for_review(include_reviewed, page_size, token).await?)
    }

    /// Returns one inbound email with its raw content.
    pub async fn inbound_email(&self, id: u64) -> Result<InboundEmail, AppError> {
        let key = inbound_id(id)?;
        self.store
            .inbound_email(key)
            .await?
            .ok_or_else(|| AppError::NotFound { what: "inbound email", id: id.to_string() })
    }

    /// Marks an inbound email reviewed.
    pub async fn mark_reviewed(&self, id: u64) -> Result<InboundEmail, AppError> {
        let email = self.store.mark_reviewed(inbound_id(id)?).await?;
        tracing::info!(inbound_id = id, "inbound email marked reviewed");
        Ok(email)
    }

    /// Streams feed events into the returned channel: first those after `after` (or, when `None`, only events
    /// recorded from now on), then new ones as they are committed. The task stops when the receiver is dropped.
    pub async fn watch_events(
        &self,
        after: Option<u64>,
    ) -> Result<mpsc::Receiver<Result<FeedEvent, AppError>>, AppError> {
        let mut cursor = match after {
            Some(id) => i64::try_from(id).map_err(|_| AppError::InvalidArgument {
                field: "after_event_id".into(),
                message: format!("{id} is larger than any event id"),
            })?,
            None => self.store.last_event_id().await?,
        };
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let store = self.store.clone();
        tokio::spawn(async move {
            loop {
                let events = match store.events_after(cursor, WATCH_BATCH).await {
                    Ok(events) => events,
                    Err(error) => {
                        tracing::error!(%error, cursor, "cannot read the event feed; ending the watch");
                        let _ = sender.send(Err(error.into())).await;
                        return;
                    }
                };
                if events.is_empty() {
                    tokio::select! {
                        _ = sender.closed() => return,
                        _ = tokio::time::sleep(WATCH_POLL) => continue,
                    }
                }
                for event in events {
                    cursor = event.event_id();
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(receiver)
    }

    pub async fn status(&self) -> Result<AgentStatus, AppError> {
        let now = Utc::now();
        let store = &self.store;
        let password = self.credentials.status(now);
        Ok(AgentStatus {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            queue_counts: store.count_by_status().await?.into_iter().filter(|(_, count)| *count > 0).collect(),
            warnings: self.warnings(&password, self.auto_manage().await?),
            password_state: password.state,
            sending_paused_reason: self.paused_reason(),
            last_upload_at: store.last_upload_report().await?.map(|report| report.finished_at),
            last_send_at: store.last_sent_at().await?,
            oldest_queued_at: store.oldest_queued_at().await?,
            password_days_until_expiry: password.days_until_expiry,
            update: self.update_info(),
        })
    }

    /// Records the outcome of an update feed check, so GetStatus reports it until the next check.
    pub fn set_update_check(&self, outcome: Result<UpdateInfo, String>) {
        *self.update_check.lock().expect("update lock poisoned") = Some(outcome);
    }

    /// Returns the last successful update feed check, if the last check succeeded.
    pub fn update_info(&self) -> Option<UpdateInfo> {
        self.update_check.lock().expect("update lock poisoned").clone().and_then(Result::ok)
    }

    pub async fn connectivity(&self) -> Result<Connectivity, AppError> {
        let password = self.credentials.status(Utc::now());
        let nhsmail = &self.config.nhsmail;
        let auto_manage = self.auto_manage().await?;
        let next_rotation_at = if crate::rotation::changer_for(self).is_ok() {
            schedule::next_rotation_at(&password, auto_manage, self.config.password.rotate_days_before_expiry)
        } else {
            None
        };
        Ok(Connectivity {
            upload_interval_minutes: self.upload_interval_minutes().await?,
            auto_manage,
            next_rotation_at,
            max_age_days: self.config.password.max_age_days,
            next_upload_at: *self.next_upload_at.lock().expect("schedule lock poisoned"),
            smtp_server: format!("{}:{}", nhsmail.smtp.host, nhsmail.smtp.port),
            imap_server: format!("{}:{}", nhsmail.imap.host, nhsmail.imap.port),
            sending_paused_reason: self.paused_reason(),
            warnings: self.warnings(&password, auto_manage),
            password,
        })
    }

    pub async fn update_connectivity(&self, update: ConnectivityUpdate) -> Result<Connectivity, AppError> {
        if let Some(minutes) = update.upload_interval_minutes
            && !(1..=1440).contains(&minutes)
        {
            return Err(AppError::InvalidArgument {
                field: "upload_interval_minutes".into(),
                message: format!("{minutes} is outside 1 to 1440 minutes"),
            });
        }
        if let Some(username) = &update.username
            && !looks_like_address(username)
        {
            return Err(AppError::InvalidArgument {
                field: "username".into(),
                message: format!("{username:?} is not an email address such as practice.sms@example.org"),
            });
        }

        if let Some(minutes) = update.upload_interval_minutes {
            self.store.set_setting("upload_interval_minutes", &minutes.to_string(), Utc::now()).await?;
            self.schedule_changed.notify_one();
            tracing::info!(minutes, "upload interval changed");
        }
        if let Some(auto_manage) = update.auto_manage {
            self.store.set_setting("auto_manage", if auto_manage { "true" } else { "false" }, Utc::now()).await?;
            tracing::info!(auto_manage, "automatic password management changed");
            self.rotation_changed.notify_one();
        }
        if let Some(username) = update.username {
            self.credentials.set_username(username.trim().to_string()).await?;
            tracing::info!(username = %username.trim(), "mailbox username changed");
        }
        self.connectivity().await
    }

    /// Checks and stores a new password, and writes an audit row naming who asked; returns whether the servers
    /// accepted it before it was stored.
    pub async fn update_password(
        &self,
        password: String,
        confirmation: String,
        skip_verification: bool,
    ) -> Result<bool, AppError> {
        if password.is_empty() {
            return Err(AppError::InvalidArgument { field: "password".into(), message: "must not be empty".into() });
        }
        if password != confirmation {
            return Err(AppError::InvalidArgument {
                field: "confirmation".into(),
                message: "does not match password; type the same password twice".into(),
            });
        }
        if password.chars().any(char::is_control) {
            return Err(AppError::InvalidArgument {
                field: "password".into(),
                message: "contains a control character".into(),
            });
        }
        let password = Secret::new(password);
        // Held until the password is stored, so a rotation cannot read the old password between the check and the
        // store and then sign in with it.
        let _sign_ins = self.credentials.sign_in_lock().await;
        if skip_verification {
            self.credentials.set_password(password, None).await?;
            self.new_message.notify_one();
            return Ok(false);
        }

        let username = self.credentials.username().ok_or(CredentialError::NoUsername)?;
        let tokens = self.verify(username, &password).await?;
        self.credentials.set_password(password, Some(Utc::now())).await?;
        if let Some(tokens) = tokens {
            self.credentials.adopt_tokens(tokens);
        }
        self.new_message.notify_one();
        Ok(true)
    }

    /// Signs in once with SMTP AUTH and once with IMAP. The caller holds the sign-in lock, so no other task signs in
    /// meanwhile. In OAuth 2.0 mode a password grant comes first and both sign-ins use its access token, which is
    /// returned.
    async fn verify(&self, username: String, password: &Secret) -> Result<Option<Tokens>, AppError> {
        let (candidate, tokens) = match self.credentials.oauth() {
            None => (Credentials::password(username, password.clone()), None),
            Some(oauth) => match oauth.password_grant(&username, password).await {
                Ok(tokens) => (Credentials::access_token(username, tokens.access_token.clone()), Some(tokens)),
                Err(error) if error.kind() == OAuthErrorKind::Rejected => {
                    return Err(AppError::FailedPrecondition(format!(
                        "the token endpoint rejected the password, so it was not stored: {error}. Check the password and try again"
                    )));
                }
                Err(error) => {
                    return Err(AppError::Unavailable(format!(
                        "could not check the password with the token endpoint: {error}. Try again, or use --skip-verification"
                    )));
                }
            },
        };
        let candidate = &candidate;
        let settings = crate::sender::smtp_settings(&self.config);
        let smtp = SmtpClient::new(settings, candidate.clone())
            .map_err(|error| AppError::FailedPrecondition(error.to_string()))?;
        if let Err(error) = smtp.verify_login().await {
            return Err(match error.kind() {
                SmtpErrorKind::Auth => AppError::FailedPrecondition(format!(
                    "the SMTP server rejected the password, so it was not stored: {error}. Check the password and try again"
                )),
                _ => AppError::Unavailable(format!(
                    "could not check the password with the SMTP server: {error}. Try again, or use --skip-verification"
                )),
            });
        }
        let imap = crate::upload::imap_settings(&self.config);
        if let Err(error) = ImapClient::verify_login(&imap, candidate).await {
            return Err(match error.kind() {
                ImapErrorKind::Auth => AppError::FailedPrecondition(format!(
                    "the IMAP server rejected the password, so it was not stored: {error}. Check the password and try again"
                )),
                _ => AppError::Unavailable(format!(
                    "could not check the password with the IMAP server: {error}. Try again, or use --skip-verification"
                )),
            });
        }
        Ok(tokens)
    }

    /// Hands the rotation task its request channel; returns `None` after the first call.
    pub fn take_rotation_requests(&self) -> Option<mpsc::Receiver<RotationRequest>> {
        self.rotation_receiver.lock().expect("rotation channel lock poisoned").take()
    }

    /// Rotates the password now and returns how the attempt ended.
    pub async fn rotate_password(&self, actor: Actor) -> Result<RotationOutcome, AppError> {
        let (reply, outcome) = oneshot::channel();
        self.rotation_requests.send((actor, reply)).await.map_err(|_| {
            AppError::Unavailable("password rotation is not running; the agent is shutting down".into())
        })?;
        outcome.await.map_err(|_| AppError::Unavailable("password rotation stopped before it finished".into()))?
    }

    /// Returns the current password and writes an audit row naming who asked.
    /// Returns the current password and any pending one, and writes an audit row naming who asked.
    pub async fn reveal_password(&self, actor: Actor) -> Result<(Secret, Option<Secret>), AppError> {
        let password = self.credentials.current_password();
        let pending = self.credentials.pending_password();
        let outcome = if password.is_some() { "ok" } else { "no_password" };
        self.store
            .record_audit(AuditEvent {
                at: Utc::now(),
                caller: actor.name,
                role: actor.role,
                peer: actor.peer,
                action: "RevealPassword".into(),
                target: "mailbox password".into(),
                outcome: outcome.into(),
                detail: pending.as_ref().map(|_| "the pending password was revealed too".into()),
            })
            .await?;
        let password = password.ok_or_else(|| {
            AppError::FailedPrecondition("no mailbox password is set, so there is nothing to reveal".into())
        })?;
        Ok((password, pending))
    }

    /// Runs an upload cycle now, or joins the one already running, and returns its report.
    pub async fn trigger_upload(&self) -> Result<UploadReport, AppError> {
        let (reply, report) = oneshot::channel();
        self.upload_triggers
            .send(reply)
            .await
            .map_err(|_| AppError::Unavailable("the upload cycle is not running; the agent is shutting down".into()))?;
        report.await.map_err(|_| AppError::Unavailable("the upload cycle stopped before it finished".into()))
    }

    pub async fn upload_interval_minutes(&self) -> Result<u32, AppError> {
        let stored = self.store.get_setting("upload_interval_minutes").await?;
        Ok(stored.and_then(|value| value.parse().ok()).unwrap_or(self.config.agent.upload_interval_minutes))
    }

    pub async fn auto_manage(&self) -> Result<bool, AppError> {
        let stored = self.store.get_setting("auto_manage").await?;
        Ok(stored.map_or(self.config.password.auto_manage, |value| value == "true"))
    }

    pub fn set_next_upload_at(&self, at: Option<DateTime<Utc>>) {
        *self.next_upload_at.lock().expect("schedule lock poisoned") = at;
    }

    /// Returns where the sender puts the text in the email.
    pub fn text_in(&self) -> TextIn {
        self.config.nhsmail.text_in
    }

    fn paused_reason(&self) -> Option<String> {
        match &*self.credentials.gate().borrow() {
            Gate::Open => None,
            Gate::Closed { reason } => Some(reason.clone()),
        }
    }

    fn warnings(&self, password: &PasswordStatus, auto_manage: bool) -> Vec<Warning> {
        let unavailable = crate::rotation::changer_for(self).err();
        let settings = &self.config.password;
        let mut warnings =
            schedule::password_warnings(password, auto_manage, unavailable.as_deref(), &settings.warn_days, Utc::now());
        if password.username.is_none() {
            warnings.push(Warning {
                code: "username_unset",
                message: "No mailbox username is set. Set it with `nhsmail-ctl connectivity set --username NAME`."
                    .into(),
            });
        }
        if let Some(Err(error)) = &*self.update_check.lock().expect("update lock poisoned") {
            warnings.push(Warning {
                code: "update_feed_invalid",
                message: format!(
                    "The update feed could not be checked: {error}. Fix the feed or [agent] update_feed; sending is not affected."
                ),
            });
        }
        warnings
    }
}

/// Maximum characters of a caller's value repeated in an error, so a huge value cannot overflow the gRPC trailer.
const MAX_ECHO_CHARS: usize = 64;

/// Returns `value` cut to [`MAX_ECHO_CHARS`] characters, with "…" when cut.
fn shorten(value: &str) -> String {
    if value.chars().count() <= MAX_ECHO_CHARS {
        return value.to_string();
    }
    let mut short: String = value.chars().take(MAX_ECHO_CHARS - 1).collect();
    short.push('…');
    short
}

fn inbound_id(id: u64) -> Result<i64, AppError> {
    i64::try_from(id).map_err(|_| AppError::NotFound { what: "inbound email", id: id.to_string() })
}

fn opt_out_number(number: &str) -> Result<String, AppError> {
    sms::normalise_number(number)
        .map(|number| number.e164().to_string())
        .map_err(|error| AppError::InvalidArgument { field: "number".into(), message: error.to_string() })
}

fn check_note(note: &str) -> Result<(), AppError> {
    let length = note.chars().count();
    if length > MAX_KEY_CHARS {
        return Err(AppError::InvalidArgument {
            field: "note".into(),
            message: format!("is {length} characters long; the maximum is {MAX_KEY_CHARS}"),
        });
    }
    if note.chars().any(char::is_control) {
        return Err(AppError::InvalidArgument { field: "note".into(), message: "contains a control character".into() });
    }
    Ok(())
}

fn page_size_or_default(page_size: u32, field: &str) -> Result<u32, AppError> {
    match page_size {
        0 => Ok(100),
        1..=1000 => Ok(page_size),
        _ => {
            Err(AppError::InvalidArgument { field: field.into(), message: format!("{page_size} is outside 1 to 1000") })
        }
    }
}

fn looks_like_address(value: &str) -> bool {
    let value = value.trim();
    let Some((local, domain)) = value.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !value.contains(|c: char| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
}
