//! A harness for fuzzing request handling without sockets (cargo feature
//! `fuzzing`; not part of the supported API). Several clients talk to one
//! set of rooms; each client's bytes go through the decoder and the session
//! exactly as the reader hands them over, and after every step the harness
//! checks what each client would receive:
//!
//! - every frame parses, and none is longer than `maxFrameSize` (SPEC.md 2);
//! - every JSON payload is valid JSON;
//! - the rooms the sessions believe they are in are the registry's rooms;
//! - after each JOIN answer, a client's JSON deliveries of that room carry
//!   the answer's epoch and strictly growing `seq`s (SPEC.md 5.11): the
//!   replay, then the live messages, none twice and none out of order.
//!
//! A broken invariant panics, which the fuzzer reports as a crash.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use protocol::{Decoder, Flags, parse_frame};

use crate::config::Config;
use crate::conn::outbound::{Outbound, Outgoing, QueueLimits};
use crate::conn::rate::Limiter;
use crate::conn::reader::handle_frames;
use crate::conn::session::Session;
use crate::shared::Shared;

/// The largest frame in the fuzzed server: small, so limits are reached.
const MAX_FRAME: u32 = 2048;

struct Client {
    session: Session,
    decoder: Decoder,
    limiter: Limiter,
    outbound: Arc<Outbound>,
    rx: Receiver<Outgoing>,
    closed: bool,
    /// Per room: the epoch of the last JOIN answer and the last `seq`
    /// delivered since.
    seqs: HashMap<String, (String, u64)>,
}

/// Several in-memory clients of one in-memory server.
pub struct Harness {
    shared: Arc<Shared>,
    clients: Vec<Client>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Harness({} clients)", self.clients.len())
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new(3)
    }
}

/// The static tokens of a fuzzed server with authentication on: one with
/// permissions (so FORBIDDEN is reachable), one without.
const FUZZ_TOKENS: &str = "fuzz-token-a a join=r,p.* publish=r\nfuzz-token-b b\n";

/// What a fuzzed server turns on besides the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// Static tokens ([`FUZZ_TOKENS`]): HELLO needs `fuzz-token-a` or `-b`.
    pub auth: bool,
    /// Rate limits low enough that a few frames reach them.
    pub tight_rates: bool,
}

impl Harness {
    /// A server with `clients` connections (1 to 8).
    pub fn new(clients: usize) -> Harness {
        Harness::with(clients, Settings::default())
    }

    /// A server with `clients` connections (1 to 8) and `settings`.
    pub fn with(clients: usize, settings: Settings) -> Harness {
        let mut config = Config {
            max_frame: MAX_FRAME,
            max_rooms_per_connection: 8,
            queue_items: 8,
            queue_bytes: 64 * 1024,
            stall_timeout: std::time::Duration::ZERO,
            ..Config::default()
        };
        if settings.auth {
            match crate::auth::TokenTable::parse(FUZZ_TOKENS, "fuzz") {
                Ok(tokens) => config.auth.tokens = Some(tokens),
                Err(error) => panic!("the harness's tokens are invalid: {error}"),
            }
        }
        if settings.tight_rates {
            config.rates =
                crate::config::RateLimits::new(20, 8 * 1024, std::time::Duration::from_secs(1));
        }
        let config = match config.validate() {
            Ok(config) => config,
            Err(error) => panic!("the harness's own settings are invalid: {error}"),
        };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let shared = Arc::new(Shared::new(config, 16, addr));
        let clients = (1..=clients.clamp(1, 8) as u64)
            .map(|id| {
                let limits = QueueLimits {
                    items: shared.config.queue_items,
                    bytes: shared.config.queue_bytes,
                };
                let memory = Arc::clone(&shared.counters.memory);
                let (outbound, rx) = Outbound::accounted(id, limits, memory);
                Client {
                    session: Session::new(Arc::clone(&shared), Arc::clone(&outbound)),
                    decoder: Decoder::new(MAX_FRAME),
                    limiter: Limiter::new(&shared.config.rates, Instant::now()),
                    outbound,
                    rx,
                    closed: false,
                    seqs: HashMap::new(),
                }
            })
            .collect();
        Harness { shared, clients }
    }

    /// Client `index` (modulo the number of clients) sends `bytes`, as one
    /// read.
    pub fn read(&mut self, index: usize, bytes: &[u8]) {
        self.reap();
        let at = index % self.clients.len();
        let client = &mut self.clients[at];
        if client.closed {
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let buf = client.decoder.read_buf();
            let n = buf.len().min(rest.len());
            buf[..n].copy_from_slice(&rest[..n]);
            client.decoder.commit(n);
            rest = &rest[n..];
            client
                .session
                .begin_read(n, 1_700_000_000_000, std::time::Instant::now());
            // Refusals for the rate limits need no pause here: the frames
            // left in the decoder are simply handed over again.
            let served = loop {
                let handled = handle_frames(
                    &mut client.session,
                    &mut client.decoder,
                    &mut client.limiter,
                    Instant::now(),
                );
                if handled.served.is_break() || handled.pause.is_none() {
                    break handled.served;
                }
            };
            if served.is_break() {
                client.session.count_frames_in();
                client.closed = true;
                break;
            }
            client.session.end_read();
        }
        self.check();
    }

    /// A client closed by another's broadcast (a slow consumer) leaves its
    /// rooms, as its reader does once woken.
    fn reap(&mut self) {
        for client in &mut self.clients {
            if !client.closed && client.outbound.is_closing() {
                client.session.leave_all_rooms();
                client.closed = true;
            }
        }
    }

    /// Drains what every client was sent and checks the invariants.
    fn check(&mut self) {
        self.reap();
        for client in &mut self.clients {
            while let Ok(batch) = client.rx.try_recv() {
                client.outbound.written(batch.bytes.len());
                check_frames(&batch.bytes);
                check_order(&batch.bytes, &mut client.seqs);
            }
            if let Some(last) = client.outbound.final_error() {
                check_frames(&last.bytes);
            }
        }
        // A closed client left its rooms; the rest are where they think.
        let mut believed: BTreeMap<String, usize> = BTreeMap::new();
        for client in &self.clients {
            if client.closed {
                continue;
            }
            for room in client.session.rooms() {
                *believed.entry(room.to_owned()).or_default() += 1;
            }
        }
        for (room, members) in &believed {
            assert_eq!(
                self.shared.rooms.members(room),
                *members,
                "room {room:?}: the registry and the sessions disagree"
            );
        }
    }
}

fn check_frames(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match parse_frame(bytes, MAX_FRAME) {
            Ok(Some((frame, used))) => {
                if frame.flags == Flags::JSON {
                    assert!(
                        serde_json::from_slice::<serde::de::IgnoredAny>(frame.payload).is_ok(),
                        "the server sent invalid JSON: {:?}",
                        String::from_utf8_lossy(frame.payload)
                    );
                }
                bytes = &bytes[used..];
            }
            other => panic!("the server sent a frame a strict client refuses: {other:?}"),
        }
    }
}

/// Checks that deliveries keep their room's order since its JOIN answer.
fn check_order(mut bytes: &[u8], seqs: &mut HashMap<String, (String, u64)>) {
    while let Ok(Some((frame, used))) = parse_frame(bytes, MAX_FRAME) {
        bytes = &bytes[used..];
        if frame.flags != Flags::JSON {
            continue;
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(frame.payload) else {
            continue;
        };
        let (Some(room), Some(epoch)) = (value["room"].as_str(), value["epoch"].as_str()) else {
            continue;
        };
        match frame.kind {
            protocol::MessageType::JoinRoom => {
                seqs.insert(room.to_owned(), (epoch.to_owned(), 0));
            }
            protocol::MessageType::Message if value.get("type").is_none() => {
                let seq = value["seq"].as_u64().unwrap_or(0);
                if let Some((joined, last)) = seqs.get_mut(room) {
                    assert_eq!(joined, epoch, "a delivery of another epoch: {value}");
                    assert!(seq > *last, "seq {seq} after {last}: {value}");
                    *last = seq;
                }
            }
            _ => {}
        }
    }
}

/// Runs one fuzz input: the first byte picks how many clients (bits 0–1),
/// authentication (bit 2) and tight rate limits (bit 3); then each step is
/// `client u8 | length u8 | bytes`.
pub fn run(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let settings = Settings {
        auth: first & 4 != 0,
        tight_rates: first & 8 != 0,
    };
    let mut harness = Harness::with(usize::from(first % 4) + 1, settings);
    while let [client, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        harness.read(usize::from(*client), &tail[..len]);
        rest = &tail[len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_runs_through_the_harness() {
        let mut frames = Vec::new();
        for (kind, payload) in [
            (protocol::MessageType::Hello, r#"{"userId":"a"}"#),
            (protocol::MessageType::JoinRoom, r#"{"room":"r","id":1}"#),
            (
                protocol::MessageType::Message,
                r#"{"room":"r","content":[1,2]}"#,
            ),
        ] {
            protocol::encode(&mut frames, kind, Flags::JSON, payload.as_bytes()).unwrap();
        }
        let mut harness = Harness::new(2);
        harness.read(0, &frames);
        harness.read(1, &frames);
        assert_eq!(harness.shared.rooms.members("r"), 2);
        // Garbage closes a client, which leaves its rooms.
        harness.read(1, &[0, 0, 0, 3, 9, 9, 9]);
        assert_eq!(harness.shared.rooms.members("r"), 1);
        run(&[2, 0, 3, 1, 2, 3]);
    }

    #[test]
    fn tokens_permissions_and_rate_limits_are_reachable() {
        let frame = |kind, payload: &str| {
            let mut out = Vec::new();
            protocol::encode(&mut out, kind, Flags::JSON, payload.as_bytes()).unwrap();
            out
        };
        let settings = Settings {
            auth: true,
            tight_rates: true,
        };
        let mut harness = Harness::with(2, settings);
        let mut a = frame(protocol::MessageType::Hello, r#"{"token":"fuzz-token-a"}"#);
        a.extend(frame(protocol::MessageType::JoinRoom, r#"{"room":"r"}"#));
        a.extend(frame(protocol::MessageType::JoinRoom, r#"{"room":"q"}"#));
        harness.read(0, &a);
        assert_eq!(harness.shared.rooms.members("r"), 1);
        assert_eq!(harness.shared.rooms.members("q"), 0, "FORBIDDEN");
        // A wrong token closes the client.
        harness.read(1, &frame(protocol::MessageType::Hello, r#"{"token":"x"}"#));
        assert!(harness.clients[1].closed);
        // Far more frames than the rate allows: refused, not fatal.
        let flood = frame(protocol::MessageType::Heartbeat, "{}").repeat(100);
        harness.read(0, &flood);
        assert!(!harness.clients[0].closed);
        assert!(
            harness
                .shared
                .counters
                .errors_sent(protocol::ErrorCode::RateLimited)
                > 0
        );
    }
}
