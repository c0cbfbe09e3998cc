//! The command line.

use std::time::Duration;

use clap::Parser;

/// Chat on a Relay server.
///
/// Type `help` once connected for the commands. On a terminal it is a line
/// editor with history (kept in $XDG_DATA_HOME/relay/history, by default
/// ~/.local/share/relay/history) and tab completion; otherwise (standard input
/// or output redirected) it
/// reads the same commands line by line, prints what arrives, and exits once
/// the input ends and the server has answered everything sent. Message times
/// are shown in UTC.
#[derive(Debug, Parser)]
#[command(name = "relay", version)]
pub struct Args {
    /// Server host name or address, or a URL: relay://HOST[:PORT] (plain
    /// TCP, port 4000 by default) or relays://HOST[:PORT] (TLS, port 4443
    /// by default).
    #[arg(default_value = "localhost")]
    pub host: String,

    /// Server TCP port (default 4000, or 4443 with --tls).
    pub port: Option<u16>,

    /// Speak TLS (the server's --tls-addr port).
    #[arg(long)]
    pub tls: bool,

    /// PEM file of the CA that signed the server's certificate (implies
    /// --tls); without it, the public web's CAs are trusted.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,

    /// Client certificate (PEM) for a server that asks for one (mutual TLS);
    /// needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<std::path::PathBuf>,

    /// The private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,

    /// User name shown to others (default: your login name, else guest-NNNN).
    #[arg(long, short)]
    pub name: Option<String>,

    /// Token for a server that requires authentication (a static token or
    /// a JWT); the server then takes your name from it, and --name, if
    /// given, must match. Prefer RELAY_TOKEN: a flag shows in the process
    /// list.
    #[arg(long, env = "RELAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Also show your own messages, as the server relays them back.
    #[arg(long)]
    pub echo: bool,

    /// Seconds to wait for the connection and for each server answer.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub timeout: f64,
}

/// The port TLS uses when none is given.
pub const DEFAULT_TLS_PORT: u16 = 4443;
/// The port plain TCP uses when none is given.
pub const DEFAULT_PORT: u16 = 4000;

/// Where to connect, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "relays" } else { "relay" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl Args {
    /// The server from the host (or URL) and port arguments and --tls.
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        let (rest, scheme_tls) = if let Some(rest) = self.host.strip_prefix("relays://") {
            (rest, Some(true))
        } else if let Some(rest) = self.host.strip_prefix("relay://") {
            (rest, Some(false))
        } else if self.host.contains("://") {
            return Err(format!(
                "{:?}: use relay://HOST[:PORT] or relays://HOST[:PORT] (TLS)",
                self.host
            ));
        } else {
            (self.host.as_str(), None)
        };
        if scheme_tls == Some(false) && (self.tls || self.ca.is_some()) {
            return Err("relay:// is plain TCP; use relays:// with --tls or --ca".into());
        }
        let tls = scheme_tls.unwrap_or(false) || self.tls || self.ca.is_some();
        let rest = rest.trim_end_matches('/');
        // HOST, HOST:PORT, [V6], [V6]:PORT; a bare IPv6 address has no port.
        let (host, url_port) = match rest.rsplit_once(':') {
            Some((host, port))
                if scheme_tls.is_some() && (!host.contains(':') || host.ends_with(']')) =>
            {
                let port = port.parse::<u16>().map_err(|_| {
                    format!("{:?}: the port must be a number up to 65535", self.host)
                })?;
                (host, Some(port))
            }
            _ => (rest, None),
        };
        if host.is_empty() {
            return Err(format!("{:?} names no host", self.host));
        }
        if url_port.is_some() && self.port.is_some() {
            return Err("give the port in the URL or as an argument, not both".into());
        }
        let default = if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
        Ok(Endpoint {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: url_port.or(self.port).unwrap_or(default),
            tls,
        })
    }

    /// The TLS settings the flags ask for.
    pub fn tls_options(&self) -> client::TlsOptions {
        client::TlsOptions {
            ca_file: self.ca.clone(),
            server_name: None,
            client_cert: self.cert.clone().zip(self.key.clone()),
        }
    }

    /// The name to announce: `--name`, else $USER / $LOGNAME, else `guest-NNNN`.
    pub fn user_name(&self) -> String {
        if let Some(name) = self.name.as_ref().filter(|name| !name.trim().is_empty()) {
            return name.clone();
        }
        ["USER", "LOGNAME"]
            .iter()
            .filter_map(|var| std::env::var(var).ok())
            .find(|name| !name.trim().is_empty())
            .unwrap_or_else(guest_name)
    }

    /// Checks what the server would refuse, so the error names the flag.
    pub fn check(&self) -> Result<(), String> {
        let name = self.user_name();
        if name.len() > protocol::MAX_USER_ID_LEN {
            return Err(format!(
                "--name is {} bytes long; use at most {}",
                name.len(),
                protocol::MAX_USER_ID_LEN
            ));
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .unwrap_or(Duration::from_secs(5))
    }
}

/// `guest-NNNN` with a number that differs between runs.
fn guest_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let number = (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % 10_000;
    format!("guest-{number:04}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(argv: &[&str]) -> Result<Endpoint, String> {
        let mut full = vec!["relay"];
        full.extend_from_slice(argv);
        Args::try_parse_from(full)
            .map_err(|e| e.to_string())?
            .endpoint()
    }

    fn at(host: &str, port: u16, tls: bool) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
            tls,
        }
    }

    #[test]
    fn hosts_ports_and_urls() {
        assert_eq!(endpoint(&[]), Ok(at("localhost", 4000, false)));
        assert_eq!(
            endpoint(&["example.org", "5000"]),
            Ok(at("example.org", 5000, false))
        );
        assert_eq!(
            endpoint(&["--tls", "example.org"]),
            Ok(at("example.org", 4443, true))
        );
        assert_eq!(
            endpoint(&["relays://example.org"]),
            Ok(at("example.org", 4443, true))
        );
        assert_eq!(
            endpoint(&["relays://example.org:9"]),
            Ok(at("example.org", 9, true))
        );
        assert_eq!(
            endpoint(&["relay://10.0.0.1:7/"]),
            Ok(at("10.0.0.1", 7, false))
        );
        assert_eq!(
            endpoint(&["relays://[::1]:8443"]),
            Ok(at("::1", 8443, true))
        );
        assert_eq!(endpoint(&["--ca", "ca.pem", "h"]), Ok(at("h", 4443, true)));
        assert_eq!(endpoint(&["::1", "4001"]), Ok(at("::1", 4001, false)));
    }

    #[test]
    fn contradictions_are_refused_with_a_reason() {
        assert!(endpoint(&["http://x"]).unwrap_err().contains("relays://"));
        assert!(
            endpoint(&["--tls", "relay://x"])
                .unwrap_err()
                .contains("plain TCP")
        );
        assert!(
            endpoint(&["relays://x:1", "2"])
                .unwrap_err()
                .contains("not both")
        );
        assert!(
            endpoint(&["relays://x:port"])
                .unwrap_err()
                .contains("number")
        );
        assert!(endpoint(&["relays://"]).unwrap_err().contains("no host"));
        assert!(endpoint(&["--cert", "c.pem", "h"]).is_err());
    }
}
