//! Trusted root certificates and the rustls client configuration, shared by SMTP and IMAP.
//!
//! Roots are the system's native certificates plus an optional extra PEM file. The crypto
//! provider is always rustls's `ring`.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::{ConfigError, TlsSettings};

/// Returns the `ring` crypto provider that every TLS connection of the agent uses.
pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Returns the DER certificates to trust: the system's roots, then those in the extra CA file.
///
/// Every returned certificate is accepted by `RootCertStore::add`; unusable system certificates
/// are skipped, but an unusable certificate in the extra file is an error.
pub(crate) fn root_certificates(settings: &TlsSettings) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let mut roots = native_roots().to_vec();
    if let Some(path) = &settings.extra_ca_file {
        roots.extend(read_ca_file(path)?);
    }
    Ok(roots)
}

/// Builds a rustls client configuration that trusts [`root_certificates`].
pub(crate) fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, ConfigError> {
    let mut store = RootCertStore::empty();
    for certificate in root_certificates(settings)? {
        store.add(certificate).map_err(tls_setup)?;
    }

    let config = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_setup)?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Converts a host name or IP address into the name the server's certificate must match.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, ConfigError> {
    ServerName::try_from(host.to_owned()).map_err(|_| ConfigError::InvalidServerName { host: host.to_owned() })
}

/// Returns the system's root certificates, loaded once per process because loading parses the
/// whole system store.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        if !loaded.errors.is_empty() {
            tracing::warn!(errors = loaded.errors.len(), "some system root certificates could not be loaded");
        }

        let mut scratch = RootCertStore::empty();
        loaded.certs.into_iter().filter(|certificate| scratch.add(certificate.clone()).is_ok()).collect()
    })
}

fn tls_setup(error: rustls::Error) -> ConfigError {
    ConfigError::TlsSetup { reason: error.to_string() }
}

fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = std::fs::read(path).map_err(|source| ConfigError::CaFileUnreadable { path: path.to_owned(), source })?;

    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ConfigError::CaFileInvalid { path: path.to_owned(), reason: error.to_string() })?;
    if certificates.is_empty() {
        return Err(ConfigError::CaFileEmpty { path: path.to_owned() });
    }

    let mut scratch = RootCertStore::empty();
    for certificate in &certificates {
        scratch
            .add(certificate.clone())
            .map_err(|error| ConfigError::CaFileInvalid { path: path.to_owned(), reason: error.to_string() })?;
    }
    Ok(certificates)
}

#[cfg(test)]
pub(crate) mod test_certificates {
    //! A test CA and a certificate for `localhost` and `127.0.0.1` signed by it, valid until 2126.
    //! Generated with OpenSSL 3 (P-256 keys):
    //!
    //! ```text
    //! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 \
    //!   -keyout ca.key -out test-ca.pem -subj "/CN=nhsmail-agent test CA" \
    //!   -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    //! openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
    //!   -out server.csr -subj "/CN=localhost"
    //! openssl x509 -req -in server.csr -CA test-ca.pem -CAkey ca.key -days 36500 \
    //!   -out localhost.pem -extfile ext.cnf  # SAN DNS:localhost,IP:127.0.0.1; serverAuth
    //! openssl pkcs8 -topk8 -nocrypt -in server.key -out localhost.key
    //! ```

    use std::sync::Arc;

    use rustls::ServerConfig;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    pub const CA_PEM: &str = include_str!("testdata/test-ca.pem");
    const SERVER_CERT_PEM: &str = include_str!("testdata/localhost.pem");
    const SERVER_KEY_PEM: &str = include_str!("testdata/localhost.key");

    /// Builds a rustls server configuration presenting the `localhost` test certificate.
    pub fn server_config() -> Arc<ServerConfig> {
        let chain = CertificateDer::pem_slice_iter(SERVER_CERT_PEM.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("test certificate parses");
        let key = PrivateKeyDer::from_pem_slice(SERVER_KEY_PEM.as_bytes()).expect("test key parses");
        let config = ServerConfig::builder_with_provider(super::crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("test certificate matches its key");
        Arc::new(config)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn settings_with(file: &tempfile::NamedTempFile) -> TlsSettings {
        TlsSettings { extra_ca_file: Some(file.path().to_owned()) }
    }

    fn temp_file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    #[test]
    fn extra_ca_file_is_added() {
        let file = temp_file(test_certificates::CA_PEM);
        let without = root_certificates(&TlsSettings::default()).unwrap().len();

        let with = root_certificates(&settings_with(&file)).unwrap().len();

        assert_eq!(with, without + 1);
    }

    #[test]
    fn missing_ca_file_names_path() {
        let settings = TlsSettings { extra_ca_file: Some("/nonexistent/nhsmail-test-ca.pem".into()) };

        let error = root_certificates(&settings).unwrap_err();

        assert!(matches!(error, ConfigError::CaFileUnreadable { .. }));
        assert!(error.to_string().contains("/nonexistent/nhsmail-test-ca.pem"), "{error}");
    }

    #[test]
    fn ca_file_without_certificate_rejected() {
        let file = temp_file("this is not a certificate\n");

        let error = root_certificates(&settings_with(&file)).unwrap_err();

        assert!(matches!(error, ConfigError::CaFileEmpty { .. }), "{error}");
        assert!(error.to_string().contains(&file.path().display().to_string()), "{error}");
    }

    #[test]
    fn ca_file_with_garbled_certificate_rejected() {
        let file = temp_file("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");

        let error = root_certificates(&settings_with(&file)).unwrap_err();

        assert!(matches!(error, ConfigError::CaFileInvalid { .. }), "{error}");
    }

    #[test]
    fn client_config_builds_with_extra_ca() {
        let file = temp_file(test_certificates::CA_PEM);

        assert!(client_config(&settings_with(&file)).is_ok());
    }

    #[test]
    fn server_name_accepts_ip_address() {
        assert!(server_name("127.0.0.1").is_ok());
    }

    #[test]
    fn server_name_rejects_invalid_host() {
        let error = server_name("bad host name").unwrap_err();

        assert!(error.to_string().contains("bad host name"), "{error}");
    }
}
