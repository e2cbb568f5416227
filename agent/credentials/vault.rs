//! Encryption of the mailbox password at rest: ChaCha20-Poly1305 with a random 256-bit key kept in a file of
//! mode 0600 in the data directory. The database holds only the nonce and the ciphertext.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

use crate::secret::Secret;

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "credential.key";

/// Bound into every ciphertext, so a blob cannot be moved to another purpose or format version unnoticed.
const ASSOCIATED_DATA: &[u8] = b"nhsmail-agent mailbox password v1";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot read or create the key file {path}: {source}")]
    KeyFile { path: PathBuf, source: std::io::Error },
    #[error(
        "the key file {path} is {length} bytes long; expected 32. Restore it from backup, or delete it and set the password again"
    )]
    KeyLength { path: PathBuf, length: usize },
    #[error(
        "the stored password cannot be decrypted with {path}; the key file does not match the database. Set the password again"
    )]
    Decrypt { path: PathBuf },
}

/// A password encrypted by [`Vault::seal`].
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Sealed({} bytes)", self.ciphertext.len())
    }
}

pub struct Vault {
    cipher: ChaCha20Poly1305,
    key_path: PathBuf,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Vault").field("key_path", &self.key_path).finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the key in `data_dir`, creating it with mode 0600 on first use.
    pub fn open_or_create(data_dir: &Path) -> Result<Vault, VaultError> {
        let key_path = data_dir.join(KEY_FILE);
        let key_error = |source| VaultError::KeyFile { path: key_path.clone(), source };

        let key = match std::fs::read(&key_path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; 32];
                rand::rng().fill_bytes(&mut key);
                write_new_private_file(&key_path, &key).map_err(key_error)?;
                key
            }
            Err(error) => return Err(key_error(error)),
        };
        if key.len() != 32 {
            return Err(VaultError::KeyLength { path: key_path, length: key.len() });
        }

        let permissions = std::fs::metadata(&key_path).map_err(key_error)?.permissions();
        if permissions.mode() & 0o077 != 0 {
            tracing::warn!(path = %key_path.display(), mode = format!("{:o}", permissions.mode() & 0o777), "key file was readable by others; setting mode 0600");
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).map_err(key_error)?;
        }

        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
        Ok(Vault { cipher, key_path })
    }

    pub fn seal(&self, password: &Secret) -> Sealed {
        let mut nonce = vec![0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload { msg: password.expose().as_bytes(), aad: ASSOCIATED_DATA };
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("ChaCha20-Poly1305 encryption cannot fail for inputs under 256 GiB");
        Sealed { nonce, ciphertext }
    }

    pub fn open(&self, sealed: &Sealed) -> Result<Secret, VaultError> {
        let decrypt_error = || VaultError::Decrypt { path: self.key_path.clone() };
        if sealed.nonce.len() != 12 {
            return Err(decrypt_error());
        }
        let payload = Payload { msg: &sealed.ciphertext, aad: ASSOCIATED_DATA };
        let plain = self.cipher.decrypt(Nonce::from_slice(&sealed.nonce), payload).map_err(|_| decrypt_error())?;
        String::from_utf8(plain).map(Secret::new).map_err(|_| decrypt_error())
    }
}

/// Writes `contents` to a new file readable only by its owner, then syncs it.
pub fn write_new_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_password_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open_or_create(dir.path()).unwrap();
        let sealed = vault.seal(&Secret::new("Invented-Pass-2026"));
        let reopened = Vault::open_or_create(dir.path()).unwrap();
        assert_eq!(reopened.open(&sealed).unwrap().expose(), "Invented-Pass-2026");
    }

    #[test]
    fn ciphertext_does_not_contain_password() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open_or_create(dir.path()).unwrap();
        let sealed = vault.seal(&Secret::new("Invented-Pass-2026"));
        let found = sealed.ciphertext.windows(8).any(|window| window == b"Invented");
        assert!(!found);
    }

    #[test]
    fn key_file_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        Vault::open_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn other_key_cannot_open_password() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let sealed = Vault::open_or_create(first.path()).unwrap().seal(&Secret::new("Invented-Pass-2026"));
        let error = Vault::open_or_create(second.path()).unwrap().open(&sealed).unwrap_err();
        assert!(matches!(error, VaultError::Decrypt { .. }));
    }

    #[test]
    fn short_key_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write_new_private_file(&dir.path().join(KEY_FILE), b"short").unwrap();
        let error = Vault::open_or_create(dir.path()).unwrap_err();
        assert!(matches!(error, VaultError::KeyLength { length: 5, .. }));
    }
}
