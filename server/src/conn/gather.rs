//! Frames a reader thread produces while it handles one read, gathered into
//! as few shared batches as possible before they are queued.
//!
//! Consecutive frames for the same destination (this connection, or one room)
//! share one buffer, so a read holding 600 MESSAGEs for a room of 100 costs
//! one allocation and 100 queue pushes, not 60,000. The destination changing
//! flushes the batch, so every member still sees each publisher's frames in
//! the order they were published.

use std::sync::Arc;
use std::time::Instant;

use super::outbound::Batch;
use crate::rooms::Splice;

/// Where the frames being gathered go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Nothing gathered yet.
    Nowhere,
    /// Replies to this connection.
    Myself,
    /// A room's members, the publisher included only if `include_self`.
    Room { name: Arc<str>, include_self: bool },
}

#[derive(Debug)]
pub(crate) struct Outbox {
    pub(crate) target: Target,
    pub(crate) buf: Vec<u8>,
    pub(crate) frames: u32,
    /// Capacity to reserve for a new batch (from the size of the last read).
    pub(crate) hint: usize,
    /// Where each room message in `buf` takes its `seq` (room targets
    /// only); kept between batches, so it allocates only while it grows.
    pub(crate) splices: Vec<Splice>,
}

/// What the outbox gathered, taken.
#[derive(Debug)]
pub(crate) struct Gathered {
    pub(crate) target: Target,
    pub(crate) bytes: Vec<u8>,
    pub(crate) frames: u32,
    /// For a batch to be timed, when its read returned.
    pub(crate) read_at: Option<Instant>,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            target: Target::Nowhere,
            buf: Vec::new(),
            frames: 0,
            hint: 512,
            splices: Vec::new(),
        }
    }
}

impl Outbox {
    /// True if frames for `target` can be appended without a flush.
    pub(crate) fn is_for(&self, target: &Target) -> bool {
        self.frames == 0 || self.target == *target
    }

    /// Takes the gathered frames, leaving the outbox empty but for
    /// `splices`, which the caller clears once it has used them; a batch to
    /// be timed carries `read_at`.
    pub(crate) fn take(&mut self, read_at: Option<Instant>) -> Option<Gathered> {
        if self.frames == 0 {
            self.buf.clear();
            self.splices.clear();
            return None;
        }
        Some(Gathered {
            bytes: std::mem::take(&mut self.buf),
            frames: std::mem::take(&mut self.frames),
            target: std::mem::replace(&mut self.target, Target::Nowhere),
            read_at,
        })
    }

    /// Readies the buffer for frames to `target`; the caller flushed first if
    /// [`Outbox::is_for`] was false.
    pub(crate) fn start(&mut self, target: Target) {
        if self.frames == 0 {
            self.target = target;
            if self.buf.capacity() == 0 {
                self.buf.reserve(self.hint);
            }
        }
    }
}

impl Gathered {
    /// The frames as one batch, for a target that numbers nothing.
    pub(crate) fn batch(self) -> Arc<Batch> {
        Arc::new(Batch::new(self.bytes, self.read_at))
    }
}
