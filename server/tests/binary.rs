//! The server binary: flags, its `listening on` line, and a graceful stop on
//! SIGTERM that tells clients, exits 0 and logs the final counters.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use protocol::MessageType;
use serde_json::json;
use testkit::{Raw, WAIT};

mod support;

use support::{listening_on, signal};

#[test]
fn sigterm_stops_the_server_gracefully() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let addr = listening_on(&mut stdout);
    let (mut client, _) = Raw::hello(addr, json!({"userId": "ann"}));
    client.join("r");

    // SAFETY: kill only sends a signal to the child we started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let error = client
        .expect_skipping_messages(MessageType::Error)
        .expect_error();
    assert_eq!(error.code.as_str(), "SHUTTING_DOWN");
    client.expect_close();
    drop(client);

    let (tx, rx) = std::sync::mpsc::channel();
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        let status = child.wait().unwrap();
        let _ = tx.send((status, log));
    });
    let (status, log) = rx.recv_timeout(WAIT).expect("the server did not exit");
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("stopped: 1 connections served"), "{log}");
    assert!(log.contains("c1: disconnected"), "{log}");
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let output = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0", "--max-frame", "2"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("relay: --max-frame must be at least"),
        "{stderr}"
    );
}

/// A file for one test, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("relay-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn auth_tokens_turn_authentication_on() {
    let tokens = TempFile::new(
        "tokens",
        "# services\nbinary-test-token-0123456789 svc join=lobby\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0", "--auth-tokens"])
        .arg(&tokens.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let addr = listening_on(&mut stdout);
    let mut refused = Raw::connect(addr);
    refused.send_json(
        MessageType::Hello,
        &json!({"token": "binary-test-token-wrong"}),
    );
    refused.expect_fatal("AUTH_FAILED");
    let (mut svc, _) = Raw::hello(addr, json!({"token": "binary-test-token-0123456789"}));
    assert_eq!(svc.join("lobby")["status"], "joined");
    svc.send_json(MessageType::JoinRoom, &json!({"room": "elsewhere"}));
    svc.expect_error("FORBIDDEN");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_bad_tokens_file_is_a_startup_error_that_names_the_line() {
    let tokens = TempFile::new(
        "bad-tokens",
        "first-secret-token-0123 ann\nfirst-secret-token-0123 bob\n",
    );
    let output = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0", "--auth-tokens"])
        .arg(&tokens.0)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let expected = format!(
        "relay: --auth-tokens {}:2: the same token as line 1; each token must be unique",
        tokens.0.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("first-secret-token"), "{stderr}");
    let missing = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--auth-tokens",
            "/nonexistent/tokens",
        ])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8(missing.stderr).unwrap();
    assert!(
        stderr.contains("relay: --auth-tokens /nonexistent/tokens: cannot be read"),
        "{stderr}"
    );
}

#[test]
fn without_authentication_the_server_warns_that_anyone_may_connect() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    // The warning comes before the "accepting up to" line, which always
    // comes: reading stops there whatever happened.
    while !log.contains("accepting up to") {
        if stderr.read_line(&mut log).unwrap() == 0 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.contains("WARN  authentication is off: anyone"), "{log}");
}

/// The server's stderr, line by line, on a channel (so a test can wait for
/// a log line without blocking forever).
fn log_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a log line containing `needle`; fails after [`WAIT`].
fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no log line with {needle:?}"),
        }
    }
}

#[test]
fn sighup_rereads_the_tokens_file_and_keeps_the_old_one_if_the_new_is_broken() {
    const OLD: &str = "binary-test-token-old-0123456789";
    const NEW: &str = "binary-test-token-new-0123456789";
    let tokens = TempFile::new("reload-tokens", &format!("{OLD} old\n"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0", "--auth-tokens"])
        .arg(&tokens.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = log_lines(&mut child);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let addr = listening_on(&mut stdout);
    Raw::hello(addr, json!({"token": OLD}));

    std::fs::write(&tokens.0, format!("{NEW} new\n")).unwrap();
    signal(&child, libc::SIGHUP);
    wait_for_line(&lines, "reload: 1 tokens from");
    Raw::hello(addr, json!({"token": NEW}));
    let mut removed = Raw::connect(addr);
    removed.send_json(MessageType::Hello, &json!({"token": OLD}));
    removed.expect_fatal("AUTH_FAILED");

    std::fs::write(&tokens.0, "a-token-without-a-user\n").unwrap();
    signal(&child, libc::SIGHUP);
    let line = wait_for_line(&lines, "reload: tokens file refused");
    assert!(line.contains(":1:"), "the error names the line: {line}");
    assert!(
        !line.contains("a-token-without-a-user"),
        "a token in the log: {line}"
    );
    Raw::hello(addr, json!({"token": NEW}));

    let _ = child.kill();
    let _ = child.wait();
}

/// 32 random bytes, as 64 hex digits (a secret a file can hold as text).
fn random_hex_secret() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An Ed25519 pair: the public key's PEM, and the key that signs.
fn ed25519() -> (String, jsonwebtoken::EncodingKey) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let signing = jsonwebtoken::EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap();
    (pair.public_key_pem(), signing)
}

fn jwt(algorithm: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        &json!({"sub": "ann", "exp": exp}),
        key,
    )
    .unwrap()
}

#[test]
fn sighup_rereads_the_jwt_keys_and_keeps_the_old_ones_if_the_new_are_broken() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let (old_secret, new_secret) = (random_hex_secret(), random_hex_secret());
    let ((old_public, old_signing), (new_public, new_signing)) = (ed25519(), ed25519());
    let secret_file = TempFile::new("reload-jwt-secret", &format!("{old_secret}\n"));
    let key_file = TempFile::new("reload-jwt-key.pem", &old_public);
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0", "--jwt-secret-file"])
        .arg(&secret_file.0)
        .arg("--jwt-public-key")
        .arg(&key_file.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = log_lines(&mut child);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let addr = listening_on(&mut stdout);
    let hs256 = |secret: &str| {
        jwt(
            Algorithm::HS256,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
    };
    let refused = |token: String| {
        let mut client = Raw::connect(addr);
        client.send_json(MessageType::Hello, &json!({ "token": token }));
        client.expect_fatal("AUTH_FAILED");
    };
    // The file's newline is not part of the secret.
    Raw::hello(addr, json!({ "token": hs256(&old_secret) }));
    Raw::hello(
        addr,
        json!({ "token": jwt(Algorithm::EdDSA, &old_signing) }),
    );
    refused(jwt(Algorithm::EdDSA, &new_signing));

    std::fs::write(&secret_file.0, &new_secret).unwrap();
    std::fs::write(&key_file.0, &new_public).unwrap();
    signal(&child, libc::SIGHUP);
    wait_for_line(&lines, "reload: JWT keys reread");
    Raw::hello(addr, json!({ "token": hs256(&new_secret) }));
    Raw::hello(
        addr,
        json!({ "token": jwt(Algorithm::EdDSA, &new_signing) }),
    );
    refused(hs256(&old_secret));
    refused(jwt(Algorithm::EdDSA, &old_signing));

    // A broken key file: both new keys stay in force, and the log says why.
    std::fs::write(&secret_file.0, &old_secret).unwrap();
    std::fs::write(&key_file.0, "not a key").unwrap();
    signal(&child, libc::SIGHUP);
    let line = wait_for_line(&lines, "reload: JWT keys refused");
    assert!(line.contains("--jwt-public-key"), "names the flag: {line}");
    assert!(
        !line.contains(&old_secret) && !line.contains(&new_secret),
        "a secret in the log: {line}"
    );
    Raw::hello(addr, json!({ "token": hs256(&new_secret) }));
    refused(hs256(&old_secret));
    // An empty secret file is refused the same way.
    std::fs::write(&key_file.0, &new_public).unwrap();
    std::fs::write(&secret_file.0, "").unwrap();
    signal(&child, libc::SIGHUP);
    let line = wait_for_line(&lines, "reload: JWT keys refused");
    assert!(line.contains("is empty"), "{line}");
    Raw::hello(addr, json!({ "token": hs256(&new_secret) }));

    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_second_signal_during_the_drain_exits_at_once() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--addr", "127.0.0.1:0", "--drain-timeout", "3600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = log_lines(&mut child);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let addr = listening_on(&mut stdout);
    // Two clients: one is told at once, the other not for 30 minutes.
    let (told_tx, told) = std::sync::mpsc::channel();
    for _ in 0..2 {
        let (client, _) = Raw::hello(addr, json!({}));
        let mut conn: testkit::Conn =
            testkit::Conn::from_stream(client.stream().try_clone().unwrap()).unwrap();
        let told_tx = told_tx.clone();
        std::thread::spawn(move || {
            // The client told later sees the forced exit as EOF instead.
            if let Ok(frame) = conn.recv(WAIT) {
                let _ = told_tx.send(frame.expect_error());
            }
            drop(client);
        });
    }

    signal(&child, libc::SIGTERM);
    wait_for_line(&lines, "SIGTERM received; draining");
    let error = told.recv_timeout(WAIT).expect("no client was told");
    assert_eq!(error.code.as_str(), "SHUTTING_DOWN", "{error:?}");
    assert!(error.retry_after_ms.is_some(), "{error:?}");
    signal(&child, libc::SIGINT);

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait().unwrap());
    });
    let status = rx.recv_timeout(WAIT).expect("the server did not exit");
    assert_eq!(status.code(), Some(130), "{status}");
}
