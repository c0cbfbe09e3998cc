//! One chat session: the current room, what each command does, and the
//! handler that prints what arrives. Shared by the interactive and the piped
//! front ends; the connection itself (and reconnecting) is the [`Link`]'s.
//!
//! The handler ([`handler`]) prints what arrives unasked (messages, member
//! events, errors) and forwards the answers to requests to the input thread,
//! which waits for the answer to each `/join`, `/leave` and `/ping` before
//! it reads the next line: so a script's `/join physics` then `hi` sends to
//! physics, and the prompt shows the room the server confirmed.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use client::{Client, ClientError, ErrorCode, Event, Hello, MemberChange, Recipient, Recovery};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::args::Format;
use super::command::{self, Command};
use super::format;
use super::link::{Link, Outcome, State};
use super::out::{Out, Shown};

/// What the input loop does after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The user asked to quit.
    Quit,
    /// The connection is gone for good (the supervisor has said why).
    Lost,
}

/// How waiting for an answer ended. One lives briefly on the stack per
/// command typed, so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Waited {
    Got(Event),
    /// The server refused; the handler printed its error.
    Refused,
    /// The connection ended while waiting.
    Lost,
    TimedOut,
}

/// What this client knows of a room's members. The protocol gives the count
/// on joining and announces arrivals and departures after that, but no list
/// of those who were there first.
#[derive(Debug, Default)]
pub struct RoomView {
    /// Members, this client included, when the server said.
    pub members: Option<u64>,
    /// Others seen arriving since this client joined: connection id to
    /// user name.
    pub seen: BTreeMap<String, Option<String>>,
}

/// State the handler and the input loop share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set by any refused request or command misuse: a script then exits 1.
    pub failed: AtomicBool,
    pub views: Mutex<HashMap<String, RoomView>>,
    /// Whether a JOIN answer carried an epoch: then the server knows WHO
    /// and direct messages (SPEC.md 8).
    pub knows_who: AtomicBool,
}

/// The event handler for the [`Link`]: prints in `format`, counts failures,
/// and forwards answers to `replies`.
pub fn handler(
    out: Arc<Out>,
    format: Format,
    shared: Arc<Shared>,
    replies: Sender<Event>,
) -> impl FnMut(Event) + Send + 'static {
    move |event| {
        let shown = out.delivery(format, &event);
        match &event {
            Event::Member(member) => {
                {
                    let mut views = shared.views.lock().unwrap_or_else(PoisonError::into_inner);
                    let view = views.entry(member.room.clone()).or_default();
                    match member.change {
                        MemberChange::Joined => {
                            view.members = view.members.map(|n| n + 1);
                            view.seen
                                .insert(member.connection_id.clone(), member.user.clone());
                        }
                        MemberChange::Left => {
                            view.members = view.members.map(|n| n.saturating_sub(1));
                            view.seen.remove(&member.connection_id);
                        }
                    }
                }
                match format {
                    Format::Human => out.message(&out.style.member(member)),
                    Format::Json => out.message(&format::json_member(member)),
                    Format::Raw => {}
                }
            }
            // A fatal error is reported by the disconnect that follows.
            Event::Error(error) if !error.fatal => {
                shared.failed.store(true, Ordering::SeqCst);
                out.error(&format::clean(&error.to_string()));
            }
            _ => {}
        }
        if shown == Shown::Nothing && !matches!(event, Event::Member(_)) {
            let _ = replies.send(event);
        }
    }
}

#[derive(Debug)]
pub struct Session {
    pub link: Arc<Link>,
    /// Answers forwarded by the handler.
    pub replies: Receiver<Event>,
    pub shared: Arc<Shared>,
    /// Where plain lines go.
    pub current: Option<String>,
    pub out: Arc<Out>,
    /// How long to wait for each answer.
    pub timeout: Duration,
    /// Shown in `/help`.
    pub history: Option<PathBuf>,
    /// Whether the hint about `/` has been given.
    pub hinted: bool,
}

impl Session {
    /// `relay:<room>> `, or `relay> ` outside any room.
    pub fn prompt(&self) -> String {
        match &self.current {
            Some(room) => format!("relay:{}> ", format::clean(room)),
            None => "relay> ".into(),
        }
    }

    /// An error the user caused (or the server reported): printed, and a
    /// script then exits 1.
    fn error(&self, text: &str) {
        self.shared.failed.store(true, Ordering::SeqCst);
        self.out.error(text);
    }

    /// The connection, or why there is none.
    fn client(&self) -> Result<Arc<Client>, Flow> {
        match self.link.client() {
            Some(client) => Ok(client),
            None if self.link.state() == State::Gone => Err(Flow::Lost),
            None => {
                self.error("not connected (reconnecting); try that again once reconnected");
                Err(Flow::Continue)
            }
        }
    }

    /// Reports a failed request; a lost connection ends the session unless
    /// it is being reconnected.
    fn failed(&self, error: ClientError) -> Flow {
        match error {
            ClientError::Disconnected(_) => self.lost(),
            other => {
                self.error(&format::clean(&other.to_string()));
                Flow::Continue
            }
        }
    }

    fn lost(&self) -> Flow {
        match self.link.state() {
            State::Gone => Flow::Lost,
            _ => Flow::Continue,
        }
    }

    /// Runs one line of input.
    pub fn execute(&mut self, line: &str) -> Flow {
        match Command::parse(line) {
            Command::Nothing => Flow::Continue,
            Command::Join { room, history } => self.join(&room, history),
            Command::Direct { user, text } => self.direct(&user, &text),
            Command::Send(text) => self.send(line, &text),
            Command::Leave(room) => self.leave(room),
            Command::Who(room) => self.who(room),
            Command::Rooms => {
                self.list_rooms();
                Flow::Continue
            }
            Command::Ping => self.ping(),
            Command::Help => {
                self.help();
                Flow::Continue
            }
            Command::Quit => Flow::Quit,
            Command::Usage(usage) => {
                self.error(usage);
                Flow::Continue
            }
            Command::Unknown(word) => {
                self.error(&format!(
                    "unknown command /{}; type /help for the list",
                    format::clean(&word)
                ));
                Flow::Continue
            }
        }
    }

    fn list_rooms(&self) {
        let rooms = self.link.rooms().clone();
        let text = if rooms.is_empty() {
            "not in any room; join one with: /join <room>".to_owned()
        } else {
            let names: Vec<String> = rooms
                .iter()
                .map(|room| {
                    let name = format::clean(room);
                    if self.current.as_ref() == Some(room) {
                        format!("{name} (current)")
                    } else {
                        name
                    }
                })
                .collect();
            format!("rooms: {}", names.join(", "))
        };
        self.out.info(&text);
    }

    /// A room's members: asked of the server with WHO when it knows WHO
    /// (SPEC.md 8: its JOIN answers carry an epoch; the original server
    /// closes the connection on WHO), else what this client pieced together.
    fn who(&mut self, room: Option<String>) -> Flow {
        let Some(room) = room.or_else(|| self.current.clone()) else {
            self.error(
                "not in a room; join one first with: /join <room>, or name one: /who <room>",
            );
            return Flow::Continue;
        };
        let room = room.trim().to_owned();
        if !self.shared.knows_who.load(Ordering::SeqCst) {
            self.pieced_who(&room);
            return Flow::Continue;
        }
        let client = match self.client() {
            Ok(client) => client,
            Err(flow) => return flow,
        };
        if let Err(error) = client.who(&room) {
            return self.failed(error);
        }
        let waited = self.wait("answer to /who", |event| match event {
            Event::Who(reply) => reply.room == room,
            Event::Error(error) => !error.fatal,
            _ => false,
        });
        match waited {
            Waited::Got(Event::Who(reply)) => {
                let name = format::clean(&reply.room);
                let mut text = match reply.members {
                    0 => format!("{name}: no members"),
                    1 => format!("{name}: 1 member"),
                    n => format!("{name}: {n} members"),
                };
                let me = client.connection_id();
                let listed: Vec<String> = reply
                    .member_list
                    .iter()
                    .map(|member| {
                        let id = format::clean(&member.connection_id);
                        let mut shown = match &member.user {
                            Some(user) => format!("{} ({id})", format::clean(user)),
                            None => id,
                        };
                        if me.as_deref() == Some(member.connection_id.as_str()) {
                            shown.push_str(" (you)");
                        }
                        shown
                    })
                    .collect();
                if !listed.is_empty() {
                    text.push_str(&format!(": {}", listed.join(", ")));
                }
                let unlisted = reply.members.saturating_sub(listed.len() as u64);
                if unlisted > 0 {
                    // SPEC.md 3.15: at most 100, fewer when the answer
                    // would pass the frame limit.
                    text.push_str(&format!("; {unlisted} more not listed by the server"));
                }
                self.out.info(&text);
                Flow::Continue
            }
            Waited::Lost => self.lost(),
            _ => Flow::Continue,
        }
    }

    /// What is known of a room's members from a server without WHO: the
    /// count it gave on joining, and the others seen arriving since.
    fn pieced_who(&self, room: &str) {
        let views = self
            .shared
            .views
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let view = views.get(room);
        let members = view.and_then(|v| v.members);
        let seen: Vec<String> = view
            .map(|v| {
                v.seen
                    .iter()
                    .map(|(id, user)| match user {
                        Some(user) => format!("{} ({id})", format::clean(user)),
                        None => id.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut text = match members {
            Some(1) => format!("{}: only you", format::clean(room)),
            Some(n) => format!("{}: {n} members, you included", format::clean(room)),
            None => format!(
                "{}: the server does not say how many members",
                format::clean(room)
            ),
        };
        if !seen.is_empty() {
            text.push_str(&format!("; joined since you: {}", seen.join(", ")));
        }
        let before = members.map(|n| n.saturating_sub(1 + seen.len() as u64));
        if let Some(before) = before.filter(|&n| n > 0) {
            text.push_str(&format!(
                "; {before} were here before you (the server sends no list of them)"
            ));
        }
        drop(views);
        self.out.info(&text);
    }

    /// Waits for the answer `wanted` picks (an ERROR it picks means refused).
    fn wait(&self, what: &str, wanted: impl Fn(&Event) -> bool) -> Waited {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left) {
                Ok(Event::Disconnected(_)) | Err(RecvTimeoutError::Disconnected) => {
                    return Waited::Lost;
                }
                Ok(Event::Error(error)) if error.fatal => {}
                Ok(event) if wanted(&event) => {
                    return match event {
                        Event::Error(_) => Waited::Refused,
                        other => Waited::Got(other),
                    };
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    let answering = if self.link.answering() {
                        "it may be overloaded"
                    } else {
                        "it is not answering"
                    };
                    self.error(&format!(
                        "no {what} from the server within {}; {answering}",
                        format::rtt(self.timeout)
                    ));
                    return Waited::TimedOut;
                }
            }
        }
    }

    fn join(&mut self, room: &str, history: Option<u64>) -> Flow {
        let client = match self.client() {
            Ok(client) => client,
            Err(flow) => return flow,
        };
        let trimmed = room.trim();
        let sent = match history {
            Some(n) => client.join_with(trimmed, &Recovery::Last(n)),
            None => client.join(trimmed),
        };
        if let Err(error) = sent {
            return self.failed(error);
        }
        let waited = self.wait("answer to /join", |event| match event {
            Event::Joined(ack) => ack.room == trimmed,
            // Joining is refused with INVALID_ROOM (e.g. too many rooms) or
            // FORBIDDEN; the name itself was checked before sending.
            Event::Error(error) => matches!(
                error.code,
                ErrorCode::InvalidRoom | ErrorCode::Forbidden | ErrorCode::RateLimited
            ),
            _ => false,
        });
        match waited {
            Waited::Got(Event::Joined(ack)) => {
                if ack.position.is_some() {
                    self.shared.knows_who.store(true, Ordering::SeqCst);
                } else if history.is_some() {
                    self.out.status(&format!(
                        "{}: this server keeps no history",
                        format::clean(&ack.room)
                    ));
                }
                {
                    let mut rooms = self.link.rooms();
                    if !rooms.contains(&ack.room) {
                        rooms.push(ack.room.clone());
                    }
                }
                self.shared
                    .views
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(
                        ack.room.clone(),
                        RoomView {
                            members: ack.members,
                            seen: BTreeMap::new(),
                        },
                    );
                let mut text = format!("joined {}", format::clean(&ack.room));
                // The original server does not say how many.
                if let Some(members) = ack.members {
                    let others = members.saturating_sub(1);
                    let s = if others == 1 { "" } else { "s" };
                    text.push_str(&format!(" ({others} other member{s})"));
                }
                self.out.status(&text);
                self.current = Some(ack.room);
                Flow::Continue
            }
            Waited::Lost => self.lost(),
            _ => Flow::Continue,
        }
    }

    fn send(&mut self, line: &str, text: &str) -> Flow {
        let Some(room) = self.current.clone() else {
            self.error("not in a room; join one first with: /join <room>");
            return Flow::Continue;
        };
        if !self.hinted
            && !line.trim_start().starts_with('/')
            && command::looks_like_a_command(text)
        {
            self.hinted = true;
            self.out.status(
                "(sent as a message: commands start with /, e.g. /join <room>; /help lists them)",
            );
        }
        match self.link.send_text(&room, text) {
            Outcome::Delivered if !self.link.answering() => {
                self.error(
                    "sent, but not confirmed: the server is not answering, and may never deliver it",
                );
                Flow::Continue
            }
            Outcome::Delivered => Flow::Continue,
            Outcome::Waiting(n) => {
                self.out.status(&format!(
                    "not connected: the line will be sent after the reconnect ({n} waiting)"
                ));
                Flow::Continue
            }
            Outcome::Refused(why) => {
                self.error(&format!("not sent: {}", format::clean(&why)));
                self.lost()
            }
        }
    }

    /// Sends a direct message to every connection of `user`. The server
    /// answers only a refusal (NOT_FOUND when the user is not connected;
    /// an error from a server without direct messages), which the handler
    /// prints, and a script then exits 1.
    fn direct(&mut self, user: &str, text: &str) -> Flow {
        let client = match self.client() {
            Ok(client) => client,
            Err(flow) => return flow,
        };
        match client.send_direct(&Recipient::User(user.into()), &text) {
            Ok(()) => Flow::Continue,
            Err(error) => self.failed(error),
        }
    }

    fn leave(&mut self, room: Option<String>) -> Flow {
        let Some(room) = room.or_else(|| self.current.clone()) else {
            self.error("not in a room; nothing to leave");
            return Flow::Continue;
        };
        let client = match self.client() {
            Ok(client) => client,
            Err(flow) => return flow,
        };
        let room = room.trim().to_owned();
        if let Err(error) = client.leave(&room) {
            return self.failed(error);
        }
        match self.wait(
            "answer to /leave",
            |event| matches!(event, Event::Left(ack) if ack.room == room),
        ) {
            Waited::Got(_) => {
                let was_member = {
                    let mut rooms = self.link.rooms();
                    let before = rooms.len();
                    rooms.retain(|joined| *joined != room);
                    if self.current.as_ref() == Some(&room) {
                        self.current = rooms.last().cloned();
                    }
                    rooms.len() != before
                };
                self.shared
                    .views
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&room);
                let mut text = if was_member {
                    format!("left {}", format::clean(&room))
                } else {
                    format!("not in {}; nothing to leave", format::clean(&room))
                };
                if was_member && let Some(current) = &self.current {
                    text.push_str(&format!("; now in {}", format::clean(current)));
                }
                self.out.status(&text);
                Flow::Continue
            }
            Waited::Lost => self.lost(),
            _ => Flow::Continue,
        }
    }

    /// Sends a HEARTBEAT and prints the round-trip time of its echo.
    ///
    /// A server that announced no idle timeout (the original) never echoes,
    /// so a HELLO follows the HEARTBEAT: it is answered in order, and its
    /// answer arriving first means no echo is coming. That is reported at
    /// once instead of after the timeout.
    fn ping(&mut self) -> Flow {
        let client = match self.client() {
            Ok(client) => client,
            Err(flow) => return flow,
        };
        let sent = Instant::now();
        let seq = match client.heartbeat() {
            Ok(seq) => seq,
            Err(error) => return self.failed(error),
        };
        let echoes = client.server_echoes_heartbeats() != Some(false);
        if !echoes && let Err(error) = client.send_hello(&Hello::default()) {
            return self.failed(error);
        }
        let waited = self.wait("answer to /ping", |event| match event {
            Event::Heartbeat(reply) => reply.seq == Some(seq),
            Event::Hello(_) => !echoes,
            _ => false,
        });
        match waited {
            Waited::Got(Event::Heartbeat(reply)) => {
                let rtt = reply.rtt.unwrap_or_else(|| sent.elapsed());
                self.out.info(&format!("round trip {}", format::rtt(rtt)));
                // It echoed after all: take the HELLO answer behind the echo,
                // so the next wait does not mistake it for its own.
                if !echoes
                    && let Waited::Lost =
                        self.wait("HELLO answer", |event| matches!(event, Event::Hello(_)))
                {
                    return self.lost();
                }
                Flow::Continue
            }
            Waited::Got(Event::Hello(_)) => {
                self.out.info(
                    "round-trip time not available from this server \
                     (it does not answer HEARTBEAT; the original Node.js server never does); \
                     the connection is fine",
                );
                Flow::Continue
            }
            Waited::Lost => self.lost(),
            _ => Flow::Continue,
        }
    }

    /// Waits until the server has answered everything sent so far: the
    /// server answers in order, and the handler prints in order, so when the
    /// answer to one last request is here, everything before it has been
    /// printed. The request is a HEARTBEAT, or a HELLO for a server that
    /// echoes no HEARTBEAT (the original; every server answers HELLO).
    pub fn sync(&self) -> Flow {
        let Some(client) = self.link.client() else {
            return Flow::Lost;
        };
        let echoes = client.server_echoes_heartbeats() != Some(false);
        let sent = if echoes {
            client.heartbeat().map(Some)
        } else {
            client.send_hello(&Hello::default()).map(|()| None)
        };
        let seq = match sent {
            Ok(seq) => seq,
            Err(ClientError::Disconnected(_)) => return Flow::Lost,
            Err(error) => {
                self.error(&error.to_string());
                return Flow::Quit;
            }
        };
        match self.wait("answer to the final request", |event| match (seq, event) {
            (Some(seq), Event::Heartbeat(reply)) => reply.seq == Some(seq),
            (None, Event::Hello(_)) => true,
            _ => false,
        }) {
            Waited::Lost => Flow::Lost,
            _ => Flow::Quit,
        }
    }

    fn help(&self) {
        let history = match &self.history {
            Some(path) => path.display().to_string(),
            None => "none (set HOME or XDG_DATA_HOME to keep one)".into(),
        };
        let text = format!(
            "commands (every other line is a message to the current room):
  /join <room> [--history N]
                    join a room, or switch to one already joined; with
                    --history, first show up to N of its kept messages
  /leave [room]     leave a room (default: the current one)
  /who [room]       a room's members (default: the current one)
  /msg <user> <message>
                    a direct message to every connection of a user (/dm too)
  /rooms            list the rooms joined
  /ping             measure the round-trip time to the server
  /send <message>   send a message (//text sends /text)
  /help             show this
  /quit, /exit      leave the chat (Ctrl-D too; Ctrl-C twice)
Tab completes commands and rooms. Message times are UTC.
history file: {history}"
        );
        for line in text.lines() {
            self.out.info(line);
        }
    }
}
