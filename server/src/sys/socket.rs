//! What `std` does not expose about a TCP socket.

use std::os::fd::AsRawFd;

/// Bytes sent but not yet acknowledged by the peer (`SIOCOUTQ`), or `None`
/// if the kernel will not say.
pub(crate) fn unsent_bytes(socket: &impl AsRawFd) -> Option<usize> {
    let mut unsent: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int for a TCP socket.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut unsent) };
    (rc == 0).then_some(usize::try_from(unsent).unwrap_or(0))
}
