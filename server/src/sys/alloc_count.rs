//! A counting global allocator for the unit tests, so a test can prove that
//! a hot path allocates nothing. It counts per thread, so tests running in
//! parallel in the same binary do not disturb each other's counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // Const-initialised and without a destructor: touching it never
    // allocates, which matters inside an allocator.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged, only
// counting allocations in a thread-local cell.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `alloc`'s contract; passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `job` and returns how many allocations it made on this thread.
pub(crate) fn allocations_in(job: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    job();
    ALLOCATIONS.with(Cell::get) - before
}
