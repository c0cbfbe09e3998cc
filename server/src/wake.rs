//! Waking a reader thread that is blocked waiting for its client.
//!
//! When another thread closes a connection (a slow-consumer cut, shutdown),
//! the reader must stop waiting for input and take the connection out of its
//! rooms at once. `shutdown(Read)` would wake it, but it also makes Linux
//! answer any later input from the client with a reset, which destroys the
//! queued messages and the final ERROR still in flight. So the reader is
//! woken with a signal instead: SIGURG (ignored by default, and unused here
//! since no socket asks for out-of-band signals) with a handler that does
//! nothing, so the wait returns `EINTR`.
//!
//! The signal stays blocked in reader threads except inside `ppoll`, which
//! unblocks it atomically: a wake-up sent just before the reader starts to
//! wait stays pending and ends that wait at once, so none is lost.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Once;
use std::time::Duration;

const WAKE_SIGNAL: libc::c_int = libc::SIGURG;

extern "C" fn ignore(_: libc::c_int) {}

/// Installs the do-nothing handler, once per process.
pub fn install_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: the action is fully initialised; the handler is
        // async-signal-safe (it does nothing).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            // No SA_RESTART: the interrupted wait must return.
            action.sa_flags = 0;
            libc::sigaction(WAKE_SIGNAL, &action, std::ptr::null_mut());
        }
    });
}

/// Blocks the wake signal in the calling thread; returns the mask to wait
/// with (the thread's mask without it).
pub fn block_in_this_thread() -> libc::sigset_t {
    // SAFETY: both sets are initialised by libc before use.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, WAKE_SIGNAL);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        libc::sigdelset(&mut old, WAKE_SIGNAL);
        old
    }
}

/// The calling thread, for [`wake`].
pub fn current() -> libc::pthread_t {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() }
}

/// Interrupts `thread`'s wait. The caller must know the thread is alive.
pub fn wake(thread: libc::pthread_t) {
    // SAFETY: the caller guarantees `thread` has not exited.
    unsafe {
        libc::pthread_kill(thread, WAKE_SIGNAL);
    }
}

/// Waits until `stream` has input (or end of stream), the timeout passes, or
/// the thread is woken. Returns whether input is ready; `Interrupted` when
/// woken.
pub fn wait_readable(
    stream: &impl AsRawFd,
    timeout: Duration,
    mask: &libc::sigset_t,
) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `poll`, `timeout` and `mask` are valid for the call.
    let rc = unsafe { libc::ppoll(&mut poll, 1, &timeout, mask) };
    match rc {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(false),
        _ => Ok(true),
    }
}
