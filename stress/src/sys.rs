//! The few operating-system calls std doesn't offer: small receive buffers, the descriptor limit, process memory, and a shared clock.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::time::Instant;

/// Shrinks the kernel receive buffer, so a client that stops reading makes
/// the server's queue for it fill quickly.
pub fn set_recv_buffer(socket: &impl AsRawFd, bytes: i32) -> io::Result<()> {
    setsockopt(socket, libc::SOL_SOCKET, libc::SO_RCVBUF, &bytes)
}

fn setsockopt<T>(socket: &impl AsRawFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed, and the fd is
    // owned by `socket` for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises the soft limit on open files to the hard limit and returns the
/// soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    limit.rlim_cur
}

/// Sends SIGTERM to a process.
pub fn terminate(pid: u32) -> io::Result<()> {
    // SAFETY: kill has no memory effects.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Memory and thread figures of a process, from /proc/<pid>/status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcStatus {
    /// Resident set now, KiB.
    pub rss_kib: u64,
    /// Peak resident set, KiB.
    pub hwm_kib: u64,
    pub threads: u64,
}

impl ProcStatus {
    /// Reads `/proc/self/status` (`pid` None) or `/proc/<pid>/status`.
    pub fn read(pid: Option<u32>) -> Option<ProcStatus> {
        let path = match pid {
            Some(pid) => format!("/proc/{pid}/status"),
            None => "/proc/self/status".to_owned(),
        };
        let text = std::fs::read_to_string(path).ok()?;
        let mut status = ProcStatus::default();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            match key {
                "VmRSS:" => status.rss_kib = value,
                "VmHWM:" => status.hwm_kib = value,
                "Threads:" => status.threads = value,
                _ => {}
            }
        }
        Some(status)
    }
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds on a clock shared by every thread of this process; what
/// publishers write into content and subscribers subtract from.
#[inline]
pub fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64
}

/// Starts the shared clock (call before any thread uses [`now_ns`]).
pub fn start_clock() {
    let _ = base();
}
