//! One swarm thread: its share of the clients on one `mio::Poll`,
//! connecting, greeting, publishing on schedule and reading every delivery.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::tls::SwarmStream;
use crate::ws::Unframed;
use mio::{Events, Interest, Poll, Token};

use super::content;
use super::plan::Plan;
use super::totals::{EXIT, Live, RUNNING, Totals};
use crate::peer::dialect::{self, Event};
use crate::sys::now_ns;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Connecting,
    /// Greeting sent (HELLO and JOINs, SUBSCRIBE, CONNECT + SUBs + PING);
    /// waiting for its answers.
    Greeting,
    Ready,
    Closed,
}

#[derive(Debug)]
struct Client {
    room: usize,
    position: u32,
    stream: Option<SwarmStream>,
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
    /// Answers to the greeting so far (see [`dialect::acks_needed`]).
    acks: usize,
    /// Where `"content":` was found in the last Relay delivery.
    content_hint: usize,
    /// This client's publish frame, fields filled per message.
    frame: Vec<u8>,
    frame_content_at: usize,
}

pub(super) struct Worker {
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
    pub(super) fn new(plan: Plan, live: Arc<Live>, mine: Vec<usize>) -> io::Result<Worker> {
        let rooms = plan.rooms();
        let positions = plan.positions.max(1);
        let clients: Vec<Client> = mine
            .iter()
            .map(|&index| {
                let room = index / plan.room_size;
                let (frame, at) = match plan.publish {
                    Some(p) => {
                        dialect::publish_frame(plan.system, &plan.room_name(room, 0), p.content_len)
                    }
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
                    acks: 0,
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
            joined_per_room: vec![0; rooms],
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

    pub(super) fn run(mut self) -> Totals {
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
            let addr = match self.plan.nodes.len() {
                0 => self.plan.addr,
                n => self.plan.nodes[c.position as usize % n],
            };
            let connected = TcpStream::connect(addr).and_then(|stream| {
                if self.plan.ws {
                    Ok(SwarmStream::websocket(stream, addr))
                } else {
                    SwarmStream::new(stream, self.plan.tls.as_ref())
                }
            });
            match connected {
                Ok(mut stream) => {
                    if self
                        .poll
                        .registry()
                        .register(
                            stream.socket(),
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
            let _ = self.poll.registry().deregister(stream.socket());
        }
        c.partial.clear();
        c.out.clear();
        c.out_pos = 0;
        c.acks = 0;
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
            let Some(stream) = c.stream.as_mut().map(SwarmStream::socket) else {
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
            let rooms: Vec<String> = (0..self.plan.rooms_per_client.max(1))
                .map(|j| self.plan.room_name(c.room, j))
                .collect();
            dialect::greeting(
                self.plan.system,
                &mut c.out,
                &rooms,
                self.plan.publish.is_some(),
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
        // TLS records still waiting for room in the socket.
        match stream.flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => self.lost(i),
            _ => {}
        }
    }

    /// The server closed a client (or it failed while greeting).
    fn lost(&mut self, i: usize) {
        match self.clients[i].state {
            State::Connecting | State::Greeting => self.connect_failed(i),
            State::Ready => {
                let c = &mut self.clients[i];
                if let Some(mut stream) = c.stream.take() {
                    let _ = self.poll.registry().deregister(stream.socket());
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
        // Out of `self` while frames borrowed from it are handled by
        // methods of `self`; moving a Vec costs nothing.
        let mut buf = std::mem::take(&mut self.buf);
        let closed = self.read_frames(i, &mut buf);
        self.buf = buf;
        if closed {
            self.lost(i);
            return;
        }
        // Answers may have queued bytes (a PONG to NATS's PING).
        if !self.clients[i].out.is_empty() {
            self.flush(i);
        }
    }

    /// Reads client `i` until its socket would block, handling every
    /// complete frame as it comes and keeping an incomplete last one in the
    /// client's `partial`. Returns whether the connection closed.
    fn read_frames(&mut self, i: usize, buf: &mut Vec<u8>) -> bool {
        let mut filled = {
            let c = &mut self.clients[i];
            let n = c.partial.len();
            if buf.len() < n + 64 * 1024 {
                buf.resize(n + 64 * 1024, 0);
            }
            buf[..n].copy_from_slice(&c.partial);
            c.partial.clear();
            n
        };
        loop {
            if filled == buf.len() {
                let grow = buf.len();
                buf.resize(grow * 2, 0);
            }
            let Some(stream) = self.clients[i].stream.as_mut() else {
                return false;
            };
            match stream.read_wire(&mut buf[filled..]) {
                Ok(0) => return true,
                Ok(n) => {
                    self.totals.bytes_read += n as u64;
                    filled += n;
                    let used = if self.plan.ws {
                        self.process_ws(i, &buf[..filled], now_ns())
                    } else {
                        self.process(i, &buf[..filled], now_ns())
                    };
                    buf.copy_within(used..filled, 0);
                    filled -= used;
                    if self.ws_closed(i) {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        self.clients[i].partial.extend_from_slice(&buf[..filled]);
        false
    }

    /// Handles every complete message in `bytes`; returns the bytes used.
    fn process(&mut self, i: usize, bytes: &[u8], now: u64) -> usize {
        let system = self.plan.system;
        let mut at = 0;
        let mut delivered = 0u64;
        let mut hint = self.clients[i].content_hint;
        loop {
            match dialect::next_event(system, &bytes[at..], &mut hint) {
                Ok(Some((event, used))) => {
                    at += used;
                    if self.event(i, event, now) {
                        delivered += 1;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // Not the protocol: count it, and drop what is
                    // buffered, as no boundary in it can be trusted.
                    self.totals.foreign += 1;
                    at = bytes.len();
                    break;
                }
            }
        }
        self.processed(i, hint, delivered, now);
        at
    }

    /// [`Worker::process`] over WebSocket: `bytes` are the socket's, and
    /// each message's payload, one Relay frame (SPEC.md 13.4), is handled
    /// where it lies in them. Returns the bytes used.
    fn process_ws(&mut self, i: usize, bytes: &[u8], now: u64) -> usize {
        let system = self.plan.system;
        let mut at = 0;
        let mut delivered = 0u64;
        let mut hint = self.clients[i].content_hint;
        while let Some(input) = self.clients[i]
            .stream
            .as_mut()
            .and_then(SwarmStream::websocket_input)
        {
            let (unframed, used) = match input.next(&bytes[at..]) {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(_) => {
                    // Not WebSocket as the server sends it: as in
                    // `process`, no boundary in what is buffered is
                    // trusted.
                    self.totals.foreign += 1;
                    at = bytes.len();
                    break;
                }
            };
            at += used;
            let fragments;
            let payload = match unframed {
                Unframed::Relay(payload) => payload,
                Unframed::Fragmented => {
                    fragments = input.take_fragments();
                    &fragments[..]
                }
                Unframed::Skipped => continue,
                Unframed::Closed => break,
            };
            match dialect::next_event(system, payload, &mut hint) {
                Ok(Some((event, used))) if used == payload.len() => {
                    if self.event(i, event, now) {
                        delivered += 1;
                    }
                }
                // Less or more than one frame.
                _ => self.totals.foreign += 1,
            }
        }
        self.processed(i, hint, delivered, now);
        at
    }

    /// Whether client `i`'s server sent its WebSocket close.
    fn ws_closed(&mut self, i: usize) -> bool {
        self.clients[i]
            .stream
            .as_mut()
            .and_then(SwarmStream::websocket_input)
            .is_some_and(|input| input.closed())
    }

    /// Handles one event for client `i`; returns whether it is a delivery
    /// that counts.
    #[inline]
    fn event(&mut self, i: usize, event: Event<'_>, now: u64) -> bool {
        match event {
            Event::Delivery(content) => self.deliver(i, content, now),
            other => {
                self.answer(i, other);
                false
            }
        }
    }

    /// Counts what one read brought client `i`.
    fn processed(&mut self, i: usize, hint: usize, delivered: u64, now: u64) {
        self.clients[i].content_hint = hint;
        if delivered > 0 {
            self.totals.delivered += delivered;
            self.totals.last_delivery_ns = now;
            self.live.delivered.fetch_add(delivered, Ordering::Relaxed);
        }
    }

    /// A delivery's content for client `i`; returns whether it counts (a
    /// client's own message coming back, which only Redis does, does not).
    ///
    /// This runs for every delivery, tens of millions a second, so it reads
    /// fixed-width fields at known places, parsing no JSON and allocating
    /// nothing.
    #[inline]
    fn deliver(&mut self, i: usize, content: &[u8], now: u64) -> bool {
        let c = &mut self.clients[i];
        let seq = content::digits(&content[content::SEQ..content::SEQ + 10]);
        let pos = content::digits(&content[content::POS..content::POS + 6]);
        if self.plan.publish.is_some() && pos == Some(c.position as u64) {
            self.totals.echoes += 1;
            return false;
        }
        c.delivered += 1;
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
            && let Some(sent) = content::digits(&content[content::TIME..content::TIME + 16])
        {
            self.totals.latency.record(now.saturating_sub(sent));
        }
        if self.plan.expect_per_client == Some(c.delivered) {
            self.totals.last_done_ns = self.totals.last_done_ns.max(now);
            self.live.done.fetch_add(1, Ordering::AcqRel);
        }
        true
    }

    /// Anything but a delivery: greeting answers, errors, pings, events.
    fn answer(&mut self, i: usize, event: Event<'_>) {
        match event {
            Event::Error(code) => {
                *self.totals.errors.entry(code).or_default() += 1;
            }
            Event::Ack { members } => {
                let needed =
                    dialect::acks_needed(self.plan.system, self.plan.rooms_per_client.max(1));
                let c = &mut self.clients[i];
                if c.state != State::Greeting {
                    return;
                }
                c.acks += 1;
                // Relay's first JOIN answer is the client's own room's, and
                // says how many members it has; the peers don't say, so
                // their members are counted as they are confirmed.
                if c.acks == 1 {
                    let room = c.room;
                    // A cluster's count of other nodes' members lags their
                    // joins (SPEC.md 14.1): count confirmed joins there.
                    let members = members.filter(|_| self.plan.nodes.is_empty());
                    match members {
                        Some(members) => {
                            let slot = &mut self.totals.members_per_room[room];
                            *slot = (*slot).max(members);
                            self.live.room_members[room].fetch_max(members, Ordering::AcqRel);
                        }
                        None => {
                            self.totals.joined_per_room[room] += 1;
                            self.live.room_members[room].fetch_add(1, Ordering::AcqRel);
                        }
                    }
                }
                if c.acks >= needed {
                    c.state = State::Ready;
                    self.connecting = self.connecting.saturating_sub(1);
                    self.live.joined.fetch_add(1, Ordering::AcqRel);
                }
            }
            Event::Ping => {
                dialect::pong(self.plan.system, &mut self.clients[i].out);
            }
            Event::MemberEvent => self.totals.member_events += 1,
            Event::Foreign => self.totals.foreign += 1,
            Event::Delivery(_) | Event::Other => {}
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
                dialect::heartbeat(self.plan.system, &mut c.out);
                c.last_send = Instant::now();
                self.flush(i);
            }
        }
    }
}
