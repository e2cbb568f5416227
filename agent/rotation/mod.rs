//! Automatic password rotation, written ahead like a database so that no crash can lose the password or lock the
//! account.
//!
//! A rotation closes the sending gate and waits for the message being sent, stores the new password encrypted as
//! *pending*, calls the change endpoint to switch to it, confirms it with the token endpoint, SMTP and IMAP, and
//! only then commits it as current. Whenever a step fails in a way that leaves the server's password unknown, and
//! at start-up with a pending password, [`Engine::reconcile`] finds out which password the server accepts by trying
//! the pending one once and then the current one once. When neither works the agent stops signing in and waits
//! for a person, because every further attempt would count toward NHSmail's lockout.

pub mod change;
pub mod failpoint;
pub mod schedule;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppError};
use crate::credentials::{PasswordState, generator, history};
use crate::oauth::{OAuthErrorKind, Tokens};
use crate::secret::Secret;
use crate::store::AuditEvent;
use crate::transport::imap::{ImapClient, ImapErrorKind};
use crate::transport::smtp::{SmtpClient, SmtpErrorKind};
use crate::transport::{Credentials, TlsSettings};
use change::{ChangeError, PasswordChanger};

/// The maximum sleep between checks of the schedule, so a change of `auto_manage` or of the clock is noticed.
const RECHECK: StdDuration = StdDuration::from_secs(60);
/// The first wait before reconciling again when the servers could not be reached; doubles up to ten minutes.
const RECONCILE_RETRY: StdDuration = StdDuration::from_secs(15);
const MAX_RECONCILE_RETRY: StdDuration = StdDuration::from_secs(600);
/// The wait between verification attempts while a changed password has not yet reached every server.
const VERIFY_RETRY: StdDuration = StdDuration::from_secs(1);

/// The caller of a rotation or a reveal, for the audit trail.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub role: String,
    pub peer: Option<String>,
}

impl Actor {
    /// Returns the agent itself as the caller, for scheduled rotations and start-up reconciliation.
    pub fn agent() -> Actor {
        Actor { name: "agent".into(), role: "system".into(), peer: None }
    }
}

/// The result of a rotation attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationOutcome {
    /// Whether a new password was committed.
    pub rotated: bool,
    /// One sentence on how the attempt ended, never a secret.
    pub outcome: String,
}

/// A request to rotate now, with the channel for its outcome.
pub type RotationRequest = (Actor, oneshot::Sender<Result<RotationOutcome, AppError>>);

/// The result of signing in once with one password.
enum Attempt {
    Accepted(Option<Tokens>),
    Rejected(String),
    Unavailable(String),
}

/// The end of a reconciliation.
enum Reconciled {
    Committed,
    Discarded,
    NeedsAttention,
    /// The servers could not be reached; the pending password stays and reconciliation runs again later.
    Unresolved,
}

/// Runs rotations on schedule and on request until `shutdown` is cancelled. A pending password from before a crash
/// is reconciled first.
pub async fn run(app: Arc<App>, mut requests: mpsc::Receiver<RotationRequest>, shutdown: CancellationToken) {
    let mut engine = Engine::new(app.clone());
    if let Some(reason) = &engine.unavailable {
        tracing::info!(reason, "automatic password changes are off");
    }
    let mut retry = RECONCILE_RETRY;
    let mut unresolved = engine.needs_reconciliation();

    loop {
        if unresolved {
            match engine.reconcile("the agent restarted or a change was interrupted").await {
                Reconciled::Unresolved => {}
                _ => {
                    unresolved = false;
                    retry = RECONCILE_RETRY;
                }
            }
        }
        let wait = if unresolved { retry } else { engine.until_due().await };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            request = requests.recv() => {
                let Some((actor, reply)) = request else { break };
                let result = engine.rotate(&actor, "manual").await;
                unresolved = engine.needs_reconciliation();
                let _ = reply.send(result);
            }
            _ = app.rotation_changed.notified(), if !unresolved => unresolved = engine.rotate_if_due().await,
            _ = tokio::time::sleep(wait) => {
                if unresolved {
                    retry = (retry * 2).min(MAX_RECONCILE_RETRY);
                    continue;
                }
                unresolved = engine.rotate_if_due().await;
            }
        }
    }
    tracing::info!("password rotation stopped");
}

/// Returns why automatic changes cannot run with `app`'s settings, or the change endpoint's client.
pub fn changer_for(app: &App) -> Result<PasswordChanger, String> {
    if app.credentials.oauth().is_none() {
        return Err("automatic password changes need OAuth 2.0 sign-in ([nhsmail] auth = \"oauth2\")".into());
    }
    let url = match (&app.config.password.change_url, &app.config.nhsmail.graph_url) {
        (Some(url), _) => url.clone(),
        (None, Some(graph)) => {
            let joined = format!("{}/me/changePassword", graph.as_str().trim_end_matches('/'));
            url::Url::parse(&joined)
                .map_err(|error| format!("cannot build the change URL from [nhsmail] graph_url: {error}"))?
        }
        (None, None) => {
            return Err("automatic password changes need [nhsmail] graph_url or [password] change_url".into());
        }
    };
    let tls = TlsSettings { extra_ca_file: app.config.nhsmail.ca_file.clone() };
    PasswordChanger::new(url, &tls, app.config.nhsmail.network_timeout).map_err(|error| error.to_string())
}

/// Runs the steps of one rotation and the reconciliation after it.
struct Engine {
    app: Arc<App>,
    changer: Option<PasswordChanger>,
    /// The reason automatic changes cannot run, when they cannot.
    unavailable: Option<String>,
    /// Set once the pending password was rejected in this process, so reconciliation does not try it again.
    pending_rejected: bool,
    /// Scheduled rotations in a row that could not start, and the time before which none is tried again.
    start_failures: u32,
    not_before: Option<tokio::time::Instant>,
}

impl Engine {
    fn new(app: Arc<App>) -> Engine {
        let (changer, unavailable) = match changer_for(&app) {
            Ok(changer) => (Some(changer), None),
            Err(reason) => (None, Some(reason)),
        };
        Engine { app, changer, unavailable, pending_rejected: false, start_failures: 0, not_before: None }
    }

    /// Returns whether a pending password waits to be reconciled. Never after `needs_attention`, which only a
    /// person ends, because each attempt would count toward the lockout.
    fn needs_reconciliation(&self) -> bool {
        let status = self.app.credentials.status(Utc::now());
        // needs_attention keeps the pending password for a person, and only a person may end it.
        status.state != PasswordState::NeedsAttention && (status.pending || status.state == PasswordState::Rotating)
    }

    /// Returns how long a scheduled rotation that could not start still waits before the next try.
    fn held_for(&self) -> Option<StdDuration> {
        let now = tokio::time::Instant::now();
        self.not_before.filter(|at| *at > now).map(|at| at - now)
    }

    async fn is_due(&self) -> bool {
        if self.held_for().is_some() {
            return false;
        }
        let Ok(auto_manage) = self.app.auto_manage().await else { return false };
        let status = self.app.credentials.status(Utc::now());
        let settings = &self.app.config.password;
        self.changer.is_some()
            && schedule::next_rotation_at(&status, auto_manage, settings.rotate_days_before_expiry)
                .is_some_and(|due| due <= Utc::now())
    }

    /// Runs a scheduled rotation if one is due, and returns whether a pending password is left to reconcile.
    async fn rotate_if_due(&mut self) -> bool {
        if !self.is_due().await {
            return self.needs_reconciliation();
        }
        match self.rotate(&Actor::agent(), "schedule").await {
            Ok(_) => self.start_failures = 0,
            Err(error) => {
                // The due date stays in the past, so without this wait the next check would try again at once.
                self.start_failures += 1;
                let delay = schedule::backoff(self.start_failures).to_std().unwrap_or(RECHECK);
                self.not_before = Some(tokio::time::Instant::now() + delay);
                tracing::warn!(
                    %error,
                    attempt = self.start_failures,
                    delay_seconds = delay.as_secs(),
                    "scheduled password rotation did not start; trying again later"
                );
            }
        }
        self.needs_reconciliation()
    }

    async fn until_due(&self) -> StdDuration {
        if let Some(held) = self.held_for() {
            return held.min(RECHECK);
        }
        let Ok(auto_manage) = self.app.auto_manage().await else { return RECHECK };
        let status = self.app.credentials.status(Utc::now());
        let due = schedule::next_rotation_at(&status, auto_manage, self.app.config.password.rotate_days_before_expiry);
        match due {
            Some(due) => (due - Utc::now()).to_std().unwrap_or(StdDuration::ZERO).min(RECHECK),
            None => RECHECK,
        }
    }

    /// Rotates the password now. Errors are for a rotation that could not start; how a started one ended is in the
    /// outcome.
    async fn rotate(&mut self, actor: &Actor, trigger: &str) -> Result<RotationOutcome, AppError> {
        let Some(changer) = &self.changer else {
            let reason = self.unavailable.clone().unwrap_or_default();
            return Err(AppError::FailedPrecondition(format!("cannot change the password: {reason}")));
        };
        let credentials = self.app.credentials.clone();
        let status = credentials.status(Utc::now());
        let refusal = match status.state {
            PasswordState::Unset => Some("no password is set; set it with `nhsmail-ctl password set`"),
            PasswordState::Rejected | PasswordState::Expired => {
                Some("the current password does not work; set it with `nhsmail-ctl password set`")
            }
            PasswordState::NeedsAttention => {
                Some("an earlier change needs attention; set the working password with `nhsmail-ctl password set`")
            }
            PasswordState::Rotating => Some("a change is already in progress"),
            PasswordState::Ok | PasswordState::Expiring => None,
        };
        if let Some(refusal) = refusal {
            return Err(AppError::FailedPrecondition(format!("cannot change the password now: {refusal}")));
        }
        let Some(username) = status.username.clone() else {
            return Err(AppError::FailedPrecondition("cannot change the password: no username is set".into()));
        };
        let url = changer.url().to_string();
        self.audit(actor, "rotation.start", "ok", Some(format!("trigger {trigger}, endpoint {url}"))).await;

        // Close the gate, let the message being sent finish, and keep every other sign-in out until the end.
        credentials.mark_rotating(true);
        let app = self.app.clone();
        let _sending = app.send_guard.write().await;
        let _sign_ins = credentials.sign_in_lock().await;

        // While this waited for the locks, UpdatePassword may have set a new password (which ends the rotating
        // state) or a sign-in may have had the password rejected, so the password is read only now.
        credentials.mark_rotating(true);
        let Some(current) = credentials.unrejected_password() else {
            credentials.mark_rotating(false);
            return Err(AppError::FailedPrecondition(
                "cannot change the password now: the current password does not work; set it with `nhsmail-ctl password set`"
                    .into(),
            ));
        };

        let outcome = self.rotate_locked(actor, &username, &current).await;
        if credentials.pending_password().is_none() {
            credentials.mark_rotating(false);
        }
        match &outcome {
            Ok(outcome) if outcome.rotated => tracing::info!(outcome = outcome.outcome, "mailbox password rotated"),
            Ok(outcome) => tracing::warn!(outcome = outcome.outcome, "mailbox password not rotated"),
            Err(error) => tracing::error!(%error, "mailbox password rotation failed"),
        }
        self.app.new_message.notify_one();
        outcome
    }

    async fn rotate_locked(
        &mut self,
        actor: &Actor,
        username: &str,
        current: &Secret,
    ) -> Result<RotationOutcome, AppError> {
        let credentials = self.app.credentials.clone();
        let oauth = credentials.oauth().expect("a changer exists only in OAuth 2.0 mode");
        let failures = credentials.status(Utc::now()).rotation.failures;

        let token = match oauth.password_grant(username, current).await {
            Ok(tokens) => tokens.access_token,
            Err(error) if error.kind() == OAuthErrorKind::Rejected => {
                credentials.mark_rotating(false);
                credentials.record_rejected(&error.to_string()).await?;
                let outcome = format!("the token endpoint rejected the current password: {error}");
                self.audit(actor, "rotation.token", "rejected", Some(outcome.clone())).await;
                return Ok(RotationOutcome { rotated: false, outcome });
            }
            Err(error) => {
                let outcome = format!("cannot get an access token for the change: {error}");
                return self.give_up(actor, outcome, None, failures).await;
            }
        };

        let settings = &self.app.config.password;
        let used = self.app.store.password_history(settings.history).await?;
        let candidate = match generator::generate(&settings.policy, |candidate| {
            used.iter().any(|hash| history::matches(hash, candidate))
        }) {
            Ok(candidate) => candidate,
            Err(error) => {
                return self.give_up(actor, format!("cannot generate a new password: {error}"), None, failures).await;
            }
        };

        failpoint::hit("rotation.before_store_pending");
        credentials.begin_rotation(candidate.clone()).await?;
        self.pending_rejected = false;
        failpoint::hit("rotation.after_store_pending");
        self.audit(actor, "rotation.pending_stored", "ok", None).await;

        let changer = self.changer.as_ref().expect("checked by rotate");
        failpoint::hit("rotation.before_change");
        let changed = changer.change(&token, current, &candidate).await;
        failpoint::hit("rotation.after_change");
        match changed {
            Ok(()) => self.audit(actor, "rotation.change", "ok", None).await,
            Err(ChangeError::Refused(reason)) => {
                self.audit(actor, "rotation.change", "refused", Some(reason.clone())).await;
                let outcome = format!("the change endpoint refused the new password: {reason}");
                return self.give_up(actor, outcome, Some(history::hash(&candidate)), failures).await;
            }
            Err(ChangeError::Config(error)) => {
                self.audit(actor, "rotation.change", "failed", Some(error.to_string())).await;
                return self.give_up(actor, error.to_string(), Some(history::hash(&candidate)), failures).await;
            }
            Err(error) => {
                self.audit(actor, "rotation.change", "unknown", Some(error.to_string())).await;
                return self.finish_by_reconciling(actor, &error.to_string()).await;
            }
        }

        failpoint::hit("rotation.before_verify");
        let verified = self.verify(username, &candidate).await;
        if matches!(verified, Attempt::Rejected(_)) {
            self.record_pending_rejected(&candidate).await;
        }
        failpoint::hit("rotation.after_verify");
        let tokens = match verified {
            Attempt::Accepted(tokens) => tokens,
            Attempt::Rejected(reason) => {
                self.audit(actor, "rotation.verify", "rejected", Some(reason.clone())).await;
                return self.finish_by_reconciling(actor, &reason).await;
            }
            Attempt::Unavailable(reason) => {
                self.audit(actor, "rotation.verify", "unknown", Some(reason.clone())).await;
                return self.finish_by_reconciling(actor, &reason).await;
            }
        };
        self.audit(actor, "rotation.verify", "ok", None).await;

        failpoint::hit("rotation.before_commit");
        credentials.commit_rotation("changed and confirmed with SMTP and IMAP").await?;
        if let Some(tokens) = tokens {
            credentials.adopt_tokens(tokens);
        }
        failpoint::hit("rotation.after_commit");
        self.audit(actor, "rotation.commit", "ok", None).await;
        Ok(RotationOutcome { rotated: true, outcome: "changed and confirmed with SMTP and IMAP".into() })
    }

    /// Ends a rotation that left the server's password unchanged and schedules the next attempt.
    async fn give_up(
        &self,
        actor: &Actor,
        outcome: String,
        refused: Option<crate::store::PasswordHash>,
        failures: u32,
    ) -> Result<RotationOutcome, AppError> {
        let retry_after = schedule::backoff(failures + 1);
        self.app.credentials.abandon_rotation(&outcome, refused, retry_after).await?;
        self.audit(actor, "rotation.abandon", "failed", Some(outcome.clone())).await;
        Ok(RotationOutcome { rotated: false, outcome })
    }

    /// Finds out which password the server accepts after a step with an unknown result, while the caller holds the
    /// sign-in lock.
    async fn finish_by_reconciling(&mut self, actor: &Actor, reason: &str) -> Result<RotationOutcome, AppError> {
        let reconciled = self.reconcile_locked(actor, reason).await?;
        let rotated = matches!(reconciled, Reconciled::Committed);
        let outcome = self.app.credentials.status(Utc::now()).rotation.last_outcome.unwrap_or_else(|| reason.into());
        Ok(RotationOutcome { rotated, outcome })
    }

    /// Reconciles a pending password left by an interrupted rotation, taking the sign-in lock.
    async fn reconcile(&mut self, reason: &str) -> Reconciled {
        let app = self.app.clone();
        let _sign_ins = app.credentials.sign_in_lock().await;
        let actor = Actor::agent();
        match self.reconcile_locked(&actor, reason).await {
            Ok(reconciled) => reconciled,
            Err(error) => {
                tracing::error!(%error, "cannot record the reconciled password; trying again later");
                Reconciled::Unresolved
            }
        }
    }

    /// Tries the pending password once, then the current one once, and records what the server accepted.
    async fn reconcile_locked(&mut self, actor: &Actor, reason: &str) -> Result<Reconciled, AppError> {
        let credentials = self.app.credentials.clone();
        if credentials.status(Utc::now()).state == PasswordState::NeedsAttention {
            // Only a person ends needs_attention, because any further sign-in could count toward the lockout.
            return Ok(Reconciled::NeedsAttention);
        }
        let Some(pending) = credentials.pending_password() else {
            credentials.mark_rotating(false);
            return Ok(Reconciled::Discarded);
        };
        let Some(username) = credentials.username() else {
            return Ok(Reconciled::Unresolved);
        };

        if !self.was_rejected(&pending).await? {
            match self.attempt(&username, &pending).await {
                Attempt::Accepted(tokens) => {
                    let outcome = format!("the change had taken effect and was confirmed after: {reason}");
                    credentials.commit_rotation(&outcome).await?;
                    if let Some(tokens) = tokens {
                        credentials.adopt_tokens(tokens);
                    }
                    self.audit(actor, "rotation.reconcile", "committed", Some(outcome)).await;
                    return Ok(Reconciled::Committed);
                }
                Attempt::Rejected(_) => {
                    self.record_pending_rejected(&pending).await;
                    credentials.count_failed_sign_in().await?;
                }
                Attempt::Unavailable(error) => {
                    tracing::warn!(error, "cannot reach the servers to reconcile the password; trying again later");
                    return Ok(Reconciled::Unresolved);
                }
            }
        }

        let Some(current) = credentials.current_password() else { return Ok(Reconciled::Unresolved) };
        match self.attempt(&username, &current).await {
            Attempt::Accepted(_) => {
                let failures = credentials.status(Utc::now()).rotation.failures;
                let outcome = format!("the change did not take effect ({reason}); the current password still works");
                credentials
                    .abandon_rotation(&outcome, Some(history::hash(&pending)), schedule::backoff(failures + 1))
                    .await?;
                self.pending_rejected = false;
                self.audit(actor, "rotation.reconcile", "discarded", Some(outcome)).await;
                Ok(Reconciled::Discarded)
            }
            Attempt::Rejected(error) => {
                credentials.count_failed_sign_in().await?;
                let outcome = format!("neither the new nor the current password was accepted ({reason}; {error})");
                credentials.needs_attention(&outcome).await?;
                self.audit(actor, "rotation.reconcile", "needs_attention", Some(outcome)).await;
                Ok(Reconciled::NeedsAttention)
            }
            Attempt::Unavailable(error) => {
                tracing::warn!(error, "cannot reach the servers to reconcile the password; trying again later");
                Ok(Reconciled::Unresolved)
            }
        }
    }

    /// Remembers that the server rejected `pending`, also on disk as a refused hash, so no reconciliation tries it
    /// again, even after a restart.
    async fn record_pending_rejected(&mut self, pending: &Secret) {
        self.pending_rejected = true;
        if let Err(error) = self.app.store.add_refused_password(history::hash(pending), Utc::now()).await {
            tracing::error!(%error, "cannot record the rejected new password; a restart may try it once more");
        }
    }

    /// Returns whether the server rejected `pending` before, in this process or an earlier one.
    async fn was_rejected(&self, pending: &Secret) -> Result<bool, AppError> {
        if self.pending_rejected {
            return Ok(true);
        }
        let refused = self.app.store.password_history(0).await?;
        Ok(refused.iter().any(|hash| history::matches(hash, pending)))
    }

    /// Signs in once with `password`: a password grant in OAuth 2.0 mode, otherwise an SMTP AUTH.
    async fn attempt(&self, username: &str, password: &Secret) -> Attempt {
        match self.app.credentials.oauth() {
            Some(oauth) => match oauth.password_grant(username, password).await {
                Ok(tokens) => Attempt::Accepted(Some(tokens)),
                Err(error) if error.kind() == OAuthErrorKind::Rejected => Attempt::Rejected(error.to_string()),
                Err(error) => Attempt::Unavailable(error.to_string()),
            },
            None => {
                let credentials = Credentials::password(username.to_string(), password.clone());
                let settings = crate::sender::smtp_settings(&self.app.config);
                let client = match SmtpClient::new(settings, credentials) {
                    Ok(client) => client,
                    Err(error) => return Attempt::Unavailable(error.to_string()),
                };
                match client.verify_login().await {
                    Ok(()) => Attempt::Accepted(None),
                    Err(error) if error.kind() == SmtpErrorKind::Auth => Attempt::Rejected(error.to_string()),
                    Err(error) => Attempt::Unavailable(error.to_string()),
                }
            }
        }
    }

    /// Confirms a changed password with the token endpoint, SMTP and IMAP. Failures that may be the change still
    /// spreading are retried until `[password] propagation_wait_seconds`. A rejected password is tried once more
    /// only, near the end of that wait, because a rejection is also how a change that has not spread yet looks.
    async fn verify(&self, username: &str, candidate: &Secret) -> Attempt {
        let deadline = tokio::time::Instant::now() + self.app.config.password.propagation_wait;
        let mut rejections = 0;
        loop {
            let reason = match self.verify_once(username, candidate).await {
                Attempt::Accepted(tokens) => return Attempt::Accepted(tokens),
                Attempt::Rejected(reason) => {
                    rejections += 1;
                    if let Err(error) = self.app.credentials.count_failed_sign_in().await {
                        tracing::error!(%error, "cannot record a failed sign-in");
                    }
                    if rejections >= 2 {
                        return Attempt::Rejected(reason);
                    }
                    reason
                }
                Attempt::Unavailable(reason) => reason,
            };
            let now = tokio::time::Instant::now();
            let delay = match rejections {
                0 => VERIFY_RETRY,
                _ => deadline.saturating_duration_since(now).saturating_sub(VERIFY_RETRY).max(VERIFY_RETRY),
            };
            if now + delay >= deadline {
                return Attempt::Unavailable(format!("the new password was not confirmed in time: {reason}"));
            }
            tracing::warn!(reason, delay_ms = delay.as_millis() as u64, "new password not confirmed yet; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn verify_once(&self, username: &str, candidate: &Secret) -> Attempt {
        let (credentials, tokens) = match self.attempt(username, candidate).await {
            Attempt::Accepted(Some(tokens)) => {
                (Credentials::access_token(username.to_string(), tokens.access_token.clone()), Some(tokens))
            }
            Attempt::Accepted(None) => (Credentials::password(username.to_string(), candidate.clone()), None),
            other => return other,
        };
        let settings = crate::sender::smtp_settings(&self.app.config);
        match SmtpClient::new(settings, credentials.clone()) {
            Ok(client) => match client.verify_login().await {
                Ok(()) => {}
                Err(error) if error.kind() == SmtpErrorKind::Auth => return Attempt::Rejected(error.to_string()),
                Err(error) => return Attempt::Unavailable(error.to_string()),
            },
            Err(error) => return Attempt::Unavailable(error.to_string()),
        }
        let imap = crate::upload::imap_settings(&self.app.config);
        match ImapClient::verify_login(&imap, &credentials).await {
            Ok(()) => Attempt::Accepted(tokens),
            Err(error) if error.kind() == ImapErrorKind::Auth => Attempt::Rejected(error.to_string()),
            Err(error) => Attempt::Unavailable(error.to_string()),
        }
    }

    /// Writes an audit row; a failure to write one is logged and does not stop the rotation.
    async fn audit(&self, actor: &Actor, action: &str, outcome: &str, detail: Option<String>) {
        let event = AuditEvent {
            at: Utc::now(),
            caller: actor.name.clone(),
            role: actor.role.clone(),
            peer: actor.peer.clone(),
            action: action.into(),
            target: "mailbox password".into(),
            outcome: outcome.into(),
            detail,
        };
        if let Err(error) = self.app.store.record_audit(event).await {
            tracing::error!(%error, action, "cannot write an audit row");
        }
    }
}
