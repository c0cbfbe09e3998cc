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

/// Writes what `socket` takes now of `bufs`, without waiting, whatever the
/// socket's timeout (`sendmsg` with `MSG_DONTWAIT`). `WouldBlock` when it
/// takes nothing.
pub(crate) fn send_vectored_now(
    socket: &impl AsRawFd,
    bufs: &[std::io::IoSlice<'_>],
) -> std::io::Result<usize> {
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix.
    header.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    header.msg_iovlen = bufs.len().min(libc::c_int::MAX as usize) as _;
    // SAFETY: the header points at `bufs`, alive and unchanged for the call;
    // sendmsg only reads the buffers.
    let n = unsafe {
        libc::sendmsg(
            socket.as_raw_fd(),
            &header,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Reads what has already arrived on `socket` into `buf`, without waiting,
/// whatever the socket's timeout (`recv` with `MSG_DONTWAIT`).
/// `WouldBlock` when nothing has.
pub(crate) fn recv_now(socket: &impl AsRawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: recv writes at most `buf.len()` bytes into `buf`, which is
    // borrowed mutably for the call.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Makes the close of `socket` reset the connection (`SO_LINGER` with a
/// zero timeout), discarding what the kernel still holds for the peer: for
/// a client given up on, whose backlog must not outlive its connection.
pub(crate) fn reset_on_close(socket: &impl AsRawFd) -> std::io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from `linger`,
    // which lives across the call; the fd is open while `socket` is.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
