//! Request handling, fuzzed in memory: up to four clients send arbitrary
//! bytes to one set of rooms. The harness (`server::fuzzing`) checks after
//! every read that each client would only receive frames a strict client
//! accepts, and that the rooms agree with the sessions.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    server::fuzzing::run(data);
});
