//! Which web pages may open a WebSocket connection (`--ws-allowed-origins`).
//!
//! A browser sends the `Origin` of the page that opens a WebSocket, and
//! lets any page open one to any server: without a check, a page on any
//! site could use a visitor's browser to reach a Relay server the visitor
//! can reach (cross-site WebSocket hijacking). Programs other than
//! browsers send no `Origin` (or any they like), so the check is about
//! browsers only; tokens in HELLO are what authenticate.
//!
//! The rule (SPEC.md 13.2): no `Origin` header is allowed; by default an
//! `Origin` whose host is the host the client connected to (`Host`, any
//! port: the chat page comes from the HTTP port) is allowed; with a list,
//! exactly the origins listed are; `*` allows every origin.

use std::fmt;

use tungstenite::http::Uri;
use tungstenite::http::uri::Authority;

/// The `Origin`s allowed to connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origins {
    /// Pages served from the host the client connected to (any scheme or
    /// port), and clients that send no `Origin`.
    #[default]
    SameHost,
    /// Every origin.
    Any,
    /// Exactly these (`scheme://host[:port]`, compared without regard to
    /// case), and clients that send no `Origin`.
    List(Vec<String>),
}

/// An entry of `--ws-allowed-origins` that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadOrigin(String);

impl fmt::Display for BadOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an origin; write scheme://host[:port], like https://chat.example.com, or * for any",
            self.0
        )
    }
}

impl std::error::Error for BadOrigin {}

impl std::str::FromStr for Origins {
    type Err = BadOrigin;

    /// A comma-separated list of origins, or `*`.
    fn from_str(list: &str) -> Result<Origins, BadOrigin> {
        let entries: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if entries.contains(&"*") {
            return Ok(Origins::Any);
        }
        if entries.is_empty() {
            return Err(BadOrigin(list.to_owned()));
        }
        let mut origins = Vec::with_capacity(entries.len());
        for entry in entries {
            let uri: Uri = entry.parse().map_err(|_| BadOrigin(entry.to_owned()))?;
            let well_formed = uri.scheme().is_some()
                && uri.host().is_some()
                && matches!(uri.path(), "" | "/")
                && uri.query().is_none();
            if !well_formed {
                return Err(BadOrigin(entry.to_owned()));
            }
            origins.push(entry.trim_end_matches('/').to_ascii_lowercase());
        }
        Ok(Origins::List(origins))
    }
}

impl Origins {
    /// Whether a request with this `Origin` (if any), sent to this `Host`
    /// (if any), may upgrade.
    pub(crate) fn allow(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        match self {
            Origins::Any => true,
            Origins::List(list) => {
                let origin = origin.trim_end_matches('/');
                list.iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(origin))
            }
            Origins::SameHost => {
                let origin_host = origin.parse::<Uri>().ok();
                let origin_host = origin_host.as_ref().and_then(Uri::host);
                let host = host.and_then(|h| h.parse::<Authority>().ok());
                match (origin_host, host) {
                    (Some(a), Some(b)) => a.eq_ignore_ascii_case(b.host()),
                    _ => false,
                }
            }
        }
    }
}

impl fmt::Display for Origins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origins::SameHost => f.write_str("same host"),
            Origins::Any => f.write_str("*"),
            Origins::List(list) => f.write_str(&list.join(",")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_allows_any_port_of_the_host_connected_to() {
        let rule = Origins::SameHost;
        assert!(rule.allow(None, Some("relay.example:9000")));
        assert!(rule.allow(
            Some("http://relay.example:8080"),
            Some("relay.example:9000")
        ));
        assert!(rule.allow(Some("https://RELAY.example"), Some("relay.example")));
        assert!(rule.allow(Some("http://[::1]:8080"), Some("[::1]:9000")));
        assert!(!rule.allow(Some("https://evil.example"), Some("relay.example:9000")));
        assert!(!rule.allow(Some("null"), Some("relay.example")));
        assert!(!rule.allow(Some("http://relay.example"), None));
    }

    #[test]
    fn a_list_allows_exactly_its_origins() {
        let rule: Origins = "https://chat.example, http://localhost:8080/"
            .parse()
            .unwrap();
        assert!(rule.allow(Some("https://CHAT.example"), Some("relay")));
        assert!(rule.allow(Some("http://localhost:8080"), Some("relay")));
        assert!(!rule.allow(Some("http://chat.example"), Some("chat.example")));
        assert!(!rule.allow(Some("http://localhost:8081"), Some("localhost")));
        assert!(rule.allow(None, None));
    }

    #[test]
    fn a_star_allows_everyone_and_nonsense_is_refused() {
        assert_eq!("*".parse::<Origins>(), Ok(Origins::Any));
        assert_eq!("https://a.example,*".parse::<Origins>(), Ok(Origins::Any));
        assert!("chat.example".parse::<Origins>().is_err());
        assert!("https://a.example/page".parse::<Origins>().is_err());
        assert!("".parse::<Origins>().is_err());
    }
}
