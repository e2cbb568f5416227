//! Tests of [`classify`] over whole emails: the corpus in `tests/corpus` with its
//! `expected.toml`, hand-built emails for single header rules, and robustness against
//! truncated, mutated and random bytes.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::*;

const SMS_DOMAIN: &str = "sms.nhs.net";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectations {
    email: Vec<Expected>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    file: String,
    kind: String,
    original_message_id: Option<String>,
    status: Option<String>,
    reply_text: Option<String>,
    keyword: Option<String>,
    reason_contains: Option<String>,
    raw_text: Option<String>,
    action: Option<String>,
    source: Option<String>,
    original_message_ids: Option<Vec<String>>,
    diagnostic: Option<String>,
    final_recipient: Option<String>,
    reply_from: Option<String>,
    subject: Option<String>,
    message_id: Option<String>,
    date: Option<String>,
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn expectations() -> Vec<Expected> {
    let path = corpus_dir().join("expected.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    let parsed: Expectations =
        toml::from_str(&text).unwrap_or_else(|error| panic!("parse {}: {error}", path.display()));
    parsed.email
}

fn corpus_files() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(corpus_dir()).expect("corpus folder is readable") {
        let path = entry.expect("corpus entry is readable").path();
        if path.extension().is_some_and(|extension| extension == "eml") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).expect("corpus file is readable");
            files.push((name, bytes));
        }
    }
    files.sort();
    files
}

fn classify_file(name: &str) -> Classified {
    let bytes = std::fs::read(corpus_dir().join(name)).unwrap_or_else(|error| panic!("read {name}: {error}"));
    classify(&bytes, SMS_DOMAIN)
}

#[test]
fn corpus_matches_expectations() {
    for expected in expectations() {
        let file = expected.file.as_str();
        let classified = classify_file(file);
        let report = classified.report.as_ref();
        let reply = classified.reply.as_ref();

        assert_eq!(classified.kind.as_str(), expected.kind, "{file}: kind ({})", classified.reason);
        assert_eq!(
            classified.original_message_ids.first(),
            expected.original_message_id.as_ref(),
            "{file}: first original Message-ID of {:?}",
            classified.original_message_ids
        );
        assert_eq!(report.and_then(|report| report.status.as_deref()), expected.status.as_deref(), "{file}: status");
        assert_eq!(reply.map(|reply| reply.text.as_str()), expected.reply_text.as_deref(), "{file}: reply text");
        assert_eq!(
            reply.and_then(|reply| reply.keyword).map(ReplyKeyword::as_str),
            expected.keyword.as_deref(),
            "{file}: keyword"
        );

        if let Some(part) = &expected.reason_contains {
            assert!(classified.reason.contains(part.as_str()), "{file}: reason {:?}", classified.reason);
        }
        if let Some(raw_text) = &expected.raw_text {
            assert_eq!(reply.map(|reply| reply.raw_text.as_str()), Some(raw_text.as_str()), "{file}: raw text");
        }
        if let Some(action) = &expected.action {
            assert_eq!(report.map(|report| report.action.as_str()), Some(action.as_str()), "{file}: action");
        }
        if let Some(source) = &expected.source {
            assert_eq!(report.map(|report| report.source.as_str()), Some(source.as_str()), "{file}: source");
        }

        if let Some(ids) = &expected.original_message_ids {
            assert_eq!(&classified.original_message_ids, ids, "{file}: original Message-IDs");
        }
        if let Some(diagnostic) = &expected.diagnostic {
            assert_eq!(report.and_then(|report| report.diagnostic.as_ref()), Some(diagnostic), "{file}: diagnostic");
        }
        if let Some(recipient) = &expected.final_recipient {
            assert_eq!(
                report.and_then(|report| report.final_recipient.as_ref()),
                Some(recipient),
                "{file}: final recipient"
            );
        }
        if let Some(number) = &expected.reply_from {
            assert_eq!(reply.map(|reply| reply.from.e164()), Some(number.as_str()), "{file}: reply number");
        }
        if let Some(subject) = &expected.subject {
            assert_eq!(classified.subject.as_ref(), Some(subject), "{file}: subject");
        }
        if let Some(message_id) = &expected.message_id {
            assert_eq!(classified.message_id.as_ref(), Some(message_id), "{file}: Message-ID");
        }
        if let Some(date) = &expected.date {
            assert_eq!(
                classified.date.map(|date| date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).as_ref(),
                Some(date),
                "{file}: date"
            );
        }
    }
}

#[test]
fn every_corpus_file_has_expectations() {
    let files: BTreeSet<String> = corpus_files().into_iter().map(|(name, _)| name).collect();
    let expected: BTreeSet<String> = expectations().into_iter().map(|expected| expected.file).collect();
    assert_eq!(files, expected);
}

#[test]
fn corpus_reasons_are_one_line() {
    for (name, bytes) in corpus_files() {
        let reason = classify(&bytes, SMS_DOMAIN).reason;
        assert!(!reason.is_empty(), "{name}: empty reason");
        assert!(!reason.contains('\n'), "{name}: reason {reason:?}");
    }
}

#[test]
fn reply_keeps_decoded_raw_text() {
    let classified = classify_file("reply-quoted.eml");
    let raw_text = classified.reply.map(|reply| reply.raw_text).unwrap_or_default();
    assert!(
        raw_text.starts_with("I’d like to change to Thursday please, if there is a slot after school.\n\n-- \nJo\n"),
        "raw text {raw_text:?}"
    );
    assert!(raw_text.contains("> Reply to this message to change it."), "raw text {raw_text:?}");
}

#[test]
fn garbage_is_other_with_reason() {
    let classified = classify_file("garbage.eml");
    assert_eq!(classified.kind, InboundKind::Other);
    assert!(classified.reason.starts_with("not an email"), "reason {:?}", classified.reason);
}

#[test]
fn gateway_sender_without_number_is_other() {
    let classified = classify_file("gateway-notice.eml");
    assert_eq!(
        classified.reason,
        "from noreply@sms.nhs.net, which is in the SMS gateway domain but not a mobile number"
    );
}

/// Builds a small plain-text email with the given extra header lines.
fn email_with_headers(from: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: practice@example.org\r\nSubject: Test\r\nMessage-ID: <t1@example.org>\r\n{extra_headers}\r\nBody text\r\n"
    )
    .into_bytes()
}

#[test]
fn auto_reply_headers_are_recognised() {
    let cases = [
        ("Auto-Submitted: auto-replied\r\n", InboundKind::AutoReply),
        ("Auto-Submitted: auto-generated\r\n", InboundKind::AutoReply),
        ("auto-submitted: Auto-Notified; owner-email=\"a@example.org\"\r\n", InboundKind::AutoReply),
        ("Auto-Submitted: no\r\n", InboundKind::Other),
        ("Auto-Submitted: No\r\n", InboundKind::Other),
        ("Precedence: auto_reply\r\n", InboundKind::AutoReply),
        ("Precedence: bulk\r\n", InboundKind::AutoReply),
        ("Precedence: JUNK\r\n", InboundKind::AutoReply),
        ("Precedence: list\r\n", InboundKind::Other),
        ("X-Autoreply: yes\r\n", InboundKind::AutoReply),
        ("X-Autorespond: Out of office\r\n", InboundKind::AutoReply),
        ("X-Auto-Response-Suppress: All\r\n", InboundKind::Other),
        ("", InboundKind::Other),
    ];
    for (headers, expected) in cases {
        let classified = classify(&email_with_headers("a@example.org", headers), SMS_DOMAIN);
        assert_eq!(classified.kind, expected, "headers {headers:?} ({})", classified.reason);
    }
}

#[test]
fn reply_wins_over_auto_submitted() {
    let email = email_with_headers("07700900123@sms.nhs.net", "Auto-Submitted: auto-generated\r\n");
    assert_eq!(classify(&email, SMS_DOMAIN).kind, InboundKind::Reply);
}

#[test]
fn reply_matches_configured_domain_only() {
    let email = email_with_headers("07700900123@sms.nhs.net", "");
    assert_eq!(classify(&email, "sms.example.org").kind, InboundKind::Other);
    assert_eq!(classify(&email, "SMS.NHS.NET").kind, InboundKind::Reply);
}

#[test]
fn report_without_action_is_other() {
    let email = b"From: mailer-daemon@example.org\r\n\
        Subject: Report\r\n\
        Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
        --b\r\nContent-Type: message/delivery-status\r\n\r\n\
        Reporting-MTA: dns; mail.example.org\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\n\r\n--b--\r\n";
    let classified = classify(email, SMS_DOMAIN);
    assert_eq!(classified.kind, InboundKind::Other);
    assert_eq!(classified.reason, "message/delivery-status part has no recipient with a known Action");
}

#[test]
fn report_inside_attached_message_is_found() {
    let email = b"From: filter@example.org\r\n\
        Subject: Fwd: Undelivered Mail\r\n\
        Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
        --outer\r\nContent-Type: text/plain\r\n\r\nForwarded report.\r\n\
        --outer\r\nContent-Type: message/rfc822\r\n\r\n\
        From: MAILER-DAEMON@mail.example.org\r\n\
        Subject: Undelivered Mail Returned to Sender\r\n\
        In-Reply-To: <sent-1@agent.example.org>\r\n\
        Content-Type: multipart/report; report-type=delivery-status; boundary=\"inner\"\r\n\r\n\
        --inner\r\nContent-Type: message/delivery-status\r\n\r\n\
        Reporting-MTA: dns; mail.example.org\r\n\r\n\
        Final-Recipient: rfc822; 07700900123@sms.nhs.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n\
        --inner--\r\n\
        --outer--\r\n";
    let classified = classify(email, SMS_DOMAIN);
    assert_eq!(classified.kind, InboundKind::FailureReport, "{}", classified.reason);
    assert_eq!(classified.original_message_ids, vec!["sent-1@agent.example.org".to_string()]);
}

#[test]
fn long_references_keep_order_without_repeats() {
    let references: Vec<String> = (0..2000).map(|index| format!("<r{}@example.org>", index % 1000)).collect();
    let email = email_with_headers("a@example.org", &format!("References: {}\r\n", references.join(" ")));
    let ids = classify(&email, SMS_DOMAIN).original_message_ids;
    assert_eq!(ids.len(), 1000);
    assert_eq!(ids.first().map(String::as_str), Some("r999@example.org"));
}

/// Returns the parts of a classification that line endings must not change.
fn outcome(
    classified: &Classified,
) -> (InboundKind, Vec<String>, Option<String>, Option<String>, Option<ReplyKeyword>) {
    (
        classified.kind,
        classified.original_message_ids.clone(),
        classified.report.as_ref().and_then(|report| report.status.clone()),
        classified.reply.as_ref().map(|reply| reply.text.clone()),
        classified.reply.as_ref().and_then(|reply| reply.keyword),
    )
}

fn with_lf(bytes: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(bytes).replace("\r\n", "\n").into_bytes()
}

fn with_crlf(bytes: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(&with_lf(bytes)).replace('\n', "\r\n").into_bytes()
}

#[test]
fn line_endings_do_not_change_outcome() {
    for (name, bytes) in corpus_files() {
        if name.starts_with("garbage") {
            continue;
        }
        let expected = outcome(&classify(&bytes, SMS_DOMAIN));
        assert_eq!(outcome(&classify(&with_lf(&bytes), SMS_DOMAIN)), expected, "{name} with LF");
        assert_eq!(outcome(&classify(&with_crlf(&bytes), SMS_DOMAIN)), expected, "{name} with CRLF");
    }
}

#[test]
fn gateway_reply_with_report_text_stays_reply() {
    let email = b"From: 07700900150@sms.nhs.net\r\nTo: practice@example.org\r\nSubject: SMS reply\r\n\r\n\
        Action: failed\r\nStatus: 5.1.1\r\n";
    let classified = classify(email, SMS_DOMAIN);
    assert_eq!(classified.kind, InboundKind::Reply, "{}", classified.reason);
    assert_eq!(classified.report, None);
}

#[test]
fn ndr_header_on_plain_text_is_forged() {
    let email = b"From: notices@example.com\r\nSubject: Undeliverable: Reminder\r\n\
        X-MS-Exchange-Message-Is-Ndr:\r\nContent-Type: text/plain\r\n\r\n\
        07700900151@sms.nhs.net\r\nRemote Server returned '550 5.1.1 not found'\r\n";
    let classified = classify(email, SMS_DOMAIN);
    assert_eq!(classified.kind, InboundKind::Other);
    assert!(classified.reason.contains("forged or pasted"), "reason {:?}", classified.reason);
}

#[test]
fn text_report_with_success_status_is_other() {
    let email = b"From: postmaster@example.org\r\nSubject: Delivered\r\n\
        Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
        --b\r\nContent-Type: text/plain\r\n\r\nStatus code: 250 2.0.0\r\n--b--\r\n";
    let classified = classify(email, SMS_DOMAIN);
    assert_eq!(classified.kind, InboundKind::Other);
    assert_eq!(classified.reason, "report without a status part, and its text gives success status 2.0.0");
}

#[test]
fn read_receipt_is_no_text_report() {
    let email = b"From: a@example.org\r\nSubject: Read: Rota\r\n\
        Content-Type: multipart/report; report-type=Disposition-Notification; boundary=\"b\"\r\n\r\n\
        --b\r\nContent-Type: text/plain\r\n\r\nRemote Server returned '550 5.1.1 not found'\r\n--b--\r\n";
    let classified = classify(email, SMS_DOMAIN);
    assert_eq!(classified.report, None);
    assert!(classified.reason.contains("forged or pasted"), "reason {:?}", classified.reason);
}

#[test]
fn blank_body_and_subject_give_empty_reply() {
    let email = b"From: 07700900152@sms.nhs.net\r\nSubject:  \r\nMessage-ID: <r@sms.nhs.net>\r\n\r\n\r\n";
    let reply = classify(email, SMS_DOMAIN).reply.expect("a reply");
    assert_eq!(reply.text, "");
    assert_eq!(reply.keyword, None);
}

#[test]
fn plain_blank_html_body_is_read() {
    let email = b"From: 07700900153@sms.nhs.net\r\nSubject: x\r\n\
        Content-Type: multipart/alternative; boundary=\"a\"\r\n\r\n\
        --a\r\nContent-Type: text/plain\r\n\r\n \r\n\
        --a\r\nContent-Type: text/html\r\n\r\n<p>Stop</p>\r\n--a--\r\n";
    let reply = classify(email, SMS_DOMAIN).reply.expect("a reply");
    assert_eq!(reply.text, "Stop");
    assert_eq!(reply.keyword, Some(ReplyKeyword::Stop));
}

/// A small deterministic generator (xorshift64*), so failures reproduce without a new
/// dependency.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Byte strings that steer random input towards the parser's branches.
const EMAIL_TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b": ",
    b"\r\n ",
    b"From: ",
    b"Content-Type: multipart/report; boundary=\"b\"",
    b"Content-Type: message/delivery-status",
    b"Content-Type: message/rfc822",
    b"Content-Type: text/rfc822-headers",
    b"Content-Type: text/html; charset=iso-8859-1",
    b"Content-Transfer-Encoding: base64",
    b"Content-Transfer-Encoding: quoted-printable",
    b"--b",
    b"--b--",
    b"Action: failed",
    b"Status: 5.1.1",
    b"Message-ID: <",
    b">",
    b"=?utf-8?B?",
    b"?=",
    b"=E2=80",
    b"<p>",
    b"&#x1F600;",
    b"07700900123@sms.nhs.net",
];

#[test]
fn truncated_corpus_never_panics() {
    for (name, bytes) in corpus_files() {
        for end in 0..=bytes.len() {
            let classified = classify(&bytes[..end], SMS_DOMAIN);
            assert!(!classified.reason.is_empty(), "{name} cut at {end}");
        }
    }
}

#[test]
fn mutated_corpus_never_panics() {
    let mut random = Xorshift(0x9E37_79B9_7F4A_7C15);
    for (name, bytes) in corpus_files() {
        for round in 0..300 {
            let mut mutated = bytes.clone();
            for _ in 0..1 + random.below(8) {
                let position = random.below(mutated.len() + 1);
                match random.below(4) {
                    0 if position < mutated.len() => mutated[position] = random.next() as u8,
                    1 if position < mutated.len() => {
                        mutated.remove(position);
                    }
                    2 => {
                        let token = EMAIL_TOKENS[random.below(EMAIL_TOKENS.len())];
                        mutated.splice(position..position, token.iter().copied());
                    }
                    _ => mutated.insert(position, random.next() as u8),
                }
            }
            let classified = classify(&mutated, SMS_DOMAIN);
            assert!(!classified.reason.is_empty(), "{name} round {round}");
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut random = Xorshift(0x0DDB_1A5E_5BAD_5EED);
    for round in 0..3000 {
        let mut bytes = Vec::new();
        let pieces = random.below(200);
        for _ in 0..pieces {
            if random.below(3) == 0 {
                bytes.extend_from_slice(EMAIL_TOKENS[random.below(EMAIL_TOKENS.len())]);
            } else {
                bytes.push(random.next() as u8);
            }
        }
        let classified = classify(&bytes, SMS_DOMAIN);
        assert!(!classified.reason.is_empty(), "round {round}");
    }
}
