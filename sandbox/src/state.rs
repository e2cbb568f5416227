//! The state every server shares: the clock, the account, the mailbox, the texts sent,
//! counters, armed faults and the settings fixed at start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::account::Account;
use crate::clock::Clock;
use crate::counters::Counters;
use crate::faults::Faults;
use crate::gateway::SentText;
use crate::mailbox::Mailbox;

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub receipt_delay: Duration,
    /// The largest message SMTP accepts, in octets, as advertised in EHLO's SIZE.
    pub max_message_size: usize,
    /// When set, the token endpoint accepts only this client_id.
    pub client_id: Option<String>,
    pub hostname: String,
    pub state_dir: PathBuf,
}

pub struct Shared {
    pub clock: Clock,
    pub settings: Settings,
    pub counters: Counters,
    pub faults: Faults,
    pub tls: tokio_rustls::TlsAcceptor,
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
    account: Mutex<Account>,
    mailbox: Mutex<Mailbox>,
    sent: Mutex<Vec<SentText>>,
}

impl Shared {
    pub fn new(
        clock: Clock,
        settings: Settings,
        account: Account,
        mailbox: Mailbox,
        tls: tokio_rustls::TlsAcceptor,
    ) -> Shared {
        Shared {
            clock,
            settings,
            counters: Counters::default(),
            faults: Faults::default(),
            tls,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            account: Mutex::new(account),
            mailbox: Mutex::new(mailbox),
            sent: Mutex::new(Vec::new()),
        }
    }

    // A panic while a lock is held leaves consistent data behind (every change is saved
    // before it is visible), so a poisoned lock is used as it is.
    // NOTE: changes are saved with fsync while the lock is held, on the async workers;
    // that is fine for one account's traffic but would stall a busy server.
    pub fn account(&self) -> MutexGuard<'_, Account> {
        self.account.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn mailbox(&self) -> MutexGuard<'_, Mailbox> {
        self.mailbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn username(&self) -> String {
        self.account().username().to_string()
    }

    pub fn record_sent(&self, text: SentText) {
        self.sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(text);
    }

    /// Returns every text accepted so far, each with how many times its Message-ID was sent.
    pub fn sent_texts(&self) -> Vec<(SentText, usize)> {
        let sent = self.sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
        for text in sent.iter() {
            *counts.entry((&text.message_id, &text.number)).or_default() += 1;
        }
        sent.iter().map(|text| (text.clone(), counts[&(text.message_id.as_str(), text.number.as_str())])).collect()
    }
}

impl Shared {
    /// Checks credentials from SMTP or IMAP against the account.
    pub fn sign_in(
        &self,
        protocol: crate::counters::Protocol,
        credentials: &crate::sasl::Credentials,
    ) -> Result<(), crate::account::SignInError> {
        let now = self.clock.now();
        let mut account = self.account();
        let outcome = match credentials {
            crate::sasl::Credentials::Password { username, password } => {
                account.sign_in_with_password(protocol, username, password, now, &self.counters)
            }
            crate::sasl::Credentials::Token { username, token } => {
                account.sign_in_with_token(protocol, username, token, now, &self.counters)
            }
        };
        match &outcome {
            Ok(()) => tracing::info!(protocol = protocol.name(), "sign-in accepted"),
            Err(error) => tracing::info!(protocol = protocol.name(), %error, "sign-in rejected"),
        }
        outcome
    }
}

impl Shared {
    pub fn clear_sent(&self) {
        self.sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }
}
