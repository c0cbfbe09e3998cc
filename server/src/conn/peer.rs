//! A connection as the server's registry sees it: its outbound side, where
//! it comes from, how to cut it, and what its two threads report as they
//! end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;

use super::outbound::Outbound;
use super::transport::Cut;
use crate::per_address::Slot;

#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) outbound: Arc<Outbound>,
    pub(crate) addr: SocketAddr,
    cut: Arc<dyn Cut>,
    /// Reader and writer threads still running; the last one out closes.
    threads_left: AtomicU8,
    /// Bytes read, stored after each read (for `/connz`) and at the end
    /// (for the disconnect log).
    pub(crate) bytes_in: AtomicU64,
    /// Frames handled, stored after each read, for `/connz`.
    pub(crate) frames_in: AtomicU64,
    /// Bytes written, stored by the writer as it ends, for the disconnect
    /// log (`/connz` reads the output's live count).
    pub(crate) bytes_out: AtomicU64,
    /// Set once the writer has written its last byte, so the reader knows
    /// when to stop lingering.
    writer_done: AtomicBool,
    /// Its place in the per-address count, given back when the connection
    /// closes.
    slot: Mutex<Slot>,
    /// Who the client's verified certificate names (mutual TLS), known once
    /// the reader has finished the handshake; see `tls::identity`.
    client_identity: OnceLock<Arc<str>>,
    /// Bytes of the reader's buffer (a frame partly received, mostly), as
    /// charged to the memory budget; for choosing whom to shed.
    pub(crate) read_buffer: AtomicUsize,
    /// Entered by both threads, so every line about this connection
    /// carries its id, address and (after HELLO) user.
    pub(crate) span: tracing::Span,
    /// When it was admitted, and whether over TLS: for `/connz`.
    pub(crate) started: Instant,
    pub(crate) tls: bool,
    /// `tcp`, `tls`, `ws` or `wss`, for `/connz`.
    pub(crate) transport: &'static str,
}

impl Peer {
    pub(crate) fn new(
        outbound: Arc<Outbound>,
        addr: SocketAddr,
        cut: Arc<dyn Cut>,
        slot: Slot,
        (tls, transport): (bool, &'static str),
    ) -> Peer {
        let span = tracing::info_span!(
            parent: None,
            "conn",
            conn = outbound.id(),
            %addr,
            user = tracing::field::Empty
        );
        Peer {
            outbound,
            addr,
            cut,
            threads_left: AtomicU8::new(2),
            bytes_in: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            writer_done: AtomicBool::new(false),
            slot: Mutex::new(slot),
            client_identity: OnceLock::new(),
            read_buffer: AtomicUsize::new(0),
            span,
            started: Instant::now(),
            tls,
            transport,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.outbound.id()
    }

    /// Ends the connection in both directions at once.
    pub(crate) fn cut(&self) {
        self.cut.cut();
    }

    /// Ends the connection and throws away what the kernel still holds for
    /// the client: it was given up on (it stopped reading, or read too
    /// slowly to take its final ERROR in time), and its backlog must not
    /// outlive the connection.
    pub(crate) fn abort(&self) {
        self.cut.abort();
    }

    /// Records that one of the two threads has ended; true for the last.
    pub(crate) fn thread_ended(&self) -> bool {
        self.threads_left.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Stops counting the connection against its address.
    pub(crate) fn release_slot(&self) {
        self.slot.lock().release();
    }

    pub(crate) fn set_writer_done(&self) {
        self.writer_done.store(true, Ordering::Release);
    }

    /// Who the client's certificate names, once the TLS handshake is done;
    /// `None` on plain TCP, without mutual TLS, or for a certificate that
    /// names nobody.
    #[allow(dead_code)] // For the session's authentication, which comes next.
    pub(crate) fn client_identity(&self) -> Option<&Arc<str>> {
        self.client_identity.get()
    }

    pub(crate) fn set_client_identity(&self, identity: Arc<str>) {
        let _ = self.client_identity.set(identity);
    }

    pub(crate) fn writer_done(&self) -> bool {
        self.writer_done.load(Ordering::Acquire)
    }

    /// What this connection makes the server hold now: bytes queued for
    /// it and its read buffer.
    pub(crate) fn held_bytes(&self) -> usize {
        self.outbound.queued_bytes() + self.read_buffer.load(Ordering::Relaxed)
    }
}
