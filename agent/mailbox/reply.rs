//! The text of a patient's reply: the decoded body, and that body without the quoted history
//! and signature that mail clients and gateways append.

use mail_parser::decoders::html::html_to_text;
use mail_parser::{Message, PartType};

/// Returns the first text body of the message with line endings as `\n`. An HTML-only body is
/// converted to text with its tags stripped. A message without a text body returns "".
pub(super) fn body_text(message: &Message<'_>) -> String {
    let part_id = message.text_body.first().or_else(|| message.html_body.first());
    let body = part_id
        .and_then(|&id| message.parts.get(id as usize))
        .map(|part| match &part.body {
            PartType::Text(text) => text.to_string(),
            PartType::Html(html) => html_to_text(html),
            _ => String::new(),
        })
        .unwrap_or_default();
    body.replace("\r\n", "\n").replace('\r', "\n")
}

/// Removes what follows the patient's own words, then trims: everything from a signature
/// delimiter (`-- `), an "-----Original Message-----" line, an "On … wrote:" line, or an
/// Outlook "From: … Sent: …" block, and every line quoted with `>`.
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
        ];
        for (name, text, expected) in cases {
            assert_eq!(strip_quotes_and_signature(text), expected, "case {name}");
        }
    }
}
