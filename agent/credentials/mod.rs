//! The mailbox password: its encrypted storage, its lifecycle state, the sending gate, and lockout protection.
//!
//! NHSmail locks an account after repeated failed sign-ins, so every SMTP and IMAP sign-in goes through
//! [`CredentialManager::sign_in`], which serialises sign-ins and refuses to use a password the server has
//! rejected once. Only a new password (UpdatePassword) clears the rejection.
//!
//! In OAuth 2.0 mode the same lock covers the token endpoint: [`CredentialManager::sign_in`] hands out an access
//! token, obtained with the password when the cached one is missing or near expiry, and a rejected password grant
//! counts as a rejected password.

pub mod generator;
pub mod history;
mod tokens;
pub mod vault;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use tokio::sync::watch;

use crate::oauth::{OAuthClient, Tokens};
use crate::secret::Secret;
use crate::store::{CredentialStatus, EncryptedPassword, PasswordHash, RotationRecord, Store, StoreError};
use crate::transport::{Credentials, SecretKind};
use tokens::TokenCache;
pub use vault::{Sealed, Vault, VaultError};

/// The gate's reason before the stored password has been looked at.
const STARTING: &str = "starting";
/// Days before expiry from which the password counts as expiring when no warning days are set; NHSmail's first
/// reminder comes 18 days before.
pub const WARNING_WINDOW_DAYS: u32 = 18;
/// `RotationRecord::state` while a rotation may have changed the password on the server.
pub const ROTATING: &str = "rotating";
/// `RotationRecord::state` when neither the pending nor the current password was accepted.
pub const NEEDS_ATTENTION: &str = "needs_attention";
/// `RotationRecord::state` otherwise.
pub const IDLE: &str = "idle";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordState {
    Unset,
    Ok,
    Expiring,
    Expired,
    Rejected,
    Rotating,
    NeedsAttention,
}

impl PasswordState {
    pub fn as_str(self) -> &'static str {
        match self {
            PasswordState::Unset => "unset",
            PasswordState::Ok => "ok",
            PasswordState::Expiring => "expiring",
            PasswordState::Expired => "expired",
            PasswordState::Rejected => "rejected",
            PasswordState::Rotating => "rotating",
            PasswordState::NeedsAttention => "needs_attention",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("no mailbox username is set; set it with `nhsmail-ctl connectivity set --username NAME`")]
    NoUsername,
    #[error("no mailbox password is set; set it with `nhsmail-ctl password set`")]
    NoPassword,
    #[error(
        "the mailbox server rejected the stored password; the agent will not sign in with it again. Set the current password with `nhsmail-ctl password set`"
    )]
    Rejected,
    #[error("the stored password expired on {expired_at}; set the new one with `nhsmail-ctl password set`")]
    Expired { expired_at: DateTime<Utc> },
    #[error("the mailbox password is being changed; texts wait until the new one is confirmed")]
    Rotating,
    #[error(
        "an automatic password change could not be confirmed and the agent has stopped signing in to avoid locking the account. Find the working password (try signing in to NHSmail) and set it with `nhsmail-ctl password set`"
    )]
    NeedsAttention,
    /// The token endpoint failed for now or rejected the request's settings; the password was not rejected.
    #[error("cannot get an access token: {reason}")]
    TokenUnavailable { reason: String },
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CredentialError {
    /// Returns whether a later attempt may succeed without anyone acting, so a message should wait with backoff.
    pub fn is_transient(&self) -> bool {
        matches!(self, CredentialError::TokenUnavailable { .. } | CredentialError::Rotating)
    }
}

/// The caller's next step after a server rejected a sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRejection {
    /// An access token was rejected and discarded; signing in again gets a new one.
    SignInAgain,
    /// The password is marked rejected and the sending gate is closed.
    GateClosed,
}

/// State of the sending gate. While it is closed, messages wait in the queue and nothing is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Open,
    Closed { reason: String },
}

/// A snapshot of the password's metadata, without the password.
#[derive(Debug, Clone)]
pub struct PasswordStatus {
    pub username: Option<String>,
    pub password_set: bool,
    pub set_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub days_until_expiry: Option<i64>,
    pub state: PasswordState,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Sign-ins the server rejected since the password was last set.
    pub failed_sign_ins: u32,
    /// Sign-ins the agent did not make since it started, because the password was rejected or unconfirmed.
    pub blocked_sign_ins: u64,
    pub rotation: RotationRecord,
    pub pending: bool,
}

/// The credentials to sign in with, handed out only while the sign-in lock is held: the username with the password,
/// or in OAuth 2.0 mode with an access token.
pub struct SignIn<'a> {
    pub credentials: Credentials,
    _lock: tokio::sync::MutexGuard<'a, ()>,
}

struct Inner {
    username: Option<String>,
    password: Option<Secret>,
    set_at: Option<DateTime<Utc>>,
    status: CredentialStatus,
    /// A new password that a rotation may have made live on the server, until it is committed or discarded.
    pending: Option<Secret>,
    rotation: RotationRecord,
    blocked_sign_ins: u64,
    max_age_days: u32,
    warning_days: u32,
}

/// Owns the password in memory and on disk, and the sending gate derived from it.
pub struct CredentialManager {
    store: Store,
    vault: Vault,
    inner: Mutex<Inner>,
    sign_in_lock: tokio::sync::Mutex<()>,
    gate: watch::Sender<Gate>,
    /// Bumped on every password or username change, so holders of pooled connections know to rebuild them.
    generation: watch::Sender<u64>,
    /// The token endpoint's client in OAuth 2.0 mode; `None` signs in with the password itself.
    oauth: Option<OAuthClient>,
    tokens: Mutex<TokenCache>,
}

impl CredentialManager {
    /// Loads the stored password, if any, and decides whether the gate starts open. With `oauth`, sign-ins use
    /// access tokens from that endpoint.
    pub async fn load(
        store: Store,
        vault: Vault,
        username: Option<String>,
        calendar: PasswordCalendar,
        oauth: Option<OAuthClient>,
    ) -> Result<Arc<CredentialManager>, CredentialError> {
        let mut record = store.load_credential().await?;
        let sealed = record.as_ref().map(|record| Sealed {
            nonce: record.password.nonce.clone(),
            ciphertext: record.password.ciphertext.clone(),
        });
        let password = match sealed.map(|sealed| vault.open(&sealed)).transpose() {
            Ok(password) => password,
            Err(error @ VaultError::Decrypt { .. }) => {
                // Starting without the password keeps the API up, so a person can set it again; the queue waits.
                tracing::error!(%error, "starting without a usable password; texts wait until one is set");
                record = None;
                None
            }
            Err(error) => return Err(error.into()),
        };
        let mut rotation = record.as_ref().map(|record| record.rotation.clone()).unwrap_or_default();
        let pending = match record.as_ref().and_then(|record| record.pending.as_ref()) {
            Some(pending) => {
                let sealed =
                    Sealed { nonce: pending.password.nonce.clone(), ciphertext: pending.password.ciphertext.clone() };
                match vault.open(&sealed) {
                    Ok(pending) => Some(pending),
                    Err(error @ VaultError::Decrypt { .. }) => {
                        // The server may hold the password that cannot be read, so no sign-in is safe. Starting in
                        // needs_attention keeps the API up for a person to set the working password.
                        tracing::error!(%error, "cannot decrypt the new password of an interrupted change, so the agent makes no sign-ins. Set the working password with `nhsmail-ctl password set`");
                        rotation.state = NEEDS_ATTENTION.into();
                        None
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            None => None,
        };
        let username = store.get_setting("username").await?.or(username);
        let inner = Inner {
            username,
            password,
            set_at: record.as_ref().map(|record| record.set_at),
            pending,
            rotation,
            blocked_sign_ins: 0,
            status: record.map_or_else(empty_status, |record| record.status),
            max_age_days: calendar.max_age_days,
            warning_days: calendar.warning_days,
        };
        let manager = Arc::new(CredentialManager {
            store,
            vault,
            inner: Mutex::new(inner),
            sign_in_lock: tokio::sync::Mutex::new(()),
            gate: watch::channel(Gate::Closed { reason: STARTING.into() }).0,
            generation: watch::channel(0).0,
            oauth,
            tokens: Mutex::new(TokenCache::default()),
        });
        manager.refresh_gate(Utc::now());
        Ok(manager)
    }

    /// Waits for the sign-in lock and returns the credentials, or why they must not be used. In OAuth 2.0 mode this
    /// may first run a grant at the token endpoint.
    ///
    /// Holding the lock across connect and authentication means two tasks can never both fail with the same
    /// rejected password: the second one finds the rejection recorded by the first.
    pub async fn sign_in(&self) -> Result<SignIn<'_>, CredentialError> {
        let lock = self.sign_in_lock.lock().await;
        let (username, password) = self.usable_password()?;
        let credentials = match &self.oauth {
            None => Credentials::password(username, password),
            Some(oauth) => {
                let token = self.access_token(oauth, &username, &password).await?;
                Credentials::access_token(username, token)
            }
        };
        Ok(SignIn { credentials, _lock: lock })
    }

    fn usable_password(&self) -> Result<(String, Secret), CredentialError> {
        let mut inner = self.lock_inner();
        let username = inner.username.clone().ok_or(CredentialError::NoUsername)?;
        let (Some(set_at), Some(password)) = (inner.set_at, inner.password.clone()) else {
            return Err(CredentialError::NoPassword);
        };
        let refused = match inner.rotation.state.as_str() {
            NEEDS_ATTENTION => Some(CredentialError::NeedsAttention),
            ROTATING => Some(CredentialError::Rotating),
            _ if inner.status.rejected => Some(CredentialError::Rejected),
            _ => None,
        };
        if let Some(error) = refused {
            inner.blocked_sign_ins += 1;
            return Err(error);
        }
        let expires_at = set_at + Duration::days(i64::from(inner.max_age_days));
        if expires_at <= Utc::now() {
            return Err(CredentialError::Expired { expired_at: expires_at });
        }
        Ok((username, password))
    }

    /// Returns the token endpoint's client in OAuth 2.0 mode.
    pub fn oauth(&self) -> Option<&OAuthClient> {
        self.oauth.as_ref()
    }

    /// Keeps tokens obtained while checking a new password, so the next sign-in needs no grant.
    pub fn adopt_tokens(&self, tokens: Tokens) {
        self.lock_tokens().store(tokens);
    }

    /// Records that a server rejected `credentials` and returns what to do next. A rejected password closes the
    /// gate. A rejected access token is discarded so the next sign-in gets a new one, because it may just have
    /// expired. Only when its replacement is rejected too does the gate close.
    ///
    /// This never takes the sign-in lock, so a caller may still hold its [`SignIn`].
    pub async fn record_auth_failure(
        &self,
        credentials: &Credentials,
        error: &str,
    ) -> Result<AfterRejection, CredentialError> {
        match credentials.kind {
            SecretKind::Password => {
                let stale = self
                    .lock_inner()
                    .password
                    .as_ref()
                    .is_some_and(|current| current.expose() != credentials.secret.expose());
                if stale {
                    // A rejection of a password replaced since this sign-in began proves nothing about the current one.
                    tracing::info!(error, "the server rejected a password that has since been replaced");
                    return Ok(AfterRejection::SignInAgain);
                }
                self.record_rejected(error).await?;
                Ok(AfterRejection::GateClosed)
            }
            SecretKind::AccessToken => self.token_rejected(&credentials.secret, error).await,
        }
    }

    /// Takes the sign-in lock without checking the stored password, for checking a candidate password.
    pub async fn sign_in_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.sign_in_lock.lock().await
    }

    /// Records that the server refused the password: it is never used again and the gate closes.
    pub async fn record_rejected(&self, error: &str) -> Result<(), CredentialError> {
        let status = {
            let mut inner = self.lock_inner();
            if inner.set_at.is_none() {
                return Ok(());
            }
            inner.status.rejected = true;
            inner.status.failed_sign_ins += 1;
            inner.status.state = PasswordState::Rejected.as_str().into();
            inner.status.last_error = Some(error.to_string());
            inner.status.clone()
        };
        self.lock_tokens().clear();
        tracing::error!(
            error,
            "the mailbox server rejected the password; sending is paused until a new password is set"
        );
        self.store.update_credential_status(status).await?;
        self.refresh_gate(Utc::now());
        Ok(())
    }

    /// Records a sign-in the server accepted. Writes to the database at most once a minute while nothing changes.
    pub async fn record_success(&self) -> Result<(), CredentialError> {
        self.lock_tokens().accepted();
        self.store_success().await
    }

    /// Records that the password was accepted, without vouching for the cached access token.
    async fn store_success(&self) -> Result<(), CredentialError> {
        let now = Utc::now();
        let status = {
            let mut inner = self.lock_inner();
            if inner.set_at.is_none() {
                return Ok(());
            }
            let recent = inner.status.last_success_at.is_some_and(|at| now - at < Duration::minutes(1));
            if recent && inner.status.last_error.is_none() {
                inner.status.last_success_at = Some(now);
                return Ok(());
            }
            inner.status.last_success_at = Some(now);
            inner.status.last_error = None;
            inner.status.clone()
        };
        self.store.update_credential_status(status).await?;
        Ok(())
    }

    /// Records a connection error unrelated to the password, for GetConnectivity's `last_error`.
    pub fn note_error(&self, error: &str) {
        self.lock_inner().status.last_error = Some(error.to_string());
    }

    /// Stores a new password, encrypted, and reopens the gate. `verified_at` is when the servers accepted it.
    pub async fn set_password(
        &self,
        password: Secret,
        verified_at: Option<DateTime<Utc>>,
    ) -> Result<(), CredentialError> {
        let now = Utc::now();
        let sealed = self.vault.seal(&password);
        let encrypted = EncryptedPassword { ciphertext: sealed.ciphertext, nonce: sealed.nonce };
        let state = PasswordState::Ok;
        self.store.save_credential(encrypted, now, state.as_str()).await?;
        self.store.add_password_history(history::hash(&password), now).await?;

        let status = CredentialStatus {
            state: state.as_str().into(),
            last_error: None,
            last_success_at: verified_at,
            rejected: false,
            failed_sign_ins: 0,
        };
        if verified_at.is_some() {
            self.store.update_credential_status(status.clone()).await?;
        }

        {
            let mut inner = self.lock_inner();
            inner.password = Some(password);
            inner.set_at = Some(now);
            inner.status = status;
            inner.pending = None;
            inner.rotation = RotationRecord {
                last_at: inner.rotation.last_at,
                last_outcome: inner.rotation.last_outcome.clone(),
                ..RotationRecord::default()
            };
        }
        self.lock_tokens().clear();
        self.generation.send_modify(|generation| *generation += 1);
        self.refresh_gate(now);
        tracing::info!(verified = verified_at.is_some(), "mailbox password updated");
        Ok(())
    }

    /// Changes the mailbox username. A password rejected for the old account may be valid for the new one.
    /// Setting the username already in use changes nothing, so it cannot clear a rejection.
    pub async fn set_username(&self, username: String) -> Result<(), CredentialError> {
        if self.lock_inner().username.as_deref() == Some(username.as_str()) {
            return Ok(());
        }
        self.store.set_setting("username", &username, Utc::now()).await?;
        let status = {
            let mut inner = self.lock_inner();
            inner.username = Some(username);
            inner.status.rejected = false;
            inner.set_at.map(|_| inner.status.clone())
        };
        if let Some(status) = status {
            self.store.update_credential_status(status).await?;
        }
        self.lock_tokens().clear();
        self.generation.send_modify(|generation| *generation += 1);
        self.refresh_gate(Utc::now());
        Ok(())
    }

    pub fn username(&self) -> Option<String> {
        self.lock_inner().username.clone()
    }

    pub fn status(&self, now: DateTime<Utc>) -> PasswordStatus {
        let inner = self.lock_inner();
        let expires_at = inner.set_at.map(|set_at| set_at + Duration::days(i64::from(inner.max_age_days)));
        PasswordStatus {
            username: inner.username.clone(),
            password_set: inner.set_at.is_some(),
            set_at: inner.set_at,
            expires_at,
            days_until_expiry: expires_at.map(|expires_at| whole_days_until(now, expires_at)),
            state: password_state(now, inner.set_at, &inner.status, &inner.rotation, &self.calendar_of(&inner)),
            last_success_at: inner.status.last_success_at,
            last_error: inner.status.last_error.clone(),
            failed_sign_ins: inner.status.failed_sign_ins,
            blocked_sign_ins: inner.blocked_sign_ins,
            rotation: inner.rotation.clone(),
            pending: inner.pending.is_some(),
        }
    }

    pub fn gate(&self) -> watch::Receiver<Gate> {
        self.gate.subscribe()
    }

    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Recomputes the gate from the password's state; called after every change and by each upload cycle, which
    /// notices expiry by the calendar.
    pub fn refresh_gate(&self, now: DateTime<Utc>) {
        let status = self.status(now);
        let gate = match (status.username.is_some(), status.state) {
            (false, _) => Gate::Closed { reason: CredentialError::NoUsername.to_string() },
            (true, PasswordState::Unset) => Gate::Closed { reason: CredentialError::NoPassword.to_string() },
            (true, PasswordState::Rejected) => Gate::Closed { reason: CredentialError::Rejected.to_string() },
            (true, PasswordState::Expired) => Gate::Closed {
                reason: CredentialError::Expired { expired_at: status.expires_at.unwrap_or(now) }.to_string(),
            },
            (true, PasswordState::Rotating) => Gate::Closed { reason: CredentialError::Rotating.to_string() },
            (true, PasswordState::NeedsAttention) => {
                Gate::Closed { reason: CredentialError::NeedsAttention.to_string() }
            }
            (true, PasswordState::Ok | PasswordState::Expiring) => Gate::Open,
        };
        self.gate.send_if_modified(|current| {
            if *current == gate {
                return false;
            }
            let starting = matches!(current, Gate::Closed { reason } if reason == STARTING);
            match &gate {
                Gate::Open => tracing::info!("sending gate opened"),
                // At start-up a closed gate is the initial state, not a change a person needs to notice.
                Gate::Closed { reason } if starting => tracing::info!(reason, "sending gate starts closed"),
                Gate::Closed { reason } => tracing::warn!(reason, "sending gate closed"),
            }
            *current = gate;
            true
        });
    }

    fn calendar_of(&self, inner: &Inner) -> PasswordCalendar {
        PasswordCalendar { max_age_days: inner.max_age_days, warning_days: inner.warning_days }
    }

    /// Returns the current password, for revealing it to an administrator or for the change endpoint.
    pub fn current_password(&self) -> Option<Secret> {
        self.lock_inner().password.clone()
    }

    /// Returns the current password unless a server has rejected it, for a rotation that holds the sign-in lock.
    pub fn unrejected_password(&self) -> Option<Secret> {
        let inner = self.lock_inner();
        inner.password.clone().filter(|_| !inner.status.rejected)
    }

    /// Returns the pending password of an unfinished rotation.
    pub fn pending_password(&self) -> Option<Secret> {
        self.lock_inner().pending.clone()
    }

    /// Stores `candidate` as pending, durably, before the server is asked to change to it, and closes the gate.
    pub async fn begin_rotation(&self, candidate: Secret) -> Result<(), CredentialError> {
        let sealed = self.vault.seal(&candidate);
        let encrypted = EncryptedPassword { ciphertext: sealed.ciphertext, nonce: sealed.nonce };
        self.store.save_pending_credential(encrypted, Utc::now()).await?;
        {
            let mut inner = self.lock_inner();
            inner.pending = Some(candidate);
            inner.rotation.state = ROTATING.into();
        }
        self.refresh_gate(Utc::now());
        Ok(())
    }

    /// Marks a rotation as under way while no pending password exists yet, so the gate closes for it.
    pub fn mark_rotating(&self, rotating: bool) {
        {
            let mut inner = self.lock_inner();
            if inner.pending.is_none() && inner.rotation.state != NEEDS_ATTENTION {
                inner.rotation.state = if rotating { ROTATING } else { IDLE }.into();
            }
        }
        self.refresh_gate(Utc::now());
    }

    /// Makes the pending password current after the servers accepted it, and reopens the gate.
    pub async fn commit_rotation(&self, outcome: &str) -> Result<(), CredentialError> {
        let now = Utc::now();
        let Some(pending) = self.pending_password() else {
            return Err(StoreError::Conflict("no pending password to commit".into()).into());
        };
        self.store.commit_pending_credential(now, PasswordState::Ok.as_str(), history::hash(&pending), outcome).await?;
        {
            let mut inner = self.lock_inner();
            inner.password = Some(pending);
            inner.pending = None;
            inner.set_at = Some(now);
            inner.status = CredentialStatus {
                state: PasswordState::Ok.as_str().into(),
                last_error: None,
                last_success_at: Some(now),
                rejected: false,
                failed_sign_ins: 0,
            };
            inner.rotation =
                RotationRecord { last_at: Some(now), last_outcome: Some(outcome.into()), ..RotationRecord::default() };
        }
        self.lock_tokens().clear();
        self.generation.send_modify(|generation| *generation += 1);
        self.refresh_gate(now);
        Ok(())
    }

    /// Ends a rotation that did not change the password: discards any pending password, recording its hash when the
    /// server refused it, and schedules the next attempt after `retry_after`.
    pub async fn abandon_rotation(
        &self,
        outcome: &str,
        refused: Option<PasswordHash>,
        retry_after: Duration,
    ) -> Result<(), CredentialError> {
        let now = Utc::now();
        let rotation = {
            let inner = self.lock_inner();
            RotationRecord {
                state: IDLE.into(),
                failures: inner.rotation.failures + 1,
                next_at: Some(now + retry_after),
                last_at: Some(now),
                last_outcome: Some(outcome.into()),
            }
        };
        self.store.discard_pending_credential(rotation.clone(), refused, now).await?;
        {
            let mut inner = self.lock_inner();
            inner.pending = None;
            inner.rotation = rotation;
        }
        self.refresh_gate(now);
        Ok(())
    }

    /// Stops all sign-ins after neither the pending nor the current password was accepted. Both stay stored,
    /// encrypted, for a person to recover with UpdatePassword.
    pub async fn needs_attention(&self, outcome: &str) -> Result<(), CredentialError> {
        let now = Utc::now();
        let rotation = {
            let mut inner = self.lock_inner();
            inner.rotation.state = NEEDS_ATTENTION.into();
            inner.rotation.failures += 1;
            inner.rotation.last_at = Some(now);
            inner.rotation.last_outcome = Some(outcome.into());
            inner.rotation.next_at = None;
            inner.rotation.clone()
        };
        self.lock_tokens().clear();
        self.store.update_rotation(rotation).await?;
        tracing::error!(outcome, "password rotation needs attention; the agent makes no more sign-in attempts");
        self.refresh_gate(now);
        Ok(())
    }

    /// Counts a sign-in the server rejected with a candidate or during reconciliation.
    pub async fn count_failed_sign_in(&self) -> Result<(), CredentialError> {
        let status = {
            let mut inner = self.lock_inner();
            if inner.set_at.is_none() {
                return Ok(());
            }
            inner.status.failed_sign_ins += 1;
            inner.status.clone()
        };
        self.store.update_credential_status(status).await?;
        Ok(())
    }

    fn lock_inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("credential state lock poisoned")
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, TokenCache> {
        self.tokens.lock().expect("token cache lock poisoned")
    }
}

fn empty_status() -> CredentialStatus {
    CredentialStatus {
        state: PasswordState::Unset.as_str().into(),
        last_error: None,
        last_success_at: None,
        rejected: false,
        failed_sign_ins: 0,
    }
}

/// The calendar of the password: how long it lasts, and from how many days before expiry it counts as expiring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCalendar {
    pub max_age_days: u32,
    pub warning_days: u32,
}

impl Default for PasswordCalendar {
    fn default() -> PasswordCalendar {
        PasswordCalendar { max_age_days: 90, warning_days: WARNING_WINDOW_DAYS }
    }
}

/// Derives the password's state at `now`. An unconfirmed rotation outranks a rejection, which outranks the calendar.
pub fn password_state(
    now: DateTime<Utc>,
    set_at: Option<DateTime<Utc>>,
    status: &CredentialStatus,
    rotation: &RotationRecord,
    calendar: &PasswordCalendar,
) -> PasswordState {
    let Some(set_at) = set_at else { return PasswordState::Unset };
    match rotation.state.as_str() {
        NEEDS_ATTENTION => return PasswordState::NeedsAttention,
        ROTATING => return PasswordState::Rotating,
        _ => {}
    }
    if status.rejected {
        return PasswordState::Rejected;
    }
    let expires_at = set_at + Duration::days(i64::from(calendar.max_age_days));
    if expires_at <= now {
        PasswordState::Expired
    } else if expires_at - now <= Duration::days(i64::from(calendar.warning_days)) {
        PasswordState::Expiring
    } else {
        PasswordState::Ok
    }
}

/// Whole days from `now` until `then`, rounded down; negative once `then` has passed.
pub fn whole_days_until(now: DateTime<Utc>, then: DateTime<Utc>) -> i64 {
    (then - now).num_seconds().div_euclid(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_calendar_and_rejection() {
        let now = Utc::now();
        let cases = [
            (None, false, PasswordState::Unset),
            (Some(0), false, PasswordState::Ok),
            (Some(71), false, PasswordState::Ok),
            (Some(73), false, PasswordState::Expiring),
            (Some(89), false, PasswordState::Expiring),
            (Some(90), false, PasswordState::Expired),
            (Some(5), true, PasswordState::Rejected),
            (Some(200), true, PasswordState::Rejected),
        ];
        for (days_ago, rejected, expected) in cases {
            let set_at = days_ago.map(|days| now - Duration::days(days));
            let status = CredentialStatus { rejected, ..empty_status() };
            assert_eq!(
                password_state(now, set_at, &status, &RotationRecord::default(), &PasswordCalendar::default()),
                expected,
                "set {days_ago:?} days ago, rejected {rejected}"
            );
        }
    }

    #[test]
    fn rotation_state_outranks_rejection() {
        let now = Utc::now();
        let status = CredentialStatus { rejected: true, ..empty_status() };
        let cases = [(ROTATING, PasswordState::Rotating), (NEEDS_ATTENTION, PasswordState::NeedsAttention)];
        for (state, expected) in cases {
            let rotation = RotationRecord { state: state.into(), ..RotationRecord::default() };
            let derived = password_state(now, Some(now), &status, &rotation, &PasswordCalendar::default());
            assert_eq!(derived, expected, "rotation state {state}");
        }
    }

    #[test]
    fn days_until_rounds_down() {
        let now = Utc::now();
        assert_eq!(whole_days_until(now, now + Duration::hours(47)), 1);
        assert_eq!(whole_days_until(now, now - Duration::hours(1)), -1);
    }
}
