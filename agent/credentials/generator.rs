//! New mailbox passwords for automatic rotation: random, long, of every required character class, and made only of
//! characters that survive SMTP AUTH, IMAP LOGIN quoting and form encoding unchanged.

use rand::Rng;
use rand::seq::SliceRandom;

use crate::secret::Secret;

const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const DIGITS: &[u8] = b"23456789";
/// Symbols that need no quoting in IMAP quoted strings and no escaping in `application/x-www-form-urlencoded`
/// bodies: no quote, backslash, space, `%`, `+`, `&` or `=`.
const SYMBOLS: &[u8] = b"-_.!~#";

/// How many candidates are tried before giving up on finding one that is not reused.
const MAX_ATTEMPTS: usize = 100;

/// The rules a generated password must meet. The defaults meet NHSmail's rules for application accounts (at
/// least 20 characters, upper and lower case, and a digit or symbol) with room to spare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub require_upper: bool,
    pub require_lower: bool,
    pub require_digit: bool,
    pub require_symbol: bool,
}

impl Default for PasswordPolicy {
    fn default() -> PasswordPolicy {
        PasswordPolicy {
            min_length: 24,
            require_upper: true,
            require_lower: true,
            require_digit: true,
            require_symbol: true,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GeneratorError {
    #[error(
        "a password of {min_length} characters cannot contain a character of each of the {classes} required classes"
    )]
    TooShort { min_length: usize, classes: usize },
    #[error("no new password was found in {attempts} attempts that is not among the recent ones")]
    OnlyReused { attempts: usize },
}

/// Generates a password that meets `policy` and for which `is_reused` returns false.
///
/// The randomness is the thread-local generator of `rand`, a ChaCha-based CSPRNG seeded from the operating system.
/// Look-alike characters (0/O, 1/l/I) are left out, so a person can read a revealed password back without error.
pub fn generate(policy: &PasswordPolicy, is_reused: impl Fn(&Secret) -> bool) -> Result<Secret, GeneratorError> {
    let required: Vec<&[u8]> = [
        (policy.require_upper, UPPER),
        (policy.require_lower, LOWER),
        (policy.require_digit, DIGITS),
        (policy.require_symbol, SYMBOLS),
    ]
    .into_iter()
    .filter_map(|(required, class)| required.then_some(class))
    .collect();
    if policy.min_length < required.len().max(1) {
        return Err(GeneratorError::TooShort { min_length: policy.min_length, classes: required.len() });
    }

    let alphabet: Vec<u8> = [UPPER, LOWER, DIGITS, SYMBOLS].concat();
    let mut rng = rand::rng();
    for _ in 0..MAX_ATTEMPTS {
        // One character from each required class, the rest from the whole alphabet, then shuffled.
        let mut characters: Vec<u8> = required.iter().map(|class| class[rng.random_range(0..class.len())]).collect();
        while characters.len() < policy.min_length {
            characters.push(alphabet[rng.random_range(0..alphabet.len())]);
        }
        characters.shuffle(&mut rng);

        let candidate = Secret::new(String::from_utf8(characters).expect("the alphabet is ASCII"));
        if !is_reused(&candidate) {
            return Ok(candidate);
        }
    }
    Err(GeneratorError::OnlyReused { attempts: MAX_ATTEMPTS })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_any(password: &str, class: &[u8]) -> bool {
        password.bytes().any(|byte| class.contains(&byte))
    }

    #[test]
    fn default_password_meets_policy() {
        for _ in 0..200 {
            let password = generate(&PasswordPolicy::default(), |_| false).unwrap();
            let text = password.expose();
            assert_eq!(text.len(), 24);
            assert!(has_any(text, UPPER), "an upper-case letter");
            assert!(has_any(text, LOWER), "lower case");
            assert!(has_any(text, DIGITS), "a digit");
            assert!(has_any(text, SYMBOLS), "a symbol");
        }
    }

    #[test]
    fn password_avoids_quoting_characters() {
        for _ in 0..200 {
            let password = generate(&PasswordPolicy::default(), |_| false).unwrap();
            let unsafe_found = password.expose().chars().find(|c| "\"\\ %+&='()".contains(*c));
            assert_eq!(unsafe_found, None);
        }
    }

    #[test]
    fn passwords_differ() {
        let first = generate(&PasswordPolicy::default(), |_| false).unwrap();
        let second = generate(&PasswordPolicy::default(), |_| false).unwrap();
        assert_ne!(first.expose(), second.expose());
    }

    #[test]
    fn reused_candidate_is_skipped() {
        let rejected = std::cell::RefCell::new(Vec::new());
        let password = generate(&PasswordPolicy::default(), |candidate| {
            let mut seen = rejected.borrow_mut();
            seen.push(candidate.expose().to_string());
            seen.len() < 3
        })
        .unwrap();
        assert_eq!(rejected.borrow().len(), 3);
        assert_eq!(rejected.borrow()[2], password.expose());
    }

    #[test]
    fn endless_reuse_gives_up() {
        let error = generate(&PasswordPolicy::default(), |_| true).unwrap_err();
        assert_eq!(error, GeneratorError::OnlyReused { attempts: MAX_ATTEMPTS });
    }

    #[test]
    fn policy_shorter_than_classes_is_rejected() {
        let policy = PasswordPolicy { min_length: 3, ..PasswordPolicy::default() };
        assert_eq!(generate(&policy, |_| false).unwrap_err(), GeneratorError::TooShort { min_length: 3, classes: 4 });
    }

    #[test]
    fn longer_policy_is_honoured() {
        let policy = PasswordPolicy { min_length: 40, ..PasswordPolicy::default() };
        assert_eq!(generate(&policy, |_| false).unwrap().expose().len(), 40);
    }
}
