//! Everything that talks to the operating system below `std`: every `unsafe`
//! block of the server is in this folder, each with its SAFETY comment, and
//! the rest of the crate is `#![deny(unsafe_code)]`.
//!
//! - [`thread`]: connection threads straight from `pthread_create` (small
//!   stacks, two memory-map areas each) and giving idle stack pages back.
//! - [`futex`]: sleeping on a word and waking a sleeper (a writer's
//!   doorbell).
//! - [`pool`]: connection threads kept for the next connection.
//! - [`wake`]: interrupting a reader that waits for input, with a signal
//!   whose target is guaranteed alive by the type that sends it.
//! - [`socket`]: what `std` does not expose about a TCP socket.
//! - [`memory`]: giving freed heap memory back after a crowd leaves.
//! - [`limits`]: file descriptors, threads and memory-map areas the system
//!   allows, checked against `--max-connections`.
//! - [`signals`]: SIGINT, SIGTERM and SIGHUP as ordinary events for the
//!   binary.
//!
//! Relay relies on Linux: `ppoll`, `SIOCOUTQ`, `pthread_getattr_np`,
//! `/proc`. Other systems are refused at compile time, below, rather than
//! with a missing-symbol error deep in `libc`.

#![allow(unsafe_code)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "the Relay server runs on Linux only (it uses ppoll, SIOCOUTQ, pthread_getattr_np and /proc); build it on Linux, or run it in a Linux container"
);

#[cfg(test)]
pub(crate) mod alloc_count;
pub(crate) mod futex;
pub(crate) mod limits;
pub(crate) mod memory;
pub(crate) mod pool;
pub mod signals;
pub(crate) mod socket;
pub(crate) mod thread;
pub(crate) mod wake;
