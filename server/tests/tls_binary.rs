//! The server binary's TLS flags: a TLS port beside the plain one, mutual
//! TLS with the client's identity in the connect log, a reload on SIGHUP
//! under a live connection, and startup errors that name the flag and exit
//! 2.

#![allow(clippy::unwrap_used)]

use std::io::BufReader;
use std::process::{Command, Stdio};

use protocol::MessageType;
use serde_json::json;
use testkit::tls::{TempDir, TestCa, TlsClient, client_config};
use testkit::{Raw, wait_until};

mod support;

use support::{Log, address, signal};

#[test]
fn mutual_tls_and_a_sighup_reload_under_a_live_connection() {
    let dir = TempDir::new("tls-binary");
    let ca = TestCa::new("Server CA");
    let clients = TestCa::new("Client CA");
    let first = ca.server("first");
    let cert = dir.write("cert.pem", &first.cert_pem);
    let key = dir.write("key.pem", &first.key_pem);
    let client_ca = dir.write("clients.pem", clients.pem());
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0", "--tls-addr", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--tls-client-ca")
        .arg(&client_ca)
        .args(["--tls-handshake-timeout", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let plain = address(&mut stdout, "listening on ");
    let secure = address(&mut stdout, "listening for TLS on ");
    let (log, collector) = Log::follow(child.stderr.take().unwrap());

    let ann = clients.client("Ann", Some("ann@example.com"));
    let (mut tls, _) = TlsClient::hello(
        secure,
        client_config(&ca.pem(), Some(&ann)),
        json!({"userId": "ann@example.com"}),
    );
    tls.join("r");
    wait_until("the identity in the connect log", || {
        log.contains("client certificate identity \"ann@example.com\"")
    });
    let (mut watcher, _) = Raw::hello(plain, json!({"userId": "pat"}));
    watcher.join("r");

    // New files, then SIGHUP: the live TLS connection chats on.
    let second_ca = TestCa::new("Second server CA");
    let second = second_ca.server("second");
    std::fs::write(&cert, &second.cert_pem).unwrap();
    std::fs::write(&key, &second.key_pem).unwrap();
    signal(&child, libc::SIGHUP);
    wait_until("the reload logged", || {
        log.contains("TLS certificate reloaded")
    });
    tls.publish("r", json!({"after": "reload"}));
    let delivery = watcher.expect(MessageType::Message).json();
    assert_eq!(delivery["content"]["after"], "reload");
    // The certificate names the sender.
    assert_eq!(delivery["user"], "ann@example.com");
    // A new client trusting the second CA gets in.
    let (mut bob, _) = TlsClient::hello(
        secure,
        client_config(
            &second_ca.pem(),
            Some(&clients.client("Bob", Some("bob.example.com"))),
        ),
        json!({}),
    );
    bob.join("r");
    wait_until("bob's identity logged", || {
        log.contains("client certificate identity \"bob.example.com\"")
    });

    // A broken file on SIGHUP is logged and changes nothing.
    std::fs::write(&key, "garbage").unwrap();
    signal(&child, libc::SIGHUP);
    wait_until("the failed reload logged", || {
        log.contains("TLS reload failed, keeping the certificate in force: --tls-key")
    });
    let (_carl, _) = TlsClient::hello(
        secure,
        client_config(
            &second_ca.pem(),
            Some(&clients.client("Carl", Some("carl@example.com"))),
        ),
        json!({}),
    );

    signal(&child, libc::SIGTERM);
    let error = tls
        .expect_skipping_messages(MessageType::Error)
        .expect_error();
    assert_eq!(error.code.as_str(), "SHUTTING_DOWN");
    let status = child.wait().unwrap();
    collector.join().unwrap();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        log.text()
    );
}

/// Runs the binary with `args` (plain port on 127.0.0.1:0); returns its exit
/// code and stderr.
fn run(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn unusable_tls_flags_name_the_flag_and_exit_2() {
    let dir = TempDir::new("tls-flags");
    let ca = TestCa::new("CA");
    let one = ca.server("one");
    let other = ca.server("other");
    let cert = dir.write("cert.pem", &one.cert_pem);
    let key = dir.write("key.pem", &one.key_pem);
    let wrong_key = dir.write("other-key.pem", &other.key_pem);
    let missing = dir.path().join("missing.pem");
    let tls = |cert: &std::path::Path, key: &std::path::Path| {
        run(&[
            "--tls-addr".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ])
    };

    let (code, stderr) = tls(&cert, &missing);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.starts_with("relay: --tls-key "), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");

    // A certificate file as the key: no key in it.
    let (code, stderr) = tls(&cert, &cert);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--tls-key") && stderr.contains("no private key"),
        "{stderr}"
    );

    // A key file as the certificate: no certificate in it.
    let (code, stderr) = tls(&key, &key);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("relay: --tls-cert ") && stderr.contains("no certificate"),
        "{stderr}"
    );

    let (code, stderr) = tls(&cert, &wrong_key);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--tls-key") && stderr.contains("does not match"),
        "{stderr}"
    );

    let (code, stderr) = run(&["--tls-cert".as_ref(), cert.as_os_str()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("go together"), "{stderr}");
}
