//! The few Linux calls the examples and benches make themselves, through
//! `libc`: pinning a thread to a CPU, and the bare futex wait and wake that
//! the OS-thread side of a hand-off measures against weft's switch.
//!
//! weft keeps its own syscall layer private; these are the examples' copies,
//! as small as a measurement allows. Mounted with
//! `#[path = "common/linux.rs"] mod linux;` by the examples, by
//! `examples/versus_threads/workloads.rs` (so also by the bench that mounts
//! that file) and by the benches in `benches/` (`weft-benches`, which has
//! `libc` as a dependency for this).

#![allow(dead_code)] // each user takes the parts it needs

use std::io;
use std::sync::atomic::AtomicU32;

/// Pins the calling thread to `cpu`. Fails if the CPU does not exist or is
/// not allowed for this process.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {cpu} is out of range (CPU_SETSIZE is {})", libc::CPU_SETSIZE),
        ));
    }
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so CPU_SET stays in bounds.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks while `*word == expected`, until a [`futex_wake`] on `word` (or a
/// spurious return: callers re-check their word in a loop).
pub fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: `word` is a live, aligned 32-bit atomic for the whole call; a
    // null timeout waits without a deadline; the unused arguments are ignored
    // by FUTEX_WAIT. The result is ignored on purpose: EAGAIN (the word
    // changed), EINTR and a wake all send the caller back to its loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes up to `count` threads blocked in [`futex_wait`] on `word`.
pub fn futex_wake(word: &AtomicU32, count: u32) {
    // SAFETY: `word` is a live, aligned 32-bit atomic; FUTEX_WAKE only reads
    // its address. It cannot fail for a valid private futex word.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, count);
    }
}

/// The kernel's id of the calling thread (`gettid(2)`).
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}
