//! The OAuth 2.0 access token cache and how a token is obtained: reuse it until shortly before expiry, then the
//! refresh grant, and when the refresh token is rejected, one password grant. A rejected password grant is recorded
//! like a password the mail server rejected, so it is never sent again.
//!
//! Every grant runs with the sign-in lock held, because the token endpoint counts failed sign-ins towards NHSmail's
//! lockout like SMTP and IMAP do.

use std::time::{Duration, Instant};

use super::{AfterRejection, CredentialError, CredentialManager};
use crate::oauth::{OAuthClient, OAuthError, OAuthErrorKind, Tokens};
use crate::secret::Secret;

/// How long the token endpoint is left alone after it failed for now.
const TRANSIENT_PAUSE: Duration = Duration::from_secs(30);
/// How long the token endpoint is left alone after it rejected the request's settings. The settings change only
/// with a restart, so this only spaces out the attempts and their log lines.
const CONFIG_PAUSE: Duration = Duration::from_secs(300);

/// Tokens in memory only: they are never written to disk, so each start of the agent begins with a password grant.
#[derive(Default)]
pub(super) struct TokenCache {
    /// The access token with its expiry; its `refresh_token` is always moved to [`Self::refresh_token`].
    access: Option<Tokens>,
    refresh_token: Option<Secret>,
    /// The cached access token was obtained after a server rejected the one before it, and no server has accepted
    /// it yet. If it is rejected too, the account cannot sign in with tokens and the gate closes.
    replaces_rejected: bool,
    /// A rejected access token was discarded, so the next one stored replaces it.
    after_rejection: bool,
    /// After the token endpoint failed, no request is sent before this time; the reason is returned meanwhile.
    paused: Option<(Instant, String)>,
}

/// The outcome of discarding an access token a server rejected.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Discard {
    /// The token was the cached one and is gone; the next sign-in gets a new one.
    Discarded,
    /// Another task already replaced or cleared the token.
    AlreadyReplaced,
    /// The token itself replaced a rejected one.
    ReplacementRejected,
}

impl TokenCache {
    /// Returns the access token if it is not yet due for renewal.
    fn fresh_token(&self, now: Instant) -> Option<Secret> {
        self.access.as_ref().filter(|tokens| !tokens.needs_renewal(now)).map(|tokens| tokens.access_token.clone())
    }

    /// Returns the access token if it has not expired, even when it is due for renewal.
    fn unexpired_token(&self, now: Instant) -> Option<Secret> {
        self.access.as_ref().filter(|tokens| !tokens.is_expired(now)).map(|tokens| tokens.access_token.clone())
    }

    fn refresh_token(&self) -> Option<Secret> {
        self.refresh_token.clone()
    }

    fn paused_reason(&self, now: Instant) -> Option<String> {
        self.paused.as_ref().filter(|(until, _)| now < *until).map(|(_, reason)| reason.clone())
    }

    /// Keeps new tokens. A response without a refresh token keeps the previous refresh token (RFC 6749 section 6).
    pub(super) fn store(&mut self, mut tokens: Tokens) {
        if let Some(refresh_token) = tokens.refresh_token.take() {
            self.refresh_token = Some(refresh_token);
        }
        self.access = Some(tokens);
        self.replaces_rejected = std::mem::take(&mut self.after_rejection);
        self.paused = None;
    }

    fn drop_refresh_token(&mut self) {
        self.refresh_token = None;
    }

    fn pause(&mut self, until: Instant, reason: String) {
        self.paused = Some((until, reason));
    }

    /// Forgets everything, for a new password or username, or a rejected password.
    pub(super) fn clear(&mut self) {
        *self = TokenCache::default();
    }

    /// Records that a server accepted a sign-in with the cached token.
    pub(super) fn accepted(&mut self) {
        self.replaces_rejected = false;
    }

    /// Discards `rejected` if it is the cached access token, keeping the refresh token.
    pub(super) fn discard_rejected(&mut self, rejected: &Secret) -> Discard {
        let cached = self.access.as_ref().is_some_and(|tokens| tokens.access_token.expose() == rejected.expose());
        if !cached {
            return Discard::AlreadyReplaced;
        }
        if self.replaces_rejected {
            self.clear();
            return Discard::ReplacementRejected;
        }
        self.access = None;
        self.after_rejection = true;
        Discard::Discarded
    }
}

impl CredentialManager {
    /// Returns an access token from the cache or from a new grant. The caller holds the sign-in lock.
    pub(super) async fn access_token(
        &self,
        oauth: &OAuthClient,
        username: &str,
        password: &Secret,
    ) -> Result<Secret, CredentialError> {
        let now = Instant::now();
        let (unexpired, refresh_token) = {
            let cache = self.lock_tokens();
            if let Some(token) = cache.fresh_token(now) {
                return Ok(token);
            }
            let unexpired = cache.unexpired_token(now);
            if let Some(reason) = cache.paused_reason(now) {
                return unexpired.ok_or(CredentialError::TokenUnavailable { reason });
            }
            (unexpired, cache.refresh_token())
        };

        if let Some(refresh_token) = refresh_token {
            match oauth.refresh_grant(&refresh_token).await {
                Ok(tokens) => return Ok(self.keep_tokens(tokens)),
                Err(error) if error.kind() == OAuthErrorKind::Rejected => {
                    tracing::info!(%error, "the refresh token was rejected; signing in with the password once");
                    self.lock_tokens().drop_refresh_token();
                }
                Err(error) => return self.token_failure(error, unexpired),
            }
        }

        match oauth.password_grant(username, password).await {
            Ok(tokens) => {
                let token = self.keep_tokens(tokens);
                if let Err(error) = self.store_success().await {
                    tracing::error!(%error, "cannot record the successful sign-in");
                }
                Ok(token)
            }
            Err(error) if error.kind() == OAuthErrorKind::Rejected => {
                self.record_rejected(&error.to_string()).await?;
                Err(CredentialError::Rejected)
            }
            Err(error) => self.token_failure(error, unexpired),
        }
    }

    /// Handles a grant that failed for now or for its settings: pauses requests to the token endpoint, and returns
    /// the current access token while it is still valid.
    fn token_failure(&self, error: OAuthError, unexpired: Option<Secret>) -> Result<Secret, CredentialError> {
        let pause = match error.kind() {
            OAuthErrorKind::Transient => TRANSIENT_PAUSE,
            OAuthErrorKind::Rejected | OAuthErrorKind::Config => CONFIG_PAUSE,
        };
        let reason = error.to_string();
        tracing::warn!(%error, retry_in = ?pause, still_valid = unexpired.is_some(), "cannot get an access token");
        self.note_error(&reason);
        self.lock_tokens().pause(Instant::now() + pause, reason.clone());
        unexpired.ok_or(CredentialError::TokenUnavailable { reason })
    }

    fn keep_tokens(&self, tokens: Tokens) -> Secret {
        let token = tokens.access_token.clone();
        self.lock_tokens().store(tokens);
        tracing::info!("access token obtained");
        token
    }

    /// Discards an access token a server rejected and returns whether to sign in again.
    pub(super) async fn token_rejected(&self, token: &Secret, error: &str) -> Result<AfterRejection, CredentialError> {
        let discard = self.lock_tokens().discard_rejected(token);
        match discard {
            Discard::Discarded => {
                tracing::warn!(error, "the server rejected the access token; the next sign-in gets a new one");
                Ok(AfterRejection::SignInAgain)
            }
            Discard::AlreadyReplaced => Ok(AfterRejection::SignInAgain),
            Discard::ReplacementRejected => {
                let reason =
                    format!("the server also rejected a new access token, so OAuth 2.0 sign-in fails: {error}");
                self.record_rejected(&reason).await?;
                Ok(AfterRejection::GateClosed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(access: &str, refresh: Option<&str>, lifetime_seconds: u64) -> Tokens {
        Tokens::new(
            Secret::new(access),
            refresh.map(Secret::new),
            Instant::now(),
            Duration::from_secs(lifetime_seconds),
        )
    }

    #[test]
    fn fresh_token_is_reused() {
        let mut cache = TokenCache::default();
        cache.store(tokens("at-1", Some("rt-1"), 3600));

        assert_eq!(cache.fresh_token(Instant::now()).unwrap().expose(), "at-1");
    }

    #[test]
    fn token_near_expiry_is_not_fresh() {
        let mut cache = TokenCache::default();
        cache.store(tokens("at-1", Some("rt-1"), 3600));
        let later = Instant::now() + Duration::from_secs(3500);

        assert!(cache.fresh_token(later).is_none());
        assert_eq!(cache.unexpired_token(later).unwrap().expose(), "at-1");
    }

    #[test]
    fn refresh_answer_keeps_old_refresh_token() {
        let mut cache = TokenCache::default();
        cache.store(tokens("at-1", Some("rt-1"), 3600));

        cache.store(tokens("at-2", None, 3600));

        assert_eq!(cache.refresh_token().unwrap().expose(), "rt-1");
    }

    #[test]
    fn discarded_token_keeps_refresh_token() {
        let mut cache = TokenCache::default();
        cache.store(tokens("at-1", Some("rt-1"), 3600));

        assert_eq!(cache.discard_rejected(&Secret::new("at-1")), Discard::Discarded);

        assert!(cache.unexpired_token(Instant::now()).is_none());
        assert_eq!(cache.refresh_token().unwrap().expose(), "rt-1");
    }

    #[test]
    fn rejected_replacement_is_reported() {
        let mut cache = TokenCache::default();
        cache.store(tokens("at-1", Some("rt-1"), 3600));
        cache.discard_rejected(&Secret::new("at-1"));
        cache.store(tokens("at-2", Some("rt-2"), 3600));

        assert_eq!(cache.discard_rejected(&Secret::new("at-2")), Discard::ReplacementRejected);
        assert!(cache.refresh_token().is_none());
    }

    #[test]
    fn accepted_replacement_may_be_replaced_again() {
        let mut cache = TokenCache::default();
        cache.store(tokens("at-1", Some("rt-1"), 3600));
        cache.discard_rejected(&Secret::new("at-1"));
        cache.store(tokens("at-2", Some("rt-2"), 3600));
        cache.accepted();

        assert_eq!(cache.discard_rejected(&Secret::new("at-2")), Discard::Discarded);
    }

    #[test]
    fn old_token_rejection_is_ignored() {
        let mut cache = TokenCache::default();
        cache.store(tokens("at-2", Some("rt-2"), 3600));

        assert_eq!(cache.discard_rejected(&Secret::new("at-1")), Discard::AlreadyReplaced);
        assert_eq!(cache.fresh_token(Instant::now()).unwrap().expose(), "at-2");
    }

    #[test]
    fn pause_ends_at_its_time() {
        let mut cache = TokenCache::default();
        let now = Instant::now();
        cache.pause(now + Duration::from_secs(30), "token endpoint down".into());

        assert_eq!(cache.paused_reason(now).as_deref(), Some("token endpoint down"));
        assert!(cache.paused_reason(now + Duration::from_secs(31)).is_none());
    }
}
