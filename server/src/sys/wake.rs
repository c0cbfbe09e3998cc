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
//!
//! Signalling a thread that has exited is undefined behaviour, so the only
//! way to become wakeable is [`Wakeable::run_registered`], which unregisters
//! the thread before it returns (also when the closure panics), and
//! [`Wakeable::wake`] signals under the same lock. No caller has to promise
//! anything about the thread's life.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Once;
use std::time::Duration;

use parking_lot::Mutex;

const WAKE_SIGNAL: libc::c_int = libc::SIGURG;

extern "C" fn ignore(_: libc::c_int) {}

/// Installs the do-nothing handler, once per process.
fn install_handler() {
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

/// The signal mask a registered thread waits with: its own mask without the
/// wake signal. Only [`Wakeable::run_registered`] makes one.
#[derive(Clone, Copy)]
pub(crate) struct WaitMask(libc::sigset_t);

impl std::fmt::Debug for WaitMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WaitMask")
    }
}

/// A thread that other threads may interrupt while it waits for input.
#[derive(Debug, Default)]
pub(crate) struct Wakeable {
    /// The registered thread, present only while it is inside
    /// `run_registered`; the lock keeps it from leaving while signalled.
    thread: Mutex<Option<libc::pthread_t>>,
}

/// Unregisters on drop, so a panic in the closure unregisters too.
struct Registration<'a>(&'a Wakeable);

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        *self.0.thread.lock() = None;
    }
}

impl Wakeable {
    /// Runs `job` on the calling thread with the thread registered for
    /// [`Wakeable::wake`]; the mask it gets is what [`wait_readable`] needs.
    pub(crate) fn run_registered<R>(&self, job: impl FnOnce(&WaitMask) -> R) -> R {
        install_handler();
        let mask = block_in_this_thread();
        // SAFETY: pthread_self has no preconditions.
        *self.thread.lock() = Some(unsafe { libc::pthread_self() });
        let _registration = Registration(self);
        job(&mask)
    }

    /// Interrupts the registered thread's wait, if a thread is registered
    /// and it is not the caller.
    pub(crate) fn wake(&self) {
        let thread = self.thread.lock();
        if let Some(thread) = *thread {
            // SAFETY: pthread_self has no preconditions; `thread` is alive,
            // since it unregisters under this lock before it can exit.
            unsafe {
                if libc::pthread_equal(thread, libc::pthread_self()) == 0 {
                    libc::pthread_kill(thread, WAKE_SIGNAL);
                }
            }
        }
    }
}

/// Blocks the wake signal in the calling thread; returns the mask to wait
/// with (the thread's mask without it).
fn block_in_this_thread() -> WaitMask {
    // SAFETY: both sets are initialised by libc before use.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, WAKE_SIGNAL);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        libc::sigdelset(&mut old, WAKE_SIGNAL);
        WaitMask(old)
    }
}

/// Waits until `fd` has input (or end of stream), the timeout passes, or
/// the thread is woken. Returns whether input is ready; `Interrupted` when
/// woken.
pub(crate) fn wait_readable(
    fd: &impl AsRawFd,
    timeout: Duration,
    mask: &WaitMask,
) -> io::Result<bool> {
    wait_ready(fd, Interest::Read, timeout, Some(mask))
}

/// What a wait for a socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// Input (or the end of stream).
    Read,
    /// Room in the send buffer.
    Write,
    /// Either: a TLS handshake that has bytes to send and expects more.
    Both,
}

/// Waits until `fd` is ready for `interest` (an error or hang-up counts as
/// ready: the next call on it reports it), or the timeout passes. With a
/// `mask`, a wake-up of the calling registered thread ends the wait with
/// `Interrupted`; without, the thread's own mask stays (a thread that
/// blocks the wake signal then is not interrupted, as in a blocking read).
pub(crate) fn wait_ready(
    fd: &impl AsRawFd,
    interest: Interest,
    timeout: Duration,
    mask: Option<&WaitMask>,
) -> io::Result<bool> {
    let events = match interest {
        Interest::Read => libc::POLLIN | libc::POLLRDHUP,
        Interest::Write => libc::POLLOUT,
        Interest::Both => libc::POLLIN | libc::POLLRDHUP | libc::POLLOUT,
    };
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    let mask = mask.map_or(std::ptr::null(), |mask| &mask.0 as *const libc::sigset_t);
    // SAFETY: `poll` and `timeout` are valid for the call; the mask is
    // either null (keep the thread's mask) or a valid set.
    let rc = unsafe { libc::ppoll(&mut poll, 1, &timeout, mask) };
    match rc {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// Sleeps for `timeout` without looking at any socket, unless the thread
/// is woken first (`Interrupted`). A rate-limited reader pauses with this:
/// input keeps arriving and waits in the kernel, which pushes back on the
/// client, while a close from another thread still ends the pause at once.
pub(crate) fn pause(timeout: Duration, mask: &WaitMask) -> io::Result<()> {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: no descriptors (a null array of length 0); `timeout` and the
    // mask are valid for the call.
    let rc = unsafe { libc::ppoll(std::ptr::null_mut(), 0, &timeout, &mask.0) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_wake_ends_a_wait_and_a_wake_after_the_thread_left_is_harmless() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let wakeable = Arc::new(Wakeable::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let wakeable = Arc::clone(&wakeable);
            std::thread::spawn(move || {
                wakeable.run_registered(|mask| {
                    ready_tx.send(()).unwrap();
                    let started = Instant::now();
                    loop {
                        match wait_readable(&server_side, Duration::from_secs(30), mask) {
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => break true,
                            Ok(false) if started.elapsed() < Duration::from_secs(30) => {}
                            _ => break false,
                        }
                    }
                })
            })
        };
        ready_rx.recv().unwrap();
        wakeable.wake();
        assert!(thread.join().unwrap(), "the wait was not interrupted");
        // Nobody is registered now: waking is a no-op, not a signal to a
        // thread that no longer exists.
        wakeable.wake();
        assert!(wakeable.thread.lock().is_none());
    }
}
