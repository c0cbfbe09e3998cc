//! `relay sub ROOM... [-n COUNT] [--timeout SECS]`: print the rooms'
//! messages as they arrive (after up to N kept ones with `--history N`);
//! stop after COUNT of them, or at the timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{ClientError, Event, Recovery};
use crossbeam_channel::select;

use super::args::{Args, Subscribe};
use super::connect::Dial;
use super::exit::{Exit, Failure};
use super::format::{self, Style};
use super::link::{self, Link, State};
use super::out::{Out, Shown};

/// Why the wait ended, sent by the handler.
enum End {
    Counted,
    Gone,
}

pub fn run(args: &Args, subscribe: &Subscribe) -> Result<Exit, Failure> {
    let out = Arc::new(Out::streams(Style::detect(), args.global.quiet));
    let dial = Dial::from_args(args)?;
    let login = dial.login()?;
    let rooms: Vec<String> = subscribe
        .rooms
        .iter()
        .map(|r| r.trim().to_owned())
        .collect();
    let recovery = subscribe.history.map(Recovery::Last);
    for room in &rooms {
        match link::join_recovering(&login.client, room, recovery.as_ref(), dial.timeout) {
            // SPEC.md 8: the original server numbers nothing and keeps
            // nothing, and its JOIN answer has no epoch.
            Ok(ack) if recovery.is_some() && ack.position.is_none() => out.status(&format!(
                "{}: this server keeps no history; showing live messages only",
                format::clean(room)
            )),
            Ok(_) => {}
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
                        "cannot subscribe to {}: {}",
                        format::clean(room),
                        format::clean(&error.to_string())
                    ),
                ));
            }
        }
    }
    let deadline = subscribe
        .timeout
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .map(|t| Instant::now() + t);
    out.status(&format!(
        "subscribed to {} on {} as {} ({})",
        rooms
            .iter()
            .map(|r| format::clean(r))
            .collect::<Vec<_>>()
            .join(", "),
        dial.endpoint,
        format::clean(&login.name),
        login.hello.connection_id
    ));
    let interval = link::keepalive_interval(login.hello.idle_timeout_ms);
    let link = Arc::new(Link::new(
        dial,
        args.global.reconnect,
        Arc::clone(&out),
        rooms,
    ));
    let (end_sender, ends) = crossbeam_channel::bounded::<End>(2);
    let count = subscribe.count;
    let format = args.format();
    let mut received = 0u64;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = Arc::clone(&counter);
    let watched = Arc::clone(&link);
    let handler = move |event: Event| match event {
        Event::Message(_) | Event::Gap(_) | Event::Direct(_) => {
            if count.is_some_and(|n| received >= n) {
                return;
            }
            if out.delivery(format, &event) != Shown::Message {
                return;
            }
            received += 1;
            seen.store(received, std::sync::atomic::Ordering::SeqCst);
            if count == Some(received) {
                let _ = end_sender.try_send(End::Counted);
            }
        }
        Event::Error(error) if !error.fatal => out.error(&format::clean(&error.to_string())),
        Event::Disconnected(_) if watched.state() == State::Gone => {
            let _ = end_sender.try_send(End::Gone);
        }
        _ => {}
    };
    let (stop_threads, stop) = crossbeam_channel::bounded::<()>(0);
    let events = link::spawn(Arc::clone(&link), login, stop.clone(), handler)
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot start a thread: {e}")))?;
    let keepalive = link::spawn_keepalive(Arc::clone(&link), interval, stop)
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot start a thread: {e}")))?;
    let timer = match deadline {
        Some(at) => crossbeam_channel::at(at),
        None => crossbeam_channel::never(),
    };
    let exit = if count == Some(0) {
        Exit::Ok
    } else {
        select! {
            recv(ends) -> end => match end {
                Ok(End::Counted) => Exit::Ok,
                Ok(End::Gone) | Err(_) => link.gone_with(),
            },
            recv(timer) -> _ => match count {
                Some(n) => {
                    let got = counter.load(std::sync::atomic::Ordering::SeqCst);
                    link.out.error(&format!(
                        "timed out with {got} of {n} messages"
                    ));
                    Exit::Timeout
                }
                None => Exit::Ok,
            },
        }
    };
    link.stop();
    drop(stop_threads);
    let _ = keepalive.join();
    let _ = events.join();
    Ok(exit)
}
