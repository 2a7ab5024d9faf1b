//! Reporting a coroutine that overflowed its stack, and naming the coroutine
//! a thread is running.
//!
//! # Protocol
//!
//! 1. The first time a thread takes a coroutine stack ([`prepare_thread`]),
//!    the process-wide `SIGSEGV`/`SIGBUS` handler is installed (once) and the
//!    thread gets an alternate signal stack if it has none (std gives one to
//!    the threads it spawns; a thread created some other way may not). The
//!    handler must run on it: the faulting stack has no room left.
//! 2. When a coroutine takes a stack (its first resume), it writes a
//!    [`Header`] into the top `HEADER_SIZE` bytes of that stack — its id,
//!    name, spawn site, stack size and guard page — and links it into its
//!    thread's list of *started* stacks ([`link`]); when it gives the stack
//!    back (it finished, or its stack is leaked), it unlinks it
//!    ([`unlink`]). A started coroutine never leaves its thread, so each
//!    thread's list holds exactly the stacks its coroutines run on. Nothing
//!    happens per resume: switching in and out costs the handler nothing.
//! 3. On a fault, [`on_fault`] walks the faulting thread's list for the
//!    stack whose guard page holds the faulting address. A hit prints
//!    `coroutine <id> ('<name>') overflowed its <N> KiB stack (spawned at <file>:<line>)`
//!    and aborts. Anything else returns, and `sys::signal` chains to the
//!    handler installed before ours, so std's own "thread has overflowed its
//!    stack" report and ordinary segfaults behave as without weft. Coroutines
//!    that nest (one resumed from inside another) each have their own guard
//!    page in the list, so the one that overflowed is named, not its
//!    resumer.
//! 4. The panic report names the coroutine a panic happened in through
//!    [`running`]: the stack in the list that holds the current stack
//!    pointer (the innermost coroutine, when they nest); a caller that knows
//!    a likely one (the runtime's current task) passes it as a hint and saves
//!    the walk.
//!
//! # The list and the signal handler
//!
//! ```text
//!  thread-local STARTED ──> Header ──next──> Header ──next──> ... ──> null
//!                           (top of the      (top of an
//!                           newest stack)    older one)
//! ```
//!
//! The handler runs on the faulting thread, interrupting it anywhere, even
//! half-way through a [`link`] or an [`unlink`] (a fault in a guard page can
//! come from any push or spill, and one of those functions' own spills may be
//! the one that overflows). It only follows `next` pointers from `STARTED`,
//! and both functions keep that chain whole at every instruction: a header is
//! filled in before the store that makes it reachable, and a header is
//! bypassed before anything else about it changes. Compiler fences keep the
//! compiler from reordering those stores (the thread sees its own stores in
//! program order, so no CPU fence is needed). The headers live on the stacks
//! themselves, which stay mapped while linked: no allocation, no lock, and
//! memory that is never freed under the handler. It formats into a fixed
//! buffer and writes with `write(2)`.

use super::{HEADER_SIZE, Stack};
use crate::loom::process::{Ordering, compiler_fence};
use crate::sys::{mem, signal};
use std::cell::Cell;
use std::fmt::Write as _;
use std::panic::Location;
use std::ptr::{self, NonNull};

/// What the top `HEADER_SIZE` bytes of a started stack hold: who runs on it,
/// and the links of its thread's list of started stacks.
#[repr(C)]
pub(crate) struct Header {
    /// The next-older started stack of this thread, or null.
    next: *mut Header,
    /// The next-newer one, or null (`STARTED` points at this header).
    prev: *mut Header,
    /// The guard page's first address (the mapping's start).
    guard_start: usize,
    /// The usable stack bytes (the guard page is just below them).
    stack_size: usize,
    id: u64,
    /// The owner's name: the bytes of a `String` the owner keeps alive (and
    /// unchanged) while the header is linked; null for no name.
    name_ptr: *const u8,
    name_len: usize,
    spawned_at: &'static Location<'static>,
}

const _: () = assert!(size_of::<Header>() <= HEADER_SIZE, "the header outgrew its reserved bytes");
const _: () = assert!(HEADER_SIZE % 16 == 0, "the switch top below the header must stay 16-byte aligned");

/// Who a started stack belongs to, as [`link`] records it and [`running`]
/// gives it back.
#[derive(Clone, Copy)]
pub(crate) struct Owner<'a> {
    pub(crate) id: u64,
    pub(crate) name: Option<&'a str>,
    pub(crate) spawned_at: &'static Location<'static>,
}

thread_local! {
    /// The newest started stack's header on this thread, or null. A const
    /// initialiser and no destructor: a plain `fs:`-relative load, which a
    /// signal handler may do.
    static STARTED: Cell<*mut Header> = const { Cell::new(ptr::null_mut()) };
}

/// Records `owner` in the header of `stack` and links it into this thread's
/// list of started stacks.
///
/// # Safety
///
/// - `stack` is not linked, and stays mapped until [`unlink`] is called for
///   it, on this thread, which is the only thread it is used on meanwhile.
/// - `owner.name`'s bytes stay alive and unchanged until then.
/// - Nothing else writes the top `HEADER_SIZE` bytes of `stack` meanwhile.
#[inline] // called once per coroutine, from its (out-of-line) start
pub(crate) unsafe fn link(stack: &Stack, owner: Owner<'_>) {
    let header = stack.header();
    let newest = STARTED.with(Cell::get);
    let (name_ptr, name_len) = owner.name.map_or((ptr::null(), 0), |name| (name.as_ptr(), name.len()));
    // SAFETY: the header's bytes are ours (the caller's promise) and not
    // reachable from STARTED yet; `newest`, if not null, is a linked header
    // of this thread, on a stack that is still mapped.
    unsafe {
        header.write(Header {
            next: newest,
            prev: ptr::null_mut(),
            guard_start: stack.guard().start,
            stack_size: stack.size(),
            id: owner.id,
            name_ptr,
            name_len,
            spawned_at: owner.spawned_at,
        });
        if !newest.is_null() {
            (*newest).prev = header;
        }
    }
    // The header is complete before the store that makes it reachable.
    compiler_fence(Ordering::Release);
    STARTED.with(|started| started.set(header));
    compiler_fence(Ordering::Release);
}

/// Takes `stack`'s header out of this thread's list.
///
/// # Safety
///
/// - `stack` was linked with [`link`] on this thread and not unlinked since.
#[inline] // called once per coroutine, from its (out-of-line) finish
pub(crate) unsafe fn unlink(stack: &Stack) {
    let header = stack.header();
    // SAFETY: a linked header of this thread, and its neighbours, are on
    // stacks that stay mapped while linked (the caller's promise, and
    // `link`'s).
    unsafe {
        let Header { next, prev, .. } = header.read();
        // Bypass it first: the chain from STARTED stays whole.
        if prev.is_null() {
            STARTED.with(|started| started.set(next));
        } else {
            (*prev).next = next;
        }
        compiler_fence(Ordering::Release);
        if !next.is_null() {
            (*next).prev = prev;
        }
    }
    compiler_fence(Ordering::Release);
}

/// Calls `f` for each started stack of this thread, newest first, until it
/// returns `Some`.
fn find<R>(mut f: impl FnMut(&Header) -> Option<R>) -> Option<R> {
    let mut header = STARTED.try_with(Cell::get).unwrap_or(ptr::null_mut());
    while !header.is_null() {
        // SAFETY: linked headers are on mapped stacks (see `link`), and only
        // this thread changes its list (we run on it).
        let current = unsafe { &*header };
        if let Some(found) = f(current) {
            return Some(found);
        }
        header = current.next;
    }
    None
}

impl Header {
    /// Whether `address` lies in this stack's usable bytes.
    fn holds(&self, address: usize) -> bool {
        let bottom = self.guard_start + mem::page_size();
        (bottom..bottom + self.stack_size).contains(&address)
    }

    /// Whether `address` lies in this stack's guard page.
    fn guards(&self, address: usize) -> bool {
        (self.guard_start..self.guard_start + mem::page_size()).contains(&address)
    }

    /// # Safety
    ///
    /// The header is linked (so its owner, and its name, are alive), for `'a`.
    unsafe fn owner<'a>(&self) -> Owner<'a> {
        let name = (!self.name_ptr.is_null()).then(|| {
            // SAFETY: the bytes of the owner's name `String`, alive and
            // unchanged while the header is linked (`link`'s contract).
            unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(self.name_ptr, self.name_len)) }
        });
        Owner { id: self.id, name, spawned_at: self.spawned_at }
    }
}

/// Calls `f` with the coroutine running on this thread: the one whose stack
/// holds the current stack pointer (the innermost one, when coroutines
/// nest), or `None` when the thread runs on its own stack. `hint`, the
/// switch top of the stack it probably is (the runtime's current task's),
/// is checked first, which spares the walk of the thread's list.
///
/// # Safety
///
/// `hint`, if any, is the switch top of a [`Stack`] that is still mapped (its
/// header is read; it is trusted only if the current stack pointer lies on
/// that stack, which makes it the running coroutine's, hence linked).
pub(crate) unsafe fn running<R>(hint: Option<NonNull<u8>>, f: impl FnOnce(Option<Owner<'_>>) -> R) -> R {
    let here = 0u8;
    let sp = std::hint::black_box(&here) as *const u8 as usize;
    let hinted = hint.and_then(|top| {
        // SAFETY: the bytes above a mapped stack's switch top are its header
        // (the caller's promise); we read its plain fields only.
        let header = unsafe { &*top.as_ptr().cast::<Header>() };
        header.holds(sp).then_some(header as *const Header)
    });
    let found = hinted.or_else(|| find(|header| header.holds(sp).then_some(header as *const Header)));
    // SAFETY: the header of the stack we are running on is linked (a stack
    // is unlinked only once nothing runs on it), and stays so while we run
    // on it.
    f(found.map(|header| unsafe { (*header).owner() }))
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
/// of a started coroutine stack of this thread; returns otherwise.
fn on_fault(address: usize) {
    let Some((owner, stack_size)) = find(|header| {
        // SAFETY: linked, so its owner is alive (we abort before it could go).
        header.guards(address).then(|| (unsafe { header.owner() }, header.stack_size))
    }) else {
        return;
    };
    let mut message = FixedBuf::new();
    let _ = writeln!(
        message,
        "coroutine {} ('{}') overflowed its {} KiB stack (spawned at {}:{})",
        owner.id,
        owner.name.unwrap_or("<unnamed>"),
        stack_size / 1024,
        owner.spawned_at.file(),
        owner.spawned_at.line(),
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
