//! A per-thread cache of freed task cells, reused by the next spawns on the
//! same thread instead of going back to the allocator.
//!
//! # Size classes
//!
//! A task cell's layout depends on its closure and result types, so cells
//! come in many sizes. The cache rounds a cell's size up to a multiple of
//! `CLASS_STEP` (32 bytes) and keeps one free list per such class, up to
//! `MAX_CACHED_SIZE`; every cell of a class is allocated with the class's
//! layout (its rounded size, `CELL_ALIGN`), so any cell of the class can
//! serve any request of it, and the allocator gets back the layout it gave.
//! Cells larger than that, or aligned more strictly, bypass the cache.
//!
//! # The free lists
//!
//! Intrusive: a cached cell's first word links to the next one. A cell
//! freed on one thread is cached there and reused by that thread's spawns
//! (the allocator is thread-safe, and a cell is plain memory once freed).
//! Thread exit frees what its lists hold. Only the owning thread touches
//! its lists, and nothing is called while one is being changed, so a
//! `Cell` per list suffices.
//!
//! # How much a thread keeps
//!
//! ```text
//!  thread            may keep             gives back
//!  ----------------  -------------------  ---------------------------------------
//!  any thread        1 MiB (BASE_BYTES)   a cell freed beyond the bound, at once
//!  a worker thread   64 MiB (WORKER_      at the end of each epoch, class by class,
//!                    LIMIT_BYTES)         the cells its list held unused during
//!                                         the whole epoch (its low-water mark),
//!                                         down to 1 MiB in all
//! ```
//!
//! A worker's lists thus follow its bursts: cells freed after a burst of
//! spawns serve the next burst, and when no burst comes for an epoch, the
//! cells that stayed unused go back to the allocator (a list's *low-water
//! mark* is the least it held at any moment of the epoch: that many were
//! never needed). Marks are kept per size class, so a class whose cells are
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
//! 9.3 ms (side by side, the same machine and minute).

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::ptr::NonNull;

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

struct Lists {
    heads: [Cell<*mut u8>; CLASSES],
    cached_bytes: Cell<usize>,
    /// BASE_BYTES, or what `raise_limit` set.
    limit: Cell<usize>,
    /// Per class: how many cells the list holds, and the least it held
    /// since the epoch began (its low-water mark: that many lay unused).
    counts: [Cell<u32>; CLASSES],
    low_water: [Cell<u32>; CLASSES],
}

impl Drop for Lists {
    fn drop(&mut self) {
        for (class, head) in self.heads.iter().enumerate() {
            let layout = class_layout(class);
            let mut cell = head.replace(std::ptr::null_mut());
            while !cell.is_null() {
                // SAFETY: a cached cell: its first word links to the next,
                // and it was allocated with its class's layout.
                unsafe {
                    let next = cell.cast::<*mut u8>().read();
                    alloc::dealloc(cell, layout);
                    cell = next;
                }
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

/// Memory for a cell of `layout`: a cached one of its class, or a new one.
#[inline]
pub(crate) fn allocate(layout: Layout) -> NonNull<u8> {
    let Some(class) = class_of(layout) else {
        return allocate_new(layout);
    };
    let cached = LISTS
        .try_with(|lists| {
            let cell = lists.heads[class].get();
            if cell.is_null() {
                return None;
            }
            // SAFETY: a cached cell; its first word links to the next.
            lists.heads[class].set(unsafe { cell.cast::<*mut u8>().read() });
            lists.cached_bytes.set(lists.cached_bytes.get() - class_layout(class).size());
            let count = lists.counts[class].get() - 1;
            lists.counts[class].set(count);
            lists.low_water[class].set(lists.low_water[class].get().min(count));
            NonNull::new(cell)
        })
        .ok()
        .flatten();
    cached.unwrap_or_else(|| allocate_new(class_layout(class)))
}

#[cold]
fn allocate_new(layout: Layout) -> NonNull<u8> {
    // SAFETY: the layout is not zero-sized (a task cell is not).
    let raw = unsafe { alloc::alloc(layout) };
    NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout))
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
        // SAFETY: cells of a class are allocated with its layout.
        unsafe { alloc::dealloc(cell.as_ptr(), class_layout(class)) };
    }
}

/// Lets this thread's lists hold up to `bytes` (a worker thread, at its
/// start; see "How much a thread keeps").
pub(crate) fn raise_limit(bytes: usize) {
    let _ = LISTS.try_with(|lists| lists.limit.set(bytes.max(BASE_BYTES)));
}

/// Ends this thread's epoch: gives back to the allocator, class by class,
/// the cells that lay unused in its list throughout the epoch (the list's
/// low-water mark), largest classes first, until the lists hold
/// `BASE_BYTES`; then starts the next epoch. Returns how many bytes the
/// lists still hold beyond `BASE_BYTES`.
pub(crate) fn end_epoch() -> usize {
    LISTS
        .try_with(|lists| {
            for class in (0..CLASSES).rev() {
                let layout = class_layout(class);
                let mut unused = lists.low_water[class].get();
                while unused > 0 && lists.cached_bytes.get() > BASE_BYTES {
                    let cell = lists.heads[class].get();
                    // SAFETY: a cached cell (the list holds `unused` or more):
                    // its first word links to the next, it has its class's
                    // layout, and it is unlinked before it is freed.
                    unsafe {
                        lists.heads[class].set(cell.cast::<*mut u8>().read());
                        alloc::dealloc(cell, layout);
                    }
                    lists.cached_bytes.set(lists.cached_bytes.get() - layout.size());
                    lists.counts[class].set(lists.counts[class].get() - 1);
                    unused -= 1;
                }
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
