//! The waiter of a blocking channel operation, and the wake that selects it.
//!
//! Every blocking operation — a `send` on a full channel, a `recv` on an
//! empty one, a `Select` with nothing ready — puts a [`Waiter`] on its own
//! stack and one [`Entry`] per operation into the wait queues of the
//! channels involved (a plain `send`/`recv` has one entry, a `Select` one
//! per case). An entry names the waiter, the case it stands for and the
//! case's value [`Slot`] (the value a sender offers, or the place a
//! receiver's value goes). This is Go's `sudog`.
//!
//! # The waiter's state word
//!
//! ```text
//!  state        meaning                                  set by
//!  -----------  ---------------------------------------  ---------------------------
//!  WAITING      registered, nothing happened yet          Waiter::new
//!  case (< 2^64-2)  a waker completed case `case` for it:  a waker (Entry::select), one
//!               the value was moved (or, on a              CAS, holding the lock of the
//!               disconnection, deliberately not moved)     channel it popped the entry from
//!  ABORTED      the waiter gave up (timeout, a select     the waiter (Waiter::abort), one
//!               that found a case ready while it           CAS, with no lock held
//!               registered, cancellation, shutdown)
//!
//!  WAITING -> case      exactly one waker wins: a Select's other entries, and a
//!  WAITING -> ABORTED   waiter that gives up, lose the CAS and back off
//!  case, ABORTED        final: nothing changes them again (asking `abort`
//!                       again gives the same answer)
//! ```
//!
//! An *exclusive* waiter (a plain `send` or `recv`: one entry, in one
//! channel) gives up only while it holds that channel's lock, and takes its
//! entry out in the same critical section. A waker, which holds the same
//! lock, therefore always finds it WAITING, and selects it with a plain
//! Release store instead of the CAS: one atomic read-modify-write less per
//! hand-off. A Select's waiter has entries in several channels, each under
//! its own lock, and gives up with no lock held: its wakers race, and CAS.
//!
//! # The hand-off (Go's `sendDirect` and `goready`)
//!
//! A waker holds the channel's lock, pops the oldest entry of the other
//! side, and moves the value first: into a parked receiver's slot, or out
//! of a parked sender's. Then it selects the waiter: one CAS of the state
//! from WAITING to the entry's case. If the CAS fails (the waiter gave up,
//! or a Select was completed by another channel), the waker moves the
//! value back and tries the next entry; the waiter never looks at that
//! slot. If it wins, it wakes the waiter ([`Wake`]), normally after it has
//! released the channel's lock, as Go's `send` calls `goready` after
//! `unlock`: the woken waiter, on another worker, does not find the lock
//! still held, and the lock is held for a few moves only.
//!
//! The waiter sleeps in the parking layer's token protocol
//! (`park::Unparker` / `WaiterKind::park`: a coroutine suspends, an OS
//! thread blocks on its futex): it looks at its state and parks only while
//! it is WAITING; the waker CASes the state first and wakes after. A wake
//! that lands between the waiter's look and its park leaves a token, and
//! the park returns at once: **no lost wakeup**, with no lock shared by the
//! two sides. (The loom negative control is a waiter that throws away a
//! token that arrived between its look and its park: it sleeps for ever.)
//!
//! # Who owns the unparker
//!
//! The waiter's `Unparker` (who to wake: its coroutine, or its thread's
//! parker) sits in the waiter and is never written after [`Waiter::new`].
//! It belongs to whoever wins the state CAS: a waker that selects the
//! waiter takes it (the bitwise copy it read just before its CAS becomes
//! its own, so it never touches the waiter after the CAS: the waiter may
//! return and free its stack at once); a waiter that aborts, or that was
//! never selected, drops it itself (`Drop`). A waker whose CAS fails
//! forgets its copy. Copies are only read while the reader holds the lock
//! of a channel where the waiter still has (or just had) an entry, so the
//! waiter, which leaves a channel only through that lock, is alive.
//!
//! # Why not the parking lot
//!
//! The other primitives park on their own address in the parking lot,
//! whose bucket lock is what makes their "check, then sleep" atomic. A
//! channel needs no second lock for that: its own lock already guards the
//! queue of waiters, and the state CAS is the one decision a waker and a
//! giving-up waiter race for. Parking in the lot as well cost a bucket
//! lock and a queue walk on each side of every hand-off: a rendezvous
//! hand-off between two coroutines took 778 instructions with it and 546
//! without (callgrind, `benches/channel.rs`).
//!
//! # Lifetimes
//!
//! An entry is only touched with its channel's lock held, and a waiter
//! leaves a channel only by taking that lock: a waker popped its entry (it
//! selected it, or found it stale), or the waiter removes it itself
//! ([`WaitQueue::remove`]) after it gave up or was selected through
//! another channel. So while a lock holder sees an entry, its waiter and
//! slot are alive. A waiter that was selected never needs that lock for
//! the selected entry: the waker popped it.
//!
//! Orderings: the waker's CAS is Release, publishing its move of the value;
//! the waiter reads its state with Acquire before it touches its slot. A
//! failed CAS puts the value back under the channel lock, which the waiter
//! that gave up takes before it looks at its slot. The unparker is
//! published to wakers by the channel lock under which the entry was
//! pushed.

use crate::loom::{AtomicUsize, Ordering, UnsafeCell};
use crate::park::{ParkedOn, Unparker, WaiterKind, lot};
use crate::sys::futex::Deadline;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr;

/// The waiter is registered and nothing has happened yet.
const WAITING: usize = usize::MAX;
/// The waiter gave up.
const ABORTED: usize = usize::MAX - 1;

/// The value of one operation: what a sender offers (taken by the
/// receiver that completes it), or where a receiver's value goes.
pub(super) type Slot<T> = UnsafeCell<Option<T>>;

/// One blocking operation's (or one Select's) wait; lives on the waiting
/// coroutine's or thread's stack.
pub(super) struct Waiter {
    /// WAITING, a selected case, or ABORTED (module docs).
    state: AtomicUsize,
    /// Who to wake; never written after `new` (module docs, "Who owns the
    /// unparker").
    unparker: UnsafeCell<ManuallyDrop<Unparker>>,
    /// How the waiter itself sleeps.
    kind: WaiterKind,
    /// One entry in one channel, given up only under that channel's lock
    /// (module docs): wakers select it with a store.
    exclusive: bool,
}

impl Waiter {
    /// A Select's waiter for the calling coroutine or thread.
    #[inline]
    pub(super) fn new() -> Waiter {
        Waiter::with(false)
    }

    /// The waiter of a plain `send` or `recv` (one entry in one channel),
    /// which gives up only with that channel's lock held: after a timed-out
    /// [`wait`](Self::wait), and in its unwind guard, the caller takes the
    /// lock, asks [`abort`](Self::abort), and removes its entry if that
    /// gave up, before releasing it.
    #[inline]
    pub(super) fn exclusive() -> Waiter {
        Waiter::with(true)
    }

    #[inline]
    fn with(exclusive: bool) -> Waiter {
        let unparker = Unparker::current();
        let kind = unparker.kind();
        Waiter {
            state: AtomicUsize::new(WAITING),
            unparker: UnsafeCell::new(ManuallyDrop::new(unparker)),
            kind,
            exclusive,
        }
    }

    /// Whether nothing has happened to it yet (a lock holder's look: it may
    /// change at any moment, by its waiter giving up or another channel's
    /// waker selecting it).
    pub(super) fn is_waiting(&self) -> bool {
        self.state.load(Ordering::Relaxed) == WAITING
    }

    /// Sleeps until a waker selects a case (returned), or until `deadline`
    /// passes (then it gives up: `None`, unless a waker won the race; an
    /// exclusive waiter returns `None` without giving up, for its caller to
    /// do under the channel's lock).
    /// Parks the coroutine (its worker runs others) or blocks the thread.
    ///
    /// Cancellation and shutdown unwind out of here; the caller's guard
    /// then gives up with [`abort`](Self::abort) and cleans up.
    #[inline]
    /// `on` is what `Runtime::dump` shows the coroutine waiting on.
    pub(super) fn wait(&self, deadline: Option<Deadline>, on: ParkedOn) -> Option<usize> {
        // Acquire: pairs with the waker's Release CAS; its move of the
        // value into or out of our slot is visible from here on.
        let state = self.state.load(Ordering::Acquire);
        if state != WAITING {
            return Some(state);
        }
        self.wait_parked(deadline, on)
    }

    // Always inline: out of line, `on` (two words) was passed through
    // memory and read back with one 16-byte load that the two 8-byte
    // stores could not forward to (a stall of ~6 ns per hand-off on the
    // development machine), and the suspend was one frame deeper (see
    // `Chan::send_blocking`).
    #[inline(always)]
    fn wait_parked(&self, deadline: Option<Deadline>, on: ParkedOn) -> Option<usize> {
        crate::park::waiting_on(on);
        // A coroutine's deadline is a timer on its worker, ended however
        // the wait ends (`TimerGuard`, also on an unwind).
        let _timer = self.kind.arms_timer(deadline).then(|| {
            // SAFETY: a shared read of the unparker, never written after
            // `new` (module docs); the task it names is the caller's own.
            self.unparker.with(|p| unsafe { (*p).prepare_deadline(deadline) });
            TimerGuard
        });
        let mut expired = false;
        loop {
            // Acquire: as in `wait`.
            let state = self.state.load(Ordering::Acquire);
            if state != WAITING {
                debug_assert_ne!(state, ABORTED, "channel: a waiter that gave up waited again");
                return Some(state);
            }
            if deadline.is_some_and(|d| expired || lot::deadline_passed(d)) {
                return if self.exclusive && !negative_control::gives_up_unlocked() { None } else { self.abort() };
            }
            negative_control::discard_a_wake(self.kind);
            // A wake that came since our look left a token: this returns at
            // once, and we look again.
            expired = !self.kind.park(deadline);
        }
    }

    /// Gives up: `None` if it did, `Some(case)` if a waker selected `case`
    /// first (then the operation happened and must be reported so).
    ///
    /// Idempotent: a cleanup that is itself unwound (a cancellation that
    /// lands while it waits for a channel's lock) is run again by its
    /// guard, which asks again and gets the same answer.
    ///
    /// An exclusive waiter asks only with its channel's lock held, and
    /// removes its entry before releasing it if this gave up.
    pub(super) fn abort(&self) -> Option<usize> {
        // Acquire on failure: as in `wait`. Relaxed on success: the waiter
        // then takes the channel lock before it touches its slot again.
        match self.state.compare_exchange(WAITING, ABORTED, Ordering::Relaxed, Ordering::Acquire) {
            Ok(_) | Err(ABORTED) => None,
            Err(case) => Some(case),
        }
    }
}

impl Drop for Waiter {
    #[inline]
    fn drop(&mut self) {
        // Under loom a detected deadlock unwinds every model thread after
        // the execution is gone: touching its objects now would abort.
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        // Alone now: no entry of ours is queued anywhere, so no waker reads
        // the unparker. A waker that selected us took it (module docs).
        let state = self.state.load(Ordering::Relaxed);
        if state == WAITING || state == ABORTED {
            // SAFETY: ours, not taken by any waker; read once, here.
            drop(ManuallyDrop::into_inner(self.unparker.with(|p| unsafe { ptr::read(p) })));
        }
    }
}

/// Ends a coroutine's timed wait, however it ends (`park::disarm_timer`):
/// a timer that has not fired is cancelled.
struct TimerGuard;

impl Drop for TimerGuard {
    fn drop(&mut self) {
        crate::park::disarm_timer();
    }
}

/// The wake of a waiter a waker selected: its unparker, now the waker's.
/// Dropping it wakes the waiter, so the waker drops it once it has
/// released the channel's lock (drop the guard first), and an unwind
/// between the two still wakes.
#[must_use = "dropping a Wake wakes its waiter: drop it after releasing the channel lock"]
pub(super) struct Wake(ManuallyDrop<Unparker>);

impl Wake {
    /// Wakes the waiter now: what dropping does, inlined into the caller.
    /// (The drop glue of an `Option<Wake>` stays out of line: a call on
    /// every hand-off.)
    #[inline(always)]
    pub(super) fn wake(mut self) {
        // SAFETY: taken once, here; `self` is forgotten right after.
        let unparker = unsafe { ManuallyDrop::take(&mut self.0) };
        std::mem::forget(self);
        unparker.unpark();
    }
}

impl Drop for Wake {
    #[inline]
    fn drop(&mut self) {
        // Under loom, see `Waiter`'s `Drop`.
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        // SAFETY: taken once, here; `self` is gone after this.
        unsafe { ManuallyDrop::take(&mut self.0) }.unpark();
    }
}

/// One operation of a waiter, registered in a channel's wait queue.
#[derive(Clone, Copy)]
pub(super) struct Entry {
    waiter: *const Waiter,
    /// Which case of the waiter this is (0 for a plain send or recv).
    case: usize,
    /// The case's `Slot<T>`, `T` being its channel's message type.
    slot: *const (),
}

impl Entry {
    /// An entry for case `case` of `waiter`, with its value slot.
    pub(super) fn new<T>(waiter: &Waiter, case: usize, slot: &Slot<T>) -> Entry {
        debug_assert!(case < ABORTED, "channel: case index out of range");
        Entry { waiter, case, slot: slot as *const Slot<T> as *const () }
    }

    fn is(&self, waiter: *const Waiter, case: usize) -> bool {
        ptr::eq(self.waiter, waiter) && self.case == case
    }

    /// Selects this entry's waiter for its case: `Some(wake)` if it won,
    /// `None` if the waiter already gave up or was selected for another
    /// case (a stale entry). The caller drops the wake (which wakes the
    /// waiter) after it has released the channel's lock.
    ///
    /// # Safety
    ///
    /// The caller holds the lock of the channel whose queue this entry was
    /// just popped from (the waiter is alive: module docs, "Lifetimes").
    #[inline]
    unsafe fn select(&self) -> Option<Wake> {
        // SAFETY: the caller's promise: the waiter is alive.
        let waiter = unsafe { &*self.waiter };
        // Our copy of its unparker, ours only if the CAS below wins (module
        // docs, "Who owns the unparker").
        // SAFETY: a shared read of a field never written after `new`.
        let unparker = waiter.unparker.with(|p| unsafe { ptr::read(p) });
        // Release: publishes our move of the value (module docs). Nothing
        // of the waiter is touched after a successful store or CAS: it may
        // be gone.
        if waiter.exclusive {
            // Under the lock it gives up in, with its entry still queued:
            // WAITING (module docs). Under loom the store is a swap that
            // checks so, before anything goes wrong (the negative control
            // in `chan.rs` breaks it).
            #[cfg(loom)]
            assert_eq!(
                waiter.state.swap(self.case, Ordering::Release),
                WAITING,
                "channel: an exclusive waiter gave up without its channel's lock"
            );
            #[cfg(not(loom))]
            {
                debug_assert_eq!(waiter.state.load(Ordering::Relaxed), WAITING, "channel: a stale exclusive entry");
                waiter.state.store(self.case, Ordering::Release);
            }
            return Some(Wake(unparker));
        }
        match waiter.state.compare_exchange(WAITING, self.case, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => Some(Wake(unparker)),
            // Its owner keeps it: forget our copy (a ManuallyDrop).
            Err(_) => None,
        }
    }
}

/// The entries of one side of one channel (parked senders, or parked
/// receivers), oldest first. Guarded by the channel's lock.
pub(super) struct WaitQueue<T> {
    entries: VecDeque<Entry>,
    /// Every entry's slot is a `Slot<T>`.
    _slots: PhantomData<*const Slot<T>>,
}

// SAFETY: the entries point at waiters and slots on other stacks, which are
// touched only under the channel lock that guards this queue, while they
// are alive (module docs, "Lifetimes"); the values moved through them are
// `T`s, sent between threads: T: Send.
unsafe impl<T: Send> Send for WaitQueue<T> {}

impl<T> WaitQueue<T> {
    pub(super) fn new() -> WaitQueue<T> {
        WaitQueue { entries: VecDeque::new(), _slots: PhantomData }
    }

    /// Registers `entry` at the back.
    ///
    /// # Safety
    ///
    /// `entry`'s slot is a `Slot<T>`; its waiter and slot stay alive until
    /// the entry leaves this queue, which happens only under the channel
    /// lock (popped by a waker, or [`remove`](Self::remove)d).
    pub(super) unsafe fn push(&mut self, entry: Entry) {
        self.entries.push_back(entry);
    }

    /// Takes `entry` out if it is still queued (a waiter that gave up, or
    /// a Select leaving the channels it was not selected through).
    pub(super) fn remove(&mut self, waiter: *const Waiter, case: usize) {
        if let Some(at) = self.entries.iter().position(|e| e.is(waiter, case)) {
            self.entries.remove(at);
        }
    }

    /// Whether a waiter other than `own` still waits here (a Select
    /// registering must not count its own entries: it cannot meet itself).
    pub(super) fn has_waiter_besides(&self, own: *const Waiter) -> bool {
        // SAFETY: queued entries' waiters are alive; we hold the lock
        // (`&self` is reached only through the channel's guard).
        self.entries.iter().any(|e| !ptr::eq(e.waiter, own) && unsafe { (*e.waiter).is_waiting() })
    }

    /// Hands `value` to the oldest parked receiver (this is a receivers'
    /// queue), selecting it: its wake, to drop after the channel's lock;
    /// `Err(value)` if none waits.
    #[inline]
    pub(super) fn deliver(&mut self, mut value: T) -> Result<Wake, T> {
        while let Some(entry) = self.entries.pop_front() {
            // SAFETY: `push`'s contract: a live Slot<T>; the waiter reads it
            // only once selected, so until our CAS it is ours to write.
            let slot = unsafe { &*(entry.slot as *const Slot<T>) };
            slot.with_mut(|p| {
                // SAFETY: as above.
                let slot = unsafe { &mut *p };
                debug_assert!(slot.is_none(), "channel: a parked receiver's slot is full");
                *slot = Some(value);
            });
            // SAFETY: just popped, channel lock held.
            if let Some(wake) = unsafe { entry.select() } {
                return Ok(wake);
            }
            // Stale: it gave up or was selected elsewhere. Take it back.
            // SAFETY: as above; the waiter never reads a slot it was not
            // selected for.
            value = slot.with_mut(|p| unsafe { (*p).take() }).expect("channel: a value vanished from a slot");
        }
        Err(value)
    }

    /// Takes the value of the oldest parked sender (this is a senders'
    /// queue), selecting it: the value and the sender's wake, to drop after
    /// the channel's lock; `None` if none waits.
    #[inline]
    pub(super) fn take_value(&mut self) -> Option<(T, Wake)> {
        while let Some(entry) = self.entries.pop_front() {
            // SAFETY: as in `deliver`.
            let slot = unsafe { &*(entry.slot as *const Slot<T>) };
            // SAFETY: as in `deliver`: until our CAS the slot is ours.
            let value = slot.with_mut(|p| unsafe { (*p).take() }).expect("channel: a parked sender offers no value");
            // SAFETY: just popped, channel lock held.
            if let Some(wake) = unsafe { entry.select() } {
                return Some((value, wake));
            }
            // Stale: put its value back where its owner will look.
            // SAFETY: as above.
            slot.with_mut(|p| unsafe { *p = Some(value) });
        }
        None
    }

    /// Selects every waiter without moving any value: a disconnection. A
    /// woken sender finds its value still in its slot, a woken receiver
    /// finds none; each reports the disconnection. Their wakes, to drop
    /// after the channel's lock.
    #[cold]
    pub(super) fn select_all(&mut self) -> Vec<Wake> {
        let mut wakes = Vec::new();
        while let Some(entry) = self.entries.pop_front() {
            // SAFETY: just popped, channel lock held.
            wakes.extend(unsafe { entry.select() });
        }
        wakes
    }

    /// Whether no entry is queued (stale ones count).
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The waiter's steps that its loom negative controls break (the switch is
/// `crate::loom::negative_control`; outside loom these cost nothing).
pub(super) mod negative_control {
    use crate::loom::negative_control::broken;
    use crate::park::WaiterKind;
    use crate::sys::futex::Deadline;
    use std::time::Duration;

    /// A waiter that throws away a wake that arrived between its look at
    /// its state and its park (as a park that does not re-validate would)
    /// sleeps through the waker's selection, and loom must find that.
    pub(crate) const DISCARD_WAKES: &str = "channel waiter: discard wakes";

    /// An exclusive waiter whose deadline passed gives up at once, with no
    /// lock held, as a Select's does; its waker, which selects it with a
    /// plain store, may then overwrite ABORTED, and both sides believe they
    /// won.
    pub(crate) const GIVE_UP_UNLOCKED: &str = "channel waiter: give up unlocked";

    /// When `DISCARD_WAKES` is broken: consumes a pending wake, if any
    /// (under loom a timed park may return at any moment, taking the token
    /// if there is one).
    #[inline(always)]
    pub(super) fn discard_a_wake(kind: WaiterKind) {
        if broken(DISCARD_WAKES) {
            kind.park(Some(Deadline::after(Duration::ZERO)));
        }
    }

    /// Whether `GIVE_UP_UNLOCKED` is broken.
    #[inline(always)]
    pub(super) fn gives_up_unlocked() -> bool {
        broken(GIVE_UP_UNLOCKED)
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The negative control: a receiver that throws away a wake that came
    //! between its last look at its state and its park. Its channel
    //! protocol is otherwise the real one, so loom must find the schedule
    //! where the sender's hand-off lands in that window: the receiver then
    //! sleeps for ever with the value in its slot.
    use super::super::bounded;
    use crate::loom::thread;

    fn rendezvous_once() {
        loom::model(|| {
            let (tx, rx) = bounded::<u32>(0);
            let sender = thread::spawn(move || tx.send(7).unwrap());
            assert_eq!(rx.recv(), Ok(7));
            sender.join().unwrap();
        });
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_discarding_a_wake_loses_the_hand_off() {
        let _broken = crate::loom::negative_control::break_until_dropped(super::negative_control::DISCARD_WAKES);
        rendezvous_once();
    }
}
