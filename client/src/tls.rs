//! TLS for the client (rustls), split into the two halves the client's
//! threads need: the reader thread decrypts, callers of `send_*` encrypt.
//!
//! rustls keeps one state machine for both directions, so the halves share
//! it under a mutex. Neither half holds that mutex across a socket call that
//! can block: the reader reads ciphertext from the socket first and only then
//! takes the lock to decrypt it, and a writer encrypts under the lock into a
//! buffer of its own and writes that buffer after releasing it. Records stay
//! in order because only writers (serialised by the client's writer lock)
//! take ciphertext out of rustls; records rustls queues while the reader
//! decrypts (a TLS 1.3 key update answer) leave with the next write.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// How to make a TLS connection.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of the certificate authorities to trust; `None` trusts the
    /// public web's roots (webpki-roots), which a self-signed or private
    /// server certificate is not signed by.
    pub ca_file: Option<PathBuf>,
    /// The name the server's certificate must carry; by default the host
    /// connected to (a DNS name or an IP address).
    pub server_name: Option<String>,
    /// A client certificate and its key (PEM files), for a server that asks
    /// for one (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A TLS setting that cannot work, or a handshake that failed.
#[derive(Debug)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl TlsOptions {
    /// The rustls configuration these options describe.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in read_certs(path, "--ca")? {
                    roots.add(cert).map_err(|error| {
                        TlsError(format!(
                            "--ca {}: a certificate cannot be used as a CA: {error}",
                            path.display()
                        ))
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError(format!("TLS setup failed: {error}")))?
            .with_root_certificates(roots);
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_certs(cert, "--cert")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|error| {
                    TlsError(format!(
                        "--key {}: no usable private key: {error}",
                        key.display()
                    ))
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|error| {
                    TlsError(format!("--cert and --key do not make a pair: {error}"))
                })?
            }
        };
        Ok(Arc::new(config))
    }

    /// The name to check the server's certificate against.
    pub fn name_for(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        // `[::1]` as written in a URL.
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(ServerName::IpAddress(ip.into()));
        }
        ServerName::try_from(bare.to_owned())
            .map_err(|_| TlsError(format!("{name:?} is not a valid TLS server name")))
    }
}

fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError(format!("{flag} {}: {error}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{flag} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// Connects TLS over `stream` (handshake within `timeout`, certificate
/// checked against `host`) and splits it: the read half for one thread, the
/// write half for another. For tools that drive their own frames (the
/// stress bench's publisher); [`crate::Client`] does this itself.
pub fn split_stream(
    mut stream: TcpStream,
    host: &str,
    tls: &TlsOptions,
    timeout: Duration,
) -> Result<(TlsRead, TlsWrite), TlsError> {
    let config = tls.client_config()?;
    let conn = handshake(&mut stream, config, tls.name_for(host)?, timeout)?;
    let read = stream
        .try_clone()
        .map_err(|error| TlsError(format!("cannot share the socket: {error}")))?;
    Ok(split(conn, read, stream))
}

/// Runs the handshake on `stream` within `timeout`, then leaves the socket
/// blocking with no read timeout, as the client's threads expect.
pub(crate) fn handshake(
    stream: &mut TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    timeout: Duration,
) -> Result<ClientConnection, TlsError> {
    let failed = |what: String| TlsError(format!("TLS handshake failed: {what}"));
    let mut conn = ClientConnection::new(config, name).map_err(|e| failed(e.to_string()))?;
    let old_read = stream.read_timeout().ok().flatten();
    let old_write = stream.write_timeout().ok().flatten();
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let mut result = Ok(());
    while conn.is_handshaking() {
        if let Err(error) = conn.complete_io(stream) {
            result = Err(match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => failed(format!(
                    "no answer within {timeout:?}; is this the server's TLS port?"
                )),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => failed(
                    "the server closed the connection; is this the server's TLS port, and does it want a client certificate?"
                        .into(),
                ),
                _ => failed(hint(error)),
            });
            break;
        }
    }
    let _ = stream.set_read_timeout(old_read);
    let _ = stream.set_write_timeout(old_write);
    result.map(|()| conn)
}

/// The handshake error, with what to do about the usual ones.
fn hint(error: io::Error) -> String {
    let text = error.to_string();
    if text.contains("UnknownIssuer") {
        format!("{text}; pass --ca with the certificate of the CA that signed the server's")
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        format!("{text}; connect with the name the certificate was issued for")
    } else if text.contains("CorruptMessage") || text.contains("InvalidContentType") {
        format!("{text}; the server does not speak TLS on this port")
    } else {
        text
    }
}

fn lock(conn: &Mutex<ClientConnection>) -> MutexGuard<'_, ClientConnection> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Either side of a connection, plain or TLS.
#[derive(Debug)]
pub(crate) enum ReadHalf {
    Plain(TcpStream),
    Tls(TlsRead),
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Plain(stream) => stream.read(buf),
            ReadHalf::Tls(tls) => tls.read(buf),
        }
    }
}

#[derive(Debug)]
pub(crate) enum WriteHalf {
    Plain(TcpStream),
    Tls(TlsWrite),
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Plain(stream) => stream.write(buf),
            WriteHalf::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Plain(stream) => stream.flush(),
            WriteHalf::Tls(_) => Ok(()),
        }
    }
}

/// Splits an established TLS connection into its two halves.
pub(crate) fn split(
    conn: ClientConnection,
    read: TcpStream,
    write: TcpStream,
) -> (TlsRead, TlsWrite) {
    let shared = Arc::new(Mutex::new(conn));
    (
        TlsRead {
            conn: Arc::clone(&shared),
            stream: read,
            cipher: vec![0; 64 * 1024],
            start: 0,
            end: 0,
        },
        TlsWrite {
            conn: shared,
            stream: write,
            out: Vec::new(),
        },
    )
}

/// The reader thread's half: ciphertext read without the lock, decrypted
/// under it.
pub struct TlsRead {
    conn: Arc<Mutex<ClientConnection>>,
    stream: TcpStream,
    /// Ciphertext read from the socket and not yet given to rustls.
    cipher: Vec<u8>,
    start: usize,
    end: usize,
}

impl fmt::Debug for TlsRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsRead").finish_non_exhaustive()
    }
}

impl Read for TlsRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut conn = lock(&self.conn);
                // Plaintext first, and ciphertext one read_tls at a time
                // only once it is all taken: rustls refuses to hold more
                // than 16 KiB of plaintext nobody has read.
                loop {
                    match conn.reader().read(buf) {
                        Ok(n) => return Ok(n),
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                        Err(error) => return Err(error),
                    }
                    if self.start == self.end {
                        break;
                    }
                    let mut pending = &self.cipher[self.start..self.end];
                    let taken = conn.read_tls(&mut pending)?;
                    self.start += taken;
                    conn.process_new_packets().map_err(io::Error::other)?;
                }
            }
            // Only this thread reads the socket, so it may wait here with
            // the lock released.
            let n = self.stream.read(&mut self.cipher)?;
            if n == 0 {
                // The server closed without close_notify (as it does after a
                // fatal ERROR, once the ERROR has been read): end of stream.
                return Ok(0);
            }
            self.start = 0;
            self.end = n;
        }
    }
}

/// The writers' half: encrypted under the lock, written after it.
pub struct TlsWrite {
    conn: Arc<Mutex<ClientConnection>>,
    stream: TcpStream,
    out: Vec<u8>,
}

impl fmt::Debug for TlsWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsWrite").finish_non_exhaustive()
    }
}

impl Write for TlsWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.clear();
        let taken = {
            let mut conn = lock(&self.conn);
            let taken = conn.writer().write(buf)?;
            while conn.wants_write() {
                conn.write_tls(&mut self.out)?;
            }
            taken
        };
        self.stream.write_all(&self.out)?;
        if self.out.capacity() > 256 * 1024 {
            self.out = Vec::new();
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
