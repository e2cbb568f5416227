//! Reading a stored message the way IMAP needs it: the header block and body text, single
//! header fields unfolded, and the ENVELOPE structure (RFC 3501 section 7.4.2).

use super::parse::{nstring, string};

/// Splits `raw` into its header block (with the blank line) and its body.
pub fn split(raw: &[u8]) -> (&[u8], &[u8]) {
    let end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|position| position + 4)
        .or_else(|| raw.windows(2).position(|window| window == b"\n\n").map(|position| position + 2))
        .unwrap_or(raw.len());
    raw.split_at(end)
}

/// Returns each header field as (name, raw field lines including the final CRLF).
pub fn fields(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let (header, _) = split(raw);
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    for line in header.split_inclusive(|b| *b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if let Some((_, field)) = fields.last_mut() {
                field.extend_from_slice(line);
            }
            continue;
        }
        let name = line
            .iter()
            .position(|b| *b == b':')
            .map(|colon| String::from_utf8_lossy(&line[..colon]).trim().to_string())
            .unwrap_or_default();
        fields.push((name, line.to_vec()));
    }
    fields
}

/// Returns the unfolded value of the first field called `name`.
pub fn header_value(raw: &[u8], name: &str) -> Option<String> {
    fields(raw).into_iter().find(|(field, _)| field.eq_ignore_ascii_case(name)).map(|(_, line)| unfold_value(&line))
}

/// Returns the values of every field called `name`, unfolded.
pub fn header_values(raw: &[u8], name: &str) -> Vec<String> {
    fields(raw)
        .into_iter()
        .filter(|(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, line)| unfold_value(&line))
        .collect()
}

fn unfold_value(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let value = text.split_once(':').map_or("", |(_, value)| value);
    value.split(['\r', '\n']).map(str::trim).filter(|part| !part.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Returns the header fields named in `names` (or all others, when `exclude`), followed
/// by the blank line, as BODY[HEADER.FIELDS (...)] returns them.
pub fn header_fields(raw: &[u8], names: &[String], exclude: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, line) in fields(raw) {
        let listed = names.iter().any(|wanted| wanted.eq_ignore_ascii_case(&name));
        if listed != exclude {
            out.extend_from_slice(&line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Builds the ENVELOPE of `raw`. Fields are raw header text: encoded words stay encoded.
pub fn envelope(raw: &[u8]) -> Vec<u8> {
    let parsed = mail_parser::MessageParser::default().parse_headers(raw);
    let addresses = |field: &str| -> Vec<u8> {
        let Some(message) = parsed.as_ref() else {
            return b"NIL".to_vec();
        };
        let address = match field {
            "From" => message.from(),
            "Sender" => message.sender(),
            "Reply-To" => message.reply_to(),
            "To" => message.to(),
            "Cc" => message.cc(),
            _ => message.bcc(),
        };
        let Some(address) = address else {
            return b"NIL".to_vec();
        };
        let mut out = b"(".to_vec();
        for addr in address.iter() {
            let email = addr.address().unwrap_or_default();
            let (mailbox, host) = email.split_once('@').unwrap_or((email, ""));
            out.push(b'(');
            out.extend(nstring(addr.name().map(str::as_bytes)));
            out.extend_from_slice(b" NIL ");
            out.extend(string(mailbox.as_bytes()));
            out.push(b' ');
            out.extend(if host.is_empty() { b"NIL".to_vec() } else { string(host.as_bytes()) });
            out.push(b')');
        }
        out.push(b')');
        if out == b"()" { b"NIL".to_vec() } else { out }
    };
    let from = addresses("From");
    // RFC 3501: Sender and Reply-To default to From when absent.
    let or_from = |list: Vec<u8>| if list == b"NIL" { from.clone() } else { list };

    let mut out = b"(".to_vec();
    let value = |name: &str| header_value(raw, name);
    out.extend(nstring(value("Date").as_deref().map(str::as_bytes)));
    out.push(b' ');
    out.extend(nstring(value("Subject").as_deref().map(str::as_bytes)));
    for list in [
        from.clone(),
        or_from(addresses("Sender")),
        or_from(addresses("Reply-To")),
        addresses("To"),
        addresses("Cc"),
        addresses("Bcc"),
    ] {
        out.push(b' ');
        out.extend(list);
    }
    out.push(b' ');
    out.extend(nstring(value("In-Reply-To").as_deref().map(str::as_bytes)));
    out.push(b' ');
    out.extend(nstring(value("Message-ID").as_deref().map(str::as_bytes)));
    out.push(b')');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &[u8] = b"From: A <a@example.org>\r\nSubject: hello\r\n  world\r\nTo: b@example.org\r\n\r\nbody\r\n";

    #[test]
    fn folded_header_unfolds() {
        assert_eq!(header_value(RAW, "subject").as_deref(), Some("hello world"));
    }

    #[test]
    fn header_fields_select_by_name() {
        let selected = header_fields(RAW, &["TO".to_string()], false);
        assert_eq!(selected, b"To: b@example.org\r\n\r\n".to_vec());
    }

    #[test]
    fn envelope_lists_addresses() {
        let envelope = String::from_utf8(envelope(RAW)).unwrap();
        assert!(envelope.contains("((\"A\" NIL \"a\" \"example.org\"))"), "{envelope}");
    }
}
