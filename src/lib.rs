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
pub mod sys;

pub use runtime::{
    Builder, BusyWorker, CoroutineDump, CoroutineState, Dump, GreenThread, JoinHandle, ParkedOn, Runtime,
    RuntimeBuilder, RuntimeMetrics, WorkerMetrics, current, sleep, spawn, spawn_blocking, try_current, yield_now,
};
