//! One chat session: the rooms joined, the current room, and what each
//! command does. Shared by the interactive and the piped front ends.
//!
//! Two threads print. The event thread ([`spawn_events`]) prints what arrives
//! unasked (messages, member events, errors, the disconnect) and forwards the
//! answers to requests to the input thread, which waits for the answer to each
//! `join`, `leave` and `heartbeat` before it reads the next line: so a script's
//! `join physics` then `send hi` sends to physics, and the prompt shows the
//! room the server confirmed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use client::{Client, ClientError, DisconnectReason, ErrorCode, Event, Hello};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::command::Command;
use super::format::{self, Style};
use super::out::Out;

/// What the input loop does after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The user asked to quit.
    Quit,
    /// The connection is gone (the event thread has said why).
    Lost,
}

/// How waiting for an answer ended. One lives briefly on the stack per
/// command typed, so its size does not matter; boxing the event would only
/// make the matches on it harder to read.
#[allow(clippy::large_enum_variant)]
enum Waited {
    Got(Event),
    /// The server refused; the event thread printed its error.
    Refused,
    Lost,
    TimedOut,
}

/// Starts the thread that prints incoming events and forwards answers
/// (everything but messages and member events) to `replies`.
pub fn spawn_events(
    client: Arc<Client>,
    out: Arc<Out>,
    style: Style,
    replies: Sender<Event>,
    interactive: bool,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("relay-cli-events".into())
        .spawn(move || {
            while let Some(event) = client.recv() {
                match &event {
                    Event::Message(message) => out.line(&style.message(message)),
                    Event::Member(member) => out.line(&style.member(member)),
                    // A fatal error is reported by the disconnect that follows.
                    // `CODE: message`, or the message alone for the original
                    // server's `{"error": "..."}`, which has no code.
                    Event::Error(error) if !error.fatal => {
                        out.line(&style.error(&format::clean(&error.to_string())));
                    }
                    Event::Disconnected(reason) if *reason != DisconnectReason::Closed => {
                        let mut text = format::clean(&reason.to_string());
                        if interactive {
                            text.push_str(" (press Enter to exit)");
                        }
                        out.line(&style.disconnected(&text));
                    }
                    _ => {}
                }
                if !matches!(event, Event::Message(_) | Event::Member(_)) {
                    let _ = replies.send(event);
                }
            }
        })
}

#[derive(Debug)]
pub struct Session {
    pub client: Arc<Client>,
    /// Answers forwarded by the event thread.
    pub replies: Receiver<Event>,
    /// Rooms joined, in the order joined; shared with tab completion.
    pub rooms: Arc<Mutex<Vec<String>>>,
    /// Where plain lines and `send` go.
    pub current: Option<String>,
    pub out: Arc<Out>,
    pub style: Style,
    /// How long to wait for each answer.
    pub timeout: Duration,
    /// Shown in `help`.
    pub history: Option<PathBuf>,
}

impl Session {
    /// `relay:<room>> `, or `relay> ` outside any room.
    pub fn prompt(&self) -> String {
        match &self.current {
            Some(room) => format!("relay:{}> ", format::clean(room)),
            None => "relay> ".into(),
        }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, text: &str) {
        self.out.line(&self.style.error(text));
    }

    fn notice(&self, text: &str) {
        self.out.line(&self.style.notice(text));
    }

    /// Reports a failed request; a lost connection ends the session.
    fn failed(&self, error: ClientError) -> Flow {
        match error {
            ClientError::Disconnected(_) => Flow::Lost,
            other => {
                self.error(&other.to_string());
                Flow::Continue
            }
        }
    }

    /// Runs one line of input.
    pub fn execute(&mut self, line: &str) -> Flow {
        match Command::parse(line) {
            Command::Nothing => Flow::Continue,
            Command::Join(room) => self.join(&room),
            Command::Send(text) => self.send(&text),
            Command::Leave(room) => self.leave(room),
            Command::Rooms => {
                let rooms = self.rooms();
                let text = if rooms.is_empty() {
                    "not in any room; join one with: join <room>".to_owned()
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
                drop(rooms);
                self.notice(&text);
                Flow::Continue
            }
            Command::Heartbeat => self.heartbeat(),
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
                    "unknown command /{}; type help for the list",
                    format::clean(&word)
                ));
                Flow::Continue
            }
        }
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
                    self.error(&format!(
                        "no {what} from the server within {}; it may be overloaded",
                        format::rtt(self.timeout)
                    ));
                    return Waited::TimedOut;
                }
            }
        }
    }

    fn join(&mut self, room: &str) -> Flow {
        let trimmed = room.trim();
        if let Err(error) = self.client.join(trimmed) {
            return self.failed(error);
        }
        let waited = self.wait("answer to join", |event| match event {
            Event::Joined(ack) => ack.room == trimmed,
            // Joining is refused with INVALID_ROOM (e.g. too many rooms); the
            // name itself was checked before sending.
            Event::Error(error) => error.code == ErrorCode::InvalidRoom,
            _ => false,
        });
        match waited {
            Waited::Got(Event::Joined(ack)) => {
                {
                    let mut rooms = self.rooms();
                    if !rooms.contains(&ack.room) {
                        rooms.push(ack.room.clone());
                    }
                }
                let mut text = format!("joined {}", format::clean(&ack.room));
                // The original server does not say how many.
                if let Some(members) = ack.members {
                    let others = members.saturating_sub(1);
                    let s = if others == 1 { "" } else { "s" };
                    text.push_str(&format!(" ({others} other member{s})"));
                }
                self.notice(&text);
                self.current = Some(ack.room);
                Flow::Continue
            }
            Waited::Lost => Flow::Lost,
            _ => Flow::Continue,
        }
    }

    fn send(&mut self, text: &str) -> Flow {
        let Some(room) = &self.current else {
            self.error("not in a room; join one first with: join <room>");
            return Flow::Continue;
        };
        match self.client.send_text(room, text) {
            Ok(()) => Flow::Continue,
            Err(error) => self.failed(error),
        }
    }

    fn leave(&mut self, room: Option<String>) -> Flow {
        let Some(room) = room.or_else(|| self.current.clone()) else {
            self.error("not in a room; nothing to leave");
            return Flow::Continue;
        };
        let room = room.trim().to_owned();
        if let Err(error) = self.client.leave(&room) {
            return self.failed(error);
        }
        match self.wait(
            "answer to leave",
            |event| matches!(event, Event::Left(ack) if ack.room == room),
        ) {
            Waited::Got(_) => {
                let was_member = {
                    let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
                    let before = rooms.len();
                    rooms.retain(|joined| *joined != room);
                    if self.current.as_ref() == Some(&room) {
                        self.current = rooms.last().cloned();
                    }
                    rooms.len() != before
                };
                let mut text = if was_member {
                    format!("left {}", format::clean(&room))
                } else {
                    format!("not in {}; nothing to leave", format::clean(&room))
                };
                if was_member && let Some(current) = &self.current {
                    text.push_str(&format!("; now in {}", format::clean(current)));
                }
                self.notice(&text);
                Flow::Continue
            }
            Waited::Lost => Flow::Lost,
            _ => Flow::Continue,
        }
    }

    /// Sends a HEARTBEAT and prints the round-trip time of its echo.
    ///
    /// A server that announced no idle timeout (the original) never echoes,
    /// so a HELLO follows the HEARTBEAT: it is answered in order, and its
    /// answer arriving first means no echo is coming. That is reported at
    /// once instead of after the timeout.
    fn heartbeat(&mut self) -> Flow {
        let sent = Instant::now();
        let seq = match self.client.heartbeat() {
            Ok(seq) => seq,
            Err(error) => return self.failed(error),
        };
        let echoes = self.client.server_echoes_heartbeats() != Some(false);
        if !echoes && let Err(error) = self.client.send_hello(&Hello::default()) {
            return self.failed(error);
        }
        let waited = self.wait("heartbeat answer", |event| match event {
            Event::Heartbeat(reply) => reply.seq == Some(seq),
            Event::Hello(_) => !echoes,
            _ => false,
        });
        match waited {
            Waited::Got(Event::Heartbeat(reply)) => {
                let rtt = reply.rtt.unwrap_or_else(|| sent.elapsed());
                self.notice(&format!("heartbeat: round trip {}", format::rtt(rtt)));
                // It echoed after all: take the HELLO answer behind the echo,
                // so the next wait does not mistake it for its own.
                if !echoes
                    && let Waited::Lost =
                        self.wait("HELLO answer", |event| matches!(event, Event::Hello(_)))
                {
                    return Flow::Lost;
                }
                Flow::Continue
            }
            Waited::Got(Event::Hello(_)) => {
                self.notice(
                    "heartbeat: round-trip time not available from this server \
                     (it does not answer HEARTBEAT; the original Node.js server never does); \
                     the connection is fine",
                );
                Flow::Continue
            }
            Waited::Lost => Flow::Lost,
            _ => Flow::Continue,
        }
    }

    /// Waits until the server has answered everything sent so far: the
    /// server answers in order, and the event thread prints in order, so when
    /// the answer to one last request is here, everything before it has been
    /// printed. The request is a HEARTBEAT, or a HELLO for a server that
    /// echoes no HEARTBEAT (the original; every server answers HELLO).
    pub fn sync(&self) -> Flow {
        let echoes = self.client.server_echoes_heartbeats() != Some(false);
        let sent = if echoes {
            self.client.heartbeat().map(Some)
        } else {
            self.client.send_hello(&Hello::default()).map(|()| None)
        };
        let seq = match sent {
            Ok(seq) => seq,
            Err(ClientError::Disconnected(_)) => return Flow::Lost,
            Err(error) => {
                self.error(&error.to_string());
                return Flow::Continue;
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
            "commands:
  join <room>      join a room, or switch to one already joined
  send <message>   send to the current room (any other line does the same)
  leave [room]     leave a room (default: the current one)
  rooms            list the rooms joined
  heartbeat        measure the round-trip time to the server
  help             show this
  quit, exit       leave the chat (Ctrl-D too; Ctrl-C clears the line)
commands may start with / (e.g. /join physics); Tab completes commands and rooms.
message times are UTC.
history file: {history}"
        );
        for line in text.lines() {
            self.out.line(line);
        }
    }
}
