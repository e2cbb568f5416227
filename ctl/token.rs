//! The bearer token: where it comes from, how it is checked, and the interceptor that sends it as
//! `authorization: Bearer <token>` on every call. The token never appears in output, errors or `Debug`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::CtlError;

/// Environment variable that contains the token itself.
pub const TOKEN_ENV: &str = "NHSMAIL_TOKEN";

/// The `authorization` header value, marked sensitive so that tonic and hyper do not log it.
#[derive(Clone)]
pub struct BearerToken {
    header: AsciiMetadataValue,
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken([redacted])")
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.header.clone());
        Ok(request)
    }
}

impl BearerToken {
    /// Builds the header from a raw token, trimming surrounding whitespace. `origin` names where the token came from,
    /// for the error message.
    fn parse(raw: &str, origin: &str) -> Result<BearerToken, CtlError> {
        let token = raw.trim();
        if token.is_empty() {
            return Err(CtlError::TokenFile { path: origin.to_string(), reason: "it is empty".to_string() });
        }

        let mut header: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| CtlError::TokenInvalid { origin: origin.to_string() })?;
        header.set_sensitive(true);
        Ok(BearerToken { header })
    }
}

/// Loads the token: from `token_file` when given, else from `env_token` (the value of NHSMAIL_TOKEN) when set and
/// not empty, else from `default_file`.
pub fn load(
    token_file: Option<&Path>,
    env_token: Option<String>,
    default_file: impl FnOnce() -> PathBuf,
) -> Result<BearerToken, CtlError> {
    if let Some(path) = token_file {
        return read_file(path);
    }
    if let Some(token) = env_token.filter(|token| !token.trim().is_empty()) {
        return BearerToken::parse(&token, TOKEN_ENV);
    }
    read_file(&default_file())
}

fn read_file(path: &Path) -> Result<BearerToken, CtlError> {
    let path_text = path.display().to_string();
    let contents = std::fs::read_to_string(path)
        .map_err(|err| CtlError::TokenFile { path: path_text.clone(), reason: read_failure(&err) })?;
    BearerToken::parse(&contents, &path_text)
}

fn read_failure(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::InvalidData => "it is not UTF-8 text".to_string(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(token: &BearerToken) -> &str {
        token.header.to_str().unwrap()
    }

    fn unused_default() -> PathBuf {
        panic!("the default token file should not be read")
    }

    #[test]
    fn token_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        std::fs::write(&path, "  abc123\n").unwrap();

        let token = load(Some(&path), None, unused_default).unwrap();

        assert_eq!(header_of(&token), "Bearer abc123");
    }

    #[test]
    fn token_file_wins_over_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        std::fs::write(&path, "from-file").unwrap();

        let token = load(Some(&path), Some("from-env".into()), unused_default).unwrap();

        assert_eq!(header_of(&token), "Bearer from-file");
    }

    #[test]
    fn environment_wins_over_default_file() {
        let token = load(None, Some(" from-env\n".into()), unused_default).unwrap();
        assert_eq!(header_of(&token), "Bearer from-env");
    }

    #[test]
    fn empty_environment_falls_back_to_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        std::fs::write(&path, "from-default").unwrap();

        let token = load(None, Some("  ".into()), || path.clone()).unwrap();

        assert_eq!(header_of(&token), "Bearer from-default");
    }

    #[test]
    fn missing_file_error_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.token");

        let message = load(None, None, || path.clone()).unwrap_err().to_string();

        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("no such file"), "{message}");
        assert!(message.contains("--token-file"), "{message}");
    }

    #[test]
    fn empty_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        std::fs::write(&path, "\n").unwrap();

        let message = load(Some(&path), None, unused_default).unwrap_err().to_string();

        assert!(message.contains("it is empty"), "{message}");
    }

    #[test]
    fn invalid_token_error_hides_token() {
        let message = load(None, Some("secret\u{7}token".into()), unused_default).unwrap_err().to_string();
        assert!(message.contains(TOKEN_ENV), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn debug_output_is_redacted() {
        let token = load(None, Some("secret-token".into()), unused_default).unwrap();
        assert_eq!(format!("{token:?}"), "BearerToken([redacted])");
    }
}
