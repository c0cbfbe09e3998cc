//! Connection threads with small stacks and few memory-map areas.
//!
//! `std::thread` gives every thread an alternate signal stack of its own,
//! with a guard page: four memory-map areas a thread. With two threads a
//! connection and the kernel's default `vm.max_map_count` of 65530, a process
//! aborts near 8,200 connections ("failed to set up alternative stack guard
//! page"). These threads come straight from `pthread_create`: a stack and its
//! guard page, two areas, so 10,000 connections fit in the default limits.
//! Stack overflow still faults on the guard page; it just lacks std's message.

use std::ffi::c_void;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Memory-map areas one thread from [`spawn`] takes.
pub const MAP_AREAS_PER_THREAD: usize = 2;

/// Starts a detached thread with a stack of `stack_size` bytes.
///
/// Errors (thread or memory limits) are returned, never aborted on. A panic
/// inside `job` is caught and logged: it ends that thread only.
pub fn spawn(stack_size: usize, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let job: Box<Job> = Box::new(Box::new(job));
    let arg = Box::into_raw(job).cast::<c_void>();
    // SAFETY: `attr` is initialised before use and destroyed after; `arg` is
    // a leaked `Box<Job>` that exactly one of `trampoline` or the error path
    // below takes back.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let rc = libc::pthread_attr_init(&mut attr);
        if rc != 0 {
            drop(Box::from_raw(arg.cast::<Job>()));
            return Err(io::Error::from_raw_os_error(rc));
        }
        let stack_size = stack_size.max(libc::PTHREAD_STACK_MIN);
        let mut rc = libc::pthread_attr_setstacksize(&mut attr, stack_size);
        if rc == 0 {
            rc = libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        }
        if rc == 0 {
            let mut thread: libc::pthread_t = std::mem::zeroed();
            rc = libc::pthread_create(&mut thread, &attr, trampoline, arg);
        }
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            drop(Box::from_raw(arg.cast::<Job>()));
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

extern "C" fn trampoline(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` came from `Box::into_raw` in `spawn` and is taken once.
    let job = unsafe { Box::from_raw(arg.cast::<Job>()) };
    if catch_unwind(AssertUnwindSafe(job)).is_err() {
        log::error!("a connection thread panicked; that connection was dropped (this is a bug)");
    }
    std::ptr::null_mut()
}

/// Returns the calling thread's unused stack pages to the kernel.
///
/// A connection thread touches a few pages of stack while it handles
/// HELLO and JOIN, and those pages stay resident for the life of the
/// connection even though an idle connection only needs the top one or two.
/// Threads call this when they have been idle for a while, which keeps the
/// memory of ten thousand idle connections close to what they really use.
/// Pages below the current frame hold nothing live; if touched again they
/// come back zeroed, which is all a stack needs.
pub fn trim_stack() {
    /// Kept below the current frame, for the calls trimming itself makes.
    const MARGIN: usize = 2 * 1024;
    let page = page_size();
    let marker = 0u8;
    let sp = std::hint::black_box(&marker) as *const u8 as usize;
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread, which is
    // destroyed after reading the stack bounds; madvise only touches pages of
    // this thread's own stack strictly below the current frame minus MARGIN.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let mut low: *mut c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut low, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            return;
        }
        let low = (low as usize).next_multiple_of(page);
        let high = sp.saturating_sub(MARGIN) & !(page - 1);
        if high > low && sp < low + size {
            libc::madvise(low as *mut c_void, high - low, libc::MADV_DONTNEED);
        }
    }
}

/// When a thread last trimmed its stack: at most one trim per
/// [`StackTrim::EVERY`], so a connection that is quiet for a moment between
/// messages does not pay a system call and page faults for every message,
/// while an idle one gives its pages back soon after it goes quiet.
#[derive(Debug, Default)]
pub struct StackTrim {
    last: Option<std::time::Instant>,
}

impl StackTrim {
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    /// Whether a trim now would be allowed.
    pub fn due(&self) -> bool {
        self.last.is_none_or(|last| last.elapsed() >= Self::EVERY)
    }

    /// Trims if due.
    pub fn trim(&mut self) {
        if self.due() {
            trim_stack();
            self.last = Some(std::time::Instant::now());
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_the_job_and_survives_its_panic() {
        let (tx, rx) = std::sync::mpsc::channel();
        spawn(64 * 1024, move || tx.send(7).unwrap()).unwrap();
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(7));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        spawn(64 * 1024, move || {
            let _keep = tx;
            panic!("expected in this test");
        })
        .unwrap();
        // The sender is dropped by the unwinding panic: the channel disconnects.
        assert!(rx.recv_timeout(std::time::Duration::from_secs(10)).is_err());
    }

    #[test]
    fn trimming_the_stack_keeps_the_thread_working() {
        fn deep(n: u32) -> u64 {
            let local = [n as u8; 512];
            if n == 0 {
                u64::from(std::hint::black_box(local)[0])
            } else {
                deep(n - 1) + u64::from(std::hint::black_box(local)[1])
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        spawn(256 * 1024, move || {
            let first = deep(20);
            trim_stack();
            let second = deep(20);
            trim_stack();
            tx.send((first, second)).unwrap();
        })
        .unwrap();
        let (first, second) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(first, second);
    }
}
