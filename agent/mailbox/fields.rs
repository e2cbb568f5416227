//! Header-like text that mail-parser hands over unparsed: the field blocks of a
//! `message/delivery-status` part (RFC 3464 §2.1) and the headers in a `text/rfc822-headers`
//! part, plus Message-ID extraction from any header value.

/// One `Name: value` field, with continuation lines unfolded into the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field {
    pub name: String,
    pub value: String,
}

/// A run of fields up to a blank line.
pub(super) type Block = Vec<Field>;

/// Splits header-like text into blocks of fields separated by blank lines.
///
/// A line that starts with a space or tab continues the previous field's value. A line that is
/// neither a continuation nor `Name: value` with a name free of spaces is skipped.
pub(super) fn parse_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut block: Block = Vec::new();

    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if !block.is_empty() {
                blocks.push(std::mem::take(&mut block));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some(field) = block.last_mut() {
                field.value.push(' ');
                field.value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(char::is_whitespace) {
                block.push(Field { name: name.to_string(), value: value.trim().to_string() });
            }
        }
    }
    if !block.is_empty() {
        blocks.push(block);
    }
    blocks
}

/// Returns the value of the first field called `name`, ignoring case.
pub(super) fn field<'a>(block: &'a [Field], name: &str) -> Option<&'a str> {
    block.iter().find(|field| field.name.eq_ignore_ascii_case(name)).map(|field| field.value.as_str())
}

/// Strips the type in front of a typed value: `rfc822; a@example.org` becomes
/// `a@example.org` and `smtp; 550 5.1.1 …` becomes `550 5.1.1 …` (RFC 3464 §2.3.2 and §2.3.6).
/// A value without a type is returned trimmed.
pub(super) fn strip_value_type(value: &str) -> &str {
    match value.split_once(';') {
        Some((kind, rest)) if is_type_name(kind.trim()) => rest.trim(),
        _ => value.trim(),
    }
}

fn is_type_name(kind: &str) -> bool {
    !kind.is_empty()
        && kind.chars().all(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.'))
}

/// Extracts the Message-IDs from a header value, without angle brackets.
///
/// Takes every `<…>` in the value. A value without brackets (mail-parser strips them from the
/// headers it parses itself) is split on whitespace and commas instead.
pub(super) fn message_ids(value: &str) -> Vec<String> {
    let mut ids = Vec::new();
    if value.contains('<') {
        let mut rest = value;
        while let Some(open) = rest.find('<') {
            let after_open = &rest[open + 1..];
            let Some(close) = after_open.find('>') else {
                break;
            };
            push_id(&mut ids, &after_open[..close]);
            rest = &after_open[close + 1..];
        }
    } else {
        for token in value.split(|character: char| character.is_whitespace() || character == ',') {
            push_id(&mut ids, token);
        }
    }
    ids
}

fn push_id(ids: &mut Vec<String>, candidate: &str) {
    let id = candidate.trim();
    if !id.is_empty() && !id.contains(char::is_whitespace) {
        ids.push(id.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(name: &str, value: &str) -> Field {
        Field { name: name.to_string(), value: value.to_string() }
    }

    #[test]
    fn blocks_split_on_blank_lines() {
        let text = "Reporting-MTA: dns; mail.example.org\r\n\r\n\r\nAction: failed\r\nStatus: 5.1.1\r\n";
        let blocks = parse_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0], vec![field_of("Reporting-MTA", "dns; mail.example.org")]);
        assert_eq!(blocks[1], vec![field_of("Action", "failed"), field_of("Status", "5.1.1")]);
    }

    #[test]
    fn folded_lines_are_unfolded() {
        let text = "Diagnostic-Code: smtp; 550 5.1.1 <07700900404@sms.nhs.net>:\n    Recipient address\n\trejected\n";
        let blocks = parse_blocks(text);
        assert_eq!(
            field(&blocks[0], "diagnostic-code"),
            Some("smtp; 550 5.1.1 <07700900404@sms.nhs.net>: Recipient address rejected")
        );
    }

    #[test]
    fn lines_without_field_names_are_skipped() {
        let blocks = parse_blocks("  leading continuation\nnot a field\nbad name: x\nAction: delayed\n");
        assert_eq!(blocks, vec![vec![field_of("Action", "delayed")]]);
    }

    #[test]
    fn value_types_are_stripped() {
        let cases = [
            ("rfc822; 07700900123@sms.nhs.net", "07700900123@sms.nhs.net"),
            ("rfc822;07700900123@sms.nhs.net", "07700900123@sms.nhs.net"),
            ("utf-8; 07700900123@sms.nhs.net", "07700900123@sms.nhs.net"),
            ("smtp; 550 5.1.1 user unknown", "550 5.1.1 user unknown"),
            ("X-Postfix; host not found", "host not found"),
            ("550 5.1.1 user unknown; try later", "550 5.1.1 user unknown; try later"),
            ("  plain value ", "plain value"),
        ];
        for (value, expected) in cases {
            assert_eq!(strip_value_type(value), expected, "value {value:?}");
        }
    }

    #[test]
    fn message_ids_drop_brackets() {
        let cases: [(&str, &[&str]); 6] = [
            ("<a@example.org>", &["a@example.org"]),
            (" <a@example.org> <b@example.org>", &["a@example.org", "b@example.org"]),
            ("a@example.org", &["a@example.org"]),
            ("a@example.org b@example.org", &["a@example.org", "b@example.org"]),
            ("<a@example.org> <unclosed", &["a@example.org"]),
            ("<> < >", &[]),
        ];
        for (value, expected) in cases {
            assert_eq!(message_ids(value), expected, "value {value:?}");
        }
    }
}
