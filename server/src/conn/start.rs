//! Starting a connection's two threads, and what happens when the system
//! has no thread to give.

use std::net::SocketAddr;
use std::sync::Arc;

use protocol::ErrorCode;

use super::close::CloseReason;
use super::outbound::{Outbound, QueueLimits};
use super::peer::Peer;
use super::reader;
use super::teardown;
use super::transport::{ReadHalf, Transport};
use super::writer::Writer;
use crate::logging::{CONNECTIONS, REFUSALS, throttled};
use crate::per_address::Slot;
use crate::shared::Shared;
use crate::sys::pool::Pool;
use crate::sys::thread::{Closure, Job};

/// Reader threads: stacks big enough for serde_json at its nesting limit.
static READERS: Pool = Pool::new(256 * 1024);
/// Writer threads, which only move bytes.
static WRITERS: Pool = Pool::new(64 * 1024);

impl Job for Writer {
    fn run(self) {
        Writer::run(self);
    }
}

/// Starts serving connection `id` from `addr` over `transport`, counted
/// against its address by `slot`: registers it and starts its writer and reader threads. When a thread cannot be
/// started the client is told SERVER_FULL and the connection ends.
pub(crate) fn start<T: Transport>(
    shared: &Arc<Shared>,
    transport: T,
    id: u64,
    addr: SocketAddr,
    slot: Slot,
) {
    let config = &shared.config;
    let (outbound, _rx) = Outbound::accounted(
        id,
        QueueLimits {
            items: config.queue_items,
            bytes: config.queue_bytes,
        },
        Arc::clone(&shared.counters.memory),
    );
    let (mut read, write, cut) = transport.split();
    {
        let outbound = Arc::clone(&outbound);
        read.set_writer_wake(Arc::new(move || outbound.bell().ring()));
    }
    outbound.output().attach(
        Box::new(write),
        config.write_timeout,
        &shared.counters.memory,
    );
    let peer = Arc::new(Peer::new(outbound, addr, cut, slot, (T::TLS, T::NAME)));
    shared.register(&peer);
    let counters = &shared.counters;
    let live = counters
        .connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    shared.admitted(live);
    counters
        .connections_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _span = peer.span.enter();
    throttled!(CONNECTIONS, INFO, "c{id}: connected from {addr}");

    let writer = Writer {
        shared: Arc::clone(shared),
        peer: Arc::clone(&peer),
    };
    if let Err((error, _)) = WRITERS.spawn(writer) {
        throttled!(
            REFUSALS,
            WARN,
            "c{id}: no writer thread ({error}); sending SERVER_FULL"
        );
        refuse_without_threads(shared, &peer);
        return;
    }
    let reader = {
        let (shared, peer) = (Arc::clone(shared), Arc::clone(&peer));
        Closure(move || reader::run(shared, peer, read))
    };
    if let Err((error, _)) = READERS.spawn(reader) {
        // The writer runs: it sends the SERVER_FULL and ends the connection.
        throttled!(
            REFUSALS,
            WARN,
            "c{id}: no reader thread ({error}); sending SERVER_FULL"
        );
        peer.outbound.close(CloseReason::ServerFull);
        teardown::thread_finished(shared, &peer);
    }
}

/// Neither thread runs: say SERVER_FULL on this thread, and close.
fn refuse_without_threads(shared: &Shared, peer: &Arc<Peer>) {
    let outbound = &peer.outbound;
    outbound.close(CloseReason::ServerFull);
    if outbound
        .output()
        .finish(&**outbound, &shared.counters, outbound.final_error())
    {
        shared.counters.error_sent(ErrorCode::ServerFull);
    }
    teardown::thread_finished(shared, peer);
    teardown::thread_finished(shared, peer);
}
