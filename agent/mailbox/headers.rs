//! Lookups of header fields on mail-parser parts, without the indexing helpers of
//! `mail_parser::Message` that assume a root part exists.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use mail_parser::{HeaderName, HeaderValue, Message, MessagePart, MimeHeaders, PartType};

use super::fields::message_ids;

/// Returns the value of the last header called `name` (ignoring case) as text.
pub(super) fn header_text<'a>(part: &'a MessagePart<'_>, name: &str) -> Option<&'a str> {
    part.headers
        .iter()
        .rev()
        .find(|header| header.name.as_str().eq_ignore_ascii_case(name))
        .and_then(|header| header.value.as_text())
}

/// Returns whether the part has a header called `name`, ignoring case.
pub(super) fn has_header(part: &MessagePart<'_>, name: &str) -> bool {
    part.headers.iter().any(|header| header.name.as_str().eq_ignore_ascii_case(name))
}

/// Returns the Message-IDs in every header called `name`, in order, without angle brackets.
pub(super) fn header_message_ids(part: &MessagePart<'_>, name: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for header in &part.headers {
        if !header.name.as_str().eq_ignore_ascii_case(name) {
            continue;
        }
        match &header.value {
            HeaderValue::Text(value) => ids.extend(message_ids(value)),
            HeaderValue::TextList(values) => {
                for value in values {
                    ids.extend(message_ids(value));
                }
            }
            _ => {}
        }
    }
    ids
}

/// Returns whether the part has at least one header field that RFC 5322 or MIME defines. This
/// distinguishes an email from arbitrary bytes that happen to contain a colon.
pub(super) fn has_standard_header(part: &MessagePart<'_>) -> bool {
    part.headers.iter().any(|header| !matches!(header.name, HeaderName::Other(_)))
}

/// Returns the first From address, or the display name if the header has no address.
pub(super) fn from_address(part: &MessagePart<'_>) -> Option<String> {
    let header = part.headers.iter().rev().find(|header| header.name == HeaderName::From)?;
    let addr = header.value.as_address()?.first()?;
    addr.address().or_else(|| addr.name()).map(|text| text.trim().to_string()).filter(|text| !text.is_empty())
}

/// Returns the Date header in UTC, if present and valid.
pub(super) fn date(part: &MessagePart<'_>) -> Option<DateTime<Utc>> {
    let header = part.headers.iter().rev().find(|header| header.name == HeaderName::Date)?;
    let date = header.value.as_datetime()?;
    if !date.is_valid() {
        return None;
    }
    DateTime::from_timestamp(date.to_timestamp(), 0)
}

/// Returns whether the part's Content-Type is `ctype/subtype`, ignoring case.
pub(super) fn is_content_type(part: &MessagePart<'_>, ctype: &str, subtype: &str) -> bool {
    part.content_type().is_some_and(|content_type| {
        content_type.ctype().eq_ignore_ascii_case(ctype)
            && content_type.subtype().is_some_and(|actual| actual.eq_ignore_ascii_case(subtype))
    })
}

/// Returns the decoded body of a leaf part as text. A part that mail-parser parsed as an
/// attached message is returned as its raw bytes from `message`, which contains the part.
pub(super) fn part_text<'a>(message: &'a Message<'_>, part: &'a MessagePart<'_>) -> Cow<'a, str> {
    match &part.body {
        PartType::Text(text) | PartType::Html(text) => Cow::Borrowed(text.as_ref()),
        PartType::Binary(bytes) | PartType::InlineBinary(bytes) => String::from_utf8_lossy(bytes),
        PartType::Message(_) => {
            let range = part.offset_body as usize..part.offset_end as usize;
            String::from_utf8_lossy(message.raw_message.get(range).unwrap_or_default())
        }
        PartType::Multipart(_) => Cow::Borrowed(""),
    }
}
