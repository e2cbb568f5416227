//! Salted hashes of past passwords, so a new password can be checked against the last few without keeping them.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::store::PasswordHash;

const SALT_BYTES: usize = 16;

/// Hashes `password` with a new random salt.
pub fn hash(password: &Secret) -> PasswordHash {
    let mut salt = vec![0u8; SALT_BYTES];
    rand::rng().fill_bytes(&mut salt);
    let hash = digest(&salt, password);
    PasswordHash { salt, hash }
}

/// Returns whether `password` is the one `stored` was made from.
pub fn matches(stored: &PasswordHash, password: &Secret) -> bool {
    let hash = digest(&stored.salt, password);
    hash.len() == stored.hash.len() && hash.iter().zip(&stored.hash).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn digest(salt: &[u8], password: &Secret) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.expose().as_bytes());
    hasher.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_own_password() {
        let password = Secret::new("Invented-Password-2026");
        assert!(matches(&hash(&password), &password));
    }

    #[test]
    fn hash_rejects_other_password() {
        let stored = hash(&Secret::new("Invented-Password-2026"));
        assert!(!matches(&stored, &Secret::new("Invented-Password-2027")));
    }

    #[test]
    fn same_password_gets_different_salts() {
        let password = Secret::new("Invented-Password-2026");
        assert_ne!(hash(&password).salt, hash(&password).salt);
    }
}
