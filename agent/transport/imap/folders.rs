//! Folder work on a signed-in session: capabilities, creating a folder, moving and deleting messages by UID, and
//! finding messages older than a date.

use async_imap::types::Capabilities;
use chrono::NaiveDate;
use futures::{Stream, StreamExt};

use super::{Context, ImapError, ImapSession, uid_set};

/// The extensions a server advertises that change how messages are moved and how new mail is awaited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerFeatures {
    /// UID MOVE (RFC 6851).
    pub move_command: bool,
    /// UID EXPUNGE (RFC 4315), which removes only the named messages.
    pub uidplus: bool,
    /// IDLE (RFC 2177).
    pub idle: bool,
}

impl ServerFeatures {
    fn from_capabilities(capabilities: &Capabilities) -> Self {
        Self {
            move_command: capabilities.has_str("MOVE"),
            uidplus: capabilities.has_str("UIDPLUS"),
            idle: capabilities.has_str("IDLE"),
        }
    }
}

impl ImapSession {
    /// Sends CAPABILITY and returns the extensions this client uses.
    pub async fn features(&mut self) -> Result<ServerFeatures, ImapError> {
        self.check_usable()?;
        let result = self.context.run("CAPABILITY", self.session.capabilities()).await;
        let capabilities = self.track(result)?;
        Ok(ServerFeatures::from_capabilities(&capabilities))
    }

    /// Creates `folder` unless LIST shows it exists already.
    pub async fn ensure_folder(&mut self, folder: &str) -> Result<(), ImapError> {
        self.check_usable()?;
        let result = self.list_names(&quote(folder)).await;
        let names = self.track(result)?;
        if names.iter().any(|name| name == folder) {
            return Ok(());
        }
        let result = self.context.run("CREATE", self.session.create(folder)).await;
        self.track(result)
    }

    /// Moves the messages with these UIDs from the selected mailbox to `folder`: UID MOVE when the server offers
    /// it, else UID COPY, `\Deleted` and UID EXPUNGE (or EXPUNGE without UIDPLUS). UIDs no longer in the mailbox
    /// are ignored, as RFC 3501 specifies for UID commands.
    pub async fn move_uids(&mut self, uids: &[u32], folder: &str, features: ServerFeatures) -> Result<(), ImapError> {
        self.check_usable()?;
        if uids.is_empty() {
            return Ok(());
        }
        let set = uid_set(uids);
        if features.move_command {
            let result = self.context.run("UID MOVE", self.session.uid_mv(&set, folder)).await;
            return self.track(result);
        }

        let result = self.context.run("UID COPY", self.session.uid_copy(&set, folder)).await;
        self.track(result)?;
        self.delete_uids(uids, features).await
    }

    /// Marks the messages with these UIDs `\Deleted` and expunges them: only them with UIDPLUS, every message
    /// marked `\Deleted` in the mailbox without it.
    pub async fn delete_uids(&mut self, uids: &[u32], features: ServerFeatures) -> Result<(), ImapError> {
        self.check_usable()?;
        if uids.is_empty() {
            return Ok(());
        }
        let set = uid_set(uids);
        let result = self.store_deleted(&set).await;
        self.track(result)?;
        let result = self.expunge(&set, features.uidplus).await;
        self.track(result)
    }

    /// Returns the UIDs of the messages in the selected mailbox whose INTERNALDATE is before `date` (SEARCH
    /// BEFORE, which compares dates only and ignores the time of day).
    pub async fn search_before(&mut self, date: NaiveDate) -> Result<Vec<u32>, ImapError> {
        self.check_usable()?;
        let query = format!("BEFORE {}", date.format("%-d-%b-%Y"));
        let result = self.context.run("UID SEARCH", self.session.uid_search(&query)).await;
        let found = self.track(result)?;
        let mut uids: Vec<u32> = found.into_iter().collect();
        uids.sort_unstable();
        Ok(uids)
    }

    async fn list_names(&mut self, pattern: &str) -> Result<Vec<String>, ImapError> {
        let context = &self.context;
        let stream = context.run("LIST", self.session.list(Some(""), Some(pattern))).await?;
        let names = drain(context, "LIST", stream).await?;
        Ok(names.into_iter().map(|name| name.name().to_owned()).collect())
    }

    async fn store_deleted(&mut self, set: &str) -> Result<(), ImapError> {
        let context = &self.context;
        let stream = context.run("UID STORE", self.session.uid_store(set, "+FLAGS.SILENT (\\Deleted)")).await?;
        drain(context, "UID STORE", stream).await.map(drop)
    }

    async fn expunge(&mut self, set: &str, uidplus: bool) -> Result<(), ImapError> {
        let context = &self.context;
        if uidplus {
            let stream = context.run("UID EXPUNGE", self.session.uid_expunge(set)).await?;
            drain(context, "UID EXPUNGE", stream).await.map(drop)
        } else {
            let stream = context.run("EXPUNGE", self.session.expunge()).await?;
            drain(context, "EXPUNGE", stream).await.map(drop)
        }
    }
}

/// Reads a command's responses to the end, with the timeout applying between two responses.
async fn drain<T>(
    context: &Context,
    command: &'static str,
    stream: impl Stream<Item = async_imap::error::Result<T>>,
) -> Result<Vec<T>, ImapError> {
    let mut stream = std::pin::pin!(stream);
    let mut items = Vec::new();
    loop {
        match tokio::time::timeout(context.timeout, stream.next()).await {
            Ok(None) => return Ok(items),
            Ok(Some(Ok(item))) => items.push(item),
            Ok(Some(Err(source))) => return Err(context.command_error(command, source)),
            Err(_elapsed) => return Err(context.timed_out(command)),
        }
    }
}

/// Quotes a mailbox name as an IMAP quoted string, for LIST, whose pattern async-imap sends as given.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}
