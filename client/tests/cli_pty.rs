//! The interactive chat under a pseudo-terminal (portable-pty): the prompt,
//! `/join`, a plain line sent as a message, Ctrl-C's hint and the second
//! Ctrl-C that quits, and a line typed after the connection is gone. Every
//! wait is on output, bounded by [`WAIT`].

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use portable_pty::{Child, CommandBuilder, PtySize, native_pty_system};
use testkit::{WAIT, start_server};

mod support;

use support::{expect_event, login};

/// The CLI on a terminal of its own.
struct Terminal {
    child: Box<dyn Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    chunks: Receiver<Vec<u8>>,
    /// Everything printed so far, escape sequences removed.
    screen: String,
    /// How much of `screen` the expectations have passed over.
    read_to: usize,
}

impl Terminal {
    fn start(addr: SocketAddr, extra: &[&str]) -> Terminal {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 40,
                cols: 200,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pseudo-terminal");
        let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_relay"));
        command.arg(addr.ip().to_string());
        command.arg(addr.port().to_string());
        command.args(extra);
        command.env("TERM", "xterm");
        command.env("NO_COLOR", "1");
        // No history file from a test.
        command.env_remove("HOME");
        command.env_remove("XDG_DATA_HOME");
        command.env_remove("RELAY_TOKEN");
        let child = pty.slave.spawn_command(command).expect("start the client");
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().expect("pty reader");
        let writer = pty.master.take_writer().expect("pty writer");
        let (sender, chunks) = crossbeam_channel::unbounded();
        thread::spawn(move || {
            // Keeps the master open as long as the reader runs.
            let _master = pty.master;
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sender.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Terminal {
            child,
            writer,
            chunks,
            screen: String::new(),
            read_to: 0,
        }
    }

    fn keys(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).expect("type");
        self.writer.flush().expect("flush");
    }

    /// Waits until `needle` is printed (after what earlier expectations
    /// matched).
    fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(at) = self.screen[self.read_to..].find(needle) {
                self.read_to += at + needle.len();
                return;
            }
            match self.chunks.recv_deadline(deadline) {
                Ok(chunk) => self.screen.push_str(&strip_escapes(&chunk)),
                Err(_) => panic!("{needle:?} never appeared; the screen:\n{}", self.screen),
            }
        }
    }

    /// Waits for the exit; its code.
    fn exit_code(&mut self) -> u32 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.exit_code();
            }
            assert!(
                Instant::now() < deadline,
                "the client did not exit; the screen:\n{}",
                self.screen
            );
            // Drain the output so the client never blocks on a full pty.
            if let Ok(chunk) = self.chunks.recv_timeout(Duration::from_millis(20)) {
                self.screen.push_str(&strip_escapes(&chunk));
            }
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The text without ANSI escape sequences (CSI ... letter) and carriage
/// returns, so expectations read like the screen.
fn strip_escapes(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() || c == '~' {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn join_a_room_and_send_a_plain_line() {
    let server = start_server();
    let addr = server.local_addr();
    let peer = login(addr, "peer");
    peer.join_and_wait("den", WAIT).expect("join");
    let mut term = Terminal::start(addr, &["--name", "tty"]);
    term.expect("type /help for commands");
    term.expect("relay> ");
    term.keys("/join den\r");
    term.expect("joined den (1 other member)");
    term.expect("relay:den> ");
    term.keys("join us at 5 for lunch\r");
    let text = expect_event(&peer, "the typed line", |event| match event {
        client::Event::Message(message) => message.body.as_text(),
        _ => None,
    });
    assert_eq!(text, "join us at 5 for lunch");
    term.expect("sent as a message: commands start with /");
    // What the peer says appears above the prompt.
    peer.send_text("den", "hello tty").expect("send");
    term.expect("[den] peer (");
    term.expect("): hello tty");
    term.keys("/quit\r");
    assert_eq!(term.exit_code(), 0);
}

#[test]
fn ctrl_c_hints_first_and_quits_the_second_time() {
    let server = start_server();
    let mut term = Terminal::start(server.local_addr(), &["--name", "cc"]);
    term.expect("relay> ");
    term.keys("\x03");
    term.expect("press Ctrl-C again to quit");
    // The next prompt: the line editor has the terminal again (raw, so the
    // key is read, not turned into SIGINT).
    term.expect("relay> ");
    term.keys("\x03");
    assert_eq!(term.exit_code(), 0);
}

#[test]
fn a_line_typed_after_the_loss_is_reported_not_sent() {
    let server = start_server();
    let mut term = Terminal::start(server.local_addr(), &["--name", "late"]);
    term.expect("relay> ");
    term.keys("/join r\r");
    term.expect("relay:r> ");
    server.shutdown();
    term.expect("(press Enter to exit)");
    term.keys("are you there?\r");
    term.expect("not sent: the connection is gone");
    assert_eq!(term.exit_code(), 5);
}
