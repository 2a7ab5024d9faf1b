//! A per-thread cache of stacks, so that a coroutine that finishes hands its
//! stack to the next one started on the same thread without a syscall.
//!
//! The cache is thread-local, so taking and giving back a stack is a few
//! loads and stores with no synchronisation. Coroutines never move between
//! threads once started (a moved one could read another thread's
//! `thread_local!`: see the crate docs), so a stack is always
//! returned to the thread that took it — which is why a stack taken from the
//! cache needs no per-thread preparation (the thread was prepared when the
//! stack was first mapped there, and the stack was linked into that
//! thread's list of stacks for the overflow report: see [`overflow`]). At
//! most `DEFAULT_CACHE_CAPACITY` stacks are kept per thread (adjustable with
//! [`set_capacity`]); beyond that they are unmapped. A cached stack keeps the
//! pages its last coroutine touched (reuse is then free of page faults); the
//! guard page is never touched by reuse, so it stays a guard.
//!
//! # Two parts: the fast slot and the list
//!
//! ```text
//!  FAST: Cell<*mut u8>       no destructor: one fs-relative load, no
//!    null      empty         borrow flag, no registration test
//!    CLOSED    capacity 0, or the thread is exiting (LIST destroyed)
//!    other     the base of one idle stack of DEFAULT_STACK_SIZE bytes
//!
//!  LIST: RefCell<Cache>      every other idle stack, any size, searched
//!                            by size; its destructor unmaps them all and
//!                            closes FAST (unmapping the stack there)
//! ```
//!
//! A coroutine of the default size takes the stack in `FAST` if there is one,
//! and gives its stack back there if it is empty: the common case (one
//! coroutine created, run and dropped after another) is a load and a store
//! each way. Everything else goes to the list, out of line.
//!
//! `FAST` has no destructor of its own, so something else must unmap the
//! stack it holds when the thread exits: `LIST`'s destructor does. That
//! destructor is registered on `LIST`'s first use, and every stack of this
//! thread was first mapped by [`take_slow`], which uses `LIST` before
//! mapping: so whenever `FAST` holds a stack, `LIST`'s destructor is
//! registered. Once it has run, `FAST` is `CLOSED` and stays so.
//!
//! Capacity counts both parts: `LIST.stacks.len()` plus one if `FAST` holds
//! a stack is at most `capacity`. So an empty `FAST` is `CLOSED`, not null,
//! while the list alone fills the capacity (else a default-size stack given
//! back would make one too many); whatever changes the list's length or
//! the capacity sets it again (`sync_fast`).

use super::{DEFAULT_STACK_SIZE, Stack, overflow};
use std::cell::{Cell, RefCell};
use std::io;
use std::ptr::{self, NonNull};

/// How many idle stacks one thread keeps unless told otherwise.
pub(crate) const DEFAULT_CACHE_CAPACITY: usize = 64;

/// `FAST`'s value while it may not hold a stack (see the module docs). No
/// mapping starts at address 1.
const CLOSED: *mut u8 = ptr::without_provenance_mut(1);

/// Whether a value of `FAST` is a stack's base (not empty, not closed).
fn holds_stack(fast: *mut u8) -> bool {
    fast.addr() > CLOSED.addr()
}

struct Cache {
    stacks: Vec<Stack>,
    capacity: usize,
}

impl Drop for Cache {
    /// The thread is exiting: close the fast slot and unmap its stack (the
    /// list's stacks are unmapped by the Vec's own drop).
    fn drop(&mut self) {
        close_fast();
    }
}

thread_local! {
    /// The fast slot (see the module docs). A const initialiser and no
    /// destructor: reading it is a plain `fs:`-relative load.
    static FAST: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
    static LIST: RefCell<Cache> =
        const { RefCell::new(Cache { stacks: Vec::new(), capacity: DEFAULT_CACHE_CAPACITY }) };
}

/// Closes the fast slot and unmaps the stack it held, if any.
fn close_fast() {
    let fast = FAST.replace(CLOSED);
    if let Some(base) = NonNull::new(fast).filter(|_| holds_stack(fast)) {
        // SAFETY: a base in FAST is an idle stack of DEFAULT_STACK_SIZE that
        // FAST owned (`give_back` put it there with `into_raw`); we just
        // took it out.
        drop(unsafe { Stack::from_raw(base, DEFAULT_STACK_SIZE) });
    }
}

/// An empty fast slot is open (null) while the list leaves room for one
/// more stack, closed while it does not; a slot that holds a stack stays
/// as it is. Called with `LIST` borrowed, so the thread is not exiting.
fn sync_fast(cache: &Cache) {
    if !holds_stack(FAST.get()) {
        FAST.set(if cache.stacks.len() < cache.capacity { ptr::null_mut() } else { CLOSED });
    }
}

/// Sets how many idle stacks the calling thread keeps; stacks beyond the new
/// capacity are unmapped now.
pub(crate) fn set_capacity(capacity: usize) {
    let excess: Option<Vec<Stack>> = LIST
        .try_with(|cache| {
            let mut cache = cache.borrow_mut();
            cache.capacity = capacity;
            if capacity == 0 {
                close_fast();
            }
            let in_fast = usize::from(holds_stack(FAST.get()));
            let keep = cache.stacks.len().min(capacity - in_fast.min(capacity));
            let excess = cache.stacks.drain(keep..).collect();
            sync_fast(&cache);
            excess
        })
        .ok();
    drop(excess);
}

/// A stack of exactly `size` usable bytes (already rounded), from this
/// thread's cache if one is there, else freshly mapped. A fresh stack also
/// makes sure this thread can report an overflow (alternate signal stack +
/// handler); a cached one was taken on this thread before, so it is ready.
/// (A coroutine's start calls the two halves itself, [`take_fast`] then
/// [`take_slow`].)
#[cfg(all(test, not(loom)))]
pub(crate) fn take(size: usize) -> io::Result<Stack> {
    match take_fast(size) {
        Some(stack) => Ok(stack),
        None => take_slow(size),
    }
}

/// The stack in the fast slot, if `size` is the default and the slot holds
/// one; else `None`, and [`take_slow`] serves. (Split from `take` so that
/// a caller's fast path handles a `Stack` in registers, not a `Result` in
/// memory.)
#[inline(always)]
pub(crate) fn take_fast(size: usize) -> Option<Stack> {
    if size != DEFAULT_STACK_SIZE {
        return None;
    }
    let fast = FAST.get();
    let base = NonNull::new(fast).filter(|_| holds_stack(fast))?;
    FAST.set(ptr::null_mut());
    // SAFETY: FAST held this idle stack of DEFAULT_STACK_SIZE (put there by
    // `give_back`) and no longer does.
    Some(unsafe { Stack::from_raw(base, size) })
}

/// A stack when the fast slot cannot serve: search the list, else map.
#[cold]
#[inline(never)]
pub(crate) fn take_slow(size: usize) -> io::Result<Stack> {
    // Uses LIST even when it is empty: that registers its destructor before
    // any stack of this thread can reach FAST (see the module docs).
    let cached = LIST
        .try_with(|cache| {
            let mut cache = cache.borrow_mut();
            let at = cache.stacks.iter().rposition(|s| s.size() == size)?;
            let stack = cache.stacks.swap_remove(at);
            sync_fast(&cache);
            Some(stack)
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
#[inline]
pub(crate) fn give_back(stack: Stack) {
    if stack.size() == DEFAULT_STACK_SIZE && FAST.get().is_null() {
        FAST.set(stack.into_raw().as_ptr());
        return;
    }
    give_back_slow(stack);
}

/// [`give_back`] when the fast slot cannot take it: into the list if there
/// is room, else unmapped.
#[cold]
#[inline(never)]
fn give_back_slow(stack: Stack) {
    let mut stack = Some(stack);
    let _ = LIST.try_with(|cache| {
        let in_fast = usize::from(holds_stack(FAST.get()));
        if let Ok(mut cache) = cache.try_borrow_mut()
            && cache.stacks.len() + in_fast < cache.capacity
        {
            cache.stacks.push(stack.take().expect("stack given back twice"));
            sync_fast(&cache);
        }
    });
    drop(stack); // unmapped here if the cache did not take it
}

/// How many idle stacks this thread's cache holds (both parts).
#[cfg(all(test, not(loom)))]
pub(crate) fn idle_stacks() -> usize {
    let in_fast = usize::from(holds_stack(FAST.get()));
    in_fast + LIST.try_with(|cache| cache.borrow().stacks.len()).unwrap_or(0)
}

#[cfg(all(test, not(loom)))]
mod tests {
    //! Each test runs on its own thread (the test harness's), so it sees a
    //! cache of its own.
    use super::*;

    /// A default-size stack comes back through the fast slot: the same
    /// mapping, no new one; a second idle one goes to the list.
    #[test]
    fn a_default_stack_is_reused_through_the_fast_slot() {
        let first = take(DEFAULT_STACK_SIZE).unwrap();
        let second = take(DEFAULT_STACK_SIZE).unwrap();
        let (first_top, second_top) = (first.top(), second.top());
        assert_eq!(idle_stacks(), 0);
        give_back(first);
        give_back(second);
        assert_eq!(idle_stacks(), 2);
        assert_eq!(take(DEFAULT_STACK_SIZE).unwrap().top(), first_top, "the fast slot serves first");
        let again = take(DEFAULT_STACK_SIZE).unwrap();
        assert_eq!(again.top(), second_top, "the list serves a default size too");
        assert_eq!(idle_stacks(), 0);
    }

    /// Other sizes are kept and served by the list, next to a default-size
    /// stack in the fast slot.
    #[test]
    fn a_stack_of_another_size_is_still_served() {
        let small = take(MIN_SIZE).unwrap();
        let default = take(DEFAULT_STACK_SIZE).unwrap();
        let small_top = small.top();
        give_back(default);
        give_back(small);
        assert_eq!(idle_stacks(), 2);
        let again = take(MIN_SIZE).unwrap();
        assert_eq!((again.top(), again.size()), (small_top, MIN_SIZE));
        assert_eq!(take(DEFAULT_STACK_SIZE).unwrap().size(), DEFAULT_STACK_SIZE);
    }

    const MIN_SIZE: usize = super::super::MIN_STACK_SIZE;

    /// The capacity counts the fast slot: 0 keeps nothing (the fast slot is
    /// closed and its stack unmapped), 1 keeps one stack, and reopening
    /// works.
    #[test]
    fn capacity_counts_the_fast_slot() {
        give_back(take(DEFAULT_STACK_SIZE).unwrap());
        assert_eq!(idle_stacks(), 1);
        set_capacity(0);
        assert_eq!(idle_stacks(), 0, "capacity 0 unmaps the fast slot's stack");
        give_back(take(DEFAULT_STACK_SIZE).unwrap());
        assert_eq!(idle_stacks(), 0, "capacity 0 keeps nothing");
        set_capacity(1);
        let (a, b) = (take(DEFAULT_STACK_SIZE).unwrap(), take(MIN_SIZE).unwrap());
        give_back(a);
        give_back(b);
        assert_eq!(idle_stacks(), 1, "the fast slot's stack fills a capacity of 1");
        set_capacity(DEFAULT_CACHE_CAPACITY);
        give_back(take(MIN_SIZE).unwrap());
        assert_eq!(idle_stacks(), 2);
    }
}
