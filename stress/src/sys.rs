//! The few operating-system calls std doesn't offer: small receive buffers,
//! the descriptor limit, process memory and CPU time, and a shared clock.

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

/// CPU time a process used, user plus system, in clock ticks: fields 14
/// and 15 of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so the fields
/// are counted from the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: state (3), ppid (4), ... utime (14), stime (15).
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat`'s times.
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant and has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// Measures the CPU a process uses over a stretch of wall time.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pid: u32,
    ticks: u64,
    at: Instant,
}

impl CpuMeter {
    /// Starts measuring process `pid`; `None` when its /proc entry can't be
    /// read (no such process, or not Linux).
    pub fn start(pid: u32) -> Option<CpuMeter> {
        Some(CpuMeter {
            pid,
            ticks: read_ticks(pid)?,
            at: Instant::now(),
        })
    }

    /// CPU used since [`CpuMeter::start`], as a percentage of one core over
    /// the wall time passed (200 = two cores busy).
    pub fn percent(&self) -> Option<f64> {
        let ticks = read_ticks(self.pid)?.checked_sub(self.ticks)?;
        let wall = self.at.elapsed().as_secs_f64();
        (wall > 0.0).then(|| ticks as f64 / ticks_per_second() as f64 / wall * 100.0)
    }
}

fn read_ticks(pid: u32) -> Option<u64> {
    parse_stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_name_with_spaces_and_parentheses() {
        let line = "4242 (relay (srv) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 37 0 0 20 0 5 0 123 4096 300 18446744073709551615";
        assert_eq!(parse_stat_ticks(line), Some(287));
        assert_eq!(parse_stat_ticks("1 (x) S 1"), None);
        assert_eq!(parse_stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn this_process_can_be_measured() {
        let meter = CpuMeter::start(std::process::id()).unwrap();
        let busy = Instant::now();
        let mut x = 0u64;
        while busy.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let percent = meter.percent().unwrap();
        assert!((0.0..=100.0 * 64.0).contains(&percent), "{percent}");
    }
}
