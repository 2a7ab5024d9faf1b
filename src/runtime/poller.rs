//! The per-worker I/O poller: how a coroutine waits for a socket.
//!
//! # Registrations
//!
//! Each worker has its own epoll instance (a [`Poller`], created the first
//! time one of its coroutines waits for a socket). A started coroutine never
//! moves, so it waits on its own worker's epoll, and the readiness event
//! arrives on the thread that will run it. A socket is registered once per
//! worker that waits for it (not once per wait), edge-triggered, for reading
//! and writing together; the registration is an [`IoEntry`] on the heap,
//! whose address is the event's data word.
//!
//! ```text
//!  socket (weft::net)                       worker W's Poller
//!  +------------------------------+         +-----------------------------+
//!  | IoRegistration               |         | epoll fd   <- ADD(fd, entry)|
//!  |   first ---------> IoEntry{readiness, poller: W} (the common case)    |
//!  |   others: [IoEntry on W2, ..]|         | eventfd (wakes epoll_wait)  |
//!  +------------------------------+         | graveyard: entries removed  |
//!                                           |   by other threads          |
//!                                           +-----------------------------+
//! ```
//!
//! # The readiness word (one per entry)
//!
//! Edge-triggered epoll reports a change once, so what it reported must be
//! remembered until someone acts on it. Each entry keeps, per direction, a
//! READY bit ("not known to be empty"), a WAITER bit ("someone is parked on
//! it"), and an event count (`tick`, the upper bits) that says whether an
//! event came since a given moment (tokio's `ScheduledIo` way):
//!
//! ```text
//!  bit / field    set by                         cleared by
//!  -------------  -----------------------------  --------------------------------
//!  READ_READY     the poller, on EPOLLIN (and at  a reader whose call returned
//!                 creation)                       WouldBlock, or a short read of a
//!                                                 stream, if `tick` has not moved
//!                                                 since its snapshot (`clear`)
//!  WRITE_READY    the poller, on EPOLLOUT (and    a writer whose call returned
//!                 at creation)                    WouldBlock, likewise
//!  READ_CLOSED    the poller, on RDHUP, HUP, ERR  a reader whose call returned
//!                                                 WouldBlock (`clear_empty`), if
//!                                                 `tick` has not moved; never by a
//!                                                 short read
//!  WRITE_CLOSED   the poller, on HUP or ERR       a writer whose call returned
//!                                                 WouldBlock, likewise
//!  URGENT         the poller, on PRI (TCP urgent  with READ_READY, by a WouldBlock
//!                 data)                           only
//!  READ_WAITER    a reader's park, in its         the poller, when it sets
//!                 validation, when READ_READY     READ_READY: it then wakes every
//!                 is clear                        reader parked on the entry
//!  WRITE_WAITER   likewise for writers            likewise
//!  READ_CROWDED   a reader that parks while       never
//!                 another reader fills the slot
//!                 (below), with its WAITER bit
//!  WRITE_CROWDED  likewise for writers            never
//!  tick           +1 by the poller at each event  never
//! ```
//!
//! An operation in a coroutine ([`IoRegistration::run`]):
//!
//! 1. Snapshots the word. If READY and CLOSED are clear, nothing came since
//!    the socket was last found empty: it parks at once (step 3), without a
//!    system call that would only say `WouldBlock`.
//! 2. Otherwise it makes its call. `WouldBlock` — or, for a stream, a read
//!    that returned less than asked, which empties the receive queue (for a
//!    Unix stream, only when the kernel had no control data for the read:
//!    a read stops after passed descriptors with data queued behind them;
//!    see `net::unix`) —
//!    means the socket is empty now: it clears READY, but only if `tick` is
//!    still the snapshot's (`clear`); an event that came since then says it
//!    may no longer be empty, and clearing READY would lose that edge for
//!    good. Then it goes back to step 1. A short read says the socket has
//!    no *data* left; an end of stream or an error may still wait behind
//!    it, and its edge may have come before the snapshot: that is why the
//!    CLOSED bits are separate and outlive short reads (a reader that
//!    cleared one would park after the last bytes and never see the EOF).
//!    Only a `WouldBlock` clears them: the kernel then had nothing to
//!    report, not even an end or an error (a socket error is consumed by
//!    the call that reports it: a UDP socket's "connection refused" comes
//!    once, and its next `recv` must wait again rather than spin). Nor does
//!    a short read clear READY once EPOLLPRI has come (URGENT): a TCP read
//!    stops short at the urgent mark, with data queued behind it. A call
//!    in non-blocking mode is always made once, whatever the bits say, as
//!    std's would be. (A Unix stream's write relies on that: Linux reports
//!    no readiness when its sending side is shut down, so a waiting write
//!    waits in slices and retries, see `net::unix`.)
//! 3. Parks: puts its wake handle in the entry's slot for that direction
//!    (below), then validates: sets the WAITER bit only if READY and
//!    CLOSED are still clear, in one compare-and-swap; if READY was set
//!    meanwhile, it takes its handle back and does not park. Either way it
//!    goes back to step 1.
//! 4. The poller sets READY and bumps `tick` with one read-modify-write,
//!    clearing the WAITER bit it found, and wakes that direction's waiter:
//!    it swaps the handle out of the slot and unparks it (and, if CROWDED,
//!    the parking lot's waiters too).
//!
//! So an edge is never lost: if it lands before the snapshot, READY is set
//! and the call is made; between the snapshot and the clear, the tick moved
//! and READY stays; between the clear and the validation, validation sees
//! READY; after the validation, the waiter's handle is in the slot (it
//! went in first) and the poller saw its WAITER bit. A stale READY (an
//! event whose data a successful call already took) costs one
//! `WouldBlock`, never a missed wake. The loom models below check the
//! protocol with one waiter and with two (slot and crowd), that a `clear`
//! which ignores the tick loses an edge, and that a handle put in the slot
//! after the validation misses the event (the negative controls).
//!
//! # Waiting: the slot and the crowd
//!
//! ```text
//!  WaitState (in the entry, on the heap)
//!  +-----------------------------------------------+
//!  | readiness word  (bits above, tick)            |
//!  | slots[Read]     a reader's wake handle, or 0  |  <- filled by the waiter (CAS),
//!  | slots[Write]    a writer's wake handle, or 0  |     emptied by the poller (swap)
//!  +-----------------------------------------------+     or by the waiter itself (CAS)
//!  crowd: the parking lot's queue on the word's address (+1 for writers)
//! ```
//!
//! Almost always one coroutine waits for each half of a socket, so the
//! first waiter of a direction keeps its wake handle (its task, as a word)
//! in the entry itself: the poller finds it in the entry it has just
//! read, with no hashing, no lock and no walk of a queue through the
//! waiters' stacks (cold memory when a server has a thousand
//! connections). A second waiter of the same direction on the same worker
//! (two coroutines reading one stream) finds the slot full and waits in
//! the parking lot instead, setting the CROWDED bit, after which every
//! event of that direction also wakes the lot's waiters. A waiter whose
//! wait ends without the poller (a timeout, a cancel, its runtime's
//! shutdown) takes its handle back with a compare-and-swap that fails if
//! the poller took it first: then the poller's wake is on its way, and at
//! worst leaves a token (a spurious wake later, which every waiter
//! tolerates).
//!
//! Measured (callgrind, a 64-byte ping-pong over a Unix socket pair
//! between two coroutines of one worker, `benches/net.rs`'s workload): 2 789
//! instructions per round trip with every waiter in the parking lot, 2 653
//! with the slots; and the wait's atomic read-modify-writes went from 8 to
//! 6 (the bucket lock's lock and unlock on each side out, the slot's claim
//! and swap in). Making the stream reads and writes and `epoll_wait` with
//! `syscall(2)` instead of glibc's cancellation-point wrappers (two
//! compare-and-swaps each, see `sys::net`) then took it to 2 405.
//!
//! A steady request-response connection thus makes one read that succeeds,
//! one write, and no read that fails: the short read cleared READY, and the
//! coroutine parks until the next request's edge.
//!
//! Today only the entry's own worker thread runs its poller and its
//! waiters, so the races above are with events the kernel queued before or
//! during a call, but the protocol (the slot's claim and take-back
//! included) is written, and modelled, for any interleaving.
//!
//! # The I/O budget
//!
//! An operation that never has to wait never parks, so a coroutine reading
//! an always-ready socket would keep its worker for good. Each worker
//! thread keeps a budget (`IO_BUDGET_OPS` operations, a thread-local
//! count): every coroutine operation spends one, an operation that parks
//! refills it, and the operation that finds it spent yields first (before
//! its call, so a cancellation raised at that yield loses no data).
//!
//! # Deregistration and freeing
//!
//! A socket's drop removes each entry from its epoll (`EPOLL_CTL_DEL`)
//! before the descriptor is closed, so no readiness ever reaches a later
//! socket with the same number. The entry's memory may still be named by an
//! event that its worker fetched before the removal and has not processed
//! yet, so:
//!
//! - on the entry's own worker thread (the usual case: the coroutine that
//!   owned the socket drops it) it is freed at once: a worker processes each
//!   batch of events completely before it runs a coroutine again;
//! - on any other thread it goes to the poller's *graveyard*, which the
//!   worker empties only between batches: an event fetched before the
//!   removal was processed by then, and no later `epoll_wait` returns it;
//! - once the worker has stopped, entries are freed at once.
//!
//! An entry holds its poller (`Arc`), so the epoll descriptor it was added
//! to stays open until the entry is gone, even after its runtime is dropped.
//!
//! # Sleeping in the poller
//!
//! A worker with live registrations sleeps in `epoll_wait` (its next timer
//! as the timeout) instead of on its futex word, after publishing POLLING
//! instead of SLEEPING (see `worker`); a thread that has work for it CASes
//! POLLING to NOTIFIED and writes to the poller's eventfd, which sits in the
//! epoll set, edge-triggered (never read: each write is an edge; mio's
//! waker does the same). An eventfd is the usual choice (tokio/mio, Go's
//! netpollBreak): one descriptor, one write, no signal handlers or pipes.
//! A worker with no registrations keeps its futex sleep (see the end of
//! this section for why). A busy worker polls without blocking in its fairness rounds (every few
//! dozen scheduling rounds) and when its run queue empties, so I/O is
//! served while coroutines keep yielding; a worker with sockets does not
//! spin before it sleeps (it has just polled them, and the spin's yields
//! cost an HTTP server about 5 % of its CPU). Measured (`benches/net.rs`,
//! `wake an idle worker`): waking a worker through its eventfd costs about
//! what the futex wake does on this machine; the futex sleep stays for
//! workers without sockets because it needs no descriptors (a runtime that
//! never does I/O creates no epoll instance at all).

use super::worker::with_current_worker;
use crate::loom::{AtomicUsize, Ordering, negative_control};
use crate::park::lot::{self, ParkResult};
use crate::park::{self, ParkedOn, Unparker};
use crate::sys::epoll::{self, Epoll, EventFd};
use crate::sys::futex::Deadline;
use crate::sys::net::{POLL_IN, POLL_OUT, poll_one};
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const READ_READY: usize = 1;
const WRITE_READY: usize = 2;
const READ_WAITER: usize = 4;
const WRITE_WAITER: usize = 8;
/// The peer shut its writing half, or the socket failed: reads end at once
/// (EOF or the error). Cleared only by a read that says `WouldBlock`.
const READ_CLOSED: usize = 16;
/// The socket hung up or failed: writes end at once. Cleared only by a
/// write that says `WouldBlock`.
const WRITE_CLOSED: usize = 32;
/// EPOLLPRI came (TCP urgent data): a read stops short at the urgent mark
/// with data still queued behind it, so a short read no longer says the
/// socket is empty. Cleared with READ_READY by a read that says
/// `WouldBlock`.
const URGENT: usize = 64;
/// More than one reader has waited on the entry at once: the ones its
/// slot could not hold wait in the parking lot, which every read event
/// then wakes too (see "Waiting"). Never cleared.
const READ_CROWDED: usize = 128;
/// Likewise for writers.
const WRITE_CROWDED: usize = 256;
/// `tick` lives above the flag bits.
const TICK_ONE: usize = 1 << 9;
const FLAGS: usize = TICK_ONE - 1;

/// The interest every registration asks for (edge-triggered, both ways).
const INTEREST: u32 = epoll::READABLE | epoll::WRITABLE | epoll::READ_CLOSED | epoll::PRIORITY | epoll::EDGE_TRIGGERED;

/// Which half of a socket an operation waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

impl Direction {
    fn ready_bit(self) -> usize {
        match self {
            Direction::Read => READ_READY,
            Direction::Write => WRITE_READY,
        }
    }

    /// The bits that let a call in this direction go ahead.
    fn go_bits(self) -> usize {
        match self {
            Direction::Read => READ_READY | READ_CLOSED,
            Direction::Write => WRITE_READY | WRITE_CLOSED,
        }
    }

    /// What a `WouldBlock` in this direction disproves: the socket has
    /// nothing to report now, neither data nor an end nor an error (a
    /// pending error is consumed by the call that reports it).
    fn empty_bits(self) -> usize {
        match self {
            Direction::Read => READ_READY | READ_CLOSED | URGENT,
            Direction::Write => WRITE_READY | WRITE_CLOSED,
        }
    }

    fn waiter_bit(self) -> usize {
        match self {
            Direction::Read => READ_WAITER,
            Direction::Write => WRITE_WAITER,
        }
    }

    fn crowded_bit(self) -> usize {
        match self {
            Direction::Read => READ_CROWDED,
            Direction::Write => WRITE_CROWDED,
        }
    }

    /// This direction's waiter slot in an [`WaitState`].
    fn index(self) -> usize {
        match self {
            Direction::Read => 0,
            Direction::Write => 1,
        }
    }
}

/// The readiness word of one registration; see the module docs.
///
/// What the protocol needs — that a clear, a validation and an event never
/// miss each other — holds in the word's own modification order (each is a
/// read-modify-write, or a load that a compare-and-swap then checks). Three
/// accesses are stronger than Relaxed, each saying why: an event's `set`
/// (Release, Acquire) pairs with the `snapshot` that sees it (Acquire) and
/// with a waiter's validation (Release), which publishes its slot. The
/// data itself is in the kernel, which orders its own side, and today the
/// poller and the waiters of an entry run on one thread, but the loom
/// model runs them on two, with the socket's data as an atomic the
/// "kernel" writes before it delivers the event: a snapshot that sees the
/// event must then see the data too. On x86-64 these orderings cost
/// nothing (plain loads acquire; every read-modify-write is a full
/// barrier).
#[derive(Debug)]
pub(crate) struct Readiness(AtomicUsize);

impl Readiness {
    /// Both directions "not known to be empty": the first call is made.
    pub(crate) fn new() -> Readiness {
        Readiness(AtomicUsize::new(READ_READY | WRITE_READY))
    }

    /// Step 1's snapshot. Acquire: pairs with the Release of the event's
    /// `set`, so a call made after seeing the event sees what came before
    /// it (see the type's docs).
    pub(crate) fn snapshot(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn is_ready(snapshot: usize, dir: Direction) -> bool {
        snapshot & dir.go_bits() != 0
    }

    /// Step 2, after a short read: clears `dir`'s READY bit if no event
    /// came since `snapshot`.
    pub(crate) fn clear(&self, dir: Direction, snapshot: usize) {
        self.clear_bits(dir.ready_bit(), snapshot);
    }

    /// Step 2, after a `WouldBlock`: clears what it disproves (READY, and
    /// CLOSED and URGENT too: see `Direction::empty_bits`) if no event came
    /// since `snapshot`.
    pub(crate) fn clear_empty(&self, dir: Direction, snapshot: usize) {
        self.clear_bits(dir.empty_bits(), snapshot);
    }

    fn clear_bits(&self, bits: usize, snapshot: usize) {
        let mut current = self.0.load(Ordering::Relaxed);
        while current & !FLAGS == snapshot & !FLAGS {
            match self.0.compare_exchange_weak(current, current & !bits, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Step 3's validation: sets `dir`'s WAITER bit (and its CROWDED bit
    /// with `crowded`) and returns true (park) if READY is clear; returns
    /// false (go back to step 1) if it is set.
    ///
    /// Release on success: publishes the waiter's slot word, stored just
    /// before, to the poller, whose `set` reads this value with Acquire
    /// before it takes the slot.
    pub(crate) fn register_waiter(&self, dir: Direction, crowded: bool) -> bool {
        let bits = dir.waiter_bit() | if crowded { dir.crowded_bit() } else { 0 };
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            if current & dir.go_bits() != 0 {
                return false;
            }
            match self.0.compare_exchange_weak(current, current | bits, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Step 4: sets the bits in `ready` (READY and CLOSED bits) and counts
    /// an event; returns the WAITER bits it cleared (whom to wake), with the
    /// CROWDED bits of those directions (wake the parking lot's too).
    ///
    /// Acquire: pairs with `register_waiter`'s Release, so the slot word of
    /// a waiter whose WAITER bit this clears is seen. Release: pairs with
    /// `snapshot`'s Acquire.
    pub(crate) fn set(&self, ready: usize) -> usize {
        let mut waiters = 0;
        if ready & Direction::Read.go_bits() != 0 {
            waiters |= READ_WAITER;
        }
        if ready & Direction::Write.go_bits() != 0 {
            waiters |= WRITE_WAITER;
        }
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let new = ((current | ready) & !waiters).wrapping_add(TICK_ONE);
            match self.0.compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    let woken = current & waiters;
                    let crowded = (if woken & READ_WAITER != 0 { READ_CROWDED } else { 0 })
                        | (if woken & WRITE_WAITER != 0 { WRITE_CROWDED } else { 0 });
                    return woken | (current & crowded);
                }
                Err(actual) => current = actual,
            }
        }
    }
}

/// No waiter in a slot (an `Unparker::into_raw` word is never 0).
const NO_WAITER: usize = 0;

/// What an entry's waiters and its poller share: the readiness word and,
/// per direction, a slot for one parked waiter (see "Waiting").
pub(crate) struct WaitState {
    readiness: Readiness,
    /// Read's and write's slot: the `Unparker::into_raw` word of the one
    /// waiter parked here directly, or NO_WAITER. The word owns that handle.
    slots: [AtomicUsize; 2],
}

impl WaitState {
    pub(crate) fn new() -> WaitState {
        WaitState { readiness: Readiness::new(), slots: [AtomicUsize::new(NO_WAITER), AtomicUsize::new(NO_WAITER)] }
    }

    /// The parking-lot key of `dir`'s crowd (the waiters a slot could not
    /// hold): the readiness word's address (+1 for writers, still inside
    /// the word, so no other primitive uses it).
    fn key(&self, dir: Direction) -> usize {
        let base = &self.readiness as *const Readiness as usize;
        match dir {
            Direction::Read => base,
            Direction::Write => base + 1,
        }
    }

    /// Step 4, for one event: records it and wakes whoever waits for it.
    fn event(&self, ready: usize) {
        let woken = self.readiness.set(ready);
        for dir in [Direction::Read, Direction::Write] {
            if woken & dir.waiter_bit() == 0 {
                continue;
            }
            // A swap: whoever takes the word owns the handle, and a waiter
            // that gives up takes its own back with a compare-and-swap.
            // (`set`'s Acquire made the word visible.) Release: a waiter
            // that finds its slot emptied without parking (its Acquire
            // loads in `park` and `take_back`) sees the event, and what the
            // poller knew when it fetched it, as a woken one would.
            let raw = self.slots[dir.index()].swap(NO_WAITER, Ordering::AcqRel);
            if raw != NO_WAITER {
                // SAFETY: a slot holds `into_raw` words only, and the swap
                // made this one ours alone.
                unsafe { Unparker::from_raw(raw) }.unpark();
            }
            if woken & dir.crowded_bit() != 0 {
                wake_all(self.key(dir));
            }
        }
    }

    /// Step 3: parks the caller until an event for `dir` (or `deadline`:
    /// then returns false). Returns true at once if READY was set
    /// meanwhile, and may return true spuriously.
    fn park(&self, dir: Direction, deadline: Option<Deadline>) -> bool {
        let slot = &self.slots[dir.index()];
        if slot.load(Ordering::Relaxed) != NO_WAITER {
            return self.park_in_crowd(dir, deadline);
        }
        let unparker = Unparker::current();
        let kind = unparker.kind();
        // The timer goes in before the slot is filled: once it is, the
        // poller may take the handle at any moment.
        unparker.prepare_deadline(deadline);
        let armed_timer = kind.arms_timer(deadline);
        let mine = unparker.into_raw();
        // (The loom negative control validates before it fills the slot:
        // an event in between finds the WAITER bit and an empty slot.)
        let broken = negative_control::broken("io slot");
        if !broken && !claim(slot, mine) {
            return self.give_up_claim(dir, deadline, mine, armed_timer);
        }
        let parks = self.readiness.register_waiter(dir, false);
        if broken && !claim(slot, mine) {
            return self.give_up_claim(dir, deadline, mine, armed_timer);
        }
        if !parks {
            take_back(slot, mine);
            if armed_timer {
                super::disarm_timer();
            }
            return true;
        }
        let guard = LeaveSlotOnUnwind { slot, mine, armed_timer };
        let mut expired = false;
        let woken = loop {
            // The poller took the handle: this is its wake (or the token
            // it left, if it came before we parked). Acquire: pairs with
            // the poller's swap (we may not have parked since).
            if slot.load(Ordering::Acquire) != mine {
                break true;
            }
            if deadline.is_some_and(|d| expired || lot::deadline_passed(d)) {
                // Failing that, the poller took it just now: a wake.
                break !take_back(slot, mine);
            }
            expired = !kind.park(deadline);
        };
        std::mem::forget(guard);
        if armed_timer {
            super::disarm_timer();
        }
        woken
    }

    /// [`park`](Self::park) for a waiter whose claim of the slot failed
    /// (another waiter filled it since the check): takes back its handle
    /// and its timer, and waits in the crowd instead.
    #[cold]
    #[inline(never)]
    fn give_up_claim(&self, dir: Direction, deadline: Option<Deadline>, mine: usize, armed_timer: bool) -> bool {
        // SAFETY: `mine` came from `into_raw` and never reached the slot.
        drop(unsafe { Unparker::from_raw(mine) });
        if armed_timer {
            super::disarm_timer();
        }
        self.park_in_crowd(dir, deadline)
    }

    /// [`park`](Self::park) for a waiter that finds the slot taken (two
    /// coroutines of one worker wait on one socket's half): it waits in the
    /// parking lot, and sets the CROWDED bit with its WAITER bit, so that
    /// every later event of this direction wakes the lot's waiters too.
    #[cold]
    #[inline(never)]
    fn park_in_crowd(&self, dir: Direction, deadline: Option<Deadline>) -> bool {
        let result = lot::park(self.key(dir), || self.readiness.register_waiter(dir, true), || {}, |_, _| {}, deadline);
        !matches!(result, ParkResult::TimedOut)
    }
}

impl Drop for WaitState {
    fn drop(&mut self) {
        // (As in `LeaveSlotOnUnwind`: a loom model unwinding from a
        // detected deadlock must not touch loom atomics.)
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        for slot in &self.slots {
            // (A swap, not `get_mut`: loom's atomics have none.)
            let raw = slot.swap(NO_WAITER, Ordering::Relaxed);
            debug_assert_eq!(raw, NO_WAITER, "an I/O entry dropped with a waiter in its slot");
            if raw != NO_WAITER {
                // SAFETY: a slot's word owns its handle, and the swap took
                // it (`&mut self`: nobody else could).
                drop(unsafe { Unparker::from_raw(raw) });
            }
        }
    }
}

/// Puts the caller's handle (`mine`) into `slot` if it is empty; returns
/// whether it did. A compare-and-swap, not a store: two waiters that both
/// saw the slot empty must not both fill it (one handle would be lost, and
/// its waiter never woken).
fn claim(slot: &AtomicUsize, mine: usize) -> bool {
    // Relaxed: published by `register_waiter`'s Release.
    slot.compare_exchange(NO_WAITER, mine, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// Takes the caller's own handle (`mine`) back out of `slot` if the poller
/// has not taken it; returns whether it did.
fn take_back(slot: &AtomicUsize, mine: usize) -> bool {
    // Relaxed on success: the word is the caller's own (it stored it).
    // Acquire on failure: the poller took it; pairs with its swap, as in
    // `park`.
    if slot.compare_exchange(mine, NO_WAITER, Ordering::Relaxed, Ordering::Acquire).is_err() {
        return false;
    }
    // SAFETY: `mine` came from `into_raw`, and the compare-and-swap took it
    // out of the slot, so nobody else will take it back.
    drop(unsafe { Unparker::from_raw(mine) });
    true
}

/// Empties a waiter's slot if its coroutine is unwound while parked (a
/// cancel, or its runtime's shutdown), before its stack goes; every normal
/// exit forgets it.
struct LeaveSlotOnUnwind<'a> {
    slot: &'a AtomicUsize,
    mine: usize,
    armed_timer: bool,
}

impl Drop for LeaveSlotOnUnwind<'_> {
    #[cold]
    fn drop(&mut self) {
        // Under loom a detected deadlock unwinds every model thread after
        // loom has torn the execution down; touching a loom atomic then
        // would panic inside this destructor and abort the test binary.
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        take_back(self.slot, self.mine);
        if self.armed_timer {
            super::disarm_timer();
        }
    }
}

/// One socket registered with one worker's epoll.
pub(crate) struct IoEntry {
    state: WaitState,
    poller: Arc<Poller>,
    fd: RawFd,
}

/// What a worker's graveyard holds; see the module docs.
struct Graveyard {
    // Boxed: an entry's address is its epoll data word, so it must not
    // move when the vector grows.
    #[allow(clippy::vec_box)]
    entries: Vec<Box<IoEntry>>,
    /// Set when the worker stops: entries are freed at once from then on.
    worker_gone: bool,
}

/// A worker's epoll instance, its eventfd and its graveyard.
pub(crate) struct Poller {
    epoll: Epoll,
    waker: EventFd,
    /// Registrations not yet removed: the worker sleeps in `epoll_wait`
    /// only while some are live.
    live: crate::loom::process::AtomicUsize,
    graveyard: Mutex<Graveyard>,
}

/// The event word of the eventfd (entries are never at address 0).
const WAKER_DATA: u64 = 0;

impl Poller {
    /// A new poller with its eventfd in the set.
    pub(crate) fn new() -> io::Result<Poller> {
        let epoll = Epoll::new()?;
        let waker = EventFd::new()?;
        epoll.add(waker.raw(), epoll::READABLE | epoll::EDGE_TRIGGERED, WAKER_DATA)?;
        Ok(Poller {
            epoll,
            waker,
            live: crate::loom::process::AtomicUsize::new(0),
            graveyard: Mutex::new(Graveyard { entries: Vec::new(), worker_gone: false }),
        })
    }

    /// Whether any socket is registered here.
    pub(crate) fn has_registrations(&self) -> bool {
        self.live.load(crate::loom::process::Ordering::Relaxed) != 0
    }

    /// Wakes the worker if it sleeps in `epoll_wait` (or makes its next
    /// `epoll_wait` return at once).
    pub(crate) fn wake(&self) {
        self.waker.signal();
    }

    /// Collects the ready events (waiting at most `timeout`; `None`: until
    /// one comes or the worker is woken) and wakes the coroutines waiting
    /// on them. Returns how many socket events it handled. Called only by
    /// the worker that owns the poller, on its thread.
    pub(crate) fn poll(&self, events: &mut [epoll::Event], timeout: Option<Duration>) -> usize {
        self.empty_graveyard();
        let n = match self.epoll.wait(events, timeout) {
            Ok(n) => n,
            Err(err) => {
                // Only EBADF/EFAULT/EINVAL are possible, none of which a
                // correct runtime can cause; report once per occurrence
                // rather than spin silently.
                tracing::error!("weft: epoll_wait failed: {err}");
                return 0;
            }
        };
        let mut handled = 0;
        for event in &events[..n] {
            let (bits, data) = epoll::event_parts(event);
            if data == WAKER_DATA {
                continue;
            }
            let mut ready = 0;
            if bits & (epoll::READABLE | epoll::PRIORITY) != 0 {
                ready |= READ_READY;
            }
            if bits & epoll::PRIORITY != 0 {
                ready |= URGENT;
            }
            if bits & epoll::WRITABLE != 0 {
                ready |= WRITE_READY;
            }
            if bits & (epoll::READ_CLOSED | epoll::HUP | epoll::ERROR) != 0 {
                ready |= READ_CLOSED;
            }
            if bits & (epoll::HUP | epoll::ERROR) != 0 {
                ready |= WRITE_CLOSED;
            }
            // SAFETY: `data` is a live IoEntry's address: an entry is freed
            // only once out of this epoll, and if removed by another thread,
            // only by `empty_graveyard` above, before this batch was fetched.
            let entry = unsafe { &*(data as usize as *const IoEntry) };
            entry.state.event(ready);
            handled += 1;
        }
        handled
    }

    fn empty_graveyard(&self) {
        let mut graveyard = self.graveyard.lock().unwrap_or_else(|e| e.into_inner());
        if !graveyard.entries.is_empty() {
            graveyard.entries.clear();
        }
    }

    /// The worker stops: frees the graveyard, and any entry removed from
    /// now on is freed by whoever removes it.
    pub(crate) fn worker_stopped(&self) {
        let mut graveyard = self.graveyard.lock().unwrap_or_else(|e| e.into_inner());
        graveyard.worker_gone = true;
        graveyard.entries.clear();
    }

    /// Removes `entry` from this epoll and frees it (now, or through the
    /// graveyard when another thread's worker may hold an event naming it).
    fn remove(self: &Arc<Poller>, entry: Box<IoEntry>, on_own_worker: bool) {
        // A failure means the descriptor was closed behind our back (the
        // owner used `from_raw_fd` twice, say); the entry is dead all the
        // same.
        let _ = self.epoll.delete(entry.fd);
        self.live.fetch_sub(1, crate::loom::process::Ordering::Relaxed);
        if on_own_worker {
            drop(entry);
            return;
        }
        let mut graveyard = self.graveyard.lock().unwrap_or_else(|e| e.into_inner());
        if graveyard.worker_gone {
            drop(graveyard);
            drop(entry);
        } else {
            graveyard.entries.push(entry);
        }
    }
}

/// A socket's registrations, one per worker that has waited for it; owned
/// by the socket, removed when it drops (before its descriptor closes).
pub(crate) struct IoRegistration {
    fd: RawFd,
    /// The first worker's entry: the common case, found with one load.
    first: crate::loom::process::AtomicPtr<IoEntry>,
    /// Entries on other workers (a socket shared between coroutines on
    /// several workers).
    // Boxed: an entry's address is its epoll data word.
    #[allow(clippy::vec_box)]
    others: Mutex<Vec<Box<IoEntry>>>,
}

// SAFETY: the raw entry pointers are owned boxes (freed only in `drop`);
// an entry is Sync (atomics, an Arc<Poller> whose fields are Sync).
unsafe impl Send for IoRegistration {}
// SAFETY: as above; shared access reads `first` atomically and `others`
// under its mutex.
unsafe impl Sync for IoRegistration {}

impl IoRegistration {
    /// A socket not yet registered anywhere.
    pub(crate) fn new(fd: RawFd) -> IoRegistration {
        IoRegistration {
            fd,
            first: crate::loom::process::AtomicPtr::new(std::ptr::null_mut()),
            others: Mutex::new(Vec::new()),
        }
    }

    /// The descriptor this registers.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// This socket's entry on the calling coroutine's worker (created and
    /// added to its epoll the first time); `None` on a plain OS thread and
    /// in a coroutine that its runtime is unwinding at shutdown (it may not
    /// park any more, so it waits like a thread).
    fn entry_for_current(&self) -> io::Result<Option<&IoEntry>> {
        if !super::in_parkable_coroutine() {
            return Ok(None);
        }
        with_current_worker(|worker| {
            let Some(worker) = worker else { return Ok(None) };
            // Acquire: pairs with the Release of the CAS that published the
            // entry, so its fields are seen initialised.
            let first = self.first.load(crate::loom::process::Ordering::Acquire);
            // SAFETY: a non-null `first` is a live boxed entry, freed only by
            // `drop` (which has `&mut self`).
            if let Some(entry) = unsafe { first.as_ref() }
                && std::ptr::eq(Arc::as_ptr(&entry.poller), worker.poller_ptr())
            {
                return Ok(Some(entry));
            }
            let poller = worker.poller()?;
            self.entry_slow(&poller, first.is_null()).map(Some)
        })
    }

    #[cold]
    fn entry_slow(&self, poller: &Arc<Poller>, first_free: bool) -> io::Result<&IoEntry> {
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = others.iter().find(|e| Arc::ptr_eq(&e.poller, poller)) {
            let ptr: *const IoEntry = &**entry;
            // SAFETY: boxed entries are never moved or freed before `drop`
            // (which has `&mut self`), so the reference outlives the lock.
            return Ok(unsafe { &*ptr });
        }
        let entry = Box::new(IoEntry { state: WaitState::new(), poller: Arc::clone(poller), fd: self.fd });
        poller.epoll.add(self.fd, INTEREST, &*entry as *const IoEntry as u64).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("weft: cannot register socket {} with its worker's epoll: {err}", self.fd),
            )
        })?;
        poller.live.fetch_add(1, crate::loom::process::Ordering::Relaxed);
        let raw = Box::into_raw(entry);
        if first_free {
            // Release: publishes the entry's fields to `entry_on`'s Acquire.
            if self
                .first
                .compare_exchange(
                    std::ptr::null_mut(),
                    raw,
                    crate::loom::process::Ordering::Release,
                    crate::loom::process::Ordering::Relaxed,
                )
                .is_ok()
            {
                // SAFETY: just published; lives until `drop`.
                return Ok(unsafe { &*raw });
            }
            // Otherwise another worker's entry got there first.
        }
        // SAFETY: `raw` came from Box::into_raw just above and was not published.
        others.push(unsafe { Box::from_raw(raw) });
        // SAFETY: as in the lookup above.
        Ok(unsafe { &*raw })
    }

    /// Runs `op`, a call on the non-blocking descriptor, until it does
    /// not fail with `WouldBlock`, waiting for the socket to become ready
    /// in `dir` in between (the protocol in the module docs), at most
    /// `timeout` in all, counted from the first wait; then fails with
    /// `on_timeout()`. `drained(result)` says that a successful call
    /// emptied the socket in `dir` (a short read of a stream), so that the
    /// next call waits for an event before it tries. With `nonblocking`,
    /// the first would-be wait fails with `WouldBlock` instead.
    ///
    /// A coroutine parks on its worker's poller; a plain OS thread blocks
    /// in `poll(2)`. A coroutine being unwound for good (its cancellation,
    /// its runtime's shutdown) does not wait: the would-be wait fails at
    /// once (`ending_error`; see "Timeouts" in `weft::net`).
    pub(crate) fn run<R>(
        &self,
        dir: Direction,
        timeout: Option<Duration>,
        nonblocking: bool,
        mut op: impl FnMut() -> io::Result<R>,
        drained: impl Fn(&R) -> bool,
        on_timeout: impl FnOnce() -> io::Error,
    ) -> io::Result<R> {
        let Some(entry) = self.entry_for_current()? else {
            return self.run_on_thread(dir, timeout, nonblocking, op, on_timeout);
        };
        spend_io_budget();
        let mut deadline = None;
        // A non-blocking call asks the kernel at least once, as std's does:
        // data that came after the socket was last found empty is there
        // before the worker's poller has seen its event.
        let mut must_try = nonblocking;
        loop {
            let snapshot = entry.state.readiness.snapshot();
            if Readiness::is_ready(snapshot, dir) || must_try {
                must_try = false;
                match op() {
                    Ok(result) => {
                        if drained(&result) && snapshot & URGENT == 0 {
                            entry.state.readiness.clear(dir, snapshot);
                        }
                        return Ok(result);
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        entry.state.readiness.clear_empty(dir, snapshot)
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
                continue;
            }
            if nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if deadline.is_none() {
                deadline = timeout.map(Deadline::after);
            }
            if super::current_task_is_ending() {
                return Err(ending_error());
            }
            IO_BUDGET.with(|b| b.set(IO_BUDGET_OPS));
            if !park_on_entry(entry, dir, deadline) {
                return Err(on_timeout());
            }
        }
    }

    #[cold]
    fn run_on_thread<R>(
        &self,
        dir: Direction,
        timeout: Option<Duration>,
        nonblocking: bool,
        mut op: impl FnMut() -> io::Result<R>,
        on_timeout: impl FnOnce() -> io::Error,
    ) -> io::Result<R> {
        let mut deadline = None;
        loop {
            match op() {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                result => return result,
            }
            if nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if deadline.is_none() {
                deadline = timeout.map(Deadline::after);
            }
            // A coroutine unwound at its runtime's shutdown comes here (it
            // can no longer park).
            if super::current_task_is_ending() {
                return Err(ending_error());
            }
            let events = match dir {
                Direction::Read => POLL_IN,
                Direction::Write => POLL_OUT,
            };
            if !poll_one(self.fd, events, deadline)? {
                return Err(on_timeout());
            }
        }
    }
}

impl Drop for IoRegistration {
    fn drop(&mut self) {
        let own = with_current_worker(|w| w.and_then(|w| w.poller_if_created()));
        let on_own_worker = |entry: &IoEntry| own.as_ref().is_some_and(|p| Arc::ptr_eq(p, &entry.poller));
        let first = std::mem::replace(self.first.get_mut(), std::ptr::null_mut());
        if !first.is_null() {
            // SAFETY: published by `entry_slow` from Box::into_raw; we have
            // `&mut self`, so nobody else holds a reference.
            let entry = unsafe { Box::from_raw(first) };
            let own = on_own_worker(&entry);
            Arc::clone(&entry.poller).remove(entry, own);
        }
        let others = std::mem::take(self.others.get_mut().unwrap_or_else(|e| e.into_inner()));
        for entry in others {
            let own = on_own_worker(&entry);
            Arc::clone(&entry.poller).remove(entry, own);
        }
    }
}

/// What a socket operation that would wait returns in a coroutine that is
/// being unwound for good (see [`IoRegistration::run`]).
#[cold]
pub(crate) fn ending_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "a socket operation does not wait while its coroutine is being cancelled or unwound by its runtime's shutdown",
    )
}

/// How many socket operations in a row a worker's coroutines may make
/// without any of them parking before the next one yields first (tokio's
/// cooperative budget has the same size).
const IO_BUDGET_OPS: u32 = 128;

std::thread_local! {
    /// What is left of this worker thread's budget: reset when an operation
    /// parks (its coroutine gave the worker away), spent by one per
    /// operation.
    static IO_BUDGET: std::cell::Cell<u32> = const { std::cell::Cell::new(IO_BUDGET_OPS) };
}

/// Spends one operation of the worker's I/O budget; when it runs out, the
/// calling coroutine yields before its operation. A socket that is always
/// ready (a fast peer, an accept backlog that keeps filling) never parks
/// its reader, and without this the reader would keep its worker, and
/// every other coroutine there would wait, for as long as data kept
/// coming. Yielding *before* the call means a cancellation raised at the
/// yield loses nothing (no data read, no connection accepted and dropped).
#[inline]
fn spend_io_budget() {
    let left = IO_BUDGET.with(|b| {
        let left = b.get().saturating_sub(1);
        b.set(if left == 0 { IO_BUDGET_OPS } else { left });
        left
    });
    if left == 0 {
        super::yield_now();
    }
}

/// Wakes every waiter of `key`, one `unpark_one` at a time: usually there
/// is one, and this wakes it without the two vectors `unpark_all` builds.
fn wake_all(key: usize) {
    while lot::unpark_one(key, |_| lot::DEFAULT_TOKEN).have_more {}
}

/// Step 3: parks the calling coroutine until an event for `dir` (or
/// `deadline`: then returns false). Returns true at once if READY was set
/// meanwhile.
fn park_on_entry(entry: &IoEntry, dir: Direction, deadline: Option<Deadline>) -> bool {
    park::waiting_on(match dir {
        Direction::Read => ParkedOn::Readable(entry.fd),
        Direction::Write => ParkedOn::Writable(entry.fd),
    });
    entry.state.park(dir, deadline)
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The readiness protocol (module docs): a "kernel" thread makes data
    //! available and delivers its edge through the poller's `event`, while
    //! readers make their call, find nothing (`WouldBlock`), clear READY
    //! and park (in the slot, or in the parking lot when the slot is
    //! taken). Every reader must get its data (loom reports a reader parked
    //! for ever as a deadlock).
    use super::{Direction, READ_READY, Readiness, WaitState};
    use crate::loom::{AtomicUsize, Ordering, negative_control, thread};
    use std::sync::Arc;

    struct Socket {
        state: WaitState,
        /// The kernel's receive buffer: how many units wait in it.
        data: AtomicUsize,
    }

    /// One reader: reads one unit, waiting for it as `IoRegistration::run`
    /// does. `tick_checked: false` is a negative control: a clear that
    /// ignores whether an event came since the snapshot.
    fn read_one(s: &Socket, tick_checked: bool) {
        loop {
            let snapshot = s.state.readiness.snapshot();
            if Readiness::is_ready(snapshot, Direction::Read) {
                // The read: takes a unit, or finds none (WouldBlock). Only
                // compare-and-swaps, which read the newest count, as the
                // kernel's socket lock makes a real read see the newest
                // buffer (a plain load could see the count from before the
                // event that the snapshot saw; so could loom 0.7's
                // `fetch_add`, which returned a stale 0 here).
                let mut available: usize = 0;
                let took = loop {
                    let next = available.saturating_sub(1);
                    match s.data.compare_exchange(available, next, Ordering::Relaxed, Ordering::Relaxed) {
                        Ok(_) => break available > 0,
                        Err(actual) => available = actual,
                    }
                };
                if took {
                    return;
                }
                // WouldBlock.
                if tick_checked {
                    s.state.readiness.clear(Direction::Read, snapshot);
                } else {
                    // The bug: clear whatever came meanwhile.
                    s.state.readiness.0.fetch_and(!READ_READY, Ordering::Relaxed);
                }
                continue;
            }
            s.state.park(Direction::Read, None);
        }
    }

    /// `readers` threads each read one unit; the kernel makes `readers`
    /// units arrive at once and delivers one edge.
    fn readers_get_the_edge(readers: usize, tick_checked: bool) {
        loom::model(move || {
            // std's Arc: loom's panics when dropped while loom unwinds the
            // deadlocked negative controls.
            let s = Arc::new(Socket { state: WaitState::new(), data: AtomicUsize::new(0) });
            let kernel = {
                let s = Arc::clone(&s);
                thread::spawn(move || {
                    // (A read-modify-write, not a store: loom 0.7 let a later
                    // compare-and-swap of the reader succeed on the count from
                    // before a plain store.)
                    s.data.fetch_add(readers, Ordering::Relaxed); // segments arrive ...
                    s.state.event(READ_READY); // ... and the poller processes their edge.
                })
            };
            let others: Vec<_> = (1..readers)
                .map(|_| {
                    let s = Arc::clone(&s);
                    thread::spawn(move || read_one(&s, tick_checked))
                })
                .collect();
            read_one(&s, tick_checked);
            for other in others {
                other.join().unwrap();
            }
            kernel.join().unwrap();
        });
    }

    #[test]
    fn an_edge_between_would_block_and_park_is_never_lost() {
        readers_get_the_edge(1, true);
    }

    #[test]
    fn an_edge_reaches_the_slot_and_the_crowd() {
        readers_get_the_edge(2, true);
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_a_clear_that_ignores_the_tick_loses_the_edge() {
        readers_get_the_edge(1, false);
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_a_slot_filled_after_the_validation_misses_the_event() {
        let _broken = negative_control::break_until_dropped("io slot");
        readers_get_the_edge(1, true);
    }
}
