//! The channel core shared by the three flavours: a lock, a buffer, and
//! two wait queues of parked operations — Go's `hchan`.
//!
//! # State (all under the channel's lock)
//!
//! ```text
//!  Inner
//!  +-------------------------------------------------------------------+
//!  | buffer        the flavour's storage: none (zero), a ring (array),  |
//!  |               linked blocks (list)                                |
//!  | handed_back   values a receiver was handed but could not take     |
//!  |               (cancelled or unwound before it ran): served first  |
//!  | receivers     WaitQueue of parked receivers (oldest first)        |
//!  | senders       WaitQueue of parked senders, each offering a value  |
//!  | senders_gone, receivers_gone   disconnection, set once            |
//!  +-------------------------------------------------------------------+
//!
//!  values available       room          receivers queued   senders queued
//!  ---------------------  ------------  -----------------  ----------------------
//!  none                   any           may be             never (room) /
//!                                                          zero: may be
//!  some                   any           never (live ones)  only when full
//!  (zero: only handed-back values, or a parked sender's)
//! ```
//!
//! Invariant: a live receiver entry (its waiter still WAITING) is queued
//! only while no value is available, and a live sender entry only while
//! there is no room. Every operation keeps it, because each one, under
//! the lock, first meets the other side's oldest waiter before it touches
//! the buffer:
//!
//! - **send**: a parked receiver takes the value directly (Go's
//!   `sendDirect`: one move into its slot, one wake); otherwise the buffer
//!   takes it if it has room; otherwise the sender parks, offering it.
//! - **recv**: a handed-back value first; else the buffer's head, and then
//!   the oldest parked sender's value moves into the freed room (Go's
//!   `recv` on a full buffer: the sender is done without running); else
//!   (zero, or an empty buffer) a parked sender's value directly; otherwise
//!   the receiver parks.
//!
//! So receivers are served in the order they parked (FIFO), a newcomer
//! never overtakes a parked waiter, and a hand-off costs one wake and,
//! for a coroutine, one switch. The wake and its selection protocol are in
//! `waiter.rs`; Select registers entries the same way (`select.rs`).
//!
//! # Disconnection
//!
//! The last `Sender` to go sets `senders_gone` and wakes every parked
//! receiver with no value: each returns `RecvError`; `recv` drains what is
//! buffered first, then fails. The last `Receiver` to go sets
//! `receivers_gone`, wakes every parked sender with its value still in its
//! slot (each returns it in `SendError`), and drops the buffered values
//! (outside the lock), as crossbeam-channel does: nobody can receive them,
//! and one holding a `Sender` of its own channel would keep it alive.
//!
//! # Cancellation and unwinding
//!
//! A parked operation's coroutine may be cancelled (`JoinHandle::cancel`)
//! or unwound by its runtime's shutdown. Its guard then takes the lock and
//! gives up (`Waiter::abort`: a plain operation's waiter gives up only
//! under its channel's lock, so that wakers can select it with a store;
//! `waiter.rs`): if that wins, it removes its entry before unlocking (a
//! sender's value unwinds with its stack). A timed-out wait does the same.
//! If a waker won, the operation happened: a receiver was handed a value
//! it will never return, so the guard hands it back ([`Chan::hand_back`]):
//! to the oldest parked receiver, or to the front of `handed_back`. Every value is received
//! exactly once or is still in the channel. (Such a value may then reach a
//! receiver after later values of the same sender: order is kept except
//! across a cancelled receiver. It may also come back after
//! `disconnect_senders` told the parked receivers `RecvError`: nothing
//! counts the values handed to receivers that have not run yet, which
//! would cost every direct hand-off one more read-modify-write; the public
//! docs say so.)
//!
//! Every wait for the channel's lock is itself a point where a coroutine
//! can be cancelled (a `SpinLock` that has spun its budget yields, and a
//! yield is a cancellation point). So the guards stay armed until the cleanup is done
//! (a cancellation that lands while a timed-out waiter takes the lock to
//! leave is finished by its guard: `Waiter::abort` answers the same the
//! second time); a value being handed back leaves its slot only under the
//! lock; and the last handle's disconnection, unwound out of the lock,
//! runs again from a guard (`DisconnectOnUnwind`). During that unwind a
//! wait for the lock does not unwind again.
//!
//! # The lock
//!
//! The channel's lock is weft's `SpinLock`. It is held for a few moves and
//! one CAS, never across a park or a wake (a waker drops its `Wake`, which
//! reschedules the waiter, after releasing the lock), so a waiter spins a
//! few microseconds at most and then yields its coroutine (the worker runs
//! its others) or its thread; unlocking is one plain store. A parking lock
//! (weft's `Mutex`, used here at first) costs a read-modify-write to
//! unlock as well, and parks a coroutine behind a holder that is about to
//! leave on another core: a rendezvous hand-off between two coroutines
//! took 78-83 ns with it and 73-76 ns with the spin lock, measured in
//! turns on the same 2-CPU machine. Go guards its channels the same way:
//! its runtime lock spins, and never parks the goroutine.
//!
//! # Rejected alternative
//!
//! crossbeam-channel's lock-free stamps (array, list) with waiters woken
//! to retry: faster when nobody waits, but a woken receiver competes with
//! newcomers (no FIFO), nothing is handed over directly (a rendezvous
//! costs the waker a wait for the taker), and a select that is woken may
//! find its value taken and loop.

use super::array::Ring;
use super::error::{SendTimeoutError, TryRecvError, TrySendError};
use super::list::Blocks;
use super::waiter::{Entry, Slot, WaitQueue, Waiter, Wake};
use crate::loom::{AtomicUsize, Ordering, UnsafeCell};
use crate::park::ParkedOn;
use crate::sys::futex::Deadline;
use std::collections::VecDeque;
use std::mem;

/// The channel's lock (module docs, "The lock"). Under loom it is the
/// parking `Mutex`: a spin lock's retries make the channel models' executions
/// too long for loom to explore, and the channel's protocol needs only
/// mutual exclusion with Acquire/Release (the spin lock has models of its
/// own, in `spinlock.rs`).
#[cfg(not(loom))]
type Lock<T> = crate::sync::SpinLock<T>;
#[cfg(not(loom))]
type Guard<'a, T> = crate::sync::SpinLockGuard<'a, T>;
#[cfg(loom)]
type Lock<T> = crate::sync::Mutex<T>;
#[cfg(loom)]
type Guard<'a, T> = crate::sync::MutexGuard<'a, T>;

/// A flavour's storage.
pub(super) enum Buffer<T> {
    /// `bounded(0)`: no storage; every value goes from a sender's hands to
    /// a receiver's (`zero.rs`).
    Zero,
    /// `bounded(cap)`, `cap > 0` (`array.rs`).
    Array(Ring<T>),
    /// `unbounded()` (`list.rs`).
    List(Blocks<T>),
}

impl<T> Buffer<T> {
    fn len(&self) -> usize {
        match self {
            Buffer::Zero => 0,
            Buffer::Array(ring) => ring.len(),
            Buffer::List(blocks) => blocks.len(),
        }
    }

    fn has_room(&self) -> bool {
        match self {
            Buffer::Zero => false,
            Buffer::Array(ring) => ring.has_room(),
            Buffer::List(_) => true,
        }
    }

    /// Stores `value`; the caller checked `has_room`.
    fn push(&mut self, value: T) {
        match self {
            Buffer::Zero => unreachable!("channel: a zero-capacity channel stores nothing"),
            Buffer::Array(ring) => ring.push(value),
            Buffer::List(blocks) => blocks.push(value),
        }
    }

    fn pop(&mut self) -> Option<T> {
        match self {
            Buffer::Zero => None,
            Buffer::Array(ring) => ring.pop(),
            Buffer::List(blocks) => blocks.pop(),
        }
    }

    /// Takes every stored value out, to be dropped by the caller outside
    /// the lock. The buffer stores nothing more afterwards (only called
    /// once every receiver is gone).
    fn take_all(&mut self) -> Buffer<T> {
        match self {
            Buffer::Zero => Buffer::Zero,
            Buffer::Array(ring) => Buffer::Array(ring.take_all()),
            Buffer::List(blocks) => Buffer::List(mem::take(blocks)),
        }
    }

    fn capacity(&self) -> Option<usize> {
        match self {
            Buffer::Zero => Some(0),
            Buffer::Array(ring) => Some(ring.capacity()),
            Buffer::List(_) => None,
        }
    }
}

/// The state under the lock; see the module docs.
pub(super) struct Inner<T> {
    buffer: Buffer<T>,
    handed_back: VecDeque<T>,
    receivers: WaitQueue<T>,
    senders: WaitQueue<T>,
    senders_gone: bool,
    receivers_gone: bool,
}

impl<T> Inner<T> {
    /// Moves `value` in without waiting: to the oldest parked receiver
    /// (`Ok(Some(wake))`: its wake, to drop after the lock), else into the
    /// buffer (`Ok(None)`); `Err(value)` if neither can take it.
    #[inline]
    fn try_push(&mut self, value: T) -> Result<Option<Wake>, T> {
        let value = match self.receivers.deliver(value) {
            Ok(wake) => return Ok(Some(wake)),
            Err(value) => value,
        };
        if self.buffer.has_room() {
            self.buffer.push(value);
            Ok(None)
        } else {
            Err(value)
        }
    }

    /// Takes the next value without waiting (module docs, "recv"), with
    /// the wake of a parked sender it completed, to drop after the lock.
    #[inline(always)]
    fn try_pop(&mut self) -> Option<(T, Option<Wake>)> {
        if let Some(value) = self.handed_back.pop_front() {
            return Some((value, None));
        }
        if let Some(value) = self.buffer.pop() {
            // Room again: the oldest parked sender's value moves in.
            let wake = self.senders.take_value().map(|(offered, wake)| {
                self.buffer.push(offered);
                wake
            });
            return Some((value, wake));
        }
        // Zero capacity (an array or list that is empty has no live parked
        // senders: this pops stale entries only).
        self.senders.take_value().map(|(value, wake)| (value, Some(wake)))
    }

    #[inline]
    fn try_send(&mut self, value: T) -> Result<Option<Wake>, TrySendError<T>> {
        if self.receivers_gone {
            return Err(TrySendError::Disconnected(value));
        }
        self.try_push(value).map_err(TrySendError::Full)
    }

    #[inline]
    fn try_recv(&mut self) -> Result<(T, Option<Wake>), TryRecvError> {
        match self.try_pop() {
            Some(taken) => Ok(taken),
            None if self.senders_gone => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Whether a receive would complete now (with a value or a
    /// disconnection), not counting the entries of `own`.
    fn recv_ready(&self, own: *const Waiter) -> bool {
        !self.handed_back.is_empty()
            || self.buffer.len() > 0
            || self.senders.has_waiter_besides(own)
            || self.senders_gone
    }

    /// Whether a send would complete now (with room, a receiver, or a
    /// disconnection), not counting the entries of `own`.
    fn send_ready(&self, own: *const Waiter) -> bool {
        self.receivers_gone || self.buffer.has_room() || self.receivers.has_waiter_besides(own)
    }

    fn queue(&mut self, side: Side) -> &mut WaitQueue<T> {
        match side {
            Side::Send => &mut self.senders,
            Side::Recv => &mut self.receivers,
        }
    }
}

/// Which side of a channel an operation is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Send,
    Recv,
}

/// A channel, shared by its `Sender`s and `Receiver`s (in an `Arc`).
pub(super) struct Chan<T> {
    inner: Lock<Inner<T>>,
    /// Live `Sender`s; the last one to go disconnects.
    senders: AtomicUsize,
    /// Live `Receiver`s; the last one to go disconnects.
    receivers: AtomicUsize,
    /// The buffer's capacity (`None`: unbounded), kept outside the lock.
    capacity: Option<usize>,
}

impl<T> Chan<T> {
    /// A channel with one sender and one receiver.
    pub(super) fn new(buffer: Buffer<T>) -> Chan<T> {
        let capacity = buffer.capacity();
        Chan {
            inner: Lock::new(Inner {
                buffer,
                handed_back: VecDeque::new(),
                receivers: WaitQueue::new(),
                senders: WaitQueue::new(),
                senders_gone: false,
                receivers_gone: false,
            }),
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(1),
            capacity,
        }
    }

    fn lock(&self) -> Guard<'_, Inner<T>> {
        self.inner.lock()
    }

    /// A new `Sender` or `Receiver` handle.
    pub(super) fn acquire(&self, side: Side) {
        let count = match side {
            Side::Send => &self.senders,
            Side::Recv => &self.receivers,
        };
        // Relaxed: the caller clones a live handle, so the count is > 0 and
        // cannot reach 0 meanwhile (as `Arc::clone`).
        let before = count.fetch_add(1, Ordering::Relaxed);
        assert!(before < usize::MAX / 2, "channel: too many handles");
    }

    /// A handle goes; the last of its side disconnects.
    pub(super) fn release(&self, side: Side) {
        let count = match side {
            Side::Send => &self.senders,
            Side::Recv => &self.receivers,
        };
        // AcqRel: the last one's disconnection comes after every other
        // handle's last use (as `Arc`'s drop). The flags themselves are
        // published by the channel lock.
        if count.fetch_sub(1, Ordering::AcqRel) == 1 {
            match side {
                Side::Send => self.disconnect_senders(),
                Side::Recv => self.disconnect_receivers(),
            }
        }
    }

    #[cold]
    fn disconnect_senders(&self) {
        let retry = DisconnectOnUnwind { chan: self, side: Side::Send };
        let mut inner = self.lock();
        retry.disarm();
        inner.senders_gone = true;
        let wakes = inner.receivers.select_all();
        drop(inner);
        drop(wakes);
    }

    #[cold]
    fn disconnect_receivers(&self) {
        let retry = DisconnectOnUnwind { chan: self, side: Side::Recv };
        let (wakes, discarded) = {
            let mut inner = self.lock();
            retry.disarm();
            inner.receivers_gone = true;
            let wakes = inner.senders.select_all();
            (wakes, (inner.buffer.take_all(), mem::take(&mut inner.handed_back)))
        };
        drop(wakes);
        // Outside the lock: a value's destructor may use this channel.
        drop(discarded);
    }

    pub(super) fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let mut inner = self.lock();
        let wake = inner.try_send(value)?;
        drop(inner);
        drop(wake);
        Ok(())
    }

    pub(super) fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut inner = self.lock();
        let (value, wake) = inner.try_recv()?;
        drop(inner);
        drop(wake);
        Ok(value)
    }

    /// Sends, waiting for room or a receiver until `deadline` (for ever if
    /// `None`).
    #[inline(always)]
    pub(super) fn send(&self, value: T, deadline: Option<Deadline>) -> Result<(), SendTimeoutError<T>> {
        let mut inner = self.lock();
        match inner.try_send(value) {
            Ok(wake) => {
                drop(inner);
                if let Some(wake) = wake {
                    wake.wake();
                }
                Ok(())
            }
            Err(TrySendError::Disconnected(value)) => {
                drop(inner);
                Err(SendTimeoutError::Disconnected(value))
            }
            Err(TrySendError::Full(value)) => self.send_blocking(inner, value, deadline),
        }
    }

    /// Receives, waiting for a value until `deadline` (for ever if `None`).
    /// `Err(true)`: disconnected; `Err(false)`: timed out.
    #[inline(always)]
    pub(super) fn recv(&self, deadline: Option<Deadline>) -> Result<T, bool> {
        let mut inner = self.lock();
        match inner.try_recv() {
            Ok((value, wake)) => {
                drop(inner);
                if let Some(wake) = wake {
                    wake.wake();
                }
                Ok(value)
            }
            Err(TryRecvError::Disconnected) => Err(true),
            Err(TryRecvError::Empty) => self.recv_blocking(inner, deadline),
        }
    }

    /// Parks a sender, offering `value`, until a receiver takes it, the
    /// receivers disconnect, or `deadline` passes.
    // Always inline, with `send` and `recv` (and `Waiter::wait_parked`):
    // the coroutine suspends inside this function, and every out-of-line
    // frame between the caller's `send` and that suspend costs two
    // mispredicted returns per hand-off (on its resume the coroutine
    // returns through frames the CPU's return-stack predictor never saw,
    // and its next suspend's `ret` pops an entry its own calls pushed: see
    // asm/switch_x86_64_sysv.S, "the return-stack predictor"). Inlined,
    // the suspend sits in `Sender::send` / `Receiver::recv` itself: the
    // ping-pong of `benches/channel.rs` went from 71 to 51 ns and from 418
    // to 333 instructions per hand-off with these and the inlined
    // `Task::home` and `push_runnable`.
    #[inline(always)]
    fn send_blocking(
        &self,
        mut inner: Guard<'_, Inner<T>>,
        value: T,
        deadline: Option<Deadline>,
    ) -> Result<(), SendTimeoutError<T>> {
        if deadline.is_some_and(|d| d.has_passed()) {
            drop(inner);
            return Err(SendTimeoutError::Timeout(value));
        }
        let waiter = Waiter::exclusive();
        let slot: Slot<T> = UnsafeCell::new(Some(value));
        // SAFETY: a Slot<T>; `waiter` and `slot` outlive the entry, which
        // leaves the queue under the lock: popped by a waker, or removed
        // below (timeout) or by the guard (unwind).
        unsafe { inner.senders.push(Entry::new(&waiter, 0, &slot)) };
        drop(inner);
        let guard = LeaveOnUnwind { chan: self, side: Side::Send, waiter: &waiter, slot: &slot };
        let mut selected = waiter.wait(deadline, ParkedOn::ChannelSend(self as *const Self as usize));
        if selected.is_none() {
            // Timed out: give up under the lock (an exclusive waiter; a
            // receiver may have taken the value meanwhile). (A cancellation
            // may unwind out of this lock: the guard, still armed, then
            // does the same.)
            let mut inner = self.lock();
            selected = waiter.abort();
            if selected.is_none() {
                inner.senders.remove(&waiter, 0);
            }
        }
        guard.disarm();
        // SAFETY: selected (the waker is done with the slot) or removed
        // under the lock: the slot is ours alone again.
        let left = slot.with_mut(|p| unsafe { (*p).take() });
        match (selected, left) {
            (Some(_), None) => Ok(()),
            (Some(_), Some(value)) => Err(SendTimeoutError::Disconnected(value)),
            (None, Some(value)) => Err(SendTimeoutError::Timeout(value)),
            (None, None) => unreachable!("channel: a sender that gave up lost its value"),
        }
    }

    /// Parks a receiver until a sender hands it a value, the senders
    /// disconnect, or `deadline` passes.
    // Always inline: see `send_blocking`.
    #[inline(always)]
    fn recv_blocking(&self, mut inner: Guard<'_, Inner<T>>, deadline: Option<Deadline>) -> Result<T, bool> {
        if deadline.is_some_and(|d| d.has_passed()) {
            return Err(false);
        }
        let waiter = Waiter::exclusive();
        let slot: Slot<T> = UnsafeCell::new(None);
        // SAFETY: as in `send_blocking`.
        unsafe { inner.receivers.push(Entry::new(&waiter, 0, &slot)) };
        drop(inner);
        let guard = LeaveOnUnwind { chan: self, side: Side::Recv, waiter: &waiter, slot: &slot };
        let mut selected = waiter.wait(deadline, ParkedOn::ChannelRecv(self as *const Self as usize));
        if selected.is_none() {
            // As in `send_blocking`: the guard stays armed over the lock.
            let mut inner = self.lock();
            selected = waiter.abort();
            if selected.is_none() {
                inner.receivers.remove(&waiter, 0);
                drop(inner);
                guard.disarm();
                return Err(false);
            }
        }
        guard.disarm();
        // SAFETY: as in `send_blocking`.
        slot.with_mut(|p| unsafe { (*p).take() }).ok_or(true)
    }

    /// Gives back the value in `slot`, which a receiver was handed but
    /// will not take (module docs, "Cancellation and unwinding"): to the
    /// oldest parked receiver, or to the front of the queue.
    ///
    /// The value leaves the slot only once the lock is held: if a
    /// cancellation unwinds the caller out of `lock`, the value is still in
    /// the slot for the caller's guard to give back.
    ///
    /// The slot must be its owner's alone: no entry of it is registered.
    #[cold]
    pub(super) fn hand_back(&self, slot: &Slot<T>) {
        let mut inner = self.lock();
        // SAFETY: the caller's promise: no waker can reach the slot.
        let Some(value) = slot.with_mut(|p| unsafe { (*p).take() }) else { return };
        match inner.receivers.deliver(value) {
            Ok(wake) => {
                drop(inner);
                drop(wake);
            }
            Err(value) => inner.handed_back.push_front(value),
        }
    }

    // ----- Select's side (select.rs) -----

    /// A Select's first pass: completes a receive now if it can, into
    /// `slot`; `true` if it completed (a value, or the disconnection: then
    /// `slot` stays empty).
    pub(super) fn select_try_recv(&self, slot: &Slot<T>) -> bool {
        let result = self.try_recv();
        match result {
            Ok(value) => {
                // SAFETY: the selecting thread's own slot, registered
                // nowhere during the first pass.
                slot.with_mut(|p| unsafe { *p = Some(value) });
                true
            }
            Err(TryRecvError::Disconnected) => true,
            Err(TryRecvError::Empty) => false,
        }
    }

    /// A Select's first pass: sends the value in `slot` now if it can;
    /// `true` if it completed (sent: `slot` is empty; disconnected: the
    /// value stays in `slot`).
    pub(super) fn select_try_send(&self, slot: &Slot<T>) -> bool {
        // SAFETY: as in `select_try_recv`.
        let Some(value) = slot.with_mut(|p| unsafe { (*p).take() }) else {
            return false; // sent by an earlier select: nothing to offer
        };
        match self.try_send(value) {
            Ok(()) => true,
            Err(TrySendError::Disconnected(value)) => {
                // SAFETY: as above.
                slot.with_mut(|p| unsafe { *p = Some(value) });
                true
            }
            Err(TrySendError::Full(value)) => {
                // SAFETY: as above.
                slot.with_mut(|p| unsafe { *p = Some(value) });
                false
            }
        }
    }

    /// A Select's second pass: registers `entry` on `side`, unless the
    /// operation could complete right now (not counting the Select's own
    /// entries): then `false`, and nothing is registered.
    ///
    /// # Safety
    ///
    /// As [`WaitQueue::push`]: `entry`'s slot is a `Slot<T>`, and its
    /// waiter and slot stay alive until [`select_unregister`] removed it
    /// or a waker selected it.
    ///
    /// [`select_unregister`]: Self::select_unregister
    pub(super) unsafe fn select_register(&self, side: Side, entry: Entry, own: *const Waiter) -> bool {
        let mut inner = self.lock();
        let ready = match side {
            Side::Send => inner.send_ready(own),
            Side::Recv => inner.recv_ready(own),
        };
        if !ready {
            // SAFETY: the caller's promise.
            unsafe { inner.queue(side).push(entry) };
        }
        !ready
    }

    /// Removes a Select's entry if it is still queued.
    pub(super) fn select_unregister(&self, side: Side, waiter: *const Waiter, case: usize) {
        self.lock().queue(side).remove(waiter, case);
    }

    // ----- Introspection -----

    pub(super) fn len(&self) -> usize {
        let inner = self.lock();
        inner.buffer.len() + inner.handed_back.len()
    }

    pub(super) fn capacity(&self) -> Option<usize> {
        self.capacity
    }

    pub(super) fn is_full(&self) -> bool {
        !self.lock().buffer.has_room()
    }
}

impl<T> Drop for Chan<T> {
    fn drop(&mut self) {
        // Under loom, see `LeaveOnUnwind`.
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        // Every handle is gone, so nobody waits.
        let inner = self.inner.get_mut();
        debug_assert!(inner.senders.is_empty() && inner.receivers.is_empty(), "channel: dropped with waiters");
    }
}

/// Cleans up after a parked plain `send`/`recv` whose coroutine is
/// unwound (cancelled, or its runtime shut down) while it waits, or while
/// it waits for the lock to leave after a timeout: module docs,
/// "Cancellation and unwinding". Every normal exit disarms it.
struct LeaveOnUnwind<'a, T> {
    chan: &'a Chan<T>,
    side: Side,
    waiter: &'a Waiter,
    slot: &'a Slot<T>,
}

impl<T> LeaveOnUnwind<'_, T> {
    fn disarm(self) {
        mem::forget(self);
    }
}

impl<T> Drop for LeaveOnUnwind<'_, T> {
    #[cold]
    fn drop(&mut self) {
        // Under loom a detected deadlock unwinds every model thread after
        // the execution is gone: touching its objects now would abort.
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        // An exclusive waiter: it gives up under the lock (waiter.rs).
        let mut inner = self.chan.lock();
        match self.waiter.abort() {
            None => inner.queue(self.side).remove(self.waiter, 0),
            // Selected: the waker popped the entry and is done with the slot.
            Some(_) => {
                drop(inner);
                if self.side == Side::Recv {
                    self.chan.hand_back(self.slot);
                }
                // A sender that was selected sent its value (or was told of
                // a disconnection: its value unwinds with its stack).
            }
        }
    }
}

/// Disconnects anyway when the last handle's drop is unwound out of the
/// lock it waits for (its coroutine was cancelled there): the count is
/// already zero, so nobody else would, and the other side would wait for
/// ever. During that unwind the lock waits without unwinding again.
struct DisconnectOnUnwind<'a, T> {
    chan: &'a Chan<T>,
    side: Side,
}

impl<T> DisconnectOnUnwind<'_, T> {
    fn disarm(self) {
        mem::forget(self);
    }
}

impl<T> Drop for DisconnectOnUnwind<'_, T> {
    #[cold]
    fn drop(&mut self) {
        // Under loom, see `LeaveOnUnwind`.
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        match self.side {
            Side::Send => self.chan.disconnect_senders(),
            Side::Recv => self.chan.disconnect_receivers(),
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! Disconnection racing a blocked receive.
    use super::super::bounded;
    use crate::loom::thread;

    /// The last sender drops while the receiver is about to park or
    /// parked: the receiver always wakes with `RecvError`, never sleeps.
    #[test]
    fn disconnect_races_a_blocked_recv() {
        loom::model(|| {
            let (tx, rx) = bounded::<u32>(1);
            let dropper = thread::spawn(move || drop(tx));
            assert!(rx.recv().is_err());
            dropper.join().unwrap();
        });
    }

    /// The last sender sends one value and drops while the receiver waits:
    /// the value comes first, then the disconnection.
    #[test]
    fn disconnect_after_send_drains_first() {
        loom::model(|| {
            let (tx, rx) = bounded::<u32>(1);
            let sender = thread::spawn(move || tx.send(1).unwrap());
            assert_eq!(rx.recv(), Ok(1));
            assert!(rx.recv().is_err());
            sender.join().unwrap();
        });
    }

    /// A timed send and a timed receive on a rendezvous channel (under
    /// loom a timed wait may give up at any moment): the waiter's abort
    /// races the other side's selection, and exactly one wins. Either the
    /// hand-off happened for both sides, or for neither: a sender is never
    /// told its value went when nobody took it, and the reverse.
    #[test]
    fn timeouts_race_a_rendezvous() {
        timed_rendezvous();
    }

    /// Negative control for the exclusive waiter's protocol (waiter.rs): a
    /// plain send or recv that gives up without the channel's lock races
    /// the waker's plain store, and loom finds the schedule where the
    /// waker overwrites ABORTED (both sides would think they won: a value
    /// lost, or one received whose send failed; the waker checks first).
    #[test]
    #[should_panic(expected = "gave up without its channel's lock")]
    fn negative_control_giving_up_unlocked_loses_the_race() {
        let _broken = crate::loom::negative_control::break_until_dropped(
            super::super::waiter::negative_control::GIVE_UP_UNLOCKED,
        );
        timed_rendezvous();
    }

    fn timed_rendezvous() {
        use std::time::Duration;
        loom::model(|| {
            let (tx, rx) = bounded::<u32>(0);
            let sender = thread::spawn(move || tx.send_timeout(9, Duration::from_secs(60)).is_ok());
            let received = rx.recv_timeout(Duration::from_secs(60));
            let sent = sender.join().unwrap();
            match received {
                Ok(value) => {
                    assert_eq!(value, 9);
                    assert!(sent, "the value was received but its send failed");
                }
                Err(_) => assert!(!sent, "the send succeeded but nobody received"),
            }
        });
    }

    /// The last receiver drops while a sender is parked on a full channel:
    /// the sender gets its value back.
    #[test]
    fn receivers_drop_while_a_sender_waits() {
        loom::model(|| {
            let (tx, rx) = bounded::<u32>(0);
            let sender = thread::spawn(move || tx.send(5));
            drop(rx);
            match sender.join().unwrap() {
                Err(error) => assert_eq!(error.into_inner(), 5),
                Ok(()) => panic!("a send completed with no receiver"),
            }
        });
    }
}
