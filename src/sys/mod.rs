//! The only module that makes system calls.
//!
//! Each wrapper is thin: it turns the C return convention (`-1` and `errno`)
//! into an [`io::Result`](std::io::Result), retries `EINTR` where the call is
//! idempotent, and documents what the caller owes. Nothing here knows about
//! coroutines or schedulers. It is private: the examples, tests and benches
//! that need a syscall of their own (pinning a thread, a bare futex
//! hand-off, `gettid`) make it through `libc` themselves.

pub(crate) mod epoll;
pub(crate) mod futex;
pub(crate) mod mem;
pub(crate) mod net;
pub(crate) mod signal;
pub(crate) mod thread;
pub(crate) mod unwind;

/// Whether a write to stderr would fail now because its reader is gone or
/// it hung up: `poll(2)` reports `POLLERR` for a pipe whose read end is
/// closed, `POLLHUP` for a hung-up terminal or socket. (A closed
/// descriptor 2 is not "broken": std's stderr writes to it as to a sink.)
/// A zero-timeout poll, which never blocks.
pub(crate) fn stderr_is_broken() -> bool {
    let mut pfd = libc::pollfd { fd: libc::STDERR_FILENO, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd for the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    rc > 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}
