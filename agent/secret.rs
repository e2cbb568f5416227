//! A string that must never reach logs, error messages or `Debug` output: passwords and tokens.
//!
//! `Debug` and `Display` print `[redacted]`, so a `Secret` can sit inside any struct that derives
//! `Debug`. [`Secret::expose`] is the only way to read the value; grep for it to audit every use.

use std::fmt;

/// Text printed in place of a secret value.
const REDACTED: &str = "[redacted]";

/// A password or token whose value is only readable through [`Secret::expose`].
///
/// NOTE: the value is not wiped from memory when dropped.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; from here on it prints as `[redacted]`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret value. Never format the result into a log line or an error.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &str = "Invented-Test-Passw0rd";

    #[derive(Debug)]
    #[allow(dead_code)] // The fields are read only through `Debug`.
    struct Account {
        username: String,
        password: Secret,
    }

    fn account() -> Account {
        Account { username: "practice@example.org".to_owned(), password: Secret::new(VALUE) }
    }

    #[test]
    fn debug_prints_redacted() {
        assert_eq!(format!("{:?}", Secret::new(VALUE)), "[redacted]");
    }

    #[test]
    fn display_prints_redacted() {
        assert_eq!(Secret::new(VALUE).to_string(), "[redacted]");
    }

    #[test]
    fn containing_struct_debug_hides_value() {
        let compact = format!("{:?}", account());
        let pretty = format!("{:#?}", account());

        assert!(!compact.contains(VALUE), "{compact}");
        assert!(!pretty.contains(VALUE), "{pretty}");
        assert!(compact.contains("practice@example.org"), "{compact}");
        assert!(compact.contains("[redacted]"), "{compact}");
    }

    #[test]
    fn format_width_hides_value() {
        let padded = format!("{:>40}|{:<40}", Secret::new(VALUE), Secret::new(VALUE));

        assert!(!padded.contains(VALUE), "{padded}");
    }

    #[test]
    fn expose_returns_value() {
        assert_eq!(Secret::from(VALUE.to_owned()).expose(), VALUE);
    }
}
