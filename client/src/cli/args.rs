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
    /// Server host name or address.
    #[arg(default_value = "localhost")]
    pub host: String,

    /// Server TCP port.
    #[arg(default_value_t = 4000)]
    pub port: u16,

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

impl Args {
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
