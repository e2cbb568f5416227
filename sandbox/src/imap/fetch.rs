//! FETCH data items (RFC 3501 section 6.4.5): parsing the requested items and rendering one
//! message's `* n FETCH (...)` response, with message text sent as literals.

use super::message;
use super::parse::{Token, literal};
use crate::mailbox::StoredMessage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    Full,
    Header,
    Text,
    /// HEADER.FIELDS, or HEADER.FIELDS.NOT when the flag is true.
    HeaderFields(Vec<String>, bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItem {
    Uid,
    Flags,
    InternalDate,
    Rfc822Size,
    Envelope,
    Body {
        section: Section,
        peek: bool,
        /// Octet offset and maximum count.
        partial: Option<(usize, usize)>,
        /// The item's name in the response, e.g. `BODY[HEADER]<0>` or `RFC822`.
        label: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("unsupported fetch item {0}")]
    Unsupported(String),
    #[error("invalid fetch item {0}")]
    Invalid(String),
}

/// Parses the item list of FETCH: one item, a macro, or a parenthesised list.
pub fn parse_items(token: &Token) -> Result<Vec<FetchItem>, FetchError> {
    let tokens: Vec<&Token> = match token {
        Token::List(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut items = Vec::new();
    for token in tokens {
        let Token::Atom(atom) = token else {
            return Err(FetchError::Invalid(format!("{token:?}")));
        };
        let upper = atom.to_ascii_uppercase();
        match upper.as_str() {
            "ALL" => {
                items.extend([FetchItem::Flags, FetchItem::InternalDate, FetchItem::Rfc822Size, FetchItem::Envelope])
            }
            "FAST" => items.extend([FetchItem::Flags, FetchItem::InternalDate, FetchItem::Rfc822Size]),
            "UID" => items.push(FetchItem::Uid),
            "FLAGS" => items.push(FetchItem::Flags),
            "INTERNALDATE" => items.push(FetchItem::InternalDate),
            "RFC822.SIZE" => items.push(FetchItem::Rfc822Size),
            "ENVELOPE" => items.push(FetchItem::Envelope),
            "RFC822" => items.push(body(Section::Full, false, None, "RFC822")),
            "RFC822.HEADER" => items.push(body(Section::Header, true, None, "RFC822.HEADER")),
            "RFC822.TEXT" => items.push(body(Section::Text, false, None, "RFC822.TEXT")),
            _ if upper.starts_with("BODY[") || upper.starts_with("BODY.PEEK[") => {
                items.push(parse_body(atom)?);
            }
            _ => return Err(FetchError::Unsupported(atom.clone())),
        }
    }
    Ok(items)
}

fn body(section: Section, peek: bool, partial: Option<(usize, usize)>, label: &str) -> FetchItem {
    FetchItem::Body { section, peek, partial, label: label.to_string() }
}

fn parse_body(atom: &str) -> Result<FetchItem, FetchError> {
    let invalid = || FetchError::Invalid(atom.to_string());
    let peek = atom.to_ascii_uppercase().starts_with("BODY.PEEK[");
    let open = atom.find('[').ok_or_else(invalid)?;
    let close = atom.rfind(']').ok_or_else(invalid)?;
    let spec = &atom[open + 1..close];
    let rest = &atom[close + 1..];

    let upper = spec.to_ascii_uppercase();
    let (section, section_label) = match upper.as_str() {
        "" => (Section::Full, String::new()),
        "HEADER" => (Section::Header, upper.clone()),
        "TEXT" => (Section::Text, upper.clone()),
        _ if upper.starts_with("HEADER.FIELDS") => {
            let exclude = upper.starts_with("HEADER.FIELDS.NOT");
            let list_open = spec.find('(').ok_or_else(invalid)?;
            let list_close = spec.rfind(')').ok_or_else(invalid)?;
            let names: Vec<String> = spec[list_open + 1..list_close]
                .split_whitespace()
                .map(|name| name.trim_matches('"').to_ascii_uppercase())
                .collect();
            if names.is_empty() {
                return Err(invalid());
            }
            let keyword = if exclude { "HEADER.FIELDS.NOT" } else { "HEADER.FIELDS" };
            let label = format!("{keyword} ({})", names.join(" "));
            (Section::HeaderFields(names, exclude), label)
        }
        // NOTE: MIME part numbers (BODY[1], BODY[1.MIME]) are not supported by the sandbox.
        _ => return Err(FetchError::Unsupported(atom.to_string())),
    };

    let partial = if rest.is_empty() {
        None
    } else {
        let inner = rest.strip_prefix('<').and_then(|r| r.strip_suffix('>')).ok_or_else(invalid)?;
        let (origin, count) = inner.split_once('.').ok_or_else(invalid)?;
        Some((origin.parse().map_err(|_| invalid())?, count.parse().map_err(|_| invalid())?))
    };
    let mut label = format!("BODY[{section_label}]");
    if let Some((origin, _)) = partial {
        label.push_str(&format!("<{origin}>"));
    }
    Ok(FetchItem::Body { section, peek, partial, label })
}

/// Returns whether fetching `items` sets `\Seen` (a non-peek body item).
pub fn sets_seen(items: &[FetchItem]) -> bool {
    items.iter().any(|item| matches!(item, FetchItem::Body { peek: false, .. }))
}

pub fn format_flags(message: &StoredMessage) -> String {
    let mut flags: Vec<&str> = message.flags.iter().map(String::as_str).collect();
    if message.recent {
        flags.push("\\Recent");
    }
    format!("({})", flags.join(" "))
}

/// Renders `* sequence FETCH (...)` for one message. `with_uid` adds UID (as UID FETCH
/// must) and `with_flags` adds FLAGS (after a fetch set `\Seen`) when not requested.
pub fn render(
    items: &[FetchItem],
    message: &StoredMessage,
    raw: &[u8],
    sequence: u32,
    with_uid: bool,
    with_flags: bool,
) -> Vec<u8> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    if with_uid && !items.contains(&FetchItem::Uid) {
        parts.push(format!("UID {}", message.uid).into_bytes());
    }
    for item in items {
        let part = match item {
            FetchItem::Uid => format!("UID {}", message.uid).into_bytes(),
            FetchItem::Flags => format!("FLAGS {}", format_flags(message)).into_bytes(),
            FetchItem::InternalDate => {
                format!("INTERNALDATE \"{}\"", message.internal_date.format("%d-%b-%Y %H:%M:%S %z")).into_bytes()
            }
            FetchItem::Rfc822Size => format!("RFC822.SIZE {}", message.size).into_bytes(),
            FetchItem::Envelope => {
                let mut part = b"ENVELOPE ".to_vec();
                part.extend(message::envelope(raw));
                part
            }
            FetchItem::Body { section, partial, label, .. } => {
                let content = section_bytes(section, raw);
                let content = match partial {
                    Some((origin, count)) => {
                        let start = (*origin).min(content.len());
                        let end = start.saturating_add(*count).min(content.len());
                        content[start..end].to_vec()
                    }
                    None => content,
                };
                let mut part = format!("{label} ").into_bytes();
                part.extend(literal(&content));
                part
            }
        };
        parts.push(part);
    }
    if with_flags && !items.contains(&FetchItem::Flags) {
        parts.push(format!("FLAGS {}", format_flags(message)).into_bytes());
    }

    let mut out = format!("* {sequence} FETCH (").into_bytes();
    out.extend(parts.join(&b' '));
    out.extend_from_slice(b")\r\n");
    out
}

fn section_bytes(section: &Section, raw: &[u8]) -> Vec<u8> {
    match section {
        Section::Full => raw.to_vec(),
        Section::Header => message::split(raw).0.to_vec(),
        Section::Text => message::split(raw).1.to_vec(),
        Section::HeaderFields(names, exclude) => message::header_fields(raw, names, *exclude),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::tokenize;
    use super::*;

    fn items(text: &str) -> Vec<FetchItem> {
        let tokens = tokenize(text.as_bytes()).unwrap();
        parse_items(&tokens[0]).unwrap()
    }

    #[test]
    fn peek_does_not_set_seen() {
        assert!(!sets_seen(&items("(UID BODY.PEEK[])")));
    }

    #[test]
    fn body_sets_seen() {
        assert!(sets_seen(&items("BODY[]")));
    }

    #[test]
    fn partial_label_keeps_origin() {
        let parsed = items("BODY.PEEK[HEADER.FIELDS (from to)]<5.10>");
        let FetchItem::Body { label, partial, .. } = &parsed[0] else {
            panic!("expected a body item");
        };
        assert_eq!(label, "BODY[HEADER.FIELDS (FROM TO)]<5>");
        assert_eq!(*partial, Some((5, 10)));
    }

    #[test]
    fn part_numbers_unsupported() {
        let tokens = tokenize(b"BODY[1]").unwrap();
        assert!(matches!(parse_items(&tokens[0]), Err(FetchError::Unsupported(_))));
    }
}
