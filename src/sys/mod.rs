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
