//! The protocol of `RwLock<T>`: a phase-fair reader-writer lock for
//! coroutines and OS threads alike (they can wait on the same lock). The
//! safe type and its guards are in `mod.rs`; this file is the state word.
//!
//! # Policy: neither side starves
//!
//! Once a writer waits, new readers queue behind it (they do not barge past
//! it, however many readers keep overlapping). When a writer leaves, all
//! the readers that were waiting at that moment go in together, before the
//! next writer; when the last of them leaves, the next writer goes in. So
//! phases alternate — writer, every waiting reader, writer, ... — and a
//! waiter of either kind waits at most about one phase of the other kind.
//! Writers go in one at a time in arrival order (FIFO). An upgradable
//! reader is a reader in this (it waits for its read phase); its upgrade
//! stops new readers as a waiting writer does and goes before the writers
//! already waiting, then counts as a writer's phase ("Upgradable reads").
//!
//! The lock is always *handed over* to the waiters whose turn it is (their
//! read locks are counted, or the write lock kept, on their behalf before
//! they are woken), never released for them to compete for: a lock that
//! lets woken waiters race newcomers cannot keep the promise above.
//!
//! # State word
//!
//! ```text
//!   u32:  [ WRITERS_WAITING (31) | READERS_WAITING (30) | UPGRADING (29)
//!         | WRITE_LOCKED (28) | count (0..28) ]
//!
//!  WRITE_LOCKED  count              meaning
//!  ------------  -----------------  ------------------------------------------
//!  0             0                  free
//!  0             1 ..= MASK         read-locked by at most MAX_READERS
//!                                   readers (an upgradable reader, if one
//!                                   holds the lock, is one of them); the rest
//!                                   of the count, if any, is readers backing
//!                                   out (below)
//!  1             any                write-locked; the count is readers backing
//!                                   out, nobody holds a read lock
//!
//!  READERS_WAITING   readers are parked on the reader key (or one is about to)
//!  WRITERS_WAITING   writers are parked on the writer key (or one is about to,
//!                    or is still spinning or yielding before it parks)
//!  UPGRADING         the upgradable reader waits in `upgrade` for the other
//!                    readers to leave (parked on the upgrade key, or about to)
//! ```
//!
//! - Readers park on the state word's address, writers on that address + 1,
//!   an upgrading reader on address + 2 (bytes inside the same word, so no
//!   other lock's key can equal them).
//! - A read lock is taken by `count += 1` when the lock is not write-locked,
//!   not full, and neither WRITERS_WAITING nor UPGRADING is set
//!   ([`is_read_lockable`]); a write lock by `0 -> WRITE_LOCKED`, only from
//!   an entirely clear word.
//! - `read` makes its `count += 1` with one `fetch_add`, before it knows
//!   whether the word was read-lockable (the fast path of Go's RWMutex, whose
//!   readers then never back out: its writer's unlock accounts for them):
//!   one atomic instruction where a load and a compare-exchange would move
//!   the word's cache line twice when another CPU holds it. If the word it
//!   found was
//!   not read-lockable, the reader *backs out* at once: `count -= 1`, a read
//!   unlock of a lock it never held, with the same duties (below: it may
//!   turn out to be the last reader, and responsible). Meanwhile its count
//!   looks like a reader's: a writer cannot take the lock from 0, an upgrade
//!   waits, and a free-lock take-over gives up to it, exactly as for a
//!   reader that is about to leave. While the lock is write-locked the count
//!   holds only such readers, and the writer's unlock keeps their count and
//!   passes the lock on. `try_read` and the waiting reader take their read
//!   lock with a compare-exchange from a read-lockable word, as before.
//!   The price: for the moment between its two instructions, a reader that
//!   backs out counts as one, so a `try_write`, a `try_upgrade` or
//!   `is_locked` can see a lock that nobody holds as read-locked, and a
//!   writer's take-over waits for the back-out (for an OS thread preempted
//!   right there, until it runs again).
//! - A waiting bit is cleared only under its key's bucket lock, by whoever
//!   takes the last waiter off that queue (or finds it empty, or leaves it
//!   last by a timeout), so a set bit never hides a waiter from an unlocker,
//!   and a waiter that set the bit but had not yet validated sees it cleared
//!   and retries.
//!
//! ```text
//!  transition                                 who
//!  -----------------------------------------  ---------------------------------------
//!  count += 1          (read-lockable word)   a reader, an upgradable reader
//!  count += 1          (any word)             `read`'s fetch_add, kept if the word
//!                                             was read-lockable, else backed out
//!  0 -> WRITE_LOCKED   (clear word)           a writer
//!  count -= 1                                 a reader leaving or backing out; the
//!                                             last one of a phase with a bit set
//!                                             and no write lock is responsible
//!                                             (below); 2 -> 1 with UPGRADING set
//!                                             wakes the upgrading reader
//!  0|bits -> WRITE_LOCKED|bits                the responsible party takes over
//!  WRITE_LOCKED|n -> n+1  (bits kept)         a read phase starts; a downgrade
//!  1|UPGRADING|bits -> WRITE_LOCKED|bits      an upgrade, once it is the only reader
//!  1 -> WRITE_LOCKED   (bits kept)            try_upgrade
//!  WRITE_LOCKED|n -> n  (no bits)             a writer leaving, nobody waiting (n:
//!                                             readers backing out)
//!  set a bit                                  a waiter before it parks (a writer
//!                                             also before it spins)
//!  clear a bit         (bucket lock held)     whoever takes the last waiter off,
//!                                             or a timed-out waiter leaving last
//! ```
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
//!  a writer that downgrades       readers           every reader queued now; it
//!                                                   keeps a read lock of its own
//!  a writer that gives up, as     readers           every reader queued now, if
//!  the last writer queued                           only readers hold the lock
//!                                                   (see "Timeouts")
//! ```
//!
//! - The last reader (its `count -= 1` reached 0 with a bit set) first takes
//!   the write lock with a CAS from `0 | bits`. No one else can lock that
//!   state (WRITERS_WAITING or a non-zero word keeps others out), except a
//!   reader when only READERS_WAITING is set; but any reader can count
//!   itself in meanwhile, to keep its read lock or to back out. Then that
//!   reader becomes the one who unlocks (or backs out) last, and so
//!   responsible, and the CAS gives up.
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
//! # Upgradable reads
//!
//! An upgradable reader holds an ordinary read lock (it is counted, and
//! shares the lock with plain readers) plus a small [`Mutex`](crate::sync::Mutex)
//! beside the state word that admits one upgradable reader at a time
//! (taken first, released last). So an upgradable reader waits for its
//! read lock exactly as a reader does: it never barges past a waiting
//! writer, and goes in with the next read phase.
//!
//! `upgrade` sets UPGRADING, which stops new readers as a waiting writer
//! does, and waits (spin, yield, park on the upgrade key) until it is the
//! only reader left; the reader whose unlock takes the count from 2 to 1
//! wakes it. It then turns its read lock into the write lock with one CAS,
//! keeping the waiting bits, and releases the upgradable mutex (the write
//! lock keeps every other reader out by itself). So the upgrading reader
//! goes before the writers that wait — they could not get in before it
//! left anyway — and when it leaves the write lock, the readers that queued
//! meanwhile go in together (a read phase), as after any writer: neither
//! side starves. `try_upgrade` is the CAS alone, when it is the only reader.
//!
//! # Downgrades
//!
//! A writer downgrades by turning `WRITE_LOCKED` into one read lock (its
//! own) in one step, so no writer can get in between, and then hands a read
//! lock to every reader queued at that moment, as a read phase does (it is
//! the phase holder, and keeps its read lock afterwards). A writer that
//! waits stays out until the last of them leaves.
//!
//! # Timeouts
//!
//! A reader or writer whose deadline passes while it is queued takes itself
//! off its queue (the parking lot does it under the bucket lock) and, as the
//! last waiter of its kind, clears its bit; a reader also uncounts itself
//! from `parked_readers`. A writer that timed out while its bit was still
//! set only by itself (flagged before spinning) leaves through the same
//! path, so its bit never outlives it. A deadline is checked only before a
//! waiter sets a bit; after that it is the park's to judge.
//!
//! A writer that leaves the writer queue as its last waiter may leave
//! readers parked behind it on a lock they could now share (readers queue
//! while WRITERS_WAITING is set even if only readers hold the lock). It then
//! lets them in as a read phase would: it takes a read lock of its own
//! (they are read-lockable now), hands one to each queued reader, and
//! drops its own; or, if the lock is free, takes it over and passes it on.
//! An upgrading reader unwound while parked does the same for the readers
//! that queued behind UPGRADING (it still holds its read lock). So a waiter
//! that gives up leaves the lock as if it had never waited.
//!
//! Orderings: every change of the word is a read-modify-write, so release
//! sequences are never broken. Taking a lock is Acquire, giving one up is
//! Release: a writer's Acquire (its CAS from 0, or the last reader's
//! take-over CAS) synchronises with the Release `count -= 1` of every
//! reader before it, and a reader's Acquire with the writer's Release. A
//! lock handed over is published by the parking lot's `removed`
//! Release/Acquire pair, which the responsible party performs after its
//! critical section.

use super::super::mutex::RawMutex;
use super::super::spinlock::SpinWait;
use crate::loom::{AtomicU32, AtomicUsize, Ordering, negative_control};
use crate::park::lot::{self, DEFAULT_TOKEN, ParkResult};
use crate::sys::futex::Deadline;
use std::cell::Cell;
/// Bits 0..28: the reader count (readers that hold the lock, and readers
/// backing out of a `count += 1` that found it not read-lockable).
pub(super) const MASK: u32 = (1 << 28) - 1;
pub(super) const WRITE_LOCKED: u32 = 1 << 28;
/// The most readers at once; one more is a panic. Half the count's range:
/// the other half (2^27 - 1) is room for readers backing out, one per thread or
/// coroutine in the middle of a `read` (each of which owns at least a 4 KiB
/// stack page, so 2^27 of them would need 512 GiB).
pub(super) const MAX_READERS: u32 = 1 << 27;
pub(super) const UPGRADING: u32 = 1 << 29;
pub(super) const READERS_WAITING: u32 = 1 << 30;
pub(super) const WRITERS_WAITING: u32 = 1 << 31;
const WAITING: u32 = READERS_WAITING | WRITERS_WAITING;

/// Token for a waiter that is handed the lock (it returns owning it).
const TOKEN_HANDOFF: usize = 1;

#[inline]
fn is_write_locked(state: u32) -> bool {
    state & WRITE_LOCKED != 0
}

/// Whether a reader may take a read lock itself: not write-locked, room for
/// one more, no writer waiting and no upgrade waiting (readers never barge
/// past either). READERS_WAITING does not matter: readers do not exclude
/// each other.
#[inline]
fn is_read_lockable(state: u32) -> bool {
    state & MASK < MAX_READERS && state & (WRITE_LOCKED | WRITERS_WAITING | UPGRADING) == 0
}

/// Whether a read unlock (or a back-out) that found `previous` has more to
/// do than the decrement: it was the last reader with waiters flagged, or
/// it leaves the upgrading reader alone. Never while write-locked: the
/// count then holds only readers backing out, and the writer's unlock is
/// the one responsible (an early exit: the take-over would refuse a
/// write-locked word anyway, and UPGRADING is never set with WRITE_LOCKED).
#[inline]
fn read_unlock_is_contended(previous: u32) -> bool {
    let count = previous & MASK;
    !is_write_locked(previous) && ((count == 1 && previous & WAITING != 0) || (count == 2 && previous & UPGRADING != 0))
}

/// The lock without data: the state word and its protocol.
pub(crate) struct RawRwLock {
    /// See the module docs.
    pub(super) state: AtomicU32,
    /// Readers on the reader key's queue. Read and written only under that
    /// key's bucket lock (so Relaxed): +1 in a reader's validation, -1 when
    /// a read phase takes one off or one times out.
    pub(super) parked_readers: AtomicUsize,
    /// Admits one upgradable reader at a time ("Upgradable reads").
    pub(super) upgradable: RawMutex,
}

impl RawRwLock {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> RawRwLock {
        RawRwLock { state: AtomicU32::new(0), parked_readers: AtomicUsize::new(0), upgradable: RawMutex::new() }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> RawRwLock {
        RawRwLock { state: AtomicU32::new(0), parked_readers: AtomicUsize::new(0), upgradable: RawMutex::new() }
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

    /// The parking-lot key an upgrading reader waits on (another byte of
    /// the state word).
    fn upgrade_key(&self) -> usize {
        self.reader_key() + 2
    }

    /// Whether any lock is held (read, upgradable or write): a snapshot.
    pub(super) fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & (MASK | WRITE_LOCKED) != 0
    }

    /// Whether the write lock is held: a snapshot.
    pub(super) fn is_locked_exclusive(&self) -> bool {
        is_write_locked(self.state.load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn read(&self) {
        // One read-modify-write: count ourselves in, then look at what we
        // found. Acquire: pairs with the Release of the writer that last
        // unlocked.
        let previous = self.state.fetch_add(1, Ordering::Acquire);
        if !is_read_lockable(previous) {
            self.read_refused(previous);
        }
    }

    /// `read` found the lock not read-lockable: backs out, then waits.
    #[cold]
    fn read_refused(&self, previous: u32) {
        self.back_out();
        if previous & MASK >= MAX_READERS {
            reader_overflow();
        }
        let locked = self.read_contended(None);
        debug_assert!(locked, "RwLock: an untimed read gave up");
    }

    /// Takes back the `count += 1` of a reader that found the lock not
    /// read-lockable: a read unlock of a lock it never held (module docs,
    /// "State word"). It may leave the reader the last one with waiters
    /// flagged, responsible as any last reader.
    fn back_out(&self) {
        // Release: nothing of ours to publish (we read nothing), so Relaxed
        // would do: a take-over that follows reads the readers' Release
        // decrements through this read-modify-write either way. Kept as a
        // read unlock's, so that a back-out is one (the same instruction on
        // x86).
        let previous = self.state.fetch_sub(1, Ordering::Release);
        debug_assert!(previous & MASK != 0, "RwLock: backing out of a count of 0 (state {previous:#x})");
        // (The loom negative control drops that duty: a writer that waits
        // for the last reader is stranded.)
        if read_unlock_is_contended(previous) && !negative_control::broken("rwlock back-out") {
            self.read_unlock_contended(previous);
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

    /// Takes a read lock unless `deadline` passes first; `false` on timeout.
    pub(crate) fn read_until(&self, deadline: Deadline) -> bool {
        self.try_read() || self.read_contended(Some(deadline))
    }

    /// Waits for a read lock (until `deadline`, if any); `false` on timeout.
    #[cold]
    fn read_contended(&self, deadline: Option<Deadline>) -> bool {
        let mut spin = SpinWait::new();
        let mut yield_wait = YieldWait::new();
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if is_read_lockable(state) {
                // Acquire: as in `read`.
                match self.state.compare_exchange_weak(state, state + 1, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return true,
                    Err(actual) => state = actual,
                }
                continue;
            }
            if state & MASK >= MAX_READERS {
                reader_overflow();
            }
            // Nothing of ours is in the word here (our bit, if we set it
            // before an earlier park, is the parking lot's business now):
            // giving up leaves no trace.
            if deadline.is_some_and(lot::deadline_passed) {
                return false;
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
                    // Park only if a writer or an upgrade is in the way (so
                    // some unlock will pass the lock on to readers) and our
                    // bit is still set (so that unlock will look at the
                    // reader queue).
                    let state = self.state.load(Ordering::Relaxed);
                    let park = state & READERS_WAITING != 0
                        && (is_write_locked(state) || state & (WRITERS_WAITING | UPGRADING) != 0);
                    if park {
                        self.parked_readers.fetch_add(1, Ordering::Relaxed);
                    }
                    park
                },
                || {},
                // Timed out, or unwound by a runtime while parked: undo
                // what `validate` counted, and clear the bit if no reader is
                // left queued, as a read phase would. Nobody waits for a
                // queued reader, so nothing else changes.
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
                deadline,
            );
            match result {
                ParkResult::Unparked(TOKEN_HANDOFF) => return true, // a read phase counted us in
                // Only once the deadline passed (the parking lot checks).
                ParkResult::TimedOut => return false,
                ParkResult::Unparked(_) | ParkResult::Invalid => {}
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
        if read_unlock_is_contended(previous) {
            self.read_unlock_contended(previous);
        }
    }

    #[cold]
    fn read_unlock_contended(&self, previous: u32) {
        if self.after_read_unlock(previous) {
            self.pass_on_write_lock(true);
        }
    }

    /// The rest of a read unlock (a reader's or a phase holder's) whose
    /// `count -= 1` found `previous`. The last reader with waiters flagged
    /// is responsible for passing the lock on: `true` means it took the
    /// write lock over to do so, and the caller must pass it on. A reader
    /// that leaves the upgrading reader alone wakes it.
    fn after_read_unlock(&self, previous: u32) -> bool {
        let count = previous & MASK;
        if count == 1 && previous & WAITING != 0 {
            return self.take_over_free_lock();
        }
        if count == 2 && previous & UPGRADING != 0 {
            self.wake_upgrader();
        }
        false
    }

    #[inline]
    pub(crate) fn write(&self) {
        // Acquire: pairs with the Release of the previous holders.
        if self.state.compare_exchange_weak(0, WRITE_LOCKED, Ordering::Acquire, Ordering::Relaxed).is_err() {
            let locked = self.write_contended(None);
            debug_assert!(locked, "RwLock: an untimed write gave up");
        }
    }

    #[inline]
    pub(crate) fn try_write(&self) -> bool {
        // Acquire: as in `write`. Strong: a free lock is always taken.
        self.state.compare_exchange(0, WRITE_LOCKED, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Takes the write lock unless `deadline` passes first; `false` on
    /// timeout.
    pub(crate) fn write_until(&self, deadline: Deadline) -> bool {
        self.try_write() || self.write_contended(Some(deadline))
    }

    /// Waits for the write lock (until `deadline`, if any); `false` on
    /// timeout.
    #[cold]
    fn write_contended(&self, deadline: Option<Deadline>) -> bool {
        let mut spin = SpinWait::new();
        let mut yield_wait = YieldWait::new();
        // What we leave behind if we go without the lock (a timeout, or an
        // unwind): a bit we set, readers parked behind it (module docs,
        // "Timeouts"). Dropped on every exit, so an unwind runs it too.
        let leave = WriterLeaving::new(self);
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            // Only an entirely clear word may be taken: with a waiting bit
            // set, someone's turn comes first.
            if state == 0 {
                // Acquire: as in `write`.
                match self.state.compare_exchange_weak(0, WRITE_LOCKED, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => {
                        leave.flagged.set(false);
                        return true;
                    }
                    Err(actual) => state = actual,
                }
                continue;
            }
            if state & WRITERS_WAITING == 0 {
                // Whoever cleared our bit found no writer queued.
                leave.flagged.set(false);
            }
            // Out of time: `leave` withdraws a bit we set before spinning.
            if deadline.is_some_and(lot::deadline_passed) {
                return false;
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
                leave.flagged.set(true);
            }
            // Spin while no writer but us is flagged: the holders may leave
            // soon.
            if (state & WRITERS_WAITING == 0 || leave.flagged.get()) && spin.spin() {
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
            // From here the bit belongs to the writer queue: the park's
            // `timed_out` deals with it if we leave.
            leave.flagged.set(false);
            crate::park::waiting_on(crate::park::ParkedOn::RwLockWrite(self.writer_key()));
            let result = lot::park_passing_on(
                self.writer_key(),
                // We set the bit on a word that was not free, so whoever
                // frees it sees the bit and passes the lock on; park as long
                // as the bit is still set (it is cleared, under this bucket
                // lock, only once the writer queue is found empty).
                || self.state.load(Ordering::Relaxed) & WRITERS_WAITING != 0,
                || {},
                // Timed out, or unwound by a runtime while parked. The bit
                // is cleared, under this bucket lock, once the writer queue
                // is empty (see `validate`); readers parked behind it are
                // then let in (`leave`).
                |_, was_last| {
                    if was_last {
                        self.state.fetch_and(!WRITERS_WAITING, Ordering::Relaxed);
                        leave.left_last.set(true);
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
                deadline,
            );
            match result {
                ParkResult::Unparked(TOKEN_HANDOFF) => return true, // handed the write lock
                // Only once the deadline passed (the parking lot checks).
                ParkResult::TimedOut => return false,
                ParkResult::Unparked(_) | ParkResult::Invalid => {}
            }
            spin.reset();
            yield_wait.reset();
            state = self.state.load(Ordering::Relaxed);
        }
    }

    /// Clears WRITERS_WAITING if no writer is queued (under the writer
    /// key's bucket lock, waking nobody); `true` if it did. For a writer
    /// that set the bit and leaves without having queued.
    fn withdraw_writer_flag(&self) -> bool {
        let mut cleared = false;
        lot::unpark_filter(
            self.writer_key(),
            |_| lot::FilterOp::Stop,
            |result| {
                // A writer that set the bit but has not validated yet sees
                // it clear and retries, as after `wake_one_writer`.
                if !result.have_more {
                    self.state.fetch_and(!WRITERS_WAITING, Ordering::Relaxed);
                    cleared = true;
                }
                DEFAULT_TOKEN
            },
        );
        cleared
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
        if negative_control::broken("rwlock") {
            // The loom negative control: the write lock is dropped with its
            // waiters' bits, and nobody is woken.
            self.state.store(0, Ordering::Release);
            return;
        }
        // A writer leaves: the readers that wait go first.
        self.pass_on_write_lock(false);
    }

    /// Turns the write lock into a read lock without letting a writer in
    /// between, and lets in the readers queued now ("Downgrades").
    ///
    /// # Safety
    ///
    /// - The caller holds the write lock; it holds one read lock afterwards.
    pub(crate) unsafe fn downgrade(&self) {
        // WRITE_LOCKED|n -> n+1 (n: readers backing out), bits kept.
        // Release: readers that get in by
        // themselves from now on see our critical section.
        let previous = self.state.fetch_sub(WRITE_LOCKED - 1, Ordering::Release);
        debug_assert!(is_write_locked(previous), "RwLock: downgrade without the write lock (state {previous:#x})");
        if previous & READERS_WAITING != 0 {
            self.hand_out_read_locks();
        }
    }

    /// Takes the upgradable read lock: the upgradable mutex, then a read
    /// lock ("Upgradable reads").
    pub(crate) fn upgradable_read(&self) {
        self.upgradable.lock();
        // `read` panics only on a reader overflow: give the mutex back then.
        let release = ReleaseOnUnwind(&self.upgradable);
        self.read();
        std::mem::forget(release);
    }

    /// The upgradable read lock if both halves are free right now.
    pub(crate) fn try_upgradable_read(&self) -> bool {
        if !self.upgradable.try_lock() {
            return false;
        }
        if self.try_read() {
            return true;
        }
        // SAFETY: taken just above.
        unsafe { self.upgradable.unlock() };
        false
    }

    /// # Safety
    ///
    /// - The caller holds the upgradable read lock, which this gives up.
    pub(crate) unsafe fn upgradable_unlock(&self) {
        // SAFETY: the upgradable read lock includes a read lock and the
        // upgradable mutex, both ours (the caller's promise).
        unsafe {
            self.read_unlock();
            self.upgradable.unlock();
        }
    }

    /// # Safety
    ///
    /// - The caller holds the upgradable read lock; it holds a plain read
    ///   lock afterwards.
    pub(crate) unsafe fn upgradable_downgrade(&self) {
        // SAFETY: the upgradable mutex is ours (the caller's promise).
        unsafe { self.upgradable.unlock() };
    }

    /// Turns the upgradable read lock into the write lock if no other
    /// reader holds the lock now; `false` (still upgradable) otherwise.
    ///
    /// # Safety
    ///
    /// - The caller holds the upgradable read lock; on `true` it holds the
    ///   write lock instead.
    pub(crate) unsafe fn try_upgrade(&self) -> bool {
        if !self.upgrade_if_alone() {
            return false;
        }
        // SAFETY: ours (the caller's promise); the write lock keeps every
        // other upgradable reader out by itself.
        unsafe { self.upgradable.unlock() };
        true
    }

    /// Turns the upgradable read lock into the write lock, waiting for the
    /// other readers to leave ("Upgradable reads").
    ///
    /// # Safety
    ///
    /// - The caller holds the upgradable read lock; it holds the write lock
    ///   afterwards. If this unwinds, it still holds the upgradable read
    ///   lock.
    pub(crate) unsafe fn upgrade(&self) {
        if !self.upgrade_if_alone() {
            self.upgrade_contended();
        }
        // SAFETY: as in try_upgrade.
        unsafe { self.upgradable.unlock() };
    }

    /// The CAS of an upgrade: our read lock, the only one, becomes the write
    /// lock (waiting bits kept, UPGRADING cleared).
    fn upgrade_if_alone(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & MASK != 1 {
                return false;
            }
            let next = (state & WAITING) | WRITE_LOCKED;
            // Acquire: pairs with the Release `count -= 1` of every reader
            // that left before us (a release sequence of RMWs).
            match self.state.compare_exchange_weak(state, next, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    #[cold]
    fn upgrade_contended(&self) {
        let mut spin = SpinWait::new();
        let mut yield_wait = YieldWait::new();
        // Clears UPGRADING and lets in the readers parked behind it if we
        // leave without upgrading (a runtime unwinding us at a park or a
        // yield; `upgrade` is never timed).
        let pending = PendingUpgrade { lock: self, upgrading: Cell::new(false) };
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & MASK == 1 {
                if self.upgrade_if_alone() {
                    pending.upgrading.set(false); // the CAS cleared UPGRADING
                    return;
                }
                state = self.state.load(Ordering::Relaxed);
                continue;
            }
            debug_assert!(
                state & MASK > 1 && !is_write_locked(state),
                "RwLock: upgrading without a read lock (state {state:#x})"
            );
            // Stop new readers first, so the count drains while we wait.
            // Relaxed: the bit carries no data; the bucket lock orders it
            // with the wake of the reader that leaves us alone.
            if state & UPGRADING == 0 {
                if let Err(actual) =
                    self.state.compare_exchange_weak(state, state | UPGRADING, Ordering::Relaxed, Ordering::Relaxed)
                {
                    state = actual;
                    continue;
                }
                pending.upgrading.set(true);
            }
            if spin.spin() || yield_wait.yield_once() {
                state = self.state.load(Ordering::Relaxed);
                continue;
            }
            crate::park::waiting_on(crate::park::ParkedOn::RwLockWrite(self.upgrade_key()));
            // Nothing to undo in the callbacks: UPGRADING is ours alone (one
            // upgradable reader at a time), and `pending` clears it if we
            // unwind out of here; a wake hands nothing over.
            lot::park(
                self.upgrade_key(),
                // The reader that takes the count from 2 to 1 sees
                // UPGRADING and wakes us under this bucket lock.
                || {
                    let state = self.state.load(Ordering::Relaxed);
                    state & UPGRADING != 0 && state & MASK > 1
                },
                || {},
                |_, _| {},
                None,
            );
            spin.reset();
            yield_wait.reset();
            state = self.state.load(Ordering::Relaxed);
        }
    }

    /// Wakes the upgrading reader: its count has drained to 1 (its own).
    #[cold]
    fn wake_upgrader(&self) {
        lot::unpark_one(self.upgrade_key(), |_| DEFAULT_TOKEN);
    }

    /// The caller made the count 0 with waiting bits set (the last reader,
    /// a reader backing out, or a phase holder): takes the write lock so as
    /// to pass it on. `false` if another reader counted itself in meanwhile
    /// (to keep its read lock, possible with READERS_WAITING alone set, or
    /// to back out: that reader is now the one responsible), or another
    /// responsible party took the lock first, or the bits were dealt with
    /// by someone else.
    fn take_over_free_lock(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & (MASK | WRITE_LOCKED) != 0 || state & WAITING == 0 {
                return false;
            }
            debug_assert_eq!(state & UPGRADING, 0, "RwLock: upgrading with no reader");
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
            debug_assert_eq!(state & UPGRADING, 0, "RwLock: upgrading while write-locked");
            if state & WAITING == 0 {
                // Free it, keeping the count of readers backing out (they
                // find it free when they leave). Release: pairs with the
                // Acquire of the next holders.
                if self.state.compare_exchange_weak(state, state & MASK, Ordering::Release, Ordering::Relaxed).is_ok() {
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
        // WRITE_LOCKED|n -> n+1: our write lock becomes one read lock (n:
        // readers backing out). Release:
        // readers that get in by themselves from now on (WRITERS_WAITING
        // clear) see the critical section before ours.
        let previous = self.state.fetch_sub(WRITE_LOCKED - 1, Ordering::Release);
        debug_assert!(is_write_locked(previous), "RwLock: read phase without the write lock");
        self.hand_out_read_locks();
        // Drop our phase-holder read lock like any reader. Release: as in
        // read_unlock.
        let previous = self.state.fetch_sub(1, Ordering::Release);
        self.after_read_unlock(previous)
    }

    /// Holding a read lock (the phase holder's: it keeps the count above 0,
    /// so the readers woken cannot start the next phase while we hand out):
    /// hands a read lock to every reader queued now, oldest first. Readers
    /// that queue meanwhile wait for the next phase, which keeps this
    /// bounded.
    fn hand_out_read_locks(&self) {
        // How many readers of the snapshot are still to be woken; the
        // snapshot is taken in the first callback, under the bucket lock.
        let mut to_wake: Option<usize> = None;
        loop {
            let result = lot::unpark_one(self.reader_key(), |result| self.hand_out_read_lock(result, &mut to_wake));
            if result.unparked == 0 || !result.have_more || to_wake == Some(0) {
                break;
            }
        }
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

    /// After a writer left the writer queue last without the lock, or an
    /// upgrade was abandoned: lets in the readers parked behind the bit it
    /// cleared, if the lock is one they can now share (module docs,
    /// "Timeouts"). Holding no lock, or the abandoned upgrade's read lock.
    #[cold]
    fn admit_stranded_readers(&self) {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            // Not stranded: nobody queued, or whoever holds or waits for the
            // lock in their way will pass it on to them.
            if state & READERS_WAITING == 0 || !is_read_lockable(state) {
                return;
            }
            if state & MASK == 0 {
                // Free: pass it on as its last holder would have.
                if self.take_over_free_lock() {
                    self.pass_on_write_lock(false);
                    return;
                }
            } else {
                // Read-locked: become a phase holder. Acquire: as in `read`.
                if self.state.compare_exchange_weak(state, state + 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    self.hand_out_read_locks();
                    // SAFETY: taken just above.
                    unsafe { self.read_unlock() };
                    return;
                }
            }
            state = self.state.load(Ordering::Relaxed);
        }
    }
}

/// What a writer that goes without the write lock (a timeout, an unwind)
/// leaves in order (module docs, "Timeouts"); dropped on every exit of
/// `write_contended`.
struct WriterLeaving<'a> {
    lock: &'a RawRwLock,
    /// We set WRITERS_WAITING before spinning and have not queued since: the
    /// bit is ours to withdraw.
    flagged: Cell<bool>,
    /// We left the writer queue last and cleared the bit (the park's
    /// `timed_out`).
    left_last: Cell<bool>,
}

impl<'a> WriterLeaving<'a> {
    fn new(lock: &'a RawRwLock) -> Self {
        WriterLeaving { lock, flagged: Cell::new(false), left_last: Cell::new(false) }
    }
}

impl Drop for WriterLeaving<'_> {
    fn drop(&mut self) {
        // Under loom a detected deadlock unwinds every model thread after
        // loom has torn the execution down (as in the parking lot's guard).
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        let cleared = self.left_last.get() || (self.flagged.get() && self.lock.withdraw_writer_flag());
        if cleared {
            self.lock.admit_stranded_readers();
        }
    }
}

/// An upgrade under way (`upgrade_contended`): if it ends without the write
/// lock, clears UPGRADING and lets in the readers that queued behind it
/// (the upgrader still holds its read lock then).
struct PendingUpgrade<'a> {
    lock: &'a RawRwLock,
    /// We set UPGRADING and have not upgraded yet.
    upgrading: Cell<bool>,
}

impl Drop for PendingUpgrade<'_> {
    fn drop(&mut self) {
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        if self.upgrading.get() {
            // Relaxed: the bit carries no data; clearing it only lets
            // readers in, which `admit_stranded_readers` does by RMWs.
            self.lock.state.fetch_and(!UPGRADING, Ordering::Relaxed);
            self.lock.admit_stranded_readers();
        }
    }
}

/// Unlocks the upgradable mutex if dropped by an unwind.
struct ReleaseOnUnwind<'a>(&'a RawMutex);

impl Drop for ReleaseOnUnwind<'_> {
    fn drop(&mut self) {
        // SAFETY: built right after the mutex was locked, and forgotten
        // once the lock belongs to a guard.
        unsafe { self.0.unlock() };
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

#[cfg(all(test, loom))]
mod loom_models {
    use super::super::{RwLock, RwLockUpgradableReadGuard, RwLockWriteGuard};
    use super::*;
    use crate::loom::thread;
    use loom::sync::Arc;
    use std::time::Duration;

    /// Spawns a thread that write-locks `lock` and bumps both halves of
    /// its pair together.
    fn spawn_writer<L>(lock: L) -> thread::JoinHandle<()>
    where
        L: std::ops::Deref<Target = RwLock<(usize, usize)>> + Send + 'static,
    {
        thread::spawn(move || {
            let mut guard = lock.write();
            guard.0 += 1;
            guard.1 += 1;
        })
    }

    /// Spawns a thread that read-locks `lock` and checks that it sees its
    /// pair whole (a read overlapping a write is also a data race loom
    /// reports).
    fn spawn_reader<L>(lock: L) -> thread::JoinHandle<()>
    where
        L: std::ops::Deref<Target = RwLock<(usize, usize)>> + Send + 'static,
    {
        thread::spawn(move || {
            let guard = lock.read();
            assert_eq!(guard.0, guard.1, "a reader saw half a write");
        })
    }

    /// Negative control: a writer's unlock that drops its waiters' bits
    /// and wakes nobody strands a reader queued behind it, and loom must
    /// report the deadlock. std's `Arc`, not loom's: loom's would panic
    /// again when dropped while loom unwinds the deadlocked model.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_a_write_unlock_that_wakes_nobody_strands_a_reader() {
        let _broken = crate::loom::negative_control::break_until_dropped("rwlock");
        loom::model(|| {
            let lock = std::sync::Arc::new(RwLock::new(0usize));
            let guard = lock.write();
            let reader = {
                let lock = std::sync::Arc::clone(&lock);
                thread::spawn(move || *lock.read())
            };
            drop(guard);
            reader.join().unwrap();
        });
    }

    /// Two writers and a reader: the reader only ever sees whole states (a
    /// pair changed together is equal), no write is lost, and the word ends
    /// clear. Loom also checks every access to `data` for races.
    #[test]
    fn two_writers_one_reader() {
        loom::model(|| {
            let lock = Arc::new(RwLock::new((0usize, 0usize)));
            let writers: Vec<_> = (0..2).map(|_| spawn_writer(lock.clone())).collect();
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
            let writer = spawn_writer(lock.clone());
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
            let readers: Vec<_> = (0..2).map(|_| spawn_reader(lock.clone())).collect();
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

    fn assert_clear<T>(lock: &RwLock<T>) {
        assert_eq!(lock.raw.state.load(Ordering::Relaxed), 0, "the word is not clear");
        assert_eq!(lock.raw.parked_readers.load(Ordering::Relaxed), 0, "a reader is still counted as parked");
    }

    /// A timed writer queues (or flags itself) behind a reader that keeps
    /// its read lock, while a second reader arrives and queues behind that
    /// writer. The writer can only give up (at any moment: while flagged,
    /// or queued); the reader behind it must then get in beside the first
    /// one, which still holds the lock (a stranded reader is a loom
    /// deadlock). The word ends clear.
    #[test]
    fn timed_out_writer_lets_queued_reader_in() {
        loom::model(|| {
            let lock = Arc::new(RwLock::new(0usize));
            let first = lock.read();
            let writer = {
                let lock = lock.clone();
                thread::spawn(move || lock.try_write_for(Duration::from_secs(3600)).is_none())
            };
            let reader = {
                let lock = lock.clone();
                thread::spawn(move || drop(lock.read()))
            };
            assert!(writer.join().unwrap(), "a writer got a read-locked lock");
            reader.join().unwrap();
            drop(first);
            assert_clear(&lock);
        });
    }

    /// As above, but the first reader leaves at some point: the timed
    /// writer may then get the lock instead. Whatever happens, no read
    /// overlaps the write, every wait ends, and the word ends clear.
    #[test]
    fn timed_writer_races_reader_unlock() {
        loom::model(|| {
            let lock = Arc::new(RwLock::new((0usize, 0usize)));
            let first = lock.read();
            let writer = {
                let lock = lock.clone();
                thread::spawn(move || {
                    if let Some(mut guard) = lock.try_write_for(Duration::from_secs(3600)) {
                        guard.0 += 1;
                        guard.1 += 1;
                    }
                })
            };
            let reader = spawn_reader(lock.clone());
            thread::yield_now();
            drop(first);
            writer.join().unwrap();
            reader.join().unwrap();
            assert_clear(&lock);
        });
    }

    /// A timed reader behind a writer, racing its unlock: it gets the
    /// lock or gives up, and either way leaves the word clear.
    #[test]
    fn timed_reader_races_writer_unlock() {
        loom::model(|| {
            let lock = Arc::new(RwLock::new((0usize, 0usize)));
            let mut first = lock.write();
            let reader = {
                let lock = lock.clone();
                thread::spawn(move || {
                    if let Some(guard) = lock.try_read_for(Duration::from_secs(3600)) {
                        assert_eq!(guard.0, guard.1, "a reader saw half a write");
                    }
                })
            };
            first.0 += 1;
            first.1 += 1;
            drop(first);
            reader.join().unwrap();
            assert_clear(&lock);
        });
    }

    /// An upgradable reader upgrades while a plain reader holds the lock:
    /// the upgrade waits for it (an overlap of the write with the read is a
    /// data race loom reports), and the word ends clear.
    #[test]
    fn upgrade_waits_for_reader() {
        loom::model(|| {
            let lock = Arc::new(RwLock::new((0usize, 0usize)));
            let reader = spawn_reader(lock.clone());
            let upgradable = lock.upgradable_read();
            let mut guard = RwLockUpgradableReadGuard::upgrade(upgradable);
            guard.0 += 1;
            guard.1 += 1;
            drop(guard);
            reader.join().unwrap();
            assert_clear(&lock);
            assert!(!lock.raw.upgradable.is_locked());
        });
    }

    /// A writer downgrades while a reader and a writer wait: the reader may
    /// go in with the downgraded guard, the writer only after both leave.
    #[test]
    fn downgrade_lets_reader_in_not_writer() {
        loom::model(|| {
            let lock = Arc::new(RwLock::new((0usize, 0usize)));
            let mut first = lock.write();
            let reader = spawn_reader(lock.clone());
            let writer = spawn_writer(lock.clone());
            first.0 += 1;
            first.1 += 1;
            let read = RwLockWriteGuard::downgrade(first);
            assert_eq!(read.0, read.1);
            drop(read);
            reader.join().unwrap();
            writer.join().unwrap();
            assert_eq!(*lock.read(), (2, 2));
            assert_clear(&lock);
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
            let writer = spawn_writer(lock.clone());
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

    /// A reader that counts itself in while a writer waits for the last
    /// reader backs out, and when the last reader's unlock finds that
    /// reader's count still there, the back-out is the last: it passes the
    /// lock on to the writer. Everyone gets in, the word ends clear.
    /// std's `Arc`, as in the negative control above, which runs this too.
    fn back_out_behind_a_waiting_writer() {
        loom::model(|| {
            let lock = std::sync::Arc::new(RwLock::new(0usize));
            let guard = lock.read();
            let writer = {
                let lock = std::sync::Arc::clone(&lock);
                thread::spawn(move || *lock.write() += 1)
            };
            let reader = {
                let lock = std::sync::Arc::clone(&lock);
                thread::spawn(move || *lock.read())
            };
            drop(guard);
            writer.join().unwrap();
            assert!(reader.join().unwrap() <= 1);
            assert_eq!(*lock.read(), 1);
            assert_eq!(lock.raw.state.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn a_reader_backing_out_passes_the_lock_on() {
        back_out_behind_a_waiting_writer();
    }

    /// Negative control: a back-out that never passes the lock on strands
    /// the writer when it was the last to leave, and loom must find that
    /// interleaving.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_a_back_out_that_passes_nothing_on_strands_a_writer() {
        let _broken = crate::loom::negative_control::break_until_dropped("rwlock back-out");
        back_out_behind_a_waiting_writer();
    }

    /// An upgradable reader holds the lock while a writer waits, a reader
    /// counts itself in (and must back out: WRITERS_WAITING is set), and
    /// the upgradable reader upgrades: the upgrade waits for that count,
    /// and the back-out that takes it from 2 to 1 with UPGRADING set wakes
    /// the upgrader. No write overlaps a read, every wait ends, the word
    /// ends clear. std's `Arc`, for the negative control below.
    fn upgrade_behind_a_back_out() {
        loom::model(|| {
            let lock = std::sync::Arc::new(RwLock::new((0usize, 0usize)));
            let upgradable = lock.upgradable_read();
            let writer = spawn_writer(std::sync::Arc::clone(&lock));
            let reader = spawn_reader(std::sync::Arc::clone(&lock));
            let mut guard = RwLockUpgradableReadGuard::upgrade(upgradable);
            guard.0 += 1;
            guard.1 += 1;
            drop(guard);
            writer.join().unwrap();
            reader.join().unwrap();
            assert_eq!(*lock.read(), (2, 2));
            assert_clear(&lock);
            assert!(!lock.raw.upgradable.is_locked());
        });
    }

    #[test]
    fn a_back_out_wakes_the_upgrader() {
        upgrade_behind_a_back_out();
    }

    /// Negative control: a back-out that does nothing but its decrement
    /// leaves the upgrader parked when it was the last other reader.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_a_back_out_that_wakes_nobody_strands_the_upgrader() {
        let _broken = crate::loom::negative_control::break_until_dropped("rwlock back-out");
        upgrade_behind_a_back_out();
    }

    /// A reader counts itself in while a writer holds the lock and backs
    /// out at any moment around the writer's unlock (before it, or after
    /// the unlock freed the word with the reader's count kept in it). The
    /// reader then gets in, and the word ends clear.
    #[test]
    fn a_write_unlock_keeps_a_backing_out_count() {
        loom::model(|| {
            let lock = Arc::new(RwLock::new((0usize, 0usize)));
            let mut first = lock.write();
            let reader = {
                let lock = lock.clone();
                thread::spawn(move || {
                    let guard = lock.read();
                    assert_eq!(guard.0, guard.1, "a reader saw half a write");
                    guard.0
                })
            };
            first.0 += 1;
            first.1 += 1;
            drop(first);
            assert_eq!(reader.join().unwrap(), 1);
            assert_clear(&lock);
        });
    }

    /// An upgradable reader tries to upgrade while a writer waits and a
    /// reader backs out: `try_upgrade` may fail (the back-out's count looks
    /// like a reader's), but never lets the write overlap a read, and
    /// every wait ends with the word clear.
    #[test]
    fn try_upgrade_beside_a_back_out() {
        loom::model(|| {
            let lock = Arc::new(RwLock::new((0usize, 0usize)));
            let upgradable = lock.upgradable_read();
            let writer = spawn_writer(lock.clone());
            let reader = spawn_reader(lock.clone());
            match RwLockUpgradableReadGuard::try_upgrade(upgradable) {
                Ok(mut guard) => {
                    guard.0 += 1;
                    guard.1 += 1;
                }
                Err(upgradable) => drop(upgradable),
            }
            writer.join().unwrap();
            reader.join().unwrap();
            assert_clear(&lock);
            assert!(!lock.raw.upgradable.is_locked());
        });
    }
}
