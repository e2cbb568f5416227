//! The IMAP commands that work on folders and messages: SELECT, EXAMINE, CREATE, DELETE,
//! LIST, STATUS, APPEND, CLOSE, UNSELECT, EXPUNGE, SEARCH, FETCH, STORE, COPY and MOVE.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::fetch::{self, FetchItem};
use super::parse::{Token, string};
use super::search::{self, Candidate};
use super::sequence::{SequenceSet, format_uids};
use super::session::{Reply, Selected, Session, SessionEnd};
use crate::faults::FaultKind;
use crate::mailbox::{FlagChange, Folder, Mailbox, MailboxError};

const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

impl Session {
    pub(super) async fn select(&mut self, args: &[Token], read_only: bool) -> Result<Reply, SessionEnd> {
        let command = if read_only { "EXAMINE" } else { "SELECT" };
        // A failed SELECT leaves no folder selected (RFC 3501 section 6.3.1).
        self.selected = None;
        let Some(name) = args.first().and_then(Token::text) else {
            return Ok(Reply::Tagged(format!("BAD {command} needs a folder name")));
        };

        let (lines, selected) = {
            let mut mailbox = self.shared.mailbox();
            let recent = if read_only {
                mailbox.folder(&name).map(|folder| folder.messages.iter().filter(|m| m.recent).count())
            } else {
                mailbox.take_recent(&name).ok()
            };
            let (Some(folder), Some(recent)) = (mailbox.folder(&name), recent) else {
                return Ok(Reply::Tagged(format!("NO {command} failed: folder {name} not found")));
            };
            let uids: Vec<u32> = folder.messages.iter().map(|message| message.uid).collect();
            let mut lines = format!(
                "* FLAGS ({SYSTEM_FLAGS})\r\n\
                 * OK [PERMANENTFLAGS ({SYSTEM_FLAGS} \\*)] Flags permitted\r\n\
                 * {} EXISTS\r\n\
                 * {recent} RECENT\r\n",
                uids.len()
            );
            if let Some(position) = folder.messages.iter().position(|message| !message.has_flag("\\Seen")) {
                lines.push_str(&format!("* OK [UNSEEN {}] First unseen message\r\n", position + 1));
            }
            lines.push_str(&format!(
                "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {}] Predicted next UID\r\n",
                folder.uidvalidity, folder.uidnext
            ));
            let selected =
                Selected { name: Mailbox::canonical_name(&name), read_only, uidvalidity: folder.uidvalidity, uids };
            (lines, selected)
        };
        self.send(lines.as_bytes()).await?;
        self.selected = Some(selected);
        let access = if read_only { "READ-ONLY" } else { "READ-WRITE" };
        Ok(Reply::Tagged(format!("OK [{access}] {command} completed")))
    }

    pub(super) fn create(&mut self, args: &[Token]) -> Reply {
        let Some(name) = args.first().and_then(Token::text) else {
            return Reply::Tagged("BAD CREATE needs a folder name".into());
        };
        let now = self.shared.clock.now();
        match self.shared.mailbox().create_folder(&name, now) {
            Ok(()) => Reply::Tagged("OK CREATE completed".into()),
            Err(MailboxError::FolderExists(_)) => {
                Reply::Tagged(format!("NO [ALREADYEXISTS] Folder {name} already exists"))
            }
            Err(error) => Reply::Tagged(format!("NO CREATE failed: {error}")),
        }
    }

    pub(super) fn delete(&mut self, args: &[Token]) -> Reply {
        let Some(name) = args.first().and_then(Token::text) else {
            return Reply::Tagged("BAD DELETE needs a folder name".into());
        };
        match self.shared.mailbox().delete_folder(&name) {
            Ok(()) => Reply::Tagged("OK DELETE completed".into()),
            Err(MailboxError::NoFolder(_)) => Reply::Tagged(format!("NO [NONEXISTENT] Folder {name} not found")),
            Err(error) => Reply::Tagged(format!("NO DELETE failed: {error}")),
        }
    }

    pub(super) async fn list(&mut self, command: &str, args: &[Token]) -> Result<Reply, SessionEnd> {
        let (Some(reference), Some(pattern)) = (args.first().and_then(Token::text), args.get(1).and_then(Token::text))
        else {
            return Ok(Reply::Tagged(format!("BAD {command} needs a reference and a pattern")));
        };
        let mut lines = String::new();
        if pattern.is_empty() {
            lines.push_str(&format!("* {command} (\\Noselect) \"/\" \"\"\r\n"));
        } else {
            let pattern = format!("{reference}{pattern}");
            let names = self.shared.mailbox().folder_names();
            for name in &names {
                if !wildcard_match(&pattern, name) {
                    continue;
                }
                let prefix = format!("{name}/");
                let children = if names.iter().any(|other| other.starts_with(&prefix)) {
                    "\\HasChildren"
                } else {
                    "\\HasNoChildren"
                };
                let quoted = String::from_utf8_lossy(&string(name.as_bytes())).into_owned();
                lines.push_str(&format!("* {command} ({children}) \"/\" {quoted}\r\n"));
            }
        }
        self.send(lines.as_bytes()).await?;
        Ok(Reply::Tagged(format!("OK {command} completed")))
    }

    pub(super) async fn status(&mut self, args: &[Token]) -> Result<Reply, SessionEnd> {
        let (Some(name), Some(Token::List(items))) = (args.first().and_then(Token::text), args.get(1)) else {
            return Ok(Reply::Tagged("BAD STATUS needs a folder name and a list of items".into()));
        };
        let line = {
            let mailbox = self.shared.mailbox();
            let Some(folder) = mailbox.folder(&name) else {
                return Ok(Reply::Tagged(format!("NO [NONEXISTENT] Folder {name} not found")));
            };
            let mut values = Vec::new();
            for item in items {
                let item = item.atom_upper().unwrap_or_default();
                let value = match item.as_str() {
                    "MESSAGES" => folder.messages.len(),
                    "RECENT" => folder.messages.iter().filter(|m| m.recent).count(),
                    "UIDNEXT" => folder.uidnext as usize,
                    "UIDVALIDITY" => folder.uidvalidity as usize,
                    "UNSEEN" => folder.messages.iter().filter(|m| !m.has_flag("\\Seen")).count(),
                    _ => return Ok(Reply::Tagged(format!("BAD Unknown STATUS item {item}"))),
                };
                values.push(format!("{item} {value}"));
            }
            let quoted = String::from_utf8_lossy(&string(name.as_bytes())).into_owned();
            format!("* STATUS {quoted} ({})\r\n", values.join(" "))
        };
        self.send(line.as_bytes()).await?;
        Ok(Reply::Tagged("OK STATUS completed".into()))
    }

    pub(super) fn append(&mut self, args: &[Token]) -> Reply {
        let Some(name) = args.first().and_then(Token::text) else {
            return Reply::Tagged("BAD APPEND needs a folder name".into());
        };
        let mut flags = BTreeSet::new();
        let mut date = self.shared.clock.now();
        let mut message = None;
        for token in &args[1..] {
            match token {
                Token::List(list) => match parse_flags(list) {
                    Ok(parsed) => flags = parsed,
                    Err(reply) => return reply,
                },
                Token::String(bytes) if message.is_none() && args.last() == Some(token) => {
                    message = Some(bytes.clone())
                }
                Token::String(bytes) => {
                    let text = String::from_utf8_lossy(bytes);
                    match DateTime::parse_from_str(text.trim(), "%d-%b-%Y %H:%M:%S %z") {
                        Ok(parsed) => date = parsed.with_timezone(&Utc),
                        Err(_) => return Reply::Tagged(format!("BAD Invalid date-time {text:?}")),
                    }
                }
                Token::Atom(atom) => {
                    return Reply::Tagged(format!("BAD Unexpected {atom} in APPEND"));
                }
            }
        }
        let Some(message) = message else {
            return Reply::Tagged("BAD APPEND needs a message literal".into());
        };
        match self.shared.mailbox().append(&name, &message, flags, date) {
            Ok((uidvalidity, uid)) => Reply::Tagged(format!("OK [APPENDUID {uidvalidity} {uid}] APPEND completed")),
            Err(MailboxError::NoFolder(_)) => Reply::Tagged(format!("NO [TRYCREATE] Folder {name} not found")),
            Err(error) => Reply::Tagged(format!("NO APPEND failed: {error}")),
        }
    }

    pub(super) fn close(&mut self, expunge: bool) -> Reply {
        let Some(selected) = self.selected.take() else {
            return Reply::Tagged("OK Folder closed".into());
        };
        if expunge
            && !selected.read_only
            && let Err(error) = self.shared.mailbox().expunge(&selected.name, None)
        {
            return Reply::Tagged(format!("NO CLOSE failed: {error}"));
        }
        Reply::Tagged("OK Folder closed".into())
    }

    pub(super) fn expunge(&mut self, uid_set: Option<&str>) -> Reply {
        let selected = self.selected.as_ref().expect("dispatch checks for a selected folder");
        if selected.read_only {
            return Reply::Tagged("NO [READ-ONLY] The folder is read-only".into());
        }
        let only = match uid_set.map(SequenceSet::parse) {
            None => None,
            Some(Ok(set)) => {
                let mailbox = self.shared.mailbox();
                let Some(folder) = mailbox.folder(&selected.name) else {
                    return Reply::Tagged("NO Folder not found".into());
                };
                let max_uid = folder.max_uid();
                Some(
                    folder.messages.iter().map(|m| m.uid).filter(|uid| set.contains(*uid, max_uid)).collect::<Vec<_>>(),
                )
            }
            Some(Err(error)) => return Reply::Tagged(format!("BAD {error}")),
        };
        // The EXPUNGE responses go out with the updates that precede the tagged reply.
        match self.shared.mailbox().expunge(&selected.name, only.as_deref()) {
            Ok(_) => Reply::Tagged("OK EXPUNGE completed".into()),
            Err(error) => Reply::Tagged(format!("NO EXPUNGE failed: {error}")),
        }
    }

    /// Returns (sequence number, UID) of each message in `set`, from the messages already
    /// reported to the client that still exist.
    fn resolve(&self, set: &SequenceSet, by_uid: bool, folder: &Folder) -> Vec<(u32, u32)> {
        let selected = self.selected.as_ref().expect("dispatch checks for a selected folder");
        let max_uid = selected.uids.last().copied().unwrap_or(0);
        let max_sequence = u32::try_from(selected.uids.len()).unwrap_or(u32::MAX);
        selected
            .uids
            .iter()
            .enumerate()
            .map(|(index, uid)| (u32::try_from(index + 1).unwrap_or(u32::MAX), *uid))
            .filter(
                |(sequence, uid)| {
                    if by_uid { set.contains(*uid, max_uid) } else { set.contains(*sequence, max_sequence) }
                },
            )
            .filter(|(_, uid)| folder.find(*uid).is_some())
            .collect()
    }

    pub(super) async fn search(&mut self, args: &[Token], by_uid: bool) -> Result<Reply, SessionEnd> {
        let criterion = match search::parse_criteria(args) {
            Ok(criterion) => criterion,
            Err(error @ search::SearchError::Charset(_)) => {
                return Ok(Reply::Tagged(format!("NO [BADCHARSET (US-ASCII UTF-8)] {error}")));
            }
            Err(error) => return Ok(Reply::Tagged(format!("BAD {error}"))),
        };
        let line = {
            let selected = self.selected.as_ref().expect("dispatch checks for a selected folder");
            let mailbox = self.shared.mailbox();
            let Some(folder) = mailbox.folder(&selected.name) else {
                return Ok(Reply::Tagged("NO Folder not found".into()));
            };
            let max_uid = selected.uids.last().copied().unwrap_or(0);
            let max_sequence = u32::try_from(selected.uids.len()).unwrap_or(u32::MAX);
            let mut found = Vec::new();
            for (index, uid) in selected.uids.iter().enumerate() {
                let Some(message) = folder.find(*uid) else {
                    continue;
                };
                let raw = mailbox.body(message);
                let sequence = u32::try_from(index + 1).unwrap_or(u32::MAX);
                let candidate = Candidate { message, raw: &raw, sequence, max_sequence, max_uid };
                if criterion.matches(&candidate) {
                    found.push(if by_uid { *uid } else { sequence }.to_string());
                }
            }
            let mut line = String::from("* SEARCH");
            for number in found {
                line.push(' ');
                line.push_str(&number);
            }
            line.push_str("\r\n");
            line
        };
        self.send(line.as_bytes()).await?;
        Ok(Reply::Tagged("OK SEARCH completed".into()))
    }

    pub(super) async fn fetch(&mut self, args: &[Token], by_uid: bool) -> Result<Reply, SessionEnd> {
        let (Some(set), Some(items)) = (args.first().and_then(Token::text), args.get(1)) else {
            return Ok(Reply::Tagged("BAD FETCH needs a sequence set and items".into()));
        };
        let set = match SequenceSet::parse(&set) {
            Ok(set) => set,
            Err(error) => return Ok(Reply::Tagged(format!("BAD {error}"))),
        };
        let items = match fetch::parse_items(items) {
            Ok(items) => items,
            Err(error) => return Ok(Reply::Tagged(format!("BAD {error}"))),
        };
        let responses = {
            let selected = self.selected.as_ref().expect("dispatch checks for a selected folder");
            let name = selected.name.clone();
            let read_only = selected.read_only;
            let mut mailbox = self.shared.mailbox();
            let Some(folder) = mailbox.folder(&name) else {
                return Ok(Reply::Tagged("NO Folder not found".into()));
            };
            let targets = self.resolve(&set, by_uid, folder);

            // BODY[] without PEEK sets \Seen (RFC 3501 section 6.4.5), except in EXAMINE.
            let mut newly_seen = Vec::new();
            if fetch::sets_seen(&items) && !read_only {
                newly_seen = targets
                    .iter()
                    .filter(|(_, uid)| folder.find(*uid).is_some_and(|m| !m.has_flag("\\Seen")))
                    .map(|(_, uid)| *uid)
                    .collect();
                let seen = BTreeSet::from(["\\Seen".to_string()]);
                if let Err(error) = mailbox.store_flags(&name, &newly_seen, FlagChange::Add, &seen) {
                    return Ok(Reply::Tagged(format!("NO FETCH failed: {error}")));
                }
            }
            let folder = mailbox.folder(&name).expect("present above");
            targets
                .iter()
                .filter_map(|(sequence, uid)| {
                    let message = folder.find(*uid)?;
                    let raw = mailbox.body(message);
                    Some(fetch::render(&items, message, &raw, *sequence, by_uid, newly_seen.contains(uid)))
                })
                .collect::<Vec<_>>()
        };

        if !responses.is_empty() && self.shared.faults.take(FaultKind::ImapDropMidFetch, None).is_some() {
            let first = &responses[0];
            self.send(&first[..first.len() / 2]).await?;
            return Err(self.drop_connection(FaultKind::ImapDropMidFetch).await);
        }
        self.send(&responses.concat()).await?;
        Ok(Reply::Tagged("OK FETCH completed".into()))
    }

    pub(super) async fn store(&mut self, args: &[Token], by_uid: bool) -> Result<Reply, SessionEnd> {
        let (Some(set), Some(operation)) =
            (args.first().and_then(Token::text), args.get(1).and_then(Token::atom_upper))
        else {
            return Ok(Reply::Tagged("BAD STORE needs a sequence set, an operation and flags".into()));
        };
        let set = match SequenceSet::parse(&set) {
            Ok(set) => set,
            Err(error) => return Ok(Reply::Tagged(format!("BAD {error}"))),
        };
        let (operation, silent) = match operation.strip_suffix(".SILENT") {
            Some(operation) => (operation.to_string(), true),
            None => (operation, false),
        };
        let change = match operation.as_str() {
            "+FLAGS" => FlagChange::Add,
            "-FLAGS" => FlagChange::Remove,
            "FLAGS" => FlagChange::Replace,
            _ => {
                return Ok(Reply::Tagged(format!("BAD Unknown STORE operation {operation}")));
            }
        };
        let flag_tokens: Vec<Token> = match args.get(2..) {
            Some([Token::List(list)]) => list.clone(),
            Some(atoms) if !atoms.is_empty() => atoms.to_vec(),
            _ => return Ok(Reply::Tagged("BAD STORE needs flags".into())),
        };
        let flags = match parse_flags(&flag_tokens) {
            Ok(flags) => flags,
            Err(reply) => return Ok(reply),
        };

        let responses = {
            let selected = self.selected.as_ref().expect("dispatch checks for a selected folder");
            if selected.read_only {
                return Ok(Reply::Tagged("NO [READ-ONLY] The folder is read-only".into()));
            }
            let name = selected.name.clone();
            let mut mailbox = self.shared.mailbox();
            let Some(folder) = mailbox.folder(&name) else {
                return Ok(Reply::Tagged("NO Folder not found".into()));
            };
            let targets = self.resolve(&set, by_uid, folder);
            let uids: Vec<u32> = targets.iter().map(|(_, uid)| *uid).collect();
            if let Err(error) = mailbox.store_flags(&name, &uids, change, &flags) {
                return Ok(Reply::Tagged(format!("NO STORE failed: {error}")));
            }
            let folder = mailbox.folder(&name).expect("present above");
            let mut responses = Vec::new();
            if !silent {
                for (sequence, uid) in &targets {
                    let Some(message) = folder.find(*uid) else {
                        continue;
                    };
                    responses.extend(fetch::render(&[FetchItem::Flags], message, &[], *sequence, by_uid, false));
                }
            }
            responses
        };
        self.send(&responses).await?;
        Ok(Reply::Tagged("OK STORE completed".into()))
    }

    pub(super) async fn copy(
        &mut self,
        args: &[Token],
        by_uid: bool,
        remove_source: bool,
    ) -> Result<Reply, SessionEnd> {
        let command = if remove_source { "MOVE" } else { "COPY" };
        let (Some(set), Some(target)) = (args.first().and_then(Token::text), args.get(1).and_then(Token::text)) else {
            return Ok(Reply::Tagged(format!("BAD {command} needs a sequence set and a folder")));
        };
        let set = match SequenceSet::parse(&set) {
            Ok(set) => set,
            Err(error) => return Ok(Reply::Tagged(format!("BAD {error}"))),
        };
        let copied = {
            let selected = self.selected.as_ref().expect("dispatch checks for a selected folder");
            if remove_source && selected.read_only {
                return Ok(Reply::Tagged("NO [READ-ONLY] The folder is read-only".into()));
            }
            let name = selected.name.clone();
            let mut mailbox = self.shared.mailbox();
            let Some(folder) = mailbox.folder(&name) else {
                return Ok(Reply::Tagged("NO Folder not found".into()));
            };
            if mailbox.folder(&target).is_none() {
                return Ok(Reply::Tagged(format!("NO [TRYCREATE] Folder {target} not found")));
            }
            let uids: Vec<u32> = self.resolve(&set, by_uid, folder).iter().map(|(_, uid)| *uid).collect();
            mailbox.copy(&name, &uids, &target, remove_source)
        };
        let (uidvalidity, pairs) = match copied {
            Ok(copied) => copied,
            Err(error) => return Ok(Reply::Tagged(format!("NO {command} failed: {error}"))),
        };
        if pairs.is_empty() {
            return Ok(Reply::Tagged(format!("OK {command} completed; no messages matched")));
        }
        let sources: Vec<u32> = pairs.iter().map(|(old, _)| *old).collect();
        let targets: Vec<u32> = pairs.iter().map(|(_, new)| *new).collect();
        let code = format!("COPYUID {uidvalidity} {} {}", format_uids(&sources), format_uids(&targets));
        if remove_source {
            // RFC 6851 section 4.3: COPYUID in an untagged OK, then the EXPUNGE responses.
            self.send(format!("* OK [{code}] Moved\r\n").as_bytes()).await?;
            Ok(Reply::Tagged("OK MOVE completed".into()))
        } else {
            Ok(Reply::Tagged(format!("OK [{code}] COPY completed")))
        }
    }
}

/// Parses flags for STORE or APPEND; `\Recent` cannot be set by a client.
fn parse_flags(tokens: &[Token]) -> Result<BTreeSet<String>, Reply> {
    let mut flags = BTreeSet::new();
    for token in tokens {
        let Token::Atom(flag) = token else {
            return Err(Reply::Tagged("BAD Flags must be atoms".into()));
        };
        let canonical = SYSTEM_FLAGS
            .split(' ')
            .find(|system| system.eq_ignore_ascii_case(flag))
            .map_or_else(|| flag.clone(), str::to_string);
        if canonical.starts_with('\\') && !SYSTEM_FLAGS.split(' ').any(|system| system == canonical) {
            return Err(Reply::Tagged(format!("BAD Flag {flag} cannot be stored")));
        }
        flags.insert(canonical);
    }
    Ok(flags)
}

/// Matches a LIST pattern, where `*` matches anything and `%` anything but the `/`
/// hierarchy delimiter.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    fn matches(pattern: &[char], name: &[char]) -> bool {
        match pattern.split_first() {
            None => name.is_empty(),
            Some(('*', rest)) => (0..=name.len()).any(|skip| matches(rest, &name[skip..])),
            Some(('%', rest)) => (0..=name.len())
                .take_while(|skip| *skip == 0 || name[skip - 1] != '/')
                .any(|skip| matches(rest, &name[skip..])),
            Some((first, rest)) => {
                name.split_first().is_some_and(|(head, tail)| head.eq_ignore_ascii_case(first) && matches(rest, tail))
            }
        }
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    matches(&pattern, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_stops_at_delimiter() {
        assert!(wildcard_match("%", "INBOX"));
        assert!(!wildcard_match("%", "Archive/2026"));
        assert!(wildcard_match("*", "Archive/2026"));
    }

    #[test]
    fn recent_flag_cannot_be_stored() {
        let tokens = vec![Token::Atom("\\Recent".into())];
        assert!(parse_flags(&tokens).is_err());
    }
}
