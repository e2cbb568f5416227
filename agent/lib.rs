//! nhsmail-agent sends patient SMS through an NHSmail mailbox and manages that mailbox's password.
//!
//! Module map:
//! - [`config`]: settings from the TOML file, the environment and flags, validated once at start-up.
//! - [`store`]: the SQLite database; the only module that writes SQL.
//! - [`sms`]: UK mobile number normalisation and SMS encoding and part counting. Pure, no I/O.
//! - [`queue`]: message states, priorities, allowed transitions and backoff.
//! - [`transport`]: SMTP out and IMAP in, with errors classified as transient, permanent or authentication, and
//!   the one-shot HTTP client of the token endpoint, the password change endpoint and the update feed.
//! - [`mailbox`]: classification of inbound email (failure report, receipt, reply, other). Pure over bytes.
//! - [`oauth`]: the OAuth 2.0 token client (password and refresh grants) for XOAUTH2 sign-in.
//! - [`credentials`]: the encrypted password, the access token cache, the password's lifecycle state, the sending
//!   gate and lockout protection.
//! - [`secret`]: a string type whose `Debug` and `Display` never show the value.
//! - [`app`]: the operations the API calls, over the modules above.
//! - [`sender`]: the task that hands due messages to SMTP.
//! - [`upload`]: the periodic upload cycle that collects replies and reports over IMAP, and moves and deletes
//!   processed mail.
//! - [`watcher`]: the task that keeps INBOX in IMAP IDLE and starts an upload cycle when new mail arrives.
//! - [`auth`]: bearer tokens with roles, stored as salted hashes.
//! - [`permissions`]: the modes of the data directory and its private files, checked at start-up.
//! - [`api`]: the gRPC services; thin wrappers over [`app`].
//! - [`paths`]: default file locations shared with nhsmail-ctl.
//! - [`metrics`]: the optional Prometheus endpoint.
//! - [`update`]: the software update feed, checked by the upload cycle.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod credentials;
pub mod mailbox;
pub mod metrics;
pub mod oauth;
pub mod paths;
pub mod permissions;
pub mod queue;
pub mod rotation;
pub mod secret;
pub mod sender;
pub mod sms;
pub mod store;
pub mod transport;
pub mod update;
pub mod upload;
pub mod watcher;

pub mod proto {
    //! Code generated from `proto/nhsmail/agent/v1`.
    tonic::include_proto!("nhsmail.agent.v1");

    /// Encoded descriptors of every service, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nhsmail_descriptor.bin"));
}
