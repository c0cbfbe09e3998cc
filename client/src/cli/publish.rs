//! `relay pub ROOM [MESSAGE | -f FILE | -]`: join once, publish every
//! message, leave once, and count what the server accepted.
//!
//! An accepted MESSAGE has no answer (SPEC.md 3.7); a refused one gets an
//! ERROR carrying the request's `id` (SPEC.md 3.0). So each JSON message is
//! sent with its number as `id`, and a HEARTBEAT after the LEAVE_ROOM is the
//! barrier: the server answers in order, so once its echo is here, every
//! ERROR the messages caused has arrived too. Binary messages cannot carry an
//! `id`; an ERROR without one is counted against them.
//!
//! A server that numbers messages (its JOIN answer has an epoch, SPEC.md 8)
//! is asked for an ack of each JSON message (SPEC.md 3.14): then the count
//! of accepted messages is the count of acks, each with the `seq` the
//! message got and the members it was queued for, and the barrier only
//! bounds the wait.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use client::{Client, ClientError, Event, RequestId};
use serde_json::value::RawValue;

use super::args::{Args, Format, Publish};
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

/// What the event side saw by the barrier.
#[derive(Default)]
struct Answers {
    /// Numbers of the messages the server refused (from the ERRORs' ids).
    refused: BTreeSet<i64>,
    /// ERRORs without an id (binary messages): each is one refusal.
    refused_without_id: u64,
    /// The connection ended before the barrier, and why.
    lost: Option<String>,
    /// The barrier's echo arrived.
    done: bool,
    /// Acks by message number: the `seq` given and the members queued for.
    acked: BTreeMap<i64, (u64, u64)>,
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
    let room = publish.room.trim().to_owned();
    let acks = match client.join_and_wait(&room, dial.timeout) {
        Ok(ack) => ack.position.is_some(),
        Err(ClientError::Disconnected(reason)) => {
            return Err(Failure::new(
                Exit::Lost,
                format!("connection lost: {reason}"),
            ));
        }
        Err(error) => {
            return Err(Failure::new(
                Exit::Failed,
                format!(
                    "cannot publish to {}: {}",
                    format::clean(&room),
                    format::clean(&error.to_string())
                ),
            ));
        }
    };
    let started = Instant::now();
    let barrier = AtomicU64::new(0);
    let interval = super::link::keepalive_interval(login.hello.idle_timeout_ms);
    let (stop_keepalive, stop) = crossbeam_channel::bounded::<()>(0);
    let (sent, bad, binary_sent, answers) = std::thread::scope(|scope| {
        let answers = scope.spawn(|| read_answers(&client, &out, &dial, &barrier));
        // `pub ROOM -` may wait on its input for longer than the server's
        // idle timeout.
        scope.spawn(|| {
            while stop.recv_timeout(interval) == Err(RecvTimeoutError::Timeout) {
                if client.heartbeat().is_err() {
                    break;
                }
            }
        });
        let (sent, bad, binary_sent) = match (&file, publish.message.as_deref()) {
            (Some(bytes), _) => send_all(
                &client,
                &room,
                std::iter::once(item(bytes.clone(), publish.binary, json)),
                &out,
                acks,
            ),
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
                send_all(&client, &room, lines, &out, acks)
            }
            (None, Some(text)) => send_all(
                &client,
                &room,
                std::iter::once(item(text.as_bytes().to_vec(), publish.binary, json)),
                &out,
                acks,
            ),
            (None, None) => (0, 0, 0),
        };
        // The barrier: the LEAVE_ROOM's answer and the HEARTBEAT's echo come
        // after every ERROR the messages caused.
        drop(stop_keepalive);
        let _ = client.leave(&room);
        // 0 means "not sent yet"; a failed send leaves the reader to see the
        // disconnect.
        if let Ok(seq) = client.heartbeat() {
            barrier.store(seq, Ordering::SeqCst);
        }
        let answers = answers.join().unwrap_or_else(|_| Answers {
            lost: Some("the thread reading the answers failed".into()),
            ..Answers::default()
        });
        (sent, bad, binary_sent, answers)
    });
    client.close();
    let refused = answers.refused.len() as u64 + answers.refused_without_id;
    let accepted = sent.saturating_sub(refused);
    let total = sent + bad;
    if json {
        let mut summary = serde_json::json!({
            "room": room,
            "messages": total,
            "accepted": if answers.done { Some(accepted) } else { None },
            "refused": refused + bad,
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
    if let Some(why) = answers.lost {
        return Err(Failure::new(
            Exit::Lost,
            format!(
                "connection lost after {sent} of {total} messages were sent; those are not confirmed: {why}"
            ),
        ));
    }
    let text = format!(
        "{accepted} of {total} message{} accepted by {} in {}",
        if total == 1 { "" } else { "s" },
        dial.endpoint,
        format::rtt(started.elapsed())
    );
    // With acks, a message counts as accepted only when its ack came: an
    // unacked one that drew no ERROR was not confirmed either.
    let unconfirmed = if acks {
        let json_sent = sent.saturating_sub(binary_sent);
        json_sent.saturating_sub(answers.acked.len() as u64 + answers.refused.len() as u64)
    } else {
        0
    };
    let accepted = accepted.saturating_sub(unconfirmed);
    if accepted == total {
        if args.format() != Format::Json {
            out.status(&format!("{text}, room {}", format::clean(&room)));
        }
        Ok(Exit::Ok)
    } else {
        out.error(&text);
        Ok(Exit::Failed)
    }
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

/// Sends every item; returns how many were sent, how many could not be,
/// and how many of those sent were binary (which carry no `id`, so no ack).
fn send_all(
    client: &Client,
    room: &str,
    items: impl Iterator<Item = Item>,
    out: &Out,
    acks: bool,
) -> (u64, u64, u64) {
    let (mut sent, mut bad, mut binary) = (0u64, 0u64, 0u64);
    for (number, item) in (1i64..).zip(items) {
        let id = RequestId::Number(number);
        let result = match &item {
            Item::Text(text) if acks => client.send_acked(room, text, id),
            Item::Json(raw) if acks => client.send_acked(room, raw, id),
            Item::Text(text) => client.send_json_with_id(room, text, &id),
            Item::Json(raw) => client.send_json_with_id(room, raw, &id),
            Item::Binary(bytes) => client.send_binary(room, bytes),
            Item::Bad(why) => {
                out.error(&format!("message {number} not sent: {why}"));
                bad += 1;
                continue;
            }
        };
        match result {
            Ok(()) => {
                sent += 1;
                binary += u64::from(matches!(item, Item::Binary(_)));
            }
            Err(ClientError::Disconnected(_)) => break,
            Err(error) => {
                out.error(&format!("message {number} not sent: {error}"));
                bad += 1;
            }
        }
    }
    (sent, bad, binary)
}

/// Reads events until the barrier's echo (or the end of the connection),
/// printing each refusal.
fn read_answers(client: &Client, out: &Out, dial: &Dial, barrier: &AtomicU64) -> Answers {
    let mut answers = Answers::default();
    // Generous: the server may take a while to get through a long pipe of
    // messages, and it is still answering as long as events arrive.
    let quiet_limit = dial.timeout * 4;
    let mut last_heard = Instant::now();
    // The highest HEARTBEAT echo seen: the barrier's may arrive before its
    // number is stored.
    let mut echoed = 0;
    loop {
        let wanted = barrier.load(Ordering::SeqCst);
        if wanted != 0 && echoed >= wanted {
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
            Event::Ack(ack) => {
                if let RequestId::Number(n) = ack.id {
                    answers.acked.insert(n, (ack.seq, ack.members));
                }
            }
            Event::Error(error) if !error.fatal => match &error.id {
                Some(RequestId::Number(n)) => {
                    answers.refused.insert(*n);
                    out.error(&format!(
                        "message {n} refused: {}",
                        format::clean(&error.to_string())
                    ));
                }
                _ => {
                    answers.refused_without_id += 1;
                    out.error(&format!("refused: {}", format::clean(&error.to_string())));
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
