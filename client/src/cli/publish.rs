//! `relay pub ROOM [MESSAGE | -f FILE | -]`: join once, publish every
//! message, leave once, and count what the server accepted. `relay pub
//! --to-user USER ...` and `--to-connection ID ...` send the same messages
//! as direct messages (SPEC.md 3.16) and join no room.
//!
//! An accepted MESSAGE has no answer (SPEC.md 3.7); a refused one gets an
//! ERROR carrying the request's `id` (SPEC.md 3.0). So each JSON message is
//! sent with its number as `id`, and a HEARTBEAT after the last request is
//! the barrier: the server answers in order, so once its echo is here, every
//! ERROR the messages caused has arrived too. Binary messages cannot carry an
//! `id`; an ERROR without one is counted against them.
//!
//! The original Node.js server (SPEC.md 8) never echoes a HEARTBEAT, so
//! waiting for one would only end at the timeout, with every message sent.
//! Against it the LEAVE_ROOM's answer is the barrier instead: it answers
//! that in order too, and its ERRORs carry no `id`, so each one before the
//! answer is a refusal. It sends no acks either, so there "accepted" means
//! "sent, and no ERROR came for it by the barrier", and the summary says so.
//!
//! A server that numbers messages (its JOIN answer has an epoch, SPEC.md 8)
//! is asked for an ack of each JSON message to a room (SPEC.md 3.14): then
//! the count of accepted messages is the count of acks, each with the `seq`
//! the message got and the members it was queued for, and the barrier only
//! bounds the wait.
//!
//! A direct message is never acked: acks are for room messages, which get a
//! `seq`, and direct ones get none. So a direct message counts as delivered
//! when the barrier passes without an ERROR for it: the server found the
//! recipient connected (else `NOT_FOUND`), the token allowed it (else
//! `FORBIDDEN`), and it was queued for the recipient's connections.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use client::{Client, ClientError, ErrorCode, Event, Recipient, RequestId, ServerError};
use serde_json::value::RawValue;

use super::address::Endpoint;
use super::args::{Args, Format, Publish, Target};
use super::connect::Dial;
use super::exit::{Exit, Failure};
use super::format::{self, Style};
use super::out::Out;

/// One message to publish, or why a line could not be one.
enum Item {
    Text(String),
    Json(Box<RawValue>),
    Binary(Vec<u8>),
    Bad(String),
}

/// Where the messages go, once the connection is ready for them.
enum Destination<'a> {
    /// A joined room; `acks` when the server numbers messages and so acks
    /// them (SPEC.md 3.14).
    Room { room: String, acks: bool },
    /// Direct messages: no room, no ack.
    Direct(Recipient<'a>),
}

impl Destination<'_> {
    /// Sends one message with its number as `id` (binary ones cannot carry
    /// one).
    fn send(&self, client: &Client, id: RequestId, item: &Item) -> Result<(), ClientError> {
        match (self, item) {
            (Destination::Room { room, acks: true }, Item::Text(text)) => {
                client.send_acked(room, text, id)
            }
            (Destination::Room { room, acks: true }, Item::Json(raw)) => {
                client.send_acked(room, raw, id)
            }
            (Destination::Room { room, .. }, Item::Text(text)) => {
                client.send_json_with_id(room, text, &id)
            }
            (Destination::Room { room, .. }, Item::Json(raw)) => {
                client.send_json_with_id(room, raw, &id)
            }
            (Destination::Room { room, .. }, Item::Binary(bytes)) => {
                client.send_binary(room, bytes)
            }
            (Destination::Direct(to), Item::Text(text)) => {
                client.send_direct_with_id(to, text, &id)
            }
            (Destination::Direct(to), Item::Json(raw)) => client.send_direct_with_id(to, raw, &id),
            // The command line refuses --binary with a recipient.
            (Destination::Direct(_), Item::Binary(_)) => Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a direct message carries JSON, not bytes",
            ))),
            (_, Item::Bad(why)) => Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                why.clone(),
            ))),
        }
    }

    /// A refusal in the user's words. NOT_FOUND is the one a script hits
    /// most (a typo, a user who went away), so it says what was looked for
    /// and where, instead of the server's generic sentence.
    fn refusal(&self, error: &ServerError, endpoint: &Endpoint, name: Option<&str>) -> String {
        let not_found = matches!(error.code, ErrorCode::NotFound);
        match self {
            Destination::Direct(Recipient::User(user)) if not_found => {
                let own = if name == Some(&**user) {
                    "; your own connection does not count"
                } else {
                    ""
                };
                format!(
                    "nobody named {} is connected to {endpoint}{own}",
                    format::clean(user)
                )
            }
            Destination::Direct(Recipient::Connection(id)) if not_found => format!(
                "no connection {} is open on {endpoint}; connection ids change every time a client connects",
                format::clean(id)
            ),
            _ => format::clean(&error.to_string()),
        }
    }

    /// "room news", "user alice", "connection c4".
    fn describe(&self) -> String {
        match self {
            Destination::Room { room, .. } => format!("room {}", format::clean(room)),
            Destination::Direct(Recipient::User(user)) => {
                format!("user {}", format::clean(user))
            }
            Destination::Direct(Recipient::Connection(id)) => {
                format!("connection {}", format::clean(id))
            }
        }
    }
}

/// Which answer tells the reader that every answer to the messages is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Barrier {
    /// The echo of a HEARTBEAT sent last: a Relay v1 server echoes every
    /// one, and it also works where no room was joined (direct messages).
    Echo,
    /// The LEAVE_ROOM's answer: for a server that echoes no HEARTBEAT (the
    /// original), which answers the LEAVE_ROOM all the same.
    LeaveAnswer,
}

/// What the event side saw by the barrier.
#[derive(Default)]
struct Answers {
    /// Numbers of the messages the server refused (from the ERRORs' ids).
    refused: BTreeSet<i64>,
    /// ERRORs without an id (binary messages): each is one refusal.
    refused_without_id: u64,
    /// The connection ended before the barrier, and why.
    lost: Option<String>,
    /// The barrier's answer arrived.
    done: bool,
    /// Acks by message number: the `seq` given and the members queued for.
    acked: BTreeMap<i64, (u64, u64)>,
}

/// How the run went, for its summary.
struct Tally {
    sent: Sent,
    answers: Answers,
    elapsed: Duration,
}

/// What the sending side did.
#[derive(Default)]
struct Sent {
    /// Messages handed to the connection.
    sent: u64,
    /// Messages that could not be sent (not UTF-8, not JSON, too large).
    bad: u64,
    /// Of `sent`, the binary ones (which carry no `id`, so no ack).
    binary: u64,
}

pub fn run(args: &Args, publish: &Publish) -> Result<Exit, Failure> {
    let out = Out::streams(Style::detect(), args.global.quiet);
    let json = args.global.json;
    // Read a file before connecting: a path that cannot be read is the
    // user's to fix, not the server's.
    let file = match &publish.file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            Failure::new(Exit::Usage, format!("cannot read {}: {e}", path.display()))
        })?),
        None => None,
    };
    let dial = Dial::from_args(args)?;
    let login = dial.login()?;
    let client = login.client;
    let destination = match &publish.target {
        Target::Room(room) => join(&client, room.trim(), &dial)?,
        Target::User(user) => direct(&client, &dial, Recipient::User(user.as_str().into()))?,
        Target::Connection(id) => {
            direct(&client, &dial, Recipient::Connection(id.as_str().into()))?
        }
    };
    let started = Instant::now();
    let barrier_kind = match (&destination, client.server_echoes_heartbeats()) {
        (Destination::Room { .. }, Some(false)) => Barrier::LeaveAnswer,
        _ => Barrier::Echo,
    };
    let barrier = AtomicU64::new(0);
    let interval = super::link::keepalive_interval(login.hello.idle_timeout_ms);
    let (stop_keepalive, stop) = crossbeam_channel::bounded::<()>(0);
    let (sent, answers) = std::thread::scope(|scope| {
        let answers = scope.spawn(|| {
            let leave_answer = match (&destination, barrier_kind) {
                (Destination::Room { room, .. }, Barrier::LeaveAnswer) => Some(room.as_str()),
                _ => None,
            };
            read_answers(&client, &out, &dial, &barrier, leave_answer, |error| {
                destination.refusal(error, &dial.endpoint, dial.name.as_deref())
            })
        });
        // `pub ROOM -` may wait on its input for longer than the server's
        // idle timeout.
        scope.spawn(|| {
            while stop.recv_timeout(interval) == Err(RecvTimeoutError::Timeout) {
                if client.heartbeat().is_err() {
                    break;
                }
            }
        });
        let send = |items| send_all(&client, &destination, items, &out);
        let sent = match (&file, publish.message.as_deref()) {
            (Some(bytes), _) => send(Box::new(std::iter::once(item(
                bytes.clone(),
                publish.binary,
                json,
            )))),
            (None, Some("-")) => {
                let stdin = std::io::stdin().lock();
                let lines = stdin
                    .split(b'\n')
                    .map_while(Result::ok)
                    .filter_map(|mut line| {
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        // Empty lines are skipped: they are the usual end of a file.
                        (!line.is_empty()).then(|| item(line, publish.binary, json))
                    });
                send(Box::new(lines))
            }
            (None, Some(text)) => send(Box::new(std::iter::once(item(
                text.as_bytes().to_vec(),
                publish.binary,
                json,
            )))),
            (None, None) => Sent::default(),
        };
        // The barrier: the HEARTBEAT's echo (after the LEAVE_ROOM's answer),
        // or for the original the LEAVE_ROOM's answer itself, comes after
        // every ERROR the messages caused. 0 means "not sent yet"; a failed
        // send leaves the reader to see the disconnect.
        drop(stop_keepalive);
        if let Destination::Room { room, .. } = &destination
            && client.leave(room).is_ok()
            && barrier_kind == Barrier::LeaveAnswer
        {
            barrier.store(1, Ordering::SeqCst);
        }
        if barrier_kind == Barrier::Echo
            && let Ok(seq) = client.heartbeat()
        {
            barrier.store(seq, Ordering::SeqCst);
        }
        let answers = answers.join().unwrap_or_else(|_| Answers {
            lost: Some("the thread reading the answers failed".into()),
            ..Answers::default()
        });
        (sent, answers)
    });
    client.close();
    let tally = Tally {
        sent,
        answers,
        elapsed: started.elapsed(),
    };
    match &destination {
        Destination::Room { room, acks } => room_summary(args, &out, &dial, room, *acks, &tally),
        Destination::Direct(to) => direct_summary(args, &out, &dial, to, &tally),
    }
}

/// Joins the room for the run; whether its JOIN answer carries an epoch
/// decides whether messages are acked.
fn join<'a>(client: &Client, room: &str, dial: &Dial) -> Result<Destination<'a>, Failure> {
    match client.join_and_wait(room, dial.timeout) {
        Ok(ack) => Ok(Destination::Room {
            room: room.to_owned(),
            acks: ack.position.is_some(),
        }),
        Err(ClientError::Disconnected(reason)) => Err(Failure::new(
            Exit::Lost,
            format!("connection lost: {reason}"),
        )),
        Err(error) => Err(Failure::new(
            Exit::Failed,
            format!(
                "cannot publish to {}: {}",
                format::clean(room),
                format::clean(&error.to_string())
            ),
        )),
    }
}

/// Direct messages need a server that knows them. The original server
/// (SPEC.md 8) does not, and never answers the HEARTBEAT the count waits
/// for, so it is told apart by its HELLO answer and not sent any.
fn direct<'a>(client: &Client, dial: &Dial, to: Recipient<'a>) -> Result<Destination<'a>, Failure> {
    if client.server_echoes_heartbeats() == Some(false) {
        return Err(Failure::new(
            Exit::Failed,
            format!(
                "{} does not relay direct messages: it answers like the original Relay server (SPEC.md 8); publish to a room instead",
                dial.endpoint
            ),
        ));
    }
    Ok(Destination::Direct(to))
}

fn room_summary(
    args: &Args,
    out: &Out,
    dial: &Dial,
    room: &str,
    acks: bool,
    tally: &Tally,
) -> Result<Exit, Failure> {
    let (sent, answers) = (&tally.sent, &tally.answers);
    let json = args.global.json;
    let refused = answers.refused.len() as u64 + answers.refused_without_id;
    let accepted = sent.sent.saturating_sub(refused);
    let total = sent.sent + sent.bad;
    if json {
        let mut summary = serde_json::json!({
            "room": room,
            "messages": total,
            "accepted": if answers.done { Some(accepted) } else { None },
            "refused": refused + sent.bad,
        });
        if acks {
            let seqs: Vec<u64> = answers.acked.values().map(|(seq, _)| *seq).collect();
            summary["acked"] = (answers.acked.len() as u64).into();
            summary["firstSeq"] = seqs.iter().min().copied().into();
            summary["lastSeq"] = seqs.iter().max().copied().into();
            summary["members"] = answers.acked.values().map(|(_, m)| *m).max().into();
        }
        out.message(&summary.to_string());
    }
    if let Some(why) = &answers.lost {
        return Err(lost(sent, why));
    }
    let text = format!(
        "{accepted} of {total} message{} accepted by {} in {}",
        if total == 1 { "" } else { "s" },
        dial.endpoint,
        format::rtt(tally.elapsed)
    );
    // With acks, a message counts as accepted only when its ack came: an
    // unacked one that drew no ERROR was not confirmed either.
    let unconfirmed = if acks {
        let json_sent = sent.sent.saturating_sub(sent.binary);
        json_sent.saturating_sub(answers.acked.len() as u64 + answers.refused.len() as u64)
    } else {
        0
    };
    let accepted = accepted.saturating_sub(unconfirmed);
    if accepted == total {
        if args.format() != Format::Json {
            // Without acks (the original server), "accepted" rests on the
            // absence of an ERROR alone: say so rather than imply more.
            let basis = if acks {
                ""
            } else {
                " (sent, and no ERROR came back; this server sends no acks)"
            };
            out.status(&format!("{text}, room {}{basis}", format::clean(room)));
        }
        Ok(Exit::Ok)
    } else {
        out.error(&text);
        Ok(Exit::Failed)
    }
}

fn direct_summary(
    args: &Args,
    out: &Out,
    dial: &Dial,
    to: &Recipient<'_>,
    tally: &Tally,
) -> Result<Exit, Failure> {
    let (sent, answers) = (&tally.sent, &tally.answers);
    let refused = answers.refused.len() as u64 + answers.refused_without_id;
    let delivered = sent.sent.saturating_sub(refused);
    let total = sent.sent + sent.bad;
    if args.global.json {
        let (key, name) = match to {
            Recipient::User(user) => ("toUser", user),
            Recipient::Connection(id) => ("toConnection", id),
        };
        let summary = serde_json::json!({
            key: name,
            "messages": total,
            "delivered": if answers.done { Some(delivered) } else { None },
            "refused": refused + sent.bad,
        });
        out.message(&summary.to_string());
    }
    if let Some(why) = &answers.lost {
        return Err(lost(sent, why));
    }
    let text = format!(
        "{delivered} of {total} message{} delivered to {} through {} in {}",
        if total == 1 { "" } else { "s" },
        Destination::Direct(to.clone()).describe(),
        dial.endpoint,
        format::rtt(tally.elapsed)
    );
    if delivered == total {
        if args.format() != Format::Json {
            out.status(&text);
        }
        Ok(Exit::Ok)
    } else {
        out.error(&text);
        Ok(Exit::Failed)
    }
}

/// Exit 5: the messages sent were not confirmed either way.
fn lost(sent: &Sent, why: &str) -> Failure {
    Failure::new(
        Exit::Lost,
        format!(
            "connection lost after {} of {} messages were sent; those are not confirmed: {why}",
            sent.sent,
            sent.sent + sent.bad
        ),
    )
}

fn item(bytes: Vec<u8>, binary: bool, json: bool) -> Item {
    if binary {
        return Item::Binary(bytes);
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(_) => return Item::Bad("not UTF-8 text; use --binary to send bytes".into()),
    };
    if json {
        return match RawValue::from_string(text) {
            Ok(raw) => Item::Json(raw),
            Err(error) => Item::Bad(format!("not JSON ({error})")),
        };
    }
    Item::Text(text)
}

/// Sends every item, each with its number as `id`.
fn send_all<'a>(
    client: &Client,
    destination: &Destination<'_>,
    items: Box<dyn Iterator<Item = Item> + 'a>,
    out: &Out,
) -> Sent {
    let mut sent = Sent::default();
    for (number, item) in (1i64..).zip(items) {
        if let Item::Bad(why) = &item {
            out.error(&format!("message {number} not sent: {why}"));
            sent.bad += 1;
            continue;
        }
        match destination.send(client, RequestId::Number(number), &item) {
            Ok(()) => {
                sent.sent += 1;
                sent.binary += u64::from(matches!(item, Item::Binary(_)));
            }
            Err(ClientError::Disconnected(_)) => break,
            Err(error) => {
                out.error(&format!("message {number} not sent: {error}"));
                sent.bad += 1;
            }
        }
    }
    sent
}

/// Reads events until the barrier's answer (or the end of the connection),
/// printing each refusal as `refusal` words it. `barrier` is the HEARTBEAT
/// number to wait for, or, with `leave_answer` (the room), non-zero once
/// the LEAVE_ROOM that is the barrier has been sent.
fn read_answers(
    client: &Client,
    out: &Out,
    dial: &Dial,
    barrier: &AtomicU64,
    leave_answer: Option<&str>,
    refusal: impl Fn(&ServerError) -> String,
) -> Answers {
    let mut answers = Answers::default();
    // Generous: the server may take a while to get through a long pipe of
    // messages, and it is still answering as long as events arrive.
    let quiet_limit = dial.timeout * 4;
    let mut last_heard = Instant::now();
    // The highest HEARTBEAT echo seen: the barrier's may arrive before its
    // number is stored.
    let mut echoed = 0;
    // Likewise the LEAVE_ROOM's answer, which can come before the flag
    // that it is the barrier is set.
    let mut left = false;
    loop {
        let wanted = barrier.load(Ordering::SeqCst);
        let arrived = match leave_answer {
            Some(_) => left,
            None => echoed >= wanted,
        };
        if wanted != 0 && arrived {
            answers.done = true;
            return answers;
        }
        let event = match client.recv_timeout(Duration::from_millis(50)) {
            Ok(event) => event,
            Err(ClientError::Timeout { .. }) => {
                // Still reading the messages: nothing is due yet.
                if wanted != 0 && last_heard.elapsed() > quiet_limit {
                    answers.lost = Some(format!(
                        "the server did not confirm them within {}",
                        format::rtt(quiet_limit)
                    ));
                    return answers;
                }
                continue;
            }
            Err(error) => {
                answers.lost = Some(error.to_string());
                return answers;
            }
        };
        last_heard = Instant::now();
        match event {
            Event::Heartbeat(reply) => echoed = echoed.max(reply.seq.unwrap_or(0)),
            Event::Left(ack) if Some(ack.room.as_str()) == leave_answer => left = true,
            Event::Ack(ack) => {
                if let RequestId::Number(n) = ack.id {
                    answers.acked.insert(n, (ack.seq, ack.members));
                }
            }
            Event::Error(error) if !error.fatal => match &error.id {
                Some(RequestId::Number(n)) => {
                    answers.refused.insert(*n);
                    out.error(&format!("message {n} refused: {}", refusal(&error)));
                }
                _ => {
                    answers.refused_without_id += 1;
                    out.error(&format!("refused: {}", refusal(&error)));
                }
            },
            Event::Disconnected(reason) => {
                answers.lost = Some(reason.to_string());
                return answers;
            }
            _ => {}
        }
    }
}
