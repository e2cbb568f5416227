//! The sandbox's TLS identity: a private CA generated on first start, whose certificate is
//! written to `ca.pem` for clients to trust, and a server certificate for `localhost` and
//! `127.0.0.1` signed by it. The CA's private key is never written, so nothing else can be
//! signed with it; with a state directory the certificates are reused across restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::persist::{self, PersistError};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("invalid PEM in {path}: {source}")]
    Pem { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("invalid server certificate or key: {0}")]
    Config(#[from] rustls::Error),
}

/// The server's TLS configuration and the path of the CA certificate clients should trust.
pub struct TlsIdentity {
    pub ca_file: PathBuf,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

const CA_FILE: &str = "ca.pem";
const CERT_FILE: &str = "server.pem";
const KEY_FILE: &str = "server-key.pem";

/// Loads the certificates from `dir`, generating and saving them first if any is missing.
pub fn load_or_generate(dir: &Path) -> Result<TlsIdentity, TlsError> {
    let ca_file = dir.join(CA_FILE);
    let cert_file = dir.join(CERT_FILE);
    let key_file = dir.join(KEY_FILE);
    if !(ca_file.exists() && cert_file.exists() && key_file.exists()) {
        generate(&ca_file, &cert_file, &key_file)?;
    }

    let pem_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Pem { path, source }
    };
    let chain = vec![
        CertificateDer::from_pem_file(&cert_file).map_err(pem_error(&cert_file))?,
        CertificateDer::from_pem_file(&ca_file).map_err(pem_error(&ca_file))?,
    ];
    let key = PrivateKeyDer::from_pem_file(&key_file).map_err(pem_error(&key_file))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(TlsIdentity { ca_file, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) })
}

fn generate(ca_file: &Path, cert_file: &Path, key_file: &Path) -> Result<(), TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params.distinguished_name.push(DnType::CommonName, "nhsmail-sandbox local CA");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let mut server_params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    server_params.distinguished_name = DistinguishedName::new();
    server_params.distinguished_name.push(DnType::CommonName, "localhost");
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // OpenSSL 3's strict verification, the default in Python 3.13, wants this extension.
    server_params.use_authority_key_identifier_extension = true;
    let server_key = KeyPair::generate()?;
    let issuer = Issuer::new(ca_params, ca_key);
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    persist::write_atomic(key_file, server_key.serialize_pem().as_bytes())?;
    persist::write_atomic(cert_file, server_cert.pem().as_bytes())?;
    persist::write_atomic(ca_file, ca_cert.pem().as_bytes())?;
    Ok(())
}
