//! What chaos knows about its clients: each session's memberships, what it
//! published and received, how it ended, and the world all actors share. The
//! actors and readers write it; the audit and the figures only read it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use protocol::{ErrorCode, MessageType};
use serde::Deserialize;

use super::connection::Live;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Acts at random and always reads.
    Healthy,
    /// Also stops reading for a while now and then.
    Pauser,
    /// Stops reading for good at some point, until the end of the run.
    Stuck,
    /// Also sends malformed frames.
    Malformed,
}

impl Role {
    pub(super) fn of(client: usize) -> Role {
        match client % 10 {
            7 => Role::Pauser,
            8 => Role::Stuck,
            9 => Role::Malformed,
            _ => Role::Healthy,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Role::Healthy => "healthy",
            Role::Pauser => "pauser",
            Role::Stuck => "stuck",
            Role::Malformed => "malformed",
        }
    }

    /// Whether SLOW_CONSUMER is an acceptable outcome for this role.
    pub(super) fn may_stall(self) -> bool {
        matches!(self, Role::Pauser | Role::Stuck)
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Left every room (acked), then closed.
    Graceful,
    /// Closed with FIN without leaving.
    Fin,
    /// Closed with RST (SO_LINGER 0) without leaving.
    Rst,
    /// Wrote part of a frame, then FIN.
    MidFrameFin,
    /// Wrote part of a frame, then RST.
    MidFrameRst,
    /// Sent a malformed frame; the server answered with a fatal ERROR and closed.
    Fatal,
    /// The server cut it off with SLOW_CONSUMER.
    SlowConsumer,
    /// The server closed it for no reason we gave.
    Unexpected,
    /// Still open when the run ended (left every room at the end).
    Final,
}

impl End {
    /// Whether it must have every guaranteed message: it left its rooms
    /// and read everything the server sent. A session closed by a fatal
    /// ERROR read everything too, but a broadcast that was waiting for room
    /// in its queue when it was closed is rightly dropped, so like a cut
    /// session it is held to "no gaps before the last message it got".
    pub(super) fn complete(self) -> bool {
        matches!(self, End::Graceful | End::Final)
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            End::Graceful => "graceful",
            End::Fin => "fin",
            End::Rst => "rst",
            End::MidFrameFin => "mid_frame_fin",
            End::MidFrameRst => "mid_frame_rst",
            End::Fatal => "fatal_error",
            End::SlowConsumer => "slow_consumer",
            End::Unexpected => "unexpected_close",
            End::Final => "open_at_end",
        }
    }
}

/// One membership of a session in a room.
#[derive(Debug, Clone)]
pub(super) struct Period {
    pub(super) room: u16,
    pub(super) join_sent: Instant,
    pub(super) join_ack: Option<Instant>,
    /// When LEAVE was sent, or the session stopped being a member some other
    /// way we caused (close, fatal frame).
    pub(super) leave_sent: Option<Instant>,
    pub(super) leave_ack: Option<Instant>,
}

/// A message a session published.
#[derive(Debug, Clone, Copy)]
pub(super) struct Published {
    pub(super) room: u16,
    pub(super) seq: u64,
    pub(super) sent_at: Instant,
}

/// A delivery a session received.
#[derive(Debug, Clone, Copy)]
pub(super) struct Received {
    pub(super) room: u16,
    /// Index of the publishing session.
    pub(super) from: u32,
    pub(super) seq: u64,
    pub(super) at: Instant,
}

/// A non-delivery frame the actor waits for.
#[derive(Debug, Clone)]
pub(super) struct Reply {
    pub(super) kind: MessageType,
    pub(super) payload: Vec<u8>,
    pub(super) at: Instant,
}

/// A malformed frame sent and what came of it.
#[derive(Debug, Clone)]
pub(super) struct BadOutcome {
    pub(super) kind: &'static str,
    pub(super) expected: ErrorCode,
    /// `None` when it was answered right; else what went wrong.
    pub(super) problem: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct SessionState {
    // Written by the reader thread.
    pub(super) received: Vec<Received>,
    pub(super) replies: VecDeque<Reply>,
    pub(super) closed: Option<Instant>,
    /// How reading ended when it was not a clean EOF.
    pub(super) read_error: Option<String>,
    pub(super) slow_consumer: bool,
    pub(super) member_events: u64,
    /// Gap notices (a cluster's messages lost between nodes): per room,
    /// the messages they said are gone.
    pub(super) gap_notices: HashMap<u16, u64>,
    /// Deliveries that were not byte-exact, not parseable, or from nowhere.
    pub(super) corrupt: Vec<String>,
    /// ERROR frames that nothing we did explains.
    pub(super) unexpected_errors: Vec<String>,
    // Written by the actor.
    pub(super) periods: Vec<Period>,
    pub(super) published: Vec<Published>,
    pub(super) end: Option<End>,
    pub(super) ended_at: Option<Instant>,
    pub(super) paused_for: Duration,
    /// It stopped reading at some point (pause or stuck).
    pub(super) stopped_reading: bool,
    pub(super) problems: Vec<String>,
    pub(super) bad: Vec<BadOutcome>,
}

/// One connection of one client, shared by its actor and its reader thread.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) index: u32,
    pub(super) client: usize,
    /// The node it is connected to (0 without a cluster).
    pub(super) node: usize,
    pub(super) role: Role,
    pub(super) id: String,
    /// The reader stops reading while this is set.
    pub(super) paused: AtomicBool,
    /// The reader stops for good when this is set.
    pub(super) abandon: AtomicBool,
    /// An ERROR with this code is expected next (set by the actor).
    pub(super) expecting_error: Mutex<Option<ErrorCode>>,
    pub(super) state: Mutex<SessionState>,
    pub(super) changed: Condvar,
}

impl Session {
    /// A session with nothing recorded yet; `index` is its place in the
    /// world's list, which deliveries refer to.
    pub(super) fn new(index: u32, client: usize, node: usize, role: Role, id: String) -> Session {
        Session {
            index,
            client,
            node,
            role,
            id,
            paused: AtomicBool::new(false),
            abandon: AtomicBool::new(false),
            expecting_error: Mutex::new(None),
            state: Mutex::new(SessionState::default()),
            changed: Condvar::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a change until `left` passes.
    pub(super) fn wait<'a>(
        &self,
        state: MutexGuard<'a, SessionState>,
        left: Duration,
    ) -> MutexGuard<'a, SessionState> {
        self.changed
            .wait_timeout(state, left)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }
}

/// Counters shown in progress lines and the report.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) sessions: AtomicU64,
    pub(super) published: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) joins: AtomicU64,
    pub(super) leaves: AtomicU64,
    pub(super) heartbeats: AtomicU64,
    pub(super) pauses: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) no_hello: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What every actor and reader shares.
pub(super) struct World {
    /// The nodes' addresses: one, or a cluster's (client n talks to node
    /// n mod their number).
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) rooms: usize,
    pub(super) deadline: Instant,
    sessions: Mutex<Vec<Arc<Session>>>,
    by_id: Mutex<HashMap<String, u32>>,
    pub(super) counters: Counters,
    /// Sessions still open at the end, kept for the audit, then closed.
    pub(super) finals: Mutex<Vec<Live>>,
}

pub(super) fn room_name(room: u16) -> String {
    format!("chaos-{room}")
}

pub(super) fn room_index(name: &str) -> Option<u16> {
    name.strip_prefix("chaos-")?.parse().ok()
}

/// The content of message `seq` from `publisher`, padded to a length that
/// varies with `seq`, so a truncated or spliced delivery shows.
pub(super) fn content(publisher: &str, seq: u64) -> String {
    let pad_len = (seq * 37 % 300) as usize;
    let mut out = String::with_capacity(pad_len + 40);
    out.push_str("{\"p\":");
    // Connection ids are plain ASCII ("c17"), but escape anyway.
    out.push_str(&serde_json::to_string(publisher).unwrap_or_default());
    out.push_str(&format!(",\"s\":{seq},\"x\":\""));
    out.extend((0..pad_len).map(|i| (b'a' + ((seq as usize + i) % 26) as u8) as char));
    out.push_str("\"}");
    out
}

#[derive(Deserialize)]
pub(super) struct ContentProbe<'a> {
    #[serde(borrow)]
    pub(super) p: std::borrow::Cow<'a, str>,
    pub(super) s: u64,
}

impl World {
    pub(super) fn new(addrs: Vec<SocketAddr>, rooms: usize, deadline: Instant) -> World {
        World {
            addrs,
            rooms,
            deadline,
            sessions: Mutex::new(Vec::new()),
            by_id: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            finals: Mutex::new(Vec::new()),
        }
    }

    /// The node client `client` connects to, and its address.
    pub(super) fn node_of(&self, client: usize) -> (usize, SocketAddr) {
        let node = client % self.addrs.len().max(1);
        (node, self.addrs[node])
    }

    /// Creates and records the session of a connection that said HELLO.
    pub(super) fn register(&self, client: usize, role: Role, id: String) -> Arc<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let node = self.node_of(client).0;
        let session = Arc::new(Session::new(sessions.len() as u32, client, node, role, id));
        sessions.push(Arc::clone(&session));
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session.id.clone(), session.index);
        bump(&self.counters.sessions);
        session
    }

    pub(super) fn session_of(&self, id: &str) -> Option<u32> {
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    pub(super) fn all_sessions(&self) -> Vec<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
