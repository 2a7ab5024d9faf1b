//! `Select`: wait on several sends and receives at once; exactly one
//! completes.
//!
//! # Protocol
//!
//! A select runs in up to two passes, over its cases in a fresh random
//! order each time (Go's `pollorder`: when several are ready, each is
//! equally likely to be first, so no channel starves):
//!
//! 1. **Try**: each case in turn tries its operation without waiting
//!    (`try_recv` into the case's slot, `try_send` from it), each under
//!    its own channel's lock. The first that completes is the select's
//!    one operation; the rest are not touched. A case on a disconnected
//!    channel completes (with the disconnection).
//! 2. **Register and wait**: one [`Waiter`] for the whole select, and one
//!    entry per case in each channel's wait queue, registered one channel
//!    at a time. Registration re-checks readiness under that channel's
//!    lock, ignoring the select's own entries (a select with a send and a
//!    receive on one rendezvous channel cannot meet itself): if the case
//!    became ready since pass 1, the select gives up its wait
//!    ([`Waiter::abort`]), leaves every channel, and starts over at pass 1.
//!    Otherwise it sleeps until a waker selects one of its entries —
//!    moving the value and winning the waiter's one CAS (`waiter.rs`) —
//!    or until the deadline.
//!
//! ```text
//!  pass 2, per case, under that channel's lock
//!  ---------------------------------------------------------------------
//!  not ready             queue the entry; go on with the next case
//!  ready                 queue nothing; abort the waiter:
//!                          won    -> leave the channels, back to pass 1
//!                          lost   -> a waker already completed case k
//!  woken / timed out     leave every channel but the selected one (its
//!                        waker popped that entry); report k, or retry /
//!                        time out
//! ```
//!
//! **Exactly one operation completes**: in pass 1 the select stops at the
//! first; in pass 2 every completion is a waker's CAS on the one waiter
//! (WAITING -> case), so a second waker's CAS fails and that waker moves
//! its value back and serves the next waiter. **A select that loses never
//! consumes a value** (may#102): a waker moves a value into a case's slot
//! only to select that case, and takes it back if the CAS fails.
//!
//! Send cases carry their value from [`Select::send`] (Go evaluates a send
//! case's value up front too), so a receiver that selects one takes the
//! value at once, as from a parked `send`; a case whose value went is
//! spent and is never ready again. Received values wait in their case's
//! slot until [`SelectedOperation::recv`] takes them.
//!
//! Timer cases ([`after`](super::after), [`tick`](super::tick), ...) have
//! no waker until their delivery is taken. Pass 1 takes a due delivery
//! straight into the case's slot (`timer.rs`); pass 2 registers nothing
//! for a timer not due yet (a timer due by then counts as ready), and the
//! wait's deadline becomes the earlier of the select's own and the first
//! timer's due instant. A wait that ends at a timer's instant goes back to
//! pass 1, which takes the delivery (or, if a clone of the receiver took
//! it first, waits for the next); a channel case that completes first
//! wins as usual. A spent one-shot's case is a channel case on the
//! timer's back channel, where a message given back comes. A
//! [`never`](super::never) case is never ready and never registered.
//!
//! Cancellation: a select unwound while it waits gives up like a timeout;
//! if a waker won first and handed a value to a receive case, that value
//! goes back to its channel (`Chan::hand_back`), as does a received value
//! whose [`SelectedOperation`] is dropped without `recv`.

use super::chan::{Chan, Side};
use super::error::{RecvError, SelectTimeoutError, SendError, TrySelectError};
use super::timer::Taken;
use super::waiter::{Entry, Slot, Waiter};
use super::{Flavour, Receiver, Sender, deadline_of};
use crate::loom::UnsafeCell;
use crate::park::ParkedOn;
use crate::sys::futex::Deadline;
use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Waits on several channel operations at once; exactly one completes.
///
/// Add receive cases with [`recv`](Self::recv) and send cases with
/// [`send`](Self::send) (each returns the case's index), then
/// [`select`](Self::select) (waits), [`try_select`](Self::try_select)
/// (never waits: a default case) or
/// [`select_timeout`](Self::select_timeout). The returned
/// [`SelectedOperation`] says which case completed and hands over its
/// result. When several cases are ready, one is chosen at random.
///
/// Unlike crossbeam-channel's, a send case takes its value when it is
/// added (as in Go): the operation is complete when the select returns,
/// so a value is handed over directly to a waiting receiver, and a
/// select that loses a race has taken nothing. An unsent value is dropped
/// with the `Select`.
///
/// The [`select!`](crate::select) macro is a shorter way to write this.
///
/// ```
/// use std::time::Duration;
/// use weft::sync::channel::{bounded, unbounded, Select};
///
/// let (jobs_tx, jobs_rx) = unbounded::<u32>();
/// let (results_tx, results_rx) = bounded::<u32>(1);
/// jobs_tx.send(20).unwrap();
///
/// let mut select = Select::new();
/// let job = select.recv(&jobs_rx);
/// let result = select.send(&results_tx, 99);
/// let operation = select.select_timeout(Duration::from_secs(1)).unwrap();
/// match operation.index() {
///     i if i == job => assert_eq!(operation.recv(&jobs_rx), Ok(20)),
///     i if i == result => {
///         operation.send(&results_tx).unwrap();
///         assert_eq!(results_rx.recv(), Ok(99));
///     }
///     _ => unreachable!(),
/// }
/// ```
pub struct Select<'a> {
    cases: Vec<Box<dyn Case + 'a>>,
    /// The order of the current passes (a random permutation).
    order: Vec<usize>,
}

impl<'a> Select<'a> {
    /// A select with no cases (which waits for ever, or until its timeout).
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::sync::channel::Select;
    ///
    /// let mut select = Select::new();
    /// assert!(select.select_timeout(Duration::from_millis(1)).is_err());
    /// ```
    pub fn new() -> Select<'a> {
        Select { cases: Vec::new(), order: Vec::new() }
    }

    /// Adds a case that receives from `receiver`; returns its index.
    ///
    /// ```
    /// use weft::sync::channel::{unbounded, Select};
    ///
    /// let (tx, rx) = unbounded();
    /// tx.send("ready").unwrap();
    /// let mut select = Select::new();
    /// let index = select.recv(&rx);
    /// let operation = select.select();
    /// assert_eq!(operation.index(), index);
    /// assert_eq!(operation.recv(&rx), Ok("ready"));
    /// ```
    pub fn recv<T>(&mut self, receiver: &'a Receiver<T>) -> usize {
        self.cases.push(Box::new(RecvCase::new(receiver)));
        self.cases.len() - 1
    }

    /// Adds a case that sends `msg` through `sender`; returns its index.
    /// The case owns `msg` until a select sends it; an unsent value is
    /// dropped with the `Select`.
    ///
    /// ```
    /// use weft::sync::channel::{bounded, Select};
    ///
    /// let (tx, rx) = bounded(1);
    /// let mut select = Select::new();
    /// let index = select.send(&tx, 5);
    /// let operation = select.select();
    /// assert_eq!(operation.index(), index);
    /// operation.send(&tx).unwrap();
    /// assert_eq!(rx.recv(), Ok(5));
    /// ```
    pub fn send<T>(&mut self, sender: &'a Sender<T>, msg: T) -> usize {
        self.cases.push(Box::new(SendCase::new(sender, msg)));
        self.cases.len() - 1
    }

    /// Waits until one case completes, and returns it.
    ///
    /// With no case that can ever complete (none, or only spent send
    /// cases, [`never`](super::never)s and spent [`after`](super::after)s
    /// and [`at`](super::at)s), it waits for ever (a coroutine can still
    /// be cancelled).
    ///
    /// ```
    /// use weft::sync::channel::{bounded, Select};
    ///
    /// let (tx1, rx1) = bounded::<&str>(0);
    /// let (_tx2, rx2) = bounded::<&str>(0);
    /// let sender = weft::spawn(move || tx1.send("one").unwrap());
    /// let mut select = Select::new();
    /// let first = select.recv(&rx1);
    /// select.recv(&rx2);
    /// let operation = select.select();
    /// assert_eq!(operation.index(), first);
    /// assert_eq!(operation.recv(&rx1), Ok("one"));
    /// sender.join().unwrap();
    /// ```
    pub fn select(&mut self) -> SelectedOperation<'_, 'a> {
        let index = self.run(Until::Forever).expect("a select without deadline returned nothing");
        SelectedOperation { select: self, index, done: false }
    }

    /// Completes a case that is ready now, or fails without waiting (a
    /// `default` case).
    ///
    /// ```
    /// use weft::sync::channel::{unbounded, Select};
    ///
    /// let (tx, rx) = unbounded::<u8>();
    /// let mut select = Select::new();
    /// select.recv(&rx);
    /// assert!(select.try_select().is_err());
    /// tx.send(1).unwrap();
    /// assert_eq!(select.try_select().unwrap().recv(&rx), Ok(1));
    /// ```
    pub fn try_select(&mut self) -> Result<SelectedOperation<'_, 'a>, TrySelectError> {
        match self.run(Until::Now) {
            Some(index) => Ok(SelectedOperation { select: self, index, done: false }),
            None => Err(TrySelectError),
        }
    }

    /// Waits at most `timeout` for a case to complete. Never gives up
    /// before `timeout` has passed.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::channel::{bounded, Select};
    ///
    /// let (_tx, rx) = bounded::<u8>(1);
    /// let mut select = Select::new();
    /// select.recv(&rx);
    /// let start = Instant::now();
    /// assert!(select.select_timeout(Duration::from_millis(20)).is_err());
    /// assert!(start.elapsed() >= Duration::from_millis(20));
    /// ```
    pub fn select_timeout(&mut self, timeout: Duration) -> Result<SelectedOperation<'_, 'a>, SelectTimeoutError> {
        self.select_until(Deadline::after(timeout))
    }

    /// Waits until `deadline` at most for a case to complete.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::channel::{unbounded, Select};
    ///
    /// let (tx, rx) = unbounded();
    /// tx.send(1).unwrap();
    /// let mut select = Select::new();
    /// select.recv(&rx);
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// assert_eq!(select.select_deadline(deadline).unwrap().recv(&rx), Ok(1));
    /// ```
    pub fn select_deadline(&mut self, deadline: Instant) -> Result<SelectedOperation<'_, 'a>, SelectTimeoutError> {
        self.select_until(deadline_of(deadline))
    }

    fn select_until(&mut self, deadline: Deadline) -> Result<SelectedOperation<'_, 'a>, SelectTimeoutError> {
        match self.run(Until::Deadline(deadline)) {
            Some(index) => Ok(SelectedOperation { select: self, index, done: false }),
            None => Err(SelectTimeoutError),
        }
    }

    /// The protocol (module docs) over the boxed cases.
    fn run(&mut self, until: Until) -> Option<usize> {
        self.order.clear();
        self.order.extend(0..self.cases.len());
        run_cases(&self.cases, &mut self.order, until)
    }
}

/// The protocol (module docs) over `cases`, in a random order that it
/// writes into `order` (as long as `cases`): the index of the case that
/// completed, or `None` when `until` ran out. Every case has left every
/// channel when this returns (or unwinds).
fn run_cases<C: AsCase>(cases: &[C], order: &mut [usize], until: Until) -> Option<usize> {
    debug_assert_eq!(cases.len(), order.len());
    // A received value whose operation was forgotten goes back first.
    for case in cases {
        case.case().hand_back();
    }
    for (i, slot) in order.iter_mut().enumerate() {
        *slot = i;
    }
    shuffle(order);
    let order = &*order;
    loop {
        // Pass 1: try.
        for &i in order {
            if cases[i].case().try_now() {
                return Some(i);
            }
        }
        let deadline = match until {
            Until::Now => return None,
            Until::Forever => None,
            Until::Deadline(deadline) if deadline.has_passed() => return None,
            Until::Deadline(deadline) => Some(deadline),
        };
        // Pass 2: register and wait.
        let waiter = Waiter::new();
        let registration = Registration { cases, order, registered: Cell::new(0), waiter: &waiter };
        let mut ready = false;
        // The first timer case's due instant: the wait also ends then
        // (nobody wakes a select for a timer), and pass 1 takes it.
        let mut timer: Option<Instant> = None;
        for (n, &i) in order.iter().enumerate() {
            // SAFETY: the case (its slot) outlives this function, whose
            // caller lends it, and the registration leaves every channel
            // before this function returns or unwinds past it.
            match unsafe { cases[i].case().register(&waiter, i) } {
                Registered::Waiting => registration.registered.set(n + 1),
                Registered::Until(due) => {
                    registration.registered.set(n + 1);
                    timer = Some(timer.map_or(due, |first| first.min(due)));
                }
                Registered::Ready => {
                    ready = true;
                    break;
                }
            }
        }
        let wait_until = match (deadline, timer.map(deadline_of)) {
            (Some(deadline), Some(timer)) => Some(deadline.min(timer)),
            (deadline, timer) => deadline.or(timer),
        };
        let selected = if ready { waiter.abort() } else { waiter.wait(wait_until, ParkedOn::Select(cases.len())) };
        registration.leave(selected);
        match selected {
            Some(i) => return Some(i),
            // A case became ready, or a timer may be due (or the select's
            // own deadline passed: pass 1 once more, then the check above).
            None if ready || timer.is_some() => continue,
            None => return None,
        }
    }
}

/// A case as `run_cases` takes it: a `Select`'s boxed case, or a
/// `select!` case on the caller's stack.
trait AsCase {
    fn case(&self) -> &dyn Case;
}

impl<'a> AsCase for Box<dyn Case + 'a> {
    #[inline]
    fn case(&self) -> &dyn Case {
        &**self
    }
}

impl AsCase for CaseRef<'_> {
    #[inline]
    fn case(&self) -> &dyn Case {
        self.0
    }
}

impl Default for Select<'_> {
    /// [`Select::new`].
    fn default() -> Self {
        Select::new()
    }
}

impl fmt::Debug for Select<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Select").field("cases", &self.cases.len()).finish_non_exhaustive()
    }
}

/// How long a select may wait.
#[derive(Clone, Copy)]
enum Until {
    Now,
    Forever,
    Deadline(Deadline),
}

/// The case that completed in a [`Select`], with its result: take it with
/// [`recv`](Self::recv) or [`send`](Self::send), passing the same
/// receiver or sender the case was added with.
///
/// The operation itself has already happened. Dropping a completed
/// receive without [`recv`](Self::recv) gives the value back to its
/// channel, so it is not lost. (A timer's message goes back the same way;
/// a tick given back after a later tick was taken is dropped, as a missed
/// tick.)
///
/// ```
/// use weft::sync::channel::{unbounded, Select};
///
/// let (tx, rx) = unbounded();
/// tx.send(7).unwrap();
/// let mut select = Select::new();
/// select.recv(&rx);
/// drop(select.select()); // not taken: back in the channel
/// assert_eq!(rx.try_recv(), Ok(7));
/// ```
pub struct SelectedOperation<'s, 'a> {
    select: &'s mut Select<'a>,
    index: usize,
    /// Its result was taken.
    done: bool,
}

impl SelectedOperation<'_, '_> {
    /// The index of the case that completed (as returned when it was
    /// added).
    ///
    /// ```
    /// use weft::sync::channel::{bounded, Select};
    ///
    /// let (tx, _rx) = bounded::<u8>(1);
    /// let mut select = Select::new();
    /// let index = select.send(&tx, 1);
    /// assert_eq!(select.select().index(), index);
    /// ```
    pub fn index(&self) -> usize {
        self.index
    }

    /// The result of the completed receive: the value, or [`RecvError`]
    /// if the channel was empty and disconnected.
    ///
    /// # Panics
    ///
    /// If the completed case is not a receive from `receiver`'s channel.
    ///
    /// ```
    /// use weft::sync::channel::{unbounded, RecvError, Select};
    ///
    /// let (tx, rx) = unbounded::<u8>();
    /// drop(tx);
    /// let mut select = Select::new();
    /// select.recv(&rx);
    /// assert_eq!(select.select().recv(&rx), Err(RecvError));
    /// ```
    pub fn recv<T>(mut self, receiver: &Receiver<T>) -> Result<T, RecvError> {
        let slot = self.slot_of(Side::Recv, receiver.id());
        self.done = true;
        // SAFETY: `slot_of` checked it is a Slot<T> of a case of ours (the
        // case was added with this very channel); the case completed, so
        // no waker touches it any more.
        unsafe { (*slot).with_mut(|p| (*p).take()) }.ok_or(RecvError)
    }

    /// The result of the completed send: `Ok` once the value went, or
    /// [`SendError`] with the value if every receiver was gone.
    ///
    /// # Panics
    ///
    /// If the completed case is not a send through `sender`'s channel.
    ///
    /// ```
    /// use weft::sync::channel::{bounded, Select};
    ///
    /// let (tx, rx) = bounded::<u8>(1);
    /// drop(rx);
    /// let mut select = Select::new();
    /// select.send(&tx, 3);
    /// assert_eq!(select.select().send(&tx).unwrap_err().into_inner(), 3);
    /// ```
    pub fn send<T>(mut self, sender: &Sender<T>) -> Result<(), SendError<T>> {
        let slot = self.slot_of(Side::Send, Arc::as_ptr(&sender.chan) as *const ());
        self.done = true;
        // SAFETY: as in `recv`.
        match unsafe { (*slot).with_mut(|p| (*p).take()) } {
            None => Ok(()),
            Some(value) => Err(SendError(value)),
        }
    }

    /// The completed case's slot, typed, after checking that it is a
    /// `side` case on the channel (or timer) at `id`.
    fn slot_of<T>(&self, side: Side, id: *const ()) -> *const Slot<T> {
        let case = &self.select.cases[self.index];
        let what = match side {
            Side::Send => "send",
            Side::Recv => "recv",
        };
        assert!(
            case.side() == side && !id.is_null() && case.chan_id() == id,
            "SelectedOperation::{what}: case {} is not a {what} on this channel",
            self.index
        );
        // The case is on this very channel (same address, both alive), so
        // it was added as a `RecvCase<T>`/`SendCase<T>` of this `T`, whose
        // slot is a `Slot<T>`. (A timer's address is a `Timer`'s, which
        // only `Receiver<Instant>`s have: see `Flavour::Timer`.)
        case.slot() as *const Slot<T>
    }
}

impl Drop for SelectedOperation<'_, '_> {
    fn drop(&mut self) {
        if !self.done {
            // A received value nobody took goes back to its channel.
            self.select.cases[self.index].hand_back();
        }
    }
}

impl fmt::Debug for SelectedOperation<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelectedOperation").field("index", &self.index).finish_non_exhaustive()
    }
}

/// One case of a select, type-erased: the channel and the value slot.
trait Case {
    fn side(&self) -> Side;
    /// The channel's address (its identity).
    fn chan_id(&self) -> *const ();
    /// The case's `Slot<T>`.
    fn slot(&self) -> *const ();
    /// Pass 1: completes the operation now if it can.
    fn try_now(&self) -> bool;
    /// Pass 2: registers case `case` of `waiter`, or says that the
    /// operation could complete now (then nothing is registered), or, for
    /// a timer, when it will be due (nothing to register).
    ///
    /// # Safety
    ///
    /// `self` (its slot) and `waiter` stay alive until [`unregister`] or
    /// a waker's selection took the entry out.
    ///
    /// [`unregister`]: Case::unregister
    unsafe fn register(&self, waiter: &Waiter, case: usize) -> Registered;
    fn unregister(&self, waiter: &Waiter, case: usize);
    /// Gives a received value that nobody took back to the channel.
    fn hand_back(&self);
}

/// What pass 2 did with a case ([`Case::register`]).
enum Registered {
    /// Its entry waits in its channel's queue (or it can never complete:
    /// a spent send, `never()`).
    Waiting,
    /// It could complete now: nothing was registered.
    Ready,
    /// A timer's case, due at this instant: nothing was registered, and
    /// the wait ends then.
    Until(Instant),
}

/// A receive case: `Select`'s (boxed), or `select!`'s (on the caller's
/// stack, `__private`).
pub struct RecvCase<'a, T> {
    /// A channel's receiver, or a timer's, or `never()`'s: a case looks at
    /// its flavour when it acts, so making one is a store (a case that
    /// matched the flavour when made cost a `select!` over four channels
    /// 28 instructions more per select, callgrind).
    receiver: &'a Receiver<T>,
    slot: Slot<T>,
    /// A ticker's delivery that the case took into `slot` (it lands there
    /// at once), to give back if it goes unreceived.
    taken: Cell<Option<Taken>>,
}

/// A send case, with the value it offers until it is sent.
pub struct SendCase<'a, T> {
    chan: &'a Chan<T>,
    slot: Slot<T>,
}

/// A case lent to [`select_cases`] (`select!`'s cases live on its caller's
/// stack: no allocation per select). It holds the case's exclusive borrow
/// (`as_case` takes `&mut`), so no other select can use the case while
/// this one may fill its slot.
pub struct CaseRef<'c>(&'c dyn Case);

impl<'a, T> RecvCase<'a, T> {
    /// A case receiving from `receiver`.
    pub fn new(receiver: &'a Receiver<T>) -> RecvCase<'a, T> {
        RecvCase { receiver, slot: UnsafeCell::new(None), taken: Cell::new(None) }
    }

    /// Lends the case to [`select_cases`]. Exclusively (`&mut`): a case
    /// is one value slot, which two selects at once (two coroutines
    /// sharing the case through an `Rc`) would both fill, losing a value
    /// (and racing, with a sender on another thread). So a shared case
    /// cannot be lent:
    ///
    /// ```compile_fail
    /// use std::rc::Rc;
    /// use weft::sync::channel::{__private::RecvCase, unbounded};
    /// let (_tx, rx) = unbounded::<u32>();
    /// let case = Rc::new(RecvCase::new(&rx));
    /// let _lent = case.as_case(); // error: cannot borrow data in an `Rc` as mutable
    /// ```
    ///
    /// nor one case twice to one select:
    ///
    /// ```compile_fail
    /// use weft::sync::channel::{__private::{RecvCase, SelectMode, select_cases}, unbounded};
    /// let (_tx, rx) = unbounded::<u32>();
    /// let mut case = RecvCase::new(&rx);
    /// select_cases(&[case.as_case(), case.as_case()], SelectMode::Try); // error: two mutable borrows
    /// ```
    pub fn as_case(&mut self) -> CaseRef<'_> {
        CaseRef(self)
    }

    /// The result of this case, once [`select_cases`] returned its index:
    /// the value, or [`RecvError`] (the channel was empty and
    /// disconnected).
    pub fn take(&mut self) -> Result<T, RecvError> {
        // SAFETY: no entry of this case is registered anywhere: cases are
        // registered only inside `select_cases`, which leaves every channel
        // before it returns, and `&mut self` says no select holds it.
        self.slot.with_mut(|p| unsafe { (*p).take() }).ok_or(RecvError)
    }
}

impl<'a, T> SendCase<'a, T> {
    /// A case sending `msg` through `sender`.
    pub fn new(sender: &'a Sender<T>, msg: T) -> SendCase<'a, T> {
        SendCase { chan: &sender.chan, slot: UnsafeCell::new(Some(msg)) }
    }

    /// Lends the case to [`select_cases`], exclusively (as
    /// [`RecvCase::as_case`]).
    pub fn as_case(&mut self) -> CaseRef<'_> {
        CaseRef(self)
    }

    /// The result of this case, once [`select_cases`] returned its index:
    /// `Ok` once the value went, or [`SendError`] with the value if every
    /// receiver was gone.
    pub fn take(&mut self) -> Result<(), SendError<T>> {
        // SAFETY: as in `RecvCase::take`.
        match self.slot.with_mut(|p| unsafe { (*p).take() }) {
            None => Ok(()),
            Some(value) => Err(SendError(value)),
        }
    }
}

/// How long [`select_cases`] may wait.
#[derive(Debug, Clone, Copy)]
pub enum SelectMode {
    /// Until a case completes.
    Wait,
    /// Not at all (a `default` case).
    Try,
    /// At most this long.
    Timeout(Duration),
}

/// `select!`'s select over `cases` (at most 16): the index of the case that
/// completed, or `None` if `mode` ran out first.
///
/// # Panics
///
/// If there are more than 16 cases: `select!` makes at most 16. (No case
/// can appear twice, in one select or in two at once: each [`CaseRef`]
/// holds its case's exclusive borrow.)
pub fn select_cases(cases: &[CaseRef<'_>], mode: SelectMode) -> Option<usize> {
    assert!(cases.len() <= 16, "select_cases: {} cases, at most 16", cases.len());
    let mut order = [0; 16];
    let order = &mut order[..cases.len()];
    let until = match mode {
        SelectMode::Wait => Until::Forever,
        SelectMode::Try => Until::Now,
        SelectMode::Timeout(timeout) => Until::Deadline(Deadline::after(timeout)),
    };
    run_cases(cases, order, until)
}

impl<T> Case for RecvCase<'_, T> {
    fn side(&self) -> Side {
        Side::Recv
    }

    fn chan_id(&self) -> *const () {
        self.receiver.id()
    }

    fn slot(&self) -> *const () {
        &self.slot as *const Slot<T> as *const ()
    }

    // A channel's case is the common one: the others are out of line
    // (`*_timer`), so that their code does not weigh on it (inline, they
    // cost a `select!` over four channels 21 instructions more per select).
    fn try_now(&self) -> bool {
        match &self.receiver.flavour {
            Flavour::Chan(chan) => chan.select_try_recv(&self.slot),
            _ => self.try_now_timer(),
        }
    }

    unsafe fn register(&self, waiter: &Waiter, case: usize) -> Registered {
        match &self.receiver.flavour {
            Flavour::Chan(chan) => {
                // SAFETY: the caller's promise covers the slot and the waiter.
                let queued = unsafe { chan.select_register(Side::Recv, Entry::new(waiter, case, &self.slot), waiter) };
                if queued { Registered::Waiting } else { Registered::Ready }
            }
            // SAFETY: the caller's promise, passed on.
            _ => unsafe { self.register_timer(waiter, case) },
        }
    }

    fn unregister(&self, waiter: &Waiter, case: usize) {
        match &self.receiver.flavour {
            Flavour::Chan(chan) => chan.select_unregister(Side::Recv, waiter, case),
            _ => self.unregister_timer(waiter, case),
        }
    }

    fn hand_back(&self) {
        // SAFETY: called by the select's owner when no entry of the case
        // is registered (before the passes, after them, or from a guard
        // that left every channel): the slot is its own.
        if self.slot.with(|p| unsafe { (*p).is_none() }) {
            return;
        }
        match &self.receiver.flavour {
            Flavour::Chan(chan) => chan.hand_back(&self.slot),
            _ => self.hand_back_timer(),
        }
    }
}

impl<T> RecvCase<'_, T> {
    /// A timer's case's slot, as the `Slot<Instant>` it is: a timer's
    /// back channel is a `Chan<Instant>` (not a `Chan<T>`, see `timer.rs`),
    /// and the case registers its slot there.
    fn instant_slot(&self) -> &Slot<Instant> {
        debug_assert!(matches!(self.receiver.flavour, Flavour::Timer { .. }), "not a timer's case");
        // SAFETY: only `Receiver<Instant>`s have timers (`Flavour::Timer`
        // is made by `Receiver::of_timer` alone, and the enum is private),
        // so for a timer's case `T` is `Instant`: the same type.
        unsafe { &*(&self.slot as *const Slot<T> as *const Slot<Instant>) }
    }

    /// `try_now` of a timer's or `never`'s case: takes a due delivery
    /// into the slot, or a spent one-shot's given-back message from its
    /// back channel.
    #[cold]
    #[inline(never)]
    fn try_now_timer(&self) -> bool {
        let Flavour::Timer { timer, make } = &self.receiver.flavour else {
            return false; // never
        };
        match timer.try_take() {
            Ok(delivery) => {
                // SAFETY: the case is registered nowhere during pass 1 (no
                // wakers): its slot is the select's owner's, which is here.
                self.slot.with_mut(|p| unsafe { *p = Some(make(delivery.due)) });
                self.taken.set(Some(delivery));
                true
            }
            // Spent: a one-shot's message may have come back. (Never
            // disconnected: `true` means a message.)
            Err(None) => timer.back().is_some_and(|back| back.select_try_recv(self.instant_slot())),
            Err(Some(_)) => false,
        }
    }

    /// `register` of a timer's or `never`'s case: a timer not due yet
    /// registers nothing (the select's wait ends when it is due); a due one
    /// is ready; a spent one-shot's case registers with its back channel,
    /// as a channel's case, for a message given back.
    ///
    /// # Safety
    ///
    /// As [`Case::register`].
    #[cold]
    #[inline(never)]
    unsafe fn register_timer(&self, waiter: &Waiter, case: usize) -> Registered {
        let Flavour::Timer { timer, .. } = &self.receiver.flavour else {
            return Registered::Waiting; // never
        };
        match (timer.due(), timer.back()) {
            (Some(due), _) if Instant::now() < due => Registered::Until(due),
            (Some(_), _) => Registered::Ready,
            (None, Some(back)) => {
                // SAFETY: the caller's promise covers the slot and the waiter.
                let queued =
                    unsafe { back.select_register(Side::Recv, Entry::new(waiter, case, self.instant_slot()), waiter) };
                if queued { Registered::Waiting } else { Registered::Ready }
            }
            (None, None) => Registered::Waiting, // a ticker whose next tick never comes
        }
    }

    /// `unregister` of a timer's or `never`'s case: only a spent
    /// one-shot's case can have been registered (with its back channel;
    /// spent it stays, and removing an entry that is not there does
    /// nothing).
    #[cold]
    #[inline(never)]
    fn unregister_timer(&self, waiter: &Waiter, case: usize) {
        if let Flavour::Timer { timer, .. } = &self.receiver.flavour
            && let Some(back) = timer.back()
            && timer.due().is_none()
        {
            back.select_unregister(Side::Recv, waiter, case);
        }
    }

    /// `hand_back` of a timer's case: a message it holds goes back, a
    /// one-shot's to its back channel (to a receive waiting there, or the
    /// next), a ticker's delivery to its schedule.
    #[cold]
    #[inline(never)]
    fn hand_back_timer(&self) {
        let Flavour::Timer { timer, .. } = &self.receiver.flavour else { return };
        match timer.back() {
            Some(back) => back.hand_back(self.instant_slot()),
            None => {
                // SAFETY: as in `hand_back`: the select's owner, no entry
                // registered; the message goes, its delivery back.
                drop(self.slot.with_mut(|p| unsafe { (*p).take() }));
                if let Some(delivery) = self.taken.take() {
                    timer.hand_back(delivery);
                }
            }
        }
    }
}

impl<T> Drop for RecvCase<'_, T> {
    fn drop(&mut self) {
        // Under loom, see `LeaveOnUnwind` in chan.rs.
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        // A value left by a forgotten `SelectedOperation`.
        self.hand_back();
    }
}

impl<T> Case for SendCase<'_, T> {
    fn side(&self) -> Side {
        Side::Send
    }

    fn chan_id(&self) -> *const () {
        self.chan as *const Chan<T> as *const ()
    }

    fn slot(&self) -> *const () {
        &self.slot as *const Slot<T> as *const ()
    }

    fn try_now(&self) -> bool {
        self.chan.select_try_send(&self.slot)
    }

    unsafe fn register(&self, waiter: &Waiter, case: usize) -> Registered {
        // SAFETY: the owner's own slot, with no entry registered yet.
        if self.slot.with(|p| unsafe { (*p).is_none() }) {
            return Registered::Waiting; // spent: nothing to offer, never ready
        }
        // SAFETY: the caller's promise covers the slot and the waiter.
        let queued = unsafe { self.chan.select_register(Side::Send, Entry::new(waiter, case, &self.slot), waiter) };
        if queued { Registered::Waiting } else { Registered::Ready }
    }

    fn unregister(&self, waiter: &Waiter, case: usize) {
        self.chan.select_unregister(Side::Send, waiter, case);
    }

    fn hand_back(&self) {
        // An unsent value stays with the case: nothing was received.
    }
}

/// Leaves the channels a select registered with, however its wait ends:
/// normally through [`leave`](Self::leave), or when the waiting coroutine
/// is unwound (cancelled, or its runtime shut down), by `Drop`, which also
/// gives back a value that was handed to a receive case.
struct Registration<'s, C: AsCase> {
    cases: &'s [C],
    order: &'s [usize],
    /// How many cases of `order` were registered.
    registered: Cell<usize>,
    waiter: &'s Waiter,
}

impl<C: AsCase> Registration<'_, C> {
    /// Unregisters every case but `selected` (whose waker popped it).
    fn unregister_all_but(&self, selected: Option<usize>) {
        for &i in &self.order[..self.registered.get()] {
            if Some(i) != selected {
                self.cases[i].case().unregister(self.waiter, i);
            }
        }
    }

    /// The normal end of a wait. A cancellation that unwinds out of a
    /// channel's lock in here leaves the rest to `Drop`, which asks the
    /// waiter again (the same answer) and finishes.
    fn leave(self, selected: Option<usize>) {
        self.unregister_all_but(selected);
        std::mem::forget(self);
    }
}

impl<C: AsCase> Drop for Registration<'_, C> {
    #[cold]
    fn drop(&mut self) {
        // Under loom, see `LeaveOnUnwind` in chan.rs.
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        let selected = self.waiter.abort();
        self.unregister_all_but(selected);
        if let Some(i) = selected {
            self.cases[i].case().hand_back();
        }
    }
}

/// Shuffles `order` (Fisher-Yates) with a per-thread xorshift generator,
/// seeded from std's per-process random hash keys. Under loom the order
/// stays as it is: a model must replay the same program every execution.
fn shuffle(order: &mut [usize]) {
    if cfg!(loom) || order.len() < 2 {
        return;
    }
    std::thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_usize(&hasher as *const _ as usize);
            hasher.finish() | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        for i in (1..order.len()).rev() {
            // xorshift64*: good enough to shuffle a handful of cases.
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
            let j = (((r >> 32) * (i as u64 + 1)) >> 32) as usize;
            order.swap(i, j);
        }
        state.set(x);
    });
}

/// Waits on several channel operations at once, like Go's `select`:
/// exactly one completes, chosen at random among those that are ready.
///
/// ```text
/// select! {
///     recv(receiver) -> result => body,        // result: Result<T, RecvError>
///     send(sender, value) -> result => body,   // result: Result<(), SendError<T>>
///     default => body,                         // optional: nothing ready now
///     default(timeout) => body,                // or: nothing ready in time
/// }
/// ```
///
/// Each `result` is a pattern (`_` ignores it). A send's value is
/// evaluated before the select, as in Go, and dropped if another case is
/// chosen. Bodies are blocks or expressions (separate an expression body
/// from the next case with a comma); they may `break`, `continue` or
/// `return` out of the surrounding code. At most 16 operations; the
/// default case, if any, comes last. A receiver may be made in its case
/// (`recv(after(timeout)) -> _ => ...`, Go's `case <-time.After(d)`): it
/// lives until the select ends. Built on [`Select`](crate::sync::channel::Select).
///
/// ```
/// use std::time::Duration;
/// use weft::select;
/// use weft::sync::channel::{bounded, unbounded};
///
/// let (ticks_tx, ticks) = unbounded::<u32>();
/// let (_quit_tx, quit) = bounded::<()>(0);
/// let (out, results) = bounded::<u32>(8);
/// ticks_tx.send(1).unwrap();
/// ticks_tx.send(2).unwrap();
///
/// let mut total = 0;
/// loop {
///     select! {
///         recv(ticks) -> tick => total += tick.unwrap(),
///         recv(quit) -> _ => break,
///         default(Duration::from_millis(10)) => break,
///     }
/// }
/// assert_eq!(total, 3);
///
/// select! {
///     send(out, total) -> sent => sent.unwrap(),
///     default => unreachable!("there is room"),
/// }
/// assert_eq!(results.recv(), Ok(3));
/// ```
#[macro_export]
macro_rules! select {
    ($($cases:tt)*) => {
        $crate::__select_parse!(
            [] [(__weft_case0 0) (__weft_case1 1) (__weft_case2 2) (__weft_case3 3) (__weft_case4 4)
                (__weft_case5 5) (__weft_case6 6) (__weft_case7 7) (__weft_case8 8) (__weft_case9 9)
                (__weft_case10 10) (__weft_case11 11) (__weft_case12 12) (__weft_case13 13)
                (__weft_case14 14) (__weft_case15 15)]
            $($cases)*
        )
    };
}

/// `select!`'s parser: normalizes each case to `(kind name index (args)
/// pattern {body})`, taking a fresh name and index for each operation.
#[doc(hidden)]
#[macro_export]
macro_rules! __select_parse {
    // An operation whose body is a block, with or without a comma.
    ([$($done:tt)*] [($name:ident $index:tt) $($names:tt)*]
     $kind:ident ($($args:tt)*) -> $res:pat => { $($body:tt)* } , $($rest:tt)*) => {
        $crate::__select_parse!([$($done)* ($kind $name $index ($($args)*) $res => {{ $($body)* }})] [$($names)*] $($rest)*)
    };
    ([$($done:tt)*] [($name:ident $index:tt) $($names:tt)*]
     $kind:ident ($($args:tt)*) -> $res:pat => { $($body:tt)* } $($rest:tt)*) => {
        $crate::__select_parse!([$($done)* ($kind $name $index ($($args)*) $res => {{ $($body)* }})] [$($names)*] $($rest)*)
    };
    // An operation whose body is an expression: a comma, or the end.
    ([$($done:tt)*] [($name:ident $index:tt) $($names:tt)*]
     $kind:ident ($($args:tt)*) -> $res:pat => $body:expr , $($rest:tt)*) => {
        $crate::__select_parse!([$($done)* ($kind $name $index ($($args)*) $res => { $body })] [$($names)*] $($rest)*)
    };
    ([$($done:tt)*] [($name:ident $index:tt) $($names:tt)*]
     $kind:ident ($($args:tt)*) -> $res:pat => $body:expr) => {
        $crate::__select_parse!([$($done)* ($kind $name $index ($($args)*) $res => { $body })] [$($names)*])
    };
    // The default case, last.
    ([$($done:tt)*] [$($names:tt)*] default => $($body:tt)*) => {
        $crate::__select_run!([$($done)*] (try) { $crate::__select_body!($($body)*) })
    };
    ([$($done:tt)*] [$($names:tt)*] default ($timeout:expr) => $($body:tt)*) => {
        $crate::__select_run!([$($done)*] (timeout $timeout) { $crate::__select_body!($($body)*) })
    };
    // No default case.
    ([$($done:tt)*] [$($names:tt)*]) => {
        $crate::__select_run!([$($done)*] (wait) { ::std::unreachable!("a select without default always selects") })
    };
    ([$($done:tt)*] [] $kind:ident $($rest:tt)*) => {
        ::std::compile_error!("select!: at most 16 operations")
    };
}

/// A default case's body: a block or an expression, with an optional
/// trailing comma.
#[doc(hidden)]
#[macro_export]
macro_rules! __select_body {
    ({ $($body:tt)* } $(,)?) => {{ $($body)* }};
    ($body:expr $(,)?) => { $body };
}

/// `select!`'s code: registers the cases, selects, runs the chosen body.
#[doc(hidden)]
#[macro_export]
macro_rules! __select_run {
    ([$(($kind:ident $name:ident $index:tt ($($args:tt)*) $res:pat => $body:block))*] ($($mode:tt)*) $default:block) => {{
        $( $crate::__select_bind!($kind $name ($($args)*)); )*
        match $crate::sync::channel::__private::select_cases(
            &[$( $name.as_case() ),*],
            $crate::__select_mode!($($mode)*),
        ) {
            $( ::std::option::Option::Some($index) => {
                let $res = $name.take();
                $body
            } )*
            ::std::option::Option::Some(_) => ::std::unreachable!("select!: an index that no case has"),
            ::std::option::Option::None => $default,
        }
    }};
}

/// Makes a case, on the stack: its channel is evaluated once, and a send's
/// value before the select (as in Go).
#[doc(hidden)]
#[macro_export]
macro_rules! __select_bind {
    // The borrow is a `let` of its own so that a receiver made in the case
    // (`recv(after(timeout))`) lives as long as the select.
    (recv $name:ident ($receiver:expr)) => {
        let $name = &$receiver;
        let mut $name = $crate::sync::channel::__private::RecvCase::new($name);
    };
    (send $name:ident ($sender:expr, $value:expr)) => {
        let mut $name = $crate::sync::channel::__private::SendCase::new(&$sender, $value);
    };
    ($kind:ident $name:ident ($($args:tt)*)) => {
        ::std::compile_error!(::std::concat!(
            "select!: unknown operation `",
            ::std::stringify!($kind),
            "` (expected recv, send or default)"
        ))
    };
}

/// The wait of a `select!`: `wait` (no default case), `try` (`default`),
/// `timeout` (`default(timeout)`).
#[doc(hidden)]
#[macro_export]
macro_rules! __select_mode {
    (wait) => {
        $crate::sync::channel::__private::SelectMode::Wait
    };
    (try) => {
        $crate::sync::channel::__private::SelectMode::Try
    };
    (timeout $timeout:expr) => {
        $crate::sync::channel::__private::SelectMode::Timeout($timeout)
    };
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_permutation_and_varies() {
        let mut seen_first = [0usize; 5];
        for _ in 0..1000 {
            let mut order: Vec<usize> = (0..5).collect();
            shuffle(&mut order);
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, [0, 1, 2, 3, 4]);
            seen_first[order[0]] += 1;
        }
        assert!(seen_first.iter().all(|&n| n > 100), "first places: {seen_first:?}");
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! A select over two channels racing two senders; over a channel and a
    //! timer racing one.
    use super::super::{at, bounded};
    use super::Select;
    use crate::loom::thread;

    /// Two rendezvous channels, a sender on each, one select receiving
    /// from both: exactly one value is taken by the select, and the other
    /// is still there afterwards (its sender was not fooled into thinking
    /// it was received). Each sender then finishes through a plain recv.
    #[test]
    fn select_over_two_channels_takes_exactly_one() {
        loom::model(|| {
            let (tx_a, rx_a) = bounded::<u32>(0);
            let (tx_b, rx_b) = bounded::<u32>(0);
            let sender_a = thread::spawn(move || tx_a.send(1).unwrap());
            let sender_b = thread::spawn(move || tx_b.send(2).unwrap());
            let (index, value) = {
                let mut select = Select::new();
                let a = select.recv(&rx_a);
                let b = select.recv(&rx_b);
                let operation = select.select();
                let index = operation.index();
                let value = if index == a { operation.recv(&rx_a) } else { operation.recv(&rx_b) };
                assert!(index == a || index == b);
                (index, value.unwrap())
            };
            assert_eq!(value, if index == 0 { 1 } else { 2 });
            // The other value was not consumed: it is received now.
            let other = if index == 0 { rx_b.recv() } else { rx_a.recv() };
            assert_eq!(other.unwrap(), if index == 0 { 2 } else { 1 });
            sender_a.join().unwrap();
            sender_b.join().unwrap();
        });
    }

    /// A select over a rendezvous channel and a timer that is due, racing
    /// a sender: whichever case it takes, the other's message is still
    /// there (a timer case that loses takes nothing from the timer).
    #[test]
    fn select_over_a_channel_and_a_due_timer_takes_exactly_one() {
        loom::model(|| {
            let (tx, rx) = bounded::<u32>(0);
            let timer = at(std::time::Instant::now());
            let sender = thread::spawn(move || tx.send(1).unwrap());
            let took_value = {
                let mut select = Select::new();
                let from_channel = select.recv(&rx);
                select.recv(&timer);
                let operation = select.select();
                if operation.index() == from_channel {
                    assert_eq!(operation.recv(&rx), Ok(1));
                    true
                } else {
                    assert!(operation.recv(&timer).is_ok());
                    false
                }
            };
            if took_value {
                assert!(timer.try_recv().is_ok(), "a select that took the value also took the timer's message");
            } else {
                assert_eq!(rx.recv(), Ok(1), "a select that took the timer also consumed the value");
            }
            sender.join().unwrap();
        });
    }

    /// A timed select (under loom it may time out at any moment) racing a
    /// send into a buffered channel: it either takes the value or takes
    /// nothing; after a timeout the value is still in the channel.
    #[test]
    fn timed_select_that_loses_consumes_nothing() {
        use std::time::Duration;
        loom::model(|| {
            let (tx_a, rx_a) = bounded::<u32>(1);
            let (_tx_b, rx_b) = bounded::<u32>(1);
            let sender = thread::spawn(move || tx_a.send(1).unwrap());
            let got = {
                let mut select = Select::new();
                let a = select.recv(&rx_a);
                select.recv(&rx_b);
                match select.select_timeout(Duration::from_secs(60)) {
                    Ok(operation) => {
                        assert_eq!(operation.index(), a);
                        Some(operation.recv(&rx_a).unwrap())
                    }
                    Err(_) => None,
                }
            };
            sender.join().unwrap();
            match got {
                Some(value) => assert_eq!(value, 1),
                None => assert_eq!(rx_a.try_recv(), Ok(1), "a select that timed out consumed the value"),
            }
        });
    }
}
