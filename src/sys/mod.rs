//! The only module that makes system calls.
//!
//! Each wrapper is thin: it turns the C return convention (`-1` and `errno`)
//! into an [`io::Result`](std::io::Result), retries `EINTR` where the call is
//! idempotent, and documents what the caller owes. Nothing here knows about
//! coroutines or schedulers.
//!
//! [`futex`] and [`thread`] are public because benchmarks and tests compare
//! weft with raw OS-thread hand-offs and check which thread a coroutine runs on.

pub mod futex;
pub(crate) mod mem;
pub(crate) mod signal;
pub mod thread;
pub(crate) mod unwind;
