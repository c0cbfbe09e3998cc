//! Connection threads, kept for the next connection.
//!
//! Creating a thread (`clone`, a stack mapping, the kernel's task setup) and
//! ending one cost about a quarter of the server's CPU when clients connect
//! and leave quickly (measured with 20,000 connect-HELLO-JOIN-close cycles).
//! So a connection thread that finishes its job does not exit: it gives its
//! spare stack pages back and waits, up to [`IDLE_FOR`], to run the next
//! connection's job. At most [`MAX_IDLE`] threads wait per pool; the rest
//! exit, and so does any thread that waited [`IDLE_FOR`] in vain, so a
//! server that a crowd has left does not keep the crowd's threads.
//!
//! Idle threads count against the system's thread and memory-map limits:
//! two pools of at most 64 each stay inside what `limits` keeps in reserve.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::futex;
use super::thread::{Job, spawn, trim_stack};

/// Idle threads kept per pool, at most.
pub(crate) const MAX_IDLE: usize = 64;
/// How long an idle thread waits for a job before it exits.
pub(crate) const IDLE_FOR: Duration = Duration::from_secs(10);

type Task = Box<dyn FnOnce() + Send>;

/// Threads with stacks of one size.
#[derive(Debug)]
pub(crate) struct Pool {
    stack_size: usize,
    idle: Mutex<Vec<Arc<Slot>>>,
}

/// Where an idle thread waits for its next job.
#[derive(Default)]
struct Slot {
    task: Mutex<Option<Task>>,
    /// 0 while waiting; set to 1 when a task is handed over.
    bell: AtomicU32,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

/// A new thread's first job, after which it joins its pool.
struct First<F> {
    pool: &'static Pool,
    job: F,
}

impl<F: Job> Job for First<F> {
    fn run(self) {
        run_caught(move || self.job.run());
        self.pool.serve();
    }
}

fn run_caught(task: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)).is_err() {
        tracing::error!(
            "a connection thread panicked; that connection was dropped (this is a bug)"
        );
    }
}

impl Pool {
    pub(crate) const fn new(stack_size: usize) -> Pool {
        Pool {
            stack_size,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `job` on an idle thread of this pool, or on a new one. When no
    /// thread can be made, the job comes back with the error (see
    /// `thread::spawn`).
    pub(crate) fn spawn<F: Job>(&'static self, job: F) -> Result<(), (io::Error, F)> {
        let slot = self.idle.lock().pop();
        if let Some(slot) = slot {
            *slot.task.lock() = Some(Box::new(move || job.run()));
            slot.bell.store(1, Ordering::Release);
            futex::wake_one(&slot.bell);
            return Ok(());
        }
        spawn(self.stack_size, First { pool: self, job })
            .map_err(|(error, first)| (error, first.job))
    }

    /// Idle threads waiting now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().len()
    }

    /// A pooled thread's life after its first job.
    fn serve(&'static self) {
        let slot = Arc::new(Slot::default());
        loop {
            // An idle thread holds only the stack pages it needs to wait.
            trim_stack();
            slot.bell.store(0, Ordering::Relaxed);
            {
                let mut idle = self.idle.lock();
                if idle.len() >= MAX_IDLE {
                    return;
                }
                idle.push(Arc::clone(&slot));
            }
            let Some(task) = self.wait(&slot) else {
                return;
            };
            run_caught(task);
        }
    }

    /// Waits for a task; `None` when none came within [`IDLE_FOR`] and the
    /// thread has left the pool.
    fn wait(&self, slot: &Arc<Slot>) -> Option<Task> {
        let deadline = Instant::now() + IDLE_FOR;
        let mut leaving_possible = true;
        loop {
            if let Some(task) = slot.task.lock().take() {
                return Some(task);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if leaving_possible && left.is_zero() {
                let mut idle = self.idle.lock();
                if let Some(at) = idle.iter().position(|s| Arc::ptr_eq(s, slot)) {
                    idle.swap_remove(at);
                    return None;
                }
                // A spawner took this slot just now: its task is on the way.
                leaving_possible = false;
            }
            let timeout = leaving_possible.then_some(left);
            futex::wait(&slot.bell, 0, timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::sys::thread::Closure;

    static POOL: Pool = Pool::new(64 * 1024);

    fn thread_of_next_job() -> std::thread::ThreadId {
        let (tx, rx) = mpsc::channel();
        POOL.spawn(Closure(move || {
            tx.send(std::thread::current().id()).unwrap()
        }))
        .map_err(|(e, _)| e)
        .unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    fn wait_for_idle(n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while POOL.idle() < n {
            assert!(Instant::now() < deadline, "no thread became idle");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_finished_thread_runs_the_next_job() {
        let first = thread_of_next_job();
        wait_for_idle(1);
        let second = thread_of_next_job();
        assert_eq!(first, second, "the idle thread was not reused");
        // A panicking job does not take the thread with it.
        wait_for_idle(1);
        let (tx, rx) = mpsc::channel::<()>();
        POOL.spawn(Closure(move || {
            let _keep = tx;
            panic!("expected in this test");
        }))
        .map_err(|(e, _)| e)
        .unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(10)).is_err());
        wait_for_idle(1);
        assert_eq!(thread_of_next_job(), first);
    }
}
