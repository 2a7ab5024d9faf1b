//! Reporting a coroutine that overflowed its stack.
//!
//! # Protocol
//!
//! 1. The first time a thread takes a coroutine stack ([`prepare_thread`]),
//!    the process-wide `SIGSEGV`/`SIGBUS` handler is installed (once) and the
//!    thread gets an alternate signal stack if it has none (std gives one to
//!    the threads it spawns; a thread created some other way may not). The
//!    handler must run on it: the faulting stack has no room left.
//! 2. Whoever switches into a coroutine publishes its [`OverflowInfo`] in the
//!    thread-local [`CURRENT`] for as long as it runs ([`enter`]/[`leave`]),
//!    restoring the previous value when it comes back (coroutines nest).
//! 3. On a fault, [`on_fault`] compares the faulting address with the guard
//!    page of the thread's current coroutine. A hit prints
//!    `coroutine <id> ('<name>') overflowed its <N> KiB stack (spawned at <file>:<line>)`
//!    and aborts. Anything else returns, and `sys::signal` chains to the
//!    handler installed before ours, so std's own "thread has overflowed its
//!    stack" report and ordinary segfaults behave as without weft.
//!
//! The handler only reads: a thread-local `Cell` with a const initialiser and
//! no destructor (a plain `fs:`-relative load), and the info it points at,
//! which the running coroutine's owner keeps alive. It formats into a fixed
//! buffer and writes with `write(2)`: no locks, no allocation.

use crate::sys::{mem, signal};
use std::cell::Cell;
use std::fmt::Write as _;
use std::panic::Location;
use std::ptr::NonNull;

/// What the overflow handler needs to know about a running coroutine.
#[derive(Debug)]
pub(crate) struct OverflowInfo {
    pub(crate) id: u64,
    pub(crate) name: Option<String>,
    pub(crate) spawned_at: &'static Location<'static>,
    /// Usable stack bytes.
    pub(crate) stack_size: usize,
    /// The guard page; empty until the coroutine has a stack.
    pub(crate) guard: std::ops::Range<usize>,
}

thread_local! {
    /// The coroutine running on this thread, or null.
    static CURRENT: Cell<*const OverflowInfo> = const { Cell::new(std::ptr::null()) };
}

/// Publishes `info` as this thread's running coroutine; returns the previous
/// value for [`leave`].
#[inline]
pub(crate) fn enter(info: *const OverflowInfo) -> *const OverflowInfo {
    CURRENT.with(|current| current.replace(info))
}

/// Restores the value [`enter`] returned.
#[inline]
pub(crate) fn leave(previous: *const OverflowInfo) {
    CURRENT.with(|current| current.set(previous));
}

/// Calls `f` with the info of the coroutine running on this thread (the
/// innermost, when coroutines nest), or `None` outside any coroutine.
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&OverflowInfo>) -> R) -> R {
    let current = CURRENT.try_with(Cell::get).unwrap_or(std::ptr::null());
    // SAFETY: `enter` published a pointer that its caller keeps alive until
    // `leave`, and we are on the same thread, inside that coroutine (the
    // pointer is not null), so before `leave`.
    f(unsafe { current.as_ref() })
}

/// Makes this thread ready to report an overflow: the process handler is
/// installed and the thread has an alternate signal stack.
pub(crate) fn prepare_thread() {
    thread_local! {
        static ALT_STACK: Cell<Option<AltStack>> = const { Cell::new(None) };
        static PREPARED: Cell<bool> = const { Cell::new(false) };
    }
    if PREPARED.with(Cell::get) {
        return;
    }
    PREPARED.with(|p| p.set(true));
    signal::install_fault_handler(on_fault);
    if !signal::has_alt_stack()
        && let Some(alt) = AltStack::new()
    {
        let _ = ALT_STACK.try_with(|slot| slot.set(Some(alt)));
    }
}

/// An alternate signal stack of this thread, with a guard page; disabled and
/// unmapped when the thread exits.
struct AltStack {
    base: NonNull<u8>,
    len: usize,
}

impl AltStack {
    fn new() -> Option<AltStack> {
        let page = mem::page_size();
        let size = signal::alt_stack_size().next_multiple_of(page);
        let len = size + page;
        let base = mem::map_anonymous(len).ok()?;
        let stack = AltStack { base, len };
        // SAFETY: the first page of our own fresh mapping; nothing uses it.
        unsafe { mem::protect_none(base, page) }.ok()?;
        // SAFETY: the guard page is the first page of the same mapping, so the
        // region above it is writable and stays mapped until Drop disables it.
        let usable = unsafe { NonNull::new_unchecked(base.as_ptr().add(page)) };
        // SAFETY: `usable..usable+size` stays mapped until Drop, which first
        // disables the alternate stack on this same thread.
        unsafe { signal::enable_alt_stack(usable, size) }.ok()?;
        Some(stack)
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        signal::disable_alt_stack();
        // SAFETY: our own mapping; no longer the alternate stack.
        unsafe { mem::unmap(self.base, self.len) };
    }
}

/// The fault callback: aborts with a report if `address` is in the guard page
/// of the coroutine running on this thread; returns otherwise.
fn on_fault(address: usize) {
    let current = CURRENT.try_with(Cell::get).unwrap_or(std::ptr::null());
    if current.is_null() {
        return;
    }
    // SAFETY: `enter` published a pointer that its caller keeps alive until
    // `leave`, and the fault happened on this thread before `leave`.
    let info = unsafe { &*current };
    if !info.guard.contains(&address) {
        return;
    }
    let mut message = FixedBuf::new();
    let _ = writeln!(
        message,
        "coroutine {} ('{}') overflowed its {} KiB stack (spawned at {}:{})",
        info.id,
        info.name.as_deref().unwrap_or("<unnamed>"),
        info.stack_size / 1024,
        info.spawned_at.file(),
        info.spawned_at.line(),
    );
    signal::write_stderr(message.as_bytes());
    signal::abort();
}

/// A formatter target that never allocates: text past its capacity is cut.
struct FixedBuf {
    bytes: [u8; 1024],
    len: usize,
}

impl FixedBuf {
    fn new() -> FixedBuf {
        FixedBuf { bytes: [0; 1024], len: 0 }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Write for FixedBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.bytes.len() - self.len;
        let n = s.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
