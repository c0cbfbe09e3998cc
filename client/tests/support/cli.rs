//! The `relay` binary driven through pipes: one-shot scripts and a live
//! session fed line by line, with every wait bounded by [`WAIT`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use testkit::WAIT;

pub fn cli(addr: SocketAddr, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay"));
    command
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .args(extra)
        .env_remove("RELAY_SERVER")
        .env_remove("RELAY_TOKEN")
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The CLI with a subcommand: `relay -s ADDR ARGS...`.
pub fn relay(addr: SocketAddr, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay"));
    command
        .arg("-s")
        .arg(addr.to_string())
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("RELAY_SERVER")
        .env_remove("RELAY_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `command` with `input` on standard input; returns status, stdout,
/// stderr.
pub fn run_with_input(mut command: Command, input: &[u8]) -> (ExitStatus, String, String) {
    let mut child = command.spawn().expect("start the client binary");
    let mut stdin = child.stdin.take().expect("stdin");
    // The client may already have exited: a broken pipe is fine.
    let _ = stdin.write_all(input);
    drop(stdin);
    finish(&mut child)
}

/// Waits for the child to exit; returns status, stdout, stderr.
pub fn finish(child: &mut Child) -> (ExitStatus, String, String) {
    let status = wait_exit(child);
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    (status, out, err)
}

/// Runs the CLI with `input` on standard input; returns status, stdout, stderr.
pub fn run_script(addr: SocketAddr, extra: &[&str], input: &str) -> (ExitStatus, String, String) {
    run_with_input(cli(addr, extra), input.as_bytes())
}

/// Waits for the process to end, killing it (and failing) after [`WAIT`].
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the client did not exit within {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A CLI kept running, fed line by line, with its output read as it comes:
/// standard output's lines as they are, standard error's with `[stderr] `
/// before them, in one stream.
pub struct Live {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

/// What marks a line of standard error in [`Live`]'s stream.
pub const STDERR: &str = "[stderr] ";

impl Live {
    pub fn start(addr: SocketAddr, extra: &[&str]) -> Live {
        Live::spawn(cli(addr, extra))
    }

    pub fn spawn(mut command: Command) -> Live {
        let mut child = command.spawn().expect("start the client binary");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, lines) = crossbeam_channel::unbounded();
        let err_sender = sender.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if err_sender.send(format!("{STDERR}{line}")).is_err() {
                    break;
                }
            }
        });
        Live {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to the client");
        stdin.flush().expect("flush");
    }

    /// Waits for an output line containing `needle`; returns it.
    pub fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.lines.recv_deadline(deadline) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "no line containing {needle:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits until each of `needles` has been printed, in any order (from
    /// now on): standard output and standard error are read apart, so lines
    /// on the two are not ordered. Returns the lines found, in the order of
    /// `needles`.
    pub fn expect_each(&mut self, needles: &[&str]) -> Vec<String> {
        let start = self.seen.len();
        let deadline = Instant::now() + WAIT;
        loop {
            let found: Vec<Option<String>> = needles
                .iter()
                .map(|needle| {
                    self.seen[start..]
                        .iter()
                        .find(|line| line.contains(needle))
                        .cloned()
                })
                .collect();
            if found.iter().all(Option::is_some) {
                return found.into_iter().flatten().collect();
            }
            match self.lines.recv_deadline(deadline) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "not all of {needles:?} were printed; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The next output line; fails the test if none comes within [`WAIT`].
    pub fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                panic!("no further line; output so far:\n{}", self.seen.join("\n"))
            }
        }
    }

    /// Fails if a line containing `needle` appears within `quiet`.
    pub fn expect_none(&mut self, needle: &str, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        while let Ok(line) = self.lines.recv_deadline(deadline) {
            assert!(!line.contains(needle), "unexpected line {line:?}");
            self.seen.push(line);
        }
    }

    /// Closes standard input and waits for the exit.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>) {
        drop(self.stdin.take());
        let status = wait_exit(&mut self.child);
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            self.seen.push(line);
        }
        (status, std::mem::take(&mut self.seen))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // A failed test must not leave the process behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
