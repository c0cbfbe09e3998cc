//! The connection a long-running command (`chat`, `sub`) lives on, across
//! reconnects.
//!
//! One thread, the supervisor ([`spawn`]), reads the current connection's
//! events and hands them to the command's handler. When the connection ends
//! it says why on standard error, and with `--reconnect` it connects again
//! with backoff, rejoins the rooms, sends the lines typed meanwhile, and
//! says so. The keepalive thread ([`spawn_keepalive`]) keeps a quiet
//! connection under the server's idle timeout and reports a server whose
//! keepalive answers stop coming.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use client::{Client, ClientError, DisconnectReason, Event, Recovery, RoomAck, Since};
use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::connect::{Dial, Login};
use super::exit::Exit;
use super::format;
use super::out::Out;

/// Lines typed while disconnected that are kept to send after the
/// reconnect; past this many, a line is refused (and the user told).
pub const MAX_WAITING_LINES: usize = 100;

const CONNECTED: u8 = 0;
const RECONNECTING: u8 = 1;
const GONE: u8 = 2;

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connected,
    /// Lost, and `--reconnect` is trying again.
    Reconnecting,
    /// Lost for good (or closed by this side).
    Gone,
}

/// What became of a message handed to [`Link::send_text`].
#[derive(Debug)]
pub enum Outcome {
    Delivered,
    /// Not connected: kept, and sent after the reconnect; the number is how
    /// many lines are waiting.
    Waiting(usize),
    /// Not sent, and why.
    Refused(String),
}

#[derive(Debug)]
pub struct Link {
    pub dial: Dial,
    pub reconnect: bool,
    pub out: Arc<Out>,
    client: Mutex<Option<Arc<Client>>>,
    /// The rooms to be in, in the order joined: rejoined after a reconnect,
    /// and shared with tab completion.
    pub rooms: Arc<Mutex<Vec<String>>>,
    /// Messages (room, text) typed while disconnected.
    waiting: Mutex<Vec<(String, String)>>,
    state: AtomicU8,
    /// The exit code when the link is gone for good: [`Exit::Lost`], or
    /// [`Exit::Refused`] when a reconnect's login was refused.
    gone_with: Mutex<Exit>,
    /// Set by the keepalive when it cuts a server that stopped answering,
    /// so the close that follows is taken for a loss, not a quit.
    frozen: AtomicBool,
    /// Whether the last keepalive was answered in time.
    answering: AtomicBool,
    /// When anything last arrived from the server, in microseconds since
    /// `epoch`.
    heard_us: AtomicU64,
    epoch: Instant,
    /// Set when the command ends, so the close is not taken for a loss.
    stopping: AtomicBool,
    /// Added to a final disconnect: at a prompt, the user must press Enter
    /// for the line editor to notice.
    pub press_enter: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Link {
    pub fn new(dial: Dial, reconnect: bool, out: Arc<Out>, rooms: Vec<String>) -> Link {
        Link {
            dial,
            reconnect,
            out,
            client: Mutex::new(None),
            rooms: Arc::new(Mutex::new(rooms)),
            waiting: Mutex::new(Vec::new()),
            state: AtomicU8::new(CONNECTED),
            gone_with: Mutex::new(Exit::Lost),
            frozen: AtomicBool::new(false),
            answering: AtomicBool::new(true),
            heard_us: AtomicU64::new(0),
            epoch: Instant::now(),
            stopping: AtomicBool::new(false),
            press_enter: false,
        }
    }

    /// The connection, while there is one.
    pub fn client(&self) -> Option<Arc<Client>> {
        lock(&self.client).clone()
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::SeqCst) {
            CONNECTED => State::Connected,
            RECONNECTING => State::Reconnecting,
            _ => State::Gone,
        }
    }

    /// The exit code for a link that is gone.
    pub fn gone_with(&self) -> Exit {
        *lock(&self.gone_with)
    }

    pub fn answering(&self) -> bool {
        self.answering.load(Ordering::SeqCst)
    }

    pub fn rooms(&self) -> MutexGuard<'_, Vec<String>> {
        lock(&self.rooms)
    }

    /// Lines typed while disconnected and not sent yet.
    pub fn unsent(&self) -> usize {
        lock(&self.waiting).len()
    }

    /// Sends a text message, or keeps it for after the reconnect.
    pub fn send_text(&self, room: &str, text: &str) -> Outcome {
        let slot = lock(&self.client);
        if let Some(client) = slot.as_ref() {
            return match client.send_text(room, text) {
                Ok(()) => Outcome::Delivered,
                Err(client::ClientError::Disconnected(reason)) if !self.reconnect => {
                    Outcome::Refused(format!("not connected: {reason}"))
                }
                Err(client::ClientError::Disconnected(_)) => self.keep(room, text),
                Err(error) => Outcome::Refused(error.to_string()),
            };
        }
        if self.state() == State::Reconnecting {
            return self.keep(room, text);
        }
        Outcome::Refused("not connected".into())
    }

    fn keep(&self, room: &str, text: &str) -> Outcome {
        let mut waiting = lock(&self.waiting);
        if waiting.len() >= MAX_WAITING_LINES {
            return Outcome::Refused(format!(
                "not connected, and {MAX_WAITING_LINES} lines are already waiting for the reconnect"
            ));
        }
        waiting.push((room.to_owned(), text.to_owned()));
        Outcome::Waiting(waiting.len())
    }

    fn heard(&self) {
        let us = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.heard_us.store(us, Ordering::SeqCst);
    }

    fn heard_since(&self, at: Instant) -> bool {
        let at_us = u64::try_from(at.duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX);
        self.heard_us.load(Ordering::SeqCst) >= at_us
    }

    /// Ends the link: no reconnect after this; the connection is closed.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(client) = self.client() {
            client.shutdown();
        }
    }

    /// Joins every room of the list on a fresh connection, each from the
    /// last message seen there (`positions`, from the connection that
    /// ended), so the server replays what was missed or says with a gap
    /// notice what is gone; a room refused now is reported and dropped
    /// from the list. Returns the rooms joined.
    fn join_all(&self, client: &Client, positions: &HashMap<String, Since>) -> Vec<String> {
        let rooms = self.rooms().clone();
        let mut joined = Vec::new();
        for room in rooms {
            let recovery = positions.get(&room).cloned().map(Recovery::Since);
            match join_recovering(client, &room, recovery.as_ref(), self.dial.timeout) {
                Ok(ack) => joined.push(ack.room),
                Err(error) => {
                    self.out.error(&format!(
                        "cannot join {}: {}",
                        format::clean(&room),
                        format::clean(&error.to_string())
                    ));
                    self.rooms().retain(|r| *r != room);
                }
            }
        }
        joined
    }
}

/// Joins `room`, asking for `recovery` when given, and waits for the
/// answer. What the server replays (a gap notice, then the kept messages)
/// follows the answer and stays queued for the event handler, in order.
pub fn join_recovering(
    client: &Client,
    room: &str,
    recovery: Option<&Recovery>,
    timeout: Duration,
) -> Result<RoomAck, ClientError> {
    let Some(recovery) = recovery else {
        return client.join_and_wait(room, timeout);
    };
    client.join_with(room, recovery)?;
    let trimmed = room.trim();
    client.wait_for(
        timeout,
        &format!("JOIN_ROOM answer for {trimmed:?}"),
        |event| match event {
            Event::Joined(ack) if ack.room == trimmed => Some(ack.clone()),
            _ => None,
        },
    )
}

/// Starts the supervisor on the first login. `handler` gets every event of
/// every connection, in order, and an [`Event::Disconnected`] each time one
/// ends (the link's [`State`] then says whether another is coming).
pub fn spawn(
    link: Arc<Link>,
    first: Login,
    stop: Receiver<()>,
    mut handler: impl FnMut(Event) + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let client = Arc::new(first.client);
    *lock(&link.client) = Some(Arc::clone(&client));
    link.heard();
    thread::Builder::new()
        .name("relay-cli-events".into())
        .spawn(move || supervise(&link, client, &stop, &mut handler))
}

fn supervise(
    link: &Link,
    mut client: Arc<Client>,
    stop: &Receiver<()>,
    handler: &mut dyn FnMut(Event),
) {
    loop {
        let reason = loop {
            match client.recv() {
                Some(Event::Disconnected(reason)) => break reason,
                Some(event) => {
                    link.heard();
                    handler(event);
                }
                None => break DisconnectReason::Closed,
            }
        };
        *lock(&link.client) = None;
        let frozen = link.frozen.swap(false, Ordering::SeqCst);
        let quitting =
            link.stopping.load(Ordering::SeqCst) || (reason == DisconnectReason::Closed && !frozen);
        if quitting || !link.reconnect {
            link.state.store(GONE, Ordering::SeqCst);
            if !quitting {
                let mut text = format::clean(&reason.to_string());
                if link.press_enter {
                    text.push_str(" (press Enter to exit)");
                }
                link.out.disconnected(&text);
            }
            handler(Event::Disconnected(reason));
            return;
        }
        link.state.store(RECONNECTING, Ordering::SeqCst);
        let why = if frozen {
            "the server stopped answering".to_owned()
        } else {
            format::clean(&reason.to_string())
        };
        link.out.disconnected(&format!("{why}; reconnecting"));
        handler(Event::Disconnected(reason.clone()));
        // A server that is shutting down says when to come back.
        if let DisconnectReason::ServerError(error) = &reason
            && let Some(ms) = error.retry_after_ms
        {
            let wait = Duration::from_millis(ms).min(Duration::from_secs(30));
            if stop.recv_timeout(wait) != Err(RecvTimeoutError::Timeout) {
                link.state.store(GONE, Ordering::SeqCst);
                return;
            }
        }
        let out = Arc::clone(&link.out);
        let login = link.dial.login_retrying(stop, |tries, failure, wait| {
            out.status(&format!(
                "reconnect attempt {tries} failed: {}; trying again in {}",
                format::clean(&failure.message),
                format::rtt(wait)
            ));
        });
        let login = match login {
            Some(Ok(login)) => login,
            Some(Err(failure)) => {
                link.out.error(&failure.message);
                *lock(&link.gone_with) = failure.exit;
                link.state.store(GONE, Ordering::SeqCst);
                handler(Event::Disconnected(reason));
                return;
            }
            None => {
                link.state.store(GONE, Ordering::SeqCst);
                return;
            }
        };
        // Every event of the old connection has been handled, so its
        // positions are those of the last messages shown.
        let positions: HashMap<String, Since> = link
            .rooms()
            .iter()
            .filter_map(|room| Some((room.clone(), client.position(room)?)))
            .collect();
        client = Arc::new(login.client);
        let joined = link.join_all(&client, &positions);
        // Under the connection's lock, so a line typed now either waits
        // here and is sent below, or goes out on the new connection after.
        let mut slot = lock(&link.client);
        let waiting: Vec<(String, String)> = std::mem::take(&mut *lock(&link.waiting));
        let mut not_sent = 0;
        for (room, text) in &waiting {
            if client.send_text(room, text).is_err() {
                not_sent += 1;
            }
        }
        *slot = Some(Arc::clone(&client));
        drop(slot);
        link.heard();
        link.answering.store(true, Ordering::SeqCst);
        link.state.store(CONNECTED, Ordering::SeqCst);
        let mut text = format!(
            "reconnected to {} as {} ({})",
            link.dial.endpoint,
            format::clean(&login.name),
            login.hello.connection_id
        );
        if !joined.is_empty() {
            let names: Vec<String> = joined.iter().map(|r| format::clean(r)).collect();
            text.push_str(&format!("; rejoined {}", names.join(", ")));
        }
        let sent = waiting.len() - not_sent;
        if sent > 0 {
            text.push_str(&format!("; sent {sent} line(s) typed while disconnected"));
        }
        link.out.status(&text);
        if not_sent > 0 {
            link.out.error(&format!(
                "{not_sent} line(s) typed while disconnected were not sent: the new connection failed at once"
            ));
        }
    }
}

/// Sends a HEARTBEAT every `interval` (a third of the server's idle timeout)
/// so a quiet connection is not closed, and reports a server that leaves
/// one unanswered for the answer timeout as not answering (with
/// `--reconnect`, it is then cut and connected again). A server that never
/// answers HEARTBEATs (the original Node.js one) is never called frozen.
pub fn spawn_keepalive(
    link: Arc<Link>,
    interval: Duration,
    stop: Receiver<()>,
) -> std::io::Result<JoinHandle<()>> {
    let timeout = link.dial.timeout;
    // Often enough to notice the silence soon after the answer is due.
    let tick = interval.min(timeout / 4).max(Duration::from_millis(20));
    thread::Builder::new()
        .name("relay-cli-keepalive".into())
        .spawn(move || {
            let mut next_beat = Instant::now() + interval;
            let mut unanswered_since: Option<Instant> = None;
            while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(tick) {
                let Some(client) = link.client() else {
                    unanswered_since = None;
                    continue;
                };
                let now = Instant::now();
                if let Some(sent) = unanswered_since {
                    if link.heard_since(sent) {
                        unanswered_since = None;
                        if !link.answering.swap(true, Ordering::SeqCst) {
                            link.out.status("the server is answering again");
                        }
                    } else if now.duration_since(sent) >= timeout
                        && link.answering.swap(false, Ordering::SeqCst)
                    {
                        link.out.error(&format!(
                            "server not answering: no answer to a keepalive within {}",
                            format::rtt(timeout)
                        ));
                        if link.reconnect {
                            link.frozen.store(true, Ordering::SeqCst);
                            client.shutdown();
                        }
                    }
                }
                if now >= next_beat {
                    next_beat = now + interval;
                    if client.heartbeat().is_ok()
                        && unanswered_since.is_none()
                        && client.server_echoes_heartbeats() == Some(true)
                    {
                        unanswered_since = Some(now);
                    }
                }
            }
        })
}

/// A third of the server's idle timeout (at least 100 ms). A server that
/// announced none (0; the original has no idle timeout) gets one every 20 s,
/// a third of the usual 60 s, in case it has a timeout it does not announce.
pub fn keepalive_interval(idle_timeout_ms: u64) -> Duration {
    if idle_timeout_ms == 0 {
        return Duration::from_secs(20);
    }
    Duration::from_millis(idle_timeout_ms / 3).max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_without_an_idle_timeout_is_not_flooded() {
        assert_eq!(keepalive_interval(60_000), Duration::from_secs(20));
        assert_eq!(keepalive_interval(150), Duration::from_millis(100));
        assert_eq!(keepalive_interval(0), Duration::from_secs(20));
    }
}
