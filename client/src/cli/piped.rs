//! The front end for scripts: standard input is not a terminal.
//!
//! Lines are read on a thread of their own so that a lost connection ends the
//! run even while the script is silent. At the end of the input (or `quit`),
//! the session waits until the server has answered everything sent, so every
//! reply is printed before the exit.

use std::io::BufRead;
use std::thread;

use crossbeam_channel::select;

use client::Event;

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
        session.out.line(
            &session
                .style
                .error(&format!("cannot read standard input: {error}")),
        );
        return session.sync();
    }
    loop {
        select! {
            recv(lines) -> line => match line {
                Ok(line) => match session.execute(&line) {
                    Flow::Continue => {}
                    Flow::Quit => break,
                    Flow::Lost => return Flow::Lost,
                },
                Err(_) => break,
            },
            recv(session.replies) -> event => match event {
                Ok(Event::Disconnected(_)) | Err(_) => return Flow::Lost,
                // Unasked answers (errors for messages) were printed already.
                Ok(_) => {}
            },
        }
    }
    session.sync()
}
