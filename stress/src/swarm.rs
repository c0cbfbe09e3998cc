//! Many clients on a few threads: non-blocking sockets driven by `mio`.
//!
//! The server under test already spends two threads per connection, so the
//! load and bench clients must not: each swarm thread owns a share of the
//! clients and one `mio::Poll`. A client connects, sends HELLO and JOIN_ROOM
//! back to back, and once acked either only reads (a subscriber) or also
//! publishes on a schedule (load).
//!
//! Reading allocates nothing per message: every thread reads into one large
//! buffer, parses only frame headers plus the fixed-width fields of the
//! content ([`content`] layout), and keeps only an incomplete trailing frame
//! per client.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use protocol::{Flags, MessageType};

use crate::histogram::Histogram;
use crate::sys::now_ns;

/// The content every load and bench publisher sends, a JSON string of a
/// fixed layout so a subscriber reads its fields at known offsets:
///
/// ```text
/// "SSSSSSSSSS:PPPPPP:TTTTTTTTTTTTTTTT:xxxx…"
///  seq (10)   pos(6) sent at, ns (16)  padding to the payload size
/// ```
pub mod content {
    /// Bytes of the content before the padding, quotes included.
    pub const MIN_LEN: usize = 1 + 10 + 1 + 6 + 1 + 16 + 2;
    pub const SEQ: usize = 1;
    pub const POS: usize = 12;
    pub const TIME: usize = 19;

    /// Writes `value` as `width` decimal digits (the low digits if longer).
    #[inline]
    pub fn put_digits(out: &mut [u8], mut value: u64) {
        for byte in out.iter_mut().rev() {
            *byte = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }

    /// Reads decimal digits; `None` if any byte is not a digit.
    #[inline]
    pub fn digits(bytes: &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for &b in bytes {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            value = value * 10 + d as u64;
        }
        Some(value)
    }

    /// A content of `len` bytes (at least [`MIN_LEN`]) with all fields zero.
    pub fn template(len: usize) -> Vec<u8> {
        let len = len.max(MIN_LEN);
        let mut out = vec![b'x'; len];
        out[0] = b'"';
        out[len - 1] = b'"';
        out[SEQ..SEQ + 10].fill(b'0');
        out[SEQ + 10] = b':';
        out[POS..POS + 6].fill(b'0');
        out[POS + 6] = b':';
        out[TIME..TIME + 16].fill(b'0');
        out[TIME + 16] = b':';
        out
    }

    /// Fills the fields of a content made by [`template`].
    #[inline]
    pub fn fill(content: &mut [u8], seq: u64, pos: u32, time_ns: u64) {
        put_digits(&mut content[SEQ..SEQ + 10], seq);
        put_digits(&mut content[POS..POS + 6], pos as u64);
        put_digits(&mut content[TIME..TIME + 16], time_ns);
    }

    /// A whole MESSAGE frame publishing a content of `len` bytes to `room`,
    /// and the offset of the content in it.
    pub fn publish_frame(room: &str, len: usize) -> (Vec<u8>, usize) {
        let mut frame = Vec::new();
        let start = protocol::begin_frame(
            &mut frame,
            protocol::MessageType::Message,
            protocol::Flags::JSON,
        );
        frame.extend_from_slice(b"{\"room\":");
        frame.extend_from_slice(serde_json::to_string(room).unwrap_or_default().as_bytes());
        frame.extend_from_slice(b",\"content\":");
        let at = frame.len();
        frame.extend_from_slice(&template(len));
        frame.push(b'}');
        let _ = protocol::end_frame(&mut frame, start);
        (frame, at)
    }
}

/// The key a delivery's content follows.
const CONTENT_KEY: &[u8] = b"\"content\":";

/// What a swarm does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub clients: usize,
    pub threads: usize,
    /// Clients `r*size .. (r+1)*size` share room `r`.
    pub room_size: usize,
    /// Room `r` is named `{room_prefix}{r}`.
    pub room_prefix: String,
    /// Publishing, when the clients publish (load); `None` for subscribers.
    pub publish: Option<PublishPlan>,
    /// Slots per subscriber for publishers' sequence numbers (positions in
    /// the content); defaults to `room_size`.
    pub positions: usize,
    /// Record delivery latency from the content's timestamp.
    pub record_latency: bool,
    /// Bytes of the read buffer of each thread.
    pub read_buffer: usize,
    /// Connections each thread has in progress at once.
    pub max_connecting: usize,
    /// A ready client that sent nothing for this long sends a HEARTBEAT.
    pub heartbeat_every: Duration,
    /// A subscriber that got this many deliveries counts as done.
    pub expect_per_client: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
pub struct PublishPlan {
    /// Messages per second, per client.
    pub rate: f64,
    /// Bytes of content (a JSON string, quotes included).
    pub content_len: usize,
}

impl Plan {
    pub fn new(addr: SocketAddr, clients: usize, room_size: usize, prefix: &str) -> Plan {
        Plan {
            addr,
            clients,
            threads: 2,
            room_size: room_size.max(1),
            room_prefix: prefix.to_owned(),
            publish: None,
            positions: room_size.max(1),
            record_latency: false,
            read_buffer: 256 * 1024,
            max_connecting: 64,
            heartbeat_every: Duration::from_secs(20),
            expect_per_client: None,
        }
    }

    pub fn rooms(&self) -> usize {
        self.clients.div_ceil(self.room_size)
    }
}

// Phase 0: connecting and joining, nothing published yet.
const RUNNING: u8 = 1;
const DRAINING: u8 = 2;
const EXIT: u8 = 3;

/// Counters the threads update as they go, read by the main thread.
#[derive(Debug, Default)]
pub struct Live {
    phase: AtomicU8,
    /// When publishing started (ns on the shared clock).
    run_start_ns: AtomicU64,
    pub joined: AtomicUsize,
    pub failed: AtomicUsize,
    pub closed: AtomicUsize,
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    /// Clients that reached `expect_per_client`.
    pub done: AtomicUsize,
    /// Per room: messages sent, and members as the JOIN acks said (largest).
    room_sent: Vec<AtomicU64>,
    room_members: Vec<AtomicU64>,
}

impl Live {
    fn new(rooms: usize) -> Live {
        Live {
            room_sent: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            room_members: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            ..Live::default()
        }
    }

    /// Deliveries the messages sent so far call for (no echo): each goes to
    /// every other member of its room.
    pub fn expected(&self) -> u64 {
        self.room_sent
            .iter()
            .zip(&self.room_members)
            .map(|(sent, members)| {
                sent.load(Ordering::Acquire) * members.load(Ordering::Acquire).saturating_sub(1)
            })
            .sum()
    }
}

/// The figures of a finished swarm.
#[derive(Debug, Default)]
pub struct Totals {
    pub joined: usize,
    pub failed_to_join: usize,
    /// Connections the server closed (or reset) after they joined.
    pub closed_early: usize,
    pub sent: u64,
    pub delivered: u64,
    pub member_events: u64,
    /// Deliveries out of sequence per publisher (reordered, duplicated or
    /// skipped).
    pub out_of_order: u64,
    /// MESSAGE frames that aren't ours.
    pub foreign: u64,
    pub errors: HashMap<String, u64>,
    pub latency: Histogram,
    /// Latest delivery (ns on the shared clock).
    pub last_delivery_ns: u64,
    /// Latest time a client reached `expect_per_client`.
    pub last_done_ns: u64,
    pub clients_done: usize,
    /// Sent messages per room.
    pub sent_per_room: Vec<u64>,
    /// Members per room as the JOIN acks reported (the largest seen).
    pub members_per_room: Vec<u64>,
    /// Publishing turns skipped because the client's socket was backed up.
    pub backlogged: u64,
    pub bytes_read: u64,
}

impl Totals {
    fn merge(&mut self, other: Totals) {
        self.joined += other.joined;
        self.failed_to_join += other.failed_to_join;
        self.closed_early += other.closed_early;
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.member_events += other.member_events;
        self.out_of_order += other.out_of_order;
        self.foreign += other.foreign;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latency.merge(&other.latency);
        self.last_delivery_ns = self.last_delivery_ns.max(other.last_delivery_ns);
        self.last_done_ns = self.last_done_ns.max(other.last_done_ns);
        self.clients_done += other.clients_done;
        merge_vec(&mut self.sent_per_room, &other.sent_per_room, |a, b| a + b);
        merge_vec(
            &mut self.members_per_room,
            &other.members_per_room,
            u64::max,
        );
        self.backlogged += other.backlogged;
        self.bytes_read += other.bytes_read;
    }

    /// Deliveries the room sizes and messages sent call for (no echo).
    pub fn expected_deliveries(&self) -> u64 {
        self.sent_per_room
            .iter()
            .zip(&self.members_per_room)
            .map(|(sent, members)| sent * members.saturating_sub(1))
            .sum()
    }
}

fn merge_vec(into: &mut Vec<u64>, from: &[u64], f: impl Fn(u64, u64) -> u64) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, &b) in into.iter_mut().zip(from) {
        *a = f(*a, b);
    }
}

/// A running swarm.
#[derive(Debug)]
pub struct Swarm {
    pub live: Arc<Live>,
    threads: Vec<JoinHandle<Totals>>,
    clients: usize,
}

impl Swarm {
    /// Starts the threads; they connect and join at once.
    pub fn start(plan: &Plan) -> io::Result<Swarm> {
        let live = Arc::new(Live::new(plan.rooms()));
        let threads = plan.threads.clamp(1, plan.clients.max(1));
        let handles = (0..threads)
            .map(|t| {
                let plan = plan.clone();
                let live = Arc::clone(&live);
                let mine: Vec<usize> = (t..plan.clients).step_by(threads).collect();
                let worker = Worker::new(plan, live, mine)?;
                thread::Builder::new()
                    .name(format!("swarm-{t}"))
                    .spawn(move || worker.run())
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Swarm {
            live,
            threads: handles,
            clients: plan.clients,
        })
    }

    /// Waits until every client joined or gave up, or `timeout`; calls
    /// `tick` now and then. Returns whether all joined.
    pub fn wait_joined(&self, timeout: Duration, mut tick: impl FnMut(usize, usize)) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let joined = self.live.joined.load(Ordering::Acquire);
            let failed = self.live.failed.load(Ordering::Acquire);
            if joined + failed >= self.clients {
                return failed == 0;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tick(joined, failed);
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts publishing (for plans that publish); returns the start time.
    pub fn start_publishing(&self) -> u64 {
        let start = now_ns();
        self.live.run_start_ns.store(start, Ordering::Release);
        self.live.phase.store(RUNNING, Ordering::Release);
        start
    }

    /// Stops publishing; clients go on reading.
    pub fn stop_publishing(&self) {
        self.live.phase.store(DRAINING, Ordering::Release);
    }

    /// Closes every client and returns the merged figures.
    pub fn finish(self) -> Totals {
        self.live.phase.store(EXIT, Ordering::Release);
        let mut totals = Totals::default();
        for handle in self.threads {
            if let Ok(t) = handle.join() {
                totals.merge(t);
            }
        }
        totals
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Connecting,
    /// HELLO and JOIN sent; waiting for both answers.
    Greeting,
    Ready,
    Closed,
}

#[derive(Debug)]
struct Client {
    room: usize,
    position: u32,
    stream: Option<TcpStream>,
    state: State,
    attempts: u32,
    /// The bytes of an incomplete frame left from the last read.
    partial: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Next expected sequence number per publisher position.
    next_seq: Vec<u64>,
    delivered: u64,
    seq: u64,
    last_send: Instant,
    /// Where `"content":` was found in the last delivery.
    content_hint: usize,
    /// This client's publish frame, fields filled per message.
    frame: Vec<u8>,
    frame_content_at: usize,
}

struct Worker {
    plan: Plan,
    live: Arc<Live>,
    poll: Poll,
    clients: Vec<Client>,
    waiting: VecDeque<usize>,
    connecting: usize,
    /// Clients that gave up connecting.
    failed: usize,
    buf: Vec<u8>,
    totals: Totals,
    schedule: BinaryHeap<Reverse<(u64, usize)>>,
    scheduled: bool,
    interval_ns: u64,
}

impl Worker {
    fn new(plan: Plan, live: Arc<Live>, mine: Vec<usize>) -> io::Result<Worker> {
        let rooms = plan.rooms();
        let positions = plan.positions.max(1);
        let clients: Vec<Client> = mine
            .iter()
            .map(|&index| {
                let room = index / plan.room_size;
                let (frame, at) = match plan.publish {
                    Some(p) => content::publish_frame(
                        &format!("{}{room}", plan.room_prefix),
                        p.content_len,
                    ),
                    None => (Vec::new(), 0),
                };
                Client {
                    room,
                    position: (index % plan.room_size) as u32,
                    stream: None,
                    state: State::Waiting,
                    attempts: 0,
                    partial: Vec::new(),
                    out: Vec::new(),
                    out_pos: 0,
                    next_seq: vec![0; positions],
                    delivered: 0,
                    seq: 0,
                    last_send: Instant::now(),
                    content_hint: 0,
                    frame,
                    frame_content_at: at,
                }
            })
            .collect();
        let interval_ns = plan
            .publish
            .map(|p| (1e9 / p.rate.max(1e-3)) as u64)
            .unwrap_or(u64::MAX);
        let totals = Totals {
            sent_per_room: vec![0; rooms],
            members_per_room: vec![0; rooms],
            ..Totals::default()
        };
        Ok(Worker {
            waiting: (0..clients.len()).collect(),
            buf: vec![0; plan.read_buffer.max(64 * 1024)],
            plan,
            live,
            poll: Poll::new()?,
            clients,
            connecting: 0,
            failed: 0,
            totals,
            schedule: BinaryHeap::new(),
            scheduled: false,
            interval_ns,
        })
    }

    fn run(mut self) -> Totals {
        let mut events = Events::with_capacity(1024);
        let mut last_heartbeat_scan = Instant::now();
        loop {
            let phase = self.live.phase.load(Ordering::Acquire);
            if phase == EXIT {
                break;
            }
            self.start_connects();
            let mut timeout = Duration::from_millis(20);
            if phase == RUNNING && self.plan.publish.is_some() {
                if !self.scheduled {
                    self.schedule_all();
                }
                let now = now_ns();
                self.publish_due(now);
                if let Some(Reverse((due, _))) = self.schedule.peek() {
                    timeout = timeout.min(Duration::from_nanos(due.saturating_sub(now_ns())));
                }
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                break;
            }
            for event in events.iter() {
                let i = event.token().0;
                if event.is_writable() {
                    self.on_writable(i);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(i);
                }
            }
            if last_heartbeat_scan.elapsed() >= Duration::from_secs(1) {
                last_heartbeat_scan = Instant::now();
                self.heartbeats();
            }
        }
        for c in &self.clients {
            if c.state == State::Ready {
                self.totals.joined += 1;
            }
            if self
                .plan
                .expect_per_client
                .is_some_and(|m| c.delivered >= m)
            {
                self.totals.clients_done += 1;
            }
        }
        self.totals.failed_to_join = self.failed;
        self.totals
    }

    fn start_connects(&mut self) {
        while self.connecting < self.plan.max_connecting {
            let Some(i) = self.waiting.pop_front() else {
                break;
            };
            let c = &mut self.clients[i];
            c.attempts += 1;
            match TcpStream::connect(self.plan.addr) {
                Ok(mut stream) => {
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(i),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        self.connect_failed(i);
                        continue;
                    }
                    c.stream = Some(stream);
                    c.state = State::Connecting;
                    self.connecting += 1;
                }
                Err(_) => {
                    self.connecting += 1;
                    self.connect_failed(i);
                }
            }
        }
    }

    /// A connect or greeting failed: retry a few times, then give up.
    fn connect_failed(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if let Some(mut stream) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        c.partial.clear();
        c.out.clear();
        c.out_pos = 0;
        self.connecting = self.connecting.saturating_sub(1);
        if c.attempts < 5 {
            c.state = State::Waiting;
            self.waiting.push_back(i);
        } else {
            c.state = State::Closed;
            self.live.failed.fetch_add(1, Ordering::AcqRel);
            self.failed += 1;
        }
    }

    fn on_writable(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if c.state == State::Connecting {
            let Some(stream) = c.stream.as_ref() else {
                return;
            };
            match stream.take_error() {
                Ok(None) => {}
                _ => return self.connect_failed(i),
            }
            if stream.peer_addr().is_err() {
                // Not connected yet (spurious wake-up) or refused.
                return;
            }
            let _ = stream.set_nodelay(true);
            c.state = State::Greeting;
            let room = format!("{}{}", self.plan.room_prefix, c.room);
            crate::wire::push_json(
                &mut c.out,
                MessageType::Hello,
                &serde_json::json!({"clientVersion": "stress-swarm"}),
            );
            crate::wire::push_json(
                &mut c.out,
                MessageType::JoinRoom,
                &serde_json::json!({ "room": room }),
            );
        }
        self.flush(i);
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        while c.out_pos < c.out.len() {
            match stream.write(&c.out[c.out_pos..]) {
                Ok(0) => break,
                Ok(n) => {
                    c.out_pos += n;
                    c.last_send = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.lost(i),
            }
        }
        c.out.clear();
        c.out_pos = 0;
    }

    /// The server closed a client (or it failed while greeting).
    fn lost(&mut self, i: usize) {
        match self.clients[i].state {
            State::Connecting | State::Greeting => self.connect_failed(i),
            State::Ready => {
                let c = &mut self.clients[i];
                if let Some(mut stream) = c.stream.take() {
                    let _ = self.poll.registry().deregister(&mut stream);
                }
                c.state = State::Closed;
                self.totals.closed_early += 1;
                self.live.closed.fetch_add(1, Ordering::AcqRel);
            }
            State::Waiting | State::Closed => {}
        }
    }

    fn on_readable(&mut self, i: usize) {
        if self.clients[i].stream.is_none() {
            return;
        }
        let mut filled = {
            let c = &mut self.clients[i];
            let n = c.partial.len();
            if self.buf.len() < n + 64 * 1024 {
                self.buf.resize(n + 64 * 1024, 0);
            }
            self.buf[..n].copy_from_slice(&c.partial);
            c.partial.clear();
            n
        };
        let mut closed = false;
        loop {
            if filled == self.buf.len() {
                let grow = self.buf.len();
                self.buf.resize(grow * 2, 0);
            }
            let Some(stream) = self.clients[i].stream.as_mut() else {
                return;
            };
            match stream.read(&mut self.buf[filled..]) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    self.totals.bytes_read += n as u64;
                    filled += n;
                    let now = now_ns();
                    let used = self.process(i, filled, now);
                    self.buf.copy_within(used..filled, 0);
                    filled -= used;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            self.lost(i);
            return;
        }
        let (buf, clients) = (&self.buf, &mut self.clients);
        clients[i].partial.extend_from_slice(&buf[..filled]);
        // Answers may have queued frames (none today), and a greeting that
        // finished may have unlocked more connects.
        if !self.clients[i].out.is_empty() {
            self.flush(i);
        }
    }

    /// Handles every complete frame in `buf[..filled]`; returns bytes used.
    fn process(&mut self, i: usize, filled: usize, now: u64) -> usize {
        let mut at = 0;
        let mut delivered = 0u64;
        while filled - at >= protocol::HEADER_LEN {
            let b = &self.buf[at..filled];
            let length = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            let total = 4 + length;
            if length < 3 {
                // Garbage from the server: drop the connection.
                self.totals.foreign += 1;
                return filled;
            }
            if b.len() < total {
                break;
            }
            let kind = b[5];
            let flags = b[6];
            let payload = &b[protocol::HEADER_LEN..total];
            if kind == MessageType::Message as u8 {
                if payload.starts_with(b"{\"type\"") {
                    self.totals.member_events += 1;
                } else if flags == Flags::JSON.bits() {
                    let c = &mut self.clients[i];
                    match find_content(payload, &mut c.content_hint) {
                        Some(content) => {
                            delivered += 1;
                            c.delivered += 1;
                            let seq = content::digits(&content[content::SEQ..content::SEQ + 10]);
                            let pos = content::digits(&content[content::POS..content::POS + 6]);
                            match (seq, pos) {
                                (Some(seq), Some(pos)) if (pos as usize) < c.next_seq.len() => {
                                    let slot = &mut c.next_seq[pos as usize];
                                    if seq != *slot {
                                        self.totals.out_of_order += 1;
                                    }
                                    *slot = seq + 1;
                                }
                                _ => self.totals.foreign += 1,
                            }
                            if self.plan.record_latency
                                && let Some(sent) =
                                    content::digits(&content[content::TIME..content::TIME + 16])
                            {
                                self.totals.latency.record(now.saturating_sub(sent));
                            }
                            if self.plan.expect_per_client == Some(c.delivered) {
                                self.totals.last_done_ns = self.totals.last_done_ns.max(now);
                                self.live.done.fetch_add(1, Ordering::AcqRel);
                            }
                        }
                        None => self.totals.foreign += 1,
                    }
                } else {
                    self.totals.foreign += 1;
                }
            } else {
                self.answer(i, kind, payload.to_vec());
            }
            at += total;
        }
        if delivered > 0 {
            self.totals.delivered += delivered;
            self.totals.last_delivery_ns = now;
            self.live.delivered.fetch_add(delivered, Ordering::Relaxed);
        }
        at
    }

    /// A frame other than a delivery: HELLO answer, JOIN ack, ERROR, ...
    fn answer(&mut self, i: usize, kind: u8, payload: Vec<u8>) {
        if kind == MessageType::Error as u8 {
            let code = serde_json::from_slice::<protocol::ErrorPayload>(&payload)
                .map(|e| e.code.to_string())
                .unwrap_or_else(|_| "UNREADABLE".into());
            *self.totals.errors.entry(code).or_default() += 1;
            return;
        }
        if kind == MessageType::JoinRoom as u8 {
            let c = &mut self.clients[i];
            if c.state == State::Greeting {
                let members = serde_json::from_slice::<protocol::RoomReply>(&payload)
                    .map(|r| r.members)
                    .unwrap_or(0);
                let slot = &mut self.totals.members_per_room[c.room];
                *slot = (*slot).max(members);
                self.live.room_members[c.room].fetch_max(members, Ordering::AcqRel);
                c.state = State::Ready;
                self.connecting = self.connecting.saturating_sub(1);
                self.live.joined.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    fn schedule_all(&mut self) {
        self.scheduled = true;
        let start = self.live.run_start_ns.load(Ordering::Acquire);
        let n = self.clients.len().max(1) as u64;
        for (k, c) in self.clients.iter().enumerate() {
            if c.state == State::Ready {
                // Spread the first sends over one interval.
                let offset = self.interval_ns.saturating_mul(k as u64) / n;
                self.schedule.push(Reverse((start + offset, k)));
            }
        }
    }

    fn publish_due(&mut self, now: u64) {
        let mut touched = Vec::new();
        while let Some(&Reverse((due, i))) = self.schedule.peek() {
            if due > now {
                break;
            }
            self.schedule.pop();
            let c = &mut self.clients[i];
            if c.state != State::Ready {
                continue;
            }
            if c.out.len() - c.out_pos > 256 * 1024 {
                self.totals.backlogged += 1;
            } else {
                let at = c.frame_content_at;
                content::fill(&mut c.frame[at..], c.seq, c.position, now_ns());
                c.seq += 1;
                c.out.extend_from_slice(&c.frame);
                self.totals.sent += 1;
                self.totals.sent_per_room[c.room] += 1;
                self.live.room_sent[c.room].fetch_add(1, Ordering::AcqRel);
                touched.push(i);
            }
            let mut next = due + self.interval_ns;
            if next + 1_000_000_000 < now {
                // More than a second behind: don't burst to catch up.
                next = now;
            }
            self.schedule.push(Reverse((next, i)));
        }
        if !touched.is_empty() {
            self.live
                .sent
                .fetch_add(touched.len() as u64, Ordering::Relaxed);
        }
        for i in touched {
            self.flush(i);
        }
    }

    fn heartbeats(&mut self) {
        let every = self.plan.heartbeat_every;
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if c.state == State::Ready && c.out.is_empty() && c.last_send.elapsed() >= every {
                let _ = protocol::encode(&mut c.out, MessageType::Heartbeat, Flags::NONE, b"");
                c.last_send = Instant::now();
                self.flush(i);
            }
        }
    }
}

/// The content of a delivery, found at the offset it had last time if it is
/// still there, else by a scan.
#[inline]
fn find_content<'a>(payload: &'a [u8], hint: &mut usize) -> Option<&'a [u8]> {
    let at = *hint;
    let start = if at > 0 && payload.get(at..at + CONTENT_KEY.len()) == Some(CONTENT_KEY) {
        at
    } else {
        let found = payload
            .windows(CONTENT_KEY.len())
            .position(|w| w == CONTENT_KEY)?;
        *hint = found;
        found
    };
    let content = payload.get(start + CONTENT_KEY.len()..)?;
    (content.len() >= content::MIN_LEN && content[0] == b'"').then_some(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_fields_round_trip() {
        let mut c = content::template(64);
        assert_eq!(c.len(), 64);
        content::fill(&mut c, 1234567, 42, 9_876_543_210);
        assert_eq!(
            content::digits(&c[content::SEQ..content::SEQ + 10]),
            Some(1234567)
        );
        assert_eq!(
            content::digits(&c[content::POS..content::POS + 6]),
            Some(42)
        );
        assert_eq!(
            content::digits(&c[content::TIME..content::TIME + 16]),
            Some(9_876_543_210)
        );
        assert!(serde_json::from_slice::<String>(&c).is_ok());
    }

    #[test]
    fn content_is_found_in_a_delivery() {
        let mut c = content::template(40);
        content::fill(&mut c, 7, 1, 5);
        let mut payload = br#"{"room":"r","from":"c12","content":"#.to_vec();
        payload.extend_from_slice(&c);
        payload.extend_from_slice(br#","timestamp":1}"#);
        let mut hint = 0;
        let found = find_content(&payload, &mut hint).map(|c| c[..40].to_vec());
        assert_eq!(found, Some(c.clone()));
        assert!(hint > 0);
        assert!(find_content(&payload, &mut hint).is_some());
    }
}
