//! A per-thread cache of stacks, so that a coroutine that finishes hands its
//! stack to the next one started on the same thread without a syscall.
//!
//! The cache is thread-local, so taking and giving back a stack is a few
//! loads and stores with no synchronisation. Coroutines never move between
//! threads once started (a moved one could read another thread's
//! `thread_local!`: see the crate docs), so a stack is always
//! returned to the thread that took it — which is why a stack taken from the
//! cache needs no per-thread preparation (the thread was prepared when the
//! stack was first mapped there). At most `DEFAULT_CACHE_CAPACITY` stacks
//! are kept per thread (adjustable with [`set_capacity`]); beyond that they
//! are unmapped. A cached stack keeps the
//! pages its last coroutine touched (reuse is then free of page faults); the
//! guard page is never touched by reuse, so it stays a guard.

use super::{Stack, overflow};
use std::cell::RefCell;
use std::io;

/// How many idle stacks one thread keeps unless told otherwise.
pub(crate) const DEFAULT_CACHE_CAPACITY: usize = 64;

struct Cache {
    stacks: Vec<Stack>,
    capacity: usize,
}

thread_local! {
    static CACHE: RefCell<Cache> =
        const { RefCell::new(Cache { stacks: Vec::new(), capacity: DEFAULT_CACHE_CAPACITY }) };
}

/// Sets how many idle stacks the calling thread keeps; stacks beyond the new
/// capacity are unmapped now.
pub(crate) fn set_capacity(capacity: usize) {
    let excess: Vec<Stack> = CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        cache.capacity = capacity;
        let keep = cache.stacks.len().min(capacity);
        cache.stacks.drain(keep..).collect()
    });
    drop(excess);
}

/// A stack of exactly `size` usable bytes (already rounded), from this
/// thread's cache if one is there, else freshly mapped. A fresh stack also
/// makes sure this thread can report an overflow (alternate signal stack +
/// handler); a cached one was taken on this thread before, so it is ready.
pub(crate) fn take(size: usize) -> io::Result<Stack> {
    let cached = CACHE
        .try_with(|cache| {
            let mut cache = cache.borrow_mut();
            let at = cache.stacks.iter().rposition(|s| s.size() == size)?;
            Some(cache.stacks.swap_remove(at))
        })
        .ok()
        .flatten();
    match cached {
        Some(stack) => Ok(stack),
        None => {
            overflow::prepare_thread();
            Stack::new(size)
        }
    }
}

/// Gives a stack back for reuse on this thread; unmaps it if the cache is
/// full or the thread is exiting.
pub(crate) fn give_back(stack: Stack) {
    let mut stack = Some(stack);
    let _ = CACHE.try_with(|cache| {
        if let Ok(mut cache) = cache.try_borrow_mut()
            && cache.stacks.len() < cache.capacity
        {
            cache.stacks.push(stack.take().expect("stack given back twice"));
        }
    });
    drop(stack); // unmapped here if the cache did not take it
}
