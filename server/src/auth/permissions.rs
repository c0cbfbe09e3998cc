//! Room permissions: which rooms a credential may join (and so read) and
//! which it may publish to, as lists of patterns.
//!
//! A pattern is an exact room name, `prefix.*` (every room whose name
//! starts with `prefix.`), or `*` (every room). Matching never allocates:
//! it runs on JOIN_ROOM and, through a per-room cache in the session, not
//! at all per MESSAGE.

use std::fmt;
use std::sync::Arc;

use protocol::{MAX_ROOM_LEN, Quoted};

/// The most patterns one action may list: matching is linear, and a JWT
/// claim is written by the token's issuer, not by the server's operator.
pub const MAX_PATTERNS: usize = 256;

/// One room pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `*`: every room.
    Any,
    /// `prefix.*`, stored as `prefix.` (with the dot).
    Prefix(Box<str>),
    /// One room, by its exact name.
    Exact(Box<str>),
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text == "*" {
            return Ok(Pattern::Any);
        }
        let (name, prefix) = match text.strip_suffix(".*") {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        let reason = if name.is_empty() {
            Some("is empty")
        } else if name.len() > MAX_ROOM_LEN {
            Some("is longer than a room name may be")
        } else if name.chars().any(char::is_control) {
            Some("has a control character")
        } else if name.contains('*') {
            Some("has a '*' that is not a trailing \".*\" or the whole pattern")
        } else if name.trim() != name {
            Some("starts or ends with white space")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(PatternError {
                pattern: Quoted(text).to_string(),
                reason,
            });
        }
        Ok(if prefix {
            Pattern::Prefix(format!("{name}.").into())
        } else {
            Pattern::Exact(name.into())
        })
    }

    fn matches(&self, room: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Prefix(prefix) => room.starts_with(&**prefix),
            Pattern::Exact(name) => room == &**name,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Any => f.write_str("*"),
            Pattern::Prefix(prefix) => write!(f, "{prefix}*"),
            Pattern::Exact(name) => f.write_str(name),
        }
    }
}

/// A pattern that cannot be used; says which and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern, quoted and shortened.
    pattern: String,
    reason: &'static str,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "room pattern {} {}; use a room name, \"prefix.*\" or \"*\"",
            self.pattern, self.reason
        )
    }
}

impl std::error::Error for PatternError {}

/// The rooms one action is allowed in. The empty list allows none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns(Vec<Pattern>);

impl Patterns {
    /// Every room.
    pub fn any() -> Patterns {
        Patterns(vec![Pattern::Any])
    }

    /// No room at all.
    pub fn none() -> Patterns {
        Patterns(Vec::new())
    }

    /// Patterns from their texts, at most [`MAX_PATTERNS`].
    pub fn parse<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Patterns, PatternError> {
        let mut patterns = Vec::new();
        for text in texts {
            if patterns.len() == MAX_PATTERNS {
                return Err(PatternError {
                    pattern: Quoted(text).to_string(),
                    reason: "is one too many: at most 256 patterns per action",
                });
            }
            patterns.push(Pattern::parse(text)?);
        }
        Ok(Patterns(patterns))
    }

    /// Whether `room` (a valid, trimmed name) is allowed.
    pub fn allows(&self, room: &str) -> bool {
        self.0.iter().any(|pattern| pattern.matches(room))
    }
}

impl fmt::Display for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pattern) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{pattern}")?;
        }
        Ok(())
    }
}

/// What one credential may do. Shared (`Arc`) by every connection that
/// presents it, so a connection costs a pointer, not a copy of the lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions(Arc<Grants>);

#[derive(Debug, PartialEq, Eq)]
struct Grants {
    join: Patterns,
    publish: Patterns,
    /// The users direct MESSAGEs may go to (SPEC.md 11.2), matched by the
    /// same patterns against the recipient's user.
    direct: Patterns,
}

impl Permissions {
    /// Everything: what a credential without permissions may do.
    pub fn everything() -> Permissions {
        Permissions::new(Patterns::any(), Patterns::any(), Patterns::any())
    }

    pub fn new(join: Patterns, publish: Patterns, direct: Patterns) -> Permissions {
        Permissions(Arc::new(Grants {
            join,
            publish,
            direct,
        }))
    }

    /// Whether JOIN_ROOM `room` is allowed (joining is reading).
    pub fn may_join(&self, room: &str) -> bool {
        self.0.join.allows(room)
    }

    /// Whether MESSAGE to `room` is allowed (to a member of it).
    pub fn may_publish(&self, room: &str) -> bool {
        self.0.publish.allows(room)
    }

    /// Whether a direct MESSAGE to `user` is allowed (`""` for a
    /// connection without a user, which only `*` allows).
    pub fn may_direct(&self, user: &str) -> bool {
        self.0.direct.allows(user)
    }
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions::everything()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(texts: &[&str]) -> Patterns {
        Patterns::parse(texts.iter().copied()).unwrap()
    }

    #[test]
    fn exact_names_match_only_themselves() {
        let p = patterns(&["lobby", "chat.general"]);
        assert!(p.allows("lobby"));
        assert!(p.allows("chat.general"));
        assert!(!p.allows("lobby2"));
        assert!(!p.allows("lob"));
        assert!(!p.allows("chat.generally"));
    }

    #[test]
    fn a_prefix_matches_names_below_it_but_not_itself() {
        let p = patterns(&["chat.*"]);
        assert!(p.allows("chat.general"));
        assert!(p.allows("chat.a.b"));
        assert!(p.allows("chat."));
        assert!(!p.allows("chat"));
        assert!(!p.allows("chatter.x"));
        assert!(!p.allows("xchat.y"));
    }

    #[test]
    fn star_matches_everything_and_empty_matches_nothing() {
        assert!(patterns(&["*"]).allows("anything at all"));
        assert!(!patterns(&[]).allows("lobby"));
        assert!(!Patterns::none().allows("lobby"));
        assert!(Permissions::everything().may_publish("x"));
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for bad in [
            "",
            ".*",
            "a*",
            "*.x",
            "a.*.b",
            " a",
            "a\u{7}",
            &"x".repeat(65),
        ] {
            let error = Patterns::parse([bad]).unwrap_err().to_string();
            assert!(error.starts_with("room pattern \""), "{error}");
            assert!(
                error.ends_with("use a room name, \"prefix.*\" or \"*\""),
                "{error}"
            );
        }
        let many = vec!["a"; MAX_PATTERNS + 1];
        assert!(Patterns::parse(many).is_err());
        assert!(Patterns::parse(vec!["a"; MAX_PATTERNS]).is_ok());
    }

    #[test]
    fn patterns_print_as_written() {
        assert_eq!(
            patterns(&["chat.*", "lobby", "*"]).to_string(),
            "chat.*,lobby,*"
        );
    }
}
