//! Plain text from the HTML body of an email, for replies and reports that have no text part.
//!
//! A small tag scanner rather than a full HTML parser: it keeps the words and the line breaks
//! that block elements imply, decodes character references, and drops what is not shown
//! (`head`, `style`, `script`, `template`, `title` and comments). Text inside `blockquote`
//! comes out with `> ` in front of each line, as a plain-text client would quote it, so the
//! reply trimmer removes quoted history from HTML and plain text alike.

use mail_parser::decoders::html::add_html_token;

/// Elements whose content is not shown.
const HIDDEN_ELEMENTS: [&str; 5] = ["head", "style", "script", "template", "title"];

/// Elements that start and end on a line of their own.
const BLOCK_ELEMENTS: [&str; 26] = [
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "tr",
];

/// Maximum length of a character reference name after `&`; the longest HTML name,
/// `CounterClockwiseContourIntegral`, has 31 characters.
const MAX_REFERENCE_LEN: usize = 40;

/// Converts HTML to text with `\n` line ends, at most one blank line in a row, and no spaces at
/// line ends. Malformed markup is converted as far as it goes: an unclosed tag ends the text.
pub(super) fn html_to_text(html: &str) -> String {
    let mut writer = TextWriter::default();
    let mut rest = html;

    while let Some(open) = rest.find('<') {
        writer.push_text(&rest[..open]);
        rest = &rest[open..];

        if let Some(after_comment) = rest.strip_prefix("<!--") {
            rest = after_comment.find("-->").map_or("", |end| &after_comment[end + 3..]);
            continue;
        }
        let Some(close) = rest.find('>') else {
            return writer.finish();
        };
        let tag = Tag::parse(&rest[1..close]);
        rest = &rest[close + 1..];

        if !tag.is_closing && HIDDEN_ELEMENTS.contains(&tag.name.as_str()) {
            rest = skip_element_content(rest, &tag.name);
            continue;
        }
        writer.apply_tag(&tag);
    }
    writer.push_text(rest);
    writer.finish()
}

/// Returns what follows the closing tag of `name` (ignoring case), or "" if it is never closed.
/// It reads no further than that tag, so skipping many elements stays linear in the input.
fn skip_element_content<'a>(html: &'a str, name: &str) -> &'a str {
    let mut search_from = 0;
    while let Some(offset) = html[search_from..].find("</") {
        let start = search_from + offset;
        let tag_name = html.as_bytes().get(start + 2..start + 2 + name.len());
        if tag_name.is_some_and(|tag_name| tag_name.eq_ignore_ascii_case(name.as_bytes())) {
            return html[start..].find('>').map_or("", |end| &html[start + end + 1..]);
        }
        search_from = start + 2;
    }
    ""
}

/// The name of a tag, lower-cased, and whether it closes an element.
struct Tag {
    name: String,
    is_closing: bool,
}

impl Tag {
    fn parse(inside: &str) -> Tag {
        let inside = inside.trim_start();
        let (is_closing, inside) = match inside.strip_prefix('/') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, inside),
        };
        let name: String = inside
            .chars()
            .take_while(|character| character.is_ascii_alphanumeric())
            .map(|character| character.to_ascii_lowercase())
            .collect();
        Tag { name, is_closing }
    }
}

/// Builds the text: collapses white space as a browser does, breaks lines at block elements and
/// prefixes lines inside `blockquote`.
#[derive(Default)]
struct TextWriter {
    text: String,
    /// The current line, not yet written to `text`.
    line: String,
    quote_depth: usize,
    /// Inside `pre`, where white space is kept.
    preformatted: bool,
    pending_space: bool,
}

impl TextWriter {
    fn push_text(&mut self, raw: &str) {
        let decoded = decode_references(raw);
        for character in decoded.chars() {
            if self.preformatted {
                if character == '\n' {
                    self.end_line();
                } else if character != '\r' {
                    self.line.push(character);
                }
            } else if character.is_whitespace() {
                self.pending_space = !self.line.is_empty();
            } else {
                if self.pending_space {
                    self.line.push(' ');
                    self.pending_space = false;
                }
                self.line.push(character);
            }
        }
    }

    fn apply_tag(&mut self, tag: &Tag) {
        if !BLOCK_ELEMENTS.contains(&tag.name.as_str()) {
            return;
        }
        // A `br` always ends a line, even an empty one; other blocks only end a line with text.
        if tag.name == "br" || !self.line.is_empty() {
            self.end_line();
        }
        match (tag.name.as_str(), tag.is_closing) {
            ("blockquote", false) => self.quote_depth += 1,
            ("blockquote", true) => self.quote_depth = self.quote_depth.saturating_sub(1),
            ("pre", is_closing) => self.preformatted = !is_closing,
            ("p", true) | ("hr", _) => self.end_line(),
            _ => {}
        }
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let line = line.trim_end();
        if self.quote_depth > 0 {
            self.text.push_str(&"> ".repeat(self.quote_depth));
        }
        self.text.push_str(line);
        self.text.push('\n');
        self.pending_space = false;
    }

    fn finish(mut self) -> String {
        if !self.line.is_empty() {
            self.end_line();
        }
        collapse_blank_lines(&self.text)
    }
}

/// Decodes character references such as `&amp;`, `&pound;`, `&#8217;` and `&#x1F600;`. A
/// non-breaking space becomes a plain space; an unknown or unterminated reference stays as
/// written.
fn decode_references(text: &str) -> String {
    let mut decoded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(ampersand) = rest.find('&') {
        decoded.push_str(&rest[..ampersand]);
        rest = &rest[ampersand..];

        let name_len = rest[1..]
            .char_indices()
            .take_while(|(index, character)| {
                *index < MAX_REFERENCE_LEN && (character.is_ascii_alphanumeric() || *character == '#')
            })
            .count();
        if rest[1 + name_len..].starts_with(';') && name_len > 0 {
            // `rest` is split at the ASCII `&` and `;`, so the reference is valid UTF-8, which
            // `add_html_token` requires.
            add_html_token(&mut decoded, &rest.as_bytes()[..name_len + 2], false);
            rest = &rest[name_len + 2..];
        } else {
            decoded.push('&');
            rest = &rest[1..];
        }
    }
    decoded.push_str(rest);
    decoded.replace('\u{a0}', " ")
}

/// Trims blank lines at both ends and keeps at most one blank line between paragraphs.
fn collapse_blank_lines(text: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for line in text.lines() {
        let is_blank = line.trim().is_empty();
        let previous_blank = lines.last().is_none_or(|previous| previous.trim().is_empty());
        if is_blank && previous_blank {
            continue;
        }
        lines.push(if is_blank { "" } else { line });
    }
    while lines.last().is_some_and(|line| line.is_empty()) {
        lines.pop();
    }
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_readable_text() {
        let cases = [
            ("paragraphs", "<p>Yes please</p><p>Thanks</p>", "Yes please\n\nThanks\n"),
            ("divs", "<div>Yes please</div><div>Thanks</div>", "Yes please\nThanks\n"),
            ("line breaks", "Yes<br>please<br/><br>Jo", "Yes\nplease\n\nJo\n"),
            ("white space collapsed", "  Yes \r\n\t please  ", "Yes please\n"),
            ("inline tags joined", "<b>Yes</b> <i>please</i>", "Yes please\n"),
            ("hidden elements", "<head><title>T</title><style>p{}</style></head><p>Hi</p><script>x<y</script>", "Hi\n"),
            ("comments", "Yes<!-- <p>hidden</p> -->please", "Yesplease\n"),
            ("upper-case tags", "<P>Yes</P><STYLE>p{}</STYLE><BR>No", "Yes\n\nNo\n"),
            ("blockquote", "Yes<blockquote>Reply YES<br>or NO</blockquote>Jo", "Yes\n> Reply YES\n> or NO\nJo\n"),
            ("nested blockquote", "<blockquote>a<blockquote>b</blockquote></blockquote>", "> a\n> > b\n"),
            ("preformatted", "<pre>a  b\n c</pre>d", "a  b\n c\nd\n"),
            ("empty", "", ""),
            ("unclosed tag", "Yes<p class=", "Yes\n"),
            ("unclosed comment", "Yes<!-- no end", "Yes\n"),
            ("unclosed hidden element", "Yes<style>p{}", "Yes\n"),
            ("other closing tags in hidden element", "<style>a</b></sty</STYLE >Yes", "Yes\n"),
        ];
        for (name, html, expected) in cases {
            assert_eq!(html_to_text(html), expected, "case {name}");
        }
    }

    #[test]
    fn references_are_decoded() {
        let cases = [
            ("Thanks &amp; regards", "Thanks & regards"),
            ("&pound;5 &euro;6", "£5 €6"),
            ("I&#8217;m &#x27;ok&#X27;", "I’m 'ok'"),
            ("a&nbsp;b", "a b"),
            ("AT&T and a & b", "AT&T and a & b"),
            ("&unknownentity; &#xZZ; &;", "&unknownentity; &#xZZ; &;"),
            ("&#x110000; &#55296;", "\u{fffd} \u{fffd}"),
            ("caf&eacute;", "café"),
        ];
        for (text, expected) in cases {
            assert_eq!(decode_references(text), expected, "text {text:?}");
        }
    }
}
