//! Bearer tokens for the gRPC API. On first start the agent writes a random admin token to
//! `<data_dir>/admin.token` (mode 0600) for nhsmail-ctl on the same machine. In memory it keeps only a SHA-256
//! hash, and compares callers' tokens against it in constant time.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::credentials::vault::write_new_private_file;
use crate::paths::admin_token_path;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read or create the admin token file {path}: {source}")]
    TokenFile { path: PathBuf, source: std::io::Error },
    #[error("the admin token file {path} is empty; delete it and restart the agent to create a new token")]
    EmptyToken { path: PathBuf },
}

/// The rights a token carries. An `admin` may do everything, including reveal the password. An `operator` manages
/// connectivity, the password and uploads, a `submitter` sends messages and a `viewer` only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Submitter,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Submitter => "submitter",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Returns whether this role may make a call that needs `required`. Submitters and operators each have
    /// rights the other lacks; only admin covers both.
    pub fn allows(self, required: Role) -> bool {
        match (self, required) {
            (Role::Admin, _) => true,
            (_, Role::Viewer) => true,
            (Role::Submitter, Role::Operator) | (Role::Operator, Role::Submitter) => false,
            (held, required) => held >= required,
        }
    }
}

/// The identity a valid token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// The accepted tokens, as hashes.
#[derive(Clone)]
pub struct TokenAuthority {
    admin_hash: [u8; 32],
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TokenAuthority([redacted])")
    }
}

impl TokenAuthority {
    /// Reads the admin token from `data_dir`, creating a new random one (256 bits) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<TokenAuthority, AuthError> {
        let path = admin_token_path(data_dir);
        let file_error = |source| AuthError::TokenFile { path: path.clone(), source };
        let token = match std::fs::read_to_string(&path) {
            Ok(token) => token.trim().to_string(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let token = new_token();
                write_new_private_file(&path, format!("{token}\n").as_bytes()).map_err(file_error)?;
                tracing::info!(path = %path.display(), "created the admin token file");
                token
            }
            Err(error) => return Err(file_error(error)),
        };
        if token.is_empty() {
            return Err(AuthError::EmptyToken { path });
        }
        let mode = std::fs::metadata(&path).map_err(file_error)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "admin token file was readable by others; setting mode 0600");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(file_error)?;
        }
        Ok(TokenAuthority { admin_hash: hash(&token) })
    }

    /// Returns the caller a presented token belongs to, or `None` for an unknown token.
    pub fn verify(&self, presented: &str) -> Option<Caller> {
        let presented = hash(presented.trim());
        let difference = presented.iter().zip(self.admin_hash.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (difference == 0).then(|| Caller { name: "admin".into(), role: Role::Admin })
    }
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_token_verifies_as_admin() {
        let dir = tempfile::tempdir().unwrap();
        let authority = TokenAuthority::load_or_create(dir.path()).unwrap();
        let token = std::fs::read_to_string(admin_token_path(dir.path())).unwrap();
        assert_eq!(authority.verify(&token), Some(Caller { name: "admin".into(), role: Role::Admin }));
    }

    #[test]
    fn roles_allow_their_own_calls_only() {
        let cases = [
            (Role::Admin, Role::Operator, true),
            (Role::Admin, Role::Admin, true),
            (Role::Operator, Role::Admin, false),
            (Role::Operator, Role::Submitter, false),
            (Role::Operator, Role::Viewer, true),
            (Role::Submitter, Role::Operator, false),
            (Role::Submitter, Role::Submitter, true),
            (Role::Viewer, Role::Submitter, false),
            (Role::Viewer, Role::Viewer, true),
        ];
        for (held, required, allowed) in cases {
            assert_eq!(held.allows(required), allowed, "{held:?} calling a {required:?} rpc");
        }
    }

    #[test]
    fn other_token_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let authority = TokenAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(authority.verify("not-the-token"), None);
    }

    #[test]
    fn token_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        TokenAuthority::load_or_create(dir.path()).unwrap();
        let token = std::fs::read_to_string(admin_token_path(dir.path())).unwrap();
        let reloaded = TokenAuthority::load_or_create(dir.path()).unwrap();
        assert!(reloaded.verify(&token).is_some());
    }

    #[test]
    fn token_file_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        TokenAuthority::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(admin_token_path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn debug_hides_hash() {
        let dir = tempfile::tempdir().unwrap();
        let authority = TokenAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(format!("{authority:?}"), "TokenAuthority([redacted])");
    }
}
