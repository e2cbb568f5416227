//! The human-readable side of delivery reports: the status code that Exchange non-delivery
//! reports (NDRs) write in their text, the original Message-ID that some reports repeat in
//! their text, and report fields pasted into an email that is not a report.
//!
//! Exchange writes its diagnostic in one of these forms (checked against public NDR samples of
//! Exchange 2010 to Exchange Online; the examples are invented):
//! - `Reported error: 550 5.1.10 RESOLVER.ADR.RecipientNotFound; …` (Exchange Online),
//! - `Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'`,
//! - `07700900123@sms.nhs.net #550 5.1.10 RESOLVER.ADR.RecipientNotFound; … ##`,
//! - `Status code: 550 5.1.10` (Exchange Online, without the reason).

use mail_parser::{Message, PartType};

use super::fields::message_ids;
use super::html::html_to_text;
use super::report::{parse_action, status_code};

/// Labels of lines whose value is the Message-ID of the message a report is about, lower-cased:
/// Exchange's "Original message headers" section and the sandbox gateway's summary.
const TEXT_MESSAGE_ID_LABELS: [&str; 5] =
    ["message-id", "original-message-id", "original message-id", "original message id", "x-original-message-id"];

/// RFC 3464 field names that, at the start of a line, show report fields copied into text.
const REPORT_FIELD_NAMES: [&str; 9] = [
    "Action",
    "Status",
    "Final-Recipient",
    "Original-Recipient",
    "Original-Message-ID",
    "X-Original-Message-ID",
    "Diagnostic-Code",
    "Reporting-MTA",
    "Remote-MTA",
];

/// What an Exchange NDR's text reports about the failed recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TextDiagnostic {
    /// Enhanced status code, such as `5.1.10`.
    pub status: String,
    /// The diagnostic as written, such as `550 5.1.10 RESOLVER.ADR.RecipientNotFound; …`.
    pub diagnostic: String,
    pub final_recipient: Option<String>,
    /// The text states that delivery is delayed, not failed.
    pub delayed: bool,
}

/// Returns the text of each of the message's own text and HTML body parts (HTML converted),
/// with `\n` line ends. Attached messages are not included.
pub(super) fn readable_texts(message: &Message<'_>) -> Vec<String> {
    let mut ids: Vec<u32> = message.text_body.iter().chain(&message.html_body).copied().collect();
    ids.sort_unstable();
    ids.dedup();

    ids.into_iter()
        .filter_map(|id| message.parts.get(id as usize))
        .filter_map(|part| match &part.body {
            PartType::Text(text) => Some(text.replace("\r\n", "\n")),
            PartType::Html(html) => Some(html_to_text(html)),
            _ => None,
        })
        .collect()
}

/// Finds the status code of an Exchange NDR in its text, preferring the most complete form.
pub(super) fn exchange_diagnostic(texts: &[String], subject: Option<&str>) -> Option<TextDiagnostic> {
    let lines: Vec<&str> = texts.iter().flat_map(|text| text.lines()).collect();

    let mut best: Option<(u8, usize, String, &str)> = None;
    for (index, line) in lines.iter().enumerate() {
        let Some((rank, diagnostic, before)) = diagnostic_in_line(line) else {
            continue;
        };
        if best.as_ref().is_none_or(|(best_rank, ..)| rank < *best_rank) {
            best = Some((rank, index, diagnostic, before));
        }
    }
    let (_, index, diagnostic, before) = best?;
    let status = first_status_code(&diagnostic)?;

    let final_recipient = labelled_value(&lines, "recipient address:")
        .and_then(address_token)
        .or_else(|| address_token(before))
        .or_else(|| address_before(&lines[..index]));
    let delayed = subject.is_some_and(|subject| subject.trim().to_ascii_lowercase().starts_with("delivery delayed"))
        || lines.iter().any(|line| {
            let lowered = line.to_ascii_lowercase();
            lowered.contains("delivery is delayed") || lowered.contains("delivery has been delayed")
        });
    Some(TextDiagnostic { status, diagnostic, final_recipient, delayed })
}

/// Returns a diagnostic in one of Exchange's forms, its rank (0 is the most complete form) and
/// the text in front of it on the line.
fn diagnostic_in_line(line: &str) -> Option<(u8, String, &str)> {
    let lowered = line.to_ascii_lowercase();

    if let Some(start) = lowered.find("reported error:") {
        let value = line[start + "reported error:".len()..].trim();
        return first_status_code(value).map(|_| (0, value.to_string(), &line[..start]));
    }
    if let Some(start) = lowered.find("remote server returned") {
        let value = line[start + "remote server returned".len()..].trim_start_matches([' ', ':', '\'', '"']);
        let value = value.rsplit_once('\'').map_or(value, |(inside, _)| inside).trim();
        return first_status_code(value).map(|_| (1, value.to_string(), &line[..start]));
    }
    if let Some(start) = hash_diagnostic_start(line) {
        let value = &line[start + 1..];
        // The older form closes with `##`, or with `> #SMTP#` after a bracketed diagnostic.
        let value = value.split_once("##").map_or(value, |(inside, _)| inside);
        let value = value.split_once("> #").map_or(value, |(inside, _)| inside).trim();
        return first_status_code(value).map(|_| (2, value.to_string(), &line[..start]));
    }
    if let Some(start) = lowered.find("status code:") {
        let value = line[start + "status code:".len()..].trim();
        return first_status_code(value).map(|_| (3, value.to_string(), &line[..start]));
    }
    None
}

/// Returns the position of a `#` followed by a digit, as in `#550 5.1.1 …##` or `#5.1.1 smtp;…`.
fn hash_diagnostic_start(line: &str) -> Option<usize> {
    line.match_indices('#')
        .map(|(index, _)| index)
        .find(|&index| line.as_bytes().get(index + 1).is_some_and(u8::is_ascii_digit))
}

/// Returns the first enhanced status code (`5.1.1`) among the words of `text`.
fn first_status_code(text: &str) -> Option<String> {
    text.split(|character: char| {
        character.is_whitespace()
            || matches!(character, ';' | ',' | '<' | '>' | '#' | '\'' | '"' | '(' | ')' | '[' | ']')
    })
    .find_map(status_code)
}

/// Returns the value after the first line that starts with `label`, ignoring case.
fn labelled_value<'a>(lines: &[&'a str], label: &str) -> Option<&'a str> {
    lines.iter().find_map(|line| {
        let trimmed = line.trim_start();
        let is_labelled = trimmed.get(..label.len()).is_some_and(|start| start.eq_ignore_ascii_case(label));
        is_labelled.then(|| trimmed[label.len()..].trim())
    })
}

/// Returns the first word of `text` if it is an address, such as
/// `07700900123@sms.nhs.net` or `07700900123@sms.nhs.net<mailto:07700900123@sms.nhs.net>`.
fn address_token(text: &str) -> Option<String> {
    let text = text.split_whitespace().next().unwrap_or("");
    let text = text.split_once("<mailto:").map_or(text, |(address, _)| address);
    let address = text.trim().trim_matches(['<', '>', '(', ')']);
    let valid = !address.is_empty()
        && !address.contains(char::is_whitespace)
        && address.split_once('@').is_some_and(|(local, host)| !local.is_empty() && host.contains('.'));
    valid.then(|| address.to_string())
}

/// Returns the address on one of the three non-blank lines above the diagnostic, where the older
/// Exchange format names the failed recipient.
fn address_before(lines: &[&str]) -> Option<String> {
    lines.iter().rev().filter(|line| !line.trim().is_empty()).take(3).find_map(|line| address_token(line))
}

/// Collects the Message-IDs that the text gives for the original message, in `<…>` form only.
pub(super) fn text_message_ids(texts: &[String]) -> Vec<String> {
    let mut ids = Vec::new();
    for line in texts.iter().flat_map(|text| text.lines()) {
        let Some((label, value)) = line.split_once(':') else {
            continue;
        };
        let label = label.trim().to_ascii_lowercase();
        if TEXT_MESSAGE_ID_LABELS.contains(&label.as_str()) && value.contains('<') {
            ids.extend(message_ids(value));
        }
    }
    ids
}

/// Returns a description of the report content found in the text of an email that is not a
/// report, such as `delivery status fields (Action, Status, Original-Message-ID)`, or `None`.
///
/// Two report fields at the start of lines (one of them a valid `Action` or `Status`), or an
/// Exchange diagnostic, count. Lines quoted with `>` are read without the quote marks.
pub(super) fn pasted_report(texts: &[String]) -> Option<String> {
    let mut found: Vec<&str> = Vec::new();
    let mut has_outcome = false;
    let mut has_exchange_diagnostic = false;

    for line in texts.iter().flat_map(|text| text.lines()) {
        let line = line.trim_start_matches(|character: char| character == '>' || character.is_whitespace());
        if diagnostic_in_line(line).is_some_and(|(rank, ..)| rank <= 2) {
            has_exchange_diagnostic = true;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let Some(&field) = REPORT_FIELD_NAMES.iter().find(|field| field.eq_ignore_ascii_case(name.trim())) else {
            continue;
        };
        let is_outcome = match field {
            "Action" => parse_action(value).is_some(),
            "Status" => status_code(value.trim()).is_some(),
            _ => false,
        };
        if matches!(field, "Action" | "Status") && !is_outcome {
            continue;
        }
        has_outcome |= is_outcome;
        if !found.contains(&field) {
            found.push(field);
        }
    }

    if has_outcome && found.len() >= 2 {
        Some(format!("delivery status fields ({})", found.join(", ")))
    } else if has_exchange_diagnostic {
        Some("an Exchange diagnostic".to_string())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<String> {
        vec![text.to_string()]
    }

    #[test]
    fn exchange_forms_give_status() {
        let cases = [
            (
                "reported error",
                "Status code: 550 5.1.10\nReported error: 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found\n",
                "5.1.10",
                "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found",
            ),
            (
                "remote server returned",
                "Generating server: EX1.example.org\n\n07700900123@sms.nhs.net\nRemote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'\n",
                "5.1.1",
                "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
            ),
            (
                "hash form",
                "07700900123@sms.nhs.net\n#550 5.1.10 RESOLVER.ADR.RecipientNotFound; not found ##\n",
                "5.1.10",
                "550 5.1.10 RESOLVER.ADR.RecipientNotFound; not found",
            ),
            (
                "hash form with smtp",
                "a@example.org #< #5.4.1 smtp;550 5.4.1 Recipient address rejected> #SMTP#\n",
                "5.4.1",
                "5.4.1 smtp;550 5.4.1 Recipient address rejected",
            ),
            ("status code only", "Status code: 550 5.7.1\n", "5.7.1", "550 5.7.1"),
        ];
        for (name, text, status, diagnostic) in cases {
            let found = exchange_diagnostic(&texts(text), None).unwrap_or_else(|| panic!("case {name}: nothing found"));
            assert_eq!(found.status, status, "case {name}");
            assert_eq!(found.diagnostic, diagnostic, "case {name}");
        }
    }

    #[test]
    fn exchange_recipient_is_found() {
        let cases = [
            ("recipient address line", "Recipient Address: 07700900123@sms.nhs.net\nStatus code: 550 5.1.1\n"),
            ("line above", "07700900123@sms.nhs.net\nRemote Server returned '550 5.1.1 not found'\n"),
            ("same line", "07700900123@sms.nhs.net #550 5.1.1 not found ##\n"),
            (
                "mailto link",
                "07700900123@sms.nhs.net<mailto:07700900123@sms.nhs.net>\n\nRemote Server returned '550 5.1.1 x'\n",
            ),
        ];
        for (name, text) in cases {
            let found = exchange_diagnostic(&texts(text), None).unwrap_or_else(|| panic!("case {name}: nothing found"));
            assert_eq!(found.final_recipient.as_deref(), Some("07700900123@sms.nhs.net"), "case {name}");
        }
    }

    #[test]
    fn text_without_status_code_is_no_diagnostic() {
        let cases = [
            "Remote Server returned 'Recipient not found'\n",
            "Status code: unknown\n",
            "Ticket #12 is open\n",
            "Your message couldn't be delivered.\n",
        ];
        for text in cases {
            assert_eq!(exchange_diagnostic(&texts(text), None), None, "text {text:?}");
        }
    }

    #[test]
    fn delay_wording_marks_delayed() {
        let text = texts("Remote Server returned '400 4.4.7 Message delayed'\n");
        assert!(exchange_diagnostic(&text, Some("Delivery delayed: Flu clinic")).unwrap().delayed);
        assert!(!exchange_diagnostic(&text, Some("Undeliverable: Flu clinic")).unwrap().delayed);
        let worded = texts("Delivery is delayed to these recipients or groups:\nStatus code: 400 4.4.7\n");
        assert!(exchange_diagnostic(&worded, None).unwrap().delayed);
    }

    #[test]
    fn text_message_ids_need_brackets() {
        let text = texts(
            "Original Message-ID: <a@example.org>\nOriginal message headers:\nMessage-ID: <b@example.org>\n\
             Message-ID: not given\nIn-Reply-To: <c@example.org>\n",
        );
        assert_eq!(text_message_ids(&text), vec!["a@example.org".to_string(), "b@example.org".to_string()]);
    }

    #[test]
    fn pasted_fields_are_recognised() {
        let cases = [
            ("Action: failed\nStatus: 5.1.1\n", Some("delivery status fields (Action, Status)")),
            (
                "> Action: failed\n> Original-Message-ID: <a@example.org>\n",
                Some("delivery status fields (Action, Original-Message-ID)"),
            ),
            (
                "Status: 5.1.1\nFinal-Recipient: rfc822; 07700900123@sms.nhs.net\n",
                Some("delivery status fields (Status, Final-Recipient)"),
            ),
            ("Remote Server returned '550 5.1.1 not found'\n", Some("an Exchange diagnostic")),
            ("Action: failed\n", None),
            ("Action: please call\nStatus: booked\nFinal-Recipient: me\n", None),
            ("Status code: 550 5.1.1\n", None),
            ("Hello, my status: fine\n", None),
        ];
        for (text, expected) in cases {
            assert_eq!(pasted_report(&texts(text)).as_deref(), expected, "text {text:?}");
        }
    }
}
