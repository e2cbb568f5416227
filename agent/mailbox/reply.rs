//! The text of a patient's reply: the decoded body (or, when the body is empty, the Subject),
//! that text without the quoted history and signature that mail clients and gateways append,
//! and the `STOP` or `START` keyword it may be.

use mail_parser::{Message, PartType};

use super::ReplyKeyword;
use super::html::html_to_text;

/// The part of an email that a reply's text was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TextSource {
    Body,
    Subject,
}

/// Returns the reply's text as received, with line endings as `\n`, and where it was found.
///
/// The first text body counts, and an HTML body is converted to text when there is no plain
/// text or the plain text is blank. A reply whose body is blank is read from its Subject, taken
/// whole, because without the Subject that was sent a `Re:` prefix cannot be distinguished from
/// the patient's words.
pub(super) fn reply_text(message: &Message<'_>, subject: Option<&str>) -> (String, TextSource) {
    let body = body_text(message);
    if !body.trim().is_empty() {
        return (body, TextSource::Body);
    }
    match subject.filter(|subject| !subject.trim().is_empty()) {
        Some(subject) => (subject.to_string(), TextSource::Subject),
        None => (body, TextSource::Body),
    }
}

/// Returns the first text body of the message with line endings as `\n`: the plain text, or the
/// HTML converted to text when the plain text is missing or blank. A message without a text
/// body returns "".
pub(super) fn body_text(message: &Message<'_>) -> String {
    let plain = message.text_body.first().and_then(|&id| message.parts.get(id as usize)).map(part_body_text);
    let body = match plain {
        Some(text) if !text.trim().is_empty() => text,
        _ => message
            .html_body
            .first()
            .and_then(|&id| message.parts.get(id as usize))
            .map(part_body_text)
            .unwrap_or_default(),
    };
    body.replace("\r\n", "\n").replace('\r', "\n")
}

fn part_body_text(part: &mail_parser::MessagePart<'_>) -> String {
    match &part.body {
        PartType::Text(text) => text.to_string(),
        PartType::Html(html) => html_to_text(html),
        _ => String::new(),
    }
}

/// Returns the keyword a reply's trimmed text is: `STOP` or `START` in any case, with white
/// space and punctuation around it ("Stop.", " stop ", "STOP!"). Anything else, such as
/// "stop it please", is no keyword.
pub(super) fn reply_keyword(text: &str) -> Option<ReplyKeyword> {
    let word = text.trim_matches(|character: char| {
        character.is_whitespace() || is_punctuation(character) || is_invisible(character)
    });
    if word.eq_ignore_ascii_case("stop") {
        Some(ReplyKeyword::Stop)
    } else if word.eq_ignore_ascii_case("start") {
        Some(ReplyKeyword::Start)
    } else {
        None
    }
}

/// ASCII punctuation and the punctuation that phone keyboards substitute for it.
fn is_punctuation(character: char) -> bool {
    character.is_ascii_punctuation()
        || matches!(character, '‘' | '’' | '“' | '”' | '…' | '–' | '—' | '¡' | '¿' | '«' | '»' | '·')
}

/// Zero-width characters that some phones and gateways add and that `char::is_whitespace`
/// does not cover.
fn is_invisible(character: char) -> bool {
    matches!(character, '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{feff}')
}

/// Removes what follows the patient's own words, then trims: everything from a signature
/// delimiter (`-- `), a "Sent from my iPhone" line, an "-----Original Message-----" line, an
/// "On … wrote:" line, or an Outlook "From: … Sent: …" block, and every line quoted with `>`.
pub(super) fn strip_quotes_and_signature(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let end = (0..lines.len()).find(|&index| starts_history(&lines[index..])).unwrap_or(lines.len());

    let own_lines: Vec<&str> =
        lines[..end].iter().copied().filter(|line| !line.trim_start().starts_with('>')).collect();
    own_lines.join("\n").trim().to_string()
}

/// Returns whether the first of `lines` starts a signature or quoted history.
fn starts_history(lines: &[&str]) -> bool {
    let Some(first) = lines.first() else {
        return false;
    };
    let line = first.trim();
    let next = lines.get(1).map(|line| line.trim()).unwrap_or("");

    is_signature_delimiter(first)
        || is_client_signature(line)
        || is_original_message_marker(line)
        || is_attribution(line, next)
        || is_outlook_header(lines)
        || (is_underscore_rule(line) && next.starts_with("From:"))
}

/// Returns whether the line is the signature delimiter `-- ` (RFC 3676 §4.3), also without the
/// trailing space that some clients strip.
fn is_signature_delimiter(line: &str) -> bool {
    line.trim_end() == "--"
}

/// Returns whether the line is the signature a mail app adds by default, such as "Sent from my
/// iPhone" or "Get Outlook for Android". A line over 60 characters is the patient's words.
fn is_client_signature(line: &str) -> bool {
    const PREFIXES: [&str; 5] =
        ["sent from my ", "sent from outlook", "sent from mail for", "sent from yahoo", "get outlook for "];
    if line.chars().count() > 60 {
        return false;
    }
    let lowered = line.to_lowercase();
    PREFIXES.iter().any(|prefix| lowered.starts_with(prefix))
}

/// Returns whether the line is `-----Original Message-----` or a spelling such as
/// `----- Original message -----`.
fn is_original_message_marker(line: &str) -> bool {
    let letters: String = line.chars().filter(|character| !matches!(character, '-' | ' ')).collect();
    line.starts_with("--") && letters.eq_ignore_ascii_case("OriginalMessage")
}

/// Returns whether the line starts an attribution such as
/// `On Mon, 1 Dec 2026 at 10:00, Surgery <practice@example.org> wrote:`, which some clients wrap
/// onto a second line.
fn is_attribution(line: &str, next: &str) -> bool {
    line.starts_with("On ") && (line.ends_with("wrote:") || next.ends_with("wrote:"))
}

/// Returns whether the lines start with `From:` followed within four lines by `Sent:`, as Outlook
/// quotes a message.
fn is_outlook_header(lines: &[&str]) -> bool {
    let starts_with_from = lines.first().is_some_and(|line| line.trim().starts_with("From:"));
    starts_with_from && lines.iter().skip(1).take(4).any(|line| line.trim().starts_with("Sent:"))
}

/// Returns whether the line is the rule of underscores that Outlook puts above a quoted message.
fn is_underscore_rule(line: &str) -> bool {
    line.len() >= 10 && line.chars().all(|character| character == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_tolerate_case_and_punctuation() {
        let cases = [
            ("STOP", Some(ReplyKeyword::Stop)),
            ("Stop.", Some(ReplyKeyword::Stop)),
            (" stop ", Some(ReplyKeyword::Stop)),
            ("STOP!", Some(ReplyKeyword::Stop)),
            ("\"stop\"", Some(ReplyKeyword::Stop)),
            ("\u{feff}Stop\u{200b}\n", Some(ReplyKeyword::Stop)),
            ("‘STOP’…", Some(ReplyKeyword::Stop)),
            ("Start", Some(ReplyKeyword::Start)),
            ("START.", Some(ReplyKeyword::Start)),
            ("  start!! ", Some(ReplyKeyword::Start)),
            ("stop it please", None),
            ("STOP STOP", None),
            ("S.T.O.P", None),
            ("stopp", None),
            ("Restart", None),
            ("", None),
            ("...", None),
        ];
        for (text, expected) in cases {
            assert_eq!(reply_keyword(text), expected, "text {text:?}");
        }
    }

    #[test]
    fn history_and_signature_are_removed() {
        let cases = [
            ("plain", "Yes please\n", "Yes please"),
            ("whitespace", "\n\n  Yes please  \n\n", "Yes please"),
            ("signature", "Yes please\n-- \nSent from my phone\n", "Yes please"),
            ("signature without space", "Yes please\n--\nJo\n", "Yes please"),
            ("quoted lines", "Yes please\n> Reply YES to confirm\n>> older\n", "Yes please"),
            ("inline quote", "> Can you come at 10?\nYes\n> Or 11?\nNo\n", "Yes\nNo"),
            (
                "attribution",
                "Yes please\n\nOn Tue, 1 Dec 2026 at 09:00, Surgery <practice@example.org> wrote:\n> Reply YES\n",
                "Yes please",
            ),
            (
                "wrapped attribution",
                "Yes\nOn Tue, 1 Dec 2026 at 09:00, Surgery\n<practice@example.org> wrote:\nReply YES\n",
                "Yes",
            ),
            ("original message", "Yes\n\n-----Original Message-----\nFrom: practice@example.org\nReply YES\n", "Yes"),
            ("spaced original message", "Yes\n----- Original message -----\nReply YES\n", "Yes"),
            (
                "outlook header",
                "Yes\n\nFrom: Surgery <practice@example.org>\nSent: 01 December 2026 09:00\nTo: 07700900123@sms.nhs.net\nSubject: Appointment\n\nReply YES\n",
                "Yes",
            ),
            (
                "outlook rule",
                "Yes\n________________________________\nFrom: Surgery <practice@example.org>\nSent: 01 December 2026 09:00\n",
                "Yes",
            ),
            ("from without sent is kept", "From: tomorrow I am away\nThanks", "From: tomorrow I am away\nThanks"),
            ("on without wrote is kept", "On Monday I can come", "On Monday I can come"),
            ("dashes in text are kept", "Yes -- see you then", "Yes -- see you then"),
            ("only history", "> Reply YES\n", ""),
            ("iphone signature", "STOP\n\nSent from my iPhone\n", "STOP"),
            ("outlook mobile signature", "Yes\nGet Outlook for Android\n", "Yes"),
            (
                "sent from in a sentence is kept",
                "Sent from my work phone because mine broke, can you call me on it tomorrow morning",
                "Sent from my work phone because mine broke, can you call me on it tomorrow morning",
            ),
            ("crlf", "Yes please\r\n\r\n> Reply YES\r\n", "Yes please"),
        ];
        for (name, text, expected) in cases {
            assert_eq!(strip_quotes_and_signature(text), expected, "case {name}");
        }
    }
}
