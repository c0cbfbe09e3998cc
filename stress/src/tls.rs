//! TLS for the bench (`bench --tls`): a throwaway CA and server certificate
//! made for the run, the client settings that trust it, and a non-blocking
//! TLS socket for the swarm's `mio` threads.
//!
//! The bench starts Relay with a TLS port beside its plain one and runs the
//! same workloads over both, so the figures differ only by TLS.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::ClientConnection;

use crate::error::{Context, Error, Result};

/// A CA and a server certificate for `localhost` and 127.0.0.1, written as
/// PEM files into a directory of their own (removed on drop).
#[derive(Debug)]
pub struct TestPki {
    dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    /// Makes fresh keys; nothing is reused between runs.
    pub fn generate() -> Result<TestPki> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let failed = |e: rcgen::Error| Error::new(format!("making a test certificate: {e}"));
        let ca_key = KeyPair::generate().map_err(failed)?;
        let mut ca_params = CertificateParams::new(Vec::new()).map_err(failed)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "relay-stress test CA");
        let ca = ca_params.self_signed(&ca_key).map_err(failed)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().map_err(failed)?;
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(failed)?;
        let cert = params.signed_by(&key, &issuer).map_err(failed)?;
        let dir = std::env::temp_dir().join(format!(
            "relay-stress-tls-{}-{}",
            std::process::id(),
            crate::sys::now_ns()
        ));
        std::fs::create_dir_all(&dir).context(format!("creating {}", dir.display()))?;
        let write = |name: &str, text: String| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text).context(format!("writing {}", path.display()))?;
            Ok(path)
        };
        Ok(TestPki {
            ca: write("ca.pem", ca.pem())?,
            cert: write("cert.pem", cert.pem())?,
            key: write("key.pem", key.serialize_pem())?,
            dir,
        })
    }

    /// What a client needs to trust the server's certificate.
    pub fn client(&self) -> Result<TlsClient> {
        TlsClient::new(&self.ca)
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Client settings for the bench's TLS connections.
#[derive(Debug, Clone)]
pub struct TlsClient {
    pub options: client::TlsOptions,
    config: Arc<rustls::ClientConfig>,
}

impl TlsClient {
    /// Trusts the CA in `ca` (PEM); checks the server's name as 127.0.0.1.
    pub fn new(ca: &Path) -> Result<TlsClient> {
        let options = client::TlsOptions {
            ca_file: Some(ca.to_owned()),
            server_name: Some("127.0.0.1".to_owned()),
            client_cert: None,
        };
        let config = options
            .client_config()
            .map_err(|e| Error::new(e.to_string()))?;
        Ok(TlsClient { options, config })
    }

    fn start(&self) -> io::Result<ClientConnection> {
        let name = self
            .options
            .name_for("127.0.0.1")
            .map_err(io::Error::other)?;
        ClientConnection::new(Arc::clone(&self.config), name).map_err(io::Error::other)
    }
}

/// A swarm client's socket: plain, or TLS over the same non-blocking socket.
#[derive(Debug)]
pub enum SwarmStream {
    Plain(TcpStream),
    Tls(Box<TlsSocket>),
    /// Relay's WebSocket port (`bench --ws`).
    Ws(Box<WsSocket>),
}

/// A Relay byte stream over WebSocket on a non-blocking socket.
#[derive(Debug)]
pub struct WsSocket {
    stream: TcpStream,
    input: crate::ws::WsIn,
    output: crate::ws::WsOut,
}

impl SwarmStream {
    /// Wraps a freshly connecting socket; the TLS handshake runs as the
    /// poll reports the socket ready (what is written before it ends waits
    /// inside rustls).
    pub fn new(stream: TcpStream, tls: Option<&TlsClient>) -> io::Result<SwarmStream> {
        Ok(match tls {
            None => SwarmStream::Plain(stream),
            Some(tls) => SwarmStream::Tls(Box::new(TlsSocket {
                conn: tls.start()?,
                stream,
                cipher: Vec::new(),
                start: 0,
                end: 0,
            })),
        })
    }

    /// Wraps a freshly connecting socket to Relay's WebSocket port at
    /// `addr`: the upgrade request goes out with the first write.
    pub fn websocket(stream: TcpStream, addr: std::net::SocketAddr) -> SwarmStream {
        let (input, output) = crate::ws::pair(addr);
        SwarmStream::Ws(Box::new(WsSocket {
            stream,
            input,
            output,
        }))
    }

    /// The socket itself, to register with the poll and set options on.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            SwarmStream::Plain(stream) => stream,
            SwarmStream::Tls(tls) => &mut tls.stream,
            SwarmStream::Ws(ws) => &mut ws.stream,
        }
    }
}

impl SwarmStream {
    /// Reads what has arrived: Relay bytes, except over WebSocket, where
    /// it is the socket's bytes, for [`SwarmStream::websocket_input`] to
    /// find the messages in where they lie.
    pub fn read_wire(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SwarmStream::Plain(stream) => stream.read(buf),
            SwarmStream::Tls(tls) => tls.read(buf),
            SwarmStream::Ws(ws) => ws.stream.read(buf),
        }
    }

    /// The WebSocket read direction, for a WebSocket connection.
    pub fn websocket_input(&mut self) -> Option<&mut crate::ws::WsIn> {
        match self {
            SwarmStream::Ws(ws) => Some(&mut ws.input),
            _ => None,
        }
    }
}

impl Write for SwarmStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SwarmStream::Plain(stream) => stream.write(buf),
            SwarmStream::Tls(tls) => tls.write(buf),
            SwarmStream::Ws(ws) => {
                // Like TLS: more is taken only once the socket took what
                // was framed before; the caller's buffer holds a backlog.
                ws.output.send(&mut ws.stream)?;
                ws.output.frame(buf);
                match ws.output.send(&mut ws.stream) {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
                    _ => Ok(buf.len()),
                }
            }
        }
    }

    /// Sends what TLS still holds; `WouldBlock` when the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            SwarmStream::Plain(_) => Ok(()),
            SwarmStream::Tls(tls) => tls.send_pending(),
            SwarmStream::Ws(ws) => ws.output.send(&mut ws.stream),
        }
    }
}

/// rustls over a non-blocking socket, driven by the swarm's poll.
pub struct TlsSocket {
    conn: ClientConnection,
    stream: TcpStream,
    /// Ciphertext read from the socket and not yet given to rustls: the
    /// socket is read 64 KiB at a time, where rustls's own `read_tls`
    /// asks it for 4 KiB per call, and the client side of a fan-out bench
    /// must not be what limits it.
    cipher: Vec<u8>,
    start: usize,
    end: usize,
}

impl std::fmt::Debug for TlsSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSocket").finish_non_exhaustive()
    }
}

impl TlsSocket {
    fn send_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.stream)?;
        }
        Ok(())
    }
}

impl Read for TlsSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.start == self.end {
                if self.cipher.is_empty() {
                    self.cipher = vec![0; 64 * 1024];
                }
                let n = self.stream.read(&mut self.cipher)?;
                if n == 0 {
                    return Ok(0);
                }
                (self.start, self.end) = (0, n);
            }
            let mut pending = &self.cipher[self.start..self.end];
            self.start += self.conn.read_tls(&mut pending)?;
            self.conn.process_new_packets().map_err(io::Error::other)?;
            // Handshake messages, and what was written before it ended.
            match self.send_pending() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }
}

impl Write for TlsSocket {
    /// Takes plaintext only while the socket takes the records: the
    /// caller's own buffer is where a backlog waits.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_pending()?;
        let n = self.conn.writer().write(buf)?;
        match self.send_pending() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ if n == 0 && !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }
}
