//! From PEM files to a rustls server configuration, with errors that name
//! the flag and the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// A TLS file that cannot be used.
#[derive(Debug)]
pub struct TlsError {
    /// The command-line flag that names the file.
    pub flag: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it, and what would do.
    pub problem: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--{} {}: {}",
            self.flag,
            self.path.display(),
            self.problem
        )
    }
}

impl std::error::Error for TlsError {}

impl TlsError {
    fn new(flag: &'static str, path: &Path, problem: impl Into<String>) -> TlsError {
        TlsError {
            flag,
            path: path.to_owned(),
            problem: problem.into(),
        }
    }
}

/// The one crypto backend of the workspace, with AES-128-GCM first.
///
/// A broadcast is encrypted once per member, so the cipher's cost is paid
/// N times per message: AES-128 does 10 rounds where AES-256 does 14, and
/// is as safe for this use (it is TLS 1.3's mandatory suite). The server's
/// order decides (`ignore_client_order`), since rustls clients put AES-256
/// first.
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    let mut provider = default_provider();
    let fast_first = [
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    provider
        .cipher_suites
        .retain(|suite| !fast_first.contains(suite));
    provider.cipher_suites.splice(0..0, fast_first);
    Arc::new(provider)
}

/// Reads a file whole; TLS files are small, and the operator names them.
fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::new(flag, path, format!("cannot read: {error}")))
}

/// Every certificate in a PEM file, in order (leaf first for a chain).
fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|error| TlsError::new(flag, path, format!("not valid PEM: {error}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            flag,
            path,
            "no certificate in it; expected PEM with a -----BEGIN CERTIFICATE----- block",
        ));
    }
    Ok(certs)
}

fn private_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::new(
            flag,
            path,
            "no private key in it; expected PEM with a -----BEGIN PRIVATE KEY----- (PKCS#8), RSA PRIVATE KEY or EC PRIVATE KEY block",
        ),
        error => TlsError::new(flag, path, format!("not valid PEM: {error}")),
    })
}

/// The server configuration the files describe: the certificate chain and
/// its key, and with a client CA, client certificates required and
/// verified against it.
pub(super) fn server_config(files: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates("tls-cert", &files.cert)?;
    let key = private_key("tls-key", &files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::new("tls-cert", &files.cert, error.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("tls-client-ca", path)? {
                roots.add(cert).map_err(|error| {
                    TlsError::new(
                        "tls-client-ca",
                        path,
                        format!("not a usable CA certificate: {error}"),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|error| TlsError::new("tls-client-ca", path, error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => TlsError::new(
            "tls-key",
            &files.key,
            format!(
                "does not match the certificate in --tls-cert {}; give the key the certificate was made for",
                files.cert.display()
            ),
        ),
        error => TlsError::new("tls-key", &files.key, format!("unusable key: {error}")),
    })?;
    let mut config = config;
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}
