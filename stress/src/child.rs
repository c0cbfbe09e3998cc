//! Servers run as child processes (Relay, Redis, NATS): the last lines they
//! wrote, for error messages, and stopping them.

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines kept of a child's output.
const KEPT: usize = 20;

/// The last lines a child wrote.
#[derive(Debug, Clone, Default)]
pub struct LogTail(Arc<Mutex<Vec<String>>>);

impl LogTail {
    /// Keeps the last lines of `output`, read on a thread of its own until
    /// the child closes it.
    pub fn follow(&self, output: impl Read + Send + 'static) {
        let tail = Arc::clone(&self.0);
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(|l| l.ok()) {
                if let Ok(mut tail) = tail.lock() {
                    if tail.len() >= KEPT {
                        tail.remove(0);
                    }
                    tail.push(line);
                }
            }
        });
    }

    /// The kept lines, one per line.
    pub fn text(&self) -> String {
        self.0.lock().map(|t| t.join("\n")).unwrap_or_default()
    }
}

/// SIGTERM, then SIGKILL if the child has not exited after 10 s.
pub fn stop(child: &mut Child) {
    let _ = crate::sys::terminate(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
