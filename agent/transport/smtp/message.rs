//! Building the outbound email: one `text/plain; charset=utf-8` part with a Message-ID chosen
//! before sending, so the caller can store it and later match reports and replies to it.

use lettre::Address;
use lettre::message::{Mailbox, Message, SinglePart};

use super::{OutboundEmail, SmtpError};

/// An email ready for the SMTP dialogue.
pub(super) struct BuiltEmail {
    /// The Message-ID without angle brackets.
    pub message_id: String,
    pub from: Address,
    pub to: Address,
    /// The formatted message, CRLF line endings; ASCII only, because lettre encodes non-ASCII
    /// headers (RFC 2047) and bodies (quoted-printable or base64).
    pub bytes: Vec<u8>,
}

/// Builds the email with lettre's builder, which encodes header values, so a subject holding
/// CR or LF cannot start a new header.
pub(super) fn build(email: &OutboundEmail) -> Result<BuiltEmail, SmtpError> {
    let from = parse_address(&email.from)
        .map_err(|reason| SmtpError::InvalidSender { address: email.from.clone(), reason })?;
    let to =
        parse_address(&email.to).map_err(|reason| SmtpError::InvalidRecipient { address: email.to.clone(), reason })?;
    let message_id = format!("{}@{}", uuid::Uuid::now_v7().hyphenated(), from.domain());

    let message = Message::builder()
        .from(Mailbox::new(None, from.clone()))
        .to(Mailbox::new(None, to.clone()))
        .subject(email.subject.as_str())
        .message_id(Some(format!("<{message_id}>")))
        .date_now()
        .singlepart(SinglePart::plain(email.body.clone()))
        .map_err(|error| SmtpError::InvalidEmail { reason: error.to_string() })?;

    Ok(BuiltEmail { message_id, from, to, bytes: message.formatted() })
}

/// Parses an address. Non-ASCII addresses are rejected because they would need the SMTPUTF8
/// extension, and gateway addresses (`<digits>@sms.nhs.net`) are ASCII.
fn parse_address(address: &str) -> Result<Address, String> {
    if !address.is_ascii() {
        return Err("must be ascii".to_owned());
    }
    address.parse::<Address>().map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(subject: &str, body: &str) -> OutboundEmail {
        OutboundEmail {
            from: "practice@example.org".to_owned(),
            to: "07700900123@sms.example.org".to_owned(),
            subject: subject.to_owned(),
            body: body.to_owned(),
        }
    }

    fn text(built: &BuiltEmail) -> String {
        String::from_utf8(built.bytes.clone()).unwrap()
    }

    fn header_block(built: &BuiltEmail) -> String {
        let text = text(built);
        let (headers, _body) = text.split_once("\r\n\r\n").expect("blank line after headers");
        headers.to_owned()
    }

    /// Returns the header names, one per logical (unfolded) header line.
    fn header_names(built: &BuiltEmail) -> Vec<String> {
        header_block(built)
            .split("\r\n")
            .filter(|line| !line.starts_with([' ', '\t']))
            .map(|line| line.split(':').next().unwrap().to_ascii_lowercase())
            .collect()
    }

    #[test]
    fn subject_cannot_inject_header() {
        let built = build(&email("Reminder\r\nBcc: x@example.org", "text")).unwrap();

        let names = header_names(&built);

        assert!(!names.contains(&"bcc".to_owned()), "{names:?}");
        assert!(!header_block(&built).contains("\r\nBcc:"), "{}", text(&built));
        assert_eq!(names.iter().filter(|name| *name == "subject").count(), 1);
    }

    #[test]
    fn subject_with_bare_newline_stays_one_header() {
        let built = build(&email("line one\nTo: x@example.org", "text")).unwrap();

        let names = header_names(&built);

        assert_eq!(names.iter().filter(|name| *name == "to").count(), 1, "{names:?}");
    }

    #[test]
    fn message_id_uses_account_domain() {
        let built = build(&email("", "text")).unwrap();

        let (local, domain) = built.message_id.split_once('@').unwrap();

        assert_eq!(domain, "example.org");
        assert!(uuid::Uuid::parse_str(local).is_ok(), "{local}");
        assert!(!built.message_id.contains(['<', '>']), "{}", built.message_id);
    }

    #[test]
    fn message_id_header_matches_returned_id() {
        let built = build(&email("", "text")).unwrap();

        let expected = format!("Message-ID: <{}>\r\n", built.message_id);

        assert!(text(&built).contains(&expected), "{}", text(&built));
    }

    #[test]
    fn message_ids_are_unique() {
        let first = build(&email("", "text")).unwrap().message_id;
        let second = build(&email("", "text")).unwrap().message_id;

        assert_ne!(first, second);
    }

    #[test]
    fn body_is_plain_utf8_text() {
        let built = build(&email("", "Your appointment is at 09:30")).unwrap();

        let text = text(&built);

        assert!(text.contains("Content-Type: text/plain; charset=utf-8\r\n"), "{text}");
        assert!(text.contains("MIME-Version: 1.0\r\n"), "{text}");
        assert!(text.contains("\r\n\r\nYour appointment is at 09:30"), "{text}");
    }

    #[test]
    fn non_ascii_body_is_encoded_ascii() {
        let built = build(&email("Café €5", "Résumé: £10 at the café ✓")).unwrap();

        assert!(built.bytes.is_ascii());
        let text = text(&built);
        assert!(
            text.contains("Content-Transfer-Encoding: quoted-printable")
                || text.contains("Content-Transfer-Encoding: base64"),
            "{text}"
        );
    }

    #[test]
    fn headers_carry_addresses_and_date() {
        let built = build(&email("", "text")).unwrap();

        let names = header_names(&built);

        for name in ["from", "to", "subject", "date", "message-id"] {
            assert!(names.contains(&name.to_owned()), "{name} missing from {names:?}");
        }
        assert!(text(&built).contains("From: practice@example.org\r\n"));
        assert!(text(&built).contains("To: 07700900123@sms.example.org\r\n"));
    }

    #[test]
    fn invalid_recipient_is_rejected() {
        let mut email = email("", "text");
        email.to = "07700900123@sms example.org\r\nRCPT TO:<x@example.org>".to_owned();

        let error = build(&email).err().unwrap();

        assert!(matches!(error, SmtpError::InvalidRecipient { .. }), "{error}");
    }

    #[test]
    fn non_ascii_sender_is_rejected() {
        let mut email = email("", "text");
        email.from = "pràctice@example.org".to_owned();

        let error = build(&email).err().unwrap();

        assert!(matches!(error, SmtpError::InvalidSender { .. }), "{error}");
    }
}
