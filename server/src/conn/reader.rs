//! A connection's reader thread: the I/O loop around the session. It reads,
//! decodes with the protocol crate's `Decoder`, hands each frame to the
//! [`Session`], keeps the idle clock, gives memory back while the client is
//! quiet, and lingers after a close until the client has everything.

use std::io::ErrorKind;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use protocol::{Decoder, ErrorCode, ErrorPayload, HEADER_LEN};

use super::close::CloseReason;
use super::peer::Peer;
use super::rate::{Limiter, Verdict};
use super::session::{Served, Session};
use super::teardown::{Role, ThreadExit, thread_panicked};
use super::transport::{ReadHalf, Violation, is_timeout};
use crate::budget::MemoryBudget;
use crate::logging::{CONNECTIONS, throttled};
use crate::shared::Shared;
use crate::sys::thread::StackTrim;
use crate::sys::wake::{WaitMask, pause as pause_thread};

/// How often a closing connection looks at how much the client still has to
/// receive.
const LINGER_POLL: Duration = Duration::from_millis(50);
/// Silence after which a connection thread gives back its spare stack (and
/// the reader its read buffer).
pub(crate) const IDLE_TRIM_AFTER: Duration = Duration::from_millis(250);

/// How the loop ended: the client ended it, or the session stopped
/// (a fatal error, or a close decided on another thread).
enum Ended {
    Client(CloseReason),
    Session,
}

pub(crate) fn run<R: ReadHalf>(shared: Arc<Shared>, peer: Arc<Peer>, mut read: R) {
    let _span = peer.span.clone().entered();
    let _exit = ThreadExit::new(&shared, &peer, Role::Reader);
    let mut session = Session::new(Arc::clone(&shared), Arc::clone(&peer.outbound));
    session.set_peer_addr(peer.addr);
    let mut bytes_in = 0;
    let ended = peer.outbound.reader().run_registered(|mask| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Err(ended) = handshake(&shared, &peer, &mut read, mask) {
                return ended;
            }
            session.set_certificate_identity(peer.client_identity().cloned());
            serve(&shared, &peer, &mut session, &mut read, mask, &mut bytes_in)
        }))
        .unwrap_or_else(|_| {
            // A bug, not the client's doing: still close the connection
            // properly, so its rooms and counters stay right.
            thread_panicked(&shared, &peer);
            Ended::Session
        })
    });
    session.leave_all_rooms();
    match ended {
        Ended::Client(reason) => {
            peer.outbound.close(reason);
        }
        Ended::Session => linger(&shared, &peer, &mut read),
    }
    peer.bytes_in.store(bytes_in, Relaxed);
}

/// Sets the transport up (TLS: the handshake, within its own timeout);
/// records the client's identity. A failure is counted and logged (at
/// debug, and at info for the first and every 100th, so a flood of bad
/// handshakes cannot flood the log) and ends the connection.
fn handshake<R: ReadHalf>(
    shared: &Shared,
    peer: &Peer,
    read: &mut R,
    mask: &WaitMask,
) -> Result<(), Ended> {
    let id = peer.id();
    loop {
        match read.handshake(mask) {
            Ok(done) => {
                if let Some(summary) = done.summary {
                    match &done.client_identity {
                        Some(identity) => throttled!(
                            CONNECTIONS,
                            INFO,
                            "c{id}: TLS established ({summary}); client certificate identity {identity:?}"
                        ),
                        None => throttled!(CONNECTIONS, INFO, "c{id}: TLS established ({summary})"),
                    }
                }
                if let Some(identity) = done.client_identity {
                    peer.set_client_identity(identity);
                }
                return Ok(());
            }
            // Woken: the connection is closing (a shutdown), or a stray
            // wake-up, after which the handshake resumes.
            Err(e) if e.kind() == ErrorKind::Interrupted => {
                if peer.outbound.is_closing() {
                    return Err(Ended::Session);
                }
            }
            Err(error) if super::ws::is_upgrade_failure(&error) => {
                let failures = shared.counters.ws_upgrade_failures.fetch_add(1, Relaxed) + 1;
                let addr = peer.addr;
                if failures == 1 || failures.is_multiple_of(100) {
                    tracing::info!(
                        "c{id}: {addr}: {error} ({failures} failed upgrades so far; the others are logged at debug)"
                    );
                } else {
                    tracing::debug!("c{id}: {addr}: {error}");
                }
                if super::ws::is_refusal(&error) {
                    // The answer goes out; meanwhile what the client sent
                    // after its request is read, so closing does not reset
                    // the connection and destroy the answer.
                    peer.outbound.close(CloseReason::WsHandshake);
                    return Err(Ended::Session);
                }
                return Err(Ended::Client(CloseReason::WsHandshake));
            }
            Err(error) => {
                let failures = shared.counters.tls_handshake_failures.fetch_add(1, Relaxed) + 1;
                let addr = peer.addr;
                if failures == 1 || failures.is_multiple_of(100) {
                    tracing::info!(
                        "c{id}: TLS handshake with {addr} failed: {error} ({failures} failed handshakes so far; the others are logged at debug)"
                    );
                } else {
                    tracing::debug!("c{id}: TLS handshake with {addr} failed: {error}");
                }
                return Err(Ended::Client(CloseReason::TlsHandshake));
            }
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why reading failed, as a close reason.
fn read_failed(connection_id: &str, error: &std::io::Error) -> Ended {
    tracing::debug!("{connection_id}: read failed: {error}");
    Ended::Client(CloseReason::ClientReset)
}

/// The reader's buffer as charged to the memory budget: it grows toward a
/// frame's declared length as the frame arrives, so a client sending a
/// maximum frame slowly holds that much. Charged after each read, in one
/// delta, and credited when the reader ends.
struct ReadCharge<'a> {
    memory: &'a MemoryBudget,
    peer: &'a Peer,
    charged: usize,
}

impl ReadCharge<'_> {
    /// Charges the change to `decoder`'s buffer. The connection weighs its
    /// buffer for shedding only while a frame is partly received: an empty
    /// buffer is a reader between frames, not a client holding memory.
    fn update(&mut self, decoder: &Decoder) {
        let capacity = decoder.capacity();
        if capacity > self.charged {
            self.memory.charge(capacity - self.charged);
        } else if capacity < self.charged {
            self.memory.credit(self.charged - capacity);
        }
        self.charged = capacity;
        let weight = if decoder.buffered() > 0 { capacity } else { 0 };
        self.peer.read_buffer.store(weight, Relaxed);
    }
}

impl Drop for ReadCharge<'_> {
    fn drop(&mut self) {
        self.memory.credit(self.charged);
        self.peer.read_buffer.store(0, Relaxed);
    }
}

fn serve<R: ReadHalf>(
    shared: &Shared,
    peer: &Peer,
    session: &mut Session,
    read: &mut R,
    mask: &WaitMask,
    bytes_in: &mut u64,
) -> Ended {
    let idle = shared.config.idle_timeout;
    let mut decoder = Decoder::new(shared.config.max_frame);
    let mut charge = ReadCharge {
        memory: &shared.counters.memory,
        peer,
        charged: 0,
    };
    let mut limiter = Limiter::new(&shared.config.rates, Instant::now());
    let mut last_frame = Instant::now();
    // Whether the connection is idle: no read buffer, waiting in ppoll.
    let mut trimmed = false;
    let mut stack = StackTrim::default();
    let mut timeout_set = IDLE_TRIM_AFTER.min(idle);
    if let Err(error) = read.set_read_timeout(timeout_set) {
        return read_failed(session.connection_id(), &error);
    }
    loop {
        if peer.outbound.is_closing() {
            return Ended::Session;
        }
        // The idle clock runs from the last complete frame, so a partial
        // frame trickling in does not keep a connection alive.
        let left = idle.saturating_sub(last_frame.elapsed());
        if left.is_zero() {
            let message = format!(
                "no complete frame for {} s; send HEARTBEAT frames to stay connected",
                idle.as_secs_f64()
            );
            let _ = session.fatal(ErrorPayload::new(ErrorCode::IdleTimeout, message));
            return Ended::Session;
        }
        // The token's expiry is a second deadline: wait for whichever
        // comes first, so a silent client is still cut when it passes.
        let left = match session.expires_at_ms() {
            None => left,
            Some(at) => {
                let token_left = Duration::from_millis(at.saturating_sub(unix_ms()));
                if token_left.is_zero() {
                    let _ = session.token_expired();
                    return Ended::Session;
                }
                left.min(token_left)
            }
        };
        // Never block in read() for long: a close from another thread is
        // only seen between reads or inside the idle wait below.
        let wanted = if trimmed {
            left
        } else {
            left.min(IDLE_TRIM_AFTER)
        };
        if wanted.abs_diff(timeout_set) > Duration::from_millis(5) {
            if let Err(error) = read.set_read_timeout(wanted.max(Duration::from_millis(1))) {
                return read_failed(session.connection_id(), &error);
            }
            timeout_set = wanted;
        }
        if trimmed {
            // Idle: wait for input without holding a read buffer, in a wait
            // that a close from another thread interrupts.
            match read.wait_readable(wanted, mask) {
                Ok(ready) => trimmed = !ready,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return read_failed(session.connection_id(), &e),
            }
            continue;
        }
        let n = match read.read(decoder.read_buf()) {
            Ok(0) => return Ended::Client(CloseReason::ClientClosed),
            Ok(n) => n,
            Err(e) if is_timeout(&e) => {
                // Quiet for a while: give back the read buffer and the
                // stack pages this thread is not using.
                decoder.release_if_empty();
                charge.update(&decoder);
                stack.trim();
                trimmed = true;
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                if let Some(violation) = Violation::of(&e) {
                    // The transport's framing broke (a WebSocket message
                    // that is not one frame): as for a malformed frame.
                    let error = ErrorPayload::new(violation.code, violation.message.clone());
                    let _ = session.fatal(error);
                    return Ended::Session;
                }
                return read_failed(session.connection_id(), &e);
            }
        };
        decoder.commit(n);
        *bytes_in += n as u64;
        shared.counters.bytes_in.fetch_add(n as u64, Relaxed);
        peer.bytes_in.store(*bytes_in, Relaxed);
        let mut now = Instant::now();
        session.begin_read(n, unix_ms(), now);
        loop {
            let handled = handle_frames(session, &mut decoder, &mut limiter, now);
            charge.update(&decoder);
            if handled.frames > 0 {
                last_frame = now;
            }
            if handled.served.is_break() {
                session.count_frames_in();
                return Ended::Session;
            }
            let Some(pause) = handled.pause else { break };
            // The refusal goes out now; then nothing is read for as long as
            // the refused frame needed, and the frames already read wait.
            session.end_read();
            peer.frames_in.store(session.frames_in(), Relaxed);
            if pause_reading(peer, pause, mask) {
                return Ended::Session;
            }
            now = Instant::now();
            limiter.resumed(now);
            // The client was told to wait: the wait is not idleness.
            last_frame = now;
            session.begin_read(0, unix_ms(), now);
        }
        session.end_read();
        peer.frames_in.store(session.frames_in(), Relaxed);
    }
}

/// Reads nothing for `pause` (a rate limit's refusal): the client's input
/// waits in the kernel, which pushes back on it. Returns whether the
/// connection closed meanwhile.
fn pause_reading(peer: &Peer, pause: Duration, mask: &WaitMask) -> bool {
    let until = Instant::now() + pause;
    loop {
        if peer.outbound.is_closing() {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match pause_thread(left, mask) {
            // Woken by a close: seen at the top of the loop.
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Ok(()) => {}
            // Cannot happen (no descriptors to be bad); never spin.
            Err(_) => std::thread::sleep(left),
        }
    }
}

/// How a read's frames went.
pub(crate) struct Handled {
    /// `Break` when the connection stops being served.
    pub(crate) served: Served,
    /// Complete frames handled (refused ones included).
    pub(crate) frames: u64,
    /// A frame was refused for the rate limits: read nothing for this long,
    /// then hand the decoder's remaining frames over again.
    pub(crate) pause: Option<Duration>,
}

/// Hands the decoder's complete frames to the session, each judged by the
/// rate `limiter` at `now` (the time of the read), until one is refused.
pub(crate) fn handle_frames(
    session: &mut Session,
    decoder: &mut Decoder,
    limiter: &mut Limiter,
    now: Instant,
) -> Handled {
    let mut frames = 0;
    let handled = |served, frames, pause| Handled {
        served,
        frames,
        pause,
    };
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => {
                frames += 1;
                match limiter.check(HEADER_LEN + frame.payload.len(), now) {
                    Verdict::Pass => {
                        if session.handle(&frame).is_break() {
                            return handled(ControlFlow::Break(()), frames, None);
                        }
                    }
                    Verdict::Refuse(wait) => {
                        session.rate_limited(&frame, wait);
                        return handled(ControlFlow::Continue(()), frames, Some(wait));
                    }
                    Verdict::Abuse => {
                        return handled(session.rate_abuse(&frame), frames, None);
                    }
                }
            }
            Ok(None) => return handled(ControlFlow::Continue(()), frames, None),
            Err(error) => {
                let error = ErrorPayload::new(error.code(), error.to_string());
                return handled(session.fatal(error), frames, None);
            }
        }
    }
}

/// Reads and discards input after the connection was closed, until the
/// client has received everything we sent, or closes its side, or stops
/// making progress for the write timeout, or the write timeout has passed
/// since the close.
///
/// Closing a socket that has unread input, or that receives input after the
/// close, makes the kernel reset the connection and throw away what is still
/// in its send buffer: the end of the backlog and the final ERROR. So the
/// socket is only closed once that buffer is empty, and input is read until
/// then. Kept out of line so its buffer is not on the blocking frame.
#[inline(never)]
fn linger<R: ReadHalf>(shared: &Shared, peer: &Peer, read: &mut R) {
    let write_timeout = shared.config.write_timeout;
    let mut sink = [0u8; 4096];
    let mut unsent = usize::MAX;
    let mut progress_at = Instant::now();
    loop {
        let now = Instant::now();
        if peer.writer_done() {
            let left = read.unsent_bytes().unwrap_or(0);
            if left == 0 {
                return;
            }
            if left < unsent {
                unsent = left;
                progress_at = now;
            }
        } else {
            // The writer has its own write timeout.
            progress_at = now;
        }
        // No progress, or past the final flush's bound however slowly the
        // client reads: give up on it, and on what it has not taken.
        if now - progress_at >= write_timeout || peer.outbound.output().past_flush_bound() {
            peer.abort();
            return;
        }
        if read.set_read_timeout(LINGER_POLL).is_err() {
            return;
        }
        match read.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
