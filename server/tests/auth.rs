//! Authentication and permissions end to end (SPEC.md 11.1, 11.2): static
//! tokens and JWTs (HS256, ES256, EdDSA) against a real server, the one
//! AUTH_FAILED for every bad token, impersonation refused, FORBIDDEN joins
//! and publishes, refresh, and expiry. Keys and secrets are made here, per
//! run; none is committed.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use protocol::{BinaryPublish, ErrorCode, Flags, MessageType};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};
use server::auth::{AUTH_FAILED_MESSAGE, AuthConfig, JwtVerifier, TokenTable};
use testkit::{Raw, WAIT, raw_frame, start_server_with, wait_until};

/// Static tokens: a service that may do everything, and "ann" twice, once
/// with everything and once limited to the lobby (for refresh).
const TOKENS: &str = "\
# test tokens
svc-token-0123456789abcdef  svc
ann-token-0123456789abcdef  ann
ann-lobby-0123456789abcdef  ann  join=lobby publish=lobby
bob-token-0123456789abcdef  bob
limited-0123456789abcdef    lim  join=chat.*,lobby publish=chat.general
";

fn with_auth(auth: AuthConfig) -> server::RunningServer {
    start_server_with(server::Config {
        auth,
        ..Default::default()
    })
}

fn static_server() -> server::RunningServer {
    with_auth(AuthConfig {
        tokens: Some(TokenTable::parse(TOKENS, "test tokens").unwrap()),
        jwt: None,
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn random_secret() -> Vec<u8> {
    let mut secret = vec![0; 32];
    SystemRandom::new().fill(&mut secret).unwrap();
    secret
}

fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(algorithm), claims, key).unwrap()
}

/// Sends a HELLO and expects the fatal AUTH_FAILED; returns its message.
fn refused(addr: std::net::SocketAddr, hello: Value) -> String {
    let mut client = Raw::connect(addr);
    client.send_json(MessageType::Hello, &hello);
    let error = client.expect_error("AUTH_FAILED");
    assert!(error.fatal);
    client.expect_close();
    error.message
}

fn accepted(addr: std::net::SocketAddr, hello: Value) -> Raw {
    let (client, reply) = Raw::hello(addr, hello);
    assert_eq!(reply.status, "connected");
    client
}

/// Every way of failing gets the one message, and each is counted.
fn assert_one_message(server: &server::RunningServer, messages: &[String]) {
    for message in messages {
        assert_eq!(message, AUTH_FAILED_MESSAGE);
    }
    wait_until("the refused connections to close", || {
        server.counters().errors_sent(ErrorCode::AuthFailed) == messages.len() as u64
    });
}

#[test]
fn static_tokens_missing_wrong_and_valid() {
    let server = static_server();
    let addr = server.local_addr();
    let messages = [
        refused(addr, json!({})),
        refused(addr, json!({"userId": "svc"})),
        refused(addr, json!({"token": "svc-token-0123456789abcdeX"})),
        refused(addr, json!({"token": "svc-token"})),
        refused(addr, json!({"token": ""})),
    ];
    assert_one_message(&server, &messages);
    let mut client = accepted(addr, json!({"token": "svc-token-0123456789abcdef"}));
    assert_eq!(client.join("anything")["status"], "joined");
}

#[test]
fn a_request_before_an_authenticated_hello_is_still_hello_required() {
    let server = static_server();
    let mut client = Raw::connect(server.local_addr());
    client.send_json(MessageType::JoinRoom, &json!({"room": "r"}));
    client.expect_fatal("HELLO_REQUIRED");
}

#[test]
fn jwt_hs256_missing_wrong_expired_and_valid() {
    let secret = random_secret();
    let server = with_auth(AuthConfig {
        tokens: None,
        jwt: Some(JwtVerifier::hs256(&secret, 0)),
    });
    let addr = server.local_addr();
    let key = EncodingKey::from_secret(&secret);
    let now = now_secs();
    let valid = sign(
        Algorithm::HS256,
        &key,
        &json!({"sub": "ann", "exp": now + 600}),
    );
    let expired = sign(
        Algorithm::HS256,
        &key,
        &json!({"sub": "ann", "exp": now - 5}),
    );
    let other_key = EncodingKey::from_secret(&random_secret());
    let wrong = sign(
        Algorithm::HS256,
        &other_key,
        &json!({"sub": "ann", "exp": now + 600}),
    );
    let no_exp = sign(Algorithm::HS256, &key, &json!({"sub": "ann"}));
    let messages = [
        refused(addr, json!({})),
        refused(addr, json!({"token": wrong})),
        refused(addr, json!({"token": expired})),
        refused(addr, json!({"token": no_exp})),
        refused(addr, json!({"token": "a.b.c"})),
    ];
    assert_one_message(&server, &messages);
    let mut ann = accepted(addr, json!({"token": valid}));
    let mut bob = accepted(
        addr,
        json!({"token": sign(Algorithm::HS256, &key, &json!({"sub": "bob", "exp": now + 600}))}),
    );
    ann.join("r");
    bob.join("r");
    let joined = ann.expect(MessageType::Message).json();
    assert_eq!(joined["type"], "userJoined");
    assert_eq!(joined["user"], "bob");
}

/// A client's view of one asymmetric key pair: the server gets the public
/// PEM, the test signs with the private one.
fn key_pair(algorithm: &'static rcgen::SignatureAlgorithm) -> (String, String) {
    let pair = rcgen::KeyPair::generate_for(algorithm).unwrap();
    (pair.public_key_pem(), pair.serialize_pem())
}

#[test]
fn jwt_es256_and_eddsa_valid_expired_and_forged() {
    for (algorithm, jwt_algorithm) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
        (&rcgen::PKCS_ED25519, Algorithm::EdDSA),
    ] {
        let (public, private) = key_pair(algorithm);
        let verifier = JwtVerifier::new(0)
            .with_public_key_pem(public.as_bytes(), None)
            .unwrap();
        let server = with_auth(AuthConfig {
            tokens: None,
            jwt: Some(verifier),
        });
        let addr = server.local_addr();
        let key = match jwt_algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
            _ => EncodingKey::from_ed_pem(private.as_bytes()).unwrap(),
        };
        let now = now_secs();
        let valid = sign(
            jwt_algorithm,
            &key,
            &json!({"sub": "ann", "exp": now + 600}),
        );
        let expired = sign(jwt_algorithm, &key, &json!({"sub": "ann", "exp": now - 5}));
        // Algorithm confusion: HS256 keyed with the public key's bytes.
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(public.as_bytes()),
            &json!({"sub": "ann", "exp": now + 600}),
        );
        let (other_public, other_private) = key_pair(algorithm);
        assert_ne!(other_public, public);
        let other_key = match jwt_algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(other_private.as_bytes()).unwrap(),
            _ => EncodingKey::from_ed_pem(other_private.as_bytes()).unwrap(),
        };
        let wrong = sign(
            jwt_algorithm,
            &other_key,
            &json!({"sub": "ann", "exp": now + 600}),
        );
        let messages = [
            refused(addr, json!({})),
            refused(addr, json!({"token": expired})),
            refused(addr, json!({"token": forged})),
            refused(addr, json!({"token": wrong})),
        ];
        assert_one_message(&server, &messages);
        let mut ann = accepted(addr, json!({"token": valid}));
        assert_eq!(ann.join("r")["status"], "joined");
    }
}

#[test]
fn static_tokens_and_jwt_together() {
    let secret = random_secret();
    let server = with_auth(AuthConfig {
        tokens: Some(TokenTable::parse(TOKENS, "test tokens").unwrap()),
        jwt: Some(JwtVerifier::hs256(&secret, 0)),
    });
    let addr = server.local_addr();
    accepted(addr, json!({"token": "svc-token-0123456789abcdef"}));
    let jwt = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&secret),
        &json!({"sub": "ann", "exp": now_secs() + 600}),
    );
    accepted(addr, json!({"token": jwt}));
    assert_eq!(refused(addr, json!({"token": "nope"})), AUTH_FAILED_MESSAGE);
}

#[test]
fn impersonation_is_refused_and_deliveries_carry_the_tokens_user() {
    let server = static_server();
    let addr = server.local_addr();
    let message = refused(
        addr,
        json!({"userId": "bob", "token": "ann-token-0123456789abcdef"}),
    );
    assert!(message.contains("userId"), "{message}");
    let mut ann = accepted(
        addr,
        json!({"userId": "ann", "token": "ann-token-0123456789abcdef", "echo": true}),
    );
    // No userId at all: the token's user all the same.
    let mut bob = accepted(addr, json!({"token": "bob-token-0123456789abcdef"}));
    ann.join("r");
    bob.join("r");
    let joined = ann.expect(MessageType::Message).json();
    assert_eq!(joined["type"], "userJoined");
    assert_eq!(joined["user"], "bob");
    bob.publish("r", json!("hi"));
    let delivery = ann.expect(MessageType::Message).json();
    assert_eq!(delivery["user"], "bob");
    assert_eq!(delivery["content"], "hi");
    // A later HELLO without a token keeps the credentials (SPEC.md 5.2).
    let stats = ann.stats();
    assert_eq!(stats.errors.get("AUTH_FAILED"), Some(&1));
    ann.publish("r", json!("me"));
    assert_eq!(ann.expect(MessageType::Message).json()["user"], "ann");
    assert_eq!(bob.expect(MessageType::Message).json()["user"], "ann");
}

#[test]
fn forbidden_joins_and_publishes_are_refused_and_the_connection_stays() {
    let server = static_server();
    let addr = server.local_addr();
    let mut lim = accepted(addr, json!({"token": "limited-0123456789abcdef"}));
    let mut svc = accepted(addr, json!({"token": "svc-token-0123456789abcdef"}));
    for room in ["secret", "chat", "chatter.x", "lobby2"] {
        lim.send_json(MessageType::JoinRoom, &json!({"room": room, "id": 3}));
        let error = lim.expect_error("FORBIDDEN");
        assert!(!error.fatal);
        assert_eq!(error.room.as_deref(), Some(room));
        assert_eq!(error.id, Some(protocol::RequestId::Number(3)));
    }
    for room in ["chat.general", "chat.random", "lobby"] {
        svc.join(room);
    }
    for room in ["chat.general", "chat.random", "lobby"] {
        assert_eq!(lim.join(room)["status"], "joined");
        assert_eq!(
            svc.expect(MessageType::Message).json()["type"],
            "userJoined"
        );
    }
    assert_eq!(
        server.counters().errors_sent(ErrorCode::Forbidden),
        4,
        "a refused JOIN joined nothing"
    );
    // Publishing: only chat.general, JSON or BINARY.
    for room in ["chat.random", "lobby"] {
        lim.send_json(
            MessageType::Message,
            &json!({"room": room, "content": "no", "id": "m1"}),
        );
        let error = lim.expect_error("FORBIDDEN");
        assert!(!error.fatal);
        assert_eq!(error.room.as_deref(), Some(room));
        assert_eq!(error.id, Some(protocol::RequestId::Text("m1".into())));
        let mut payload = Vec::new();
        BinaryPublish { room, body: b"no" }
            .encode(&mut payload)
            .unwrap();
        lim.send_raw(&raw_frame(MessageType::Message, Flags::BINARY, &payload));
        let error = lim.expect_error("FORBIDDEN");
        assert_eq!(error.room.as_deref(), Some(room));
    }
    lim.publish("chat.general", json!("yes"));
    let delivery = svc.expect(MessageType::Message).json();
    assert_eq!(delivery["room"], "chat.general");
    assert_eq!(delivery["content"], "yes");
    assert_eq!(delivery["user"], "lim");
    // Nothing refused reached anyone: the next frame svc gets is its own
    // HELLO answer.
    svc.send_json(MessageType::Hello, &json!({}));
    svc.expect(MessageType::Hello);
    // Not joined at all: NOT_IN_ROOM, as without authentication.
    lim.publish("secret", json!(1));
    lim.expect_error("NOT_IN_ROOM");
}

fn hs_server(secret: &[u8]) -> server::RunningServer {
    with_auth(AuthConfig {
        tokens: None,
        jwt: Some(JwtVerifier::hs256(secret, 0)),
    })
}

/// Waits for the wall clock to pass `unix_secs` (not for another thread:
/// the server's deadline is this clock).
fn wait_for_clock(unix_secs: u64) {
    let deadline = Instant::now() + WAIT;
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        <= u128::from(unix_secs) * 1000 + 200
    {
        assert!(
            Instant::now() < deadline,
            "the clock did not reach {unix_secs}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_refresh_keeps_the_connection_past_the_first_expiry() {
    let secret = random_secret();
    let server = hs_server(&secret);
    let key = EncodingKey::from_secret(&secret);
    let now = now_secs();
    // At least 2 s to say HELLO and refresh, even on a loaded machine.
    let short = sign(
        Algorithm::HS256,
        &key,
        &json!({"sub": "ann", "exp": now + 3}),
    );
    let long = sign(
        Algorithm::HS256,
        &key,
        &json!({"sub": "ann", "exp": now + 600}),
    );
    let mut ann = accepted(server.local_addr(), json!({"token": short}));
    ann.join("r");
    ann.send_json(MessageType::Hello, &json!({"token": long, "id": 1}));
    let reply = ann.expect(MessageType::Hello).json();
    assert_eq!(reply["id"], 1);
    wait_for_clock(now + 3);
    ann.send_raw(&raw_frame(MessageType::Heartbeat, Flags::NONE, b""));
    ann.expect(MessageType::Heartbeat);
    assert_eq!(ann.leave("r")["status"], "left");
}

#[test]
fn a_refresh_for_another_user_or_with_a_bad_token_is_refused() {
    let secret = random_secret();
    let server = hs_server(&secret);
    let addr = server.local_addr();
    let key = EncodingKey::from_secret(&secret);
    let now = now_secs();
    let token = |sub: &str| {
        sign(
            Algorithm::HS256,
            &key,
            &json!({"sub": sub, "exp": now + 600}),
        )
    };
    let mut ann = accepted(addr, json!({"token": token("ann")}));
    ann.send_json(MessageType::Hello, &json!({"token": token("bob")}));
    let error = ann.expect_error("AUTH_FAILED");
    assert!(error.fatal);
    assert!(error.message.contains("another user"), "{}", error.message);
    ann.expect_close();
    let mut ann = accepted(addr, json!({"token": token("ann")}));
    ann.send_json(MessageType::Hello, &json!({"token": "x.y.z"}));
    let error = ann.expect_error("AUTH_FAILED");
    assert_eq!(error.message, AUTH_FAILED_MESSAGE);
    ann.expect_close();
}

#[test]
fn a_refresh_with_fewer_permissions_leaves_the_rooms_it_no_longer_allows() {
    let server = static_server();
    let addr = server.local_addr();
    let mut ann = accepted(addr, json!({"token": "ann-token-0123456789abcdef"}));
    let mut bob = accepted(addr, json!({"token": "bob-token-0123456789abcdef"}));
    for room in ["lobby", "chat.x"] {
        bob.join(room);
    }
    for room in ["lobby", "chat.x"] {
        ann.join(room);
    }
    for _ in 0..2 {
        assert_eq!(
            bob.expect(MessageType::Message).json()["type"],
            "userJoined"
        );
    }
    ann.send_json(
        MessageType::Hello,
        &json!({"token": "ann-lobby-0123456789abcdef"}),
    );
    let error = ann.expect_error("FORBIDDEN");
    assert!(!error.fatal);
    assert_eq!(error.room.as_deref(), Some("chat.x"));
    ann.expect(MessageType::Hello);
    let left = bob.expect(MessageType::Message).json();
    assert_eq!(left["type"], "userLeft");
    assert_eq!(left["room"], "chat.x");
    assert_eq!(left["user"], "ann");
    // Still in the lobby, and may publish there.
    ann.publish("lobby", json!("still here"));
    assert_eq!(
        bob.expect(MessageType::Message).json()["content"],
        "still here"
    );
    ann.send_json(MessageType::JoinRoom, &json!({"room": "chat.x"}));
    ann.expect_error("FORBIDDEN");
}

#[test]
fn an_expired_token_ends_an_idle_connection_with_token_expired() {
    let secret = random_secret();
    let server = hs_server(&secret);
    let key = EncodingKey::from_secret(&secret);
    // At least 2 s to say HELLO and join before the token runs out.
    let exp = now_secs() + 3;
    let token = sign(Algorithm::HS256, &key, &json!({"sub": "ann", "exp": exp}));
    let mut ann = accepted(server.local_addr(), json!({"token": token}));
    let mut bob = accepted(
        server.local_addr(),
        json!({"token": sign(
            Algorithm::HS256,
            &key,
            &json!({"sub": "bob", "exp": exp + 600}),
        )}),
    );
    ann.join("r");
    bob.join("r");
    assert_eq!(
        ann.expect(MessageType::Message).json()["type"],
        "userJoined"
    );
    // Silent from here: the server must act on its own clock.
    let error = ann.expect_error("TOKEN_EXPIRED");
    assert!(error.fatal);
    let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert!(at.as_secs() >= exp, "cut before exp ({at:?} < {exp})");
    ann.expect_close();
    let left = bob.expect(MessageType::Message).json();
    assert_eq!(left["type"], "userLeft");
    wait_until("the expiry to be counted", || {
        server.counters().errors_sent(ErrorCode::TokenExpired) == 1
    });
}
