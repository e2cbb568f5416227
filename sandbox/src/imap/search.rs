//! SEARCH criteria (RFC 3501 section 6.4.4): parsing them from tokens and matching them
//! against one message.

use chrono::NaiveDate;

use super::message;
use super::parse::Token;
use super::sequence::SequenceSet;
use crate::mailbox::StoredMessage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Criterion {
    All,
    /// A flag that the message has (true) or lacks (false).
    Flag(String, bool),
    Recent(bool),
    New,
    SequenceSet(SequenceSet),
    Uid(SequenceSet),
    Before(NaiveDate),
    On(NaiveDate),
    Since(NaiveDate),
    SentBefore(NaiveDate),
    SentOn(NaiveDate),
    SentSince(NaiveDate),
    Header(String, String),
    Body(String),
    Text(String),
    Larger(u32),
    Smaller(u32),
    Not(Box<Criterion>),
    Or(Box<Criterion>, Box<Criterion>),
    And(Vec<Criterion>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("missing argument for {0}")]
    MissingArgument(String),
    #[error("invalid date {0:?}; expected e.g. 1-Feb-2026")]
    InvalidDate(String),
    #[error("invalid number {0:?}")]
    InvalidNumber(String),
    #[error("unsupported search key {0}")]
    UnknownKey(String),
    #[error("unsupported charset {0}")]
    Charset(String),
    #[error(transparent)]
    SequenceSet(#[from] super::sequence::SequenceSetError),
}

/// Parses the arguments of SEARCH into one criterion that all parts must meet.
pub fn parse_criteria(tokens: &[Token]) -> Result<Criterion, SearchError> {
    let mut tokens = tokens;
    if tokens.first().and_then(Token::atom_upper).as_deref() == Some("CHARSET") {
        let charset =
            tokens.get(1).and_then(Token::text).ok_or_else(|| SearchError::MissingArgument("CHARSET".to_string()))?;
        if !matches!(charset.to_ascii_uppercase().as_str(), "US-ASCII" | "UTF-8") {
            return Err(SearchError::Charset(charset));
        }
        tokens = &tokens[2..];
    }
    let mut iter = tokens.iter();
    let mut all = Vec::new();
    while let Some(token) = iter.next() {
        all.push(parse_one(token, &mut iter)?);
    }
    Ok(if all.len() == 1 { all.remove(0) } else { Criterion::And(all) })
}

fn parse_one<'a>(token: &Token, rest: &mut impl Iterator<Item = &'a Token>) -> Result<Criterion, SearchError> {
    let key = match token {
        Token::List(items) => return parse_criteria(items),
        Token::String(bytes) => {
            return Err(SearchError::UnknownKey(String::from_utf8_lossy(bytes).into_owned()));
        }
        Token::Atom(atom) => atom.to_ascii_uppercase(),
    };
    let mut argument = || -> Result<String, SearchError> {
        rest.next().and_then(Token::text).ok_or_else(|| SearchError::MissingArgument(key.clone()))
    };
    let flag = |name: &str, has: bool| Ok(Criterion::Flag(name.to_string(), has));
    match key.as_str() {
        "ALL" => Ok(Criterion::All),
        "SEEN" => flag("\\Seen", true),
        "UNSEEN" => flag("\\Seen", false),
        "ANSWERED" => flag("\\Answered", true),
        "UNANSWERED" => flag("\\Answered", false),
        "DELETED" => flag("\\Deleted", true),
        "UNDELETED" => flag("\\Deleted", false),
        "FLAGGED" => flag("\\Flagged", true),
        "UNFLAGGED" => flag("\\Flagged", false),
        "DRAFT" => flag("\\Draft", true),
        "UNDRAFT" => flag("\\Draft", false),
        "KEYWORD" => Ok(Criterion::Flag(argument()?, true)),
        "UNKEYWORD" => Ok(Criterion::Flag(argument()?, false)),
        "RECENT" => Ok(Criterion::Recent(true)),
        "OLD" => Ok(Criterion::Recent(false)),
        "NEW" => Ok(Criterion::New),
        "UID" => Ok(Criterion::Uid(SequenceSet::parse(&argument()?)?)),
        "BEFORE" => Ok(Criterion::Before(date(&argument()?)?)),
        "ON" => Ok(Criterion::On(date(&argument()?)?)),
        "SINCE" => Ok(Criterion::Since(date(&argument()?)?)),
        "SENTBEFORE" => Ok(Criterion::SentBefore(date(&argument()?)?)),
        "SENTON" => Ok(Criterion::SentOn(date(&argument()?)?)),
        "SENTSINCE" => Ok(Criterion::SentSince(date(&argument()?)?)),
        "HEADER" => {
            let name = argument()?;
            Ok(Criterion::Header(name, argument()?))
        }
        "FROM" | "TO" | "CC" | "BCC" | "SUBJECT" => {
            let name = key.chars().next().into_iter().chain(key.chars().skip(1).flat_map(char::to_lowercase)).collect();
            Ok(Criterion::Header(name, argument()?))
        }
        "BODY" => Ok(Criterion::Body(argument()?)),
        "TEXT" => Ok(Criterion::Text(argument()?)),
        "LARGER" => Ok(Criterion::Larger(number(&argument()?)?)),
        "SMALLER" => Ok(Criterion::Smaller(number(&argument()?)?)),
        "NOT" => {
            let next = rest.next().ok_or_else(|| SearchError::MissingArgument(key.clone()))?;
            Ok(Criterion::Not(Box::new(parse_one(next, rest)?)))
        }
        "OR" => {
            let first = rest.next().ok_or_else(|| SearchError::MissingArgument(key.clone()))?;
            let first = parse_one(first, rest)?;
            let second = rest.next().ok_or_else(|| SearchError::MissingArgument(key.clone()))?;
            Ok(Criterion::Or(Box::new(first), Box::new(parse_one(second, rest)?)))
        }
        _ if key.starts_with(|c: char| c.is_ascii_digit() || c == '*') => {
            Ok(Criterion::SequenceSet(SequenceSet::parse(&key)?))
        }
        _ => Err(SearchError::UnknownKey(key)),
    }
}

fn date(text: &str) -> Result<NaiveDate, SearchError> {
    NaiveDate::parse_from_str(text, "%d-%b-%Y").map_err(|_| SearchError::InvalidDate(text.to_string()))
}

fn number(text: &str) -> Result<u32, SearchError> {
    text.parse().map_err(|_| SearchError::InvalidNumber(text.to_string()))
}

/// One message as SEARCH sees it.
pub struct Candidate<'a> {
    pub message: &'a StoredMessage,
    pub raw: &'a [u8],
    pub sequence: u32,
    pub max_sequence: u32,
    pub max_uid: u32,
}

impl Criterion {
    pub fn matches(&self, candidate: &Candidate<'_>) -> bool {
        let message = candidate.message;
        let internal_date = message.internal_date.date_naive();
        match self {
            Criterion::All => true,
            Criterion::Flag(flag, has) => message.has_flag(flag) == *has,
            Criterion::Recent(recent) => message.recent == *recent,
            Criterion::New => message.recent && !message.has_flag("\\Seen"),
            Criterion::SequenceSet(set) => set.contains(candidate.sequence, candidate.max_sequence),
            Criterion::Uid(set) => set.contains(message.uid, candidate.max_uid),
            Criterion::Before(date) => internal_date < *date,
            Criterion::On(date) => internal_date == *date,
            Criterion::Since(date) => internal_date >= *date,
            Criterion::SentBefore(date) => sent_date(candidate.raw).is_some_and(|sent| sent < *date),
            Criterion::SentOn(date) => sent_date(candidate.raw) == Some(*date),
            Criterion::SentSince(date) => sent_date(candidate.raw).is_some_and(|sent| sent >= *date),
            Criterion::Header(name, value) => message::header_values(candidate.raw, name)
                .iter()
                .any(|field| contains_ignore_case(field.as_bytes(), value)),
            Criterion::Body(text) => contains_ignore_case(message::split(candidate.raw).1, text),
            Criterion::Text(text) => contains_ignore_case(candidate.raw, text),
            Criterion::Larger(size) => message.size > *size,
            Criterion::Smaller(size) => message.size < *size,
            Criterion::Not(inner) => !inner.matches(candidate),
            Criterion::Or(first, second) => first.matches(candidate) || second.matches(candidate),
            Criterion::And(all) => all.iter().all(|criterion| criterion.matches(candidate)),
        }
    }
}

fn sent_date(raw: &[u8]) -> Option<NaiveDate> {
    let value = message::header_value(raw, "Date")?;
    let parsed = chrono::DateTime::parse_from_rfc2822(&value).ok()?;
    Some(parsed.date_naive())
}

fn contains_ignore_case(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.to_lowercase();
    if needle.is_empty() {
        return true;
    }
    String::from_utf8_lossy(haystack).to_lowercase().contains(&needle)
}

#[cfg(test)]
mod tests {
    use super::super::parse::tokenize;
    use super::*;

    fn criteria(text: &str) -> Criterion {
        parse_criteria(&tokenize(text.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn header_search_parses_name_and_value() {
        assert_eq!(
            criteria("HEADER Message-ID \"<a@example.org>\""),
            Criterion::Header("Message-ID".to_string(), "<a@example.org>".to_string())
        );
    }

    #[test]
    fn or_and_not_nest() {
        assert_eq!(
            criteria("OR SEEN NOT DELETED"),
            Criterion::Or(
                Box::new(Criterion::Flag("\\Seen".to_string(), true)),
                Box::new(Criterion::Not(Box::new(Criterion::Flag("\\Deleted".to_string(), true))))
            )
        );
    }

    #[test]
    fn since_parses_imap_date() {
        assert_eq!(criteria("SINCE 1-Feb-2026"), Criterion::Since(NaiveDate::from_ymd_opt(2026, 2, 1).unwrap()));
    }

    #[test]
    fn unknown_key_rejected() {
        let tokens = tokenize(b"FROBNICATE").unwrap();
        assert!(parse_criteria(&tokens).is_err());
    }
}
