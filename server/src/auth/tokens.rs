//! The static token table of `--auth-tokens FILE`: long-lived tokens for
//! services, one per line.
//!
//! ```text
//! # TOKEN                           USER      [PERMISSIONS]
//! 9f2c41d8e0a7b3c65d1e8f4a2b7c9d03  archiver  join=chat.*,lobby publish=
//! 4b8e2a7c1d9f3e6a0c5b8d2e7f1a4c96  announcer join=lobby publish=lobby
//! 7d3a9c1e5b2f8d4a6c0e3b9f1d7a5c28  admin
//! ```
//!
//! Tokens are kept only as SHA-256 digests, looked up by digest, and the
//! digests compared in constant time: how long a look-up takes says
//! nothing about how much of a guess was right, and the table in memory
//! does not hold the tokens themselves.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;

use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

use super::permissions::{Patterns, Permissions};
use super::{Identity, check_user};

/// Tokens shorter than this are accepted with a warning: they can be
/// guessed by trying.
const SHORT_TOKEN: usize = 16;

/// The most tokens one file may hold, so a wrong file (a log, say) is
/// refused instead of filling memory.
pub const MAX_TOKENS: usize = 100_000;

/// A token's SHA-256 digest. Equality is constant-time; hashing for the
/// map's bucket reveals at most which bucket, which says nothing about a
/// token (finding one from its digest is a preimage attack).
#[derive(Clone, Copy, Eq)]
struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn of(token: &str) -> TokenDigest {
        let mut bytes = [0; 32];
        bytes.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        TokenDigest(bytes)
    }
}

impl PartialEq for TokenDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Hash for TokenDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// The tokens of one file. Cheap to clone, and clones share one set of
/// tokens: [`TokenTable::replace`] on any clone (what `relay-server` does
/// on SIGHUP) reaches the server that holds another, atomically: a HELLO
/// sees the old set or the new, never a mix.
#[derive(Clone)]
pub struct TokenTable(Arc<RwLock<Arc<Tokens>>>);

type Tokens = HashMap<TokenDigest, Identity>;

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenTable({} tokens)", self.len())
    }
}

/// Why a tokens file cannot be used. Names the file and the line, never
/// the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokensError {
    /// The file, as given.
    pub source: String,
    /// 1-based; 0 when the problem is the whole file.
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for TokensError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "--auth-tokens {}: {}", self.source, self.problem)
        } else {
            write!(
                f,
                "--auth-tokens {}:{}: {}",
                self.source, self.line, self.problem
            )
        }
    }
}

impl std::error::Error for TokensError {}

impl TokenTable {
    /// Reads and parses a tokens file.
    pub fn load(path: &Path) -> Result<TokenTable, TokensError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| TokensError {
            source: source.clone(),
            line: 0,
            problem: format!("cannot be read: {error}"),
        })?;
        TokenTable::parse(&text, &source)
    }

    /// Parses the text of a tokens file; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<TokenTable, TokensError> {
        let mut table: HashMap<TokenDigest, Identity> = HashMap::new();
        let mut lines_of: HashMap<TokenDigest, usize> = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let error = |problem: String| TokensError {
                source: source.to_owned(),
                line: number,
                problem,
            };
            let mut fields = line.split_whitespace();
            let Some(token) = fields.next() else {
                continue;
            };
            if token.starts_with('#') {
                continue;
            }
            let Some(user) = fields.next() else {
                return Err(error(
                    "a token without a user; write TOKEN USER [join=PATTERNS] [publish=PATTERNS] [direct=PATTERNS]"
                        .to_owned(),
                ));
            };
            if token.len() > protocol::MAX_TOKEN_LEN {
                return Err(error(format!(
                    "the token is {} bytes, longer than a HELLO may carry ({})",
                    token.len(),
                    protocol::MAX_TOKEN_LEN
                )));
            }
            if token.len() < SHORT_TOKEN {
                tracing::warn!(
                    "--auth-tokens {source}:{number}: the token is only {} bytes; tokens of {SHORT_TOKEN} or more random bytes cannot be guessed",
                    token.len()
                );
            }
            check_user(user).map_err(|why| error(format!("the user id {why}")))?;
            let permissions = permissions(fields).map_err(error)?;
            let digest = TokenDigest::of(token);
            if let Some(first) = lines_of.get(&digest) {
                return Err(error(format!(
                    "the same token as line {first}; each token must be unique"
                )));
            }
            if table.len() == MAX_TOKENS {
                return Err(error(format!("more than {MAX_TOKENS} tokens")));
            }
            lines_of.insert(digest, number);
            table.insert(
                digest,
                Identity {
                    user: user.into(),
                    permissions,
                    expires_at_ms: None,
                },
            );
        }
        if table.is_empty() {
            return Err(TokensError {
                source: source.to_owned(),
                line: 0,
                problem: "has no tokens, so every client would be refused; add lines of TOKEN USER"
                    .to_owned(),
            });
        }
        Ok(TokenTable(Arc::new(RwLock::new(Arc::new(table)))))
    }

    /// The identity `token` stands for, if it is in the table.
    pub fn get(&self, token: &str) -> Option<Identity> {
        let digest = TokenDigest::of(token);
        self.current().get(&digest).cloned()
    }

    /// Puts the tokens of `other` in force for every clone of this table:
    /// new HELLOs see them; connections already open keep the identity
    /// they authenticated with.
    pub fn replace(&self, other: &TokenTable) {
        let tokens = other.current();
        *self.0.write() = tokens;
    }

    /// The set in force now; the lock is held only to clone the `Arc`.
    fn current(&self) -> Arc<Tokens> {
        Arc::clone(&self.0.read())
    }

    pub fn len(&self) -> usize {
        self.current().len()
    }

    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }
}

/// The permission fields after TOKEN USER: none at all allows everything;
/// otherwise an action that is not listed is allowed nowhere.
fn permissions<'a>(fields: impl Iterator<Item = &'a str>) -> Result<Permissions, String> {
    let mut join = None;
    let mut publish = None;
    let mut direct = None;
    let mut any = false;
    for field in fields {
        any = true;
        let (key, value) = field.split_once('=').ok_or_else(|| {
            format!(
                "{} is not a permission; write join=PATTERNS, publish=PATTERNS or direct=PATTERNS",
                protocol::Quoted(field)
            )
        })?;
        let slot = match key {
            "join" => &mut join,
            "publish" => &mut publish,
            "direct" => &mut direct,
            _ => {
                return Err(format!(
                    "unknown permission {}; use join=, publish= or direct=",
                    protocol::Quoted(key)
                ));
            }
        };
        if slot.is_some() {
            return Err(format!(
                "{key}= given twice; list its patterns once, comma-separated"
            ));
        }
        let patterns = value.split(',').filter(|pattern| !pattern.is_empty());
        *slot = Some(Patterns::parse(patterns).map_err(|error| format!("{key}=: {error}"))?);
    }
    if !any {
        return Ok(Permissions::everything());
    }
    Ok(Permissions::new(
        join.unwrap_or_else(Patterns::none),
        publish.unwrap_or_else(Patterns::none),
        direct.unwrap_or_else(Patterns::none),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# services
  
alpha-token-0123456789 archiver join=chat.*,lobby publish=
beta-token-0123456789  announcer join=lobby publish=lobby
gamma-token-0123456789 admin
delta-token-0123456789 reader join=*
";

    #[test]
    fn a_file_with_comments_blank_lines_and_permissions() {
        let table = TokenTable::parse(FILE, "t").unwrap();
        assert_eq!(table.len(), 4);
        let archiver = table.get("alpha-token-0123456789").unwrap();
        assert_eq!(&*archiver.user, "archiver");
        assert_eq!(archiver.expires_at_ms, None);
        assert!(archiver.permissions.may_join("chat.x"));
        assert!(archiver.permissions.may_join("lobby"));
        assert!(!archiver.permissions.may_join("other"));
        assert!(!archiver.permissions.may_publish("lobby"));
        let admin = table.get("gamma-token-0123456789").unwrap();
        assert!(admin.permissions.may_join("x") && admin.permissions.may_publish("y"));
        let reader = table.get("delta-token-0123456789").unwrap();
        assert!(reader.permissions.may_join("x"));
        assert!(
            !reader.permissions.may_publish("x"),
            "an action not listed is nowhere"
        );
        assert!(table.get("alpha-token-012345678").is_none());
        assert!(table.get("").is_none());
    }

    fn error(text: &str) -> TokensError {
        TokenTable::parse(text, "tokens.txt").unwrap_err()
    }

    #[test]
    fn errors_name_the_file_and_line_and_never_the_token() {
        let cases = [
            (
                "ok-token-0123456789 a\nsecret-token-xyz\n",
                2,
                "without a user",
            ),
            (
                "secret-token-xyz a\nsecret-token-xyz b\n",
                2,
                "same token as line 1",
            ),
            (
                "secret-token-xyz a read=x\n",
                1,
                "unknown permission \"read\"",
            ),
            ("secret-token-xyz a join\n", 1, "is not a permission"),
            ("secret-token-xyz a join=x join=y\n", 1, "join= given twice"),
            (
                "secret-token-xyz a join=a*\n",
                1,
                "join=: room pattern \"a*\"",
            ),
            (
                "secret-token-xyz a\u{7}b\n",
                1,
                "user id has a control character",
            ),
        ];
        for (text, line, problem) in cases {
            let error = error(text);
            assert_eq!(error.line, line, "{text:?}");
            let shown = error.to_string();
            assert!(
                shown.starts_with(&format!("--auth-tokens tokens.txt:{line}: ")),
                "{shown}"
            );
            assert!(shown.contains(problem), "{shown}");
            assert!(!shown.contains("secret-token"), "{shown}");
        }
        let long = format!("{} a\n", "x".repeat(protocol::MAX_TOKEN_LEN + 1));
        assert!(
            error(&long)
                .problem
                .contains("longer than a HELLO may carry")
        );
    }

    #[test]
    fn an_empty_file_is_refused() {
        let error = error("# nothing\n\n");
        assert_eq!(error.line, 0);
        assert!(error.to_string().contains("has no tokens"));
    }

    #[test]
    fn a_missing_file_is_named() {
        let error = TokenTable::load(Path::new("/nonexistent/relay-tokens")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--auth-tokens /nonexistent/relay-tokens: cannot be read")
        );
    }
}
