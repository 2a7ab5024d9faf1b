#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod arch;
pub mod coroutine;
mod loom;
mod stack;
pub mod sys;
