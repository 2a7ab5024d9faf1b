#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod arch;
pub mod coroutine;
mod loom;
mod park;
mod runtime;
mod stack;
pub mod sync;
mod sys;
#[cfg(all(test, not(loom)))]
mod test_rng;

pub use coroutine::is_forced_unwind;
pub use runtime::{
    AccessError, Builder, BusyWorker, CoroutineDump, CoroutineState, Dump, EnterGuard, GreenThread, JoinError,
    JoinErrorKind, JoinHandle, LocalKey, ParkedOn, Runtime, RuntimeBuilder, RuntimeMetrics, WorkerMetrics, current,
    is_cancelled, sleep, spawn, spawn_blocking, try_current, yield_now,
};
