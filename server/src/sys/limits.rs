//! What the operating system lets this process hold, checked against
//! `--max-connections` at start.
//!
//! Each connection costs one file descriptor, two threads (two process ids)
//! and four memory-map areas (two per thread: stack and guard page). When a
//! limit is too low the server says which one and how to raise it, and caps
//! its connections below it: the client over the cap gets SERVER_FULL instead
//! of the process aborting.

use std::fs;

use super::thread::MAP_AREAS_PER_THREAD;

/// Resources kept back for everything that is not a connection.
const RESERVE_FDS: u64 = 64;
/// Also covers the idle threads the two connection-thread pools keep (2 ×
/// `pool::MAX_IDLE`).
const RESERVE_THREADS: u64 = 256;
const RESERVE_MAP_AREAS: u64 = 1024;

/// How many connections the system allows, and why not more.
#[derive(Debug, Clone)]
pub(crate) struct Capacity {
    pub(crate) connections: usize,
    /// One sentence per limit that is below the configured maximum.
    pub(crate) warnings: Vec<String>,
}

fn read_number(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn count_lines(path: &str) -> u64 {
    fs::read_to_string(path).map_or(0, |s| s.lines().count() as u64)
}

/// Raises the soft file-descriptor limit to the hard limit; returns the soft
/// limit now in force.
fn raise_nofile() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

fn nproc() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes `limit`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Threads running on the whole system now (from /proc/loadavg).
fn system_threads() -> u64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Checks the limits against `wanted` connections.
pub(crate) fn check(wanted: usize) -> Capacity {
    let wanted64 = wanted as u64;
    let mut connections = wanted64;
    let mut warnings = Vec::new();

    if let Some(nofile) = raise_nofile() {
        let open = count_lines_dir("/proc/self/fd");
        let fit = nofile.saturating_sub(open + RESERVE_FDS);
        if fit < wanted64 {
            warnings.push(format!(
                "file descriptors: the limit is {nofile}, enough for {fit} connections; raise it (ulimit -n {}) or lower --max-connections",
                wanted64 + open + RESERVE_FDS
            ));
            connections = connections.min(fit);
        }
    }

    let pid_max = read_number("/proc/sys/kernel/pid_max");
    let threads_max = read_number("/proc/sys/kernel/threads-max");
    let thread_limit = [pid_max, threads_max, nproc()].into_iter().flatten().min();
    if let Some(limit) = thread_limit {
        let fit = limit.saturating_sub(system_threads() + RESERVE_THREADS) / 2;
        if fit < wanted64 {
            warnings.push(format!(
                "threads: each connection takes 2, and the system allows about {limit} (kernel.pid_max, kernel.threads-max, ulimit -u), enough for {fit} connections; raise them (sysctl -w kernel.pid_max={}) or lower --max-connections",
                (wanted64 * 2 + system_threads() + RESERVE_THREADS).max(32768)
            ));
            connections = connections.min(fit);
        }
    }

    if let Some(max_maps) = read_number("/proc/sys/vm/max_map_count") {
        let used = count_lines("/proc/self/maps");
        let per_connection = 2 * MAP_AREAS_PER_THREAD as u64;
        let fit = max_maps.saturating_sub(used + RESERVE_MAP_AREAS) / per_connection;
        if fit < wanted64 {
            warnings.push(format!(
                "memory map areas: vm.max_map_count is {max_maps}, enough for {fit} connections; raise it (sysctl -w vm.max_map_count={}) or lower --max-connections",
                wanted64 * per_connection + used + RESERVE_MAP_AREAS
            ));
            connections = connections.min(fit);
        }
    }

    Capacity {
        connections: connections as usize,
        warnings,
    }
}

fn count_lines_dir(path: &str) -> u64 {
    fs::read_dir(path).map_or(0, |dir| dir.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modest_limit_fits_and_an_absurd_one_is_capped_with_advice() {
        let modest = check(100);
        assert_eq!(modest.connections, 100, "{:?}", modest.warnings);
        let absurd = check(100_000_000);
        assert!(absurd.connections < 100_000_000);
        assert!(!absurd.warnings.is_empty());
        assert!(absurd.warnings.iter().all(|w| w.contains("raise")));
    }
}
