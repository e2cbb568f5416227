//! Printing: JSON documents and aligned text tables on stdout, warnings on stderr, and the formatting of times,
//! durations and untrusted text for a terminal.

use std::fmt::Write as _;

use chrono::{DateTime, Local, TimeZone, Utc};
use nhsmail_agent::proto::Warning;
use prost_types::Timestamp;
use serde_json::Value;

use crate::cli::OutputFormat;
use crate::convert::time_of;

/// Prints a result on stdout in the chosen format. The table is built only when it is printed.
pub fn print_result(format: OutputFormat, json: impl FnOnce() -> Value, table: impl FnOnce() -> String) {
    match format {
        OutputFormat::Json => {
            // serde_json fails only on a map with non-string keys or a failing `Serialize`, and a `Value` has neither.
            let text = serde_json::to_string_pretty(&json()).expect("a JSON value always serialises");
            write_stdout(&format!("{text}\n"));
        }
        OutputFormat::Table => write_stdout(&table()),
    }
}

/// Writes `text` to stdout. A closed stdout (`nhsmail-ctl messages list | head`) ends the process quietly with
/// exit code 0, as SIGPIPE would, while SIGPIPE itself stays ignored so that a connection the agent closes is an
/// error rather than a silent death.
pub fn write_stdout(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => {
            eprintln!("error: cannot write to stdout: {error}");
            std::process::exit(i32::from(crate::error::exit::AGENT_ERROR));
        }
    }
}

/// Prints each warning on stderr as `warning: <message>`, keeping stdout clean for JSON.
pub fn print_warnings(warnings: &[Warning]) {
    for warning in warnings {
        eprintln!("warning: {}", clean_line(&warning.message));
    }
}

/// Label and value rows, with the values aligned in one column.
#[derive(Default)]
pub struct Details {
    rows: Vec<(String, String)>,
}

impl Details {
    pub fn new() -> Details {
        Details::default()
    }

    /// Adds a row. Control characters other than line breaks are replaced in the value.
    pub fn row(&mut self, label: &str, value: impl AsRef<str>) -> &mut Details {
        self.rows.push((label.to_string(), clean_text(value.as_ref())));
        self
    }

    /// Renders the rows. A value of several lines continues under its first line.
    pub fn render(&self) -> String {
        let width = self.rows.iter().map(|(label, _)| label.chars().count()).max().unwrap_or(0);
        let mut text = String::new();

        for (label, value) in &self.rows {
            let mut lines = value.lines();
            let first = lines.next().unwrap_or("");
            let _ = writeln!(text, "{label:<width$}  {first}");
            for line in lines {
                let _ = writeln!(text, "{:<width$}  {line}", "");
            }
        }
        text
    }
}

/// Columns with a header row, each column as wide as its widest cell.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: Vec<&'static str>) -> Table {
        Table { headers, rows: Vec::new() }
    }

    /// Adds a row. Cells are made single-line and free of control characters.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|cell| clean_line(cell)).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|header| header.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }

        let mut text = String::new();
        let headers: Vec<String> = self.headers.iter().map(|header| header.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                let _ = write!(line, "{cell:<width$}  ");
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Formats a proto timestamp in this computer's local time zone, or `when_unset`.
pub fn local_time(timestamp: Option<&Timestamp>, when_unset: &str) -> String {
    match time_of(timestamp) {
        Some(time) => time_in_zone(time, &Local),
        None => when_unset.to_string(),
    }
}

pub fn time_in_zone<Z: TimeZone>(time: DateTime<Utc>, zone: &Z) -> String
where
    Z::Offset: std::fmt::Display,
{
    time.with_timezone(zone).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Formats seconds as days, hours, minutes and seconds, leaving out leading zero units: "2d 3h 4m 5s".
pub fn duration(seconds: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m")];
    let mut text = String::new();
    let mut rest = seconds;

    for (size, suffix) in units {
        if rest >= size || !text.is_empty() {
            let _ = write!(text, "{}{suffix} ", rest / size);
            rest %= size;
        }
    }
    let _ = write!(text, "{rest}s");
    text
}

pub fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// Describes the sending gate: "running" or "paused: <reason>".
pub fn sending_state(paused: bool, reason: &str) -> String {
    match (paused, reason.is_empty()) {
        (false, _) => "running".to_string(),
        (true, true) => "paused".to_string(),
        (true, false) => format!("paused: {}", clean_line(reason)),
    }
}

/// Makes untrusted text (patient replies, server errors) safe to print on one line: line breaks become spaces and
/// other control characters, which could drive the terminal, become U+FFFD.
pub fn clean_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// Like `clean_line`, but keeps line breaks, for showing a whole text.
pub fn clean_text(text: &str) -> String {
    text.lines().map(clean_line).collect::<Vec<_>>().join("\n")
}

/// Shortens a text for a table column to at most `max_chars` characters, ending with "…" when cut.
pub fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let prefix: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    format!("{prefix}…")
}

/// Returns `text`, or "-" when it is empty.
pub fn or_dash(text: &str) -> String {
    if text.is_empty() { "-".to_string() } else { text.to_string() }
}

#[cfg(test)]
mod tests {
    use chrono::FixedOffset;

    use super::*;

    #[test]
    fn table_columns_are_aligned() {
        let mut table = Table::new(vec!["ID", "STATUS"]);
        table.row(vec!["a".into(), "queued".into()]);
        table.row(vec!["abcdef".into(), "sent".into()]);

        assert_eq!(table.render(), "ID      STATUS\na       queued\nabcdef  sent\n");
    }

    #[test]
    fn table_cells_lose_line_breaks() {
        let mut table = Table::new(vec!["TEXT"]);
        table.row(vec!["line one\nline two\u{1b}[2J".into()]);

        assert_eq!(table.render(), "TEXT\nline one line two\u{FFFD}[2J\n");
    }

    #[test]
    fn details_values_are_aligned() {
        let text = Details::new().row("Version", "0.1.0").row("Uptime", "5s").render();
        assert_eq!(text, "Version  0.1.0\nUptime   5s\n");
    }

    #[test]
    fn details_continue_multiline_values() {
        let text = Details::new().row("Text", "first\nsecond").render();
        assert_eq!(text, "Text  first\n      second\n");
    }

    #[test]
    fn duration_leaves_out_leading_zero_units() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3_600), "1h 0m 0s");
        assert_eq!(duration(2 * 86_400 + 3 * 3_600 + 4 * 60 + 5), "2d 3h 4m 5s");
    }

    #[test]
    fn time_shown_in_given_zone() {
        let time = DateTime::parse_from_rfc3339("2026-07-01T09:30:00Z").unwrap().to_utc();
        let british_summer_time = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(time_in_zone(time, &british_summer_time), "2026-07-01 10:30:00");
    }

    #[test]
    fn sending_state_includes_reason() {
        assert_eq!(sending_state(false, "ignored"), "running");
        assert_eq!(sending_state(true, "password rejected"), "paused: password rejected");
    }

    #[test]
    fn truncate_marks_cut_text() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("a longer text", 6), "a lon…");
    }
}
