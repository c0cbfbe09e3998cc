//! The Linux futex: sleep until a word changes, wake a sleeper. It is what
//! `std` and `parking_lot` park threads with; here it is used directly, so a
//! writer thread can sleep on its own queue's doorbell without the spinning
//! and `sched_yield` of a general-purpose blocking receive, and without a
//! per-thread handle to allocate.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `word` holds `expected`, until woken by [`wake_one`], the
/// timeout passes, or a signal arrives. Returns at once if `word` no longer
/// holds `expected`. Spurious returns are possible: callers re-check.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let timespec = timeout.map(|timeout| libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    });
    let timespec_ptr = timespec
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call;
    // FUTEX_WAIT only reads it; `timespec_ptr` is null or points to a live
    // timespec. The result (woken, timed out, changed value, interrupted) is
    // the same to the caller, which re-checks its condition.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            timespec_ptr,
        );
    }
}

/// Wakes one thread sleeping in [`wait`] on `word`, if any.
pub(crate) fn wake_one(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE does not access
    // memory through it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}
