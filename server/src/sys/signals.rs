//! Process signals as ordinary events: the binary blocks them in every
//! thread before it starts any, then one thread waits for them with
//! `sigwait`, so a signal becomes a plain function call (a shutdown, a TLS
//! reload) instead of code running inside a signal handler.

use std::fmt;

/// A signal the server acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C: the same drain as SIGTERM (an operator at a terminal
    /// presses it again to stop at once).
    Interrupt,
    /// `kill`, a service manager stopping the server: a lame-duck drain.
    Terminate,
    /// `kill -HUP`, a service manager's reload: reread the TLS files and
    /// the tokens file.
    Hangup,
}

impl Signal {
    /// The signal's number on this system.
    pub fn number(self) -> libc::c_int {
        match self {
            Signal::Interrupt => libc::SIGINT,
            Signal::Terminate => libc::SIGTERM,
            Signal::Hangup => libc::SIGHUP,
        }
    }

    const ALL: [Signal; 3] = [Signal::Interrupt, Signal::Terminate, Signal::Hangup];
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
            Signal::Hangup => "SIGHUP",
        })
    }
}

/// SIGINT, SIGTERM and SIGHUP, blocked in the calling thread and in every
/// thread it starts afterwards, and waited for with [`Signals::wait`].
#[derive(Clone, Copy)]
pub struct Signals {
    set: libc::sigset_t,
}

impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signals")
    }
}

impl Signals {
    /// Blocks the signals. Call it before starting any thread, so that
    /// every thread inherits the mask and none is killed by them.
    pub fn block() -> Signals {
        // SAFETY: the set is initialised by sigemptyset before use; masking
        // signals has no memory effects.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in Signal::ALL {
                libc::sigaddset(&mut set, signal.number());
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Signals { set }
        }
    }

    /// Waits for the next signal.
    pub fn wait(&self) -> Signal {
        loop {
            let mut number = 0;
            // SAFETY: `set` is a valid signal set; sigwait writes `number`.
            let rc = unsafe { libc::sigwait(&self.set, &mut number) };
            if rc == 0
                && let Some(signal) = Signal::ALL.into_iter().find(|s| s.number() == number)
            {
                return signal;
            }
        }
    }
}
