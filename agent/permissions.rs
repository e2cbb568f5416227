//! File modes of the data directory: the directory itself 0700, and the database, key and token files 0600.
//! They are checked at start-up. A mode open to others is tightened with a warning where this user owns the file,
//! and only reported where it does not.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::credentials::vault::KEY_FILE;
use crate::paths::ADMIN_TOKEN_FILE;
use crate::store::DATABASE_FILE;

/// A problem the check found with one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The mode was open to others and is now `wanted`.
    Tightened { path: PathBuf, was: u32, wanted: u32 },
    /// The mode is open to others, but another user owns the path, so it was left alone.
    NotOwned { path: PathBuf, mode: u32, owner: u32 },
    /// The path could not be read or changed.
    Failed { path: PathBuf, reason: String },
}

/// Checks the data directory and its private files, fixes what this user owns and logs a warning for each finding.
pub fn check_data_dir(data_dir: &Path) -> Vec<Finding> {
    let mut findings = Vec::new();
    check(data_dir, 0o700, &mut findings);
    let database = data_dir.join(DATABASE_FILE);
    let files = [
        database.clone(),
        PathBuf::from(format!("{}-wal", database.display())),
        PathBuf::from(format!("{}-shm", database.display())),
        data_dir.join(KEY_FILE),
        data_dir.join(ADMIN_TOKEN_FILE),
    ];
    for file in files.iter().filter(|file| file.exists()) {
        check(file, 0o600, &mut findings);
    }

    for finding in &findings {
        match finding {
            Finding::Tightened { path, was, wanted } => tracing::warn!(
                path = %path.display(),
                was = format!("{was:o}"),
                now = format!("{wanted:o}"),
                "file was open to other users; tightened its mode"
            ),
            Finding::NotOwned { path, mode, owner } => tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                owner,
                "file is open to other users and owned by another user, so the agent cannot fix it; change its mode or owner"
            ),
            Finding::Failed { path, reason } => {
                tracing::warn!(path = %path.display(), reason, "cannot check or fix the file's mode")
            }
        }
    }
    findings
}

fn check(path: &Path, wanted: u32, findings: &mut Vec<Finding>) {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) => return findings.push(Finding::Failed { path: path.to_owned(), reason: error.to_string() }),
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & !wanted == 0 {
        return;
    }
    // SAFETY: geteuid takes no arguments and POSIX defines no error for it.
    let user = unsafe { libc::geteuid() };
    if metadata.uid() != user {
        return findings.push(Finding::NotOwned { path: path.to_owned(), mode, owner: metadata.uid() });
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted)) {
        Ok(()) => findings.push(Finding::Tightened { path: path.to_owned(), was: mode, wanted }),
        Err(error) => findings.push(Finding::Failed { path: path.to_owned(), reason: error.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn open_database_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join(DATABASE_FILE);
        std::fs::write(&database, b"").unwrap();
        std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();

        let findings = check_data_dir(dir.path());

        assert_eq!(mode(&database), 0o600);
        assert!(findings.contains(&Finding::Tightened { path: database, was: 0o644, wanted: 0o600 }), "{findings:?}");
    }

    #[test]
    fn open_directory_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

        check_data_dir(dir.path());

        assert_eq!(mode(dir.path()), 0o700);
    }

    #[test]
    fn private_files_report_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        crate::credentials::vault::write_new_private_file(&dir.path().join(KEY_FILE), b"key").unwrap();

        assert_eq!(check_data_dir(dir.path()), Vec::new());
    }

    #[test]
    fn group_readable_token_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join(ADMIN_TOKEN_FILE);
        std::fs::write(&token, b"id.secret\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();

        check_data_dir(dir.path());

        assert_eq!(mode(&token), 0o600);
    }
}
