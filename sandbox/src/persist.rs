//! Durable writes of the sandbox's state files: each file is replaced whole through a
//! temporary file, fsync and rename, so a crash leaves either the old or the new version.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("failed to write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid JSON in {path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let write_error = |source| PersistError::Write { path: path.to_path_buf(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(write_error)?;
    temp.write_all(bytes).map_err(write_error)?;
    temp.as_file().sync_all().map_err(write_error)?;
    temp.persist(path).map_err(|error| write_error(error.error))?;

    // The rename is durable only once the directory entry is on disk too.
    fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(write_error)
}

/// Serialises `value` as pretty JSON into `path` atomically.
pub fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<(), PersistError> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|source| PersistError::Json { path: path.to_path_buf(), source })?;
    write_atomic(path, &bytes)
}

/// Reads JSON from `path`, or returns `None` when the file does not exist.
pub fn load_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, PersistError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Read { path: path.to_path_buf(), source });
        }
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|source| PersistError::Json { path: path.to_path_buf(), source })
}
