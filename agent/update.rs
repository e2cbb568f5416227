//! The software update feed: the upload cycle reads a small JSON document from `[agent] update_feed` (a file or an
//! https:// URL) and compares its latest version with this agent's. Nothing is downloaded or installed.
//!
//! The document: `{"latest_version": "0.2.0", "notes": "What changed, in one or two sentences."}`. `notes` is
//! optional; other fields are ignored so the feed can grow.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::Method;
use hyper::header::ACCEPT;
use serde::Deserialize;
use url::Url;

use crate::config::UpdateFeed;
use crate::transport::TlsSettings;
use crate::transport::http::{HttpEndpoint, HttpError};

/// Maximum size of a feed document, so a wrong URL cannot fill memory.
const MAX_FEED_BYTES: usize = 64 * 1024;
/// Maximum length of the notes kept from a feed, in characters.
const MAX_NOTES_CHARS: usize = 500;

/// The outcome of the last successful check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateInfo {
    pub latest_version: String,
    pub notes: String,
    /// Whether `latest_version` is newer than the running agent's version.
    pub available: bool,
    pub checked_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateFeedError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{feed} is not a valid update feed: {reason}")]
    Invalid { feed: String, reason: String },
}

#[derive(Deserialize)]
struct FeedDocument {
    latest_version: String,
    #[serde(default)]
    notes: String,
}

/// Reads the feed and compares its latest version with `current`.
pub async fn check(
    feed: &UpdateFeed,
    current: &str,
    tls: &TlsSettings,
    timeout: Duration,
) -> Result<UpdateInfo, UpdateFeedError> {
    let document = match feed {
        UpdateFeed::File(path) => {
            let path_text = path.display().to_string();
            tokio::fs::read(path)
                .await
                .map_err(|error| UpdateFeedError::Read { path: path_text, reason: error.kind().to_string() })?
        }
        UpdateFeed::Url(url) => {
            fetch(url, tls, timeout).await.map_err(|reason| UpdateFeedError::Fetch { url: url.to_string(), reason })?
        }
    };
    parse(&document, current, Utc::now()).map_err(|reason| UpdateFeedError::Invalid { feed: feed.to_string(), reason })
}

/// Parses a feed document and decides whether its version is newer than `current`.
pub fn parse(document: &[u8], current: &str, now: DateTime<Utc>) -> Result<UpdateInfo, String> {
    if document.len() > MAX_FEED_BYTES {
        return Err(format!("it is larger than {MAX_FEED_BYTES} bytes"));
    }
    let feed: FeedDocument = serde_json::from_slice(document).map_err(|error| {
        format!("{error}; expected JSON such as {{\"latest_version\": \"0.2.0\", \"notes\": \"...\"}}")
    })?;
    let latest = feed.latest_version.trim();
    let latest_parsed = Version::parse(latest)
        .ok_or_else(|| format!("latest_version {latest:?} is not a version such as \"0.2.0\""))?;
    let current_parsed =
        Version::parse(current).ok_or_else(|| format!("this agent's version {current:?} is invalid"))?;

    let notes: String = feed.notes.chars().filter(|c| !c.is_control() || *c == '\n').take(MAX_NOTES_CHARS).collect();
    Ok(UpdateInfo {
        latest_version: latest.to_string(),
        notes,
        available: latest_parsed > current_parsed,
        checked_at: now,
    })
}

/// A version of the form MAJOR.MINOR.PATCH with an optional `-pre-release` part, ordered as semantic versioning
/// orders them except that pre-release parts compare as plain text.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Version {
    numbers: [u64; 3],
    /// `true` for a release, so a release sorts after its pre-releases.
    release: bool,
    pre_release: String,
}

impl Version {
    fn parse(text: &str) -> Option<Version> {
        let text = text.strip_prefix('v').unwrap_or(text);
        let (core, pre_release) = match text.split_once('-') {
            Some((core, pre)) if !pre.is_empty() => (core, pre.to_string()),
            Some(_) => return None,
            None => (text, String::new()),
        };
        let mut numbers = [0u64; 3];
        let mut parts = core.split('.');
        for number in &mut numbers {
            let part = parts.next()?;
            if part.is_empty() || !part.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            *number = part.parse().ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        Some(Version { numbers, release: pre_release.is_empty(), pre_release })
    }
}

/// Fetches the document with one HTTP/1.1 GET within `timeout`, over TLS for https://. Returns the body of a 200
/// response.
async fn fetch(url: &Url, tls: &TlsSettings, timeout: Duration) -> Result<Vec<u8>, String> {
    let endpoint = HttpEndpoint::new(url, tls, "[agent] update_feed").map_err(|error| error.to_string())?;
    let request = endpoint
        .request(Method::GET, &[(ACCEPT, "application/json")], Bytes::new())
        .map_err(|error| error.to_string())?;
    let response = endpoint.send(request, MAX_FEED_BYTES, timeout).await.map_err(fetch_error)?;
    if response.status != http::StatusCode::OK {
        return Err(format!("the server responded {}", response.status));
    }
    Ok(response.body.to_vec())
}

/// Describes a failed fetch without the server, which the caller's message names in the URL.
fn fetch_error(error: HttpError) -> String {
    match error {
        HttpError::Connect { source, .. } => source.kind().to_string(),
        HttpError::TlsHandshake { source, .. } => source.to_string(),
        HttpError::Http { source, .. } => source.to_string(),
        HttpError::BodyTooLarge { limit, .. } => format!("the body is larger than {limit} bytes"),
        HttpError::BodyUnreadable { source, .. } => {
            format!("cannot read a body of at most {MAX_FEED_BYTES} bytes: {source}")
        }
        HttpError::Timeout { after, .. } => format!("timed out after {} seconds", after.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn available(document: &str, current: &str) -> bool {
        parse(document.as_bytes(), current, Utc::now()).unwrap().available
    }

    #[test]
    fn newer_version_is_available() {
        assert!(available(r#"{"latest_version": "0.2.0"}"#, "0.1.0"));
        assert!(available(r#"{"latest_version": "0.1.10"}"#, "0.1.9"));
        assert!(available(r#"{"latest_version": "1.0.0"}"#, "0.9.9"));
    }

    #[test]
    fn same_or_older_version_is_not_available() {
        assert!(!available(r#"{"latest_version": "0.1.0"}"#, "0.1.0"));
        assert!(!available(r#"{"latest_version": "0.0.9"}"#, "0.1.0"));
    }

    #[test]
    fn release_is_newer_than_pre_release() {
        assert!(available(r#"{"latest_version": "0.2.0"}"#, "0.2.0-rc.1"));
        assert!(!available(r#"{"latest_version": "0.2.0-rc.1"}"#, "0.2.0"));
    }

    #[test]
    fn notes_are_kept() {
        let info = parse(br#"{"latest_version": "0.2.0", "notes": "Fixes receipts."}"#, "0.1.0", Utc::now()).unwrap();
        assert_eq!(info.latest_version, "0.2.0");
        assert_eq!(info.notes, "Fixes receipts.");
    }

    #[test]
    fn invalid_json_names_expected_shape() {
        let reason = parse(b"{not json", "0.1.0", Utc::now()).unwrap_err();
        assert!(reason.contains("latest_version"), "{reason}");
    }

    #[test]
    fn invalid_version_is_rejected() {
        for bad in ["", "latest", "1.2", "1.2.3.4", "1.x.3", "1.2.3-"] {
            let document = format!(r#"{{"latest_version": "{bad}"}}"#);
            let reason = parse(document.as_bytes(), "0.1.0", Utc::now()).unwrap_err();
            assert!(reason.contains("is not a version"), "{bad}: {reason}");
        }
    }
}
