//! TLS for tests (feature `tls`): certificates made on the spot with rcgen
//! ([`TestCa`], [`Issued`]; no key is ever committed), a folder for the PEM
//! files that deletes itself ([`TempDir`]), and [`TlsClient`], a blocking
//! frame connection over rustls whose every wait is bounded by [`WAIT`].
//! Like [`Raw`](crate::Raw), its methods panic with what was expected and
//! what came.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use protocol::{Decoder, HelloReply, MessageType};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde::Serialize;
use serde_json::{Value, json};

use crate::conn::{CLIENT_MAX_FRAME, OverTcp, RecvError, recv_frame};
use crate::frames::{OwnedFrame, json_frame};
use crate::raw::WAIT;

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert: rcgen::Certificate,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

/// A certificate and its key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    /// A new CA named `name`, with a fresh key.
    ///
    /// # Panics
    ///
    /// If rcgen cannot make it.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("a CA certificate");
        TestCa {
            issuer: Issuer::new(params, key),
            cert,
        }
    }

    /// The CA certificate, as PEM (for `--tls-client-ca` or a client's
    /// trust).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1, whose
    /// `common_name` tells one certificate from another.
    ///
    /// # Panics
    ///
    /// If rcgen cannot make it.
    pub fn server(&self, common_name: &str) -> Issued {
        self.issue(
            common_name,
            vec![
                SanType::DnsName("localhost".try_into().expect("a DNS name")),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate naming `identity`: an email SAN if it has an
    /// `@`, else a DNS SAN; `None` names nobody but the common name.
    ///
    /// # Panics
    ///
    /// If rcgen cannot make it.
    pub fn client(&self, common_name: &str, identity: Option<&str>) -> Issued {
        let sans = match identity {
            Some(id) if id.contains('@') => {
                vec![SanType::Rfc822Name(id.try_into().expect("an email"))]
            }
            Some(id) => vec![SanType::DnsName(id.try_into().expect("a DNS name"))],
            None => Vec::new(),
        };
        self.issue(common_name, sans, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Issued {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A temporary folder, removed with everything in it on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty folder under the system's temporary folder.
    ///
    /// # Panics
    ///
    /// If it cannot be created.
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "relay-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temporary folder");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` in the folder (replacing it); returns
    /// its path.
    ///
    /// # Panics
    ///
    /// If it cannot be written.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write a temporary file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A client configuration that trusts `ca_pem` and, with `identity`, shows
/// that certificate (mutual TLS). Uses ring, like the server.
///
/// # Panics
///
/// If the PEM does not parse.
pub fn client_config(ca_pem: &str, identity: Option<&Issued>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("a CA certificate");
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(issued) => {
            let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("certificate PEM");
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("a client certificate")
        }
    };
    Arc::new(config)
}

impl OverTcp for StreamOwned<ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// A blocking frame connection over TLS, for tests.
#[derive(Debug)]
pub struct TlsClient {
    stream: StreamOwned<ClientConnection, TcpStream>,
    decoder: Decoder,
}

impl TlsClient {
    /// Connects to `addr` as `localhost` and completes the handshake.
    /// An error when the server refuses it (TLS 1.3 clients learn of a
    /// refused client certificate only at their first read).
    pub fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<TlsClient> {
        let tcp = TcpStream::connect_timeout(&addr, WAIT)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(WAIT))?;
        let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient {
            stream,
            decoder: Decoder::new(CLIENT_MAX_FRAME),
        })
    }

    /// Connects and says HELLO; returns the client and the server's answer.
    ///
    /// # Panics
    ///
    /// If the handshake fails or the answer is not a HELLO.
    pub fn hello(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        hello: Value,
    ) -> (TlsClient, HelloReply) {
        let mut client =
            TlsClient::connect(addr, config).unwrap_or_else(|e| panic!("TLS connect: {e}"));
        client.send_json(MessageType::Hello, &hello);
        let frame = client.expect(MessageType::Hello);
        let reply = serde_json::from_slice(&frame.payload)
            .unwrap_or_else(|e| panic!("the HELLO answer does not parse ({e}): {}", frame.text()));
        (client, reply)
    }

    /// The TCP socket under the TLS session.
    pub fn tcp(&self) -> &TcpStream {
        &self.stream.sock
    }

    /// What the handshake agreed, for checks on the server's certificate.
    pub fn connection(&self) -> &ClientConnection {
        &self.stream.conn
    }

    /// Writes bytes as they are, encrypted.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// # Panics
    ///
    /// If the write fails.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes)
            .unwrap_or_else(|e| panic!("TLS write: {e}"));
    }

    /// # Panics
    ///
    /// If the write fails.
    pub fn send_json(&mut self, kind: MessageType, value: &impl Serialize) {
        self.send_raw(&json_frame(kind, value));
    }

    /// The next frame, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<OwnedFrame, RecvError> {
        recv_frame(&mut self.decoder, &mut self.stream, timeout)
    }

    /// The next frame, which must be of `kind`.
    ///
    /// # Panics
    ///
    /// If none comes within [`WAIT`] or another kind comes.
    pub fn expect(&mut self, kind: MessageType) -> OwnedFrame {
        let frame = self
            .recv(WAIT)
            .unwrap_or_else(|e| panic!("expected {kind} over TLS: {e}"));
        assert_eq!(
            frame.kind,
            kind,
            "expected {kind}, got {} {}",
            frame.kind,
            frame.text()
        );
        frame
    }

    /// The next frame of `kind`, skipping MESSAGE frames before it.
    ///
    /// # Panics
    ///
    /// As [`TlsClient::expect`].
    pub fn expect_skipping_messages(&mut self, kind: MessageType) -> OwnedFrame {
        loop {
            let frame = self
                .recv(WAIT)
                .unwrap_or_else(|e| panic!("expected {kind} over TLS: {e}"));
            if frame.kind == kind {
                return frame;
            }
            assert_eq!(
                frame.kind,
                MessageType::Message,
                "expected {kind}, got {} {}",
                frame.kind,
                frame.text()
            );
        }
    }

    /// Joins `room`; returns the answer.
    pub fn join(&mut self, room: &str) -> Value {
        self.send_json(MessageType::JoinRoom, &json!({ "room": room }));
        self.expect_skipping_messages(MessageType::JoinRoom).json()
    }

    pub fn publish(&mut self, room: &str, content: Value) {
        self.send_json(
            MessageType::Message,
            &json!({ "room": room, "content": content }),
        );
    }

    /// Frames until the server ends the connection (close_notify, a FIN, a
    /// reset or a TLS alert); `Err` if it does not within `timeout`.
    pub fn until_close(&mut self, timeout: Duration) -> Result<Vec<OwnedFrame>, RecvError> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Ok(frame) => frames.push(frame),
                Err(RecvError::Eof | RecvError::Io(_)) => return Ok(frames),
                Err(error) => return Err(error),
            }
        }
    }
}
