//! A connection's requests, handled: HELLO, JOIN_ROOM, LEAVE_ROOM, MESSAGE
//! and HEARTBEAT in, answers and deliveries out. No socket and no clock: the
//! reader hands it each decoded frame and the time of the read, so tests
//! (and a fuzz target) drive it entirely in memory.
//!
//! The session owns everything about the connection that only it changes
//! (its rooms, its name), so none of that needs a lock. It is also the only
//! code that takes the connection out of rooms, which makes room cleanup
//! happen exactly once however the connection ends.
//!
//! With authentication on (SPEC.md 11), the session also holds the
//! connection's credentials: who the token says the client is, what it
//! may join and publish to, and when the token runs out. The reader wakes
//! at that time ([`Session::expires_at_ms`]); the session checks it on
//! every frame too, so an expired token is never served.
//!
//! The handlers that build frames are `#[inline(never)]`, so their large
//! stack frames never sit on the reader's frame that blocks in `read`: an
//! idle reader gives back the stack pages below that frame, and handling
//! inlined into it would keep them resident for every idle connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{
    Ack, BinaryDelivery, Content, ErrorCode, ErrorPayload, Flags, Frame, HEADER_LEN, Hello,
    HelloReply, JsonDelivery, MemberChange, MemberEvent, MessageType, PublisherJson, Quoted,
    Recipient, Recovery, Request, RequestId, RoomReply, SEQ_BINARY_OVERHEAD, SEQ_JSON_OVERHEAD,
    begin_frame, encode_json, end_frame,
};
use serde::Serialize;
use serde_json::value::RawValue;

use super::gather::{Outbox, Target};
use super::outbound::{Batch, Outbound, Stalled};
use super::state::ConnState;
use crate::auth::{AUTH_FAILED_MESSAGE, Identity, Permissions};
use crate::counters::Tally;
use crate::histogram::SAMPLE_EVERY;
use crate::logging::{AUTH_FAILURES, CONNECTIONS, throttled};
use crate::rooms::{JoinRequest, Joined, Pending, Published, Splice};
use crate::shared::Shared;

/// `Break` when the connection stops being served: a fatal error was
/// queued, or another thread closed it.
pub(crate) type Served = ControlFlow<()>;

/// What the server knows about one client.
pub(crate) struct Session {
    shared: Arc<Shared>,
    outbound: Arc<Outbound>,
    /// `c{id}`.
    connection_id: String,
    user: Option<String>,
    echo: bool,
    /// The publisher part of every delivery, escaped once at HELLO.
    publisher: PublisherJson,
    /// The rooms joined, each with whether this connection may publish
    /// to it: decided at JOIN (and again on a token refresh), so MESSAGE
    /// checks its permission without matching a pattern.
    rooms: HashMap<Arc<str>, bool>,
    /// What the credentials allow; everything when authentication is off.
    permissions: Permissions,
    /// When the token expires (leeway included), in ms since the Unix
    /// epoch; `None` for no token or one that does not expire.
    expires_at_ms: Option<u64>,
    /// Where the client connects from, for the log of a failed
    /// authentication.
    peer_addr: Option<SocketAddr>,
    /// Who the client's verified certificate names (mutual TLS): the user,
    /// whatever HELLO's `userId` says (SPEC.md 11.1).
    certificate: Option<Arc<str>>,
    outbox: Outbox,
    /// Milliseconds since the Unix epoch at the last read.
    now_ms: u64,
    /// Frames handled and not yet added to the shared counters (one update
    /// per read, not per frame).
    received: Tally,
    /// Frames handled over the connection's life, for `/connz`.
    frames_in: u64,
    /// When the current read returned: the read time a sampled
    /// broadcast's delivery latency is measured from.
    read_at: Instant,
    /// Broadcasts made, for sampling 1 in `SAMPLE_EVERY` of them.
    broadcasts: u32,
    /// The members a flush queued for, to be written to from this thread;
    /// kept between flushes so it allocates only while it grows.
    touched: Vec<Arc<Outbound>>,
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, outbound: Arc<Outbound>) -> Session {
        let connection_id = format!("c{}", outbound.id());
        Session {
            shared,
            outbound,
            connection_id,
            user: None,
            echo: false,
            publisher: PublisherJson::default(),
            rooms: HashMap::new(),
            permissions: Permissions::everything(),
            expires_at_ms: None,
            peer_addr: None,
            certificate: None,
            outbox: Outbox::default(),
            now_ms: 0,
            received: Tally::default(),
            frames_in: 0,
            read_at: Instant::now(),
            broadcasts: 0,
            touched: Vec::new(),
        }
    }

    pub(crate) fn connection_id(&self) -> &str {
        &self.connection_id
    }

    pub(crate) fn set_peer_addr(&mut self, addr: SocketAddr) {
        self.peer_addr = Some(addr);
    }

    /// The identity of the client's verified certificate, once the TLS
    /// handshake is done.
    pub(crate) fn set_certificate_identity(&mut self, identity: Option<Arc<str>>) {
        self.certificate = identity;
    }

    /// When the connection's token expires, in ms since the Unix epoch:
    /// the reader wakes then, even for a silent client.
    pub(crate) fn expires_at_ms(&self) -> Option<u64> {
        self.expires_at_ms
    }

    /// The rooms this connection is in, as the session knows them.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(|room| &**room)
    }

    /// Starts a read of `len` bytes that returned at `read_at`, `now_ms`
    /// on the wall clock: deliveries are stamped with it, sampled ones are
    /// timed from it, and the batch it gathers is sized from it.
    pub(crate) fn begin_read(&mut self, len: usize, now_ms: u64, read_at: Instant) {
        self.now_ms = now_ms;
        self.read_at = read_at;
        self.outbox.hint = len + len / 2 + 256;
    }

    /// Ends a read: queues what it gathered and counts its frames.
    pub(crate) fn end_read(&mut self) {
        self.count_frames_in();
        self.flush();
    }

    pub(crate) fn count_frames_in(&mut self) {
        let received = std::mem::take(&mut self.received);
        let frames = received.frames();
        if frames > 0 {
            self.frames_in += frames;
            self.shared.counters.received.add(&received);
        }
    }

    /// Frames handled so far, counted at the end of each read.
    pub(crate) fn frames_in(&self) -> u64 {
        self.frames_in
    }

    fn config(&self) -> &crate::Config {
        &self.shared.config
    }

    /// Handles one frame.
    ///
    /// Kept out of line (like the other big handlers) so its large stack
    /// frame is not part of the reader's frame that blocks in `read`: the
    /// reader gives idle stack pages back, and only pages below the blocked
    /// frame can go.
    #[inline(never)]
    pub(crate) fn handle(&mut self, frame: &Frame<'_>) -> Served {
        if self.outbound.is_closing() {
            // Closed by another thread mid-read: nothing more from this
            // client is served.
            return ControlFlow::Break(());
        }
        self.received
            .add(frame.kind, HEADER_LEN + frame.payload.len());
        if let Some(at) = self.expires_at_ms
            && self.now_ms >= at
        {
            return self.token_expired();
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                "{} → {} v1 flags={:?} payload={}B {}",
                self.connection_id,
                frame.kind,
                frame.flags,
                frame.payload.len(),
                PayloadPreview(frame)
            );
        }
        let request = Request::parse(frame);
        let state = self.outbound.state().get();
        if state == ConnState::Init && frame.kind != MessageType::Hello {
            let id = match &request {
                Err(error) if error.code == ErrorCode::ParseError => {
                    return self.fatal(ErrorPayload::new(error.code, &error.message));
                }
                Err(error) => error.id.clone(),
                Ok(request) => request.id().cloned(),
            };
            let message = format!("{} before HELLO; send HELLO first", frame.kind);
            return self
                .fatal(ErrorPayload::new(ErrorCode::HelloRequired, message).about(None, id));
        }
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                let payload =
                    ErrorPayload::new(error.code, error.message).about(error.room, error.id);
                if payload.fatal {
                    return self.fatal(payload);
                }
                self.reply_error(payload);
                return ControlFlow::Continue(());
            }
        };
        match request {
            Request::Hello(hello) => {
                if state == ConnState::Init {
                    let user = match self.authenticate(&hello) {
                        Ok(Some(identity)) => {
                            let user = identity.user.to_string();
                            self.permissions = identity.permissions;
                            self.expires_at_ms = identity.expires_at_ms;
                            Some(user)
                        }
                        Ok(None) => hello.user_id,
                        Err(error) => return self.fatal(error),
                    };
                    if self.outbound.state().advance(ConnState::Open).is_err() {
                        return ControlFlow::Break(());
                    }
                    tracing::debug!("{}: INIT → OPEN", self.connection_id);
                    // One line a connection, at INFO: who came, as what.
                    tracing::info!(
                        "{}: HELLO as {} ({})",
                        self.connection_id,
                        user.as_deref()
                            .map_or_else(|| "an anonymous user".to_owned(), |u| format!("{u:?}")),
                        hello
                            .client_version
                            .as_deref()
                            .map_or_else(|| "no client version".to_owned(), |v| format!("{v:?}"))
                    );
                    self.outbound
                        .set_options(hello.binary_seq, hello.member_events.unwrap_or_default());
                    self.set_identity(user, hello.echo);
                    if let Some(cluster) = &self.shared.cluster {
                        cluster
                            .directory
                            .changed(self.outbound.id(), self.user.as_deref());
                    }
                } else if hello.token.is_some()
                    && self.config().auth.is_on()
                    && let Err(error) = self.refresh(&hello)
                {
                    return self.fatal(error);
                }
                self.hello_reply(hello.id);
            }
            Request::Join { room, id, recovery } => self.join(&room, id, recovery.as_ref()),
            Request::Leave { room, id } => self.leave(&room, id),
            Request::Publish {
                room,
                content,
                id,
                ack,
            } => self.publish(&room, content, id, ack),
            Request::Direct { to, content, id } => self.direct(&to, content, id),
            Request::Who {
                room,
                id,
                after,
                limit,
            } => self.who(&room, id, after, limit),
            Request::Heartbeat { flags, payload } => {
                self.to(Target::Myself);
                let start = begin_frame(&mut self.outbox.buf, MessageType::Heartbeat, flags);
                self.outbox.buf.extend_from_slice(payload);
                self.finish_frame(start);
                self.flush_if_large();
            }
            Request::ClientError => {
                tracing::debug!("{}: ERROR frame from client ignored", self.connection_id);
            }
        }
        ControlFlow::Continue(())
    }

    /// Refuses `frame` for going over the rate limits: a non-fatal
    /// RATE_LIMITED naming the request (its room and id, when it has valid
    /// ones) and when to try again. The frame has no other effect.
    #[inline(never)]
    pub(crate) fn rate_limited(&mut self, frame: &Frame<'_>, retry_after: Duration) {
        self.received
            .add(frame.kind, HEADER_LEN + frame.payload.len());
        let retry_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
        let message = format!(
            "{} refused: over this connection's rate limit; wait {retry_ms} ms, then send it again",
            frame.kind
        );
        let (room, id) = about(frame);
        let error = ErrorPayload::new(ErrorCode::RateLimited, message)
            .retry_after(retry_ms)
            .about(room, id);
        self.reply_error(error);
    }

    /// Closes for sustained abuse of the rate limits: `frame` is refused
    /// with a fatal RATE_LIMITED.
    #[inline(never)]
    pub(crate) fn rate_abuse(&mut self, frame: &Frame<'_>) -> Served {
        self.received
            .add(frame.kind, HEADER_LEN + frame.payload.len());
        let message = format!(
            "over this connection's rate limit at every retry for {} s; disconnected",
            super::rate::ABUSE_AFTER.as_secs()
        );
        let (room, id) = about(frame);
        let error = ErrorPayload::new(ErrorCode::RateLimited, message)
            .fatal()
            .about(room, id);
        self.fatal(error)
    }

    /// Answers a HELLO. The answer always fits `maxFrameSize`: in the rare
    /// case that the counters would make it longer (a maximum near its
    /// 1024-byte floor and huge counts), it goes without them.
    fn hello_reply(&mut self, id: Option<RequestId>) {
        // Include this HELLO and the frames before it.
        self.count_frames_in();
        let mut reply = HelloReply {
            status: "connected".to_owned(),
            connection_id: self.connection_id.clone(),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            max_frame_size: self.config().max_frame,
            idle_timeout_ms: self.config().idle_timeout.as_millis() as u64,
            stats: Some(self.shared.counters.snapshot()),
            id,
        };
        self.to(Target::Myself);
        let mark = self.outbox.buf.len();
        if let Ok(length) = encode_json(&mut self.outbox.buf, MessageType::Hello, &reply)
            && length > self.config().max_frame
        {
            self.outbox.buf.truncate(mark);
            reply.stats = None;
            let _ = encode_json(&mut self.outbox.buf, MessageType::Hello, &reply);
        }
        self.outbox.frames += 1;
    }

    /// Who a first HELLO's credentials say the client is: `None` when
    /// authentication is off (the HELLO's `userId` stands), the token's
    /// identity when on, or the fatal AUTH_FAILED to answer with.
    ///
    /// A client certificate (mutual TLS) would be one more source of an
    /// identity, taken here when the HELLO carries no token.
    fn authenticate(&self, hello: &Hello) -> Result<Option<Identity>, ErrorPayload> {
        let auth = &self.config().auth;
        // A verified client certificate is a credential of its own: it names
        // the user, with no limit on rooms, and stands in for a token.
        let certified = self.certificate.as_ref().map(|user| Identity {
            user: Arc::clone(user),
            permissions: Permissions::everything(),
            expires_at_ms: None,
        });
        let identity = match certified {
            Some(identity) if !auth.is_on() || hello.token.is_none() => identity,
            _ if !auth.is_on() => return Ok(None),
            certified => {
                let identity = self.check_token(hello)?;
                if let Some(certified) = certified
                    && certified.user != identity.user
                {
                    self.log_auth_failure(&"the token is not for the certificate's user");
                    return Err(ErrorPayload::new(
                        ErrorCode::AuthFailed,
                        "HELLO token is for another user than your client certificate names",
                    )
                    .about(None, hello.id.clone()));
                }
                identity
            }
        };
        if let Some(claimed) = &hello.user_id
            && **claimed != *identity.user
        {
            self.log_auth_failure(&"the userId is not the credentials' user");
            return Err(ErrorPayload::new(
                ErrorCode::AuthFailed,
                "HELLO userId is not the user your token or certificate names; leave userId out or send that one",
            )
            .about(None, hello.id.clone()));
        }
        Ok(Some(identity))
    }

    /// The identity of the HELLO's token, or the one AUTH_FAILED that
    /// every missing, wrong or expired token gets.
    fn check_token(&self, hello: &Hello) -> Result<Identity, ErrorPayload> {
        let token = hello.token.as_ref().map(|token| token.as_str());
        self.config()
            .auth
            .authenticate(token, self.now_ms)
            .map_err(|failure| {
                self.log_auth_failure(&failure);
                ErrorPayload::new(ErrorCode::AuthFailed, AUTH_FAILED_MESSAGE)
                    .about(None, hello.id.clone())
            })
    }

    fn log_auth_failure(&self, why: &dyn std::fmt::Display) {
        let from = self
            .peer_addr
            .map_or_else(|| "an unknown address".to_owned(), |addr| addr.to_string());
        throttled!(
            AUTH_FAILURES,
            WARN,
            "{}: authentication failed for a client at {from}: {why}",
            self.connection_id
        );
    }

    /// A HELLO with a token on an open connection: the new token replaces
    /// the old one's expiry and permissions. It must be for the same user.
    /// Rooms the new permissions do not let it join are left, each with a
    /// FORBIDDEN that names it.
    fn refresh(&mut self, hello: &Hello) -> Result<(), ErrorPayload> {
        let identity = self.check_token(hello)?;
        if self.user.as_deref() != Some(&*identity.user) {
            self.log_auth_failure(&"a refresh token for another user");
            return Err(ErrorPayload::new(
                ErrorCode::AuthFailed,
                "HELLO token is for another user than this connection's; reconnect to change user",
            )
            .about(None, hello.id.clone()));
        }
        self.expires_at_ms = identity.expires_at_ms;
        self.permissions = identity.permissions;
        let mut withdrawn = Vec::new();
        for (room, may_publish) in &mut self.rooms {
            if self.permissions.may_join(room) {
                *may_publish = self.permissions.may_publish(room);
            } else {
                withdrawn.push(Arc::clone(room));
            }
        }
        if withdrawn.is_empty() {
            return Ok(());
        }
        self.flush();
        for room in withdrawn {
            self.rooms.remove(&room);
            self.depart(Arc::clone(&room));
            let message = format!(
                "the new token does not allow {}, so you have left it",
                Quoted(&room)
            );
            self.refuse_about_room(ErrorCode::Forbidden, message, &room, None);
        }
        Ok(())
    }

    /// Ends the connection: its token ran out without a refresh.
    #[inline(never)]
    pub(crate) fn token_expired(&mut self) -> Served {
        self.fatal(ErrorPayload::new(
            ErrorCode::TokenExpired,
            "the token expired; send HELLO with a fresh token before it does to stay connected",
        ))
    }

    fn set_identity(&mut self, user: Option<String>, echo: bool) {
        self.echo = echo;
        self.publisher = PublisherJson::new(&self.connection_id, user.as_deref());
        if let Some(user) = &user {
            // The reader runs in the connection's span; from here on its
            // lines, and the writer's, name the user.
            tracing::Span::current().record("user", user.as_str());
            self.outbound.set_user(user);
            self.shared.add_user(user, self.outbound.id());
        }
        self.user = user;
    }

    fn join(&mut self, room: &str, id: Option<RequestId>, recovery: Option<&Recovery>) {
        if !self.permissions.may_join(room) {
            let message = format!(
                "JOIN_ROOM {}: your token does not allow this room",
                Quoted(room)
            );
            self.refuse_about_room(ErrorCode::Forbidden, message, room, id);
            return;
        }
        let member = self.rooms.contains_key(room);
        if !member && self.rooms.len() >= self.config().max_rooms_per_connection {
            let message = format!(
                "JOIN_ROOM {}: already in {} rooms, the most one connection may join; leave one first",
                Quoted(room),
                self.rooms.len()
            );
            self.refuse_about_room(ErrorCode::InvalidRoom, message, room, id);
            return;
        }
        self.flush();
        let shared = Arc::clone(&self.shared);
        let event = (!member).then(|| self.member_event_batch(room, MemberChange::Joined));
        let request = JoinRequest {
            recovery,
            now_ms: self.now_ms,
            event,
        };
        let max_frame = shared.config.max_frame as usize;
        // Before the room's lock is taken (no I/O under it): the room's
        // channel subscribed, so nothing published elsewhere after the
        // answer can pass this member by, and the other nodes' members.
        let joining = shared.cluster.as_ref().map(|cluster| cluster.joining(room));
        let remote = shared
            .cluster
            .as_ref()
            .map(|cluster| cluster.remote_members(room))
            .unwrap_or_default();
        let mut answer = |joined: &Joined, out: &mut Vec<u8>| -> u32 {
            join_answer(out, room, id.clone(), joined, &remote, max_frame);
            1
        };
        let mut stalled = Stalled::default();
        let result = shared.rooms.join(
            room,
            &self.outbound,
            &request,
            &shared.counters,
            &mut answer,
            &mut self.touched,
            &mut stalled,
        );
        drop(joining);
        stalled.settle(shared.config.stall_timeout, &shared.counters);
        for member in self.touched.drain(..) {
            member.flush_now(&shared.counters);
        }
        let joined = match result {
            Ok(joined) => joined,
            Err(refused) => {
                let message = format!("JOIN_ROOM {}: {refused}", Quoted(room));
                self.refuse_about_room(ErrorCode::InvalidRoom, message, room, id);
                return;
            }
        };
        if joined.new {
            if let Some(cluster) = &shared.cluster {
                cluster.room_changed(&joined.name);
            }
            let may_publish = self.permissions.may_publish(room);
            self.rooms.insert(Arc::clone(&joined.name), may_publish);
            tracing::debug!(
                "{} joined {room:?} ({} member{})",
                self.connection_id,
                joined.members,
                if joined.members == 1 { "" } else { "s" }
            );
        }
    }

    /// This connection's `type` event for `room`, as a batch of its own, to
    /// be queued under the room's lock; timed like any broadcast.
    fn member_event_batch(&mut self, room: &str, change: MemberChange) -> Arc<Batch> {
        let event = MemberEvent {
            change,
            room: room.to_owned(),
            connection_id: self.connection_id.clone(),
            user: self.user.clone(),
            timestamp: self.now_ms,
        };
        let mut bytes = Vec::new();
        if let Err(error) = encode_json(&mut bytes, MessageType::Message, &event) {
            tracing::error!("{}: frame not encoded: {error}", self.connection_id);
        }
        // A broadcast is timed 1 in SAMPLE_EVERY times (SPEC.md 12.1).
        self.broadcasts = self.broadcasts.wrapping_add(1);
        let read_at = self
            .broadcasts
            .is_multiple_of(SAMPLE_EVERY)
            .then_some(self.read_at);
        Arc::new(Batch::new(bytes, read_at))
    }

    /// Answers WHO: who is in `room` now. Anyone who may join a room may
    /// ask, member or not (SPEC.md 3.15).
    fn who(&mut self, room: &str, id: Option<RequestId>, after: Option<u64>, limit: Option<usize>) {
        if !self.permissions.may_join(room) {
            let message = format!("WHO {}: your token does not allow this room", Quoted(room));
            self.refuse_about_room(ErrorCode::Forbidden, message, room, id);
            return;
        }
        let (members, page, more) = self.shared.rooms.who(
            room,
            after.unwrap_or(0),
            limit.unwrap_or(protocol::MAX_MEMBER_LIST),
        );
        let (numbers, mut member_list): (Vec<u64>, Vec<_>) = page.into_iter().unzip();
        let remote = self
            .shared
            .cluster
            .as_ref()
            .map(|cluster| cluster.remote_members(room))
            .unwrap_or_default();
        // In a cluster, the other nodes' members follow this node's on the
        // last page, as many as fit it; only this node's are paged.
        if !more {
            let room_left = limit
                .unwrap_or(protocol::MAX_MEMBER_LIST)
                .saturating_sub(member_list.len());
            member_list.extend(remote.list.into_iter().take(room_left));
        }
        let mut reply = protocol::WhoReply {
            room: room.to_owned(),
            members: (members as u64).saturating_add(remote.members),
            next: more.then(|| numbers.last().copied()).flatten(),
            member_list,
            id,
        };
        self.to(Target::Myself);
        let max_frame = self.config().max_frame;
        loop {
            let mark = self.outbox.buf.len();
            match encode_json(&mut self.outbox.buf, MessageType::Who, &reply) {
                Ok(length) if length > max_frame && !reply.member_list.is_empty() => {
                    self.outbox.buf.truncate(mark);
                    let keep = reply.member_list.len() / 2;
                    reply.member_list.truncate(keep);
                    // What no longer fits of this node's members is the
                    // next page's.
                    if keep < numbers.len() {
                        reply.next = keep.checked_sub(1).map(|last| numbers[last]).or(after);
                    }
                }
                Ok(_) => {
                    self.outbox.frames += 1;
                    return;
                }
                Err(error) => {
                    tracing::error!("{}: frame not encoded: {error}", self.connection_id);
                    return;
                }
            }
        }
    }

    fn leave(&mut self, room: &str, id: Option<RequestId>) {
        self.flush();
        let members = match self.rooms.remove_entry(room) {
            Some((name, _)) => self.depart(name),
            None => self.shared.rooms.members(room),
        };
        let reply = RoomReply {
            status: "left".to_owned(),
            room: room.to_owned(),
            members: members as u64,
            id,
            epoch: None,
            seq: None,
            member_list: None,
        };
        self.reply(MessageType::LeaveRoom, &reply);
    }

    /// Takes this connection out of the registry's `room` (already removed
    /// from `self.rooms`) and tells whoever remains; returns how many do.
    fn depart(&mut self, room: Arc<str>) -> usize {
        self.flush();
        let shared = Arc::clone(&self.shared);
        let id = self.outbound.id();
        let mut touched = std::mem::take(&mut self.touched);
        let mut stalled = Stalled::default();
        let left = shared.rooms.leave(
            &room,
            id,
            &shared.counters,
            &mut |room| self.member_event_batch(room, MemberChange::Left),
            &mut touched,
            &mut stalled,
        );
        self.told(touched, stalled);
        if let Some(cluster) = &shared.cluster {
            cluster.room_changed(&room);
        }
        left
    }

    /// Waits for the members a membership event found full, then writes to
    /// those that took it (see `flush`).
    fn told(&mut self, mut touched: Vec<Arc<Outbound>>, stalled: Stalled) {
        let counters = &self.shared.counters;
        stalled.settle(self.shared.config.stall_timeout, counters);
        for member in touched.drain(..) {
            member.flush_now(counters);
        }
        self.touched = touched;
    }

    /// Takes the connection out of every room it is in, telling the other
    /// members; run once, whichever way the connection ends.
    #[inline(never)]
    pub(crate) fn leave_all_rooms(&mut self) {
        self.flush();
        if self.rooms.is_empty() {
            return;
        }
        let rooms: Vec<Arc<str>> = self.rooms.drain().map(|(room, _)| room).collect();
        let shared = Arc::clone(&self.shared);
        if let Some(cluster) = &shared.cluster {
            for room in &rooms {
                cluster.room_changed(room);
            }
        }
        let id = self.outbound.id();
        let mut touched = std::mem::take(&mut self.touched);
        let mut stalled = Stalled::default();
        shared.rooms.leave_all(
            rooms,
            id,
            &shared.counters,
            &mut |room| self.member_event_batch(room, MemberChange::Left),
            &mut touched,
            &mut stalled,
        );
        self.told(touched, stalled);
    }

    fn publish(&mut self, room: &str, content: Content<'_>, id: Option<RequestId>, ack: bool) {
        let target_is_room = matches!(&self.outbox.target, Target::Room { name, include_self } if **name == *room && *include_self == self.echo);
        let name = if target_is_room && self.outbox.frames > 0 {
            None
        } else {
            match self.rooms.get_key_value(room) {
                Some((name, true)) => Some(Arc::clone(name)),
                Some((_, false)) => {
                    let message = format!(
                        "MESSAGE to {}: your token does not allow publishing there",
                        Quoted(room)
                    );
                    self.refuse_about_room(ErrorCode::Forbidden, message, room, id);
                    return;
                }
                None => {
                    let message = format!(
                        "MESSAGE to {}, which you have not joined; send JOIN_ROOM first",
                        Quoted(room)
                    );
                    self.refuse_about_room(ErrorCode::NotInRoom, message, room, id);
                    return;
                }
            }
        };
        if let Some(name) = name {
            self.to(Target::Room {
                name,
                include_self: self.echo,
            });
        }
        let buf = &mut self.outbox.buf;
        let mark = buf.len();
        let (splice, overhead) = match content {
            Content::Json(content) => {
                let start = begin_frame(buf, MessageType::Message, Flags::JSON);
                let delivery = JsonDelivery {
                    room,
                    publisher: &self.publisher,
                    content,
                    timestamp: self.now_ms,
                };
                delivery.encode(buf);
                // Before the closing brace: seq and epoch are its last keys.
                let at = buf.len() - 1;
                let _ = end_frame(buf, start);
                let splice = Splice {
                    frame: mark,
                    at,
                    binary: false,
                };
                (splice, SEQ_JSON_OVERHEAD)
            }
            Content::Binary(body) => {
                let start = begin_frame(buf, MessageType::Message, Flags::BINARY);
                // After the two names: where a sequenced delivery has them.
                let at = buf.len() + 2 + room.len() + self.connection_id.len();
                let delivery = BinaryDelivery {
                    room,
                    from: &self.connection_id,
                    body,
                };
                let _ = delivery.encode(buf);
                let _ = end_frame(buf, start);
                let splice = Splice {
                    frame: mark,
                    at,
                    binary: true,
                };
                (splice, SEQ_BINARY_OVERHEAD)
            }
        };
        // Measured with its seq and epoch, the largest they can be.
        let length = buf.len() - mark - protocol::LENGTH_PREFIX + overhead;
        if length > self.shared.config.max_frame as usize {
            buf.truncate(mark);
            let message = format!(
                "MESSAGE would be {length} bytes once relayed, over the {} byte maximum; send smaller content",
                self.shared.config.max_frame
            );
            self.refuse_about_room(ErrorCode::InvalidPayload, message, room, id);
            return;
        }
        self.outbox.splices.push(splice);
        self.outbox.frames += 1;
        match id {
            Some(id) if ack => self.ack(room, id),
            _ => self.flush_if_large(),
        }
    }

    /// Sends the message just gathered, and answers its publisher with
    /// the `seq` it got (SPEC.md 3.14).
    fn ack(&mut self, room: &str, id: RequestId) {
        let Some(published) = self.flush() else {
            return;
        };
        let ack = Ack {
            kind: "ack".into(),
            room: room.to_owned(),
            id,
            seq: published.last_seq,
            epoch: published.epoch.to_string(),
            members: published.queued as u64,
        };
        self.reply(MessageType::Message, &ack);
    }

    /// A MESSAGE to a user or a connection (SPEC.md 3.16): queued for each
    /// of the recipient's connections, or NOT_FOUND.
    fn direct(&mut self, to: &Recipient<'_>, content: &RawValue, id: Option<RequestId>) {
        let (what, name) = match to {
            Recipient::User(user) => ("user", &**user),
            Recipient::Connection(connection) => ("connection", &**connection),
        };
        let recipients = self.shared.recipients(to, self.outbound.id());
        let allowed = |user: Option<&str>| match user {
            Some(user) => self.permissions.may_direct(user),
            None => self.permissions.may_direct(""),
        };
        let user_allowed = match to {
            Recipient::User(user) => allowed(Some(user)),
            Recipient::Connection(_) => true,
        };
        // In a cluster, the other nodes the recipient is on (SPEC.md 14.1).
        let shared = Arc::clone(&self.shared);
        let (elsewhere, unasked) = match &shared.cluster {
            Some(cluster) if user_allowed => match cluster.elsewhere(to) {
                Ok(elsewhere) => (elsewhere.nodes, None),
                Err(unasked) => (Vec::new(), Some(unasked)),
            },
            _ => (Vec::new(), None),
        };
        let permitted = user_allowed
            && match to {
                Recipient::User(_) => true,
                Recipient::Connection(_) => {
                    recipients.iter().all(|r| allowed(r.user()))
                        && elsewhere.iter().all(|(_, user)| allowed(user.as_deref()))
                }
            };
        if !permitted {
            let message = format!(
                "MESSAGE to {what} {}: your token does not allow direct messages to them",
                Quoted(name)
            );
            self.reply_error(ErrorPayload::new(ErrorCode::Forbidden, message).about(None, id));
            return;
        }
        if recipients.is_empty() && elsewhere.is_empty() {
            let message = match unasked {
                None => format!(
                    "MESSAGE to {what} {}: no such {what} is connected",
                    Quoted(name)
                ),
                Some(unasked) => format!(
                    "MESSAGE to {what} {}: no such {what} is connected to this node, and {unasked}; try again",
                    Quoted(name)
                ),
            };
            self.reply_error(ErrorPayload::new(ErrorCode::NotFound, message).about(None, id));
            return;
        }
        let direct = protocol::Direct {
            kind: "direct".into(),
            from: self.connection_id.as_str().into(),
            user: self.user.as_deref().map(Into::into),
            content,
            timestamp: self.now_ms,
        };
        let mut bytes = Vec::new();
        match encode_json(&mut bytes, MessageType::Message, &direct) {
            Ok(length) if length <= self.config().max_frame => {}
            _ => {
                let message = format!(
                    "MESSAGE to {what} {} would be over the {} byte maximum once relayed; send smaller content",
                    Quoted(name),
                    self.config().max_frame
                );
                self.reply_error(
                    ErrorPayload::new(ErrorCode::InvalidPayload, message).about(None, id),
                );
                return;
            }
        }
        // In order with what this connection already sent to them, here
        // and (through the one publishing connection) on other nodes.
        self.flush();
        if let Some(cluster) = &shared.cluster {
            for (node, _) in &elsewhere {
                cluster.send_direct(node, to, &bytes);
            }
        }
        let batch = Arc::new(Batch::new(bytes, None));
        let mut stalled = Stalled::default();
        for recipient in &recipients {
            recipient.offer(&batch, &mut self.touched, &mut stalled, &shared.counters);
        }
        stalled.settle(shared.config.stall_timeout, &shared.counters);
        for member in self.touched.drain(..) {
            member.flush_now(&shared.counters);
        }
    }

    /// Flushes once the batch passes a size that keeps it well inside one
    /// member's queue, however much a single read expands when relayed.
    fn flush_if_large(&mut self) {
        let cap = (self.shared.config.queue_bytes / 8).max(64 * 1024);
        if self.outbox.buf.len() >= cap {
            self.flush();
        }
    }

    /// Makes the outbox gather for `target`, flushing what it held for another.
    fn to(&mut self, target: Target) {
        if !self.outbox.is_for(&target) {
            self.flush();
        }
        self.outbox.start(target);
    }

    fn finish_frame(&mut self, start: protocol::FrameStart) {
        match end_frame(&mut self.outbox.buf, start) {
            Ok(_) => self.outbox.frames += 1,
            Err(error) => tracing::error!("{}: frame not encoded: {error}", self.connection_id),
        }
    }

    /// Adds a JSON frame to the batch being gathered.
    fn push_json(&mut self, kind: MessageType, value: &impl Serialize) {
        match encode_json(&mut self.outbox.buf, kind, value) {
            Ok(_) => self.outbox.frames += 1,
            Err(error) => tracing::error!("{}: frame not encoded: {error}", self.connection_id),
        }
    }

    fn reply(&mut self, kind: MessageType, value: &impl Serialize) {
        self.to(Target::Myself);
        self.push_json(kind, value);
    }

    /// Answers a request about `room` with a non-fatal ERROR naming it.
    fn refuse_about_room(
        &mut self,
        code: ErrorCode,
        message: String,
        room: &str,
        id: Option<RequestId>,
    ) {
        let error = ErrorPayload::new(code, message).about(Some(room.to_owned()), id);
        self.reply_error(error);
    }

    fn reply_error(&mut self, error: ErrorPayload) {
        // Debug only: a client can cause these as fast as it can send.
        tracing::debug!(
            "{}: error {}: {}",
            self.connection_id,
            error.code,
            error.message
        );
        self.shared.counters.error_sent(error.code);
        self.reply(MessageType::Error, &error);
    }

    /// Queues what the outbox gathered, then writes it to each member it
    /// went to from this thread, where their sockets take it now (see
    /// `output`).
    #[inline(never)]
    pub(crate) fn flush(&mut self) -> Option<Published> {
        // A broadcast is timed 1 in SAMPLE_EVERY times (SPEC.md 12.1).
        let read_at = match self.outbox.target {
            Target::Room { .. } if self.outbox.frames > 0 => {
                self.broadcasts = self.broadcasts.wrapping_add(1);
                self.broadcasts
                    .is_multiple_of(SAMPLE_EVERY)
                    .then_some(self.read_at)
            }
            _ => None,
        };
        let gathered = self.outbox.take(read_at)?;
        let config = &self.shared.config;
        let counters = &self.shared.counters;
        let mut published = None;
        match gathered.target.clone() {
            Target::Nowhere => {}
            Target::Myself => {
                let mut stalled = Stalled::default();
                self.outbound
                    .offer(&gathered.batch(), &mut self.touched, &mut stalled, counters);
                stalled.settle(config.stall_timeout, counters);
            }
            Target::Room { name, include_self } => {
                let skip = (!include_self).then_some(self.outbound.id());
                let pending = Pending {
                    bytes: gathered.bytes,
                    frames: gathered.frames,
                    splices: &self.outbox.splices,
                    now_ms: self.now_ms,
                    read_at: gathered.read_at,
                };
                published = self.shared.rooms.broadcast(
                    &name,
                    pending,
                    skip,
                    config.stall_timeout,
                    counters,
                    &mut self.touched,
                );
            }
        }
        self.outbox.splices.clear();
        for member in self.touched.drain(..) {
            member.flush_now(counters);
        }
        published
    }

    /// Queues a fatal ERROR after everything already produced, and closes.
    #[inline(never)]
    pub(crate) fn fatal(&mut self, error: ErrorPayload) -> Served {
        throttled!(
            CONNECTIONS,
            INFO,
            "{}: closing: {}: {}",
            self.connection_id,
            error.code,
            error.message
        );
        self.flush();
        // Out of every room before the client can see the ERROR, so a client
        // that reconnects at once never finds its old self still a member.
        self.leave_all_rooms();
        // The writer sends it after everything already queued.
        self.outbound.close_with_error(&error);
        ControlFlow::Break(())
    }
}

/// Writes the JOIN answer for `joined` into `out`: the count, the room's
/// epoch and last `seq`, and as much of the member list as fits
/// `max_frame`.
fn join_answer(
    out: &mut Vec<u8>,
    room: &str,
    id: Option<RequestId>,
    joined: &Joined,
    remote: &crate::cluster::Remote,
    max_frame: usize,
) {
    let mut member_list = joined.member_list.clone();
    let room_left = protocol::MAX_MEMBER_LIST.saturating_sub(member_list.len());
    member_list.extend(remote.list.iter().take(room_left).cloned());
    let mut reply = RoomReply {
        status: "joined".to_owned(),
        room: room.to_owned(),
        members: (joined.members as u64).saturating_add(remote.members),
        id,
        epoch: Some(joined.epoch.to_string()),
        seq: Some(joined.last_seq),
        member_list: Some(member_list),
    };
    loop {
        let mark = out.len();
        match encode_json(out, MessageType::JoinRoom, &reply) {
            Ok(length) if length as usize > max_frame => {
                out.truncate(mark);
                match &mut reply.member_list {
                    Some(list) if !list.is_empty() => list.truncate(list.len() / 2),
                    _ => return,
                }
            }
            _ => return,
        }
    }
}

/// The room and id of the request in `frame`, for an ERROR about it;
/// neither when the frame is not a valid request.
fn about(frame: &Frame<'_>) -> (Option<String>, Option<RequestId>) {
    match Request::parse(frame) {
        Ok(
            Request::Join { room, id, .. }
            | Request::Leave { room, id }
            | Request::Who { room, id, .. }
            | Request::Publish { room, id, .. },
        ) => (Some(room.into_owned()), id),
        Ok(request) => (None, request.id().cloned()),
        Err(error) => (error.room, error.id),
    }
}

/// The bytes of a payload to show in a debug line.
const PREVIEW_BYTES: usize = 64;

/// `"{\"room\":\"r\",...}"`: the first [`PREVIEW_BYTES`] of a payload, escaped
/// so a peer's bytes cannot forge log lines or move a terminal's cursor. A
/// HELLO's is never shown: it may hold a token.
struct PayloadPreview<'a>(&'a Frame<'a>);

impl std::fmt::Display for PayloadPreview<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let payload = self.0.payload;
        if self.0.kind == MessageType::Hello {
            return f.write_str("(HELLO payload not shown)");
        }
        let shown = &payload[..payload.len().min(PREVIEW_BYTES)];
        write!(f, "{:?}", String::from_utf8_lossy(shown))?;
        if payload.len() > PREVIEW_BYTES {
            f.write_str("...")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crossbeam_channel::Receiver;
    use protocol::{ErrorPayload, parse_frame};
    use serde_json::{Value, json};

    use super::*;
    use crate::conn::close::CloseReason;
    use crate::conn::outbound::{Outgoing, QueueLimits};

    fn shared(config: crate::Config) -> Arc<Shared> {
        let config = config.validate().unwrap();
        let addr = "127.0.0.1:0".parse().unwrap();
        Arc::new(Shared::new(config, 100, addr))
    }

    /// A session driven as the reader drives it, minus the socket.
    struct Client {
        session: Session,
        outbound: Arc<Outbound>,
        rx: Receiver<Outgoing>,
    }

    impl Client {
        fn new(shared: &Arc<Shared>, id: u64) -> Client {
            let limits = QueueLimits {
                items: 64,
                bytes: 1 << 20,
            };
            let (outbound, rx) = Outbound::new(id, limits);
            let session = Session::new(Arc::clone(shared), Arc::clone(&outbound));
            Client {
                session,
                outbound,
                rx,
            }
        }

        /// One read holding `bytes`.
        fn read(&mut self, bytes: &[u8]) -> Served {
            self.session
                .begin_read(bytes.len(), 1_700_000_000_000, Instant::now());
            let mut rest = bytes;
            while let Some((frame, used)) = parse_frame(rest, u32::MAX).unwrap() {
                if self.session.handle(&frame).is_break() {
                    return ControlFlow::Break(());
                }
                rest = &rest[used..];
            }
            self.session.end_read();
            ControlFlow::Continue(())
        }

        fn send(&mut self, kind: MessageType, value: Value) -> Served {
            let mut bytes = Vec::new();
            encode_json(&mut bytes, kind, &value).unwrap();
            self.read(&bytes)
        }

        /// Sends a request that must not end the connection.
        fn ok(&mut self, kind: MessageType, value: Value) {
            assert!(self.send(kind, value).is_continue(), "the connection ended");
        }

        fn hello(shared: &Arc<Shared>, id: u64, hello: Value) -> Client {
            let mut client = Client::new(shared, id);
            assert!(client.send(MessageType::Hello, hello).is_continue());
            let answers = client.received();
            assert_eq!(answers[0].0, MessageType::Hello);
            client
        }

        /// Every frame queued for this client so far, decoded.
        fn received(&self) -> Vec<(MessageType, Value)> {
            let mut frames = Vec::new();
            while let Ok(batch) = self.rx.try_recv() {
                self.outbound.written(batch.bytes.len());
                let mut rest = &batch.bytes[..];
                while let Some((frame, used)) = parse_frame(rest, u32::MAX).unwrap() {
                    frames.push((frame.kind, serde_json::from_slice(frame.payload).unwrap()));
                    rest = &rest[used..];
                }
            }
            frames
        }

        /// The fatal ERROR the writer would send last.
        fn final_error(&self) -> ErrorPayload {
            let batch = self.outbound.final_error().expect("a final ERROR");
            let (frame, _) = parse_frame(&batch.bytes, u32::MAX).unwrap().unwrap();
            serde_json::from_slice(frame.payload).unwrap()
        }
    }

    /// "ann" (c1) and an anonymous c2 in room "r", their answers read.
    fn ann_and_bob_in_r(shared: &Arc<Shared>) -> (Client, Client) {
        let mut ann = Client::hello(shared, 1, json!({"userId": "ann"}));
        let mut bob = Client::hello(shared, 2, json!({}));
        ann.ok(MessageType::JoinRoom, json!({"room": "r"}));
        bob.ok(MessageType::JoinRoom, json!({"room": "r"}));
        ann.received();
        bob.received();
        (ann, bob)
    }

    #[test]
    fn hello_then_join_are_answered_in_order() {
        let shared = shared(crate::Config::default());
        let mut ann = Client::new(&shared, 1);
        let mut bytes = Vec::new();
        encode_json(&mut bytes, MessageType::Hello, &json!({"userId": "ann"})).unwrap();
        encode_json(&mut bytes, MessageType::JoinRoom, &json!({"room": "r"})).unwrap();
        assert!(ann.read(&bytes).is_continue());
        let answers = ann.received();
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].0, MessageType::Hello);
        assert_eq!(answers[0].1["connectionId"], "c1");
        assert_eq!(answers[0].1["maxFrameSize"], protocol::DEFAULT_MAX_FRAME);
        assert_eq!(answers[1].0, MessageType::JoinRoom);
        let epoch = answers[1].1["epoch"].clone();
        assert!(epoch.as_str().is_some_and(protocol::valid_epoch));
        assert_eq!(
            answers[1].1,
            json!({"status": "joined", "room": "r", "members": 1, "epoch": epoch, "seq": 0,
                "memberList": [{"connectionId": "c1", "user": "ann"}]})
        );
        assert_eq!(ann.outbound.state().get(), ConnState::Open);
    }

    #[test]
    fn a_request_before_hello_closes_with_hello_required() {
        let shared = shared(crate::Config::default());
        let mut client = Client::new(&shared, 1);
        assert!(
            client
                .send(MessageType::JoinRoom, json!({"room": "r"}))
                .is_break()
        );
        assert_eq!(
            client.outbound.close_reason(),
            Some(CloseReason::Protocol(ErrorCode::HelloRequired))
        );
        assert_eq!(client.final_error().code, ErrorCode::HelloRequired);
        assert_eq!(shared.rooms.members("r"), 0);
    }

    #[test]
    fn a_message_reaches_the_other_members_once() {
        let shared = shared(crate::Config::default());
        let (mut ann, bob) = ann_and_bob_in_r(&shared);
        let content = json!({"text": "hi", "n": [1, 2]});
        ann.ok(
            MessageType::Message,
            json!({"room": "r", "content": content}),
        );
        assert_eq!(ann.received(), [], "no echo unless asked for");
        let delivered = bob.received();
        let epoch = delivered[0].1["epoch"].clone();
        assert_eq!(
            delivered,
            [(
                MessageType::Message,
                json!({"room": "r", "from": "c1", "user": "ann", "content": content, "timestamp": 1_700_000_000_000u64, "seq": 1, "epoch": epoch})
            )]
        );
    }

    #[test]
    fn echo_includes_the_publisher() {
        let shared = shared(crate::Config::default());
        let mut ann = Client::hello(&shared, 1, json!({"echo": true}));
        ann.ok(MessageType::JoinRoom, json!({"room": "r"}));
        ann.received();
        ann.ok(MessageType::Message, json!({"room": "r", "content": 5}));
        let echoed = ann.received();
        assert_eq!(echoed.len(), 1);
        assert_eq!(echoed[0].1["content"], 5);
    }

    #[test]
    fn a_message_to_a_room_not_joined_is_refused_and_the_connection_stays() {
        let shared = shared(crate::Config::default());
        let mut ann = Client::hello(&shared, 1, json!({}));
        let served = ann.send(
            MessageType::Message,
            json!({"room": "elsewhere", "content": 1}),
        );
        assert!(served.is_continue());
        let answers = ann.received();
        assert_eq!(answers[0].0, MessageType::Error);
        assert_eq!(answers[0].1["code"], "NOT_IN_ROOM");
        assert_eq!(answers[0].1["fatal"], false);
        assert!(!ann.outbound.is_closing());
    }

    #[test]
    fn a_fatal_error_leaves_every_room_before_the_error_is_sent() {
        let shared = shared(crate::Config::default());
        let (mut ann, bob) = ann_and_bob_in_r(&shared);
        let mut garbage = Vec::new();
        protocol::encode(
            &mut garbage,
            MessageType::Message,
            protocol::Flags::JSON,
            b"{nope",
        )
        .unwrap();
        assert!(ann.read(&garbage).is_break());
        assert_eq!(ann.final_error().code, ErrorCode::ParseError);
        assert_eq!(shared.rooms.members("r"), 1);
        let told = bob.received();
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].1["type"], "userLeft");
        assert_eq!(told[0].1["connectionId"], "c1");
    }

    fn with_tokens(tokens: &str) -> Arc<Shared> {
        shared(crate::Config {
            auth: crate::auth::AuthConfig {
                tokens: Some(crate::auth::TokenTable::parse(tokens, "test").unwrap()),
                jwt: None,
            },
            ..crate::Config::default()
        })
    }

    #[test]
    fn a_refresh_recomputes_the_publish_permission_of_joined_rooms() {
        let shared = with_tokens(
            "reader-token-0123456789 ann join=r publish=\nwriter-token-0123456789 ann\n",
        );
        let mut ann = Client::hello(&shared, 1, json!({"token": "reader-token-0123456789"}));
        let mut bob = Client::hello(&shared, 2, json!({"token": "writer-token-0123456789"}));
        bob.ok(MessageType::JoinRoom, json!({"room": "r"}));
        ann.ok(MessageType::JoinRoom, json!({"room": "r"}));
        ann.received();
        bob.received();
        ann.ok(MessageType::Message, json!({"room": "r", "content": 1}));
        assert_eq!(ann.received()[0].1["code"], "FORBIDDEN");
        assert_eq!(bob.received(), []);
        ann.ok(
            MessageType::Hello,
            json!({"token": "writer-token-0123456789"}),
        );
        assert_eq!(ann.received()[0].0, MessageType::Hello);
        ann.ok(MessageType::Message, json!({"room": "r", "content": 2}));
        let delivered = bob.received();
        assert_eq!(delivered[0].1["content"], 2);
        assert_eq!(delivered[0].1["user"], "ann");
    }

    #[test]
    fn a_frame_read_after_the_token_expired_is_not_served() {
        let secret = [9u8; 32];
        let shared = shared(crate::Config {
            auth: crate::auth::AuthConfig {
                tokens: None,
                jwt: Some(crate::auth::JwtVerifier::hs256(&secret, 0)),
            },
            ..crate::Config::default()
        });
        // The test clock reads 1_700_000_000_000 ms; the token ends 1 s later.
        let claims = json!({"sub": "ann", "exp": 1_700_000_001u64});
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        let mut ann = Client::hello(&shared, 1, json!({"token": token}));
        assert_eq!(ann.session.expires_at_ms(), Some(1_700_000_001_000));
        let mut join = Vec::new();
        encode_json(&mut join, MessageType::JoinRoom, &json!({"room": "r"})).unwrap();
        ann.session
            .begin_read(join.len(), 1_700_000_001_000, Instant::now());
        let (frame, _) = parse_frame(&join, u32::MAX).unwrap().unwrap();
        assert!(ann.session.handle(&frame).is_break());
        assert_eq!(ann.final_error().code, ErrorCode::TokenExpired);
        assert_eq!(shared.rooms.members("r"), 0);
    }

    #[test]
    fn a_delivery_that_would_exceed_the_frame_limit_is_refused() {
        let shared = shared(crate::Config {
            max_frame: 1024,
            ..crate::Config::default()
        });
        let mut ann = Client::hello(&shared, 1, json!({}));
        ann.ok(MessageType::JoinRoom, json!({"room": "r"}));
        ann.received();
        // Fits as a request, but not once the server adds from and timestamp.
        let content = "x".repeat(1024 - 40);
        ann.ok(
            MessageType::Message,
            json!({"room": "r", "content": content}),
        );
        let answers = ann.received();
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].1["code"], "INVALID_PAYLOAD");
        assert!(!ann.outbound.is_closing());
    }
}
