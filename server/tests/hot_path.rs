//! The broadcast hot path does not scale its allocations with the room: a
//! batch for 100 members is queued 100 times by reference, never copied.

#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use server::counters::Counters;
use server::peer::{Batch, Peer, QueueLimits};
use server::rooms::Rooms;

struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[test]
fn broadcasting_to_a_hundred_members_allocates_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Counters::default();
    let rooms = Rooms::default();
    let mut receivers = Vec::new();
    let mut sockets = Vec::new();
    for id in 0..100 {
        let client = TcpStream::connect(addr).unwrap();
        let (server_side, peer_addr) = listener.accept().unwrap();
        let limits = QueueLimits {
            items: 64,
            bytes: 1 << 20,
        };
        let (peer, rx) = Peer::new(id, peer_addr, server_side, limits);
        rooms.join("room", &peer, &counters);
        receivers.push(rx);
        sockets.push(client);
    }
    let batch = Arc::new(Batch {
        bytes: vec![0u8; 4096],
        frames: 30,
    });
    let before = ALLOCATIONS.load(Relaxed);
    for _ in 0..10 {
        rooms.broadcast(
            "room",
            &batch,
            Some(0),
            Duration::from_millis(10),
            &counters,
        );
    }
    let allocations = ALLOCATIONS.load(Relaxed) - before;
    assert_eq!(
        allocations, 0,
        "10 broadcasts to 100 members allocated {allocations} times"
    );
    // Every member but the skipped one has ten references to the same bytes.
    assert_eq!(Arc::strong_count(&batch), 1 + 99 * 10);
    assert_eq!(receivers[0].len(), 0);
    assert!(receivers[1..].iter().all(|rx| rx.len() == 10));
}
