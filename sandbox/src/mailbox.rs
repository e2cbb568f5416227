//! The account's mailbox: folders, messages, UIDs, UIDVALIDITY and flags. The index is
//! `mailbox.json`; each message's bytes are a file under `messages/`, written once. Every
//! change bumps a version number that IMAP sessions watch, so IDLE hears of new mail.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::persist::{self, PersistError};

pub const INBOX: &str = "INBOX";

#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("folder {0} not found")]
    NoFolder(String),
    #[error("folder {0} already exists")]
    FolderExists(String),
    #[error("folder name {0:?} is invalid")]
    InvalidName(String),
    #[error(transparent)]
    Persist(#[from] PersistError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMessage {
    pub uid: u32,
    pub flags: BTreeSet<String>,
    pub internal_date: DateTime<Utc>,
    pub size: u32,
    /// The file under `messages/` that contains the bytes.
    pub file: String,
    /// IMAP's `\Recent`: set on arrival, cleared when a session selects the folder read-write.
    #[serde(default)]
    pub recent: bool,
}

impl StoredMessage {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Folder {
    pub uidvalidity: u32,
    pub uidnext: u32,
    /// Ordered by UID, so the position plus one is the sequence number.
    pub messages: Vec<StoredMessage>,
}

impl Folder {
    fn new(uidvalidity: u32) -> Folder {
        Folder { uidvalidity, uidnext: 1, messages: Vec::new() }
    }

    pub fn find(&self, uid: u32) -> Option<&StoredMessage> {
        self.messages.binary_search_by_key(&uid, |message| message.uid).ok().map(|index| &self.messages[index])
    }

    pub fn max_uid(&self) -> u32 {
        self.messages.last().map_or(0, |message| message.uid)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct MailboxIndex {
    folders: BTreeMap<String, Folder>,
    next_file: u64,
}

/// Flag change requested by STORE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagChange {
    Add,
    Remove,
    Replace,
}

pub struct Mailbox {
    dir: PathBuf,
    index: MailboxIndex,
    bodies: HashMap<String, Arc<[u8]>>,
    version: watch::Sender<u64>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Mailbox {
    /// Loads the mailbox kept in `dir`, or creates one with an empty INBOX.
    pub fn load_or_create(dir: PathBuf, now: DateTime<Utc>) -> Result<Mailbox, MailboxError> {
        let messages_dir = dir.join("messages");
        fs::create_dir_all(&messages_dir)
            .map_err(|source| PersistError::Write { path: messages_dir.clone(), source })?;
        let index = match persist::load_json::<MailboxIndex>(&dir.join("mailbox.json"))? {
            Some(index) => index,
            None => {
                let mut folders = BTreeMap::new();
                folders.insert(INBOX.to_string(), Folder::new(initial_uidvalidity(now)));
                MailboxIndex { folders, next_file: 1 }
            }
        };

        let mut bodies = HashMap::new();
        for message in index.folders.values().flat_map(|folder| &folder.messages) {
            let path = messages_dir.join(&message.file);
            let bytes = fs::read(&path).map_err(|source| PersistError::Read { path, source })?;
            bodies.insert(message.file.clone(), Arc::from(bytes));
        }
        let (version, _) = watch::channel(0);
        let mailbox = Mailbox { dir, index, bodies, version };
        mailbox.save()?;
        Ok(mailbox)
    }

    /// Returns a receiver that receives a new value after every change.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Returns the canonical name of `name`: `INBOX` in any case is the inbox.
    pub fn canonical_name(name: &str) -> String {
        if name.eq_ignore_ascii_case(INBOX) { INBOX.to_string() } else { name.to_string() }
    }

    pub fn folder(&self, name: &str) -> Option<&Folder> {
        self.index.folders.get(&Self::canonical_name(name))
    }

    pub fn folder_names(&self) -> Vec<String> {
        self.index.folders.keys().cloned().collect()
    }

    pub fn body(&self, message: &StoredMessage) -> Arc<[u8]> {
        self.bodies.get(&message.file).cloned().unwrap_or_else(|| Arc::from(Vec::new()))
    }

    pub fn create_folder(&mut self, name: &str, now: DateTime<Utc>) -> Result<(), MailboxError> {
        let name = Self::canonical_name(name.trim_end_matches('/'));
        if name.is_empty() || name.contains(['*', '%', '\r', '\n']) {
            return Err(MailboxError::InvalidName(name));
        }
        if self.index.folders.contains_key(&name) {
            return Err(MailboxError::FolderExists(name));
        }
        self.index.folders.insert(name, Folder::new(initial_uidvalidity(now)));
        self.commit()
    }

    pub fn delete_folder(&mut self, name: &str) -> Result<(), MailboxError> {
        let name = Self::canonical_name(name);
        if name == INBOX {
            return Err(MailboxError::InvalidName(name));
        }
        let folder = self.index.folders.remove(&name).ok_or(MailboxError::NoFolder(name))?;
        self.commit()?;
        for message in folder.messages {
            self.remove_file(&message.file);
        }
        Ok(())
    }

    /// Stores `raw` in `folder` and returns its UIDVALIDITY and UID.
    pub fn append(
        &mut self,
        folder: &str,
        raw: &[u8],
        flags: BTreeSet<String>,
        internal_date: DateTime<Utc>,
    ) -> Result<(u32, u32), MailboxError> {
        let name = Self::canonical_name(folder);
        if !self.index.folders.contains_key(&name) {
            return Err(MailboxError::NoFolder(name));
        }
        let file = self.write_file(raw)?;
        let folder = self.index.folders.get_mut(&name).expect("checked above");
        let uid = folder.uidnext;
        folder.uidnext += 1;
        folder.messages.push(StoredMessage {
            uid,
            flags,
            internal_date,
            size: u32::try_from(raw.len()).unwrap_or(u32::MAX),
            file,
            recent: true,
        });
        let uidvalidity = folder.uidvalidity;
        self.commit()?;
        Ok((uidvalidity, uid))
    }

    /// Changes the flags of the messages `uids` in `folder` and returns the UIDs changed.
    pub fn store_flags(
        &mut self,
        folder: &str,
        uids: &[u32],
        change: FlagChange,
        flags: &BTreeSet<String>,
    ) -> Result<(), MailboxError> {
        let folder = self.folder_mut(folder)?;
        for message in folder.messages.iter_mut().filter(|message| uids.contains(&message.uid)) {
            match change {
                FlagChange::Add => message.flags.extend(flags.iter().cloned()),
                FlagChange::Remove => message.flags.retain(|flag| !flags.iter().any(|f| f.eq_ignore_ascii_case(flag))),
                FlagChange::Replace => message.flags = flags.clone(),
            }
        }
        self.commit()
    }

    /// Clears `\Recent` in `folder` and returns how many messages had it.
    pub fn take_recent(&mut self, folder: &str) -> Result<usize, MailboxError> {
        let folder = self.folder_mut(folder)?;
        let mut count = 0;
        for message in folder.messages.iter_mut().filter(|message| message.recent) {
            message.recent = false;
            count += 1;
        }
        if count > 0 {
            self.commit()?;
        }
        Ok(count)
    }

    /// Removes the messages of `folder` that have `\Deleted` and, when `only` is given, a
    /// UID in it. Returns the UIDs removed.
    pub fn expunge(&mut self, folder: &str, only: Option<&[u32]>) -> Result<Vec<u32>, MailboxError> {
        let folder = self.folder_mut(folder)?;
        let (removed, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut folder.messages)
            .into_iter()
            .partition(|message| message.has_flag("\\Deleted") && only.is_none_or(|uids| uids.contains(&message.uid)));
        folder.messages = kept;
        self.commit()?;
        for message in &removed {
            self.remove_file(&message.file);
        }
        Ok(removed.iter().map(|message| message.uid).collect())
    }

    /// Copies the messages `uids` from `source` to `target` and returns (old UID, new UID)
    /// pairs and the target's UIDVALIDITY. With `remove_source` this is a move.
    pub fn copy(
        &mut self,
        source: &str,
        uids: &[u32],
        target: &str,
        remove_source: bool,
    ) -> Result<(u32, Vec<(u32, u32)>), MailboxError> {
        let target_name = Self::canonical_name(target);
        if !self.index.folders.contains_key(&target_name) {
            return Err(MailboxError::NoFolder(target_name));
        }
        let selected: Vec<StoredMessage> =
            self.folder_mut(source)?.messages.iter().filter(|message| uids.contains(&message.uid)).cloned().collect();

        let mut copies = Vec::new();
        for message in &selected {
            let file = if remove_source {
                message.file.clone()
            } else {
                let bytes = self.body(message);
                self.write_file(&bytes)?
            };
            copies.push((message.uid, file));
        }

        let target_folder = self.index.folders.get_mut(&target_name).expect("checked above");
        let mut pairs = Vec::new();
        for (message, (old_uid, file)) in selected.iter().zip(copies) {
            let new_uid = target_folder.uidnext;
            target_folder.uidnext += 1;
            let mut flags = message.flags.clone();
            flags.retain(|flag| !flag.eq_ignore_ascii_case("\\Recent"));
            target_folder.messages.push(StoredMessage {
                uid: new_uid,
                flags,
                internal_date: message.internal_date,
                size: message.size,
                file,
                recent: true,
            });
            pairs.push((old_uid, new_uid));
        }
        let uidvalidity = target_folder.uidvalidity;
        if remove_source {
            let moved: BTreeSet<u32> = pairs.iter().map(|(old, _)| *old).collect();
            self.folder_mut(source)?.messages.retain(|message| !moved.contains(&message.uid));
        }
        self.commit()?;
        Ok((uidvalidity, pairs))
    }

    /// Gives `folder` a new UIDVALIDITY (the next one unless `value` is given) and renumbers
    /// its messages from UID 1, as a server does when it rebuilds a folder's index.
    pub fn change_uidvalidity(&mut self, folder: &str, value: Option<u32>) -> Result<u32, MailboxError> {
        let folder = self.folder_mut(folder)?;
        let uidvalidity = value.unwrap_or(folder.uidvalidity.wrapping_add(1)).max(1);
        folder.uidvalidity = uidvalidity;
        for (index, message) in folder.messages.iter_mut().enumerate() {
            message.uid = u32::try_from(index + 1).unwrap_or(u32::MAX);
        }
        folder.uidnext = u32::try_from(folder.messages.len() + 1).unwrap_or(u32::MAX);
        self.commit()?;
        Ok(uidvalidity)
    }

    fn folder_mut(&mut self, name: &str) -> Result<&mut Folder, MailboxError> {
        let name = Self::canonical_name(name);
        self.index.folders.get_mut(&name).ok_or(MailboxError::NoFolder(name))
    }

    fn write_file(&mut self, raw: &[u8]) -> Result<String, MailboxError> {
        let file = format!("{}.eml", self.index.next_file);
        self.index.next_file += 1;
        persist::write_atomic(&self.dir.join("messages").join(&file), raw)?;
        self.bodies.insert(file.clone(), Arc::from(raw));
        Ok(file)
    }

    fn remove_file(&mut self, file: &str) {
        self.bodies.remove(file);
        let path = self.dir.join("messages").join(file);
        if let Err(error) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), %error, "failed to remove a message file");
        }
    }

    fn save(&self) -> Result<(), PersistError> {
        persist::save_json(&self.dir.join("mailbox.json"), &self.index)
    }

    /// Saves the index and notifies watching sessions that something changed.
    fn commit(&mut self) -> Result<(), MailboxError> {
        self.save()?;
        self.version.send_modify(|version| *version += 1);
        Ok(())
    }
}

/// Returns a UIDVALIDITY from the creation time, as many servers choose it, so a folder deleted and
/// created again gets a different one.
fn initial_uidvalidity(now: DateTime<Utc>) -> u32 {
    u32::try_from(now.timestamp()).unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let mut mailbox = Mailbox::load_or_create(dir.path().to_path_buf(), now).unwrap();
        let (uidvalidity, uid) = mailbox.append(INBOX, b"Subject: hi\r\n\r\nbody\r\n", BTreeSet::new(), now).unwrap();
        drop(mailbox);

        let mailbox = Mailbox::load_or_create(dir.path().to_path_buf(), now).unwrap();
        let inbox = mailbox.folder(INBOX).unwrap();
        assert_eq!(inbox.uidvalidity, uidvalidity);
        let message = inbox.find(uid).unwrap();
        assert_eq!(&*mailbox.body(message), b"Subject: hi\r\n\r\nbody\r\n");
    }

    #[test]
    fn uidvalidity_change_renumbers_from_one() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let mut mailbox = Mailbox::load_or_create(dir.path().to_path_buf(), now).unwrap();
        for _ in 0..3 {
            mailbox.append(INBOX, b"x\r\n", BTreeSet::new(), now).unwrap();
        }
        let mut deleted = BTreeSet::new();
        deleted.insert("\\Deleted".to_string());
        mailbox.store_flags(INBOX, &[1], FlagChange::Add, &deleted).unwrap();
        mailbox.expunge(INBOX, None).unwrap();
        let old = mailbox.folder(INBOX).unwrap().uidvalidity;

        let new = mailbox.change_uidvalidity(INBOX, None).unwrap();
        let uids: Vec<u32> = mailbox.folder(INBOX).unwrap().messages.iter().map(|m| m.uid).collect();
        assert_ne!(new, old);
        assert_eq!(uids, vec![1, 2]);
    }
}
