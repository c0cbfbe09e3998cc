//! Connecting and logging in, with each way it can fail told apart (the exit
//! codes depend on it), and connecting again with backoff for `--reconnect`.

use std::time::{Duration, Instant};

use client::{Client, ClientError, DisconnectReason, ErrorCode, HelloReply, Options, ServerError};
use crossbeam_channel::Receiver;

use super::address::Endpoint;
use super::args::Args;
use super::exit::{Exit, Failure};

/// A connection that has said HELLO.
#[derive(Debug)]
pub struct Login {
    pub client: Client,
    pub hello: HelloReply,
    /// The name shown to the user ("the token's user" when a token names it).
    pub name: String,
}

/// What a connection needs, taken from the command line once.
#[derive(Debug, Clone)]
pub struct Dial {
    pub endpoint: Endpoint,
    pub options: Options,
    pub name: Option<String>,
    pub token: Option<String>,
    pub echo: bool,
    pub timeout: Duration,
}

impl Dial {
    pub fn from_args(args: &Args) -> Result<Dial, Failure> {
        args.check().map_err(|e| Failure::new(Exit::Usage, e))?;
        let endpoint = args.endpoint().map_err(|e| Failure::new(Exit::Usage, e))?;
        let timeout = args.timeout();
        let options = Options {
            connect_timeout: timeout,
            tls: endpoint.tls.then(|| args.tls_options()),
            ..Options::default()
        };
        // With a token the server names the user; only an explicit --name
        // is sent (and must match), never the login name.
        let name = match &args.global.token {
            Some(_) => args.global.name.clone().filter(|n| !n.trim().is_empty()),
            None => Some(args.user_name()),
        };
        Ok(Dial {
            endpoint,
            options,
            name,
            token: args.global.token.clone(),
            echo: args.global.echo,
            timeout,
        })
    }

    /// Connects and says HELLO once.
    pub fn login(&self) -> Result<Login, Failure> {
        let endpoint = &self.endpoint;
        let client = Client::connect_host(&endpoint.host, endpoint.port, &self.options)
            .map_err(|error| Failure::new(Exit::Unreachable, error.to_string()))?;
        let hello = match &self.token {
            Some(token) => {
                client.hello_with_token(self.name.as_deref(), token, self.echo, self.timeout)
            }
            None => client.hello_as(self.name.as_deref(), self.echo, self.timeout),
        };
        match hello {
            Ok(hello) => Ok(Login {
                client,
                hello,
                name: self
                    .name
                    .clone()
                    .unwrap_or_else(|| "the token's user".to_owned()),
            }),
            Err(error) => Err(self.hello_failed(error)),
        }
    }

    /// Why a HELLO got no answer, in the words of the issue: "refused the
    /// login" only when the server refused it.
    fn hello_failed(&self, error: ClientError) -> Failure {
        let endpoint = &self.endpoint;
        match error {
            ClientError::Server(error)
            | ClientError::Disconnected(DisconnectReason::ServerError(error)) => {
                refused(endpoint, &error)
            }
            ClientError::Timeout { after, .. } => Failure::new(
                Exit::Unreachable,
                format!(
                    "{endpoint} did not answer within {}; is it a Relay server, and is the port right?",
                    super::format::rtt(after)
                ),
            ),
            ClientError::Protocol(what)
            | ClientError::Disconnected(DisconnectReason::ProtocolViolation(what)) => {
                let tls_hint = if endpoint.tls {
                    ""
                } else {
                    "; if it is a Relay server's TLS port, use relays:// or --tls"
                };
                Failure::new(
                    Exit::Unreachable,
                    format!("{endpoint} is not a Relay server ({what}){tls_hint}"),
                )
            }
            ClientError::Disconnected(reason) => Failure::new(
                Exit::Unreachable,
                format!(
                    "{endpoint} closed the connection without answering ({reason}); is it a Relay server?"
                ),
            ),
            other => Failure::new(Exit::Unreachable, format!("{endpoint}: {other}")),
        }
    }

    /// Connects and logs in, trying again with exponential backoff and
    /// jitter while the server cannot be reached; a refused login is not
    /// tried again (the same token would be refused again). `attempt` is
    /// told about each failure and the wait before the next try. Ends early,
    /// with `None`, when `stop` is dropped.
    pub fn login_retrying(
        &self,
        stop: &Receiver<()>,
        mut attempt: impl FnMut(u32, &Failure, Duration),
    ) -> Option<Result<Login, Failure>> {
        let mut backoff = Backoff::new();
        for tries in 1.. {
            let failure = match self.login() {
                Ok(login) => return Some(Ok(login)),
                Err(failure) if failure.exit == Exit::Refused => return Some(Err(failure)),
                Err(failure) => failure,
            };
            let wait = backoff.next();
            attempt(tries, &failure, wait);
            let until = Instant::now() + wait;
            if stop.recv_deadline(until).is_ok() || !stop_is_open(stop) {
                return None;
            }
        }
        None
    }
}

/// The wait was cut short because the sender went away.
fn stop_is_open(stop: &Receiver<()>) -> bool {
    !matches!(
        stop.try_recv(),
        Err(crossbeam_channel::TryRecvError::Disconnected)
    )
}

/// A refusal at HELLO. A server that is full or shutting down did not refuse
/// *this* login: that is "could not connect", and worth another try.
fn refused(endpoint: &Endpoint, error: &ServerError) -> Failure {
    let text = super::format::clean(&error.to_string());
    match error.code {
        ErrorCode::ServerFull | ErrorCode::ShuttingDown | ErrorCode::Overloaded => Failure::new(
            Exit::Unreachable,
            format!("{endpoint} is not taking connections: {text}"),
        ),
        _ => Failure::new(
            Exit::Refused,
            format!("{endpoint} refused the login: {text}"),
        ),
    }
}

/// Exponential backoff with jitter: 0.25 s, 0.5 s, 1 s, ... up to 30 s, each
/// wait drawn from its upper half, so clients cut off together do not all
/// come back together.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    seed: u64,
}

const FIRST_WAIT: Duration = Duration::from_millis(250);
const LONGEST_WAIT: Duration = Duration::from_secs(30);

impl Backoff {
    pub fn new() -> Backoff {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
        Backoff {
            next: FIRST_WAIT,
            seed: nanos ^ u64::from(std::process::id()).rotate_left(32) | 1,
        }
    }

    /// The wait before the next try.
    pub fn next(&mut self) -> Duration {
        // xorshift64: jitter needs no more than this.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let fraction = 0.5 + (self.seed % 1000) as f64 / 2000.0;
        let wait = self.next.mul_f64(fraction);
        self.next = (self.next * 2).min(LONGEST_WAIT);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling_with_jitter_in_the_upper_half() {
        let mut backoff = Backoff::new();
        let mut ceiling = FIRST_WAIT;
        for _ in 0..12 {
            let wait = backoff.next();
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{wait:?} for {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(LONGEST_WAIT);
        }
        assert_eq!(ceiling, LONGEST_WAIT);
    }
}
