//! Many clients on a few threads: non-blocking sockets driven by `mio`.
//!
//! The server under test already spends two threads per connection, so the
//! load and bench clients must not: each swarm thread owns a share of the
//! clients and one `mio::Poll`. A client connects, sends its greeting at
//! once (Relay: HELLO and JOIN_ROOMs back to back; Redis: SUBSCRIBE; NATS:
//! CONNECT, SUBs and PING, see [`crate::peer::dialect`]), and once answered
//! either only reads (a subscriber) or also publishes on a schedule (load,
//! rooms).
//!
//! Reading allocates nothing per message: every thread reads into one large
//! buffer, splits it into messages with the system's parser (which borrows
//! the payloads), reads only the fixed-width fields of the content
//! ([`content`] layout), and keeps only an incomplete trailing message per
//! client. Member events and other rare frames get a full parse.
//!
//! - `content.rs`: the fixed layout of the content, and finding it in a
//!   delivery without parsing JSON;
//! - `plan.rs`: what the swarm is asked to do;
//! - `totals.rs`: what it counts, live and in the end;
//! - `worker.rs`: one thread's clients on one poll;
//! - here: starting the threads, the phases, and collecting the totals.

pub mod content;
mod plan;
mod totals;
mod worker;

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::sys::now_ns;

pub use plan::{Plan, PublishPlan};
use totals::{DRAINING, EXIT, RUNNING};
pub use totals::{Live, Totals};
use worker::Worker;

/// A running swarm.
#[derive(Debug)]
pub struct Swarm {
    pub live: Arc<Live>,
    threads: Vec<JoinHandle<Totals>>,
    clients: usize,
}

impl Swarm {
    /// Starts the threads; they connect and join at once.
    pub fn start(plan: &Plan) -> io::Result<Swarm> {
        let live = Arc::new(Live::new(plan.rooms()));
        let threads = plan.threads.clamp(1, plan.clients.max(1));
        let handles = (0..threads)
            .map(|t| {
                let plan = plan.clone();
                let live = Arc::clone(&live);
                let mine: Vec<usize> = (t..plan.clients).step_by(threads).collect();
                let worker = Worker::new(plan, live, mine)?;
                thread::Builder::new()
                    .name(format!("swarm-{t}"))
                    .spawn(move || worker.run())
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Swarm {
            live,
            threads: handles,
            clients: plan.clients,
        })
    }

    /// Waits until every client joined or gave up, or `timeout`; calls
    /// `tick` now and then. Returns whether all joined.
    pub fn wait_joined(&self, timeout: Duration, mut tick: impl FnMut(usize, usize)) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let joined = self.live.joined.load(Ordering::Acquire);
            let failed = self.live.failed.load(Ordering::Acquire);
            if joined + failed >= self.clients {
                return failed == 0;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tick(joined, failed);
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts publishing (for plans that publish); returns the start time.
    pub fn start_publishing(&self) -> u64 {
        let start = now_ns();
        self.live.run_start_ns.store(start, Ordering::Release);
        self.live.phase.store(RUNNING, Ordering::Release);
        start
    }

    /// Stops publishing; clients go on reading.
    pub fn stop_publishing(&self) {
        self.live.phase.store(DRAINING, Ordering::Release);
    }

    /// Closes every client and returns the merged figures.
    pub fn finish(self) -> Totals {
        self.live.phase.store(EXIT, Ordering::Release);
        let mut totals = Totals::default();
        for handle in self.threads {
            if let Ok(t) = handle.join() {
                totals.merge(t);
            }
        }
        totals
    }
}
