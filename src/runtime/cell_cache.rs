//! Task cells: carved from blocks of memory that the runtime maps itself,
//! and cached per thread once freed, for the next spawns on that thread.
//!
//! # Size classes
//!
//! A task cell's layout depends on its closure and result types, so cells
//! come in many sizes. The cache rounds a cell's size up to a multiple of
//! `CLASS_STEP` (32 bytes) and keeps one free list per such class, up to
//! `MAX_CACHED_SIZE`; every cell of a class is carved with the class's
//! layout (its rounded size, `CELL_ALIGN`), so any cell of the class can
//! serve any request of it. Cells larger than that, or aligned more
//! strictly, bypass the cache (and the blocks below).
//!
//! # Blocks
//!
//! A cell of a cached class is carved from a *block*: 256 KiB
//! (`BLOCK_BYTES`) mapped on its own (`sys::mem::map_aligned`) at a
//! multiple of its size, holding cells of one class after a header. A
//! thread carves from its current block of each class, one cell after the
//! next, and maps a new block when that one is used up; a carve is a
//! pointer bump, where glibc's `malloc` of a fresh chunk and its `free`
//! later cost about 200 instructions each.
//!
//! ```text
//!  block (BLOCK_BYTES, aligned to it)          header = cell address & !(BLOCK_BYTES - 1)
//!  +--------+--------+--------+-- ... --+--------+-----------------+---------+
//!  | header | cell 0 | cell 1 |         | cell k | not yet carved  | (slack) |
//!  +--------+--------+--------+-- ... --+--------+-----------------+---------+
//!  |<------- page 0 ------->|<-- page 1 ...        (a cell overlaps one page or two)
//!
//!  header.live      cells not yet released: in use, cached in any thread's
//!                   lists, or not yet carved (held by the carving thread)
//!  header.pages[p]  of the cells that overlap page p, those not yet released
//! ```
//!
//! A cell is *released* — given back to its block for good — when it
//! leaves the lists for good: beyond a thread's bound, at an epoch's end
//! (below), or when its thread exits (which releases the part of its blocks
//! it never carved as well). A released cell is not used again: its memory
//! goes back with its pages and its block. A release ([`Release`]) takes
//! its cells off the page counts (one read-modify-write per page, however
//! many cells), then:
//!
//! | `live` seen (Acquire load) | what the release does |
//! |---|---|
//! | equal to the cells it releases | nobody else holds a cell: it unmaps the block |
//! | larger | it discards (`MADV_DONTNEED`) the pages whose count it brought to zero, except the header's and those never written (past a thread's carving point, at its exit), then takes its cells off `live` (AcqRel), and unmaps the block if that took the last ones |
//!
//! Every count only falls after the block's creation, so a count that reaches
//! zero stays there; each release's page counts and discards come before
//! its `live` decrement, so nothing touches a block after the decrement
//! that empties it. A long-lived task keeps its block mapped (virtual memory)
//! but only its own page or two, and the header's, resident once the cells
//! around it have been released. Cells larger than `MAX_CACHED_SIZE` or aligned more
//! strictly than `CELL_ALIGN` come from the global allocator and go back to
//! it.
//!
//! # The free lists
//!
//! Intrusive: a cached cell's first word links to the next one. A cell
//! freed on one thread is cached there and reused by that thread's spawns
//! (a cell is plain memory once freed, wherever it was carved). Thread
//! exit releases what its lists hold. Only the owning thread touches its
//! lists and its carving state, and nothing is called while one is being
//! changed, so a `Cell` per field suffices.
//!
//! # How much a thread keeps
//!
//! ```text
//!  thread            may keep             gives back
//!  ----------------  -------------------  ---------------------------------------
//!  any thread        1 MiB (BASE_BYTES)   a cell freed beyond the bound, at once
//!                                         (released to its block, as all below)
//!  a worker thread   64 MiB (WORKER_      at the end of each epoch, class by class,
//!                    LIMIT_BYTES)         the cells its list held unused during
//!                                         the whole epoch (its low-water mark),
//!                                         down to 1 MiB in all
//! ```
//!
//! A worker's lists thus follow its bursts: cells freed after a burst of
//! spawns serve the next burst, and when no burst comes for an epoch, the
//! cells that stayed unused are released to their blocks (a list's
//! *low-water mark* is the least it held at any moment of the epoch: that
//! many were never needed). Marks are kept per size class, so a class whose cells are
//! all in use every epoch keeps them while an idle class gives its cells
//! back.
//!
//! An epoch ends when the worker sees a second has passed on its coarse
//! clock (`runtime::clock`), which it checks in its fairness rounds and
//! after an idle sleep. A busy worker refreshes that clock about every
//! thousand scheduling rounds, so its epochs last about a second or about a
//! thousand rounds, whichever is longer (seconds, where its coroutines run
//! milliseconds between switches: the 64 MiB bound holds meanwhile). An idle
//! worker with cells above 1 MiB sleeps with a deadline at the end of its
//! epoch, so it gives them back within about two seconds of going idle
//! (`worker::WorkerLocal::sleep`), as jemalloc purges dirty pages after a
//! decay time and Go's scavenger returns idle memory in the background.
//!
//! # What it buys (measured)
//!
//! Where spawns and joins alternate, so that freed cells come back soon
//! (a spawn tree: skynet on 2 workers), a cell costs no malloc and no free:
//! 1 408 -> 1 138 instructions per leaf (callgrind). Where 100 000 cells
//! are alive at once (spawn them all, then join them all), the first burst
//! must take every cell from the allocator, and with a bound of 1 MiB every
//! later burst did too: glibc gave the freed heap top back to the kernel
//! (its trim threshold) and every burst faulted its ~40 MB in again,
//! 9 600 page faults per burst. With a worker keeping up to 64 MiB, the
//! criterion bench `weft spawn+join 100k (2 workers)` went from 34.3 ms to
//! 9.3 ms (side by side, the same machine and minute). Carving the cells
//! from blocks instead of glibc's `malloc` (2026-12-07) took a first burst
//! of 100 000 on 2 workers from 995 to 583 instructions per coroutine
//! (callgrind, `WEFT_RUNTIME_COUNT=spawn`: about 200 in `malloc` and 200 in
//! the `free` that gives the cell back, against a bump and a share of a
//! release), and its time from 23.9-26.5 to 19.6-22.2 ms (five runs each,
//! in turns, a fresh runtime each); a parked coroutine's cell takes its
//! class's 288 bytes instead of glibc's 304-byte chunk.

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::ptr::NonNull;

use crate::loom::process::{AtomicU32, AtomicUsize, Ordering};
use crate::sys::mem::{self, PAGE_SIZE};

/// Size classes are multiples of this many bytes.
const CLASS_STEP: usize = 32;
/// The largest cell size the cache keeps.
const MAX_CACHED_SIZE: usize = 1024;
const CLASSES: usize = MAX_CACHED_SIZE / CLASS_STEP;
/// The alignment of every cell the cache allocates.
const CELL_ALIGN: usize = 16;
/// What any thread's lists may hold in all, and what a worker's keep
/// through an epoch without use.
const BASE_BYTES: usize = 1 << 20;
/// What a worker thread's lists may hold in all.
pub(crate) const WORKER_LIMIT_BYTES: usize = 64 << 20;
/// Cells are carved from blocks of this many bytes, each mapped on its own
/// at an address that is a multiple of its size (so a cell finds its
/// block's header by masking its own address).
const BLOCK_BYTES: usize = 256 << 10;
/// A block's pages; one bit each in [`Release`]'s mask.
const BLOCK_PAGES: usize = BLOCK_BYTES / PAGE_SIZE;
const _: () = assert!(BLOCK_PAGES <= 64 && BLOCK_BYTES.is_power_of_two());

/// The head of a block (see "Blocks" above), on its first page.
struct BlockHeader {
    /// The block's cells not yet released: in use, cached in some thread's
    /// lists, or not yet carved (the carving thread holds those).
    live: AtomicUsize,
    /// Per page: how many of the cells that overlap it are not yet released.
    pages: [AtomicU32; BLOCK_PAGES],
}

/// Where a block's first cell begins.
const HEADER_BYTES: usize = std::mem::size_of::<BlockHeader>().next_multiple_of(CELL_ALIGN);

struct Lists {
    heads: [Cell<*mut u8>; CLASSES],
    cached_bytes: Cell<usize>,
    /// BASE_BYTES, or what `raise_limit` set.
    limit: Cell<usize>,
    /// Per class: how many cells the list holds, and the least it held
    /// since the epoch began (its low-water mark: that many lay unused).
    counts: [Cell<u32>; CLASSES],
    low_water: [Cell<u32>; CLASSES],
    /// Per class: the next cell to carve from this thread's block of the
    /// class, and the end of that block's last cell (both null before the
    /// first block).
    carve_next: [Cell<*mut u8>; CLASSES],
    carve_end: [Cell<*mut u8>; CLASSES],
}

impl Drop for Lists {
    fn drop(&mut self) {
        for class in 0..CLASSES {
            let count = self.counts[class].get();
            // SAFETY: the list's cells are cached ones, held by nobody else;
            // the list forgets them (its head is cleared).
            unsafe { release_list(self.heads[class].replace(std::ptr::null_mut()), count, class) };
            let (next, end) = (self.carve_next[class].get(), self.carve_end[class].get());
            if next < end {
                let mut release = Release::new(next, class);
                let mut cell = next;
                while cell < end {
                    // SAFETY: the block's cells from `next` on were never
                    // carved: this thread holds them, and forgets them now.
                    unsafe { release.add(cell) };
                    cell = cell.wrapping_add(class_layout(class).size());
                }
                // SAFETY: nothing was ever written at or after `next`.
                unsafe { release.finish(next.addr() & (BLOCK_BYTES - 1)) };
            }
        }
    }
}

thread_local! {
    static LISTS: Lists = const {
        Lists {
            heads: [const { Cell::new(std::ptr::null_mut()) }; CLASSES],
            cached_bytes: Cell::new(0),
            limit: Cell::new(BASE_BYTES),
            counts: [const { Cell::new(0) }; CLASSES],
            low_water: [const { Cell::new(0) }; CLASSES],
            carve_next: [const { Cell::new(std::ptr::null_mut()) }; CLASSES],
            carve_end: [const { Cell::new(std::ptr::null_mut()) }; CLASSES],
        }
    };
}

/// The class of `layout`, if the cache serves it.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_CACHED_SIZE || layout.align() > CELL_ALIGN || layout.size() == 0 {
        return None;
    }
    Some((layout.size() - 1) / CLASS_STEP)
}

/// The layout every cell of `class` (< CLASSES) is allocated with.
#[inline(always)]
fn class_layout(class: usize) -> Layout {
    debug_assert!(class < CLASSES);
    const { assert!(CELL_ALIGN.is_power_of_two() && CLASS_STEP % CELL_ALIGN == 0) };
    // SAFETY: CELL_ALIGN is a power of two, and the size, a multiple of it
    // no larger than MAX_CACHED_SIZE, is far below isize::MAX.
    unsafe { Layout::from_size_align_unchecked((class + 1) * CLASS_STEP, CELL_ALIGN) }
}

/// Memory for a cell of `layout`: a cached one of its class, or a new one
/// carved from this thread's block of the class.
#[inline]
pub(crate) fn allocate(layout: Layout) -> NonNull<u8> {
    let Some(class) = class_of(layout) else {
        return allocate_large(layout);
    };
    let cell = LISTS
        .try_with(|lists| {
            let cell = lists.heads[class].get();
            if cell.is_null() {
                return carve(lists, class);
            }
            // SAFETY: a cached cell; its first word links to the next.
            lists.heads[class].set(unsafe { cell.cast::<*mut u8>().read() });
            lists.cached_bytes.set(lists.cached_bytes.get() - class_layout(class).size());
            let count = lists.counts[class].get() - 1;
            lists.counts[class].set(count);
            lists.low_water[class].set(lists.low_water[class].get().min(count));
            cell
        })
        // The thread is past its thread-locals' destruction: a block of
        // its own for this one cell.
        .unwrap_or_else(|_| new_block(class, 1));
    // SAFETY: cached, carved and new cells all lie in a mapped block.
    unsafe { NonNull::new_unchecked(cell) }
}

/// The next cell of this thread's block of `class`, or the first of a new
/// block when that one is used up.
#[inline]
fn carve(lists: &Lists, class: usize) -> *mut u8 {
    let size = class_layout(class).size();
    let next = lists.carve_next[class].get();
    if next < lists.carve_end[class].get() {
        lists.carve_next[class].set(next.wrapping_add(size));
        return next;
    }
    // The old block is carved to its last cell (or there is none): this
    // thread holds nothing of it any more.
    let cells = cells_per_block(class);
    let first = new_block(class, cells);
    lists.carve_next[class].set(first.wrapping_add(size));
    lists.carve_end[class].set(first.wrapping_add(cells * size));
    first
}

#[cold]
fn allocate_large(layout: Layout) -> NonNull<u8> {
    // SAFETY: the layout is not zero-sized (a task cell is not).
    let raw = unsafe { alloc::alloc(layout) };
    NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

/// How many cells of `class` a block holds.
#[inline(always)]
fn cells_per_block(class: usize) -> usize {
    (BLOCK_BYTES - HEADER_BYTES) / class_layout(class).size()
}

/// The header of the block that `cell` (any address inside it) lies in.
#[inline(always)]
fn header_of(cell: *mut u8) -> NonNull<BlockHeader> {
    let header = cell.map_addr(|addr| addr & !(BLOCK_BYTES - 1)).cast::<BlockHeader>();
    // SAFETY: blocks are mapped at multiples of BLOCK_BYTES, never at 0.
    unsafe { NonNull::new_unchecked(header) }
}

/// Maps a block for cells of `class` whose first `held` cells are counted
/// as held by the caller (all of them for a carving thread; one for a
/// thread without its lists), and returns its first cell.
///
/// # Panics
///
/// When the kernel maps no block (out of memory or address space, or the
/// process is at `vm.max_map_count`): the spawn that asked for a cell
/// panics with what went wrong.
#[cold]
#[inline(never)]
fn new_block(class: usize, held: usize) -> *mut u8 {
    debug_assert!(held >= 1 && held <= cells_per_block(class));
    let base = mem::map_aligned(BLOCK_BYTES, BLOCK_BYTES).unwrap_or_else(|error| {
        panic!(
            "weft cannot spawn: mapping a {} KiB block for task cells failed ({error}; vm.max_map_count is {}). \
             Free memory, raise the limit or keep fewer coroutines alive at once",
            BLOCK_BYTES / 1024,
            mem::max_map_count().map_or("unknown".to_string(), |limit| limit.to_string())
        )
    });
    let pages = page_counts(class_layout(class).size(), held);
    // The block reaches another thread only through a cell's hand-off (a
    // spawn's queue push, a join handle), which orders these stores before
    // that thread's accesses: Relaxed suffices.
    // SAFETY: a fresh mapping, zero-filled and aligned for the header; all
    // zeros is a valid header (atomics of 0).
    let header = unsafe { base.cast::<BlockHeader>().as_ref() };
    header.live.store(held, Ordering::Relaxed);
    for (counter, count) in header.pages.iter().zip(pages) {
        counter.store(count, Ordering::Relaxed);
    }
    base.as_ptr().wrapping_add(HEADER_BYTES)
}

/// Per page of a block, how many of its first `held` cells of `size` bytes
/// overlap it: those from the first whose end lies past the page's start to
/// the last that begins before its end.
fn page_counts(size: usize, held: usize) -> [u32; BLOCK_PAGES] {
    let cells_end = HEADER_BYTES + held * size;
    std::array::from_fn(|page| {
        let (start, end) = (page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
        if held == 0 || end <= HEADER_BYTES || start >= cells_end {
            return 0;
        }
        let first = (start + 1).saturating_sub(HEADER_BYTES + size).div_ceil(size);
        let last = (end.min(cells_end) - 1 - HEADER_BYTES) / size;
        (last + 1 - first) as u32
    })
}

/// What a [`Release`] did with its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Released {
    /// The block still holds other cells; these pages of it, each emptied
    /// of cells by this release, went back to the kernel.
    Pages(u32),
    /// These were the block's last cells: it was unmapped.
    Block,
}

/// Gives cells of one block back to it, for good (see "Blocks" above):
/// [`add`](Release::add) each cell, then [`finish`](Release::finish).
struct Release {
    header: NonNull<BlockHeader>,
    size: usize,
    /// How many cells were added: the caller's share of `live`.
    held: usize,
    /// Per page, how many of the added cells overlap it: taken off the
    /// block's counts in `finish`, one read-modify-write per page.
    pages: [u32; BLOCK_PAGES],
}

impl Release {
    /// A release of cells of `class` from the block that `cell` lies in.
    fn new(cell: *mut u8, class: usize) -> Self {
        Release { header: header_of(cell), size: class_layout(class).size(), held: 0, pages: [0; BLOCK_PAGES] }
    }

    /// Whether `cell` lies in this release's block.
    fn covers(&self, cell: *mut u8) -> bool {
        header_of(cell) == self.header
    }

    /// Counts `cell` out of its pages.
    ///
    /// # Safety
    ///
    /// - `cell` is a cell of this release's block and class that the caller
    ///   holds (in no list, used by nobody) and gives up now;
    /// - no cell is added twice, and `finish` is called afterwards.
    unsafe fn add(&mut self, cell: *mut u8) {
        debug_assert!(self.covers(cell));
        let offset = cell.addr() & (BLOCK_BYTES - 1);
        let (first, last) = (offset / PAGE_SIZE, (offset + self.size - 1) / PAGE_SIZE);
        // A cell (at most 1 KiB) overlaps one page or two.
        self.pages[first] += 1;
        if last != first {
            self.pages[last] += 1;
        }
        self.held += 1;
    }

    /// Gives up the added cells: unmaps the block if they were its last,
    /// else discards the pages they emptied (but page 0, the header's, and
    /// the pages from `untouched_from` on), then takes them off `live` (and
    /// unmaps the block if others went meanwhile).
    ///
    /// # Safety
    ///
    /// Nothing at or after byte `untouched_from` of the block was written
    /// (`BLOCK_BYTES` where anything may have been): its pages need no
    /// discard.
    unsafe fn finish(self, untouched_from: usize) -> Option<Released> {
        if self.held == 0 {
            return None;
        }
        let base = self.header.cast::<u8>();
        // SAFETY: the added cells are still counted in `live`: the block
        // stays mapped until the `fetch_sub` below.
        let header = unsafe { self.header.as_ref() };
        // Acquire: the other holders' releases (AcqRel decrements of `live`,
        // each after that holder's page counts and discards) happen before
        // the unmap. While `live` still counts them, nobody else holds a
        // cell, and `live` never grows: the block is this thread's alone.
        if header.live.load(Ordering::Acquire) == self.held {
            // SAFETY: the whole block, as mapped by `new_block`; nobody
            // holds a cell of it, so nothing points into it any more.
            unsafe { mem::unmap(base, BLOCK_BYTES) };
            return Some(Released::Block);
        }
        let mut emptied = 0u64;
        for (page, (counter, &count)) in header.pages.iter().zip(&self.pages).enumerate() {
            // AcqRel: Release orders this thread's use of its cells before
            // the count; Acquire, where it reaches zero, makes every other
            // holder's use of the page happen before the discard below.
            if count != 0 && counter.fetch_sub(count, Ordering::AcqRel) == count {
                emptied |= 1 << page;
            }
        }
        // Page 0 holds the header, which the last holder reads.
        emptied &= pages_below(untouched_from) & !1;
        let discarded = emptied.count_ones();
        while emptied != 0 {
            // One call per run of consecutive pages.
            let first = emptied.trailing_zeros() as usize;
            let run = (emptied >> first).trailing_ones() as usize;
            // SAFETY: no cell overlapping these pages is held by anyone (their
            // counts reached zero, with Acquire), they are not the header's,
            // and the block stays mapped: this release still counts in `live`.
            unsafe { mem::discard(base.add(first * PAGE_SIZE), run * PAGE_SIZE) };
            emptied &= !(((1u64 << run) - 1) << first);
        }
        // AcqRel: Release orders this thread's uses, page counts and
        // discards before the decrement; Acquire, for the one that takes the
        // last cells off, orders everyone's before the unmap.
        if header.live.fetch_sub(self.held, Ordering::AcqRel) == self.held {
            // SAFETY: as above: these were the last cells held.
            unsafe { mem::unmap(base, BLOCK_BYTES) };
            return Some(Released::Block);
        }
        Some(Released::Pages(discarded))
    }
}

/// The mask of the pages of a block that begin below byte `offset` of it.
fn pages_below(offset: usize) -> u64 {
    match offset.div_ceil(PAGE_SIZE) {
        // A shift by 64 would overflow: all pages, from an offset in the last.
        pages @ 0..BLOCK_PAGES => (1u64 << pages) - 1,
        _ => u64::MAX,
    }
}

/// Gives back, for good, the first `count` cells of a list (linked through
/// their first words) of `class`, a block at a time.
///
/// # Safety
///
/// The list's first `count` cells (it has that many) are cached cells of
/// `class` that the caller holds and forgets.
unsafe fn release_list(mut cell: *mut u8, count: u32, class: usize) {
    let mut release: Option<Release> = None;
    for _ in 0..count {
        // SAFETY: a cached cell: its first word links to the next.
        let next = unsafe { cell.cast::<*mut u8>().read() };
        if release.as_ref().is_some_and(|release| !release.covers(cell)) {
            // SAFETY: cells may have been written anywhere.
            unsafe { release.take().expect("checked").finish(BLOCK_BYTES) };
        }
        // SAFETY: the caller gives up the cell; each is added once.
        unsafe { release.get_or_insert_with(|| Release::new(cell, class)).add(cell) };
        cell = next;
    }
    if let Some(release) = release {
        // SAFETY: as above.
        unsafe { release.finish(BLOCK_BYTES) };
    }
}

/// Gives back the memory of a cell of `layout`, from [`allocate`].
///
/// # Safety
///
/// `cell` came from `allocate(layout)` (on any thread) and is not used
/// afterwards.
#[inline]
pub(crate) unsafe fn free(cell: NonNull<u8>, layout: Layout) {
    let Some(class) = class_of(layout) else {
        // SAFETY: allocated with exactly this layout (the caller's promise).
        unsafe { alloc::dealloc(cell.as_ptr(), layout) };
        return;
    };
    let class_size = class_layout(class).size();
    let cached = LISTS
        .try_with(|lists| {
            if lists.cached_bytes.get() + class_size > lists.limit.get() {
                return false;
            }
            // SAFETY: the cell is ours now (the caller's promise) and at
            // least a word long and aligned for it.
            unsafe { cell.as_ptr().cast::<*mut u8>().write(lists.heads[class].get()) };
            lists.heads[class].set(cell.as_ptr());
            lists.cached_bytes.set(lists.cached_bytes.get() + class_size);
            lists.counts[class].set(lists.counts[class].get() + 1);
            true
        })
        .unwrap_or(false);
    if !cached {
        // SAFETY: the caller gave the cell up; it is in no list.
        unsafe { release_one(cell.as_ptr(), class) };
    }
}

/// Gives one cell of `class` back to its block.
///
/// # Safety
///
/// The caller holds the cell (it is in no list, used by nobody) and gives
/// it up.
#[cold]
unsafe fn release_one(cell: *mut u8, class: usize) -> Released {
    let mut release = Release::new(cell, class);
    // SAFETY: the caller's promise; the cell may have been written anywhere.
    unsafe {
        release.add(cell);
        release.finish(BLOCK_BYTES).expect("one cell was added")
    }
}

/// Lets this thread's lists hold up to `bytes` (a worker thread, at its
/// start; see "How much a thread keeps").
pub(crate) fn raise_limit(bytes: usize) {
    let _ = LISTS.try_with(|lists| lists.limit.set(bytes.max(BASE_BYTES)));
}

/// Ends this thread's epoch: releases to their blocks, class by class,
/// the cells that lay unused in its list throughout the epoch (the list's
/// low-water mark), largest classes first, until the lists hold
/// `BASE_BYTES`; then starts the next epoch. Returns how many bytes the
/// lists still hold beyond `BASE_BYTES`.
pub(crate) fn end_epoch() -> usize {
    LISTS
        .try_with(|lists| {
            for class in (0..CLASSES).rev() {
                let size = class_layout(class).size();
                let over = lists.cached_bytes.get().saturating_sub(BASE_BYTES).div_ceil(size);
                let unused = (lists.low_water[class].get() as usize).min(over) as u32;
                // The first `unused` cells of the list (it holds at least
                // its low-water mark) are unlinked, then given back.
                let first = lists.heads[class].get();
                let mut rest = first;
                for _ in 0..unused {
                    // SAFETY: a cached cell: its first word links to the next.
                    rest = unsafe { rest.cast::<*mut u8>().read() };
                }
                lists.heads[class].set(rest);
                lists.cached_bytes.set(lists.cached_bytes.get() - unused as usize * size);
                lists.counts[class].set(lists.counts[class].get() - unused);
                // SAFETY: cached cells of the class, unlinked from the list.
                unsafe { release_list(first, unused, class) };
                lists.low_water[class].set(lists.counts[class].get());
            }
            lists.cached_bytes.get().saturating_sub(BASE_BYTES)
        })
        .unwrap_or(0)
}

/// How many bytes this thread's lists hold beyond what they keep for good.
pub(crate) fn surplus() -> usize {
    LISTS.try_with(|lists| lists.cached_bytes.get().saturating_sub(BASE_BYTES)).unwrap_or(0)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A freed cell is handed out again for a request of its class, on the
    /// same thread; a cell too large for the cache goes back to the
    /// allocator; a thread's cache never holds more than its bound.
    #[test]
    fn freed_cells_are_reused_within_their_class_and_bound() {
        let layout = Layout::from_size_align(300, 8).unwrap();
        let same_class = Layout::from_size_align(290, 16).unwrap();
        let a = allocate(layout);
        // SAFETY: from `allocate(layout)`, not used afterwards.
        unsafe { free(a, layout) };
        let b = allocate(same_class);
        assert_eq!(a, b, "the freed cell of the class is reused");
        // SAFETY: as above.
        unsafe { free(b, same_class) };

        let big = Layout::from_size_align(MAX_CACHED_SIZE + 1, 8).unwrap();
        let c = allocate(big);
        // SAFETY: as above; bypasses the cache.
        unsafe { free(c, big) };

        let cells: Vec<_> = (0..2 * BASE_BYTES / 320).map(|_| allocate(layout)).collect();
        for cell in cells {
            // SAFETY: as above.
            unsafe { free(cell, layout) };
        }
        let cached = LISTS.with(|lists| lists.cached_bytes.get());
        assert!(cached <= BASE_BYTES, "{cached} bytes cached");
        assert!(cached > BASE_BYTES / 2, "the cache kept only {cached} bytes");
    }

    /// The page counts a block starts with are those of the cells that
    /// overlap each page, counted one cell at a time, for every class and
    /// for a block held whole, held in part and held for one cell.
    #[test]
    fn a_new_blocks_page_counts_are_the_cells_over_each_page() {
        for class in 0..CLASSES {
            let size = class_layout(class).size();
            let per_block = cells_per_block(class);
            for held in [0, 1, 2, 17, per_block / 2, per_block - 1, per_block] {
                let mut expected = [0u32; BLOCK_PAGES];
                for index in 0..held {
                    let offset = HEADER_BYTES + index * size;
                    for count in &mut expected[offset / PAGE_SIZE..=(offset + size - 1) / PAGE_SIZE] {
                        *count += 1;
                    }
                }
                assert_eq!(page_counts(size, held), expected, "class of {size} bytes, {held} cells held");
            }
        }
    }

    /// A thread carves a class's cells one after another from a block
    /// aligned to its size, after the header, and maps a new block when
    /// the first is used up. Run on a thread of its own, so that it carves
    /// from a fresh block.
    #[test]
    fn a_thread_carves_consecutive_cells_from_an_aligned_block() {
        std::thread::spawn(|| {
            let layout = Layout::from_size_align(200, 8).unwrap();
            let class = class_of(layout).unwrap();
            let (size, per_block) = (class_layout(class).size(), cells_per_block(class));
            let cells: Vec<_> = (0..per_block + 1).map(|_| allocate(layout).as_ptr()).collect();
            let block = header_of(cells[0]).as_ptr().addr();
            assert_eq!(block % BLOCK_BYTES, 0);
            assert_eq!(cells[0].addr(), block + HEADER_BYTES, "the first cell follows the header");
            for (index, cell) in cells[..per_block].iter().enumerate() {
                assert_eq!(cell.addr(), block + HEADER_BYTES + index * size, "cell {index}");
            }
            let next_block = header_of(cells[per_block]).as_ptr().addr();
            assert_ne!(next_block, block, "the block holds {per_block} cells");
            assert_eq!(cells[per_block].addr(), next_block + HEADER_BYTES);
            for cell in cells {
                // SAFETY: from `allocate(layout)`, not used afterwards.
                unsafe { free(NonNull::new(cell).unwrap(), layout) };
            }
        })
        .join()
        .expect("no panic");
    }

    /// Cells given back to their block: the pages they empty go back to the
    /// kernel (and read as zeros), the cells still held keep what was
    /// written in them, and the release of the last cells unmaps the block.
    #[test]
    fn a_release_discards_the_pages_it_empties_and_the_last_unmaps_the_block() {
        std::thread::spawn(|| {
            let layout = Layout::from_size_align(1000, 8).unwrap();
            let class = class_of(layout).unwrap();
            let (size, per_block) = (class_layout(class).size(), cells_per_block(class));
            let cells: Vec<*mut u8> = (0..per_block).map(|_| allocate(layout).as_ptr()).collect();
            for (index, &cell) in cells.iter().enumerate() {
                // SAFETY: a cell of `size` bytes that this test holds.
                unsafe { cell.write_bytes(index as u8 | 1, size) };
            }
            // The middle third: which pages hold only its cells?
            let (from, to) = (per_block / 3, 2 * per_block / 3);
            let offset = |index: usize| cells[index].addr() & (BLOCK_BYTES - 1);
            let emptied = (1..BLOCK_PAGES)
                .filter(|&page| {
                    let (start, end) = (page * PAGE_SIZE, (page + 1) * PAGE_SIZE);
                    let over: Vec<usize> =
                        (0..per_block).filter(|&i| offset(i) < end && offset(i) + size > start).collect();
                    !over.is_empty() && over.iter().all(|&i| (from..to).contains(&i))
                })
                .collect::<Vec<_>>();
            assert!(emptied.len() >= 2, "the test releases whole pages");
            let mut release = Release::new(cells[from], class);
            for &cell in &cells[from..to] {
                // SAFETY: held by this test, given up once.
                unsafe { release.add(cell) };
            }
            // SAFETY: as above.
            let released = unsafe { release.finish(BLOCK_BYTES) };
            assert_eq!(released, Some(Released::Pages(emptied.len() as u32)));
            let base = header_of(cells[0]).as_ptr().cast::<u8>();
            for page in &emptied {
                // SAFETY: a discarded page of the still-mapped block.
                let first = unsafe { base.add(page * PAGE_SIZE).read_volatile() };
                assert_eq!(first, 0, "page {page} was given back and reads as zeros");
            }
            for index in (0..from).chain(to..per_block) {
                // SAFETY: a cell this test still holds.
                let bytes = unsafe { std::slice::from_raw_parts(cells[index], size) };
                assert!(bytes.iter().all(|&b| b == index as u8 | 1), "cell {index} kept its contents");
            }
            let mut release = Release::new(cells[0], class);
            for &cell in cells[..from].iter().chain(&cells[to..]) {
                // SAFETY: held by this test, given up once.
                unsafe { release.add(cell) };
            }
            // SAFETY: as above.
            assert_eq!(unsafe { release.finish(BLOCK_BYTES) }, Some(Released::Block));
        })
        .join()
        .expect("no panic");
    }

    /// A thread's exit gives back the cells its lists hold and the part of
    /// its blocks it never carved; the block goes when the last cell held
    /// elsewhere (here by another thread) is given back.
    #[test]
    fn a_threads_exit_gives_back_its_cells_and_the_uncarved_rest() {
        let layout = Layout::from_size_align(700, 8).unwrap();
        let class = class_of(layout).unwrap();
        let kept = std::thread::spawn(move || {
            let cells: Vec<_> = (0..10).map(|_| allocate(layout)).collect();
            for &cell in &cells[1..] {
                // SAFETY: from `allocate(layout)`, not used afterwards.
                unsafe { free(cell, layout) };
            }
            assert_eq!(cached(), 9 * class_layout(class).size());
            cells[0].as_ptr().expose_provenance()
        })
        .join()
        .expect("no panic");
        let kept = std::ptr::with_exposed_provenance_mut::<u8>(kept);
        // SAFETY: the cell the thread handed over; nobody else holds it.
        // The thread's exit released the 9 cached and the uncarved cells.
        assert_eq!(unsafe { release_one(kept, class) }, Released::Block);
    }

    #[test]
    fn pages_below_an_offset() {
        assert_eq!(pages_below(0), 0);
        assert_eq!(pages_below(1), 0b1);
        assert_eq!(pages_below(PAGE_SIZE), 0b1);
        assert_eq!(pages_below(PAGE_SIZE + 1), 0b11);
        assert_eq!(pages_below(BLOCK_BYTES - PAGE_SIZE), u64::MAX >> 1);
        assert_eq!(pages_below(BLOCK_BYTES - PAGE_SIZE + 1), u64::MAX);
        assert_eq!(pages_below(BLOCK_BYTES), u64::MAX);
    }

    /// A thread whose carving point lies in its block's last page exits:
    /// the pages its cached cells emptied go back (they read as zeros), up
    /// to the last (helper-59's review found the mask of written pages
    /// overflowing there); the block goes with the last cell held elsewhere.
    #[test]
    fn an_exit_with_the_carving_point_in_the_last_page_gives_back_the_emptied_pages() {
        let layout = Layout::from_size_align(1024, 16).unwrap();
        let class = class_of(layout).unwrap();
        let (size, per_block) = (class_layout(class).size(), cells_per_block(class));
        let offset_of_last = HEADER_BYTES + (per_block - 1) * size;
        assert!(offset_of_last > BLOCK_BYTES - PAGE_SIZE, "the last cell begins in the last page");
        let kept = std::thread::spawn(move || {
            // All but the last cell; the carving point is then in the last page.
            let cells: Vec<_> = (0..per_block - 1).map(|_| allocate(layout)).collect();
            for &cell in &cells {
                // SAFETY: a cell of `size` bytes that this thread holds.
                unsafe { cell.as_ptr().write_bytes(0xa5, size) };
            }
            for &cell in &cells[1..] {
                // SAFETY: from `allocate(layout)`, not used afterwards.
                unsafe { free(cell, layout) };
            }
            cells[0].as_ptr().expose_provenance()
        })
        .join()
        .expect("no panic");
        let kept = std::ptr::with_exposed_provenance_mut::<u8>(kept);
        let base = header_of(kept).as_ptr().cast::<u8>();
        for page in [2, BLOCK_PAGES / 2, BLOCK_PAGES - 2] {
            // SAFETY: the block stays mapped while this test holds `kept`.
            let byte = unsafe { base.add(page * PAGE_SIZE + 100).read_volatile() };
            assert_eq!(byte, 0, "page {page}, emptied at the thread's exit, was given back");
        }
        // SAFETY: the cell the thread handed over; nobody else holds it.
        assert_eq!(unsafe { release_one(kept, class) }, Released::Block);
    }

    /// Two threads release the two halves of a block at once, 200 times:
    /// each time exactly one of them unmaps it (whether it saw the other's
    /// cells gone before it began or took the last ones off `live`).
    #[test]
    fn two_threads_releasing_one_block_at_once_unmap_it_once() {
        let layout = Layout::from_size_align(900, 16).unwrap();
        let class = class_of(layout).unwrap();
        let per_block = cells_per_block(class);
        for round in 0..200 {
            // A fresh thread carves exactly one block and holds no rest.
            let cells: Vec<usize> = std::thread::spawn(move || {
                (0..per_block).map(|_| allocate(layout).as_ptr().expose_provenance()).collect()
            })
            .join()
            .expect("no panic");
            let start = std::sync::Barrier::new(2);
            let outcomes: Vec<Released> = std::thread::scope(|scope| {
                let halves = cells.chunks(per_block / 2 + 1).map(|half| {
                    let start = &start;
                    scope.spawn(move || {
                        let first = std::ptr::with_exposed_provenance_mut::<u8>(half[0]);
                        let mut release = Release::new(first, class);
                        for &cell in half {
                            // SAFETY: this thread holds its half of the block's cells.
                            unsafe { release.add(std::ptr::with_exposed_provenance_mut(cell)) };
                        }
                        start.wait();
                        // SAFETY: as above; each cell is added once.
                        unsafe { release.finish(BLOCK_BYTES) }.expect("cells were added")
                    })
                });
                halves.collect::<Vec<_>>().into_iter().map(|h| h.join().expect("no panic")).collect()
            });
            let unmapped = outcomes.iter().filter(|&&o| o == Released::Block).count();
            assert_eq!(unmapped, 1, "round {round}: {outcomes:?}");
        }
    }

    fn cached() -> usize {
        LISTS.with(|lists| lists.cached_bytes.get())
    }

    /// A burst: `count` cells of `layout` allocated, then all freed.
    fn burst(layout: Layout, count: usize) {
        let cells: Vec<_> = (0..count).map(|_| allocate(layout)).collect();
        for cell in cells {
            // SAFETY: from `allocate(layout)`, not used afterwards.
            unsafe { free(cell, layout) };
        }
    }

    /// On a thread with a raised limit (a worker's), a burst's cells are
    /// all kept; an epoch in which they were used keeps them; an epoch in
    /// which they lay unused gives back all but BASE_BYTES. Run on a thread
    /// of its own, so the lists start empty.
    #[test]
    fn a_raised_limit_keeps_a_burst_until_an_epoch_leaves_it_unused() {
        std::thread::spawn(|| {
            let layout = Layout::from_size_align(300, 8).unwrap();
            let class_size = class_layout(class_of(layout).unwrap()).size();
            raise_limit(8 * BASE_BYTES);
            let cells = 4 * BASE_BYTES / class_size;
            burst(layout, cells);
            assert_eq!(cached(), cells * class_size, "the whole burst is kept under the raised limit");
            // The lists were empty at this epoch's start: nothing lay unused
            // throughout it.
            assert_eq!(end_epoch(), cells * class_size - BASE_BYTES);
            assert_eq!(cached(), cells * class_size);
            // A busy epoch: the next burst takes every cached cell, and its
            // frees bring them back.
            burst(layout, cells);
            assert_eq!(end_epoch(), cells * class_size - BASE_BYTES, "cells used in the epoch are kept");
            // An idle epoch: all but BASE_BYTES go back.
            let surplus = end_epoch();
            assert_eq!(surplus, 0, "{} bytes still cached", cached());
            assert!(cached() <= BASE_BYTES && cached() > BASE_BYTES - class_size, "{} bytes cached", cached());
            assert_eq!(super::surplus(), 0);
        })
        .join()
        .expect("no panic");
    }

    /// Without a raised limit (any thread but a worker) the lists hold at
    /// most BASE_BYTES, and ending an epoch has nothing to give back.
    #[test]
    fn an_ordinary_thread_keeps_at_most_the_base() {
        std::thread::spawn(|| {
            let layout = Layout::from_size_align(500, 8).unwrap();
            burst(layout, 3 * BASE_BYTES / 512);
            assert!(cached() <= BASE_BYTES);
            assert_eq!(end_epoch(), 0);
            assert_eq!(super::surplus(), 0);
        })
        .join()
        .expect("no panic");
    }

    /// The unused part is found per class: where one class's cells are all
    /// in use every epoch and another's lie idle, an epoch gives back the
    /// idle ones and keeps those in use (one low-water mark for all the
    /// lists would have freed the busy class's cells, the largest first).
    #[test]
    fn an_epoch_gives_back_the_idle_class_and_keeps_the_busy_one() {
        std::thread::spawn(|| {
            let (busy, idle) = (Layout::from_size_align(900, 8).unwrap(), Layout::from_size_align(100, 8).unwrap());
            let busy_size = class_layout(class_of(busy).unwrap()).size();
            raise_limit(32 * BASE_BYTES);
            burst(idle, 8 * BASE_BYTES / idle.size());
            burst(busy, 4 * BASE_BYTES / busy.size());
            end_epoch();
            let busy_cached = || LISTS.with(|lists| lists.counts[class_of(busy).unwrap()].get() as usize * busy_size);
            let kept_busy = busy_cached();
            // An epoch in which the busy class is used to the last cell and
            // the idle one not at all.
            burst(busy, 4 * BASE_BYTES / busy.size());
            end_epoch();
            assert_eq!(busy_cached(), kept_busy, "the cells in use were given back");
            assert!(cached() <= kept_busy + BASE_BYTES, "{} bytes kept: the idle class was not given back", cached());
        })
        .join()
        .expect("no panic");
    }
}
