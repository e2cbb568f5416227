//! Runtime settings that override the config file, such as the upload interval, the username or `auto_manage`.
//! Keys and values are plain text; their meaning belongs to the modules that read them.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, to_millis};

impl Store {
    /// Returns the value stored under `key`.
    pub async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.read(move |connection| {
            let value = connection
                .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
                .query_row([key], |row| row.get(0))
                .optional()?;
            Ok(value)
        })
        .await
    }

    /// Stores `value` under `key`, replacing any earlier value.
    pub async fn set_setting(&self, key: &str, value: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let key = key.to_owned();
        let value = value.to_owned();
        self.write(move |connection| {
            connection
                .prepare_cached(
                    "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )?
                .execute(params![key, value, to_millis(now)])?;
            Ok(())
        })
        .await
    }

    /// Removes the value under `key`, so the config file's value applies again. Returns whether one was stored.
    pub async fn delete_setting(&self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.write(move |connection| {
            let deleted = connection.prepare_cached("DELETE FROM settings WHERE key = ?1")?.execute([key])?;
            Ok(deleted > 0)
        })
        .await
    }

    /// Returns every stored setting, ordered by key.
    pub async fn list_settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|connection| {
            let settings = connection
                .prepare_cached("SELECT key, value FROM settings ORDER BY key")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(settings)
        })
        .await
    }
}
