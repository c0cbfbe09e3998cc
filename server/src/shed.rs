//! What the server does past its memory budget: cut the connections that
//! hold the most until usage is back to the low-water mark.
//!
//! A connection's weight is what it makes the server hold: bytes queued for
//! it and its read buffer. The heaviest is, in practice, a client that does
//! not read what it is sent: one that sends three 1 MiB HEARTBEATs and
//! never reads leaves 3.3 MB queued without ever being a slow consumer, and
//! 800 of them held 2.14 GB. Each is closed with OVERLOADED and its socket
//! cut at once: its queue is what the server must give back, and waiting
//! for a client that does not read to take a final ERROR would keep it for
//! the write timeout. The ERROR goes out only if the socket takes it
//! without waiting (a client sending a huge frame slowly gets it; one that
//! reads nothing cannot, and is reset, which frees the kernel's buffers
//! for it too). Runs on the housekeeping thread, off the hot path,
//! woken the moment usage crosses the budget.

use std::sync::Arc;

use protocol::ErrorCode;

use crate::conn::close::CloseReason;
use crate::conn::outbound::Batch;
use crate::conn::peer::Peer;
use crate::logging::{CONNECTIONS, throttled};
use crate::shared::Shared;

/// If the server is over its memory budget, cuts the heaviest connections
/// until what is left is at most the low-water mark; returns how many it
/// cut.
pub(crate) fn shed(shared: &Shared) -> usize {
    let memory = &shared.counters.memory;
    if !memory.recheck() {
        return 0;
    }
    let mut peers: Vec<(usize, Arc<Peer>)> = shared
        .peers()
        .into_iter()
        .map(|peer| (peer.held_bytes(), peer))
        .filter(|&(held, _)| held > 0)
        .collect();
    peers.sort_unstable_by_key(|&(held, _)| std::cmp::Reverse(held));
    // What usage will be once the connections cut are gone: their bytes
    // leave the budget as their threads end, a moment later.
    let mut projected = memory.used();
    let mut cut = 0;
    for (held, peer) in peers {
        if projected <= memory.low_water() {
            break;
        }
        projected = projected.saturating_sub(held as u64);
        // One already closing is on its way out; count it as gone.
        let outbound = &peer.outbound;
        if outbound.is_closing() {
            continue;
        }
        // The output first: once the close is recorded the writer would
        // end it without the ERROR.
        let reason = CloseReason::Overloaded { held_bytes: held };
        let last = reason
            .code()
            .zip(reason.standard_message())
            .map(|(code, message)| Arc::new(Batch::error(code, message)));
        let told = outbound.output().shed(&**outbound, &shared.counters, last);
        if told {
            shared.counters.error_sent(ErrorCode::Overloaded);
        }
        if outbound.close(reason) {
            // Told: close, so the ERROR reaches it. Not told, its socket
            // is full: reset, so what the kernel holds for it goes too.
            if told {
                peer.cut();
            } else {
                peer.abort();
            }
            cut += 1;
            // One line per connection, many connections at once: the
            // summary after it says how many.
            throttled!(
                CONNECTIONS,
                WARN,
                "c{}: cut with OVERLOADED, holding {held} bytes ({} of the {}-byte memory budget in use)",
                peer.id(),
                memory.used(),
                memory.limit()
            );
        }
    }
    if cut > 0 {
        tracing::warn!(
            "over the memory budget: cut {cut} connection(s); refusing new connections until usage is at most {} bytes",
            memory.low_water()
        );
    }
    cut
}
