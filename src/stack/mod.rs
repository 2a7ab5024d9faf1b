//! Guarded coroutine stacks.
//!
//! # Layout
//!
//! ```text
//!  high addresses
//!  +-----------------------------+ <- top (mapping end, page aligned)
//!  | usable stack, read-write,   |
//!  | committed lazily by the     |    `size` bytes (a page multiple)
//!  | kernel as it is touched     |
//!  +-----------------------------+ <- base + page
//!  | guard page, PROT_NONE       |    one page: any touch faults
//!  +-----------------------------+ <- base (mapping start)
//!  low addresses
//! ```
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

pub(crate) mod cache;
pub(crate) mod overflow;

use crate::loom::process::{AtomicUsize, Ordering};
use crate::sys::mem;
use std::io;
use std::ptr::NonNull;
use std::sync::OnceLock;

/// The smallest usable stack: 32 KiB. Enough for the entry frames,
/// `catch_unwind`, and a panic whose default hook prints a backtrace
/// (`RUST_BACKTRACE=1` symbolises on the panicking stack; 16 KiB was
/// measured to overflow there, 32 KiB not).
pub const MIN_STACK_SIZE: usize = 32 * 1024;

/// The default usable stack size of a coroutine: 256 KiB.
///
/// Rust code needs more stack than C: formatting, panics (a panic that prints
/// a backtrace symbolises it on the current stack), and debug builds with
/// large unoptimised frames. 256 KiB runs all of those with room to spare,
/// while costing only address space until touched (a parked coroutine that
/// used one page of it holds one page of memory). 30 000 coroutines reserve
/// about 7.5 GiB of the 128 TiB address space.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

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

/// One guarded stack: an owned mapping of `size + page` bytes.
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
        Ok(Stack { base, size })
    }

    /// Usable bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The highest address (exclusive): where the stack begins.
    pub(crate) fn top(&self) -> *mut u8 {
        self.base.as_ptr().wrapping_add(mem::page_size() + self.size)
    }

    /// The guard page, as an address range.
    pub(crate) fn guard(&self) -> std::ops::Range<usize> {
        let start = self.base.as_ptr() as usize;
        start..start + mem::page_size()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: we own the mapping of exactly `size + page` bytes; a Stack
        // is only dropped when no coroutine runs on it.
        unsafe { mem::unmap(self.base, self.size + mem::page_size()) };
        LIVE_STACKS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many stacks are mapped in this process (cached ones included).
static LIVE_STACKS: AtomicUsize = AtomicUsize::new(0);

/// How many coroutine stacks are mapped in this process now (cached ones
/// included), for `Runtime::metrics`.
pub(crate) fn live_stacks() -> usize {
    LIVE_STACKS.load(Ordering::Relaxed)
}

/// Maps left for everything else a process needs (libraries, heap arenas,
/// thread stacks) when judging whether one more coroutine stack fits.
const MAPS_RESERVED_FOR_OTHERS: u64 = 1024;

/// Fails early, with the error a stack allocation would give, when the
/// stacks already mapped leave no room under `vm.max_map_count` for one more.
/// (A cheap estimate from a counter: the exact check happens at mmap time.)
pub(crate) fn check_map_headroom() -> io::Result<()> {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    let Some(limit) = *LIMIT.get_or_init(mem::max_map_count) else { return Ok(()) };
    let live = LIVE_STACKS.load(Ordering::Relaxed) as u64;
    if (live + 1) * MAPS_PER_STACK + MAPS_RESERVED_FOR_OTHERS <= limit {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!(
            "cannot start another coroutine: {live} coroutine stacks are mapped, each uses {MAPS_PER_STACK} memory \
             maps (the stack and its guard page), and vm.max_map_count is {limit}. Raise the limit, e.g. \
             `sudo sysctl -w vm.max_map_count={}`, or keep fewer coroutines started at once",
            limit.saturating_mul(4)
        ),
    ))
}

/// Adds the context a user needs to a failed `mmap`/`mprotect`: when the
/// process is out of memory maps, say which sysctl limits it.
fn explain_map_error(error: io::Error, size: usize) -> io::Error {
    if error.raw_os_error() != Some(mem::ENOMEM) {
        return io::Error::new(error.kind(), format!("cannot map a {} KiB coroutine stack: {error}", size / 1024));
    }
    let limit = mem::max_map_count();
    let held = std::fs::read_to_string("/proc/self/maps").map(|m| m.lines().count() as u64).ok();
    match (limit, held) {
        (Some(limit), Some(held)) if held + MAPS_PER_STACK + 8 >= limit => io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "cannot map a coroutine stack: the process holds {held} memory maps and vm.max_map_count is \
                 {limit}; each coroutine stack uses {MAPS_PER_STACK} maps (the stack and its guard page). \
                 Raise the limit, e.g. `sudo sysctl -w vm.max_map_count={}`, or keep fewer coroutines \
                 started at once",
                limit.saturating_mul(4)
            ),
        ),
        _ => io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "cannot map a {} KiB coroutine stack: out of memory or address space ({error}); \
                 vm.max_map_count is {}, each coroutine stack uses {MAPS_PER_STACK} maps",
                size / 1024,
                limit.map_or_else(|| "unknown".to_string(), |l| l.to_string()),
            ),
        ),
    }
}
