//! Signed tokens (JWT, RFC 7519), minted by an application's backend for
//! its users and checked here with the `jsonwebtoken` crate.
//!
//! The algorithm is pinned by the server's key, never taken on the token's
//! word: an HS256 secret verifies only HS256 tokens, a public key only the
//! one algorithm of its kind (RS256, ES256 or EdDSA unless
//! `--jwt-algorithm` says otherwise). A token whose header names any other
//! algorithm (`none`, or HS256 against an RSA key) is refused before any
//! signature is looked at.
//!
//! Claims (SPEC.md 11.1):
//!
//! ```text
//! {"sub": "ann", "exp": 1767225600, "nbf": 1767222000,
//!  "permissions": {"join": ["chat.*", "lobby"], "publish": ["chat.general"]}}
//! ```
//!
//! `exp` and `nbf` are checked here, against the time the session passes
//! in, with the leeway for clock skew; the crate's own clock checks are
//! turned off so that there is one clock and one rule.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use parking_lot::RwLock;
use serde::Deserialize;

use super::permissions::{Patterns, Permissions};
use super::{AuthFailure, Identity, check_user};

/// The clock-skew leeway when `--jwt-leeway` is not given, in seconds: a
/// token is still accepted this long after its `exp`, and this long before
/// its `nbf`. Clocks kept by NTP are within a second; 30 s covers a
/// machine whose sync lags without keeping a stolen token alive for long.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// Secrets shorter than this are accepted with a warning: RFC 7518 3.2
/// asks for at least the hash's size, 32 bytes for HS256.
pub const MIN_SECRET_LEN: usize = 32;

/// The server's JWT keys. Cheap to clone, and clones share the keys: a
/// new set put in force through one ([`JwtVerifier::replace`], on SIGHUP)
/// reaches the server that holds another, atomically; a HELLO is checked
/// against the old set or the new, never a mix.
#[derive(Clone)]
pub struct JwtVerifier {
    keys: Arc<RwLock<Keys>>,
    leeway_secs: u64,
}

type Keys = Arc<Vec<(Algorithm, DecodingKey)>>;

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.current();
        let algorithms: Vec<_> = keys.iter().map(|(alg, _)| alg).collect();
        write!(
            f,
            "JwtVerifier({algorithms:?}, leeway {} s)",
            self.leeway_secs
        )
    }
}

/// Why a JWT was refused (for the server's log; never holds the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// The header names an algorithm this server has no key for.
    Algorithm(String),
    /// Not a JWT, a bad signature, or claims of the wrong shape.
    Invalid(String),
    /// `nbf` is still in the future, beyond the leeway.
    NotYetValid,
    /// `sub` breaks the rules of a user id.
    User(&'static str),
    /// The `permissions` claim holds a pattern that cannot be used.
    Permissions(String),
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Algorithm(alg) => {
                write!(f, "signed with {alg}, which the server has no key for")
            }
            JwtError::Invalid(why) => write!(f, "{why}"),
            JwtError::NotYetValid => f.write_str("not valid yet (nbf)"),
            JwtError::User(why) => write!(f, "sub {why}"),
            JwtError::Permissions(why) => write!(f, "permissions claim: {why}"),
        }
    }
}

impl std::error::Error for JwtError {}

/// A key the server cannot use; says what would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtKeyError(pub String);

impl fmt::Display for JwtKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JwtKeyError {}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    permissions: Option<PermissionsClaim>,
}

/// A present `permissions` object with a key left out allows that action
/// nowhere: an issuer that restricts one action must not open the other
/// by forgetting it.
#[derive(Deserialize)]
struct PermissionsClaim {
    #[serde(default)]
    join: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    /// The users direct MESSAGEs may go to.
    #[serde(default)]
    direct: Vec<String>,
}

/// Whether `token` has the three dot-separated parts of a JWT; anything
/// else is not worth decoding.
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

impl JwtVerifier {
    /// No keys yet; `leeway_secs` of clock skew allowed.
    pub fn new(leeway_secs: u64) -> JwtVerifier {
        JwtVerifier {
            keys: Arc::new(RwLock::new(Arc::new(Vec::new()))),
            leeway_secs,
        }
    }

    /// The keys in force now; the lock is held only to clone the `Arc`.
    fn current(&self) -> Keys {
        Arc::clone(&self.keys.read())
    }

    /// Adds a key to this verifier's set, for building one; every clone
    /// sees it.
    fn push(&self, algorithm: Algorithm, key: DecodingKey) {
        let mut keys = self.keys.write();
        Arc::make_mut(&mut keys).push((algorithm, key));
    }

    /// Puts the keys of `other` in force for every clone of this verifier:
    /// new HELLOs (and token refreshes) are checked with them; connections
    /// already open keep the identity they authenticated with.
    pub fn replace(&self, other: &JwtVerifier) {
        let keys = other.current();
        *self.keys.write() = keys;
    }

    /// HS256 with a shared secret only.
    pub fn hs256(secret: &[u8], leeway_secs: u64) -> JwtVerifier {
        JwtVerifier::new(leeway_secs).with_secret(secret)
    }

    /// Adds an HS256 secret.
    pub fn with_secret(self, secret: &[u8]) -> JwtVerifier {
        self.push(Algorithm::HS256, DecodingKey::from_secret(secret));
        self
    }

    /// Adds a public key from PEM. Its algorithm comes from the key (RSA:
    /// RS256, EC: ES256, Ed25519: EdDSA) unless `algorithm` names one of
    /// the same kind (RS384, PS256, ES384, ...).
    pub fn with_public_key_pem(
        self,
        pem: &[u8],
        algorithm: Option<&str>,
    ) -> Result<JwtVerifier, JwtKeyError> {
        let (algorithm, key) = public_key(pem, algorithm)?;
        self.push(algorithm, key);
        Ok(self)
    }

    /// [`with_public_key_pem`](Self::with_public_key_pem) from a file.
    pub fn with_public_key_file(
        self,
        path: &Path,
        algorithm: Option<&str>,
    ) -> Result<JwtVerifier, JwtKeyError> {
        let pem = std::fs::read(path).map_err(|error| {
            JwtKeyError(format!(
                "--jwt-public-key {}: cannot be read: {error}",
                path.display()
            ))
        })?;
        self.with_public_key_pem(&pem, algorithm)
            .map_err(|JwtKeyError(problem)| {
                JwtKeyError(format!("--jwt-public-key {}: {problem}", path.display()))
            })
    }

    /// The algorithms this verifier accepts now.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        self.current()
            .iter()
            .map(|(algorithm, _)| *algorithm)
            .collect()
    }

    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// Checks `token` at `now_ms` (milliseconds since the Unix epoch).
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Identity, AuthFailure> {
        let refuse = |error: JwtError| AuthFailure::Jwt(error);
        let header =
            decode_header(token).map_err(|error| refuse(JwtError::Invalid(error.to_string())))?;
        let keys = self.current();
        let Some((algorithm, key)) = keys.iter().find(|(alg, _)| *alg == header.alg) else {
            return Err(refuse(JwtError::Algorithm(format!("{:?}", header.alg))));
        };
        let mut validation = Validation::new(*algorithm);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = decode::<Claims>(token, key, &validation)
            .map_err(|error| refuse(JwtError::Invalid(error.to_string())))?
            .claims;
        let now_secs = now_ms / 1000;
        let expires_at_ms = claims
            .exp
            .saturating_add(self.leeway_secs)
            .saturating_mul(1000);
        if now_ms >= expires_at_ms {
            return Err(AuthFailure::Expired);
        }
        if let Some(nbf) = claims.nbf
            && nbf > now_secs.saturating_add(self.leeway_secs)
        {
            return Err(refuse(JwtError::NotYetValid));
        }
        check_user(&claims.sub).map_err(|why| refuse(JwtError::User(why)))?;
        let permissions = match claims.permissions {
            None => Permissions::everything(),
            Some(claim) => {
                let parse = |list: &[String]| {
                    Patterns::parse(list.iter().map(String::as_str))
                        .map_err(|error| refuse(JwtError::Permissions(error.to_string())))
                };
                Permissions::new(
                    parse(&claim.join)?,
                    parse(&claim.publish)?,
                    parse(&claim.direct)?,
                )
            }
        };
        Ok(Identity {
            user: claims.sub.into(),
            permissions,
            expires_at_ms: Some(expires_at_ms),
        })
    }
}

/// The key in `pem`, and the one algorithm it will verify.
fn public_key(
    pem: &[u8],
    algorithm: Option<&str>,
) -> Result<(Algorithm, DecodingKey), JwtKeyError> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("PRIVATE KEY") {
        return Err(JwtKeyError(
            "is a private key; give the server the public key only (openssl pkey -pubout)"
                .to_owned(),
        ));
    }
    if text.contains("CERTIFICATE") {
        return Err(JwtKeyError(
            "is a certificate; give the public key in PEM (openssl x509 -pubkey -noout)".to_owned(),
        ));
    }
    let wanted = match algorithm {
        None => None,
        Some(name) => Some(Algorithm::from_str(name).map_err(|_| {
            JwtKeyError(format!(
                "--jwt-algorithm {} is not a JWT algorithm; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA",
                protocol::Quoted(name)
            ))
        })?),
    };
    let (detected, key) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        (Algorithm::RS256, key)
    } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        (Algorithm::ES256, key)
    } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        (Algorithm::EdDSA, key)
    } else {
        return Err(JwtKeyError(
            "holds no RSA, EC or Ed25519 public key in PEM (-----BEGIN PUBLIC KEY-----)".to_owned(),
        ));
    };
    let Some(wanted) = wanted else {
        return Ok((detected, key));
    };
    let family = |alg: Algorithm| match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => "RSA",
        Algorithm::ES256 | Algorithm::ES384 => "EC",
        Algorithm::EdDSA => "Ed25519",
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => "a shared secret",
    };
    if family(wanted) != family(detected) {
        return Err(JwtKeyError(format!(
            "is an {} key, which cannot verify {wanted:?} (that needs {}); pick an algorithm of the key's kind",
            family(detected),
            family(wanted)
        )));
    }
    Ok((wanted, key))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW_MS: u64 = 1_700_000_000_000;
    const NOW: u64 = NOW_MS / 1000;

    fn hs(claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[test]
    fn a_valid_token_gives_its_subject_expiry_and_permissions() {
        let verifier = JwtVerifier::hs256(SECRET, 30);
        let token = hs(json!({"sub": "ann", "exp": NOW + 60,
            "permissions": {"join": ["chat.*"]}}));
        let identity = verifier.verify(&token, NOW_MS).unwrap();
        assert_eq!(&*identity.user, "ann");
        assert_eq!(identity.expires_at_ms, Some((NOW + 90) * 1000));
        assert!(identity.permissions.may_join("chat.x"));
        assert!(
            !identity.permissions.may_publish("chat.x"),
            "a missing key allows nothing"
        );
        let all = verifier
            .verify(&hs(json!({"sub": "ann", "exp": NOW + 60})), NOW_MS)
            .unwrap();
        assert_eq!(all.permissions, Permissions::everything());
    }

    #[test]
    fn expiry_and_nbf_allow_the_leeway_and_no_more() {
        let verifier = JwtVerifier::hs256(SECRET, 30);
        let in_leeway = hs(json!({"sub": "a", "exp": NOW - 29}));
        assert!(verifier.verify(&in_leeway, NOW_MS).is_ok());
        let expired = hs(json!({"sub": "a", "exp": NOW - 30}));
        assert_eq!(verifier.verify(&expired, NOW_MS), Err(AuthFailure::Expired));
        let early = hs(json!({"sub": "a", "exp": NOW + 100, "nbf": NOW + 31}));
        assert_eq!(
            verifier.verify(&early, NOW_MS),
            Err(AuthFailure::Jwt(JwtError::NotYetValid))
        );
        let soon = hs(json!({"sub": "a", "exp": NOW + 100, "nbf": NOW + 30}));
        assert!(verifier.verify(&soon, NOW_MS).is_ok());
    }

    #[test]
    fn missing_claims_bad_signatures_and_other_algorithms_are_refused() {
        let verifier = JwtVerifier::hs256(SECRET, 0);
        for token in [
            hs(json!({"sub": "a"})),
            hs(json!({"exp": NOW + 10})),
            hs(json!({"sub": "", "exp": NOW + 10})),
            hs(json!({"sub": "a\nb", "exp": NOW + 10})),
            hs(json!({"sub": "a", "exp": NOW + 10, "permissions": {"join": ["a*"]}})),
            encode(
                &Header::default(),
                &json!({"sub": "a", "exp": NOW + 10}),
                &EncodingKey::from_secret(b"another secret, just as long...."),
            )
            .unwrap(),
            encode(
                &Header::new(Algorithm::HS384),
                &json!({"sub": "a", "exp": NOW + 10}),
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap(),
            // alg none: header {"alg":"none"}, no signature.
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ.".to_owned(),
            "not.a.jwt".to_owned(),
        ] {
            assert!(
                matches!(verifier.verify(&token, NOW_MS), Err(AuthFailure::Jwt(_))),
                "{token}"
            );
        }
    }

    #[test]
    fn a_replaced_key_reaches_every_clone_at_once() {
        let old = JwtVerifier::hs256(SECRET, 0);
        let held_by_server = old.clone();
        let new_secret = b"the new secret, at least 32 bytes long";
        let token = |secret: &[u8]| {
            encode(
                &Header::default(),
                &json!({"sub": "a", "exp": NOW + 10}),
                &EncodingKey::from_secret(secret),
            )
            .unwrap()
        };
        assert!(held_by_server.verify(&token(SECRET), NOW_MS).is_ok());
        old.replace(&JwtVerifier::hs256(new_secret, 0));
        assert!(held_by_server.verify(&token(new_secret), NOW_MS).is_ok());
        assert!(held_by_server.verify(&token(SECRET), NOW_MS).is_err());
    }

    #[test]
    fn keys_are_recognised_and_private_keys_refused() {
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let verifier = JwtVerifier::new(0)
            .with_public_key_pem(ed.public_key_pem().as_bytes(), None)
            .unwrap();
        assert_eq!(verifier.algorithms(), [Algorithm::EdDSA]);
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let verifier = JwtVerifier::new(0)
            .with_public_key_pem(ec.public_key_pem().as_bytes(), None)
            .unwrap();
        assert_eq!(verifier.algorithms(), [Algorithm::ES256]);
        let private = JwtVerifier::new(0).with_public_key_pem(ed.serialize_pem().as_bytes(), None);
        assert!(private.unwrap_err().0.contains("private key"));
        let mismatch =
            JwtVerifier::new(0).with_public_key_pem(ec.public_key_pem().as_bytes(), Some("RS256"));
        assert!(mismatch.unwrap_err().0.contains("cannot verify RS256"));
        let garbage = JwtVerifier::new(0).with_public_key_pem(b"hello", None);
        assert!(garbage.unwrap_err().0.contains("no RSA, EC or Ed25519"));
        let bad_name =
            JwtVerifier::new(0).with_public_key_pem(ec.public_key_pem().as_bytes(), Some("XY1"));
        assert!(bad_name.unwrap_err().0.contains("not a JWT algorithm"));
    }

    #[test]
    fn an_eddsa_token_verifies_and_hs256_against_the_public_key_does_not() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let public = pair.public_key_pem();
        let verifier = JwtVerifier::new(0)
            .with_public_key_pem(public.as_bytes(), None)
            .unwrap();
        let signing = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap();
        let claims = json!({"sub": "bob", "exp": NOW + 10});
        let token = encode(&Header::new(Algorithm::EdDSA), &claims, &signing).unwrap();
        assert_eq!(&*verifier.verify(&token, NOW_MS).unwrap().user, "bob");
        // Key confusion: the public key's bytes used as an HMAC secret.
        let forged = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(public.as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            verifier.verify(&forged, NOW_MS),
            Err(AuthFailure::Jwt(JwtError::Algorithm(_)))
        ));
    }
}
