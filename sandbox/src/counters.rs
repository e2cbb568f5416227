//! Counters of what the sandbox saw, read through the control API: sign-ins by protocol,
//! lockouts, texts by outcome, token grants and faults fired.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// Where a sign-in attempt came from; the names are the keys in the counters' JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Imap,
    Token,
    Graph,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Imap => "imap",
            Protocol::Token => "token",
            Protocol::Graph => "graph",
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct SignInCounts {
    pub ok: u64,
    pub failed: u64,
}

/// A snapshot of every counter, as the control API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct CounterValues {
    pub sign_ins: BTreeMap<&'static str, SignInCounts>,
    pub lockouts: u64,
    /// Password changes accepted through Graph's changePassword.
    pub password_changes: u64,
    pub messages: BTreeMap<&'static str, u64>,
    pub token_grants: BTreeMap<&'static str, u64>,
    pub faults_fired: BTreeMap<String, u64>,
}

impl Default for CounterValues {
    fn default() -> Self {
        let sign_ins = [Protocol::Smtp, Protocol::Imap, Protocol::Token, Protocol::Graph]
            .into_iter()
            .map(|protocol| (protocol.name(), SignInCounts::default()))
            .collect();
        let messages = MESSAGE_OUTCOMES.iter().map(|name| (*name, 0)).collect();
        let token_grants = ["password", "refresh_token"].into_iter().map(|name| (name, 0)).collect();
        CounterValues {
            sign_ins,
            lockouts: 0,
            password_changes: 0,
            messages,
            token_grants,
            faults_fired: BTreeMap::new(),
        }
    }
}

/// Outcomes counted under `messages`: `accepted` and `rejected` count SMTP recipients, the
/// rest count what the SMS gateway put in the inbox.
pub const MESSAGE_OUTCOMES: &[&str] =
    &["accepted", "rejected", "delivered", "failed", "delayed", "replied", "no_receipt", "inbound"];

#[derive(Debug, Default)]
pub struct Counters {
    values: Mutex<CounterValues>,
}

impl Counters {
    pub fn sign_in(&self, protocol: Protocol, ok: bool) {
        let mut values = self.lock();
        let counts = values.sign_ins.entry(protocol.name()).or_default();
        if ok {
            counts.ok += 1;
        } else {
            counts.failed += 1;
        }
    }

    pub fn lockout(&self) {
        self.lock().lockouts += 1;
    }

    pub fn password_change(&self) {
        self.lock().password_changes += 1;
    }

    /// Adds one to the message outcome `name`, which must be one of [`MESSAGE_OUTCOMES`].
    pub fn message(&self, name: &'static str) {
        debug_assert!(MESSAGE_OUTCOMES.contains(&name), "unknown outcome {name}");
        *self.lock().messages.entry(name).or_default() += 1;
    }

    pub fn token_grant(&self, grant_type: &'static str) {
        *self.lock().token_grants.entry(grant_type).or_default() += 1;
    }

    pub fn fault_fired(&self, kind: &str) {
        *self.lock().faults_fired.entry(kind.to_string()).or_default() += 1;
    }

    pub fn snapshot(&self) -> CounterValues {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CounterValues> {
        self.values.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
