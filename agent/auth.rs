//! Bearer tokens for the gRPC API, each with a name and a role.
//!
//! A token reads `<id>.<secret>`. The id finds the token's row in the database. The row contains a random salt and
//! SHA-256(salt, secret), never the secret itself. Every call looks its token up in the database, so a token
//! revoked with `nhsmail-agent token revoke` fails at once, without a restart. On first start the agent creates a
//! local admin token in `<data_dir>/admin.token` (mode 0600) for nhsmail-ctl on the same machine.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use chrono::Utc;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::credentials::vault::write_new_private_file;
use crate::paths::admin_token_path;
use crate::secret::Secret;
use crate::store::{Store, StoreError, TokenRecord};

/// Name of the token the agent keeps in `admin.token`.
pub const LOCAL_ADMIN_NAME: &str = "admin";

/// Maximum length of a token name, in characters.
const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read or write the admin token file {path}: {source}")]
    TokenFile { path: PathBuf, source: std::io::Error },
    #[error("the admin token file {path} is empty; delete it and restart the agent to create a new token")]
    EmptyToken { path: PathBuf },
    #[error("invalid token name {name:?}: use 1 to {MAX_NAME_CHARS} letters, digits, '.', '_' or '-'")]
    InvalidName { name: String },
    #[error("invalid role {value:?}: expected admin, operator, submitter or viewer")]
    InvalidRole { value: String },
    #[error(transparent)]
    Store(#[from] StoreError),
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

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(value: &str) -> Result<Role, AuthError> {
        match value {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "submitter" => Ok(Role::Submitter),
            "viewer" => Ok(Role::Viewer),
            _ => Err(AuthError::InvalidRole { value: value.to_owned() }),
        }
    }
}

/// A token just created: the only time its full text exists outside the caller's hands.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: Secret,
    pub record: TokenRecord,
}

/// Creates, checks, lists and revokes tokens over the database.
#[derive(Clone)]
pub struct TokenAuthority {
    store: Store,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TokenAuthority([redacted])")
    }
}

impl TokenAuthority {
    pub fn new(store: Store) -> TokenAuthority {
        TokenAuthority { store }
    }

    /// Creates a token with a 256-bit random secret and stores its salted hash.
    pub async fn create(&self, name: &str, role: Role) -> Result<IssuedToken, AuthError> {
        check_name(name)?;
        let id = hex::encode(random_bytes::<8>());
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let salt = random_bytes::<16>().to_vec();
        let record = TokenRecord {
            hash: salted_hash(&salt, &secret).to_vec(),
            id: id.clone(),
            name: name.to_owned(),
            role: role.as_str().to_owned(),
            salt,
            created_at: Utc::now(),
            revoked_at: None,
        };
        self.store.insert_token(record.clone()).await?;
        Ok(IssuedToken { token: Secret::new(format!("{id}.{secret}")), record })
    }

    /// Returns the caller a presented token belongs to, or `None` for a malformed, unknown or revoked token.
    pub async fn verify(&self, presented: &str) -> Result<Option<Caller>, AuthError> {
        let Some((id, secret)) = presented.trim().split_once('.') else { return Ok(None) };
        if id.is_empty() || id.len() > 32 || !id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Some(record) = self.store.find_token(id).await? else { return Ok(None) };
        let expected = salted_hash(&record.salt, secret);
        let difference = expected
            .iter()
            .zip(record.hash.iter())
            .fold(u8::from(record.hash.len() != 32), |acc, (a, b)| acc | (a ^ b));
        if difference != 0 || record.revoked_at.is_some() {
            return Ok(None);
        }
        let role = record.role.parse::<Role>()?;
        Ok(Some(Caller { name: record.name, role }))
    }

    /// Returns every token, revoked ones included, oldest first.
    pub async fn list(&self) -> Result<Vec<TokenRecord>, AuthError> {
        Ok(self.store.list_tokens().await?)
    }

    /// Revokes the active token named `name`; calls with it fail from the next call on.
    pub async fn revoke(&self, name: &str) -> Result<TokenRecord, AuthError> {
        Ok(self.store.revoke_token(name, Utc::now()).await?)
    }

    /// Makes sure `<data_dir>/admin.token` contains a working admin token with mode 0600.
    ///
    /// Creates the file on first start, and again after someone deleted it (revoking the token it contained). A file in
    /// the format before roles, without an id, is replaced by a new token. A file whose token was revoked is left
    /// alone with a warning, so a restart never brings a revoked token back.
    pub async fn ensure_local_admin(&self, data_dir: &Path) -> Result<(), AuthError> {
        let path = admin_token_path(data_dir);
        let file_error = |source| AuthError::TokenFile { path: path.clone(), source };
        let existing = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(file_error(error)),
        };

        match existing {
            Some(token) if token.is_empty() => return Err(AuthError::EmptyToken { path }),
            Some(token) if token.contains('.') => {
                if self.verify(&token).await?.is_none() {
                    tracing::warn!(
                        path = %path.display(),
                        "the admin token file holds a revoked or unknown token; delete the file and restart the agent to create a new one"
                    );
                }
            }
            Some(_) => {
                self.replace_local_admin(&path).await?;
                tracing::info!(path = %path.display(), "replaced the admin token file with a token in the current format");
            }
            None => {
                self.replace_local_admin(&path).await?;
                tracing::info!(path = %path.display(), "created the admin token file");
            }
        }

        let mode = std::fs::metadata(&path).map_err(file_error)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "admin token file was readable by others; setting mode 0600");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(file_error)?;
        }
        Ok(())
    }

    /// Revokes any active local admin token, creates a new one and writes it to `path` through a new file with
    /// mode 0600, renamed into place.
    async fn replace_local_admin(&self, path: &Path) -> Result<(), AuthError> {
        let file_error = |source| AuthError::TokenFile { path: path.to_owned(), source };
        match self.store.revoke_token(LOCAL_ADMIN_NAME, Utc::now()).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        let issued = self.create(LOCAL_ADMIN_NAME, Role::Admin).await?;
        let temporary = path.with_extension("token.new");
        match std::fs::remove_file(&temporary) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(file_error(error)),
        }
        write_new_private_file(&temporary, format!("{}\n", issued.token.expose()).as_bytes()).map_err(file_error)?;
        std::fs::rename(&temporary, path).map_err(file_error)?;
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), AuthError> {
    let allowed = |character: char| character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-');
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(allowed) {
        return Err(AuthError::InvalidName { name: name.to_owned() });
    }
    Ok(())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn salted_hash(salt: &[u8], secret: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(secret.as_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(dir: &Path) -> TokenAuthority {
        TokenAuthority::new(Store::open(crate::store::database_path(dir)).unwrap())
    }

    fn file_token(dir: &Path) -> String {
        std::fs::read_to_string(admin_token_path(dir)).unwrap().trim().to_owned()
    }

    #[tokio::test]
    async fn created_token_verifies_with_role() {
        let dir = tempfile::tempdir().unwrap();
        let authority = authority(dir.path());
        let issued = authority.create("clinical-system", Role::Submitter).await.unwrap();
        let caller = authority.verify(issued.token.expose()).await.unwrap();
        assert_eq!(caller, Some(Caller { name: "clinical-system".into(), role: Role::Submitter }));
    }

    #[tokio::test]
    async fn local_admin_file_verifies_as_admin() {
        let dir = tempfile::tempdir().unwrap();
        let authority = authority(dir.path());
        authority.ensure_local_admin(dir.path()).await.unwrap();
        let caller = authority.verify(&file_token(dir.path())).await.unwrap();
        assert_eq!(caller, Some(Caller { name: "admin".into(), role: Role::Admin }));
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

    #[tokio::test]
    async fn other_secret_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let authority = authority(dir.path());
        let issued = authority.create("viewer-one", Role::Viewer).await.unwrap();
        let (id, _) = issued.token.expose().split_once('.').unwrap();
        assert_eq!(authority.verify(&format!("{id}.not-the-secret")).await.unwrap(), None);
        assert_eq!(authority.verify("not-a-token").await.unwrap(), None);
    }

    #[tokio::test]
    async fn revoked_token_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let authority = authority(dir.path());
        let issued = authority.create("old-script", Role::Operator).await.unwrap();
        authority.revoke("old-script").await.unwrap();
        assert_eq!(authority.verify(issued.token.expose()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn active_name_cannot_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let authority = authority(dir.path());
        authority.create("central-it", Role::Operator).await.unwrap();
        let error = authority.create("central-it", Role::Viewer).await.unwrap_err();
        assert!(error.to_string().contains("already named \"central-it\""), "{error}");
    }

    #[tokio::test]
    async fn invalid_name_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let error = authority(dir.path()).create("two words", Role::Viewer).await.unwrap_err();
        assert!(matches!(error, AuthError::InvalidName { .. }), "{error}");
    }

    #[tokio::test]
    async fn database_holds_no_token_secret() {
        let dir = tempfile::tempdir().unwrap();
        let authority = authority(dir.path());
        let issued = authority.create("checked", Role::Viewer).await.unwrap();
        let (_, secret) = issued.token.expose().split_once('.').unwrap();
        drop(authority);
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(secret));
    }

    #[tokio::test]
    async fn local_admin_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        authority(dir.path()).ensure_local_admin(dir.path()).await.unwrap();
        let token = file_token(dir.path());
        let reloaded = authority(dir.path());
        reloaded.ensure_local_admin(dir.path()).await.unwrap();
        assert_eq!(file_token(dir.path()), token);
        assert!(reloaded.verify(&token).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn old_format_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        write_new_private_file(&admin_token_path(dir.path()), b"legacy-token-without-id\n").unwrap();
        let authority = authority(dir.path());
        authority.ensure_local_admin(dir.path()).await.unwrap();
        let token = file_token(dir.path());
        assert_ne!(token, "legacy-token-without-id");
        assert!(authority.verify(&token).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn token_file_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        authority(dir.path()).ensure_local_admin(dir.path()).await.unwrap();
        let mode = std::fs::metadata(admin_token_path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn debug_hides_token() {
        let dir = tempfile::tempdir().unwrap();
        let authority = authority(dir.path());
        let issued = authority.create("debugged", Role::Viewer).await.unwrap();
        let printed = format!("{authority:?} {issued:?}");
        let (_, secret) = issued.token.expose().split_once('.').unwrap();
        assert!(!printed.contains(secret), "{printed}");
    }
}
