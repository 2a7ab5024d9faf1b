//! `RwLock<T>`: a phase-fair reader-writer lock for coroutines and OS
//! threads alike (they can wait on the same lock).
//!
//! # Policy: neither side starves
//!
//! Once a writer waits, new readers queue behind it (they do not barge past
//! it, however many readers keep overlapping). When a writer leaves, all
//! the readers that were waiting at that moment go in together, before the
//! next writer; when the last of them leaves, the next writer goes in. So
//! phases alternate — writer, every waiting reader, writer, ... — and a
//! waiter of either kind waits at most about one phase of the other kind.
//! Writers go in one at a time in arrival order (FIFO).
//!
//! The lock is always *handed over* to the waiters whose turn it is (their
//! read locks are counted, or the write lock kept, on their behalf before
//! they are woken), never released for them to compete for: a lock that
//! lets woken waiters race newcomers cannot keep the promise above.
//!
//! # State word
//!
//! ```text
//!   u32:  [ WRITERS_WAITING (bit 31) | READERS_WAITING (bit 30) | count (bits 0..30) ]
//!
//!  count                  meaning
//!  ---------------------  ---------------------------------------------
//!  0                      free
//!  1 ..= MAX_READERS      read-locked by that many readers
//!  WRITE_LOCKED (= MASK)  write-locked
//!
//!  READERS_WAITING   readers are parked on the reader key (or one is about to)
//!  WRITERS_WAITING   writers are parked on the writer key (or one is about to,
//!                    or is still spinning or yielding before it parks)
//! ```
//!
//! - Readers park on the state word's address, writers on that address + 1
//!   (a byte inside the same word, so no other lock's key can equal it).
//! - A read lock is taken by `count += 1` when the lock is not write-locked,
//!   not full, and WRITERS_WAITING is clear ([`is_read_lockable`]); a write
//!   lock by `0 -> WRITE_LOCKED`, only from an entirely clear word.
//! - A waiting bit is cleared only under its key's bucket lock, by whoever
//!   takes the last waiter off that queue (or finds it empty), so a set bit
//!   never hides a waiter from an unlocker, and a waiter that set the bit
//!   but had not yet validated sees it cleared and retries.
//!
//! # Who wakes whom
//!
//! The one who frees the lock while a waiting bit is set is *responsible*:
//! it holds (or takes back) the write lock and passes it on
//! ([`RawRwLock::pass_on_write_lock`]):
//!
//! ```text
//!  unlocker                      waiters flagged   hands the lock to
//!  ----------------------------  ----------------  ------------------------------
//!  a writer                      readers           every reader queued now (a read phase)
//!  a writer                      writers only      the oldest writer
//!  the last reader of a phase    writers           the oldest writer
//!  the last reader of a phase    readers only      every reader queued now
//! ```
//!
//! - The last reader (its `count -= 1` reached 0 with a bit set) first takes
//!   the write lock with a CAS from `0 | bits`. No one else can lock that
//!   state (WRITERS_WAITING or a non-zero word keeps others out), except a
//!   reader when only READERS_WAITING is set; then that reader becomes the
//!   one who unlocks last, and so responsible, and the CAS gives up.
//! - A read phase: the responsible party turns its write lock into one read
//!   lock of its own (a *phase holder*, so that the readers it wakes cannot
//!   bring the count to 0 and start the next phase while it is still
//!   handing out), then hands a read lock to each reader queued at that
//!   moment, oldest first: a counter of parked readers (`parked_readers`,
//!   kept under the reader key's bucket lock) says how many; readers that
//!   queue during the hand-out wait for the next phase, which keeps the
//!   hand-out bounded. Then it drops its own read lock like any reader.
//! - Handing over a write lock: `unpark_one` on the writer key with a token
//!   that says "you own it"; the state stays WRITE_LOCKED throughout.
//!
//! # Waiting: spin, then yield, then park
//!
//! A waiter first spins ([`SpinWait`]: a few microseconds, never an OS
//! yield), then yields a bounded number of times ([`YieldWait`]: in a
//! coroutine to its worker's other coroutines, on a plain OS thread to the
//! OS scheduler), and only then parks. A writer that finds the lock
//! read-locked sets WRITERS_WAITING *before* it spins, so new readers queue
//! behind it at once and the count drains while it spins; if it gets in
//! without parking, the last reader found the writer queue empty, cleared
//! the bit and freed the lock (or started a read phase for readers queued
//! meanwhile), and the writer took it from 0.
//!
//! Why yield: parking hands the lock to a *parked* waiter, which holds it
//! (a handed-out read lock is counted, a handed-over write lock kept) until
//! it runs again: a coroutine once its worker, often asleep by then, is
//! woken (an inbox push and a futex wake, microseconds); an OS thread once
//! the kernel schedules it, which on an oversubscribed machine means after
//! the threads ahead of it on its CPU. Under a busy read-mostly load that
//! turns into a convoy: every write costs two such wakes, and meanwhile the
//! waiters of the other phase park too (a reader that finds a writer
//! flagged does not spin), so the next phase is handed to sleepers again.
//! Measured with 5% writes on 2 CPUs: 8 coroutines on 2 workers, 2-7 M
//! ops/s instead of 30-60; 8 OS threads, under 1 M ops/s (about 160 parks
//! per 1000 operations) against std's and parking_lot's 30. A waiter that
//! yields instead lets the holders that share its CPU (including one handed
//! the lock) run, and gives the holders elsewhere time to leave, without
//! anyone parking (8 OS threads: no parks at all, 30 M ops/s). OS threads
//! yield with `sched_yield` as parking_lot's `SpinWait` does before it
//! parks; std's futex rwlock only spins, but it never hands over, so a
//! woken thread that is slow to run delays only itself.
//!
//! A spinning or yielding waiter is not queued, so the phase promises are
//! about queued waiters: a reader that yields while a writer waits still
//! never barges past it (it needs WRITERS_WAITING clear), and after its
//! bounded spins and yields it queues like any other, to go in with the
//! next read phase.
//!
//! Rejected alternatives: std's futex rwlock lets woken waiters compete
//! (and always prefers writers, so readers can starve under a steady flow
//! of writers); parking_lot's hands over through one shared queue with a
//! per-waiter filter, which our parking lot does not offer, and only after
//! a waiter has waited about 0.5 ms (eventual fairness; until then woken
//! waiters compete). Letting writers barge among themselves that way (a
//! writer-to-writer hand-over becoming a release that an awake writer may
//! take) would shorten writer convoys, but once waiters yield before
//! parking the workloads above no longer park at all, so it buys nothing
//! measurable there and would weaken the FIFO order of writers.
//!
//! Orderings: every change of the word is a read-modify-write, so release
//! sequences are never broken. Taking a lock is Acquire, giving one up is
//! Release: a writer's Acquire (its CAS from 0, or the last reader's
//! take-over CAS) synchronises with the Release `count -= 1` of every
//! reader before it, and a reader's Acquire with the writer's Release. A
//! lock handed over is published by the parking lot's `removed`
//! Release/Acquire pair, which the responsible party performs after its
//! critical section.

use super::spinlock::SpinWait;
use crate::loom::{AtomicU32, AtomicUsize, Ordering, UnsafeCell};
use crate::park::lot::{self, DEFAULT_TOKEN, ParkResult};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// Bits 0..30: the reader count, or WRITE_LOCKED.
const MASK: u32 = (1 << 30) - 1;
const WRITE_LOCKED: u32 = MASK;
/// The most readers at once; one more is a panic.
const MAX_READERS: u32 = MASK - 1;
const READERS_WAITING: u32 = 1 << 30;
const WRITERS_WAITING: u32 = 1 << 31;
const WAITING: u32 = READERS_WAITING | WRITERS_WAITING;

/// Token for a waiter that is handed the lock (it returns owning it).
const TOKEN_HANDOFF: usize = 1;

#[inline]
fn is_write_locked(state: u32) -> bool {
    state & MASK == WRITE_LOCKED
}

/// Whether a reader may take a read lock itself: not write-locked, room for
/// one more, and no writer waiting (readers never barge past a writer).
/// READERS_WAITING does not matter: readers do not exclude each other.
#[inline]
fn is_read_lockable(state: u32) -> bool {
    state & MASK < MAX_READERS && state & WRITERS_WAITING == 0
}

/// The lock without data: the state word and its protocol.
pub(crate) struct RawRwLock {
    /// See the module docs.
    state: AtomicU32,
    /// Readers on the reader key's queue. Read and written only under that
    /// key's bucket lock (so Relaxed): +1 in a reader's validation, -1 when
    /// a read phase takes one off.
    parked_readers: AtomicUsize,
}

impl RawRwLock {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> RawRwLock {
        RawRwLock { state: AtomicU32::new(0), parked_readers: AtomicUsize::new(0) }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> RawRwLock {
        RawRwLock { state: AtomicU32::new(0), parked_readers: AtomicUsize::new(0) }
    }

    /// The parking-lot key readers wait on.
    fn reader_key(&self) -> usize {
        &self.state as *const AtomicU32 as usize
    }

    /// The parking-lot key writers wait on: a byte inside the state word,
    /// so distinct from the reader key and from every other lock's key.
    fn writer_key(&self) -> usize {
        self.reader_key() + 1
    }

    #[inline]
    pub(crate) fn read(&self) {
        let state = self.state.load(Ordering::Relaxed);
        // Acquire: pairs with the Release of the writer that last unlocked.
        if !is_read_lockable(state)
            || self.state.compare_exchange_weak(state, state + 1, Ordering::Acquire, Ordering::Relaxed).is_err()
        {
            self.read_contended();
        }
    }

    #[inline]
    pub(crate) fn try_read(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if !is_read_lockable(state) {
                return false;
            }
            // Acquire: as in `read`.
            match self.state.compare_exchange_weak(state, state + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    #[cold]
    fn read_contended(&self) {
        let mut spin = SpinWait::new();
        let mut yield_wait = YieldWait::new();
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if is_read_lockable(state) {
                // Acquire: as in `read`.
                match self.state.compare_exchange_weak(state, state + 1, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return,
                    Err(actual) => state = actual,
                }
                continue;
            }
            if state & MASK == MAX_READERS {
                reader_overflow();
            }
            // Spin while nobody is queued: the writer may be about to leave.
            if state & WAITING == 0 && spin.spin() {
                state = self.state.load(Ordering::Relaxed);
                continue;
            }
            // Then, in a coroutine, let the worker's other coroutines run
            // for a while (see "Waiting" in the module docs).
            if yield_wait.yield_once() {
                state = self.state.load(Ordering::Relaxed);
                continue;
            }
            // Relaxed: the bit carries no data; the bucket lock orders it
            // with the unlocker's unpark.
            if state & READERS_WAITING == 0 {
                if let Err(actual) = self.state.compare_exchange_weak(
                    state,
                    state | READERS_WAITING,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    state = actual;
                    continue;
                }
            }
            crate::park::waiting_on(crate::park::ParkedOn::RwLockRead(self.reader_key()));
            let result = lot::park_passing_on(
                self.reader_key(),
                || {
                    // Park only if a writer is in the way (so some unlock
                    // will pass the lock on to readers) and our bit is still
                    // set (so that unlock will look at the reader queue).
                    let state = self.state.load(Ordering::Relaxed);
                    let park = state & READERS_WAITING != 0 && (is_write_locked(state) || state & WRITERS_WAITING != 0);
                    if park {
                        self.parked_readers.fetch_add(1, Ordering::Relaxed);
                    }
                    park
                },
                || {},
                // Untimed: called only when a runtime shuts down and unwinds
                // us while parked. Undo what `validate` counted, and clear
                // the bit if no reader is left queued, as a read phase would.
                |_, was_last| {
                    self.parked_readers.fetch_sub(1, Ordering::Relaxed);
                    if was_last {
                        self.state.fetch_and(!READERS_WAITING, Ordering::Relaxed);
                    }
                },
                // Unwound by a shutdown after a read phase counted us in,
                // before we ran: give the read lock back.
                |_, token| {
                    if token == TOKEN_HANDOFF {
                        // SAFETY: TOKEN_HANDOFF means we hold a read lock.
                        unsafe { self.read_unlock() }
                    }
                },
                None,
            );
            if result == ParkResult::Unparked(TOKEN_HANDOFF) {
                return; // a read phase counted us in
            }
            spin.reset();
            yield_wait.reset();
            state = self.state.load(Ordering::Relaxed);
        }
    }

    /// # Safety
    ///
    /// - The caller holds a read lock, which this gives up.
    #[inline]
    pub(crate) unsafe fn read_unlock(&self) {
        // Release: pairs with the Acquire of the writer that locks next.
        let previous = self.state.fetch_sub(1, Ordering::Release);
        debug_assert!(
            previous & MASK != 0 && !is_write_locked(previous),
            "RwLock: read unlock without a read lock (state {previous:#x})"
        );
        if previous & MASK == 1 && previous & WAITING != 0 {
            self.read_unlock_contended();
        }
    }

    #[cold]
    fn read_unlock_contended(&self) {
        // We were the last reader and waiters are flagged: we are
        // responsible for passing the lock on.
        if self.take_over_free_lock() {
            self.pass_on_write_lock(true);
        }
    }

    #[inline]
    pub(crate) fn write(&self) {
        // Acquire: pairs with the Release of the previous holders.
        if self.state.compare_exchange_weak(0, WRITE_LOCKED, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.write_contended();
        }
    }

    #[inline]
    pub(crate) fn try_write(&self) -> bool {
        // Acquire: as in `write`. Strong: a free lock is always taken.
        self.state.compare_exchange(0, WRITE_LOCKED, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    #[cold]
    fn write_contended(&self) {
        let mut spin = SpinWait::new();
        let mut yield_wait = YieldWait::new();
        let mut flagged = false;
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            // Only an entirely clear word may be taken: with a waiting bit
            // set, someone's turn comes first.
            if state == 0 {
                // Acquire: as in `write`.
                match self.state.compare_exchange_weak(0, WRITE_LOCKED, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return,
                    Err(actual) => state = actual,
                }
                continue;
            }
            if state & WRITERS_WAITING == 0 {
                flagged = false; // whoever cleared our bit found no writer queued
            }
            // Readers hold the lock and no writer is flagged: flag ourselves
            // before spinning, so that new readers queue and the count can
            // drain to 0 while we spin (see "Waiting" in the module docs).
            // Relaxed: as for READERS_WAITING in read_contended.
            if state & WRITERS_WAITING == 0 && !is_write_locked(state) && spin.has_budget() {
                if let Err(actual) = self.state.compare_exchange_weak(
                    state,
                    state | WRITERS_WAITING,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    state = actual;
                    continue;
                }
                state |= WRITERS_WAITING;
                flagged = true;
            }
            // Spin while no writer but us is flagged: the holders may leave
            // soon.
            if (state & WRITERS_WAITING == 0 || flagged) && spin.spin() {
                state = self.state.load(Ordering::Relaxed);
                continue;
            }
            // Then, in a coroutine, yield for a while, as readers do.
            if yield_wait.yield_once() {
                state = self.state.load(Ordering::Relaxed);
                continue;
            }
            // Relaxed: as for READERS_WAITING in read_contended.
            if state & WRITERS_WAITING == 0 {
                if let Err(actual) = self.state.compare_exchange_weak(
                    state,
                    state | WRITERS_WAITING,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    state = actual;
                    continue;
                }
            }
            crate::park::waiting_on(crate::park::ParkedOn::RwLockWrite(self.writer_key()));
            let result = lot::park_passing_on(
                self.writer_key(),
                // We set the bit on a word that was not free, so whoever
                // frees it sees the bit and passes the lock on; park as long
                // as the bit is still set (it is cleared, under this bucket
                // lock, only once the writer queue is found empty).
                || self.state.load(Ordering::Relaxed) & WRITERS_WAITING != 0,
                || {},
                // Untimed: called only when a runtime shuts down and unwinds
                // us while parked. The bit is cleared, under this bucket
                // lock, once the writer queue is empty (see `validate`).
                |_, was_last| {
                    if was_last {
                        self.state.fetch_and(!WRITERS_WAITING, Ordering::Relaxed);
                    }
                },
                // Unwound by a shutdown after the write lock was handed to
                // us, before we ran: give it back.
                |_, token| {
                    if token == TOKEN_HANDOFF {
                        // SAFETY: TOKEN_HANDOFF means we hold the write lock.
                        unsafe { self.write_unlock() }
                    }
                },
                None,
            );
            if result == ParkResult::Unparked(TOKEN_HANDOFF) {
                return; // handed the write lock
            }
            spin.reset();
            yield_wait.reset();
            flagged = false;
            state = self.state.load(Ordering::Relaxed);
        }
    }

    /// # Safety
    ///
    /// - The caller holds the write lock, which this gives up.
    #[inline]
    pub(crate) unsafe fn write_unlock(&self) {
        // Release: pairs with the Acquire of the next holders.
        if self.state.compare_exchange(WRITE_LOCKED, 0, Ordering::Release, Ordering::Relaxed).is_err() {
            self.write_unlock_contended();
        }
    }

    #[cold]
    fn write_unlock_contended(&self) {
        // A writer leaves: the readers that wait go first.
        self.pass_on_write_lock(false);
    }

    /// The caller made the count 0 with waiting bits set (the last reader,
    /// or a phase holder): takes the write lock so as to pass it on.
    /// `false` if another reader got in meanwhile (only possible with
    /// READERS_WAITING alone set: that reader is now the one responsible) or
    /// the bits were dealt with by someone else.
    fn take_over_free_lock(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & MASK != 0 || state & WAITING == 0 {
                return false;
            }
            // Acquire: pairs with the Release `count -= 1` of every reader
            // of the phase (a release sequence of RMWs), so the writer we
            // hand over to comes after their reads.
            match self.state.compare_exchange_weak(state, state | WRITE_LOCKED, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// Holding the write lock, gives it up to whoever's turn it is (see the
    /// table in the module docs); `prefer_writers` after a read phase.
    fn pass_on_write_lock(&self, mut prefer_writers: bool) {
        loop {
            let state = self.state.load(Ordering::Relaxed);
            debug_assert!(is_write_locked(state), "RwLock: passing on a lock not write-locked (state {state:#x})");
            if state & WAITING == 0 {
                // Release: pairs with the Acquire of the next holders.
                if self.state.compare_exchange_weak(state, 0, Ordering::Release, Ordering::Relaxed).is_ok() {
                    return;
                }
                continue;
            }
            let writers_turn = state & WRITERS_WAITING != 0 && (prefer_writers || state & READERS_WAITING == 0);
            if writers_turn {
                if self.wake_one_writer() {
                    return;
                }
                continue; // the writer queue was empty: the bit is now clear
            }
            if !self.start_read_phase() {
                return;
            }
            prefer_writers = true;
        }
    }

    /// Holding the write lock with WRITERS_WAITING set: hands it to the
    /// oldest queued writer. `false` (and the bit cleared, the lock still
    /// ours) if none was queued after all.
    fn wake_one_writer(&self) -> bool {
        let result = lot::unpark_one(self.writer_key(), |result| {
            // Under the writer key's bucket lock: the last writer leaves the
            // queue (or none was there), so clear the bit; a writer that set
            // it but has not validated yet then retries instead of parking.
            if result.unparked == 0 || !result.have_more {
                self.state.fetch_and(!WRITERS_WAITING, Ordering::Relaxed);
            }
            if result.unparked > 0 { TOKEN_HANDOFF } else { DEFAULT_TOKEN }
        });
        result.unparked > 0
    }

    /// Holding the write lock with READERS_WAITING set: hands a read lock to
    /// every reader queued now (see "a read phase" in the module docs).
    /// Returns `true` if dropping our phase-holder read lock left the lock
    /// free with waiters flagged and we took it back as a writer: the caller
    /// must pass it on again.
    fn start_read_phase(&self) -> bool {
        // WRITE_LOCKED -> 1: our write lock becomes one read lock. Release:
        // readers that get in by themselves from now on (WRITERS_WAITING
        // clear) see the critical section before ours.
        let previous = self.state.fetch_sub(WRITE_LOCKED - 1, Ordering::Release);
        debug_assert!(is_write_locked(previous), "RwLock: read phase without the write lock");
        // How many readers of the snapshot are still to be woken; the
        // snapshot is taken in the first callback, under the bucket lock.
        let mut to_wake: Option<usize> = None;
        loop {
            let result = lot::unpark_one(self.reader_key(), |result| self.hand_out_read_lock(result, &mut to_wake));
            if result.unparked == 0 || !result.have_more || to_wake == Some(0) {
                break;
            }
        }
        // Drop our phase-holder read lock like any reader. Release: as in
        // read_unlock.
        let previous = self.state.fetch_sub(1, Ordering::Release);
        previous & MASK == 1 && previous & WAITING != 0 && self.take_over_free_lock()
    }

    /// `unpark_one`'s callback in a read phase, under the reader key's
    /// bucket lock: counts the woken reader in and returns its token.
    fn hand_out_read_lock(&self, result: lot::UnparkResult, to_wake: &mut Option<usize>) -> usize {
        let queued = *to_wake.get_or_insert_with(|| self.parked_readers.load(Ordering::Relaxed));
        let clear = if result.unparked == 0 || !result.have_more { READERS_WAITING } else { 0 };
        if result.unparked == 0 {
            // The bit was set by a reader that has not validated yet: clear
            // it; that reader then sees it clear and retries.
            self.state.fetch_and(!clear, Ordering::Relaxed);
            *to_wake = Some(0);
            return DEFAULT_TOKEN;
        }
        debug_assert!(queued > 0, "RwLock: woke a reader that was not counted as parked");
        self.parked_readers.fetch_sub(1, Ordering::Relaxed);
        *to_wake = Some(queued.saturating_sub(1));
        // Count the reader in. Never panic here (the bucket lock is held and
        // the reader is off the queue): if the count is full, wake it
        // without a lock; it retries and panics with the overflow message.
        // Relaxed: the woken reader synchronises through the parking lot.
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            let handed = state & MASK < MAX_READERS;
            let next = (state + u32::from(handed)) & !clear;
            match self.state.compare_exchange_weak(state, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return if handed { TOKEN_HANDOFF } else { DEFAULT_TOKEN },
                Err(actual) => state = actual,
            }
        }
    }
}

/// Bounded yielding before parking, for a waiter whose spinning is spent
/// (see "Waiting" in the module docs).
struct YieldWait {
    rounds: u32,
}

impl YieldWait {
    /// Rounds of [`crate::yield_now`] before the waiter parks. The same for
    /// coroutines and OS threads: on 2 CPUs, 4 to 32 rounds made no
    /// measurable difference to either (parking_lot's `SpinWait` yields 6
    /// times); a round costs a coroutine switch or one `sched_yield`, which
    /// returns at once when no other thread waits for the CPU.
    const ROUNDS: u32 = 16;

    fn new() -> YieldWait {
        YieldWait { rounds: 0 }
    }

    /// With budget left: yields once and returns `true` (in a coroutine, to
    /// the worker's other coroutines; on a plain OS thread, to the OS
    /// scheduler, so that a holder preempted on this CPU, or a waiter just
    /// handed the lock, can run). Under loom (as for `SpinWait`: no new
    /// paths, only more interleavings), or with the budget spent: `false` at
    /// once (the caller should park).
    #[inline]
    fn yield_once(&mut self) -> bool {
        if !cfg!(loom) && self.rounds < Self::ROUNDS {
            self.rounds += 1;
            crate::yield_now();
            return true;
        }
        false
    }

    /// A fresh budget (after a wake-up).
    fn reset(&mut self) {
        self.rounds = 0;
    }
}

#[cold]
#[inline(never)]
fn reader_overflow() -> ! {
    panic!("RwLock reader count overflow: more than {MAX_READERS} read locks held at once")
}

/// A reader-writer lock for coroutines and OS threads, like
/// [`std::sync::RwLock`] but without poisoning, and phase-fair: neither
/// readers nor writers starve.
///
/// Once a writer waits, new readers queue behind it; when the writer
/// leaves, the readers that were waiting go in together, before the next
/// writer. A waiting coroutine parks (its worker runs others); a waiting OS
/// thread blocks on a futex. Both can wait on the same lock.
///
/// ```
/// use std::sync::Arc;
/// use weft::sync::RwLock;
///
/// let config = Arc::new(RwLock::new(vec![1, 2, 3]));
/// let readers: Vec<_> = (0..4)
///     .map(|_| {
///         let config = Arc::clone(&config);
///         weft::spawn(move || config.read().iter().sum::<i32>())
///     })
///     .collect();
/// config.write().push(4);
/// for r in readers {
///     let sum = r.join().unwrap();
///     assert!(sum == 6 || sum == 10);
/// }
/// assert_eq!(*config.read(), [1, 2, 3, 4]);
/// ```
pub struct RwLock<T: ?Sized> {
    raw: RawRwLock,
    data: UnsafeCell<T>,
}

// SAFETY: a write lock hands `data` to one owner at a time (T: Send moves it
// between threads); read locks share `&T` among threads (T: Sync).
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}

impl<T> RwLock<T> {
    /// A new, unlocked reader-writer lock.
    #[cfg(not(loom))]
    pub const fn new(value: T) -> RwLock<T> {
        RwLock { raw: RawRwLock::new(), data: UnsafeCell::new(value) }
    }

    /// A new, unlocked reader-writer lock.
    #[cfg(loom)]
    pub fn new(value: T) -> RwLock<T> {
        RwLock { raw: RawRwLock::new(), data: UnsafeCell::new(value) }
    }

    /// Consumes the lock and returns its value.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Locks for reading, waiting (parking the coroutine, or blocking the
    /// thread) while a writer holds the lock or waits for it.
    ///
    /// Taking a second read lock while already holding one can deadlock:
    /// if a writer started waiting in between, the second read queues
    /// behind that writer, which waits for the first read lock to go.
    ///
    /// # Panics
    ///
    /// If more than about 2^30 read locks would be held at once.
    #[inline]
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.raw.read();
        RwLockReadGuard { lock: self, _not_send: PhantomData }
    }

    /// Locks for reading if that is possible right now: not write-locked
    /// and no writer waiting (it does not barge past a waiting writer).
    #[inline]
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        // `then`, not `then_some`: an eagerly built guard would be dropped
        // on failure, unlocking a lock we do not hold.
        self.raw.try_read().then(|| RwLockReadGuard { lock: self, _not_send: PhantomData })
    }

    /// Locks for writing, waiting while readers or a writer hold the lock,
    /// or it is their turn.
    #[inline]
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.raw.write();
        RwLockWriteGuard { lock: self, _not_send: PhantomData }
    }

    /// Locks for writing if the lock is free right now and nobody waits.
    #[inline]
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        // `then`, not `then_some`: see try_read.
        self.raw.try_write().then(|| RwLockWriteGuard { lock: self, _not_send: PhantomData })
    }

    /// The value, through `&mut self` (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        // SAFETY: `&mut self` proves no guard and no other reference exists.
        self.data.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> Self {
        RwLock::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_read() {
            Some(guard) => f.debug_struct("RwLock").field("data", &&*guard).finish(),
            None => f.debug_struct("RwLock").field("data", &format_args!("<locked>")).finish(),
        }
    }
}

/// Proof of holding a read lock of a [`RwLock`]; unlocks on drop (also
/// during unwinding). `!Send`: a lock is released by whoever took it.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing a read guard only shares `&T`: T: Sync suffices.
unsafe impl<T: ?Sized + Sync> Sync for RwLockReadGuard<'_, T> {}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a read lock is held: no writer touches the data until it
        // is released, and readers only read.
        self.lock.data.with(|p| unsafe { &*p })
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard proves we hold a read lock.
        unsafe { self.lock.raw.read_unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// Proof of holding the write lock of a [`RwLock`]; unlocks on drop (also
/// during unwinding). `!Send`: a lock is released by whoever took it.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing a write guard only shares `&T`: T: Sync suffices.
unsafe impl<T: ?Sized + Sync> Sync for RwLockWriteGuard<'_, T> {}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the write lock is held: no one else touches the data.
        self.lock.data.with(|p| unsafe { &*p })
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref, and `&mut self` makes this the only reference.
        self.lock.data.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard proves we hold the write lock.
        unsafe { self.lock.raw.write_unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::loom::process::{AtomicBool, AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
    use crate::sync::Mutex;
    use crate::test_rng::{self, TestRng};
    use std::sync::{Arc, mpsc};
    use std::thread;
    use std::time::{Duration, Instant};

    fn state<T>(lock: &RwLock<T>) -> u32 {
        lock.raw.state.load(Ordering::Relaxed)
    }

    /// Polls `cond` until it holds (failing after a generous bound).
    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for: {what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until `bit` is set, then a little longer so the waiter that set
    /// it has validated and is queued.
    fn wait_until_flagged<T>(lock: &RwLock<T>, bit: u32) {
        wait_for("a waiter to flag itself", || state(lock) & bit != 0);
        thread::sleep(Duration::from_millis(30));
    }

    #[test]
    fn try_locks_exclude_as_they_should() {
        let lock = RwLock::new(1);
        let r1 = lock.try_read().expect("free");
        let r2 = lock.try_read().expect("readers share");
        assert!(lock.try_write().is_none());
        assert_eq!(format!("{lock:?}"), "RwLock { data: 1 }");
        drop((r1, r2));
        let mut w = lock.try_write().expect("free again");
        *w += 1;
        assert!(lock.try_read().is_none());
        assert!(lock.try_write().is_none());
        assert_eq!(format!("{lock:?}"), "RwLock { data: <locked> }");
        drop(w);
        assert_eq!(state(&lock), 0);
        assert_eq!(*lock.read(), 2);
    }

    #[test]
    fn get_mut_into_inner_default() {
        let mut lock = RwLock::<String>::default();
        lock.get_mut().push('a');
        lock.write().push('b');
        assert_eq!(state(&lock), 0);
        assert_eq!(lock.into_inner(), "ab");
    }

    #[test]
    fn unlocks_on_panic() {
        let lock = Arc::new(RwLock::new(0));
        for write in [false, true] {
            let l = Arc::clone(&lock);
            let result = thread::spawn(move || {
                let _guard = if write { Err(l.write()) } else { Ok(l.read()) };
                panic!("boom while holding the rwlock");
            })
            .join();
            assert!(result.is_err());
            assert_eq!(state(&lock), 0, "unwinding must release the lock (no poisoning)");
        }
    }

    #[test]
    #[should_panic(expected = "RwLock reader count overflow")]
    fn reader_count_overflow_panics() {
        let lock = RwLock::new(());
        // Pretend MAX_READERS - 1 readers hold it.
        lock.raw.state.store(MAX_READERS - 1, Ordering::Relaxed);
        let _last = lock.read();
        assert_eq!(state(&lock), MAX_READERS);
        assert!(lock.try_read().is_none(), "try_read on a full lock fails instead of overflowing");
        let _one_too_many = lock.read();
    }

    /// A waiting writer stops new readers; they go in after it.
    #[test]
    fn readers_queue_behind_waiting_writer() {
        let lock = Arc::new(RwLock::new(Vec::new()));
        let first_reader = lock.read();
        let l = Arc::clone(&lock);
        let writer = thread::spawn(move || l.write().push("writer"));
        wait_until_flagged(&lock, WRITERS_WAITING);
        assert!(lock.try_read().is_none(), "try_read must not barge past a waiting writer");
        let l = Arc::clone(&lock);
        let late_reader = thread::spawn(move || l.read().clone());
        wait_until_flagged(&lock, READERS_WAITING);
        drop(first_reader);
        writer.join().unwrap();
        assert_eq!(late_reader.join().unwrap(), ["writer"], "the late reader went in after the writer");
        assert_eq!(state(&lock), 0);
    }

    /// Writer W1 holds; readers queue; writer W2 queues behind them. When W1
    /// leaves, all the queued readers hold the lock at the same time, and
    /// W2 goes in only after them.
    #[test]
    fn waiting_readers_go_in_together_before_next_writer() {
        const READERS: usize = 4;
        let rt = crate::Runtime::builder().workers(2).build().unwrap();
        let lock = Arc::new(RwLock::new(Vec::new()));
        let inside = Arc::new(StdAtomicUsize::new(0));
        let w1 = lock.write();
        let mut readers = Vec::new();
        let mut threads = Vec::new();
        for i in 0..READERS {
            let (l, inside) = (Arc::clone(&lock), Arc::clone(&inside));
            let body = move || {
                let guard = l.read();
                inside.fetch_add(1, StdOrdering::SeqCst);
                // Hold the read lock until every queued reader is inside.
                let start = Instant::now();
                while inside.load(StdOrdering::SeqCst) < READERS {
                    assert!(start.elapsed() < Duration::from_secs(10), "the readers did not go in together");
                    crate::yield_now();
                }
                guard.clone()
            };
            if i % 2 == 0 {
                readers.push(rt.spawn(body));
            } else {
                threads.push(thread::spawn(body));
            }
            wait_until_flagged(&lock, READERS_WAITING);
        }
        let l = Arc::clone(&lock);
        let w2 = thread::spawn(move || l.write().push("w2"));
        wait_until_flagged(&lock, WRITERS_WAITING);
        drop(w1);
        for r in readers {
            assert!(r.join().unwrap().is_empty(), "a reader saw w2's write");
        }
        for t in threads {
            assert!(t.join().unwrap().is_empty(), "a reader saw w2's write");
        }
        w2.join().unwrap();
        assert_eq!(*lock.read(), ["w2"]);
        assert_eq!(state(&lock), 0);
        assert_eq!(lock.raw.parked_readers.load(Ordering::Relaxed), 0);
    }

    /// Generous: the machine is small and shared; a starving lock never
    /// gets there at all.
    const STARVED: Duration = Duration::from_secs(20);

    /// Runs `f` `rounds` times on a new thread; the receiver gets `()` when
    /// all are done. A starving test fails on its `recv_timeout` instead of
    /// hanging.
    fn in_rounds(rounds: usize, f: impl Fn() + Send + 'static) -> mpsc::Receiver<()> {
        let (done, receiver) = mpsc::channel();
        thread::spawn(move || {
            for _ in 0..rounds {
                f();
            }
            let _ = done.send(());
        });
        receiver
    }

    /// 8 reader threads keep overlapping read locks (the count never falls
    /// to 0 on its own); a writer still gets in within a generous bound.
    #[test]
    fn writer_not_starved_by_overlapping_readers() {
        const READERS: usize = 8;
        let lock = Arc::new(RwLock::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let max_inside = Arc::new(StdAtomicUsize::new(0));
        let inside = Arc::new(StdAtomicUsize::new(0));
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                let (lock, stop) = (Arc::clone(&lock), Arc::clone(&stop));
                let (inside, max_inside) = (Arc::clone(&inside), Arc::clone(&max_inside));
                thread::spawn(move || {
                    let mut rounds = 0u64;
                    while !stop.load(StdOrdering::Relaxed) {
                        let guard = lock.read();
                        let now = inside.fetch_add(1, StdOrdering::SeqCst) + 1;
                        max_inside.fetch_max(now, StdOrdering::Relaxed);
                        thread::sleep(Duration::from_micros(500));
                        inside.fetch_sub(1, StdOrdering::SeqCst);
                        drop(guard);
                        rounds += 1;
                    }
                    rounds
                })
            })
            .collect();
        wait_for("the readers to overlap", || max_inside.load(StdOrdering::Relaxed) >= 2);
        let l = Arc::clone(&lock);
        let rounds = in_rounds(5, move || *l.write() += 1);
        let result = rounds.recv_timeout(STARVED);
        stop.store(true, StdOrdering::Relaxed);
        assert!(result.is_ok(), "a writer starved: 5 write locks not taken within {STARVED:?}");
        let total: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(total > 0);
        assert_eq!(*lock.read(), 5);
        assert!(max_inside.load(StdOrdering::Relaxed) >= 2, "readers never overlapped: the test proved nothing");
    }

    /// The other side: a steady stream of writers does not starve a reader.
    #[test]
    fn reader_not_starved_by_writers() {
        let lock = Arc::new(RwLock::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(StdAtomicUsize::new(0));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (lock, stop, writes) = (Arc::clone(&lock), Arc::clone(&stop), Arc::clone(&writes));
                thread::spawn(move || {
                    while !stop.load(StdOrdering::Relaxed) {
                        let mut guard = lock.write();
                        *guard += 1;
                        writes.fetch_add(1, StdOrdering::Relaxed);
                        thread::sleep(Duration::from_micros(200));
                    }
                })
            })
            .collect();
        wait_for("the writers to get going", || writes.load(StdOrdering::Relaxed) > 10);
        let l = Arc::clone(&lock);
        let rounds = in_rounds(20, move || drop(l.read()));
        let result = rounds.recv_timeout(STARVED);
        stop.store(true, StdOrdering::Relaxed);
        assert!(result.is_ok(), "a reader starved: 20 read locks not taken within {STARVED:?}");
        for w in writers {
            w.join().unwrap();
        }
    }

    /// Readers and writers, coroutines and threads, on one lock: a pair of
    /// fields only ever changed together is always seen equal.
    #[test]
    fn mixed_stress_sees_whole_states() {
        const ROUNDS: usize = 2_000;
        let rt = crate::Runtime::builder().workers(2).build().unwrap();
        let lock = Arc::new(RwLock::new((0usize, 0usize)));
        let body = |lock: Arc<RwLock<(usize, usize)>>, id: usize| {
            move || {
                for i in 0..ROUNDS {
                    if (i + id) % 4 == 0 {
                        let mut guard = lock.write();
                        guard.0 += 1;
                        if i % 32 == 0 {
                            crate::yield_now();
                        }
                        guard.1 += 1;
                    } else {
                        let guard = lock.read();
                        let (a, b) = *guard;
                        assert_eq!(a, b, "a reader saw half a write");
                        if i % 32 == 0 {
                            crate::yield_now();
                        }
                    }
                }
            }
        };
        let coroutines: Vec<_> = (0..6).map(|id| rt.spawn(body(Arc::clone(&lock), id))).collect();
        let threads: Vec<_> = (6..9).map(|id| thread::spawn(body(Arc::clone(&lock), id))).collect();
        for c in coroutines {
            c.join().unwrap();
        }
        for t in threads {
            t.join().unwrap();
        }
        let (a, b) = *lock.read();
        assert_eq!(a, b);
        assert_eq!(a, 9 * ROUNDS / 4);
        assert_eq!(state(&lock), 0);
        assert_eq!(lock.raw.parked_readers.load(Ordering::Relaxed), 0);
    }

    /// Coroutines only, on one worker: waiting parks the coroutine, so the
    /// holder (on the same worker) can run and unlock.
    #[test]
    fn coroutines_on_one_worker() {
        let rt = crate::Runtime::builder().workers(1).build().unwrap();
        let lock = Arc::new(RwLock::new(Vec::new()));
        let l = Arc::clone(&lock);
        rt.block_on(move || {
            let guard = l.write();
            let l2 = Arc::clone(&l);
            let reader = crate::spawn(move || l2.read().len());
            let l3 = Arc::clone(&l);
            let writer = crate::spawn(move || l3.write().push(2));
            crate::sleep(Duration::from_millis(20));
            drop(guard);
            let seen = reader.join().unwrap();
            writer.join().unwrap();
            assert_eq!(seen, 0, "the reader queued first goes first");
            l.write().push(3);
        });
        assert_eq!(*lock.read(), [2, 3]);
    }

    /// A coroutine and a thread waiting on one lock, each handing over to
    /// the other many times.
    #[test]
    fn coroutine_and_thread_ping_pong() {
        const ROUNDS: usize = 500;
        let rt = crate::Runtime::builder().workers(2).build().unwrap();
        let lock = Arc::new(RwLock::new(0usize));
        let turns = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&lock);
        let coroutine = rt.spawn(move || {
            for _ in 0..ROUNDS {
                *l.write() += 1;
                let _ = *l.read();
            }
        });
        for _ in 0..ROUNDS {
            *lock.write() += 1;
            turns.lock().push(*lock.read());
        }
        coroutine.join().unwrap();
        assert_eq!(*lock.read(), 2 * ROUNDS);
    }

    #[derive(Debug, Clone)]
    enum Op {
        TryRead,
        TryWrite,
        DropRead(usize),
        DropWrite,
    }

    /// Up to 63 operations, weighted 3:2:3:2.
    fn random_ops(rng: &mut TestRng) -> Vec<Op> {
        (0..rng.below(64))
            .map(|_| match rng.weighted(&[3, 2, 3, 2]) {
                0 => Op::TryRead,
                1 => Op::TryWrite,
                2 => Op::DropRead(rng.next_u64() as usize),
                _ => Op::DropWrite,
            })
            .collect()
    }

    /// Single-threaded random operations against a model: each try_*
    /// succeeds exactly when the model says, and the state word matches
    /// (`test_rng::CASES` seeded cases; a failure names its case and ops).
    #[test]
    fn matches_sequential_model() {
        for case in 0..test_rng::CASES {
            let ops = random_ops(&mut TestRng::new(case));
            let lock = RwLock::new(0u32);
            let mut reads = Vec::new();
            let mut write = None;
            for (i, op) in ops.iter().enumerate() {
                let at = || format!("case {case}, op {i} of {ops:?}");
                match *op {
                    Op::TryRead => {
                        let got = lock.try_read();
                        assert_eq!(got.is_some(), write.is_none(), "try_read, {}", at());
                        reads.extend(got);
                    }
                    Op::TryWrite => {
                        let got = lock.try_write();
                        assert_eq!(got.is_some(), write.is_none() && reads.is_empty(), "try_write, {}", at());
                        if let Some(mut guard) = got {
                            *guard += 1;
                            write = Some(guard);
                        }
                    }
                    Op::DropRead(i) if !reads.is_empty() => drop(reads.swap_remove(i % reads.len())),
                    Op::DropWrite => write = None,
                    Op::DropRead(_) => {}
                }
                let expected = if write.is_some() { WRITE_LOCKED } else { reads.len() as u32 };
                assert_eq!(state(&lock), expected, "state word, {}", at());
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use crate::loom::thread;
    use loom::sync::Arc;

    /// Two writers and a reader: the reader only ever sees whole states (a
    /// pair changed together is equal), no write is lost, and the word ends
    /// clear. Loom also checks every access to `data` for races.
    #[test]
    fn two_writers_one_reader() {
        loom::model(|| {
            let lock = Arc::new(RwLock::new((0usize, 0usize)));
            let writers: Vec<_> = (0..2)
                .map(|_| {
                    let lock = lock.clone();
                    thread::spawn(move || {
                        let mut guard = lock.write();
                        guard.0 += 1;
                        guard.1 += 1;
                    })
                })
                .collect();
            {
                let guard = lock.read();
                assert_eq!(guard.0, guard.1, "the reader saw half a write");
            }
            for w in writers {
                w.join().unwrap();
            }
            assert_eq!(*lock.read(), (2, 2));
            assert_eq!(lock.raw.state.load(Ordering::Relaxed), 0);
        });
    }

    /// The main thread write-locks first, then a writer and a reader arrive
    /// and queue, then it unlocks: the queueing races (a bit set, then
    /// validated after a hand-over changed the word) cost no preemptions
    /// here, so loom's bound of 2 reaches the races after them.
    #[test]
    fn writer_and_reader_queue_behind_writer() {
        loom::model(|| {
            let lock = Arc::new(RwLock::new((0usize, 0usize)));
            let mut first = lock.write();
            let writer = {
                let lock = lock.clone();
                thread::spawn(move || {
                    let mut guard = lock.write();
                    guard.0 += 1;
                    guard.1 += 1;
                })
            };
            let reader = {
                let lock = lock.clone();
                thread::spawn(move || {
                    let guard = lock.read();
                    assert_eq!(guard.0, guard.1, "the reader saw half a write");
                })
            };
            first.0 += 1;
            first.1 += 1;
            drop(first);
            writer.join().unwrap();
            reader.join().unwrap();
            assert_eq!(*lock.read(), (2, 2));
            assert_eq!(lock.raw.state.load(Ordering::Relaxed), 0);
            assert_eq!(lock.raw.parked_readers.load(Ordering::Relaxed), 0);
        });
    }

    /// Two readers queue behind a writer that then unlocks and at once
    /// writes again: the read phase hands both readers in while the writer
    /// waits its turn. Any overlap of the second write with a reader is a
    /// data race that loom reports.
    #[test]
    fn two_readers_queued_behind_writer() {
        loom::model(|| {
            let lock = Arc::new(RwLock::new((0usize, 0usize)));
            let mut first = lock.write();
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let lock = lock.clone();
                    thread::spawn(move || {
                        let guard = lock.read();
                        assert_eq!(guard.0, guard.1, "a reader saw half a write");
                    })
                })
                .collect();
            first.0 += 1;
            first.1 += 1;
            drop(first);
            {
                let mut second = lock.write();
                second.0 += 1;
                second.1 += 1;
            }
            for r in readers {
                r.join().unwrap();
            }
            assert_eq!(*lock.read(), (2, 2));
            assert_eq!(lock.raw.state.load(Ordering::Relaxed), 0);
            assert_eq!(lock.raw.parked_readers.load(Ordering::Relaxed), 0);
        });
    }

    /// Every party both reads and writes, so each kind of hand-over (writer
    /// to readers, last reader to writer, writer to writer) meets each
    /// other in some interleaving.
    #[test]
    fn each_party_reads_then_writes() {
        loom::model(|| {
            let lock = Arc::new(RwLock::new((0usize, 0usize)));
            let party = {
                let lock = lock.clone();
                move || {
                    {
                        let guard = lock.read();
                        assert_eq!(guard.0, guard.1, "a reader saw half a write");
                    }
                    let mut guard = lock.write();
                    guard.0 += 1;
                    guard.1 += 1;
                }
            };
            let other = thread::spawn(party.clone());
            party();
            other.join().unwrap();
            assert_eq!(*lock.read(), (2, 2));
            assert_eq!(lock.raw.state.load(Ordering::Relaxed), 0);
        });
    }

    /// One writer and two readers: the readers' phase and the writer's
    /// exclude each other, and every wait ends.
    #[test]
    fn one_writer_two_readers() {
        loom::model(|| {
            let lock = Arc::new(RwLock::new((0usize, 0usize)));
            let reader = {
                let lock = lock.clone();
                thread::spawn(move || {
                    let guard = lock.read();
                    assert_eq!(guard.0, guard.1);
                })
            };
            let writer = {
                let lock = lock.clone();
                thread::spawn(move || {
                    let mut guard = lock.write();
                    guard.0 += 1;
                    guard.1 += 1;
                })
            };
            {
                let guard = lock.read();
                assert_eq!(guard.0, guard.1);
            }
            reader.join().unwrap();
            writer.join().unwrap();
            assert_eq!(lock.raw.state.load(Ordering::Relaxed), 0);
            assert_eq!(lock.raw.parked_readers.load(Ordering::Relaxed), 0);
        });
    }
}
