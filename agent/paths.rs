//! Default locations of the agent's files, shared by the agent and nhsmail-ctl so both find the same admin token.

use std::path::PathBuf;

/// File name of the admin token inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Returns the data directory used when neither the config file nor a flag names one.
///
/// `NHSMAIL_DATA_DIR` wins. Otherwise root uses `/var/lib/nhsmail-agent`, and any other user
/// `$XDG_DATA_HOME/nhsmail-agent` or `~/.local/share/nhsmail-agent`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NHSMAIL_DATA_DIR").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    if is_root() {
        return PathBuf::from("/var/lib/nhsmail-agent");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("nhsmail-agent")
}

/// Returns the admin token path inside `data_dir`.
pub fn admin_token_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the effective user of this process.
    std::fs::metadata("/proc/self").map(|meta| meta.uid() == 0).unwrap_or(false)
}
