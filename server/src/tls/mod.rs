//! TLS for the second listener: the certificate files turned into a rustls
//! configuration ([`load`]), that configuration swapped on reload without
//! touching live connections ([`Certificates`], [`TlsReloader`]), and who a
//! client certificate names ([`identity`]). The bytes themselves go through
//! `conn::tls`, the TLS transport.

pub(crate) mod identity;
mod load;

use std::sync::Arc;

use parking_lot::RwLock;
use rustls::ServerConfig;

pub use load::TlsError;

use crate::config::TlsConfig;

/// The rustls configuration in force, and where it came from. Each new
/// connection takes the configuration current at its accept; a reload
/// replaces it for the connections after, and the ones before keep theirs
/// (each holds its own `Arc`).
#[derive(Debug)]
pub(crate) struct Certificates {
    files: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl Certificates {
    /// Loads the files named in `files`; the error names the flag whose
    /// file is unusable.
    pub(crate) fn load(files: &TlsConfig) -> Result<Certificates, TlsError> {
        let config = load::server_config(files)?;
        Ok(Certificates {
            files: files.clone(),
            current: RwLock::new(config),
        })
    }

    /// The configuration for a connection accepted now.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read())
    }

    /// Reads the same files again; on success, connections accepted from
    /// now on use them. On failure nothing changes.
    fn reload(&self) -> Result<(), TlsError> {
        let config = load::server_config(&self.files)?;
        *self.current.write() = config;
        Ok(())
    }
}

/// Reloads the TLS certificate, key and client CA from the paths the
/// server started with (what `relay-server` does on SIGHUP). Connections
/// already open are untouched; handshakes after a successful reload use
/// the new files. A failed reload keeps the files in force.
#[derive(Debug, Clone)]
pub struct TlsReloader {
    pub(crate) certificates: Arc<Certificates>,
}

impl TlsReloader {
    /// Reloads; the error names the flag whose file is unusable, and the
    /// server keeps the configuration it had.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.certificates.reload()
    }
}
