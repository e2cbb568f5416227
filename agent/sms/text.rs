//! Encoding, length and part count of an SMS text, and the checks a text must pass before it
//! is queued.
//!
//! The alphabets are those of 3GPP TS 23.038 §6.2.1. A text that uses only the GSM 7-bit default
//! alphabet and its extension table is sent as GSM-7, and anything else as UCS-2. UCS-2 is sent as
//! UTF-16, so a character outside the Basic Multilingual Plane takes two code units.

use std::fmt;

/// Septets in a single-part GSM-7 text.
const GSM7_SINGLE_PART: u32 = 160;
/// Septets in each part of a concatenated GSM-7 text (the user data header takes 7 septets).
const GSM7_PER_PART: u32 = 153;
/// UTF-16 code units in a single-part UCS-2 text.
const UCS2_SINGLE_PART: u32 = 70;
/// UTF-16 code units in each part of a concatenated UCS-2 text.
const UCS2_PER_PART: u32 = 67;

/// The alphabet a text is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// GSM 7-bit default alphabet with its extension table.
    Gsm7,
    /// UCS-2, counted as UTF-16 code units.
    Ucs2,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        })
    }
}

/// Encoding, length and part count of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TextInfo {
    pub encoding: Encoding,
    /// Septets for GSM-7 (extension characters count 2), UTF-16 code units for UCS-2.
    pub length: u32,
    /// Number of SMS parts the text is sent as. An empty text reports 1.
    pub parts: u32,
}

/// Reason a text cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("text is empty or contains only whitespace or invisible characters")]
    Empty,
    #[error(
        "text contains control character U+{:04X} at character {position}; \
         only line breaks are allowed",
        *.character as u32
    )]
    ControlCharacter {
        character: char,
        /// Position of the character in the text, counting characters from 1.
        position: usize,
    },
    #[error(
        "text is {length} {encoding} characters; the maximum is {max}{}",
        ucs2_cause(*.first_non_gsm)
    )]
    TooLong {
        length: u32,
        max: u32,
        encoding: Encoding,
        /// The first character that GSM-7 lacks, which made the text UCS-2.
        first_non_gsm: Option<char>,
    },
    #[error(
        "text needs {parts} SMS parts, because a character that counts double is never split across two parts; \
         the maximum is {max_parts}. Shorten the text"
    )]
    TooManyParts { parts: u32, max_parts: u32 },
}

fn ucs2_cause(first_non_gsm: Option<char>) -> String {
    match first_non_gsm {
        Some(character) => format!(" (UCS-2 because GSM-7 has no {character:?})"),
        None => String::new(),
    }
}

/// Returns the septets a character takes in GSM-7 (1 in the default alphabet, 2 in the
/// extension table, which is reached through an escape septet), or `None` if GSM-7 lacks it.
///
/// Source: 3GPP TS 23.038 §6.2.1 (default alphabet) and §6.2.1.1 (extension table).
fn gsm7_septets(character: char) -> Option<u32> {
    match character {
        // Default alphabet, in the table's order: columns 0x00–0x0F, 0x10–0x1F, then the
        // ASCII-like rows with the national characters at 0x24, 0x40, 0x5B–0x60 and 0x7B–0x7F.
        '@' | '£' | '$' | '¥' | 'è' | 'é' | 'ù' | 'ì' | 'ò' | 'Ç' | '\n' | 'Ø' | 'ø' | '\r' | 'Å' | 'å' => {
            Some(1)
        }
        'Δ' | '_' | 'Φ' | 'Γ' | 'Λ' | 'Ω' | 'Π' | 'Ψ' | 'Σ' | 'Θ' | 'Ξ' | 'Æ' | 'æ' | 'ß' | 'É' => {
            Some(1)
        }
        ' ' | '!' | '"' | '#' | '¤' | '%' | '&' | '\'' | '('..='?' => Some(1),
        '¡' | 'A'..='Z' | 'Ä' | 'Ö' | 'Ñ' | 'Ü' | '§' => Some(1),
        '¿' | 'a'..='z' | 'ä' | 'ö' | 'ñ' | 'ü' | 'à' => Some(1),
        // Extension table: form feed, ^ { } \ [ ~ ] | €.
        '\u{0C}' | '^' | '{' | '}' | '\\' | '[' | '~' | ']' | '|' | '€' => Some(2),
        _ => None,
    }
}

/// Works out the encoding, length and part count of a text.
///
/// A text fits one part up to 160 septets (GSM-7) or 70 code units (UCS-2). Longer texts are
/// split into parts of 153 septets or 67 code units. An escape sequence or a surrogate pair is
/// never split across two parts, as in Android's `SmsMessage.fragmentText`
/// (`GsmAlphabet.findGsmSeptetLimitIndex`, `SmsMessageBase.findNextUnicodePosition`). So a
/// 2-unit character that would straddle a boundary moves to the next part, and such a text can
/// need one part more than `ceil(length / 153)`.
///
/// NOTE: how the NHSmail gateway splits a long text is not published, so for texts with such a
/// character at a boundary the part count is an estimate.
pub fn analyse_text(text: &str) -> TextInfo {
    let septets: Option<Vec<u32>> = text.chars().map(gsm7_septets).collect();
    match septets {
        Some(widths) => TextInfo {
            encoding: Encoding::Gsm7,
            length: widths.iter().sum(),
            parts: count_parts(&widths, GSM7_SINGLE_PART, GSM7_PER_PART),
        },
        None => {
            let widths: Vec<u32> = text.chars().map(|character| character.len_utf16() as u32).collect();
            TextInfo {
                encoding: Encoding::Ucs2,
                length: widths.iter().sum(),
                parts: count_parts(&widths, UCS2_SINGLE_PART, UCS2_PER_PART),
            }
        }
    }
}

/// Counts parts for characters of the given widths, keeping each character within one part.
fn count_parts(widths: &[u32], single_part: u32, per_part: u32) -> u32 {
    let length: u32 = widths.iter().sum();
    if length <= single_part {
        return 1;
    }

    let mut parts = 1;
    let mut used = 0;
    for &width in widths {
        if used + width > per_part {
            parts += 1;
            used = 0;
        }
        used += width;
    }
    parts
}

/// Returns the maximum length of a text in `encoding` when GSM-7 texts may have
/// `max_gsm7_chars` septets.
///
/// For UCS-2 the maximum is the same number of parts: 70 code units if `max_gsm7_chars` fits
/// one part (160 or fewer, even below 70), otherwise 67 for each of `ceil(max_gsm7_chars / 153)`
/// parts. The default 918 is 6 parts, so 402 UCS-2 code units.
pub fn max_length(encoding: Encoding, max_gsm7_chars: u32) -> u32 {
    match encoding {
        Encoding::Gsm7 => max_gsm7_chars,
        Encoding::Ucs2 if max_gsm7_chars <= GSM7_SINGLE_PART => UCS2_SINGLE_PART,
        Encoding::Ucs2 => max_gsm7_chars.div_ceil(GSM7_PER_PART) * UCS2_PER_PART,
    }
}

/// Checks that a text can be sent and returns its [`TextInfo`].
///
/// # Errors
///
/// [`TextError::Empty`] for a text with nothing visible, [`TextError::ControlCharacter`]
/// for a control character other than LF and CR (tab and form feed included),
/// [`TextError::TooLong`] when the length is over [`max_length`] for the text's encoding, and
/// [`TextError::TooManyParts`] when it needs more parts than the maximum length allows.
pub fn validate_text(text: &str, max_gsm7_chars: u32) -> Result<TextInfo, TextError> {
    if text.chars().all(|character| character.is_whitespace() || is_invisible(character)) {
        return Err(TextError::Empty);
    }

    let control = text
        .chars()
        .enumerate()
        .find(|&(_, character)| character.is_control() && character != '\n' && character != '\r');
    if let Some((index, character)) = control {
        return Err(TextError::ControlCharacter { character, position: index + 1 });
    }

    let info = analyse_text(text);
    let max = max_length(info.encoding, max_gsm7_chars);
    if info.length > max {
        return Err(TextError::TooLong {
            length: info.length,
            max,
            encoding: info.encoding,
            first_non_gsm: text.chars().find(|&character| gsm7_septets(character).is_none()),
        });
    }

    // The length limit allows a number of parts, but a double-counted character or a surrogate pair at a part
    // boundary moves to the next part, so a text within the length can still need one part more.
    let max_parts = if max_gsm7_chars <= GSM7_SINGLE_PART { 1 } else { max_gsm7_chars.div_ceil(GSM7_PER_PART) };
    if info.parts > max_parts {
        return Err(TextError::TooManyParts { parts: info.parts, max_parts });
    }
    Ok(info)
}

/// Returns whether a character shows nothing on a handset: zero-width and direction marks, the byte order mark and
/// the soft hyphen.
fn is_invisible(character: char) -> bool {
    matches!(character, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_MAX: u32 = 918;

    /// The GSM 7-bit default alphabet as 3GPP TS 23.038 §6.2.1 prints it, row by row
    /// (0x00–0x7F), with the escape at 0x1B left out.
    const DEFAULT_ALPHABET: [&str; 8] = [
        "@£$¥èéùìòÇ\nØø\rÅå",
        "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ",
        " !\"#¤%&'()*+,-./",
        "0123456789:;<=>?",
        "¡ABCDEFGHIJKLMNO",
        "PQRSTUVWXYZÄÖÑÜ§",
        "¿abcdefghijklmno",
        "pqrstuvwxyzäöñüà",
    ];

    fn info(encoding: Encoding, length: u32, parts: u32) -> TextInfo {
        TextInfo { encoding, length, parts }
    }

    #[test]
    fn default_alphabet_is_one_septet_each() {
        let alphabet: String = DEFAULT_ALPHABET.concat();
        assert_eq!(alphabet.chars().count(), 127);
        for character in alphabet.chars() {
            assert_eq!(gsm7_septets(character), Some(1), "character {character:?}");
        }
    }

    #[test]
    fn extension_table_is_two_septets_each() {
        for character in "\u{0C}^{}\\[~]|€".chars() {
            assert_eq!(gsm7_septets(character), Some(2), "character {character:?}");
        }
    }

    #[test]
    fn lookalikes_are_not_gsm7() {
        // Lower-case ç, the backtick, tab, the ohm sign (U+2126, not Greek Ω), curly quotes,
        // the en dash and the cent sign are all outside the GSM-7 alphabets.
        for character in "ç`\t\u{2126}\u{2019}\u{201C}\u{2013}¢".chars() {
            assert_eq!(gsm7_septets(character), None, "character {character:?}");
        }
    }

    #[test]
    fn part_counts_follow_sms_limits() {
        use Encoding::{Gsm7, Ucs2};
        let a = |count: usize| "a".repeat(count);
        let cases: Vec<(&str, String, TextInfo)> = vec![
            ("empty", String::new(), info(Gsm7, 0, 1)),
            ("one letter", a(1), info(Gsm7, 1, 1)),
            ("160 GSM-7", a(160), info(Gsm7, 160, 1)),
            ("161 GSM-7", a(161), info(Gsm7, 161, 2)),
            ("306 GSM-7", a(306), info(Gsm7, 306, 2)),
            ("307 GSM-7", a(307), info(Gsm7, 307, 3)),
            ("459 GSM-7", a(459), info(Gsm7, 459, 3)),
            ("918 GSM-7", a(918), info(Gsm7, 918, 6)),
            ("919 GSM-7", a(919), info(Gsm7, 919, 7)),
            ("158 and euro fill 160", format!("{}€", a(158)), info(Gsm7, 160, 1)),
            ("159 and euro overflow", format!("{}€", a(159)), info(Gsm7, 161, 2)),
            ("caret fills 160", format!("{}^", a(158)), info(Gsm7, 160, 1)),
            ("braces count double", "{}".repeat(40), info(Gsm7, 160, 1)),
            ("backslash over", format!("{}\\", a(159)), info(Gsm7, 161, 2)),
            ("form feed", "\u{0C}".to_string(), info(Gsm7, 2, 1)),
            // The escape sequence would straddle the 153 boundary, so it moves to part 2.
            ("euro at boundary", format!("{}€{}", a(152), a(152)), info(Gsm7, 306, 3)),
            ("euro before boundary", format!("{}€{}", a(151), a(153)), info(Gsm7, 306, 2)),
            ("pound is GSM-7", format!("£{}", a(159)), info(Gsm7, 160, 1)),
            ("line breaks", "Line 1\nLine 2\r\nLine 3".to_string(), info(Gsm7, 21, 1)),
            ("70 UCS-2", format!("ç{}", a(69)), info(Ucs2, 70, 1)),
            ("71 UCS-2", format!("ç{}", a(70)), info(Ucs2, 71, 2)),
            ("134 UCS-2", format!("ç{}", a(133)), info(Ucs2, 134, 2)),
            ("135 UCS-2", format!("ç{}", a(134)), info(Ucs2, 135, 3)),
            ("one non-GSM character", format!("{}\u{2019}", a(100)), info(Ucs2, 101, 2)),
            ("euro in UCS-2 counts once", format!("€ç{}", a(68)), info(Ucs2, 70, 1)),
            ("emoji counts two", "😀".to_string(), info(Ucs2, 2, 1)),
            ("emoji at 70", format!("{}😀", a(68)), info(Ucs2, 70, 1)),
            ("emoji over 70", format!("{}😀", a(69)), info(Ucs2, 71, 2)),
            // The surrogate pair would straddle the 67 boundary, so it moves to part 2.
            ("emoji at boundary", format!("{}😀{}", a(66), a(66)), info(Ucs2, 134, 3)),
            ("Greek capitals", "ΔΦΓΛΩΠΨΣΘΞ".to_string(), info(Gsm7, 10, 1)),
            ("Greek small letter", "α".to_string(), info(Ucs2, 1, 1)),
            ("Welsh accent", "Diolch yn fawr, ŵyr".to_string(), info(Ucs2, 19, 1)),
        ];
        for (name, text, expected) in cases {
            assert_eq!(analyse_text(&text), expected, "case {name}");
        }
    }

    #[test]
    fn max_length_keeps_part_budget() {
        let cases = [
            (Encoding::Gsm7, 918, 918),
            (Encoding::Ucs2, 918, 402),
            (Encoding::Ucs2, 160, 70),
            (Encoding::Ucs2, 50, 70),
            (Encoding::Ucs2, 161, 134),
            (Encoding::Ucs2, 306, 134),
            (Encoding::Ucs2, 307, 201),
            (Encoding::Gsm7, 0, 0),
        ];
        for (encoding, max_gsm7, expected) in cases {
            assert_eq!(max_length(encoding, max_gsm7), expected, "{encoding} with {max_gsm7}");
        }
    }

    #[test]
    fn valid_texts_return_their_info() {
        let cases = [
            ("Your appointment is at 10:30 on Monday.", info(Encoding::Gsm7, 39, 1)),
            ("Line one\r\nLine two", info(Encoding::Gsm7, 18, 1)),
            (" leading space kept", info(Encoding::Gsm7, 19, 1)),
        ];
        for (text, expected) in cases {
            assert_eq!(validate_text(text, DEFAULT_MAX), Ok(expected), "text {text:?}");
        }
        let longest_gsm = "a".repeat(918);
        assert_eq!(validate_text(&longest_gsm, DEFAULT_MAX), Ok(info(Encoding::Gsm7, 918, 6)));
        let longest_ucs2 = format!("ç{}", "a".repeat(401));
        assert_eq!(validate_text(&longest_ucs2, DEFAULT_MAX), Ok(info(Encoding::Ucs2, 402, 6)));
    }

    #[test]
    fn invalid_texts_are_rejected() {
        let cases: Vec<(&str, String, TextError)> = vec![
            ("empty", String::new(), TextError::Empty),
            ("spaces", "   ".to_string(), TextError::Empty),
            ("line breaks only", "\r\n\n".to_string(), TextError::Empty),
            ("bell", "Hello\u{07}".to_string(), TextError::ControlCharacter { character: '\u{07}', position: 6 }),
            ("tab", "a\tb".to_string(), TextError::ControlCharacter { character: '\t', position: 2 }),
            ("form feed", "page\u{0C}".to_string(), TextError::ControlCharacter { character: '\u{0C}', position: 5 }),
            (
                "C1 control after emoji",
                "😀\u{85}".to_string(),
                TextError::ControlCharacter { character: '\u{85}', position: 2 },
            ),
            (
                "GSM-7 over",
                "a".repeat(919),
                TextError::TooLong { length: 919, max: 918, encoding: Encoding::Gsm7, first_non_gsm: None },
            ),
            (
                "euro tips over",
                format!("{}€", "a".repeat(917)),
                TextError::TooLong { length: 919, max: 918, encoding: Encoding::Gsm7, first_non_gsm: None },
            ),
            (
                "UCS-2 over",
                format!("ç{}", "a".repeat(402)),
                TextError::TooLong { length: 403, max: 402, encoding: Encoding::Ucs2, first_non_gsm: Some('ç') },
            ),
            ("zero-width only", "\u{200B}\u{FEFF}".to_string(), TextError::Empty),
            ("soft hyphen and space", "\u{00AD} ".to_string(), TextError::Empty),
            (
                "euros at part boundaries",
                format!("{}{}", format!("{}€", "a".repeat(152)).repeat(5), "a".repeat(148)),
                TextError::TooManyParts { parts: 7, max_parts: 6 },
            ),
            ("emoji at part boundaries", "😀".repeat(201), TextError::TooManyParts { parts: 7, max_parts: 6 }),
        ];
        for (name, text, expected) in cases {
            assert_eq!(validate_text(&text, DEFAULT_MAX), Err(expected), "case {name}");
        }
    }

    #[test]
    fn lower_maximum_is_respected() {
        let result = validate_text(&"a".repeat(161), 160);
        assert_eq!(
            result,
            Err(TextError::TooLong { length: 161, max: 160, encoding: Encoding::Gsm7, first_non_gsm: None })
        );
    }

    #[test]
    fn error_messages_state_the_numbers() {
        let too_long = validate_text(&"a".repeat(950), DEFAULT_MAX).unwrap_err();
        assert_eq!(too_long.to_string(), "text is 950 GSM-7 characters; the maximum is 918");

        let too_long_ucs2 = validate_text(&format!("😀{}", "a".repeat(450)), DEFAULT_MAX).unwrap_err();
        assert_eq!(
            too_long_ucs2.to_string(),
            "text is 452 UCS-2 characters; the maximum is 402 (UCS-2 because GSM-7 has no '😀')"
        );

        let control = validate_text("Hi\u{07}", DEFAULT_MAX).unwrap_err();
        assert_eq!(
            control.to_string(),
            "text contains control character U+0007 at character 3; only line breaks are allowed"
        );
    }
}
