//! The front end for scripts: standard input is not a terminal. Each line
//! is a `/command` or a message, as typed in the chat.
//!
//! Lines are read on a thread of their own so that a lost connection ends the
//! run even while the script is silent. At the end of the input (or
//! `/quit`), the session waits until the server has answered everything
//! sent, so every reply is printed before the exit. A line read while the
//! connection is being re-established (`--reconnect`) waits for it; one read
//! after the connection is gone for good ends the run, and is reported as not
//! sent.

use std::io::BufRead;
use std::thread;

use crossbeam_channel::select;

use client::Event;

use super::link::State;
use super::session::{Flow, Session};

pub fn run(session: &mut Session) -> Flow {
    let (line_sender, lines) = crossbeam_channel::bounded::<String>(16);
    let reader = thread::Builder::new()
        .name("relay-cli-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match stdin.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).to_owned();
                        if line_sender.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    if let Err(error) = reader {
        session
            .out
            .error(&format!("cannot read standard input: {error}"));
        return session.sync();
    }
    loop {
        select! {
            recv(lines) -> line => match line {
                Ok(line) => match session.execute(&line) {
                    Flow::Continue => {}
                    Flow::Quit => break,
                    Flow::Lost => return lost(session, &lines),
                },
                Err(_) => break,
            },
            recv(session.replies) -> event => match event {
                Ok(Event::Disconnected(_)) | Err(_) => {
                    if session.link.state() == State::Gone {
                        return lost(session, &lines);
                    }
                }
                // Unasked answers (errors for messages) were printed already.
                Ok(_) => {}
            },
        }
    }
    session.sync()
}

/// The connection is gone for good: says how many lines already read from
/// the script were not sent, so none vanishes silently.
fn lost(session: &Session, lines: &crossbeam_channel::Receiver<String>) -> Flow {
    let unsent = lines.try_iter().filter(|l| !l.trim().is_empty()).count();
    if unsent > 0 {
        session.out.error(&format!(
            "{unsent} more line(s) of input were not sent: the connection is gone"
        ));
    }
    Flow::Lost
}
