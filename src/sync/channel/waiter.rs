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
//!               the value was moved (or, on a              CAS, inside the parking lot's
//!               disconnection, deliberately not moved)     bucket lock of the waiter's key
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
//! # The hand-off (Go's `sendDirect`)
//!
//! A waker holds the channel's lock, pops the oldest entry of the other
//! side, and moves the value first: into a parked receiver's slot, or out
//! of a parked sender's. Then it selects the waiter: `lot::unpark_one` on
//! the waiter's key, whose callback (bucket lock held) CASes the state from
//! WAITING to the entry's case. If the CAS fails (the waiter gave up, or a
//! Select was completed by another channel), the waker moves the value
//! back and tries the next entry; the waiter never looks at that slot.
//!
//! Why the CAS runs inside `unpark_one`'s callback: the waiter parks only
//! if its `validate` (same bucket lock) still sees WAITING. Both under one
//! lock, so either the waiter was queued first (the waker's `unpark_one`
//! takes and wakes it) or the waker's CAS came first (the waiter does not
//! park): **no lost wakeup**. And the waker touches nothing of the waiter
//! after its CAS, so a waiter that sees its case selected may return and
//! free its stack at once: no wake ever goes to a key that is gone.
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
//! that gave up takes before it looks at its slot.

use crate::loom::{AtomicUsize, Ordering, UnsafeCell};
use crate::park::lot::{self, DEFAULT_TOKEN, ParkResult};
use crate::sys::futex::Deadline;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::ptr;

/// The waiter is registered and nothing has happened yet.
const WAITING: usize = usize::MAX;
/// The waiter gave up.
const ABORTED: usize = usize::MAX - 1;

/// The value of one operation: what a sender offers (taken by the
/// receiver that completes it), or where a receiver's value goes.
pub(super) type Slot<T> = UnsafeCell<Option<T>>;

/// One blocking operation's (or one Select's) wait; lives on the waiting
/// coroutine's or thread's stack. Its address is its parking-lot key.
pub(super) struct Waiter {
    /// WAITING, a selected case, or ABORTED (module docs).
    state: AtomicUsize,
}

impl Waiter {
    pub(super) fn new() -> Waiter {
        Waiter { state: AtomicUsize::new(WAITING) }
    }

    fn key(&self) -> usize {
        &self.state as *const AtomicUsize as usize
    }

    /// Whether nothing has happened to it yet (a lock holder's look: it may
    /// change at any moment, by its waiter giving up or another channel's
    /// waker selecting it).
    pub(super) fn is_waiting(&self) -> bool {
        self.state.load(Ordering::Relaxed) == WAITING
    }

    /// Sleeps until a waker selects a case (returned), or until `deadline`
    /// passes (then it gives up: `None`, unless a waker won the race).
    /// Parks the coroutine (its worker runs others) or blocks the thread.
    ///
    /// Cancellation and shutdown unwind out of here; the caller's guard
    /// then gives up with [`abort`](Self::abort) and cleans up.
    pub(super) fn wait(&self, deadline: Option<Deadline>) -> Option<usize> {
        // `Runtime::dump` shows "an unnamed wait": `ParkedOn` has no
        // channel variant yet (it lives in the runtime's dump module).
        crate::park::waiting_on(crate::park::ParkedOn::Other);
        loop {
            // Acquire: pairs with the waker's Release CAS; its move of the
            // value into or out of our slot is visible from here on.
            let state = self.state.load(Ordering::Acquire);
            if state != WAITING {
                debug_assert_ne!(state, ABORTED, "channel: a waiter that gave up waited again");
                return Some(state);
            }
            let result = lot::park(
                self.key(),
                // Bucket lock held: a waker's CAS runs under the same lock.
                || negative_control::skip_revalidation() || self.state.load(Ordering::Relaxed) == WAITING,
                || {},
                |_, _| {},
                deadline,
            );
            if result == ParkResult::TimedOut {
                return self.abort();
            }
        }
    }

    /// Gives up: `None` if it did, `Some(case)` if a waker selected `case`
    /// first (then the operation happened and must be reported so).
    ///
    /// Idempotent: a cleanup that is itself unwound (a cancellation that
    /// lands while it waits for a channel's lock) is run again by its
    /// guard, which asks again and gets the same answer.
    pub(super) fn abort(&self) -> Option<usize> {
        // Acquire on failure: as in `wait`. Relaxed on success: the waiter
        // then takes the channel lock before it touches its slot again.
        match self.state.compare_exchange(WAITING, ABORTED, Ordering::Relaxed, Ordering::Acquire) {
            Ok(_) | Err(ABORTED) => None,
            Err(case) => Some(case),
        }
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

    /// Selects this entry's waiter for its case and wakes it; `false` if it
    /// already gave up or was selected for another case (a stale entry).
    ///
    /// # Safety
    ///
    /// The caller holds the lock of the channel whose queue this entry was
    /// just popped from (the waiter is alive: module docs, "Lifetimes").
    unsafe fn select(&self) -> bool {
        let waiter = self.waiter;
        let case = self.case;
        // SAFETY: the caller's promise: the waiter is alive.
        let key = unsafe { (*waiter).key() };
        let mut selected = false;
        lot::unpark_one(key, |result| {
            // SAFETY: as above; nothing of the waiter is touched after
            // this CAS (module docs, "The hand-off").
            let state = unsafe { &(*waiter).state };
            // Release: publishes our move of the value (module docs).
            selected = state.compare_exchange(WAITING, case, Ordering::Release, Ordering::Relaxed).is_ok();
            debug_assert!(selected || result.unparked == 0, "channel: a waiter parked after it stopped waiting");
            DEFAULT_TOKEN
        });
        selected
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
    /// queue), selecting and waking it; `Err(value)` if none waits.
    pub(super) fn deliver(&mut self, mut value: T) -> Result<(), T> {
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
            if unsafe { entry.select() } {
                return Ok(());
            }
            // Stale: it gave up or was selected elsewhere. Take it back.
            // SAFETY: as above; the waiter never reads a slot it was not
            // selected for.
            value = slot.with_mut(|p| unsafe { (*p).take() }).expect("channel: a value vanished from a slot");
        }
        Err(value)
    }

    /// Takes the value of the oldest parked sender (this is a senders'
    /// queue), selecting and waking it; `None` if none waits.
    pub(super) fn take_value(&mut self) -> Option<T> {
        while let Some(entry) = self.entries.pop_front() {
            // SAFETY: as in `deliver`.
            let slot = unsafe { &*(entry.slot as *const Slot<T>) };
            // SAFETY: as in `deliver`: until our CAS the slot is ours.
            let value = slot.with_mut(|p| unsafe { (*p).take() }).expect("channel: a parked sender offers no value");
            // SAFETY: just popped, channel lock held.
            if unsafe { entry.select() } {
                return Some(value);
            }
            // Stale: put its value back where its owner will look.
            // SAFETY: as above.
            slot.with_mut(|p| unsafe { *p = Some(value) });
        }
        None
    }

    /// Selects every waiter without moving any value: a disconnection. A
    /// woken sender finds its value still in its slot, a woken receiver
    /// finds none; each reports the disconnection.
    pub(super) fn select_all(&mut self) {
        while let Some(entry) = self.entries.pop_front() {
            // SAFETY: just popped, channel lock held.
            unsafe { entry.select() };
        }
    }

    /// Whether no entry is queued (stale ones count).
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The loom negative control's switch: a waiter that parks without
/// re-validating its state under the bucket lock can sleep through the
/// waker's selection, and loom must find that (see `loom_models`).
#[cfg(loom)]
pub(super) mod negative_control {
    use std::cell::Cell;

    std::thread_local! {
        // Loom runs a model's threads on the test's own OS thread, so a
        // thread-local set by the test reaches all of them, and no other
        // test.
        static SKIP_REVALIDATION: Cell<bool> = const { Cell::new(false) };
    }

    pub(crate) fn skip_revalidation() -> bool {
        SKIP_REVALIDATION.with(Cell::get)
    }

    /// Breaks the protocol on this thread until the result is dropped.
    pub(crate) fn break_revalidation() -> impl Drop {
        struct Restore;
        impl Drop for Restore {
            fn drop(&mut self) {
                SKIP_REVALIDATION.with(|skip| skip.set(false));
            }
        }
        SKIP_REVALIDATION.with(|skip| skip.set(true));
        Restore
    }
}

#[cfg(not(loom))]
mod negative_control {
    #[inline(always)]
    pub(super) fn skip_revalidation() -> bool {
        false
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The negative control: a receiver that parks without re-validating
    //! under the bucket lock. Its channel protocol is otherwise the real
    //! one, so loom must find the schedule where the sender's hand-off lands
    //! between the receiver's last look at its state and its park: the
    //! receiver then sleeps for ever with the value in its slot.
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
    fn negative_control_park_without_revalidation_loses_the_wake() {
        let _broken = negative_control::break_revalidation();
        rendezvous_once();
    }

    use super::negative_control;
}
