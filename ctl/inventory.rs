//! The fleet inventory: a TOML file with one `[[agent]]` table per practice agent, and the TLS settings each entry
//! carries. Relative paths in the file are taken relative to the file's own directory.
//!
//! ```toml
//! [[agent]]
//! name = "riverside-surgery"
//! url = "https://riverside.agents.example.org:50051"
//! token_file = "tokens/riverside.token"
//! ca_file = "central-it-ca.pem"        # optional: trust only this CA instead of the system's roots
//! client_cert = "central-it.pem"       # optional, with client_key: mutual TLS
//! client_key = "central-it.key"
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::cli::TlsFiles;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::error::CtlError;

/// One practice agent of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryAgent {
    pub name: String,
    pub url: String,
    pub token_file: PathBuf,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Inventory {
    pub path: PathBuf,
    pub agents: Vec<InventoryAgent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    #[serde(default)]
    agent: Vec<RawAgent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: String,
    url: String,
    token_file: PathBuf,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

impl Inventory {
    /// Reads and checks the inventory. The TLS files are read later, when an agent is contacted.
    pub fn load(path: &Path) -> Result<Inventory, CtlError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| input(path, format!("cannot read it: {}", error.kind())))?;
        Inventory::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Inventory, CtlError> {
        let raw: RawInventory = toml::from_str(text).map_err(|error| input(path, error.message().to_string()))?;
        if raw.agent.is_empty() {
            return Err(input(path, "it lists no agents; add one [[agent]] table per practice".into()));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut names = HashSet::new();
        let mut agents = Vec::with_capacity(raw.agent.len());

        for (index, agent) in raw.agent.into_iter().enumerate() {
            let name = agent.name.trim().to_string();
            if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(input(
                    path,
                    format!("agent {} has name {:?}; expected a name without spaces", index + 1, agent.name),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(input(path, format!("agent name {name:?} is listed twice; names must be unique")));
            }
            let entry = InventoryAgent {
                url: check_url(path, &name, &agent.url)?,
                token_file: base.join(agent.token_file),
                ca_file: agent.ca_file.map(|file| base.join(file)),
                client_cert: agent.client_cert.map(|file| base.join(file)),
                client_key: agent.client_key.map(|file| base.join(file)),
                name,
            };
            check_tls_options(path, &entry)?;
            agents.push(entry);
        }
        Ok(Inventory { path: path.to_path_buf(), agents })
    }

    /// Returns the agent named `name`, or an error listing the names there are.
    pub fn find(&self, name: &str) -> Result<&InventoryAgent, CtlError> {
        self.agents.iter().find(|agent| agent.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.agents.iter().map(|agent| agent.name.as_str()).collect();
            input(&self.path, format!("--target {name:?} is not listed; the agents are: {}", known.join(", ")))
        })
    }
}

impl InventoryAgent {
    /// Checks the TLS files of an https:// agent and returns them: the CA file (the system's roots when absent) and
    /// the client certificate for mutual TLS. Returns `None` for http://.
    pub fn tls_files(&self, inventory: &Path) -> Result<Option<TlsFiles>, CtlError> {
        if !self.url.starts_with("https://") {
            return Ok(None);
        }
        if let Some(ca_file) = &self.ca_file {
            let pem = self.read_pem(inventory, "ca_file", ca_file)?;
            if CertificateDer::pem_slice_iter(&pem).filter(Result::is_ok).count() == 0 {
                return Err(self.file_error(inventory, "ca_file", ca_file, "it contains no PEM certificate"));
            }
        }
        if let (Some(cert_file), Some(key_file)) = (&self.client_cert, &self.client_key) {
            let cert = self.read_pem(inventory, "client_cert", cert_file)?;
            if CertificateDer::pem_slice_iter(&cert).filter(Result::is_ok).count() == 0 {
                return Err(self.file_error(inventory, "client_cert", cert_file, "it contains no PEM certificate"));
            }
            let key = self.read_pem(inventory, "client_key", key_file)?;
            if PrivateKeyDer::from_pem_slice(&key).is_err() {
                return Err(self.file_error(inventory, "client_key", key_file, "it contains no PEM private key"));
            }
        }
        Ok(Some(TlsFiles {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }))
    }

    fn read_pem(&self, inventory: &Path, key: &str, file: &Path) -> Result<Vec<u8>, CtlError> {
        std::fs::read(file).map_err(|error| self.file_error(inventory, key, file, &error.kind().to_string()))
    }

    fn file_error(&self, inventory: &Path, key: &str, file: &Path, reason: &str) -> CtlError {
        input(
            inventory,
            format!("agent {:?}: cannot use {key} {}: {reason}; fix the path or the file", self.name, file.display()),
        )
    }
}

fn input(path: &Path, message: String) -> CtlError {
    CtlError::Input(format!("invalid inventory {}: {message}", path.display()))
}

/// Accepts http:// or https:// with a host, as tonic's channel needs.
fn check_url(path: &Path, name: &str, url: &str) -> Result<String, CtlError> {
    let url = url.trim();
    let parsed: Result<tonic::transport::Uri, _> = url.parse();
    let valid = parsed.as_ref().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some_and(|host| !host.is_empty())
    });
    if !valid {
        return Err(input(
            path,
            format!("agent {name:?} has url {url:?}; expected for example https://practice.example.org:50051"),
        ));
    }
    Ok(url.to_string())
}

/// Checks that the TLS options come with an https:// URL and that a client certificate comes with its key.
fn check_tls_options(path: &Path, agent: &InventoryAgent) -> Result<(), CtlError> {
    let has_tls_option = agent.ca_file.is_some() || agent.client_cert.is_some() || agent.client_key.is_some();
    if has_tls_option && !agent.url.starts_with("https://") {
        return Err(input(
            path,
            format!(
                "agent {:?} has ca_file, client_cert or client_key but url {}; use an https:// URL for TLS",
                agent.name, agent.url
            ),
        ));
    }
    if agent.client_cert.is_some() != agent.client_key.is_some() {
        return Err(input(
            path,
            format!("agent {:?} has only one of client_cert and client_key; mutual TLS needs both", agent.name),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Inventory, CtlError> {
        Inventory::parse(Path::new("/etc/nhsmail/fleet.toml"), text)
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("the inventory should be rejected").to_string()
    }

    const TWO_AGENTS: &str = r#"
[[agent]]
name = "riverside"
url = "http://127.0.0.1:50051"
token_file = "tokens/riverside.token"

[[agent]]
name = "hillside"
url = "https://hillside.example.org:50051"
token_file = "/var/lib/tokens/hillside.token"
ca_file = "ca.pem"
client_cert = "central.pem"
client_key = "central.key"
"#;

    #[test]
    fn agents_are_read_in_order() {
        let inventory = parse(TWO_AGENTS).unwrap();
        let names: Vec<&str> = inventory.agents.iter().map(|agent| agent.name.as_str()).collect();
        assert_eq!(names, ["riverside", "hillside"]);
    }

    #[test]
    fn relative_paths_follow_inventory_file() {
        let inventory = parse(TWO_AGENTS).unwrap();
        assert_eq!(inventory.agents[0].token_file, Path::new("/etc/nhsmail/tokens/riverside.token"));
        assert_eq!(inventory.agents[1].token_file, Path::new("/var/lib/tokens/hillside.token"));
        assert_eq!(inventory.agents[1].ca_file.as_deref(), Some(Path::new("/etc/nhsmail/ca.pem")));
    }

    #[test]
    fn duplicate_name_is_rejected() {
        let text = format!(
            "{TWO_AGENTS}\n[[agent]]\nname = \"riverside\"\nurl = \"http://127.0.0.1:1\"\ntoken_file = \"t\"\n"
        );
        let message = error(&text);
        assert!(message.contains("\"riverside\" is listed twice"), "{message}");
        assert!(message.contains("/etc/nhsmail/fleet.toml"), "{message}");
    }

    #[test]
    fn empty_inventory_is_rejected() {
        assert!(error("").contains("lists no agents"));
    }

    #[test]
    fn unknown_key_is_rejected() {
        let message =
            error("[[agent]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\ntoken_file = \"t\"\ntoken = \"x\"\n");
        assert!(message.contains("token"), "{message}");
    }

    #[test]
    fn missing_token_file_is_rejected() {
        let message = error("[[agent]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n");
        assert!(message.contains("token_file"), "{message}");
    }

    #[test]
    fn invalid_url_names_agent() {
        let message = error("[[agent]]\nname = \"north\"\nurl = \"127.0.0.1:50051\"\ntoken_file = \"t\"\n");
        assert!(message.contains("agent \"north\""), "{message}");
        assert!(message.contains("127.0.0.1:50051"), "{message}");
    }

    #[test]
    fn tls_option_needs_https() {
        let message = error(
            "[[agent]]\nname = \"north\"\nurl = \"http://127.0.0.1:1\"\ntoken_file = \"t\"\nca_file = \"ca.pem\"\n",
        );
        assert!(message.contains("agent \"north\""), "{message}");
        assert!(message.contains("https://"), "{message}");
    }

    #[test]
    fn client_cert_needs_key() {
        let text = "[[agent]]\nname = \"north\"\nurl = \"https://a.example.org\"\ntoken_file = \"t\"\nclient_cert = \"c.pem\"\n";
        assert!(error(text).contains("needs both"));
    }

    #[test]
    fn unknown_target_lists_names() {
        let inventory = parse(TWO_AGENTS).unwrap();
        let message = inventory.find("lakeside").unwrap_err().to_string();
        assert!(message.contains("riverside, hillside"), "{message}");
    }

    #[test]
    fn missing_ca_file_names_file_and_agent() {
        let inventory = parse(TWO_AGENTS).unwrap();
        let message = inventory.agents[1].tls_files(&inventory.path).unwrap_err().to_string();
        assert!(message.contains("agent \"hillside\""), "{message}");
        assert!(message.contains("ca_file /etc/nhsmail/ca.pem"), "{message}");
        assert!(message.contains("not found"), "{message}");
    }

    #[test]
    fn ca_file_without_certificate_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
        let text =
            "[[agent]]\nname = \"north\"\nurl = \"https://a.example.org\"\ntoken_file = \"t\"\nca_file = \"ca.pem\"\n";
        let inventory = Inventory::parse(&dir.path().join("fleet.toml"), text).unwrap();

        let message = inventory.agents[0].tls_files(&inventory.path).unwrap_err().to_string();

        assert!(message.contains("contains no PEM certificate"), "{message}");
    }

    #[test]
    fn plain_http_needs_no_tls() {
        let inventory = parse(TWO_AGENTS).unwrap();
        assert!(inventory.agents[0].tls_files(&inventory.path).unwrap().is_none());
    }
}
