//! Blocking connections of any system: the greeting handshake (also what the
//! setup workload times) and the bench's one fast publisher.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::System;
use super::dialect::{self, Event};
use crate::error::{Context, Error, Result};
use crate::tls::TlsClient;

/// Most bytes a handshake reads before its answers must have come.
const HANDSHAKE_BYTES: usize = 1024 * 1024;

/// Writes `greeting` and reads until `acks` [`Event::Ack`]s came, within
/// `timeout`. An ERROR from the server, a close or the timeout is an error.
pub fn handshake(
    stream: &mut TcpStream,
    system: System,
    greeting: &[u8],
    acks: usize,
    timeout: Duration,
) -> Result<()> {
    let socket = stream.try_clone().context("cloning the socket")?;
    handshake_over(
        &mut &*stream,
        &mut &socket,
        &socket,
        system,
        greeting,
        acks,
        timeout,
    )
}

/// [`handshake`] over any pair of halves (TLS), with `socket` the
/// connection itself for the read timeout.
fn handshake_over(
    reader: &mut impl Read,
    writer: &mut impl Write,
    socket: &TcpStream,
    system: System,
    greeting: &[u8],
    acks: usize,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    writer.write_all(greeting).context("sending the greeting")?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    let mut got = 0;
    let mut hint = 0;
    while got < acks {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::new(format!(
                "{} answered {got} of {acks} joins within {timeout:?}",
                system.name()
            )));
        }
        socket
            .set_read_timeout(Some(left))
            .context("setting a read timeout")?;
        if filled == buf.len() {
            if buf.len() >= HANDSHAKE_BYTES {
                return Err(Error::new(format!(
                    "{} sent {HANDSHAKE_BYTES} bytes without answering the greeting",
                    system.name()
                )));
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = match reader.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(Error::new(format!(
                    "{} closed the connection during the greeting",
                    system.name()
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::new(format!("reading the greeting's answer: {e}"))),
        };
        filled += n;
        let mut at = 0;
        while let Some((event, used)) =
            dialect::next_event(system, &buf[at..filled], &mut hint).map_err(Error::new)?
        {
            at += used;
            match event {
                Event::Ack { .. } => got += 1,
                Event::Error(code) => {
                    return Err(Error::new(format!(
                        "{} refused the greeting: {code}",
                        system.name()
                    )));
                }
                _ => {}
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
    }
    socket
        .set_read_timeout(None)
        .context("clearing the read timeout")?;
    Ok(())
}

/// Which of Relay's ports a connection uses, and how.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    Plain,
    Tls(&'a TlsClient),
    /// WebSocket, one frame per binary message.
    Ws,
}

/// One connection publishing as fast as the server takes it (fan-out) or on
/// a schedule (latency). A thread reads and drops what the server sends it
/// (Relay's member events, Redis's PUBLISH counts) and counts NATS's PINGs,
/// which [`Publisher::send`] answers between writes, so that only one thread
/// ever writes.
pub struct Publisher {
    system: System,
    /// The write half: the socket, or TLS over it.
    stream: Box<dyn Write + Send>,
    /// The socket, to close.
    socket: TcpStream,
    drain: Option<JoinHandle<()>>,
    /// PINGs the server sent (NATS), counted by the drain thread.
    pings: Arc<AtomicU64>,
    /// PONGs sent for them.
    pongs: u64,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("system", &self.system)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Connects and gets ready to publish to `room`: Relay says HELLO and
    /// joins it (a Relay publisher is a member); Redis answers a PING;
    /// NATS answers CONNECT + PING.
    pub fn connect(system: System, addr: SocketAddr, room: &str) -> Result<Publisher> {
        Publisher::connect_over(system, addr, room, Via::Plain)
    }

    /// [`Publisher::connect`] over TLS or WebSocket (Relay's TLS or
    /// WebSocket port at `addr`).
    pub fn connect_over(
        system: System,
        addr: SocketAddr,
        room: &str,
        via: Via<'_>,
    ) -> Result<Publisher> {
        let socket = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .context(format!("connecting the publisher to {addr}"))?;
        let _ = socket.set_nodelay(true);
        let (mut reader, mut stream): (Box<dyn Read + Send>, Box<dyn Write + Send>) = match via {
            Via::Ws => {
                let (input, output) = crate::ws::pair(addr);
                let reader = socket.try_clone().context("cloning the publisher socket")?;
                let writer = socket.try_clone().context("cloning the publisher socket")?;
                (
                    Box::new(crate::ws::WsReader::new(reader, input)),
                    Box::new(crate::ws::WsWriter {
                        socket: writer,
                        ws: output,
                    }),
                )
            }
            Via::Plain => {
                let reader = socket.try_clone().context("cloning the publisher socket")?;
                let writer = socket.try_clone().context("cloning the publisher socket")?;
                (Box::new(reader), Box::new(writer))
            }
            Via::Tls(tls) => {
                let connection = socket.try_clone().context("cloning the publisher socket")?;
                let (reader, writer) = client::tls::split_stream(
                    connection,
                    "127.0.0.1",
                    &tls.options,
                    Duration::from_secs(10),
                )
                .map_err(|e| Error::new(format!("publisher TLS to {addr}: {e}")))?;
                (Box::new(reader), Box::new(writer))
            }
        };
        let mut greeting = Vec::new();
        match system {
            System::Relay => dialect::greeting(system, &mut greeting, &[room.to_owned()], true),
            System::Nats => dialect::greeting(system, &mut greeting, &[], true),
            System::Redis => super::resp::command(&mut greeting, &[b"PING"]),
        }
        let acks = match system {
            System::Relay | System::Nats => 1,
            System::Redis => 0,
        };
        handshake_over(
            &mut reader,
            &mut stream,
            &socket,
            system,
            &greeting,
            acks,
            Duration::from_secs(10),
        )?;
        let pings = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&pings);
        let drain = std::thread::Builder::new()
            .name("publisher-drain".into())
            .spawn(move || drain(system, &mut reader, &counted))
            .context("starting the publisher's reader thread")?;
        Ok(Publisher {
            system,
            stream,
            socket,
            drain: Some(drain),
            pings,
            pongs: 0,
        })
    }

    /// Writes `bytes` whole, after any PONGs owed.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let pings = self.pings.load(Ordering::Acquire);
        while self.pongs < pings {
            let mut pong = Vec::new();
            dialect::pong(self.system, &mut pong);
            self.stream.write_all(&pong).context("answering a PING")?;
            self.pongs += 1;
        }
        self.stream
            .write_all(bytes)
            .context(format!("publishing to {}", self.system.name()))
    }

    /// Closes the connection and waits for the reader thread.
    pub fn close(mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }
}

fn drain(system: System, reader: &mut dyn Read, pings: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    let mut hint = 0;
    loop {
        if filled == buf.len() {
            // Not the protocol, or one huge frame: nothing to answer in it.
            filled = 0;
        }
        let n = match reader.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if system != System::Nats {
            continue;
        }
        filled += n;
        let mut at = 0;
        loop {
            match dialect::next_event(system, &buf[at..filled], &mut hint) {
                Ok(Some((event, used))) => {
                    at += used;
                    if event == Event::Ping {
                        pings.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    at = filled;
                    break;
                }
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
    }
}
