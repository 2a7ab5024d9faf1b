//! Guarded coroutine stacks.
//!
//! # Layout
//!
//! ```text
//!  high addresses
//!  +-----------------------------+ <- top (mapping end, page aligned)
//!  | header (HEADER_SIZE bytes)  |    who runs here, for the overflow report
//!  +-----------------------------+
//!  | colour gap: 0-15 x 64 bytes |    unused (see "Colours" below)
//!  +-----------------------------+ <- switch top: the switch's slots and the
//!  | usable stack, read-write,   |    coroutine's frames start below it
//!  | committed lazily by the     |    `size` bytes (a page multiple), the
//!  | kernel as it is touched     |    header and the gap included
//!  +-----------------------------+ <- base + page
//!  | guard page, PROT_NONE       |    one page: any touch faults
//!  +-----------------------------+ <- base (mapping start)
//!  low addresses
//! ```
//!
//! The header ([`overflow::Header`]) is written once, when the stack is
//! mapped: it links the stack into its thread's list of stacks, which the
//! overflow handler and the panic report search, until the stack is
//! unmapped. Each coroutine that takes the stack then writes only who it is
//! into the header, and marks it idle when it gives the stack back (see
//! [`overflow`]). A `Stack` is therefore used, and dropped, only on the
//! thread that mapped it (it is `!Send`).
//!
//! One `mmap` reserves the whole range (read-write, `MAP_NORESERVE`), then
//! `mprotect` turns the lowest page into the guard. The kernel keeps these as
//! two memory maps (VMAs), which is what each stack costs against
//! `vm.max_map_count` (65 530 by default). Running out of maps is reported as
//! an [`io::Error`] that names the sysctl, never as a crash.
//!
//! Rust's stack probes touch every page of a large frame in order, so even a
//! frame larger than the guard page faults in the guard first; the
//! [`overflow`] handler recognises that fault and reports which coroutine
//! overflowed.
//!
//! Stacks are reused through a per-thread [`cache`]: a coroutine takes a
//! stack at its first resume and gives it back when it finishes.
//!
//! # Colours
//!
//! Every switch (a resume, a suspend, a direct switch from one coroutine to
//! the next) stores to the slots just under one stack's switch top and
//! loads from another's. Were every switch top at the same offset in its
//! page, those addresses would agree in their low 12 bits, which is all
//! the CPU compares when it decides, before the full addresses are known,
//! whether a load may depend on an older store ("4K aliasing"): the load
//! would wait for the store. They would also all fall into the same set of
//! the L1 cache. So the switch top sits a *colour* lower: 0 to 15 steps of
//! 64 bytes (`COLOURS`, `COLOUR_STEP`), taken from the stack's address
//! (bits 12-15 of its base; stacks mapped one after another get different
//! colours). Measured in turns, 3 runs each: yield ping-pong 12.4 -> 11.7
//! ns, Mutex+Condvar hand-off 95.3 -> 92.3 ns; the round trip against one
//! resumer unchanged. A colour costs at most 960 bytes of the stack's top
//! page: a parked coroutine whose frames filled more than the rest of that
//! page touches a second one (none did in the RSS probe's 30 000).

pub(crate) mod cache;
pub(crate) mod overflow;

use crate::loom::process::{AtomicUsize, Ordering};
use crate::sys::mem;
use std::io;
use std::ptr::NonNull;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The smallest usable stack: 32 KiB. Enough for the entry frames,
/// `catch_unwind`, and a panic whose default hook prints a backtrace
/// (`RUST_BACKTRACE=1` symbolises on the panicking stack; 16 KiB was
/// measured to overflow there, 32 KiB not).
///
/// ```
/// use weft::coroutine::{Coroutine, MIN_STACK_SIZE};
///
/// let c = Coroutine::<(), (), ()>::builder().stack_size(MIN_STACK_SIZE).build(|_, ()| {}).unwrap();
/// assert_eq!(c.stack_size(), 32 * 1024);
/// ```
pub const MIN_STACK_SIZE: usize = 32 * 1024;

/// The default usable stack size of a coroutine: 256 KiB.
///
/// Rust code needs more stack than C: formatting, panics (a panic that prints
/// a backtrace symbolises it on the current stack), and debug builds with
/// large unoptimised frames. 256 KiB runs all of those with room to spare,
/// while costing only address space until touched (a parked coroutine that
/// used one page of it holds one page of memory). 30 000 coroutines reserve
/// about 7.5 GiB of the 128 TiB address space.
///
/// ```
/// use weft::coroutine::{Coroutine, DEFAULT_STACK_SIZE};
///
/// assert_eq!(DEFAULT_STACK_SIZE, 256 * 1024);
/// assert_eq!(Coroutine::<(), (), ()>::new(|_, ()| {}).stack_size(), DEFAULT_STACK_SIZE);
/// ```
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// Bytes at the top of every stack that hold its [`overflow::Header`];
/// the switch top is this far below the mapping's end.
pub(crate) const HEADER_SIZE: usize = 64;

/// The distance between two colours of a switch top (see "Colours"): a
/// cache line, so that each colour is its own L1 set.
const COLOUR_STEP: usize = 64;
/// How many colours there are.
const COLOURS: usize = 16;

const _: () = assert!(COLOUR_STEP % 16 == 0, "a coloured switch top must stay 16-byte aligned");
const _: () = assert!(
    HEADER_SIZE + (COLOURS - 1) * COLOUR_STEP < 4096,
    "the header and the colour gap must fit in the top page, so that a switch top finds its header"
);

/// Maps each stack uses against `vm.max_map_count`: the stack and its guard.
pub const MAPS_PER_STACK: u64 = 2;

/// Rounds a requested usable size up to a page multiple, at least
/// [`MIN_STACK_SIZE`]. Zero and sizes that overflow when rounded (or with the
/// guard page added) are errors.
pub(crate) fn round_stack_size(requested: usize) -> io::Result<usize> {
    if requested == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a coroutine stack size of 0 bytes is not allowed: ask for at least {MIN_STACK_SIZE} bytes"),
        ));
    }
    let page = mem::page_size();
    let too_large = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a coroutine stack size of {requested} bytes is too large to map"),
        )
    };
    let rounded = requested.max(MIN_STACK_SIZE).checked_next_multiple_of(page).ok_or_else(too_large)?;
    // The mapping adds one guard page and must fit in the address space
    // (47 bits of user space on x86-64).
    if rounded.checked_add(page).is_none_or(|total| total > 1usize << 46) {
        return Err(too_large());
    }
    Ok(rounded)
}

/// One guarded stack: an owned mapping of `size + page` bytes, linked into
/// the list of stacks of the thread that mapped it (see [`overflow`]) from
/// [`new`](Stack::new) until it is dropped. `!Send` (the `NonNull`): that
/// list is per thread.
#[derive(Debug)]
pub(crate) struct Stack {
    /// Start of the mapping (the guard page).
    base: NonNull<u8>,
    /// Usable bytes above the guard page.
    size: usize,
}

impl Stack {
    /// Maps a fresh stack with `size` usable bytes (already rounded by
    /// [`round_stack_size`]).
    pub(crate) fn new(size: usize) -> io::Result<Stack> {
        let page = mem::page_size();
        debug_assert!(size % page == 0 && size >= MIN_STACK_SIZE);
        check_map_headroom(0)?;
        let len = size + page;
        let base = mem::map_anonymous(len).map_err(|e| explain_map_error(e, size))?;
        // SAFETY: `base` starts a mapping of `len > page` bytes that we own;
        // nothing will touch the guard page on purpose.
        if let Err(e) = unsafe { mem::protect_none(base, page) } {
            // SAFETY: we own the whole mapping and nothing points into it yet.
            unsafe { mem::unmap(base, len) };
            return Err(explain_map_error(e, size));
        }
        LIVE_STACKS.fetch_add(1, Ordering::Relaxed);
        let stack = Stack { base, size };
        // SAFETY: a fresh mapping, so not linked; it stays mapped until
        // `drop` unlinks it, on this thread (a Stack is !Send), and nothing
        // else writes its header bytes (the switch top is below them).
        unsafe { overflow::link(&stack) };
        Ok(stack)
    }

    /// Gives up ownership without unmapping: the base, for
    /// [`from_raw`](Stack::from_raw). The stack stays linked.
    pub(crate) fn into_raw(self) -> NonNull<u8> {
        std::mem::ManuallyDrop::new(self).base
    }

    /// Gives up on the stack for good: it leaves this thread's list (nothing
    /// will run on it again, so it cannot overflow) and stays mapped forever,
    /// so that nothing on it is freed while something may still point at it.
    pub(crate) fn leak(self) {
        // SAFETY: `new` linked it on this thread, and it is never dropped,
        // so this is its only unlink.
        unsafe { overflow::unlink(&self) };
        std::mem::forget(self);
    }

    /// Takes back ownership of a stack given up with
    /// [`into_raw`](Stack::into_raw).
    ///
    /// # Safety
    ///
    /// `base` came from `into_raw` of a stack of `size` usable bytes, on this
    /// thread, and this is the only `from_raw` for it.
    pub(crate) unsafe fn from_raw(base: NonNull<u8>, size: usize) -> Stack {
        Stack { base, size }
    }

    /// Usable bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The highest address (exclusive): where the stack begins.
    pub(crate) fn top(&self) -> *mut u8 {
        self.base.as_ptr().wrapping_add(mem::page_size() + self.size)
    }

    /// The top of the part the coroutine runs on (16-byte aligned): the
    /// switch's slots and the first frame go below it; above it, the colour
    /// gap and the header (see "Colours").
    pub(crate) fn switch_top(&self) -> *mut u8 {
        let colour = (self.base.as_ptr() as usize >> 12) % COLOURS;
        self.top().wrapping_sub(HEADER_SIZE + colour * COLOUR_STEP)
    }

    /// Where this stack's header lives (its top `HEADER_SIZE` bytes).
    pub(crate) fn header(&self) -> *mut overflow::Header {
        self.top().wrapping_sub(HEADER_SIZE).cast()
    }

    /// The guard page, as an address range.
    pub(crate) fn guard(&self) -> std::ops::Range<usize> {
        let start = self.base.as_ptr() as usize;
        start..start + mem::page_size()
    }
}

/// The header of the stack whose [`Stack::switch_top`] is `switch_top`: the
/// header and the colour gap above a switch top end at the next page
/// boundary.
pub(crate) fn header_above(switch_top: *mut u8) -> *mut overflow::Header {
    let page = mem::page_size();
    let top = (switch_top as usize).next_multiple_of(page);
    switch_top.wrapping_add(top - switch_top as usize - HEADER_SIZE).cast()
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: `new` linked it on this thread (a Stack never leaves its
        // thread), and only drop unlinks it.
        unsafe { overflow::unlink(self) };
        // SAFETY: we own the mapping of exactly `size + page` bytes; a Stack
        // is only dropped when no coroutine runs on it.
        unsafe { mem::unmap(self.base, self.size + mem::page_size()) };
        LIVE_STACKS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many stacks are mapped in this process (cached ones included).
static LIVE_STACKS: AtomicUsize = AtomicUsize::new(0);

/// How many coroutine stacks are mapped in this process right now (stacks
/// kept in the per-thread caches included).
pub(crate) fn live_stacks() -> usize {
    LIVE_STACKS.load(Ordering::Relaxed)
}

/// Maps left for everything else a process needs (libraries, heap arenas,
/// thread stacks) when judging whether one more coroutine stack fits.
const MAPS_RESERVED_FOR_OTHERS: u64 = 1024;

/// `vm.max_map_count`, read once per process (`None` if unreadable).
pub(crate) fn map_limit() -> Option<u64> {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    *LIMIT.get_or_init(mem::max_map_count)
}

/// Fails early, with the error a stack allocation would give, when the
/// stacks already mapped plus `pending` more (coroutines spawned that have
/// not started yet: each will need one) leave no room under
/// `vm.max_map_count` for one more, keeping `MAPS_RESERVED_FOR_OTHERS` maps
/// for the rest of the process. A cheap estimate from counters (a pending
/// coroutine may reuse a cached stack, which is counted as mapped already).
///
/// [`Stack::new`] checks with no pending stacks before every mapping, so
/// that coroutine stacks never take the last maps: near the limit, the
/// allocator's own `mmap`s and new threads would fail next, and a process
/// that cannot allocate aborts.
pub(crate) fn check_map_headroom(pending: usize) -> io::Result<()> {
    let Some(limit) = map_limit() else { return Ok(()) };
    let live = live_stacks() as u64;
    let needed = live.saturating_add(pending as u64).saturating_add(1);
    if needed.saturating_mul(MAPS_PER_STACK).saturating_add(MAPS_RESERVED_FOR_OTHERS) <= limit {
        return Ok(());
    }
    let waiting = if pending == 0 {
        String::new()
    } else {
        format!(" and {pending} spawned coroutines have yet to start (each will need a stack)")
    };
    Err(io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!(
            "cannot map another coroutine stack: {live} coroutine stacks are mapped{waiting}, each stack uses \
             {MAPS_PER_STACK} memory maps (the stack and its guard page), {MAPS_RESERVED_FOR_OTHERS} maps are kept \
             for the rest of the process, and vm.max_map_count is {limit}. Raise the limit, e.g. `sudo sysctl -w \
             vm.max_map_count={}`, or keep fewer coroutines started at once",
            limit.saturating_mul(4)
        ),
    ))
}

/// How many memory maps this process holds, from `/proc/self/maps`, read at
/// most once a second: a burst of failed stacks near the limit must not
/// re-read a file of 65 000 lines per failure (that cost a whole core).
/// Counted through a small buffer on the stack: near the limit, the heap
/// may be unable to grow (a large allocation needs a map of its own).
fn maps_held() -> Option<u64> {
    static LAST: Mutex<Option<(Instant, Option<u64>)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    match *last {
        Some((at, held)) if at.elapsed() < Duration::from_secs(1) => held,
        _ => {
            let held = count_lines("/proc/self/maps");
            *last = Some((Instant::now(), held));
            held
        }
    }
}

/// The number of lines of the file at `path`, read without allocating.
fn count_lines(path: &str) -> Option<u64> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).ok()?;
    let mut buffer = [0u8; 4096];
    let mut lines = 0u64;
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Some(lines),
            Ok(n) => lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Adds the context a user needs to a failed `mmap`/`mprotect`: when the
/// process is out of memory maps, say which sysctl limits it, and otherwise
/// say that memory or address space ran out (without blaming the sysctl).
fn explain_map_error(error: io::Error, size: usize) -> io::Error {
    if error.raw_os_error() != Some(mem::ENOMEM) {
        return io::Error::new(error.kind(), format!("cannot map a {} KiB coroutine stack: {error}", size / 1024));
    }
    let live = live_stacks();
    match (map_limit(), maps_held()) {
        (Some(limit), Some(held)) if held + MAPS_PER_STACK + 8 >= limit => io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "cannot map a coroutine stack: the process holds {held} memory maps ({live} coroutine stacks \
                 among them) and vm.max_map_count is {limit}; each coroutine stack uses {MAPS_PER_STACK} maps (the \
                 stack and its guard page). Raise the limit, e.g. `sudo sysctl -w vm.max_map_count={}`, or keep \
                 fewer coroutines started at once",
                limit.saturating_mul(4)
            ),
        ),
        _ => io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "cannot map a {} KiB coroutine stack: out of memory or address space ({error}) with {live} \
                 coroutine stacks mapped. Ask for smaller stacks (`Builder::stack_size`) or keep fewer coroutines \
                 started at once",
                size / 1024,
            ),
        ),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Stacks mapped one after another get different colours, every switch
    /// top stays 16-byte aligned in the top page, and each finds its own
    /// header (the overflow report's hint depends on that).
    #[test]
    fn switch_tops_are_coloured_and_find_their_header() {
        let stacks: Vec<Stack> = (0..2 * COLOURS).map(|_| Stack::new(MIN_STACK_SIZE).unwrap()).collect();
        let mut colours = std::collections::HashSet::new();
        for stack in &stacks {
            let (top, switch_top) = (stack.top() as usize, stack.switch_top() as usize);
            let gap = top - HEADER_SIZE - switch_top;
            assert_eq!(switch_top % 16, 0);
            assert_eq!(gap % COLOUR_STEP, 0);
            assert!(gap < COLOURS * COLOUR_STEP, "colour gap {gap} too large");
            colours.insert(gap);
            assert_eq!(header_above(stack.switch_top()), stack.header());
        }
        assert!(colours.len() >= COLOURS / 2, "only {} colours among {} stacks", colours.len(), stacks.len());
    }
}
