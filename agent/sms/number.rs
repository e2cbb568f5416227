//! UK mobile numbers: normalisation of what people type to E.164, and rejection of everything
//! that cannot receive a text, with a reason a person can act on.
//!
//! Number ranges follow Ofcom's National Telephone Numbering Plan. Mobiles are 071–075, 077–079
//! and 07624 (Isle of Man). The rest of 076 is paging and 070 is personal numbering. 01 and 02 are
//! geographic, and 03 is non-geographic at geographic rates. 05 is corporate and VoIP numbering
//! (0500 was freephone), 080 is freephone, 084 and 087 are special rate and 09 is premium rate.
//! 04 and 06 are not allocated.

use std::fmt;
use std::str::FromStr;

/// A UK mobile number, stored in E.164 form (`+447700900123`).
///
/// The only way to get one is [`normalise_number`], so every value is a valid UK mobile.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MobileNumber {
    e164: String,
}

impl MobileNumber {
    /// Returns the E.164 form, `+447700900123`.
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// Returns the national form, `07700900123`.
    pub fn national(&self) -> String {
        format!("0{}", &self.e164[3..])
    }

    /// Returns the international form without the plus, `447700900123`.
    pub fn international_digits(&self) -> String {
        self.e164[1..].to_string()
    }
}

impl fmt::Display for MobileNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

impl FromStr for MobileNumber {
    type Err = NumberError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        normalise_number(input)
    }
}

/// Reason a value is not a UK mobile number. Each variant contains the value as typed, trimmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("mobile number is empty; texts can only go to UK mobiles (07…)")]
    Empty,
    #[error("\"{input}\" contains no digits; texts can only go to UK mobiles (07…)")]
    NoDigits { input: String },
    #[error(
        "\"{input}\" contains {character:?}, which is not allowed in a phone number; \
         use digits, spaces, dashes, dots or brackets"
    )]
    InvalidCharacter { input: String, character: char },
    #[error("\"{input}\" has a + that is not at the start; write a UK mobile as 07… or +44 7…")]
    MisplacedPlus { input: String },
    #[error("\"{input}\" has no country code after the + or 00; write a UK mobile as 07… or +44 7…")]
    MissingCountryCode { input: String },
    #[error("\"{input}\" is not a UK number; texts can only go to UK mobiles (+44 7…)")]
    NotUk { input: String },
    #[error("\"{input}\" does not start with 0, +44 or 0044; write a UK mobile as 07… or +44 7…")]
    MissingPrefix { input: String },
    #[error("\"{input}\" is a short code, not a mobile number; texts can only go to UK mobiles (07…)")]
    ShortCode { input: String },
    #[error("\"{input}\" is a landline number; texts can only go to UK mobiles (07…)")]
    Landline { input: String },
    #[error("\"{input}\" is a freephone number; texts can only go to UK mobiles (07…)")]
    Freephone { input: String },
    #[error("\"{input}\" is a premium-rate number; texts can only go to UK mobiles (07…)")]
    PremiumRate { input: String },
    #[error("\"{input}\" is a special-rate or corporate number; texts can only go to UK mobiles (07…)")]
    SpecialRate { input: String },
    #[error("\"{input}\" is in a UK number range that is not in use; texts can only go to UK mobiles (07…)")]
    UnusedRange { input: String },
    #[error(
        "\"{input}\" is a personal number (070…), not a mobile; \
         texts can only go to UK mobiles (071–075, 07624, 077–079)"
    )]
    PersonalNumber { input: String },
    #[error(
        "\"{input}\" is a pager number (076…), not a mobile; \
         texts can only go to UK mobiles (071–075, 07624, 077–079)"
    )]
    Pager { input: String },
    #[error("\"{input}\" is too short for a UK mobile number, which has 11 digits (07 and 9 more)")]
    TooShort { input: String },
    #[error("\"{input}\" is too long for a UK mobile number, which has 11 digits (07 and 9 more)")]
    TooLong { input: String },
}

impl NumberError {
    /// Returns the value that was rejected, as typed and trimmed, and shortened to 64 characters
    /// and an ellipsis when longer. It is empty for [`NumberError::Empty`].
    pub fn input(&self) -> &str {
        match self {
            NumberError::Empty => "",
            NumberError::NoDigits { input }
            | NumberError::InvalidCharacter { input, .. }
            | NumberError::MisplacedPlus { input }
            | NumberError::MissingCountryCode { input }
            | NumberError::NotUk { input }
            | NumberError::MissingPrefix { input }
            | NumberError::ShortCode { input }
            | NumberError::Landline { input }
            | NumberError::Freephone { input }
            | NumberError::PremiumRate { input }
            | NumberError::SpecialRate { input }
            | NumberError::UnusedRange { input }
            | NumberError::PersonalNumber { input }
            | NumberError::Pager { input }
            | NumberError::TooShort { input }
            | NumberError::TooLong { input } => input,
        }
    }
}

/// Maximum number of characters of the input that an error repeats, so a huge value cannot
/// flood a log line or an API response.
const MAX_ECHOED_CHARS: usize = 64;

/// Digits of a UK mobile number in national form: 07 and 9 more.
const NATIONAL_MOBILE_DIGITS: usize = 11;

/// Maximum number of digits, without 0 or + in front, that is read as a short code
/// (999, 61016, 118118).
const MAX_SHORT_CODE_DIGITS: usize = 6;

/// Normalises a UK mobile number as people write it to a [`MobileNumber`] in E.164 form.
///
/// Accepts `07…`, `+447…`, `447…`, `00447…`, `+44 (0)7…` and `0044 (0) 7…`, with spaces,
/// dashes, dots and brackets anywhere. A `0` straight after the 44 country code is dropped
/// whether or not it is in brackets. E.164 output normalises to itself.
///
/// # Errors
///
/// A [`NumberError`] that names the value and the reason. The reasons are a character that is
/// not a digit or separator, a short code, or a non-UK country code. They are also a landline,
/// freephone, premium-rate, special-rate, personal or pager number, an unused range, or a mobile
/// number of the wrong length.
pub fn normalise_number(input: &str) -> Result<MobileNumber, NumberError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(NumberError::Empty);
    }
    let echoed = echo(trimmed);

    let (has_plus, digits) = split_digits(trimmed, &echoed)?;
    if digits.is_empty() {
        return Err(NumberError::NoDigits { input: echoed });
    }

    let international = if has_plus { Some(digits.as_str()) } else { digits.strip_prefix("00") };
    let national = match international {
        Some(after_prefix) => uk_national_from_international(after_prefix, &echoed)?,
        None if digits.starts_with('0') => digits,
        None if digits.len() <= MAX_SHORT_CODE_DIGITS => {
            return Err(NumberError::ShortCode { input: echoed });
        }
        None => match digits.strip_prefix("44") {
            Some(after_country_code) => national_from_significant(after_country_code),
            None => return Err(NumberError::MissingPrefix { input: echoed }),
        },
    };

    check_national_mobile(&national, echoed)?;
    Ok(MobileNumber { e164: format!("+44{}", &national[1..]) })
}

/// Returns the input for an error message, shortened to [`MAX_ECHOED_CHARS`] characters.
fn echo(trimmed: &str) -> String {
    if trimmed.chars().count() <= MAX_ECHOED_CHARS {
        return trimmed.to_string();
    }
    let mut shortened: String = trimmed.chars().take(MAX_ECHOED_CHARS).collect();
    shortened.push('…');
    shortened
}

/// Splits the input into whether it starts with `+` and its digits, skipping separators.
fn split_digits(trimmed: &str, echoed: &str) -> Result<(bool, String), NumberError> {
    let mut has_plus = false;
    let mut digits = String::with_capacity(trimmed.len());
    for character in trimmed.chars() {
        if character.is_ascii_digit() {
            digits.push(character);
        } else if character == '+' {
            if has_plus || !digits.is_empty() {
                return Err(NumberError::MisplacedPlus { input: echoed.to_string() });
            }
            has_plus = true;
        } else if !is_separator(character) {
            return Err(NumberError::InvalidCharacter { input: echoed.to_string(), character });
        }
    }
    Ok((has_plus, digits))
}

/// Returns whether people put this character between the digits of a phone number: spaces
/// (including the no-break spaces that word processors insert), dashes, dots and brackets.
fn is_separator(character: char) -> bool {
    matches!(
        character,
        ' ' | '\t' | '\u{a0}' | '\u{202f}' | '-' | '\u{2010}'..='\u{2015}' | '\u{2212}' | '.' | '(' | ')'
    )
}

/// Converts the digits after `+` or `00` to a UK national number, or rejects a non-UK one.
fn uk_national_from_international(digits: &str, echoed: &str) -> Result<String, NumberError> {
    if digits.is_empty() {
        return Err(NumberError::TooShort { input: echoed.to_string() });
    }
    if digits.starts_with('0') {
        return Err(NumberError::MissingCountryCode { input: echoed.to_string() });
    }
    match digits.strip_prefix("44") {
        Some(after_country_code) => Ok(national_from_significant(after_country_code)),
        None => Err(NumberError::NotUk { input: echoed.to_string() }),
    }
}

/// Returns the national form of the digits after the 44 country code, dropping the trunk `0`
/// that people write as `+44 (0)7…`.
fn national_from_significant(after_country_code: &str) -> String {
    let significant = after_country_code.strip_prefix('0').unwrap_or(after_country_code);
    format!("0{significant}")
}

/// Checks that a national number (digits, starting with 0) is a UK mobile of the right length.
fn check_national_mobile(national: &str, input: String) -> Result<(), NumberError> {
    let digit = |index: usize| national.as_bytes().get(index).copied();

    match (digit(1), digit(2)) {
        (None, _) => Err(NumberError::TooShort { input }),
        (Some(b'1' | b'2' | b'3'), _) => Err(NumberError::Landline { input }),
        (Some(b'4' | b'6'), _) => Err(NumberError::UnusedRange { input }),
        (Some(b'5'), _) if national.starts_with("0500") => Err(NumberError::Freephone { input }),
        (Some(b'5'), _) => Err(NumberError::SpecialRate { input }),
        (Some(b'8'), _) if national.starts_with("0800") || national.starts_with("0808") => {
            Err(NumberError::Freephone { input })
        }
        (Some(b'8'), _) => Err(NumberError::SpecialRate { input }),
        (Some(b'9'), _) => Err(NumberError::PremiumRate { input }),
        (Some(b'0'), _) => Err(NumberError::MissingCountryCode { input }),
        (Some(b'7'), None) => Err(NumberError::TooShort { input }),
        (Some(b'7'), Some(b'0')) => Err(NumberError::PersonalNumber { input }),
        (Some(b'7'), Some(b'6')) if national.starts_with("07624") => check_mobile_length(national, input),
        (Some(b'7'), Some(b'6')) if national.len() < 5 && "07624".starts_with(national) => {
            Err(NumberError::TooShort { input })
        }
        (Some(b'7'), Some(b'6')) => Err(NumberError::Pager { input }),
        (Some(b'7'), Some(_)) => check_mobile_length(national, input),
        (Some(_), _) => Err(NumberError::MissingPrefix { input }),
    }
}

fn check_mobile_length(national: &str, input: String) -> Result<(), NumberError> {
    match national.len().cmp(&NATIONAL_MOBILE_DIGITS) {
        std::cmp::Ordering::Less => Err(NumberError::TooShort { input }),
        std::cmp::Ordering::Greater => Err(NumberError::TooLong { input }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs that are the drama mobile +447700900123 however they are written.
    const VALID_FORMS: &[&str] = &[
        "07700900123",
        "07700 900123",
        "07700 900 123",
        "0770 090 0123",
        "07700-900-123",
        "07700.900.123",
        "(07700) 900123",
        "+447700900123",
        "+44 7700 900123",
        "+44 (0)7700 900123",
        "+44(0)7700-900-123",
        "+44 07700 900123",
        "447700900123",
        "44 7700 900123",
        "00447700900123",
        "0044 7700 900123",
        "0044 (0) 7700 900123",
        "  07700 900123  ",
        "\t+44 7700 900123\n",
        "07700\u{a0}900123",
        "07700\u{2013}900123",
        "+\u{a0}44 7700 900123",
    ];

    #[test]
    fn every_accepted_form_normalises_alike() {
        for input in VALID_FORMS {
            let number = normalise_number(input);
            assert_eq!(number.as_ref().map(MobileNumber::e164), Ok("+447700900123"), "input {input:?}");
        }
    }

    #[test]
    fn mobile_ranges_are_accepted() {
        let cases = [
            ("07100 900123", "+447100900123"),
            ("07400 900123", "+447400900123"),
            ("07500 900123", "+447500900123"),
            ("07624 900123", "+447624900123"),
            ("07800 900123", "+447800900123"),
            ("07900 900123", "+447900900123"),
            ("07700 900000", "+447700900000"),
            ("07700 900999", "+447700900999"),
        ];
        for (input, expected) in cases {
            let number = normalise_number(input);
            assert_eq!(number.as_ref().map(MobileNumber::e164), Ok(expected), "input {input:?}");
        }
    }

    #[test]
    fn rejections_name_their_reason() {
        let input = |text: &str| text.trim().to_string();
        let cases: Vec<(&str, NumberError)> = vec![
            ("", NumberError::Empty),
            ("   ", NumberError::Empty),
            ("()-", NumberError::NoDigits { input: input("()-") }),
            ("07700 9OO123", NumberError::InvalidCharacter { input: input("07700 9OO123"), character: 'O' }),
            ("07700/900123", NumberError::InvalidCharacter { input: input("07700/900123"), character: '/' }),
            ("07700\n900123", NumberError::InvalidCharacter { input: input("07700\n900123"), character: '\n' }),
            ("447700+900123", NumberError::MisplacedPlus { input: input("447700+900123") }),
            ("++447700900123", NumberError::MisplacedPlus { input: input("++447700900123") }),
            ("+07700900123", NumberError::MissingCountryCode { input: input("+07700900123") }),
            ("00 07700 900123", NumberError::MissingCountryCode { input: input("00 07700 900123") }),
            ("+1 202 555 0100", NumberError::NotUk { input: input("+1 202 555 0100") }),
            ("+353 85 123 4567", NumberError::NotUk { input: input("+353 85 123 4567") }),
            ("00353 85 123 4567", NumberError::NotUk { input: input("00353 85 123 4567") }),
            ("7700 900123", NumberError::MissingPrefix { input: input("7700 900123") }),
            ("999", NumberError::ShortCode { input: input("999") }),
            ("118118", NumberError::ShortCode { input: input("118118") }),
            ("61016", NumberError::ShortCode { input: input("61016") }),
            ("01632 960123", NumberError::Landline { input: input("01632 960123") }),
            ("020 7946 0123", NumberError::Landline { input: input("020 7946 0123") }),
            ("+44 20 7946 0123", NumberError::Landline { input: input("+44 20 7946 0123") }),
            ("0303 123 4567", NumberError::Landline { input: input("0303 123 4567") }),
            ("0808 157 0123", NumberError::Freephone { input: input("0808 157 0123") }),
            ("0800 123 4567", NumberError::Freephone { input: input("0800 123 4567") }),
            ("0500 123456", NumberError::Freephone { input: input("0500 123456") }),
            ("0909 879 0123", NumberError::PremiumRate { input: input("0909 879 0123") }),
            ("0845 123 4567", NumberError::SpecialRate { input: input("0845 123 4567") }),
            ("0871 123 4567", NumberError::SpecialRate { input: input("0871 123 4567") }),
            ("056 1234 5678", NumberError::SpecialRate { input: input("056 1234 5678") }),
            ("04000 123456", NumberError::UnusedRange { input: input("04000 123456") }),
            ("06000 123456", NumberError::UnusedRange { input: input("06000 123456") }),
            ("070 1234 5678", NumberError::PersonalNumber { input: input("070 1234 5678") }),
            ("07600 900123", NumberError::Pager { input: input("07600 900123") }),
            ("+44 7623 900123", NumberError::Pager { input: input("+44 7623 900123") }),
            ("07700 90012", NumberError::TooShort { input: input("07700 90012") }),
            ("+44 7700 90012", NumberError::TooShort { input: input("+44 7700 90012") }),
            ("07", NumberError::TooShort { input: input("07") }),
            ("0", NumberError::TooShort { input: input("0") }),
            ("0762", NumberError::TooShort { input: input("0762") }),
            ("+44", NumberError::TooShort { input: input("+44") }),
            ("07700 9001234", NumberError::TooLong { input: input("07700 9001234") }),
            ("0044 7700 9001234", NumberError::TooLong { input: input("0044 7700 9001234") }),
        ];
        for (value, expected) in cases {
            assert_eq!(normalise_number(value), Err(expected), "input {value:?}");
        }
    }

    #[test]
    fn landline_message_matches_wording() {
        let error = normalise_number(" 01632 960123 ").unwrap_err();
        assert_eq!(error.to_string(), "\"01632 960123\" is a landline number; texts can only go to UK mobiles (07…)");
    }

    #[test]
    fn every_message_names_the_input() {
        let inputs = [
            "()-",
            "07700 9OO123",
            "447700+900123",
            "+07700900123",
            "+353 85 123 4567",
            "7700 900123",
            "999",
            "020 7946 0123",
            "0808 157 0123",
            "0909 879 0123",
            "0845 123 4567",
            "06000 123456",
            "070 1234 5678",
            "07600 900123",
            "07700 90012",
            "07700 9001234",
        ];
        for input in inputs {
            let message = normalise_number(input).unwrap_err().to_string();
            assert!(message.starts_with(&format!("\"{input}\"")), "message {message:?}");
        }
    }

    #[test]
    fn long_input_is_shortened_in_error() {
        let input = "x".repeat(1000);
        let error = normalise_number(&input).unwrap_err();
        assert_eq!(error.input().chars().count(), MAX_ECHOED_CHARS + 1);
        assert!(error.input().ends_with('…'));
    }

    #[test]
    fn normalising_e164_output_is_idempotent() {
        for input in VALID_FORMS.iter().chain(&["07624 900123", "07100900999"]) {
            let first = normalise_number(input).unwrap();
            let second = normalise_number(first.e164()).unwrap();
            assert_eq!(first, second, "input {input:?}");
        }
    }

    #[test]
    fn forms_of_a_number_agree() {
        let number = normalise_number("07700 900123").unwrap();
        assert_eq!(number.e164(), "+447700900123");
        assert_eq!(number.national(), "07700900123");
        assert_eq!(number.international_digits(), "447700900123");
        assert_eq!(number.to_string(), "+447700900123");
        assert_eq!("07700900123".parse::<MobileNumber>(), Ok(number));
    }
}
