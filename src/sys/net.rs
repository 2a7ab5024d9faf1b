//! The socket calls std does not offer: a non-blocking `connect` (std's
//! blocks the calling thread until the handshake ends), `poll(2)` on one
//! descriptor (how a plain OS thread waits for a `weft::net` socket, whose
//! descriptor is always non-blocking) and a stream read that also says
//! whether the kernel had control data for it (`MSG_CTRUNC`), which a
//! Unix stream's reader needs to tell a drained socket from a read cut
//! short by passed descriptors. And the stream read and write of every
//! request, made with `syscall(2)` rather than glibc's `recv`/`send`
//! ([`recv`], [`send`]), and a vectored stream write with `MSG_NOSIGNAL`
//! ([`send_vectored`]: std's `writev` raises SIGPIPE where its `write`
//! gives `EPIPE`). Everything else goes through std's socket types.
//!
//! # Why the hot calls skip glibc's wrappers
//!
//! glibc 2.36 (Debian 12) makes `recv`, `send`, `recvmsg` and
//! `epoll_wait` thread-cancellation points: each call is bracketed by
//! `__pthread_enable_asynccancel` and `__pthread_disable_asynccancel`,
//! two compare-and-swaps on the thread's cancel word and about 60
//! instructions (callgrind). No Rust thread is ever cancelled by
//! `pthread_cancel`, and std's sockets pay this on every call; `syscall(2)`
//! is not a cancellation point and does the same system call. Measured
//! (callgrind, a 64-byte ping-pong over a Unix socket pair between two
//! coroutines of one worker): see `runtime::poller`'s module docs.

use super::futex::Deadline;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Readable, for [`poll_one`].
pub(crate) const POLL_IN: i16 = libc::POLLIN;
/// Writable, for [`poll_one`].
pub(crate) const POLL_OUT: i16 = libc::POLLOUT;

/// The most buffers one vectored call passes the kernel (Linux's
/// `UIO_MAXIOV`, std's `IOV_MAX`; more is `EINVAL`): the rest of a longer
/// slice is left untouched, as std's vectored calls leave it.
pub(crate) const IOV_MAX: usize = 1024;

/// How a non-blocking [`connect_tcp`] or [`connect_unix`] began.
pub(crate) enum Connect {
    /// Connected already (loopback often is).
    Done(OwnedFd),
    /// The handshake is under way (`EINPROGRESS`): wait until the socket is
    /// writable, then read its outcome with `take_error`.
    InProgress(OwnedFd),
}

fn socket(domain: libc::c_int, kind: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: no pointers; returns a new descriptor or -1.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just returned to us, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new non-blocking TCP socket for `addr`'s family, connecting to `addr`.
pub(crate) fn connect_tcp(addr: &SocketAddr) -> io::Result<Connect> {
    let (storage, len) = sockaddr_of(addr);
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let fd = socket(domain, libc::SOCK_STREAM)?;
    start_connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len)
}

/// The name of a Unix socket: a path in the file system, or a name in the
/// abstract namespace (Linux: no file; the name is the bytes after a NUL
/// first byte of `sun_path`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum UnixName<'a> {
    Path(&'a Path),
    Abstract(&'a [u8]),
}

/// A new non-blocking Unix stream socket connecting to `name`. A listener
/// whose backlog is full makes this fail with `WouldBlock` (Linux does not
/// queue a non-blocking Unix connect); the caller retries.
pub(crate) fn connect_unix(name: UnixName<'_>) -> io::Result<Connect> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // What `sun_path` holds from its first byte, and how many of its bytes
    // the address spans: a path and its terminating NUL; an abstract name's
    // leading NUL and the name, no terminator (every byte counts).
    let (bytes, offset, spans) = match name {
        UnixName::Path(path) => {
            let bytes = path.as_os_str().as_bytes();
            // The kernel takes an address of the family alone as "no name"
            // and refuses it (std's connect("") fails so, EINVAL); our
            // terminating NUL would make it the abstract address with an
            // empty name instead.
            if bytes.is_empty() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "socket path is empty"));
            }
            if bytes.contains(&0) {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "socket path contains a NUL byte"));
            }
            (bytes, 0, bytes.len() + 1)
        }
        UnixName::Abstract(name) => (name, 1, name.len() + 1),
    };
    if spans > addr.sun_path.len() {
        let what = if offset == 0 { "socket path" } else { "abstract socket name" };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{what} is {} bytes long; a Unix socket address holds at most {}",
                bytes.len(),
                addr.sun_path.len() - 1
            ),
        ));
    }
    for (dst, src) in addr.sun_path[offset..].iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = (mem::size_of::<libc::sa_family_t>() + spans) as libc::socklen_t;
    let fd = socket(libc::AF_UNIX, libc::SOCK_STREAM)?;
    start_connect(fd, (&addr as *const libc::sockaddr_un).cast(), len)
}

/// Reads from the stream socket `fd` into `bufs` (the first [`IOV_MAX`]
/// of them) with `recvmsg` and no control buffer, as `read` and `readv`
/// do; returns the bytes read and whether the kernel set `MSG_CTRUNC`: it
/// had control data for this read that did not fit (descriptors passed
/// with `SCM_RIGHTS`, which it closes, or credentials under
/// `SO_PASSCRED`). A Unix stream read stops after a message that carried
/// descriptors, and under `SO_PASSCRED` between two writers' messages,
/// with more data queued (`unix_stream_read_generic`); the flag is set
/// whenever that happens (under `SO_PASSCRED`, on every read). Errors,
/// `EINTR` included, come back as they are.
pub(crate) fn recv_vectored_no_control(
    fd: BorrowedFd<'_>,
    bufs: &mut [io::IoSliceMut<'_>],
) -> io::Result<(usize, bool)> {
    // SAFETY: msghdr is plain data; all zeroes (no name, no control
    // buffer, no buffers, no flags) is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    // IoSliceMut is ABI-compatible with iovec on Unix (std guarantees it).
    msg.msg_iov = bufs.as_mut_ptr().cast::<libc::iovec>();
    msg.msg_iovlen = bufs.len().min(IOV_MAX) as _;
    // `msg` is a valid msghdr for the call: msg_iov points at msg_iovlen
    // iovecs, each naming a live, writable buffer borrowed (mutably) for the
    // call through `bufs`; name and control are null with zero lengths, so
    // the kernel writes nothing else; `fd` is open for the call (borrowed).
    // SAFETY: the call's arguments are valid, as just said.
    // (`syscall(2)`, not glibc's `recvmsg`: module docs.)
    let n = unsafe { libc::syscall(libc::SYS_recvmsg, fd.as_raw_fd(), &mut msg as *mut libc::msghdr, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, msg.msg_flags & libc::MSG_CTRUNC != 0))
}

/// `recv(fd, buf, 0)`, what std's `Read::read` of a socket is, without
/// glibc's cancellation-point wrapper (module docs). Errors, `EINTR`
/// included, come back as they are.
#[inline]
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recvfrom(fd, buf, len, flags, NULL, NULL): `buf` is a live,
    // writable buffer of `len` bytes borrowed for the call; no address is
    // asked for; `fd` is open for the call (borrowed).
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `send(fd, buf, MSG_NOSIGNAL)`, what std's `Write::write` of a socket is
/// (a peer that is gone gives `EPIPE`, not `SIGPIPE`), without glibc's
/// cancellation-point wrapper (module docs). Errors, `EINTR` included,
/// come back as they are.
#[inline]
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: sendto(fd, buf, len, flags, NULL, 0): `buf` is a live buffer
    // of `len` bytes borrowed for the call; no address is given; `fd` is
    // open for the call (borrowed).
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd.as_raw_fd(),
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `sendmsg(fd, bufs, MSG_NOSIGNAL)` with no address or control data:
/// what std's `write_vectored` (a `writev`) does, except that a peer that
/// is gone gives `EPIPE`, not `SIGPIPE`, as [`send`] does. Passes the first
/// [`IOV_MAX`] buffers, as std's `writev` does. Errors, `EINTR` included,
/// come back as they are.
pub(crate) fn send_vectored(fd: BorrowedFd<'_>, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; all zeroes (no name, no control
    // buffer, no buffers, no flags) is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix (std guarantees it); the
    // kernel only reads through `msg_iov` for a send (the cast to *mut is
    // the C type's, not a write).
    msg.msg_iov = bufs.as_ptr().cast_mut().cast::<libc::iovec>();
    msg.msg_iovlen = bufs.len().min(IOV_MAX) as _;
    // (`syscall(2)`, not glibc's `sendmsg`: module docs.)
    let msg: *const libc::msghdr = &msg;
    // SAFETY: `msg` is a valid msghdr: msg_iov points at msg_iovlen iovecs naming
    // live buffers borrowed through `bufs`, name and control are null with zero
    // lengths; `fd` is open for the call (borrowed).
    let n = unsafe { libc::syscall(libc::SYS_sendmsg, fd.as_raw_fd(), msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn start_connect(fd: OwnedFd, addr: *const libc::sockaddr, len: libc::socklen_t) -> io::Result<Connect> {
    // SAFETY: `addr` points at a sockaddr of `len` bytes that the caller
    // keeps alive across this call.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), addr, len) };
    if rc == 0 {
        return Ok(Connect::Done(fd));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINPROGRESS) => Ok(Connect::InProgress(fd)),
        // A signal interrupted it: the handshake goes on in the
        // background, exactly as after EINPROGRESS.
        Some(libc::EINTR) => Ok(Connect::InProgress(fd)),
        _ => Err(err),
    }
}

fn sockaddr_of(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Whether `fd`'s receiving side is shut down (`POLLRDHUP` reported now,
/// without waiting). A Unix datagram socket whose read half is shut reads
/// `WouldBlock` in non-blocking mode, where a blocking `recv` returns 0.
pub(crate) fn read_is_shut(fd: RawFd) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid pollfd for the call; a zero timeout never waits.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pfd.revents & libc::POLLRDHUP != 0)
}

/// Blocks the calling thread until `fd` reports one of `events` (or an
/// error or hang-up, which the next I/O call reports), or `deadline`
/// passes. Returns `false` when the deadline passed first. `EINTR` is
/// retried with the time left.
pub(crate) fn poll_one(fd: RawFd, events: i16, deadline: Option<Deadline>) -> io::Result<bool> {
    loop {
        let timeout_ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.as_nanos().saturating_sub(Deadline::now().as_nanos());
                if left == 0 {
                    return Ok(false);
                }
                // Rounded up: never back before the deadline.
                left.div_ceil(1_000_000).min(i32::MAX as u64) as libc::c_int
            }
        };
        let mut pfd = libc::pollfd { fd, events, revents: 0 };
        // SAFETY: one valid pollfd for the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc > 0 {
            return Ok(true);
        }
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(err);
            }
        }
        // Timed out by poll's millisecond clock, or interrupted: the loop
        // judges the deadline by the monotonic clock.
    }
}
