//! The bounded flavour, `bounded(cap)` with `cap > 0`: a ring of `cap`
//! slots under the channel's lock (`chan.rs`), allocated once when `cap`
//! is at most `UP_FRONT`, else grown as it fills.
//!
//! # State
//!
//! ```text
//!  len         receivers parked       senders parked      a send            a recv
//!  ----------  ---------------------  ------------------  ----------------  --------------------
//!  0           may be (all waiting    never               hands its value   parks
//!              for a value)                               to the oldest     (FIFO)
//!                                                         parked receiver
//!  0 < n < cap never                  never               pushes            pops the head
//!  cap         never                  may be (each        parks, offering   pops the head, then
//!                                     offering a value)   its value (FIFO)  moves the oldest
//!                                                                           parked sender's value
//!                                                                           in and wakes it
//! ```
//!
//! ("never" counts live waiters: a Select that was completed through
//! another channel may leave a stale entry until it unregisters, which
//! the next waker skips.) So a value never waits in the ring while a
//! receiver is parked, a sender never parks while there is room, and a
//! parked sender is done the moment room appears — it does not have to
//! run to fill it (Go's `recv` on a full buffer).

use std::collections::VecDeque;

/// Rings of up to this many slots are allocated whole when the channel is
/// made; larger ones start with this many and grow (doubling) as values
/// wait in them, so `bounded(usize::MAX)` or `bounded(1 << 40)` cost memory
/// only for what is queued, as `unbounded()` does, instead of failing (or
/// aborting the process) on an allocation of the whole capacity.
const UP_FRONT: usize = 1024;

/// A ring of at most `capacity` values. `VecDeque` is std's ring buffer;
/// allocated with room for `capacity` up front (at most `UP_FRONT`) and
/// never pushed past it, it never reallocates unless `capacity` is larger.
pub(super) struct Ring<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> Ring<T> {
    /// A ring of `capacity > 0` slots.
    pub(super) fn new(capacity: usize) -> Ring<T> {
        debug_assert!(capacity > 0, "channel: a ring of no slots (use the zero flavour)");
        Ring { items: VecDeque::with_capacity(capacity.min(UP_FRONT)), capacity }
    }

    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(super) fn has_room(&self) -> bool {
        self.items.len() < self.capacity
    }

    pub(super) fn push(&mut self, value: T) {
        debug_assert!(self.has_room(), "channel: push into a full ring");
        self.items.push_back(value);
    }

    pub(super) fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Takes every value out (the receivers are gone: nothing is pushed
    /// again), freeing the ring.
    pub(super) fn take_all(&mut self) -> Ring<T> {
        Ring { items: std::mem::take(&mut self.items), capacity: self.capacity }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn wraps_around_without_growing() {
        let mut ring = Ring::new(3);
        let allocated = ring.items.capacity();
        for round in 0..10 {
            ring.push(round);
            ring.push(round + 100);
            assert!(ring.has_room());
            assert_eq!(ring.pop(), Some(round));
            assert_eq!(ring.pop(), Some(round + 100));
        }
        for i in 0..3 {
            ring.push(i);
        }
        assert!(!ring.has_room());
        assert_eq!(ring.items.capacity(), allocated, "the ring reallocated");
    }

    #[test]
    fn a_huge_capacity_is_allocated_as_it_fills() {
        let mut ring = Ring::new(usize::MAX);
        assert!(ring.items.capacity() < 2 * UP_FRONT);
        for i in 0..3 * UP_FRONT {
            ring.push(i);
        }
        assert!(ring.has_room());
        assert_eq!((0..3 * UP_FRONT).map(|_| ring.pop().unwrap()).sum::<usize>(), (0..3 * UP_FRONT).sum());
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! bounded(1) with two senders and one receiver.
    use super::super::bounded;
    use crate::loom::thread;

    /// Two senders send two values each through one slot; the receiver
    /// takes all four: each exactly once, each sender's in order. Senders
    /// park on the full ring and are completed by the receiver's pops.
    #[test]
    fn two_senders_one_slot_exactly_once_in_order() {
        two_senders_one_slot();
    }

    /// Negative control: a waiter that throws away a wake that came between
    /// its look and its park (`waiter::negative_control::DISCARD_WAKES`)
    /// sleeps through its completion: a sender parked on the full ring, or
    /// the receiver on the empty one, is never woken, and loom must report
    /// the deadlock.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_discarding_a_wake_strands_a_sender_or_the_receiver() {
        let _broken =
            crate::loom::negative_control::break_until_dropped(super::super::waiter::negative_control::DISCARD_WAKES);
        two_senders_one_slot();
    }

    fn two_senders_one_slot() {
        loom::model(|| {
            let (tx, rx) = bounded::<u32>(1);
            let senders: Vec<_> = (0..2u32)
                .map(|s| {
                    let tx = tx.clone();
                    thread::spawn(move || {
                        tx.send(s * 10).unwrap();
                        tx.send(s * 10 + 1).unwrap();
                    })
                })
                .collect();
            drop(tx);
            let mut got = Vec::new();
            while let Ok(value) = rx.recv() {
                got.push(value);
            }
            for sender in senders {
                sender.join().unwrap();
            }
            for s in 0..2 {
                let mine: Vec<u32> = got.iter().copied().filter(|v| v / 10 == s).collect();
                assert_eq!(mine, [s * 10, s * 10 + 1], "sender {s}: got {got:?}");
            }
            assert_eq!(got.len(), 4);
        });
    }
}
