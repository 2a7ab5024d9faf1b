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
//! 2. When a stack is mapped ([`Stack::new`]), its [`Header`] is written
//!    into its top `HEADER_SIZE` bytes — its guard page and size — and
//!    linked into its thread's list of stacks ([`link`]); when it is
//!    unmapped (or leaked), it is unlinked ([`unlink`]). A stack never
//!    leaves its thread (it is `!Send`, and a started coroutine never moves),
//!    so each thread's list holds exactly the stacks mapped there: those its
//!    coroutines run on and those idle in its cache. A coroutine that takes
//!    a stack (its first resume) writes only who it is into the header — id,
//!    name, spawn site ([`claim`]) — and marks it idle (id 0) when it gives
//!    the stack back ([`release`]). Nothing happens per resume: switching in
//!    and out costs the handler nothing.
//! 3. On a fault, [`on_fault`] walks the faulting thread's list for the
//!    stack whose guard page holds the faulting address. A hit on a claimed
//!    stack prints
//!    `coroutine <id> ('<name>') overflowed its <N> KiB stack (spawned at <file>:<line>)`
//!    and aborts. Anything else returns, and `sys::signal` chains to the
//!    handler installed before ours, so std's own "thread has overflowed its
//!    stack" report and ordinary segfaults behave as without weft. Coroutines
//!    that nest (one resumed from inside another) each have their own guard
//!    page in the list, so the one that overflowed is named, not its
//!    resumer.
//! 4. The panic report names the coroutine a panic happened in through
//!    [`running`]: the stack in the list that holds the current stack
//!    pointer (the innermost coroutine, when they nest; an idle stack never
//!    holds it, since nothing runs there); a caller that knows
//!    a likely one (the runtime's current task) passes it as a hint and saves
//!    the walk.
//!
//! # The list and the signal handler
//!
//! ```text
//!  thread-local STACKS ──> Header ──next──> Header ──next──> ... ──> null
//!                           (top of the      (top of an
//!                           newest stack)    older one)
//! ```
//!
//! The handler runs on the faulting thread, interrupting it anywhere, even
//! half-way through a [`link`] or an [`unlink`] (a fault in a guard page can
//! come from any push or spill, and one of those functions' own spills may be
//! the one that overflows). It only follows `next` pointers from `STACKS`,
//! and both functions keep that chain whole at every instruction: a header is
//! filled in before the store that makes it reachable, and a header is
//! bypassed before anything else about it changes. The owner fields change
//! while the header is reachable, but only while nothing runs on its stack
//! (before the first switch in, after the last switch out), so a fault in
//! its guard page cannot happen meanwhile: the handler reads the owner
//! fields only of the header whose guard page faulted. Compiler fences keep the
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

/// What the top `HEADER_SIZE` bytes of a mapped stack hold: the links of its
/// thread's list of stacks, where it is, and who runs on it.
#[repr(C)]
pub(crate) struct Header {
    /// The next-older stack of this thread, or null.
    next: *mut Header,
    /// The next-newer one, or null (`STACKS` points at this header).
    prev: *mut Header,
    /// The guard page's first address (the mapping's start).
    guard_start: usize,
    /// The usable stack bytes (the guard page is just below them).
    stack_size: usize,
    /// The owner's id, or [`IDLE`] while no coroutine has claimed the stack.
    id: u64,
    /// The owner's name: the bytes of a `str` the owner keeps alive (and
    /// unchanged) until [`release`] or [`unlink`]; null for no name.
    name_ptr: *const u8,
    name_len: usize,
    spawned_at: &'static Location<'static>,
}

const _: () = assert!(size_of::<Header>() <= HEADER_SIZE, "the header outgrew its reserved bytes");
const _: () = assert!(HEADER_SIZE % 16 == 0, "the switch top below the header must stay 16-byte aligned");

/// `Header::id` of a stack no coroutine holds (coroutine ids start at 1).
const IDLE: u64 = 0;

/// Who a claimed stack belongs to, as [`claim`] records it and [`running`]
/// gives it back.
#[derive(Clone, Copy)]
pub(crate) struct Owner<'a> {
    pub(crate) id: u64,
    pub(crate) name: Option<&'a str>,
    pub(crate) spawned_at: &'static Location<'static>,
}

thread_local! {
    /// The newest stack's header on this thread, or null. A const
    /// initialiser and no destructor: a plain `fs:`-relative load, which a
    /// signal handler may do.
    static STACKS: Cell<*mut Header> = const { Cell::new(ptr::null_mut()) };
}

/// Writes the header of a freshly mapped `stack` (idle) and links it into
/// this thread's list of stacks.
///
/// # Safety
///
/// - `stack` is not linked, and stays mapped until [`unlink`] is called for
///   it, on this thread, which is the only thread it is used on meanwhile.
/// - Nothing else writes the top `HEADER_SIZE` bytes of `stack` meanwhile
///   ([`claim`] and [`release`] aside).
pub(crate) unsafe fn link(stack: &Stack) {
    let header = stack.header();
    let newest = STACKS.with(Cell::get);
    // SAFETY: the header's bytes are ours (the caller's promise) and not
    // reachable from STACKS yet; `newest`, if not null, is a linked header
    // of this thread, on a stack that is still mapped.
    unsafe {
        header.write(Header {
            next: newest,
            prev: ptr::null_mut(),
            guard_start: stack.guard().start,
            stack_size: stack.size(),
            id: IDLE,
            name_ptr: ptr::null(),
            name_len: 0,
            spawned_at: Location::caller(), // read only once claimed
        });
        if !newest.is_null() {
            (*newest).prev = header;
        }
    }
    // The header is complete before the store that makes it reachable.
    compiler_fence(Ordering::Release);
    STACKS.with(|started| started.set(header));
    compiler_fence(Ordering::Release);
}

/// Records `owner` in the header of `stack`: a coroutine is about to run on
/// it.
///
/// # Safety
///
/// - `stack` is linked (a [`Stack`] is, while it lives) and idle: nothing
///   runs on it, and no coroutine has claimed it since its last [`release`].
/// - `owner.name`'s bytes stay alive and unchanged until [`release`] is
///   called for the stack, or the stack is unlinked.
#[inline(always)] // a few stores, once per coroutine, from its (out-of-line) start
pub(crate) unsafe fn claim(stack: &Stack, owner: Owner<'_>) {
    debug_assert!(owner.id != IDLE, "coroutine ids start at 1");
    let header = stack.header();
    let (name_ptr, name_len) = owner.name.map_or((ptr::null(), 0), |name| (name.as_ptr(), name.len()));
    // SAFETY: a linked header, on a mapped stack that nothing runs on (the
    // caller's promise): the handler reads these fields only after a fault
    // in this stack's guard page, which cannot happen before we switch in.
    unsafe {
        (*header).id = owner.id;
        (*header).name_ptr = name_ptr;
        (*header).name_len = name_len;
        (*header).spawned_at = owner.spawned_at;
    }
    // Complete before the coroutine runs on the stack.
    compiler_fence(Ordering::Release);
}

/// The id of the coroutine that claimed `stack` ([`claim`]), or 0 if it is
/// idle: for a report about a stack whose coroutine is not at hand.
pub(crate) fn claimant(stack: &Stack) -> u64 {
    // SAFETY: a Stack is linked, with its header written, while it lives;
    // the header is on its mapping, and only this thread writes it.
    unsafe { (*stack.header()).id }
}

/// Marks `stack` idle: its coroutine has left it for the last time (its
/// name may go away now).
///
/// # Safety
///
/// `stack` is linked and nothing runs on it any more.
#[inline(always)] // one store, once per coroutine, from its (out-of-line) finish
pub(crate) unsafe fn release(stack: &Stack) {
    // SAFETY: a linked header on a mapped stack (the caller's promise).
    unsafe { (*stack.header()).id = IDLE };
    compiler_fence(Ordering::Release);
}

/// Takes `stack`'s header out of this thread's list.
///
/// # Safety
///
/// - `stack` was linked with [`link`] on this thread and not unlinked since.
pub(crate) unsafe fn unlink(stack: &Stack) {
    let header = stack.header();
    // SAFETY: a linked header of this thread, and its neighbours, are on
    // stacks that stay mapped while linked (the caller's promise, and
    // `link`'s).
    unsafe {
        let Header { next, prev, .. } = header.read();
        // Bypass it first: the chain from STACKS stays whole.
        if prev.is_null() {
            STACKS.with(|started| started.set(next));
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

/// Calls `f` for each stack of this thread (idle ones included), newest
/// first, until it returns `Some`.
fn find<R>(mut f: impl FnMut(&Header) -> Option<R>) -> Option<R> {
    let mut header = STACKS.try_with(Cell::get).unwrap_or(ptr::null_mut());
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
    /// Whether a coroutine holds the stack (it is not idle in a cache).
    fn is_claimed(&self) -> bool {
        self.id != IDLE
    }

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
    /// The header is linked and claimed (so its owner, and its name, are
    /// alive), for `'a`.
    unsafe fn owner<'a>(&self) -> Owner<'a> {
        let name = (!self.name_ptr.is_null()).then(|| {
            // SAFETY: the bytes of the owner's name, alive and unchanged
            // while the header is claimed (`claim`'s contract).
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
        // SAFETY: a mapped stack's header is at the top of the page that
        // holds its switch top (the caller's promise, and `header_above`);
        // we read its plain fields only.
        let header = unsafe { &*super::header_above(top.as_ptr()) };
        header.holds(sp).then_some(header as *const Header)
    });
    let found = hinted.or_else(|| find(|header| header.holds(sp).then_some(header as *const Header)));
    // SAFETY: the header of the stack we are running on is linked and
    // claimed (a stack is released and unlinked only once nothing runs on
    // it), and stays so while we run on it.
    f(found.map(|header| unsafe { (*header).owner() }))
}

thread_local! {
    /// Whether this thread has its own alternate stack (until it exits).
    static OWN_ALT_STACK: Cell<bool> = const { Cell::new(false) };
}

/// Makes this thread ready to report an overflow: the process handler is
/// installed and the thread has an alternate signal stack.
pub(crate) fn prepare_thread() {
    thread_local! {
        static PREPARED: Cell<bool> = const { Cell::new(false) };
    }
    if PREPARED.with(Cell::get) {
        return;
    }
    PREPARED.with(|p| p.set(true));
    signal::install_fault_handler(on_fault);
    ensure_alt_stack();
}

/// Gives this thread an alternate signal stack of its own if it has none
/// now. std's, on a thread it spawned, goes when the thread's closure
/// returns, before the thread's `thread_local!` destructors run; a
/// coroutine those destructors drop (a suspended generator kept in a
/// `thread_local!`) is unwound on its own stack, and an overflow there
/// must still be reported. So a coroutine's forced unwind calls this (a
/// cold path: one `sigaltstack` query), and ours lives until after every
/// `thread_local!` destructor of the thread (`AltStack::keep`).
pub(crate) fn ensure_alt_stack() {
    if OWN_ALT_STACK.try_with(Cell::get).unwrap_or(false) || signal::has_alt_stack() {
        return;
    }
    if let Some(alt) = AltStack::new() {
        alt.keep();
        let _ = OWN_ALT_STACK.try_with(|own| own.set(true));
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

impl AltStack {
    /// Keeps the stack until the thread exits, after its `thread_local!`
    /// destructors (which may still unwind coroutines); if that cannot be
    /// arranged, the stack stays for good (a leak of one mapping, rather
    /// than an alternate stack freed while it may be needed).
    fn keep(self) {
        let raw = Box::into_raw(Box::new(self));
        // SAFETY: `drop_kept` frees `raw` once, at this thread's exit; nothing
        // else does.
        let _ = unsafe { signal::drop_at_thread_exit(raw.cast(), drop_kept) };
    }
}

/// The thread-exit destructor of a kept [`AltStack`].
///
/// # Safety
///
/// `raw` is a `Box<AltStack>` given up by `AltStack::keep` on this thread,
/// passed here once.
unsafe extern "C" fn drop_kept(raw: *mut std::ffi::c_void) {
    // SAFETY: the caller's promise.
    drop(unsafe { Box::from_raw(raw.cast::<AltStack>()) });
}

impl Drop for AltStack {
    fn drop(&mut self) {
        signal::disable_alt_stack();
        // SAFETY: our own mapping; no longer the alternate stack.
        unsafe { mem::unmap(self.base, self.len) };
    }
}

/// The fault callback: aborts with a report if `address` is in the guard page
/// of a claimed coroutine stack of this thread; returns otherwise (a fault
/// in an idle stack's guard page is no coroutine's overflow).
fn on_fault(address: usize) {
    let Some((owner, stack_size)) = find(|header| {
        // SAFETY: linked and claimed, so its owner is alive (we abort before
        // it could go).
        (header.guards(address) && header.is_claimed()).then(|| (unsafe { header.owner() }, header.stack_size))
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
