//! Tokenising IMAP command lines (RFC 3501 section 9): atoms, quoted strings, literals and
//! parenthesised lists. A fetch attribute such as `BODY.PEEK[HEADER.FIELDS (A B)]<0.10>`
//! is one atom, brackets and all. Literals arrive already in place as `{n}\r\n` followed by
//! their n octets, because the session reads them into the command's bytes.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Atom(String),
    /// A quoted string or a literal.
    String(Vec<u8>),
    List(Vec<Token>),
}

impl Token {
    /// Returns an atom's or string's text (lossy for non-UTF-8 strings).
    pub fn text(&self) -> Option<String> {
        match self {
            Token::Atom(atom) => Some(atom.clone()),
            Token::String(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            Token::List(_) => None,
        }
    }

    pub fn atom_upper(&self) -> Option<String> {
        match self {
            Token::Atom(atom) => Some(atom.to_ascii_uppercase()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("invalid literal")]
    InvalidLiteral,
    #[error("unbalanced parentheses or brackets")]
    Unbalanced,
    #[error("unexpected character {0:?}")]
    Unexpected(char),
}

/// Splits a whole command (tag, name and arguments) into tokens.
pub fn tokenize(input: &[u8]) -> Result<Vec<Token>, ParseError> {
    let mut parser = Parser { input, pos: 0 };
    let tokens = parser.tokens(false)?;
    if parser.pos < input.len() {
        return Err(ParseError::Unbalanced);
    }
    Ok(tokens)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn tokens(&mut self, in_list: bool) -> Result<Vec<Token>, ParseError> {
        let mut tokens = Vec::new();
        loop {
            while self.peek() == Some(b' ') {
                self.pos += 1;
            }
            match self.peek() {
                None if in_list => return Err(ParseError::Unbalanced),
                None => return Ok(tokens),
                Some(b')') if in_list => {
                    self.pos += 1;
                    return Ok(tokens);
                }
                Some(b')') => return Err(ParseError::Unbalanced),
                Some(b'(') => {
                    self.pos += 1;
                    tokens.push(Token::List(self.tokens(true)?));
                }
                Some(b'"') => tokens.push(self.quoted()?),
                Some(b'{') => tokens.push(self.literal()?),
                Some(_) => tokens.push(self.atom()?),
            }
        }
    }

    fn quoted(&mut self) -> Result<Token, ParseError> {
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r' | b'\n') => return Err(ParseError::UnterminatedQuote),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Token::String(bytes));
                }
                Some(b'\\') => {
                    let escaped = self.input.get(self.pos + 1).copied();
                    match escaped {
                        Some(byte @ (b'"' | b'\\')) => bytes.push(byte),
                        _ => return Err(ParseError::UnterminatedQuote),
                    }
                    self.pos += 2;
                }
                Some(byte) => {
                    bytes.push(byte);
                    self.pos += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> Result<Token, ParseError> {
        let rest = &self.input[self.pos..];
        let close = rest.iter().position(|b| *b == b'}').ok_or(ParseError::InvalidLiteral)?;
        let digits = std::str::from_utf8(&rest[1..close]).map_err(|_| ParseError::InvalidLiteral)?;
        let len: usize = digits.trim_end_matches('+').parse().map_err(|_| ParseError::InvalidLiteral)?;
        if rest.get(close + 1..close + 3) != Some(b"\r\n") {
            return Err(ParseError::InvalidLiteral);
        }
        let start = self.pos + close + 3;
        let bytes = self.input.get(start..start + len).ok_or(ParseError::InvalidLiteral)?.to_vec();
        self.pos = start + len;
        Ok(Token::String(bytes))
    }

    fn atom(&mut self) -> Result<Token, ParseError> {
        let start = self.pos;
        let mut bracket_depth = 0usize;
        while let Some(byte) = self.peek() {
            match byte {
                b'[' => bracket_depth += 1,
                b']' if bracket_depth > 0 => bracket_depth -= 1,
                b' ' | b'(' | b')' if bracket_depth == 0 => break,
                b'"' | b'{' if bracket_depth == 0 => {
                    return Err(ParseError::Unexpected(byte as char));
                }
                0..=0x1f | 0x7f => return Err(ParseError::Unexpected(byte as char)),
                _ => {}
            }
            self.pos += 1;
        }
        if bracket_depth > 0 {
            return Err(ParseError::Unbalanced);
        }
        let atom = String::from_utf8_lossy(&self.input[start..self.pos]).into_owned();
        Ok(Token::Atom(atom))
    }
}

/// Returns the length of a literal announced at the end of `line` (`{n}` or `{n+}`) and
/// whether it is non-synchronising (LITERAL+, RFC 7888).
pub fn trailing_literal(line: &[u8]) -> Option<(usize, bool)> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|b| *b == b'{')?;
    let digits = &body[open + 1..];
    let (digits, non_sync) = match digits.strip_suffix(b"+") {
        Some(digits) => (digits, true),
        None => (digits, false),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((len, non_sync))
}

/// Returns `text` as an IMAP quoted string, or as a literal when it cannot be quoted.
pub fn string(bytes: &[u8]) -> Vec<u8> {
    let quotable = bytes.len() < 1024 && bytes.iter().all(|b| !matches!(b, b'\r' | b'\n' | 0) && b.is_ascii());
    if quotable {
        let mut out = vec![b'"'];
        for byte in bytes {
            if matches!(byte, b'"' | b'\\') {
                out.push(b'\\');
            }
            out.push(*byte);
        }
        out.push(b'"');
        out
    } else {
        literal(bytes)
    }
}

pub fn literal(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("{{{}}}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out
}

/// Returns a string or NIL.
pub fn nstring(bytes: Option<&[u8]>) -> Vec<u8> {
    bytes.map_or_else(|| b"NIL".to_vec(), string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(text: &str) -> Token {
        Token::Atom(text.to_string())
    }

    #[test]
    fn tokenize_mixed_command() {
        let tokens = tokenize(b"a1 LOGIN \"user@example.org\" {3}\r\np\"w").unwrap();
        assert_eq!(
            tokens,
            vec![
                atom("a1"),
                atom("LOGIN"),
                Token::String(b"user@example.org".to_vec()),
                Token::String(b"p\"w".to_vec()),
            ]
        );
    }

    #[test]
    fn fetch_section_is_one_atom() {
        let tokens = tokenize(b"a UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.10>)").unwrap();
        let Token::List(items) = &tokens[4] else {
            panic!("expected a list, got {:?}", tokens[4]);
        };
        assert_eq!(items[1], atom("BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.10>"));
    }

    #[test]
    fn trailing_literal_forms() {
        assert_eq!(trailing_literal(b"a LOGIN {5}"), Some((5, false)));
        assert_eq!(trailing_literal(b"a APPEND INBOX {12+}"), Some((12, true)));
        assert_eq!(trailing_literal(b"a NOOP"), None);
    }

    #[test]
    fn string_quotes_or_uses_literal() {
        assert_eq!(string(b"a\"b"), b"\"a\\\"b\"".to_vec());
        assert_eq!(string(b"a\r\nb"), b"{4}\r\na\r\nb".to_vec());
    }
}
