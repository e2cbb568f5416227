//! Property tests of the SMS rules and of submission validation: no input panics, number normalisation is
//! idempotent, and the encoding, length and part count agree with a reference implementation written here
//! independently of `agent/sms/text.rs`. Submissions go through [`App::submit`] with a real SQLite store.

use std::sync::Arc;

use chrono::{Duration, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

use nhsmail_agent::app::{App, AppError, SubmitRequest};
use nhsmail_agent::config::{Config, Overrides};
use nhsmail_agent::credentials::{CredentialManager, PasswordCalendar, Vault};
use nhsmail_agent::sms::{self, Encoding};
use nhsmail_agent::store::Store;

/// The GSM 7-bit default alphabet (3GPP TS 23.038 §6.2.1) without the escape, one septet each.
const GSM7_DEFAULT: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                            ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The GSM-7 extension table (§6.2.1.1): an escape septet and one more, so two septets each.
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

/// Maximum text length in GSM-7 characters that the submissions use: the agent's default.
const MAX_TEXT_CHARS: u32 = 918;

/// A text encoded as the reference sees it: the units sent, and which of them start a character.
struct Encoded {
    encoding: Encoding,
    /// True for the first unit of each character; false for the second septet after an escape or a low surrogate.
    starts: Vec<bool>,
}

/// Encodes `text` unit by unit: GSM-7 when every character is in the default alphabet or the extension table,
/// else UTF-16.
fn reference_encode(text: &str) -> Encoded {
    let gsm7 = text.chars().all(|c| GSM7_DEFAULT.contains(c) || GSM7_EXTENSION.contains(c));
    let mut starts = Vec::new();
    for c in text.chars() {
        let units =
            if gsm7 { if GSM7_EXTENSION.contains(c) { 2 } else { 1 } } else { c.encode_utf16(&mut [0u16; 2]).len() };
        starts.push(true);
        starts.extend(std::iter::repeat_n(false, units - 1));
    }
    Encoded { encoding: if gsm7 { Encoding::Gsm7 } else { Encoding::Ucs2 }, starts }
}

/// Splits the encoded units into parts the way a handset does: cut every `per_part` units, but when the cut would
/// fall inside a character, cut before that character instead.
fn reference_parts(encoded: &Encoded) -> u32 {
    let (single, per_part) = match encoded.encoding {
        Encoding::Gsm7 => (160, 153),
        Encoding::Ucs2 => (70, 67),
    };
    let total = encoded.starts.len();
    if total <= single {
        return 1;
    }
    let mut parts = 0;
    let mut start = 0;
    while start < total {
        let mut end = (start + per_part).min(total);
        while end < total && !encoded.starts[end] {
            end -= 1;
        }
        parts += 1;
        start = end;
    }
    parts
}

/// Characters that test every branch of the encoder: the default alphabet, the extension table, characters GSM-7
/// lacks inside and outside the Basic Multilingual Plane, and controls and invisible marks.
fn text_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => proptest::sample::select(GSM7_DEFAULT.chars().collect::<Vec<_>>()),
        2 => proptest::sample::select(GSM7_EXTENSION.chars().collect::<Vec<_>>()),
        1 => proptest::sample::select(vec!['é', 'ç', 'ł', '“', '’', 'Ω', '中', '\u{200B}', '\u{FEFF}']),
        1 => proptest::sample::select(vec!['😀', '👍', '𝄞']),
        1 => proptest::sample::select(vec!['\t', '\u{0}', '\u{7F}', '\u{85}', ' ']),
        1 => any::<char>(),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(text_char(), 0..1200).prop_map(|chars| chars.into_iter().collect()),
        // Texts that sit on part boundaries, where a two-unit character decides the count.
        (140usize..180, 0usize..3, proptest::sample::select(vec!['a', '€', 'é', '😀'])).prop_map(
            |(length, position, special)| {
                let mut text: String = "a".repeat(length);
                text.insert(length.saturating_sub(position), special);
                text
            }
        ),
    ]
}

/// Strings shaped like phone numbers as people type them, valid or not.
fn number_like() -> impl Strategy<Value = String> {
    let prefix = proptest::sample::select(vec![
        "07",
        "+447",
        "447",
        "00447",
        "+44 (0)7",
        "0044 (0) 7",
        "+44 07",
        "01",
        "0800",
        "09",
        "+1",
        "",
        "+",
    ]);
    let separator = proptest::sample::select(vec!["", " ", "-", ".", "(", ")", "\u{a0}", "\u{2013}", "x", "++"]);
    let pieces = proptest::collection::vec((proptest::string::string_regex("[0-9]{0,4}").unwrap(), separator), 0..5);
    prop_oneof![
        3 => (prefix, pieces).prop_map(|(prefix, pieces)| {
            let mut number = prefix.to_string();
            for (digits, separator) in pieces {
                number.push_str(&digits);
                number.push_str(separator);
            }
            number
        }),
        1 => any::<String>(),
    ]
}

/// A drama-range mobile number written in one of the accepted forms, with separators in random places.
fn valid_number() -> impl Strategy<Value = (String, String)> {
    let prefix = proptest::sample::select(vec!["07", "+447", "447", "00447", "+44 (0)7", "0044 (0) 7", "+44 07"]);
    let separator = proptest::sample::select(vec!["", " ", "-", ".", "\u{a0}"]);
    (prefix, 0u32..1000, proptest::collection::vec(separator, 9)).prop_map(|(prefix, last_three, separators)| {
        let digits = format!("700900{last_three:03}");
        let mut written = prefix.to_string();
        for (digit, separator) in digits.chars().zip(separators) {
            written.push(digit);
            written.push_str(separator);
        }
        (written, format!("+447{digits}"))
    })
}

#[test]
fn part_count_matches_reference() {
    proptest!(RunnerConfig::with_cases(500), |(text in text())| {
        let info = sms::analyse_text(&text);
        let encoded = reference_encode(&text);
        prop_assert_eq!(info.encoding, encoded.encoding, "encoding of {:?}", text);
        prop_assert_eq!(info.length as usize, encoded.starts.len(), "length of {:?}", text);
        prop_assert_eq!(info.parts, reference_parts(&encoded), "parts of {:?}", text);
    });
}

#[test]
fn text_validation_never_panics() {
    proptest!(RunnerConfig::with_cases(1000), |(text in text(), max in 1u32..2000)| {
        if let Ok(info) = sms::validate_text(&text, max) {
            prop_assert!(info.length <= sms::max_length(info.encoding, max), "{:?} is over {}", text, max);
        }
    });
}

#[test]
fn normalisation_is_idempotent() {
    proptest!(RunnerConfig::with_cases(5000), |(input in number_like())| {
        if let Ok(number) = sms::normalise_number(&input) {
            let e164 = number.e164();
            prop_assert!(
                e164.len() == 13 && e164.starts_with("+447") && e164[1..].bytes().all(|b| b.is_ascii_digit()),
                "{:?} became {:?}", input, e164
            );
            let from_e164 = sms::normalise_number(e164);
            prop_assert_eq!(from_e164.as_ref(), Ok(&number), "E.164 form of {:?}", input);
            let from_national = sms::normalise_number(&number.national());
            prop_assert_eq!(from_national.as_ref(), Ok(&number), "national form");
            let from_international = sms::normalise_number(&number.international_digits());
            prop_assert_eq!(from_international.as_ref(), Ok(&number), "international digits");
        }
    });
}

#[test]
fn written_forms_normalise_alike() {
    proptest!(RunnerConfig::with_cases(2000), |((written, expected) in valid_number())| {
        let number = sms::normalise_number(&written);
        prop_assert_eq!(number.as_ref().map(|number| number.e164()), Ok(expected.as_str()), "{:?}", written);
    });
}

/// Keys and references: mostly short and printable, sometimes long or holding a control character.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::string::string_regex("[a-z0-9-]{0,24}").unwrap(),
        1 => proptest::string::string_regex("[a-z]{195,205}").unwrap(),
        1 => any::<String>(),
    ]
}

fn submit_request() -> impl Strategy<Value = SubmitRequest> {
    let to = prop_oneof![valid_number().prop_map(|(written, _)| written), number_like()];
    let offset = proptest::option::of(-10_000i64..400_000);
    (to, text(), key(), key(), offset.clone(), offset).prop_map(
        |(to, text, idempotency_key, client_reference, send_after, expires_at)| {
            let now = Utc::now();
            SubmitRequest {
                to,
                text,
                priority: None,
                send_after: send_after.map(|seconds| now + Duration::seconds(seconds)),
                expires_at: expires_at.map(|seconds| now + Duration::seconds(seconds)),
                idempotency_key,
                client_reference,
            }
        },
    )
}

/// Builds the agent's core over a fresh data directory, without a password, so nothing is ever sent.
async fn app_without_mailbox(data_dir: &std::path::Path) -> Arc<App> {
    let overrides = Overrides { data_dir: Some(data_dir.to_path_buf()), ..Overrides::default() };
    let env = |name: &str| match name {
        "NHSMAIL_SMTP_HOST" | "NHSMAIL_IMAP_HOST" => Some("127.0.0.1".to_string()),
        "NHSMAIL_MAX_TEXT_CHARS" => Some(MAX_TEXT_CHARS.to_string()),
        _ => None,
    };
    let config = Config::load_with_env(&overrides, env).expect("the test settings are valid");
    let store = Store::open(data_dir.join("agent.db")).expect("the database opens");
    let vault = Vault::open_or_create(data_dir).expect("the key file is created");
    let credentials = CredentialManager::load(store.clone(), vault, None, PasswordCalendar::default(), None)
        .await
        .expect("the credentials load");
    App::new(config, store, credentials).0
}

#[test]
fn submission_validation_accepts_or_names_field() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let app = runtime.block_on(app_without_mailbox(data_dir.path()));
    let fields = ["to", "text", "idempotency_key", "client_reference", "send_after", "expires_at"];

    let mut runner = TestRunner::new(RunnerConfig::with_cases(400));
    let outcome = runner.run(&submit_request(), |request| {
        let result = runtime.block_on(app.submit("properties", vec![request.clone()], ""));
        match result {
            Ok(mut stored) => {
                prop_assert_eq!(stored.len(), 1);
                let first = stored.remove(0);
                if first.duplicate {
                    // An earlier case used the same key, so the earlier message came back; that is checked below.
                    return Ok(());
                }
                let message = first.message;
                let number = sms::normalise_number(&request.to);
                prop_assert_eq!(Ok(message.to_e164.as_str()), number.as_ref().map(|number| number.e164()));
                prop_assert_eq!(message.parts, sms::analyse_text(&request.text).parts, "parts of {:?}", request.text);
                prop_assert!(message.expires_at > message.created_at, "expires before it is created");
                if !request.idempotency_key.is_empty() {
                    let again = runtime.block_on(app.submit("properties", vec![request.clone()], ""));
                    let again = again.map(|mut stored| stored.remove(0));
                    prop_assert!(
                        matches!(&again, Ok(repeat) if repeat.duplicate && repeat.message.id == message.id),
                        "a repeated key returned {:?}",
                        again.map(|repeat| repeat.message.id)
                    );
                }
            }
            Err(AppError::InvalidArgument { field, message }) => {
                prop_assert!(fields.contains(&field.as_str()), "unexpected field {:?}: {}", field, message);
                prop_assert!(!message.is_empty(), "the error on {} says nothing", field);
            }
            Err(other) => prop_assert!(false, "{:?} failed with {}", request, other),
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
