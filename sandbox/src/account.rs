//! The one mailbox account: its password and password history, expiry, lockout across every
//! protocol, and the OAuth 2.0 tokens issued for it. Persisted to `account.json`.

use std::fmt;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::counters::{Counters, Protocol};
use crate::persist::{self, PersistError};

/// Password and sign-in rules, fixed at start.
#[derive(Debug, Clone)]
pub struct Policy {
    pub max_age: TimeDelta,
    pub min_length: usize,
    /// How many recent passwords, the current one included, a new password may not repeat.
    pub history: usize,
    pub lockout_threshold: u32,
    pub lockout_duration: TimeDelta,
    pub token_lifetime: TimeDelta,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_age: TimeDelta::days(365),
            min_length: 20,
            history: 4,
            lockout_threshold: 5,
            lockout_duration: TimeDelta::minutes(30),
            token_lifetime: TimeDelta::seconds(3600),
        }
    }
}

/// The reason a sign-in was rejected. The messages are safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("account locked until {until}")]
    Locked { until: DateTime<Utc> },
    #[error("password expired on {since}")]
    Expired { since: DateTime<Utc> },
    #[error("invalid or expired access token")]
    InvalidToken,
    /// The password was changed moments ago and has not reached this server yet. Not a failed sign-in.
    #[error("the new password is still propagating; try again shortly")]
    Propagating,
}

/// The reason a new password was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("new password is shorter than {0} characters")]
    TooShort(usize),
    #[error("new password has no upper-case letter")]
    NoUpper,
    #[error("new password has no lower-case letter")]
    NoLower,
    #[error("new password has no digit or symbol")]
    NoDigitOrSymbol,
    #[error("new password repeats one of the last {0} passwords")]
    Reused(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum ChangePasswordError {
    #[error(transparent)]
    SignIn(#[from] SignInError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Persist(#[from] PersistError),
}

/// Tokens issued by one grant.
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub scope: String,
}

impl fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A token kept only as its SHA-256, so the state file cannot be replayed as a token list.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredToken {
    sha256: String,
    expires_at: DateTime<Utc>,
    scope: String,
}

#[derive(Clone, Serialize, Deserialize)]
struct AccountFile {
    username: String,
    password: String,
    password_set_at: DateTime<Utc>,
    /// SHA-256 of recent passwords, newest (the current one) first.
    history: Vec<String>,
    failed_sign_ins: u32,
    locked_until: Option<DateTime<Utc>>,
    access_tokens: Vec<StoredToken>,
    refresh_tokens: Vec<StoredToken>,
    /// Until then, sign-ins with the current password fail for now, as while a change replicates.
    #[serde(default)]
    propagating_until: Option<DateTime<Utc>>,
}

/// The account as the control API shows it. It includes the password: this is a sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub username: String,
    pub password: String,
    pub password_set_at: DateTime<Utc>,
    pub password_expires_at: DateTime<Utc>,
    pub failed_sign_ins: u32,
    pub locked_until: Option<DateTime<Utc>>,
}

/// Refresh tokens live this long, as Microsoft Entra ID's default inactivity limit.
const REFRESH_TOKEN_LIFETIME_DAYS: i64 = 90;
/// Tokens kept per kind; older ones are forgotten.
const MAX_STORED_TOKENS: usize = 200;

pub struct Account {
    file: AccountFile,
    path: PathBuf,
    policy: Policy,
    /// Until then the current password is rejected, as a changed password that has not reached every server yet.
    new_password_rejected_until: Option<DateTime<Utc>>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.file.username)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// Loads the account from `path`, or creates `username` with a generated password.
    pub fn load_or_create(
        path: PathBuf,
        username: &str,
        policy: Policy,
        now: DateTime<Utc>,
    ) -> Result<Account, PersistError> {
        if let Some(file) = persist::load_json::<AccountFile>(&path)? {
            return Ok(Account { file, path, policy, new_password_rejected_until: None });
        }
        let password = generate_password();
        let file = AccountFile {
            username: username.to_string(),
            history: vec![sha256_hex(&password)],
            password,
            password_set_at: now,
            failed_sign_ins: 0,
            locked_until: None,
            access_tokens: Vec::new(),
            refresh_tokens: Vec::new(),
            propagating_until: None,
        };
        let account = Account { file, path, policy, new_password_rejected_until: None };
        account.save()?;
        Ok(account)
    }

    pub fn username(&self) -> &str {
        &self.file.username
    }

    pub fn password(&self) -> &str {
        &self.file.password
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn view(&self) -> AccountView {
        AccountView {
            username: self.file.username.clone(),
            password: self.file.password.clone(),
            password_set_at: self.file.password_set_at,
            password_expires_at: self.expires_at(),
            failed_sign_ins: self.file.failed_sign_ins,
            locked_until: self.file.locked_until,
        }
    }

    fn expires_at(&self) -> DateTime<Utc> {
        self.file.password_set_at + self.policy.max_age
    }

    /// Checks a username and password, counting failures toward the lockout.
    ///
    /// A locked account rejects even the right password, and such attempts do not extend
    /// the lockout. The right password after its expiry is rejected without counting.
    pub fn sign_in_with_password(
        &mut self,
        protocol: Protocol,
        username: &str,
        password: &str,
        now: DateTime<Utc>,
        counters: &Counters,
    ) -> Result<(), SignInError> {
        let outcome = self.check_password(username, password, now, counters);
        // A temporary refusal of the right password is neither a success nor a failure toward the lockout.
        if !matches!(outcome, Err(SignInError::Propagating)) {
            counters.sign_in(protocol, outcome.is_ok());
        }
        if let Err(error) = self.save() {
            tracing::error!(%error, "failed to save the account");
        }
        outcome
    }

    fn check_password(
        &mut self,
        username: &str,
        password: &str,
        now: DateTime<Utc>,
        counters: &Counters,
    ) -> Result<(), SignInError> {
        self.check_not_locked(now)?;
        if !username.eq_ignore_ascii_case(&self.file.username) {
            // An unknown user name cannot lock this account.
            return Err(SignInError::InvalidCredentials);
        }
        if password == self.file.password && self.new_password_rejected_until.is_some_and(|until| now < until) {
            return Err(SignInError::InvalidCredentials);
        }
        if password != self.file.password {
            self.file.failed_sign_ins += 1;
            if self.file.failed_sign_ins >= self.policy.lockout_threshold {
                let until = now + self.policy.lockout_duration;
                self.file.locked_until = Some(until);
                self.file.failed_sign_ins = 0;
                counters.lockout();
                tracing::info!(%until, "account locked after failed sign-ins");
            }
            return Err(SignInError::InvalidCredentials);
        }
        self.file.failed_sign_ins = 0;
        if self.file.propagating_until.is_some_and(|until| now < until) {
            return Err(SignInError::Propagating);
        }
        if now >= self.expires_at() {
            return Err(SignInError::Expired { since: self.expires_at() });
        }
        Ok(())
    }

    /// Makes sign-ins with the current password fail for now until `until`, as while a change replicates.
    pub fn delay_propagation(&mut self, until: DateTime<Utc>) -> Result<(), PersistError> {
        self.file.propagating_until = Some(until);
        self.save()
    }

    fn check_not_locked(&mut self, now: DateTime<Utc>) -> Result<(), SignInError> {
        match self.file.locked_until {
            Some(until) if now < until => Err(SignInError::Locked { until }),
            Some(_) => {
                self.file.locked_until = None;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Checks an XOAUTH2 user and bearer token. Tokens stay valid until they expire or a
    /// password change revokes them, as in Entra ID, even if the password expires meanwhile.
    pub fn sign_in_with_token(
        &mut self,
        protocol: Protocol,
        username: &str,
        token: &str,
        now: DateTime<Utc>,
        counters: &Counters,
    ) -> Result<(), SignInError> {
        let valid = username.eq_ignore_ascii_case(&self.file.username)
            && find_token(&self.file.access_tokens, token, now).is_some();
        counters.sign_in(protocol, valid);
        if valid { Ok(()) } else { Err(SignInError::InvalidToken) }
    }

    /// Checks a bearer token for the Graph endpoint, without counting a sign-in.
    pub fn check_access_token(&self, token: &str, now: DateTime<Utc>) -> bool {
        find_token(&self.file.access_tokens, token, now).is_some()
    }

    /// Issues an access and refresh token after a password grant has signed in.
    pub fn issue_tokens(&mut self, scope: &str, now: DateTime<Utc>) -> Result<IssuedTokens, PersistError> {
        let access_token = format!("sbx-at-{}", random_token());
        let refresh_token = format!("sbx-rt-{}", random_token());
        push_token(&mut self.file.access_tokens, &access_token, now + self.policy.token_lifetime, scope, now);
        push_token(
            &mut self.file.refresh_tokens,
            &refresh_token,
            now + TimeDelta::days(REFRESH_TOKEN_LIFETIME_DAYS),
            scope,
            now,
        );
        self.save()?;
        Ok(IssuedTokens {
            access_token,
            refresh_token,
            expires_in: self.policy.token_lifetime.num_seconds(),
            scope: scope.to_string(),
        })
    }

    /// Redeems a refresh token for new tokens. A locked account or an expired password
    /// rejects the grant, so a refresh cannot outlive a sign-in that would fail.
    pub fn redeem_refresh_token(
        &mut self,
        refresh_token: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<IssuedTokens, SignInError>, PersistError> {
        let Some(stored) = find_token(&self.file.refresh_tokens, refresh_token, now) else {
            return Ok(Err(SignInError::InvalidToken));
        };
        let scope = stored.scope.clone();
        if let Err(error) = self.check_not_locked(now) {
            return Ok(Err(error));
        }
        if now >= self.expires_at() {
            return Ok(Err(SignInError::Expired { since: self.expires_at() }));
        }
        self.issue_tokens(&scope, now).map(Ok)
    }

    /// Changes the password as Graph's changePassword does: the current password must be
    /// right (a wrong one counts toward the lockout) and the new one must meet the policy.
    /// Refresh tokens are revoked; access tokens stay valid until they expire.
    pub fn change_password(
        &mut self,
        current: &str,
        new: &str,
        now: DateTime<Utc>,
        counters: &Counters,
    ) -> Result<(), ChangePasswordError> {
        let username = self.file.username.clone();
        match self.check_password(&username, current, now, counters) {
            // Changing an expired password is how it stops being expired.
            Ok(()) | Err(SignInError::Expired { .. } | SignInError::Propagating) => {
                counters.sign_in(Protocol::Graph, true)
            }
            Err(error) => {
                counters.sign_in(Protocol::Graph, false);
                self.save()?;
                return Err(error.into());
            }
        }
        self.validate_new_password(new)?;
        self.replace_password(new, now, false);
        self.save()?;
        Ok(())
    }

    /// Sets the password without any check, as an administrator would, and revokes every
    /// token unless `keep_access_tokens`; this stands in for a change behind the client's back.
    pub fn set_password(
        &mut self,
        new: &str,
        now: DateTime<Utc>,
        keep_access_tokens: bool,
    ) -> Result<(), PersistError> {
        self.replace_password(new, now, !keep_access_tokens);
        self.save()
    }

    /// Rejects sign-ins with the current password until `until`, without counting them toward the lockout.
    pub fn reject_new_password_until(&mut self, until: DateTime<Utc>) {
        self.new_password_rejected_until = Some(until);
    }

    /// Makes the current password expired from now on.
    pub fn expire_password(&mut self, now: DateTime<Utc>) -> Result<(), PersistError> {
        self.file.password_set_at = now - self.policy.max_age - TimeDelta::seconds(1);
        self.save()
    }

    pub fn unlock(&mut self) -> Result<(), PersistError> {
        self.file.locked_until = None;
        self.file.failed_sign_ins = 0;
        self.save()
    }

    /// Checks `new` against the length, character-class and history rules.
    pub fn validate_new_password(&self, new: &str) -> Result<(), PolicyError> {
        if new.chars().count() < self.policy.min_length {
            return Err(PolicyError::TooShort(self.policy.min_length));
        }
        if !new.chars().any(char::is_uppercase) {
            return Err(PolicyError::NoUpper);
        }
        if !new.chars().any(char::is_lowercase) {
            return Err(PolicyError::NoLower);
        }
        if !new.chars().any(|c| !c.is_alphabetic()) {
            return Err(PolicyError::NoDigitOrSymbol);
        }
        let hash = sha256_hex(new);
        if self.file.history.iter().take(self.policy.history).any(|old| *old == hash) {
            return Err(PolicyError::Reused(self.policy.history));
        }
        Ok(())
    }

    fn replace_password(&mut self, new: &str, now: DateTime<Utc>, revoke_access_tokens: bool) {
        self.new_password_rejected_until = None;
        self.file.password = new.to_string();
        self.file.password_set_at = now;
        self.file.history.insert(0, sha256_hex(new));
        self.file.history.truncate(self.policy.history.max(1));
        self.file.failed_sign_ins = 0;
        self.file.refresh_tokens.clear();
        if revoke_access_tokens {
            self.file.access_tokens.clear();
        }
    }

    fn save(&self) -> Result<(), PersistError> {
        persist::save_json(&self.path, &self.file)
    }
}

fn find_token<'a>(tokens: &'a [StoredToken], token: &str, now: DateTime<Utc>) -> Option<&'a StoredToken> {
    let hash = sha256_hex(token);
    tokens.iter().find(|stored| stored.sha256 == hash && now < stored.expires_at)
}

fn push_token(tokens: &mut Vec<StoredToken>, token: &str, expires_at: DateTime<Utc>, scope: &str, now: DateTime<Utc>) {
    tokens.retain(|stored| now < stored.expires_at);
    tokens.push(StoredToken { sha256: sha256_hex(token), expires_at, scope: scope.to_string() });
    if tokens.len() > MAX_STORED_TOKENS {
        tokens.remove(0);
    }
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Generates a 24-character password with upper and lower case letters, digits and symbols.
pub fn generate_password() -> String {
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
    const DIGIT: &[u8] = b"23456789";
    const SYMBOL: &[u8] = b"-_.!+=";
    let mut rng = rand::rng();
    let mut pick = |set: &[u8]| set[rng.random_range(0..set.len())] as char;

    // One character from each class first, so the policy always holds.
    let mut password: Vec<char> = vec![pick(UPPER), pick(LOWER), pick(DIGIT), pick(SYMBOL)];
    let all: Vec<u8> = [UPPER, LOWER, DIGIT, SYMBOL].concat();
    while password.len() < 24 {
        password.push(pick(&all));
    }
    rand::seq::SliceRandom::shuffle(password.as_mut_slice(), &mut rand::rng());
    password.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(dir: &tempfile::TempDir) -> Account {
        Account::load_or_create(
            dir.path().join("account.json"),
            "practice.sms@example.org",
            Policy::default(),
            Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn generated_password_meets_policy() {
        let dir = tempfile::tempdir().unwrap();
        let account = account(&dir);
        for _ in 0..50 {
            assert_eq!(account.validate_new_password(&generate_password()), Ok(()));
        }
    }

    #[test]
    fn policy_rejects_each_rule() {
        let dir = tempfile::tempdir().unwrap();
        let account = account(&dir);
        let current = account.password().to_string();
        let cases = [
            ("Short1!", PolicyError::TooShort(20)),
            ("alllowercaseletters123", PolicyError::NoUpper),
            ("ALLUPPERCASELETTERS123", PolicyError::NoLower),
            ("OnlyLettersAndNothingElse", PolicyError::NoDigitOrSymbol),
            (current.as_str(), PolicyError::Reused(4)),
        ];
        for (password, expected) in cases {
            assert_eq!(account.validate_new_password(password), Err(expected), "{password}");
        }
    }

    #[test]
    fn fifth_failure_locks_account() {
        let dir = tempfile::tempdir().unwrap();
        let mut account = account(&dir);
        let counters = Counters::default();
        let now = Utc::now();
        let user = account.username().to_string();
        for _ in 0..5 {
            let _ = account.sign_in_with_password(Protocol::Imap, &user, "wrong", now, &counters);
        }
        let right = account.password().to_string();
        let outcome = account.sign_in_with_password(Protocol::Smtp, &user, &right, now, &counters);
        assert!(matches!(outcome, Err(SignInError::Locked { .. })), "{outcome:?}");
    }

    #[test]
    fn spreading_password_rejected_until_then() {
        let dir = tempfile::tempdir().unwrap();
        let mut account = account(&dir);
        let counters = Counters::default();
        let now = Utc::now();
        let user = account.username().to_string();
        let right = account.password().to_string();
        account.reject_new_password_until(now + TimeDelta::seconds(5));

        for _ in 0..5 {
            let early = account.sign_in_with_password(Protocol::Smtp, &user, &right, now, &counters);
            assert_eq!(early, Err(SignInError::InvalidCredentials));
        }
        let later = now + TimeDelta::seconds(5);

        assert_eq!(account.sign_in_with_password(Protocol::Smtp, &user, &right, later, &counters), Ok(()));
    }

    #[test]
    fn lockout_ends_after_duration() {
        let dir = tempfile::tempdir().unwrap();
        let mut account = account(&dir);
        let counters = Counters::default();
        let now = Utc::now();
        let user = account.username().to_string();
        for _ in 0..5 {
            let _ = account.sign_in_with_password(Protocol::Imap, &user, "wrong", now, &counters);
        }
        let right = account.password().to_string();
        let later = now + TimeDelta::minutes(31);
        let outcome = account.sign_in_with_password(Protocol::Smtp, &user, &right, later, &counters);
        assert_eq!(outcome, Ok(()));
    }

    #[test]
    fn propagating_password_fails_for_now() {
        let dir = tempfile::tempdir().unwrap();
        let mut account = account(&dir);
        let counters = Counters::default();
        let now = Utc::now();
        let (user, right) = (account.username().to_string(), account.password().to_string());
        account.delay_propagation(now + TimeDelta::seconds(5)).unwrap();

        let early = account.sign_in_with_password(Protocol::Smtp, &user, &right, now, &counters);
        let later =
            account.sign_in_with_password(Protocol::Smtp, &user, &right, now + TimeDelta::seconds(6), &counters);

        assert_eq!(early, Err(SignInError::Propagating));
        assert_eq!(later, Ok(()));
        assert_eq!(counters.snapshot().sign_ins["smtp"].failed, 0, "a temporary refusal is not a failure");
    }

    #[test]
    fn history_keeps_last_four() {
        let dir = tempfile::tempdir().unwrap();
        let mut account = account(&dir);
        let first = account.password().to_string();
        let now = Utc::now();
        for n in 0..4 {
            account.set_password(&format!("Replacement-password-{n}"), now, false).unwrap();
        }
        assert_eq!(account.validate_new_password(&first), Ok(()));
    }
}
