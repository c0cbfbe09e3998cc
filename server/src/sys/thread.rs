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

/// Memory-map areas one thread from [`spawn`] takes.
pub(crate) const MAP_AREAS_PER_THREAD: usize = 2;

/// Work for a thread from [`spawn`]. A type of its own rather than a
/// closure, so that when no thread can be made the caller gets back the
/// parts it holds.
pub(crate) trait Job: Send + 'static {
    fn run(self);
}

/// A closure as a [`Job`].
#[derive(Debug)]
pub(crate) struct Closure<F>(pub(crate) F);

impl<F: FnOnce() + Send + 'static> Job for Closure<F> {
    fn run(self) {
        (self.0)();
    }
}

/// Starts a detached thread with a stack of `stack_size` bytes that runs
/// `job`.
///
/// When no thread can be made (thread or memory limits), the error comes
/// back with `job` untouched, so the caller can still use what it holds
/// (the connection's write half, to say SERVER_FULL). A panic inside `job`
/// is caught and logged: it ends that thread only.
pub(crate) fn spawn<F: Job>(stack_size: usize, job: F) -> Result<(), (io::Error, F)> {
    let arg = Box::into_raw(Box::new(job)).cast::<c_void>();
    // SAFETY: `attr` is initialised before use and destroyed after; `arg` is
    // a leaked `Box<F>` that exactly one of `trampoline::<F>` or the error
    // path below takes back.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let mut rc = libc::pthread_attr_init(&mut attr);
        if rc == 0 {
            let stack_size = stack_size.max(libc::PTHREAD_STACK_MIN);
            rc = libc::pthread_attr_setstacksize(&mut attr, stack_size);
            if rc == 0 {
                rc = libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
            }
            if rc == 0 {
                let mut thread: libc::pthread_t = std::mem::zeroed();
                rc = libc::pthread_create(&mut thread, &attr, trampoline::<F>, arg);
            }
            libc::pthread_attr_destroy(&mut attr);
        }
        if rc != 0 {
            let job = *Box::from_raw(arg.cast::<F>());
            return Err((io::Error::from_raw_os_error(rc), job));
        }
    }
    Ok(())
}

extern "C" fn trampoline<F: Job>(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` came from `Box::into_raw` of a `Box<F>` in `spawn`, and
    // is taken once.
    let job = unsafe { Box::from_raw(arg.cast::<F>()) };
    if catch_unwind(AssertUnwindSafe(move || job.run())).is_err() {
        tracing::error!(
            "a connection thread panicked; that connection was dropped (this is a bug)"
        );
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
pub(crate) fn trim_stack() {
    /// Kept below the current frame, for the calls trimming itself makes
    /// (the `madvise` wrapper's frame must survive its own system call).
    /// Calls made before `madvise` may have used more; their pages are
    /// done with. 1 KiB, not more: an idle reader's resident stack ends
    /// this far below the trimming frame, and at 2 KiB one reader in
    /// sixteen kept a third page (measured at 10,000 connections).
    const MARGIN: usize = 1024;
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
pub(crate) struct StackTrim {
    last: Option<std::time::Instant>,
}

impl StackTrim {
    pub(crate) const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    /// Whether a trim now would be allowed.
    pub(crate) fn due(&self) -> bool {
        self.last.is_none_or(|last| last.elapsed() >= Self::EVERY)
    }

    /// Trims if due.
    pub(crate) fn trim(&mut self) {
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
        spawn(64 * 1024, Closure(move || tx.send(7).unwrap()))
            .map_err(|(e, _)| e)
            .unwrap();
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(7));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        spawn(
            64 * 1024,
            Closure(move || {
                let _keep = tx;
                panic!("expected in this test");
            }),
        )
        .map_err(|(e, _)| e)
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
        spawn(
            256 * 1024,
            Closure(move || {
                let first = deep(20);
                trim_stack();
                let second = deep(20);
                trim_stack();
                tx.send((first, second)).unwrap();
            }),
        )
        .map_err(|(e, _)| e)
        .unwrap();
        let (first, second) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(first, second);
    }
}
