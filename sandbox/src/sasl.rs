//! Decoding of the SASL mechanisms both servers accept: PLAIN (RFC 4616), LOGIN (the
//! de facto mechanism of two base64 prompts) and XOAUTH2 (Google's and Microsoft's format:
//! `user=` name `^A` `auth=Bearer ` token `^A^A`, base64-encoded).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("invalid base64 in the SASL response")]
    Base64,
    #[error("SASL response is not UTF-8")]
    Utf8,
    #[error("malformed {0} response")]
    Malformed(&'static str),
}

/// Credentials the client presented: a password or a bearer token, for a user name.
pub enum Credentials {
    Password { username: String, password: String },
    Token { username: String, token: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Password { username, .. } => {
                write!(f, "Password {{ username: {username:?}, .. }}")
            }
            Credentials::Token { username, .. } => {
                write!(f, "Token {{ username: {username:?}, .. }}")
            }
        }
    }
}

impl Credentials {
    pub fn username(&self) -> &str {
        match self {
            Credentials::Password { username, .. } | Credentials::Token { username, .. } => username,
        }
    }
}

/// Decodes base64 into UTF-8 text; `=` alone is the empty response (RFC 4954 section 4).
pub fn decode_text(encoded: &[u8]) -> Result<String, SaslError> {
    let encoded = encoded.trim_ascii();
    if encoded == b"=" {
        return Ok(String::new());
    }
    let bytes = STANDARD.decode(encoded).map_err(|_| SaslError::Base64)?;
    String::from_utf8(bytes).map_err(|_| SaslError::Utf8)
}

pub fn encode(text: &str) -> String {
    STANDARD.encode(text)
}

/// Decodes a PLAIN response: `[authzid] NUL authcid NUL password`. An authorisation
/// identity other than the user's own is rejected, since the account cannot act as others.
pub fn decode_plain(encoded: &[u8]) -> Result<Credentials, SaslError> {
    let text = decode_text(encoded)?;
    let mut fields = text.split('\0');
    let (Some(authzid), Some(username), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(SaslError::Malformed("PLAIN"));
    };
    if username.is_empty() || (!authzid.is_empty() && !authzid.eq_ignore_ascii_case(username)) {
        return Err(SaslError::Malformed("PLAIN"));
    }
    Ok(Credentials::Password { username: username.to_string(), password: password.to_string() })
}

/// Decodes an XOAUTH2 initial response.
pub fn decode_xoauth2(encoded: &[u8]) -> Result<Credentials, SaslError> {
    let text = decode_text(encoded)?;
    let mut username = None;
    let mut token = None;
    for field in text.split('\x01').filter(|field| !field.is_empty()) {
        if let Some(value) = field.strip_prefix("user=") {
            username = Some(value);
        } else if let Some(value) = field.strip_prefix("auth=") {
            let (scheme, value) = value.split_once(' ').ok_or(SaslError::Malformed("XOAUTH2"))?;
            if !scheme.eq_ignore_ascii_case("Bearer") {
                return Err(SaslError::Malformed("XOAUTH2"));
            }
            token = Some(value.trim());
        }
    }
    match (username, token) {
        (Some(username), Some(token)) if !username.is_empty() && !token.is_empty() => {
            Ok(Credentials::Token { username: username.to_string(), token: token.to_string() })
        }
        _ => Err(SaslError::Malformed("XOAUTH2")),
    }
}

/// The base64 JSON challenge an XOAUTH2 server sends after a rejected token; the client
/// replies with an empty line and the server then fails the exchange.
pub fn xoauth2_error_challenge() -> String {
    encode(r#"{"status":"401","schemes":"bearer","scope":"https://outlook.office365.com/.default"}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decodes_user_and_password() {
        let encoded = encode("\0practice.sms@example.org\0secret-Password-1");
        let Credentials::Password { username, password } = decode_plain(encoded.as_bytes()).unwrap() else {
            panic!("expected a password");
        };
        assert_eq!(username, "practice.sms@example.org");
        assert_eq!(password, "secret-Password-1");
    }

    #[test]
    fn plain_rejects_other_authzid() {
        let encoded = encode("boss@example.org\0practice.sms@example.org\0pw");
        assert_eq!(decode_plain(encoded.as_bytes()).unwrap_err(), SaslError::Malformed("PLAIN"));
    }

    #[test]
    fn xoauth2_decodes_user_and_token() {
        let encoded = encode("user=practice.sms@example.org\x01auth=Bearer abc.def\x01\x01");
        let Credentials::Token { username, token } = decode_xoauth2(encoded.as_bytes()).unwrap() else {
            panic!("expected a token");
        };
        assert_eq!(username, "practice.sms@example.org");
        assert_eq!(token, "abc.def");
    }

    #[test]
    fn xoauth2_rejects_missing_token() {
        let encoded = encode("user=practice.sms@example.org\x01\x01");
        assert_eq!(decode_xoauth2(encoded.as_bytes()).unwrap_err(), SaslError::Malformed("XOAUTH2"));
    }
}
