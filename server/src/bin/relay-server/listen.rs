//! Listen addresses as people type them: `HOST:PORT`, `[::1]:4000`, a bare
//! `PORT` (127.0.0.1), a host name (`localhost:4000`, resolved once at
//! start), and `relay://HOST:PORT`. A missing port is 4000; `--port`
//! supplies or replaces it.

use std::net::{SocketAddr, ToSocketAddrs};

/// The port when none is given.
pub const DEFAULT_PORT: u16 = 4000;

/// An address from the command line, and whether it named its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    pub addr: SocketAddr,
    pub port_given: bool,
}

/// A clap value parser.
pub fn parse(text: &str) -> Result<ListenAddr, String> {
    let trimmed = text.trim();
    let rest = match trimmed.split_once("://") {
        Some(("relay", rest)) => rest.trim_end_matches('/'),
        Some((scheme, _)) => {
            return Err(format!(
                "{scheme}:// is not a listen address; write HOST:PORT, PORT or relay://HOST:PORT"
            ));
        }
        None => trimmed,
    };
    let port_of = |port: &str| {
        port.parse::<u16>()
            .map_err(|_| format!("{port:?} is not a port; use a number from 0 to 65535"))
    };
    if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(ListenAddr {
            addr: SocketAddr::from(([127, 0, 0, 1], port_of(rest)?)),
            port_given: true,
        });
    }
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: a '[' without its ']'; write [::1]:4000"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port_of(port)?)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("{text:?}: write [ADDRESS]:PORT")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port_of(port)?)),
            // A bare IPv6 address.
            _ => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!(
            "{text:?} names no host; write 0.0.0.0:4000 for every interface"
        ));
    }
    let resolved = (host, port.unwrap_or(DEFAULT_PORT))
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {host:?}: {error}"))?
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))?;
    Ok(ListenAddr {
        addr: resolved,
        port_given: port.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Result<(SocketAddr, bool), String> {
        parse(text).map(|l| (l.addr, l.port_given))
    }

    fn socket(text: &str) -> SocketAddr {
        text.parse().expect("a socket address")
    }

    #[test]
    fn listen_addresses_as_people_type_them() {
        assert_eq!(addr("127.0.0.1:4200"), Ok((socket("127.0.0.1:4200"), true)));
        assert_eq!(addr("0.0.0.0:4000"), Ok((socket("0.0.0.0:4000"), true)));
        assert_eq!(addr("[::1]:4000"), Ok((socket("[::1]:4000"), true)));
        assert_eq!(addr("[::1]"), Ok((socket("[::1]:4000"), false)));
        assert_eq!(addr("::1"), Ok((socket("[::1]:4000"), false)));
        assert_eq!(addr("4200"), Ok((socket("127.0.0.1:4200"), true)));
        assert_eq!(
            addr("relay://127.0.0.1:9/"),
            Ok((socket("127.0.0.1:9"), true))
        );
        assert_eq!(addr("127.0.0.1"), Ok((socket("127.0.0.1:4000"), false)));
        let local = addr("localhost:4100").expect("localhost resolves");
        assert!(local.0.ip().is_loopback() && local.0.port() == 4100);
    }

    #[test]
    fn what_cannot_work_says_what_would() {
        assert!(addr("http://x:1").unwrap_err().contains("HOST:PORT"));
        assert!(addr("x:port").unwrap_err().contains("not a port"));
        assert!(addr(":4000").unwrap_err().contains("no host"));
        assert!(addr("[::1").unwrap_err().contains("']'"));
    }
}
