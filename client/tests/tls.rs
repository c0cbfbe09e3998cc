//! The client library and the `relay` binary over TLS, against a real
//! server's TLS port (SPEC.md 11.3). Certificates are made in the test.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use client::{Client, ClientError, Event, Options, TlsOptions};
use server::{Config, RunningServer, TlsConfig};
use testkit::start_server_with;
use testkit::tls::{TempDir, TestCa};

mod support;

use support::cli::wait_exit;

const T: Duration = Duration::from_secs(10);

/// A server with a TLS port, and the file of the CA that signed it.
struct TlsServer {
    server: RunningServer,
    ca_file: PathBuf,
    ca: TestCa,
    dir: TempDir,
}

impl TlsServer {
    fn start(client_ca: Option<&TestCa>) -> TlsServer {
        let dir = TempDir::new("client-tls");
        let ca = TestCa::new("client test CA");
        let issued = ca.server("relay");
        let cert = dir.write("cert.pem", &issued.cert_pem);
        let key = dir.write("key.pem", &issued.key_pem);
        let ca_file = dir.write("ca.pem", ca.pem());
        let client_ca = client_ca.map(|ca| dir.write("client-ca.pem", ca.pem()));
        let server = start_server_with(Config {
            tls: Some(Box::new(TlsConfig {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                cert,
                key,
                client_ca,
                handshake_timeout: Duration::from_secs(30),
            })),
            ..Config::default()
        });
        TlsServer {
            server,
            ca_file,
            ca,
            dir,
        }
    }

    fn tls_addr(&self) -> SocketAddr {
        self.server.tls_addr().unwrap()
    }

    fn options(&self) -> Options {
        Options {
            tls: Some(TlsOptions {
                ca_file: Some(self.ca_file.clone()),
                ..TlsOptions::default()
            }),
            ..Options::default()
        }
    }
}

fn next_message(client: &Client) -> client::Message {
    client
        .wait_for(T, "a message", |event| match event {
            Event::Message(message) => Some(message.clone()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_tls_client_and_a_plain_client_chat() {
    let tls = TlsServer::start(None);
    let secure = Client::connect_host("localhost", tls.tls_addr().port(), &tls.options()).unwrap();
    let plain = Client::connect(tls.server.local_addr()).unwrap();
    secure.hello_as(Some("sam"), false, T).unwrap();
    plain.hello_as(Some("pat"), false, T).unwrap();
    secure.join_and_wait("lobby", T).unwrap();
    plain.join_and_wait("lobby", T).unwrap();

    secure.send_text("lobby", "over TLS").unwrap();
    let got = next_message(&plain);
    assert_eq!(got.body.as_text().as_deref(), Some("over TLS"));
    assert_eq!(got.user.as_deref(), Some("sam"));

    // Larger than one TLS record (16 KiB), both ways.
    let big = "x".repeat(100_000);
    plain.send_text("lobby", &big).unwrap();
    assert_eq!(next_message(&secure).body.as_text(), Some(big));
    secure.send_binary("lobby", &[0, 1, 0xfe, 0xff]).unwrap();
    assert_eq!(
        next_message(&plain).body.as_bytes(),
        Some(&[0u8, 1, 0xfe, 0xff][..])
    );

    assert!(secure.heartbeat_and_wait(T).is_ok());
    assert!(secure.stats(T).is_ok());
    secure.close();
}

#[test]
fn a_server_certificate_from_an_unknown_ca_is_refused_with_advice() {
    let tls = TlsServer::start(None);
    // The public web's roots: the test CA is not among them.
    let options = Options {
        tls: Some(TlsOptions::default()),
        ..Options::default()
    };
    let error = Client::connect_host("127.0.0.1", tls.tls_addr().port(), &options).unwrap_err();
    assert!(matches!(error, ClientError::Tls(_)), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("TLS handshake failed"), "{text}");
    assert!(text.contains("--ca"), "{text}");

    // The right CA, but the wrong name.
    let wrong_name = Options {
        tls: Some(TlsOptions {
            ca_file: Some(tls.ca_file.clone()),
            server_name: Some("relay.example.org".into()),
            client_cert: None,
        }),
        ..Options::default()
    };
    let error = Client::connect_host("127.0.0.1", tls.tls_addr().port(), &wrong_name).unwrap_err();
    assert!(
        error.to_string().contains("connect with the name"),
        "{error}"
    );
}

#[test]
fn tls_to_the_plain_port_fails_the_handshake_instead_of_hanging() {
    let tls = TlsServer::start(None);
    let error = Client::connect_host("127.0.0.1", tls.server.local_addr().port(), &tls.options())
        .unwrap_err();
    assert!(matches!(error, ClientError::Tls(_)), "{error:?}");
    assert!(
        error.to_string().contains("TLS handshake failed"),
        "{error}"
    );
}

#[test]
fn a_client_certificate_is_presented_for_mutual_tls() {
    let client_ca = TestCa::new("client CA");
    let tls = TlsServer::start(Some(&client_ca));
    let issued = client_ca.client("ann", Some("ann@example.com"));
    let cert = tls.dir.write("client.pem", &issued.cert_pem);
    let key = tls.dir.write("client-key.pem", &issued.key_pem);
    let mut options = tls.options();
    if let Some(settings) = options.tls.as_mut() {
        settings.client_cert = Some((cert, key));
    }
    let client = Client::connect_host("localhost", tls.tls_addr().port(), &options).unwrap();
    // The certificate names the user; a HELLO without a name takes it.
    client.hello_as(None, false, T).unwrap();
    client.join_and_wait("r", T).unwrap();
    client.close();

    // Without one, the server refuses the session: at the handshake, or (TLS
    // 1.3) with an alert at the first read.
    let without = Client::connect_host("localhost", tls.tls_addr().port(), &tls.options());
    if let Ok(client) = without {
        assert!(client.hello_as(Some("ann"), false, T).is_err());
    }
    // A missing key file is named.
    let mut broken = tls.options();
    if let Some(settings) = broken.tls.as_mut() {
        settings.client_cert = Some((tls.ca_file.clone(), tls.dir.path().join("nope.pem")));
    }
    let error = Client::connect_host("localhost", tls.tls_addr().port(), &broken).unwrap_err();
    assert!(error.to_string().contains("nope.pem"), "{error}");
    drop(tls.ca);
}

#[test]
fn the_cli_speaks_tls_from_a_relays_url() {
    let tls = TlsServer::start(None);
    let url = format!("relays://localhost:{}", tls.tls_addr().port());
    let run = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(args)
            .env_remove("NO_COLOR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            let _ = stdin.write_all(b"/join r\nhello\n");
        }
        let status = wait_exit(&mut child);
        let output = child.wait_with_output().unwrap();
        (
            status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let ca = tls.ca_file.to_str().unwrap();
    let (status, out, err) = run(&[&url, "--ca", ca, "--name", "tia", "--echo"]);
    assert!(status.success(), "{err}");
    assert!(
        err.starts_with(&format!("connected to {url} as tia")),
        "{err}"
    );
    assert!(err.contains("joined r"), "{err}");
    assert!(
        out.starts_with("[r] tia (") && out.contains("hello"),
        "{out}"
    );

    // --tls with the host and port as arguments does the same.
    let port = tls.tls_addr().port().to_string();
    let (status, _, err) = run(&["--tls", "--ca", ca, "localhost", &port, "--name", "tia"]);
    assert!(status.success(), "{err}");
    assert!(
        err.starts_with(&format!("connected to {url} as tia")),
        "{err}"
    );

    // Without the CA the certificate is not trusted, and the error says what
    // to do.
    let (status, _, err) = run(&[&url, "--name", "tia"]);
    assert!(!status.success());
    assert!(err.contains("--ca"), "{err}");
}
