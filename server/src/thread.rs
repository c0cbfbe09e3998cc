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
}
