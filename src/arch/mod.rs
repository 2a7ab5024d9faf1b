//! The Rust side of the context switch: one file per architecture.
//!
//! weft supports exactly one target, Linux on x86-64 with the System V ABI;
//! anything else stops the build here with a message rather than failing in
//! the assembler.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod x86_64;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) use x86_64::*;

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!("weft supports only Linux on x86-64 (System V ABI): its context switch is x86-64 assembly");
