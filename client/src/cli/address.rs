//! Server addresses as people type them: `host`, `host:port`, `[::1]:4000`,
//! `::1`, a bare port (`4200`, meaning localhost), `relay://host:port` and
//! `relays://host` (TLS).

use std::fmt;

/// The port plain TCP uses when none is given.
pub const DEFAULT_PORT: u16 = 4000;
/// The port TLS uses when none is given.
pub const DEFAULT_TLS_PORT: u16 = 4443;

/// Where to connect, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// A host name or an IP address, without brackets.
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "relays" } else { "relay" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// What the flags add to the address.
#[derive(Debug, Clone, Copy, Default)]
pub struct Given {
    /// A port given on its own (`relay HOST PORT`).
    pub port: Option<u16>,
    /// `--tls`, or `--ca` (which implies it).
    pub tls: bool,
}

/// Reads `text` into an endpoint; the error says what would have worked.
pub fn parse(text: &str, given: Given) -> Result<Endpoint, String> {
    let text = text.trim();
    let (rest, scheme_tls) = if let Some(rest) = text.strip_prefix("relays://") {
        (rest, Some(true))
    } else if let Some(rest) = text.strip_prefix("relay://") {
        (rest, Some(false))
    } else if text.contains("://") {
        return Err(format!(
            "{text:?}: use HOST:PORT, relay://HOST[:PORT] or relays://HOST[:PORT] (TLS)"
        ));
    } else {
        (text, None)
    };
    if scheme_tls == Some(false) && given.tls {
        return Err("relay:// is plain TCP; use relays:// with --tls or --ca".into());
    }
    let tls = scheme_tls.unwrap_or(false) || given.tls;
    let rest = rest.trim_end_matches('/');
    let port_of = |port: &str| {
        port.parse::<u16>()
            .ok()
            .filter(|&port| port != 0)
            .ok_or_else(|| format!("{text:?}: the port must be a number from 1 to 65535"))
    };
    let (host, port) = if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
        // A bare port: the server on this machine.
        if scheme_tls.is_some() {
            return Err(format!(
                "{text:?} names no host; use {rest}, or HOST:{rest}"
            ));
        }
        ("localhost", Some(port_of(rest)?))
    } else if let Some(inner) = rest.strip_prefix('[') {
        // [V6] or [V6]:PORT.
        let Some((host, after)) = inner.split_once(']') else {
            return Err(format!("{text:?}: a '[' without its ']'; write [::1]:4000"));
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port_of(port)?)),
                None => return Err(format!("{text:?}: write [ADDRESS]:PORT")),
            },
        }
    } else {
        match rest.split_once(':') {
            // host:port; a bare IPv6 address (two colons or more) has none.
            Some((host, port)) if !port.contains(':') => (host, Some(port_of(port)?)),
            _ => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{text:?} names no host"));
    }
    if port.is_some() && given.port.is_some() {
        return Err(format!(
            "{text:?} has a port already; give the port in the address or on its own, not both"
        ));
    }
    let default = if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
    Ok(Endpoint {
        host: host.to_owned(),
        port: port.or(given.port).unwrap_or(default),
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: &str, port: u16, tls: bool) -> Result<Endpoint, String> {
        Ok(Endpoint {
            host: host.into(),
            port,
            tls,
        })
    }

    fn plain(text: &str) -> Result<Endpoint, String> {
        parse(text, Given::default())
    }

    #[test]
    fn addresses_as_people_type_them() {
        assert_eq!(plain("localhost"), at("localhost", 4000, false));
        assert_eq!(plain("127.0.0.1:4200"), at("127.0.0.1", 4200, false));
        assert_eq!(plain("[::1]:4000"), at("::1", 4000, false));
        assert_eq!(plain("[::1]"), at("::1", 4000, false));
        assert_eq!(plain("::1"), at("::1", 4000, false));
        assert_eq!(plain("4200"), at("localhost", 4200, false));
        assert_eq!(plain("example.org"), at("example.org", 4000, false));
        assert_eq!(plain("relay://10.0.0.1:7/"), at("10.0.0.1", 7, false));
        assert_eq!(plain("relays://example.org"), at("example.org", 4443, true));
        assert_eq!(plain("relays://example.org:9"), at("example.org", 9, true));
        assert_eq!(plain("relays://[::1]:8443"), at("::1", 8443, true));
        let tls = Given {
            tls: true,
            port: None,
        };
        assert_eq!(parse("h", tls), at("h", 4443, true));
        let port = Given {
            port: Some(5000),
            tls: false,
        };
        assert_eq!(parse("example.org", port), at("example.org", 5000, false));
        assert_eq!(parse("::1", port), at("::1", 5000, false));
    }

    #[test]
    fn what_cannot_work_is_refused_with_a_reason() {
        assert!(plain("http://x").unwrap_err().contains("relays://"));
        let tls = Given {
            tls: true,
            port: None,
        };
        assert!(parse("relay://x", tls).unwrap_err().contains("plain TCP"));
        let port = Given {
            port: Some(2),
            tls: false,
        };
        assert!(parse("x:1", port).unwrap_err().contains("not both"));
        assert!(plain("relays://x:port").unwrap_err().contains("number"));
        assert!(plain("x:0").unwrap_err().contains("number"));
        assert!(plain("x:70000").unwrap_err().contains("number"));
        assert!(plain("relays://").unwrap_err().contains("no host"));
        assert!(plain("[::1").unwrap_err().contains("']'"));
        assert!(plain(":4000").unwrap_err().contains("no host"));
    }

    #[test]
    fn endpoints_print_as_urls() {
        assert_eq!(
            plain("[::1]:5").map(|e| e.to_string()),
            Ok("relay://[::1]:5".into())
        );
    }
}
