//! Servers run as child processes (Relay, Redis, NATS): the last lines they
//! wrote, for error messages, and stopping them.

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines kept of a child's output.
const KEPT: usize = 20;

/// The last lines a child wrote.
#[derive(Debug, Clone, Default)]
pub struct LogTail(Arc<Mutex<Vec<String>>>, Arc<AtomicBool>);

impl LogTail {
    /// Keeps the last lines of `output`, read on a thread of its own until
    /// the child closes it.
    pub fn follow(&self, output: impl Read + Send + 'static) {
        let tail = Arc::clone(&self.0);
        let ended = Arc::clone(&self.1);
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(|l| l.ok()) {
                if let Ok(mut tail) = tail.lock() {
                    if tail.len() >= KEPT {
                        tail.remove(0);
                    }
                    tail.push(line);
                }
            }
            ended.store(true, Ordering::Release);
        });
    }

    /// The kept lines of a child that has exited: waits (a second at
    /// most) for the last of its output to be read, which a child that
    /// failed at once has often not been yet.
    pub fn text_after_exit(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.1.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.text()
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
