//! Channels: multi-producer multi-consumer message passing for coroutines
//! and OS threads alike, with the API of crossbeam-channel.
//!
//! - [`bounded(cap)`](bounded): at most `cap` values wait in the channel;
//!   a send on a full channel waits. `bounded(0)` is a *rendezvous*
//!   channel: a send completes only when a receiver takes the value.
//! - [`unbounded()`](unbounded): sends never wait.
//! - [`Sender`] and [`Receiver`] are both `Clone + Send + Sync`: any number
//!   of each. Each value is received exactly once.
//! - [`Select`] (and the [`select!`](crate::select) macro) waits on several
//!   sends and receives at once, with a timeout or a default case; when
//!   several are ready it picks one at random, and exactly one completes.
//! - [`oneshot()`]: one value, one sender, one receiver.
//! - [`after`], [`at`], [`tick`] and [`never`]: receivers of timers.
//!
//! A coroutine that waits parks (its worker runs other coroutines); an OS
//! thread that waits blocks on a futex; both may wait on the same channel.
//! A sender that finds a receiver waiting hands the value straight to it
//! and wakes it — an unbuffered hand-off between two coroutines costs one
//! wake and one switch — and waiting receivers are served in the order
//! they arrived. Timeouts are measured on `CLOCK_MONOTONIC` and never end
//! early.
//!
//! Timers are receivers too, as in crossbeam-channel: [`after`] and [`at`]
//! deliver one message (the instant it was due), [`tick`] one every
//! period, and [`never`] none. They have no sender, are never
//! disconnected, and take part in a [`Select`] like any receiver; the
//! select then sleeps until its first timer is due (no timer thread, no
//! coroutine per timer):
//!
//! ```
//! use std::time::Duration;
//! use weft::select;
//! use weft::sync::channel::{after, tick, unbounded};
//!
//! let (jobs_tx, jobs) = unbounded::<u32>();
//! weft::spawn(move || {
//!     for job in 0..3 {
//!         jobs_tx.send(job).unwrap();
//!         weft::sleep(Duration::from_millis(5));
//!     }
//! });
//! let heartbeat = tick(Duration::from_millis(2));
//! let give_up = after(Duration::from_secs(10));
//! let (mut done, mut beats) = (0, 0);
//! loop {
//!     select! {
//!         recv(jobs) -> job => match job {
//!             Ok(_) => done += 1,
//!             Err(_) => break, // every sender is gone
//!         },
//!         recv(heartbeat) -> _ => beats += 1,
//!         recv(give_up) -> _ => panic!("the jobs took 10 s"),
//!     }
//! }
//! assert_eq!(done, 3);
//! assert!(beats > 0);
//! ```
//!
//! Where weft differs from crossbeam-channel: a [`Select`]'s send case
//! takes its value when it is added (as in Go), a [`SelectedOperation`]
//! dropped without completing gives a received value back instead of
//! panicking, and [`tick`] keeps to its grid and refuses a zero period.
//!
//! Disconnection works as in crossbeam-channel: when every `Receiver` is
//! gone, a send fails and gives its value back in [`SendError`] (values
//! still buffered are dropped); when every `Sender` is gone, receivers
//! drain what is buffered and then get [`RecvError`].
//!
//! A coroutine cancelled ([`JoinHandle::cancel`](crate::JoinHandle::cancel))
//! while it waits in a send, a receive or a select leaves the channel
//! consistent: a value handed to a receiver that is cancelled before it
//! runs goes back to the channel (to the next receiver), so every value is
//! received exactly once or is still in the channel; a cancelled sender's
//! value was either sent or is dropped with the sender's stack.
//!
//! One edge of that: a value goes back when its receiver is cancelled,
//! which may be after the last `Sender` went and another receiver was
//! already told [`RecvError`] (the channel then counted the value as
//! delivered). The value is in the channel again — the next `recv` or
//! `try_recv` returns it — but a pool of consumers that all stop at their
//! first `RecvError` leaves it there, to be dropped with the channel. Where
//! that matters, drain with `try_recv` after the error, or do not cancel
//! receivers while the senders may be going away. A [`SelectedOperation`]
//! dropped without completing its receive hands its value back the same
//! way. (Closing the edge would cost every hand-off to a parked receiver
//! one more atomic read-modify-write, to count the values in flight.)
//!
//! ```
//! use weft::sync::channel;
//!
//! // A pipeline: numbers -> squares -> sum, each stage a coroutine.
//! let (numbers_tx, numbers_rx) = channel::bounded(16);
//! let (squares_tx, squares_rx) = channel::bounded(16);
//! let source = weft::spawn(move || {
//!     for n in 1..=100u64 {
//!         numbers_tx.send(n).unwrap();
//!     }
//! });
//! let square = weft::spawn(move || {
//!     for n in numbers_rx {
//!         squares_tx.send(n * n).unwrap();
//!     }
//! });
//! let sum: u64 = squares_rx.iter().sum();
//! assert_eq!(sum, 338_350);
//! source.join().unwrap();
//! square.join().unwrap();
//! ```
//!
//! # How it works
//!
//! Each channel is a lock, its buffer (none, a ring, or linked blocks) and
//! two queues of parked operations, as Go's channels are; the protocol,
//! with its state tables, is documented in the source next to the code
//! (`chan.rs`, `waiter.rs`, one file per flavour, `select.rs`).

mod array;
mod chan;
mod error;
mod list;
mod oneshot;
mod select;
mod timer;
mod waiter;
mod zero;

pub use error::{
    RecvError, RecvTimeoutError, SelectTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySelectError,
    TrySendError,
};
pub use oneshot::{OneshotReceiver, OneshotSender, oneshot};
pub use select::{Select, SelectedOperation};

/// What `select!` expands to: not an API (its names may change at any
/// release).
#[doc(hidden)]
pub mod __private {
    pub use super::select::{CaseRef, RecvCase, SelectMode, SendCase, select_cases};
}

use chan::{Buffer, Chan, Side};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timer::Timer;
use waiter::Waiter;

use crate::park::ParkedOn;
use crate::sys::futex::Deadline;

/// A channel that holds at most `cap` values; `bounded(0)` is a rendezvous
/// channel, whose sends complete only when a receiver takes the value.
///
/// The ring of `cap` slots is allocated up front when `cap` is at most
/// 1024; a larger one grows as values wait in it, so a huge `cap` (even
/// `usize::MAX`) costs memory only for what is queued.
///
/// ```
/// use weft::sync::channel::{bounded, TrySendError};
///
/// let (tx, rx) = bounded(2);
/// tx.send(1).unwrap();
/// tx.send(2).unwrap();
/// assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
/// assert_eq!(rx.recv(), Ok(1));
///
/// // A rendezvous: the send waits for the receiver.
/// let (tx, rx) = bounded(0);
/// let receiver = weft::spawn(move || rx.recv().unwrap());
/// tx.send("hello").unwrap(); // returns once the coroutine has it
/// assert_eq!(receiver.join().unwrap(), "hello");
/// ```
pub fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let buffer = if cap == 0 { Buffer::Zero } else { Buffer::Array(array::Ring::new(cap)) };
    pair(buffer)
}

/// A channel without a bound: sends never wait.
///
/// Values are stored in linked blocks of a few dozen, allocated as the
/// channel grows and recycled as it drains.
///
/// ```
/// use weft::sync::channel::unbounded;
///
/// let (tx, rx) = unbounded();
/// for i in 0..1000 {
///     tx.send(i).unwrap(); // never waits
/// }
/// drop(tx);
/// assert_eq!(rx.iter().sum::<i32>(), 499_500);
/// ```
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    pair(Buffer::List(list::Blocks::default()))
}

fn pair<T>(buffer: Buffer<T>) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(Chan::new(buffer));
    (Sender { chan: Arc::clone(&chan) }, Receiver { flavour: Flavour::Chan(chan) })
}

/// A receiver that gets one message once `duration` has passed: the
/// instant it was due. Like every timer receiver it has no sender and is
/// never disconnected: after its message, `recv` waits for ever and
/// `try_recv` says [`Empty`](TryRecvError::Empty). Its clones share the
/// one message (one of them gets it).
///
/// In a [`Select`] it is a deadline for the select as a whole, as Go's
/// `time.After` is:
///
/// ```
/// use std::time::{Duration, Instant};
/// use weft::select;
/// use weft::sync::channel::{after, bounded};
///
/// let (_tx, replies) = bounded::<u32>(1);
/// let start = Instant::now();
/// let timeout = after(Duration::from_millis(20));
/// let answer = select! {
///     recv(replies) -> reply => reply.ok(),
///     recv(timeout) -> due => {
///         assert!(due.unwrap() >= start + Duration::from_millis(20));
///         None
///     }
/// };
/// assert_eq!(answer, None);
/// assert!(start.elapsed() >= Duration::from_millis(20));
/// ```
///
/// A `duration` so long that the instant cannot be represented never comes.
///
/// A [`SelectedOperation`] of this receiver dropped without
/// [`recv`](SelectedOperation::recv) gives the message back, as a channel's
/// value goes back: to a receive (of this receiver or a clone) that is
/// waiting, or else to the next one.
pub fn after(duration: Duration) -> Receiver<Instant> {
    Receiver::of_timer(Timer::once_after(duration))
}

/// A receiver that gets one message, `when`, once `when` has come (at
/// once if it has passed). As [`after`], with an instant.
///
/// ```
/// use std::time::{Duration, Instant};
/// use weft::sync::channel::{at, TryRecvError};
///
/// let when = Instant::now() + Duration::from_millis(10);
/// let alarm = at(when);
/// assert_eq!(alarm.try_recv(), Err(TryRecvError::Empty));
/// assert_eq!(alarm.recv(), Ok(when)); // waits until `when`
/// assert!(Instant::now() >= when);
/// assert_eq!(alarm.try_recv(), Err(TryRecvError::Empty)); // one message only
/// ```
pub fn at(when: Instant) -> Receiver<Instant> {
    Receiver::of_timer(Timer::once(when))
}

/// A receiver that gets a message every `period`, the first one `period`
/// from now; each message is the instant it was due.
///
/// Deliveries stay on the grid `start + k * period`: a receiver that comes
/// late gets the oldest due message at once, and the ticks it missed
/// after that one are dropped (as Go's `time.Ticker` drops them), so the
/// next message comes at the first grid point after the receive. It holds
/// at most one message (`capacity()` is `Some(1)`). Its clones share the
/// schedule: each tick goes to one of them. (crossbeam-channel's `tick`
/// instead sends the next message a period after a late receive, and
/// accepts a zero period.)
///
/// # Panics
///
/// If `period` is zero (a ticker that is always ready is a busy loop; for
/// one message at once, use `after(Duration::ZERO)`).
///
/// ```
/// use std::time::{Duration, Instant};
/// use weft::sync::channel::tick;
///
/// let start = Instant::now();
/// let ticker = tick(Duration::from_millis(5));
/// let first = ticker.recv().unwrap();
/// let second = ticker.recv().unwrap();
/// assert_eq!((second - first).as_nanos() % 5_000_000, 0); // on the grid
/// assert!(second > first);
/// assert!(Instant::now() >= start + Duration::from_millis(10));
/// ```
#[track_caller]
pub fn tick(period: Duration) -> Receiver<Instant> {
    Receiver::of_timer(Timer::every(period))
}

/// A receiver that never gets a message and is never disconnected: a
/// [`Select`] case that is never chosen, for a channel that is optional.
///
/// ```
/// use std::time::Duration;
/// use weft::select;
/// use weft::sync::channel::{never, unbounded, Receiver};
///
/// let (tx, rx) = unbounded::<u32>();
/// tx.send(1).unwrap();
/// let shutdown: Option<Receiver<()>> = None; // none configured
/// let shutdown = shutdown.unwrap_or_else(never);
/// select! {
///     recv(rx) -> value => assert_eq!(value, Ok(1)),
///     recv(shutdown) -> _ => unreachable!(),
/// }
/// assert!(shutdown.recv_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
/// ```
pub fn never<T>() -> Receiver<T> {
    Receiver { flavour: Flavour::Never }
}

/// `Instant` as a `CLOCK_MONOTONIC` deadline (`Instant` is that clock on
/// Linux; a deadline in the past has passed).
fn deadline_of(instant: Instant) -> Deadline {
    Deadline::after(instant.saturating_duration_since(Instant::now()))
}

/// The sending side of a channel. Clone it for more senders; the channel
/// disconnects for receivers when the last one is dropped.
///
/// ```
/// use weft::sync::channel::unbounded;
///
/// let (tx, rx) = unbounded();
/// let senders: Vec<_> = (0..4)
///     .map(|i| {
///         let tx = tx.clone();
///         weft::spawn(move || tx.send(i).unwrap())
///     })
///     .collect();
/// drop(tx);
/// for s in senders {
///     s.join().unwrap();
/// }
/// let mut got: Vec<i32> = rx.iter().collect();
/// got.sort();
/// assert_eq!(got, [0, 1, 2, 3]);
/// ```
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

/// The receiving side of a channel. Clone it for more receivers (each
/// value goes to one of them); the channel disconnects for senders when
/// the last one is dropped.
///
/// ```
/// use weft::sync::channel::bounded;
///
/// let (tx, rx) = bounded(4);
/// let workers: Vec<_> = (0..3)
///     .map(|_| {
///         let rx = rx.clone();
///         weft::spawn(move || rx.iter().count())
///     })
///     .collect();
/// for job in 0..100 {
///     tx.send(job).unwrap();
/// }
/// drop(tx);
/// let done: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
/// assert_eq!(done, 100);
/// ```
pub struct Receiver<T> {
    flavour: Flavour<T>,
}

/// Where a receiver's messages come from.
enum Flavour<T> {
    /// A channel made by [`bounded`] or [`unbounded`].
    Chan(Arc<Chan<T>>),
    /// [`after`], [`at`] or [`tick`]: each message made, when it is taken,
    /// from the instant its delivery was due (`timer.rs`). Only
    /// `Receiver<Instant>`s are made so (`make` is the identity), which
    /// the selected operation's type check relies on (`select.rs`,
    /// `slot_of`).
    Timer { timer: Arc<Timer>, make: fn(Instant) -> T },
    /// [`never`].
    Never,
}

impl<T> Sender<T> {
    /// Sends `msg`, waiting while the channel is full (for a rendezvous
    /// channel: until a receiver takes it). Fails only when every receiver
    /// is gone, giving `msg` back.
    ///
    /// ```
    /// use weft::sync::channel::bounded;
    ///
    /// let (tx, rx) = bounded(1);
    /// tx.send(1).unwrap();
    /// let second = weft::spawn(move || tx.send(2)); // waits for room
    /// assert_eq!(rx.recv(), Ok(1));
    /// assert_eq!(rx.recv(), Ok(2));
    /// second.join().unwrap().unwrap();
    /// ```
    // Inline always (the blocking path is inline down to the switch): a
    // coroutine that parks here is resumed in its caller's frame, so the
    // `ret` of an out-of-line `send` after the park would be a return the
    // CPU never saw a call for (the task switch leaves the return-stack
    // predictor alone), mispredicted on every hand-off. Measured on the
    // rendezvous ping-pong (benches/channel.rs, WEFT_CHANNEL_COUNT=
    // rendezvous): 41 -> 31 ns per hand-off, 299 -> 287 instructions.
    #[inline(always)]
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.chan.send(msg, None).map_err(|error| SendError(error.into_inner()))
    }

    /// Sends `msg` if that can be done without waiting: there is room, or
    /// (rendezvous) a receiver is waiting.
    ///
    /// ```
    /// use weft::sync::channel::{bounded, TrySendError};
    ///
    /// let (tx, _rx) = bounded(0);
    /// // Nobody is receiving: a rendezvous cannot complete.
    /// assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
    /// ```
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        self.chan.try_send(msg)
    }

    /// Sends `msg`, waiting at most `timeout` for room. Never gives up
    /// before `timeout` has passed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::sync::channel::{bounded, SendTimeoutError};
    ///
    /// let (tx, _rx) = bounded(1);
    /// tx.send(1).unwrap();
    /// let result = tx.send_timeout(2, Duration::from_millis(10));
    /// assert_eq!(result, Err(SendTimeoutError::Timeout(2)));
    /// ```
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.chan.send(msg, Some(Deadline::after(timeout)))
    }

    /// Sends `msg`, waiting until `deadline` at most for room.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::channel::bounded;
    ///
    /// let (tx, rx) = bounded(1);
    /// let deadline = Instant::now() + Duration::from_millis(50);
    /// assert!(tx.send_deadline(1, deadline).is_ok());
    /// assert!(tx.send_deadline(2, deadline).unwrap_err().is_timeout());
    /// assert!(Instant::now() >= deadline);
    /// # drop(rx);
    /// ```
    pub fn send_deadline(&self, msg: T, deadline: Instant) -> Result<(), SendTimeoutError<T>> {
        self.chan.send(msg, Some(deadline_of(deadline)))
    }

    /// How many values wait in the channel (a snapshot).
    ///
    /// ```
    /// use weft::sync::channel::unbounded;
    ///
    /// let (tx, _rx) = unbounded();
    /// tx.send('a').unwrap();
    /// assert_eq!(tx.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.chan.len()
    }

    /// Whether no value waits in the channel (a snapshot).
    ///
    /// ```
    /// use weft::sync::channel::unbounded;
    ///
    /// let (tx, _rx) = unbounded::<u8>();
    /// assert!(tx.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a send would have to wait for room (a snapshot). A
    /// rendezvous channel is always full; an unbounded one never.
    ///
    /// ```
    /// use weft::sync::channel::bounded;
    ///
    /// let (tx, _rx) = bounded(1);
    /// assert!(!tx.is_full());
    /// tx.send(()).unwrap();
    /// assert!(tx.is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        self.chan.is_full()
    }

    /// The channel's capacity: `Some(cap)` for `bounded(cap)`, `None` for
    /// an unbounded channel.
    ///
    /// ```
    /// use weft::sync::channel::{bounded, unbounded};
    ///
    /// assert_eq!(bounded::<u8>(8).0.capacity(), Some(8));
    /// assert_eq!(unbounded::<u8>().0.capacity(), None);
    /// ```
    pub fn capacity(&self) -> Option<usize> {
        self.chan.capacity()
    }

    /// Whether both senders belong to the same channel.
    ///
    /// ```
    /// use weft::sync::channel::unbounded;
    ///
    /// let (tx, _rx) = unbounded::<u8>();
    /// let (other, _orx) = unbounded::<u8>();
    /// assert!(tx.same_channel(&tx.clone()));
    /// assert!(!tx.same_channel(&other));
    /// ```
    pub fn same_channel(&self, other: &Sender<T>) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }
}

impl<T> Receiver<T> {
    /// Receives a value, waiting while the channel is empty. Fails only
    /// once the channel is empty and every sender is gone.
    ///
    /// ```
    /// use weft::sync::channel::{unbounded, RecvError};
    ///
    /// let (tx, rx) = unbounded();
    /// let sender = weft::spawn(move || tx.send(5).unwrap());
    /// assert_eq!(rx.recv(), Ok(5));
    /// sender.join().unwrap(); // the sender is gone now
    /// assert_eq!(rx.recv(), Err(RecvError));
    /// ```
    // Inline always, as `Sender::send` (see there).
    #[inline(always)]
    pub fn recv(&self) -> Result<T, RecvError> {
        match &self.flavour {
            Flavour::Chan(chan) => chan.recv(None).map_err(|_| RecvError),
            // Without a deadline it returns only with a message.
            _ => self.recv_made(None).ok_or(RecvError),
        }
    }

    /// Receives a value if one is there (for a rendezvous channel: if a
    /// sender is waiting), without waiting.
    ///
    /// ```
    /// use weft::sync::channel::{unbounded, TryRecvError};
    ///
    /// let (tx, rx) = unbounded();
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    /// tx.send(1).unwrap();
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// ```
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        match &self.flavour {
            Flavour::Chan(chan) => chan.try_recv(),
            Flavour::Timer { timer, make } => timer.try_recv().map(make).or(Err(TryRecvError::Empty)),
            Flavour::Never => Err(TryRecvError::Empty),
        }
    }

    /// Receives a value, waiting at most `timeout`. Never gives up before
    /// `timeout` has passed.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::channel::{unbounded, RecvTimeoutError};
    ///
    /// let (_tx, rx) = unbounded::<u8>();
    /// let start = Instant::now();
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(20)), Err(RecvTimeoutError::Timeout));
    /// assert!(start.elapsed() >= Duration::from_millis(20));
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_until(Deadline::after(timeout))
    }

    /// Receives a value, waiting until `deadline` at most.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::channel::unbounded;
    ///
    /// let (tx, rx) = unbounded();
    /// tx.send(1).unwrap();
    /// let deadline = Instant::now() + Duration::from_millis(5);
    /// assert_eq!(rx.recv_deadline(deadline), Ok(1));
    /// assert!(rx.recv_deadline(deadline).unwrap_err().is_timeout());
    /// ```
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        self.recv_until(deadline_of(deadline))
    }

    fn recv_until(&self, deadline: Deadline) -> Result<T, RecvTimeoutError> {
        match &self.flavour {
            Flavour::Chan(chan) => chan.recv(Some(deadline)).map_err(|disconnected| {
                if disconnected { RecvTimeoutError::Disconnected } else { RecvTimeoutError::Timeout }
            }),
            _ => self.recv_made(Some(deadline)).ok_or(RecvTimeoutError::Timeout),
        }
    }

    /// A timer's or `never`'s receive: waits until a delivery is taken
    /// (returned), or until `deadline` passes (`None`). Until a delivery is
    /// due nobody wakes the waiter: it sleeps until then, takes it, and if
    /// another receiver took it first, sleeps until the next. A spent
    /// one-shot's receive waits on its back channel, where a given-back
    /// message comes (`timer.rs`, "Giving back").
    #[cold]
    fn recv_made(&self, deadline: Option<Deadline>) -> Option<T> {
        loop {
            let due = match &self.flavour {
                Flavour::Timer { timer, make } => match timer.try_recv() {
                    Ok(due) => return Some(make(due)),
                    Err(Some(due)) => Some(deadline_of(due)),
                    Err(None) => match timer.back() {
                        // Never disconnected: an error is the deadline.
                        Some(back) => return back.recv(deadline).ok().map(make),
                        None => None,
                    },
                },
                Flavour::Chan(_) | Flavour::Never => None,
            };
            if deadline.is_some_and(|deadline| deadline.has_passed()) {
                return None;
            }
            let wake = match (due, deadline) {
                (Some(due), Some(deadline)) => Some(due.min(deadline)),
                (due, deadline) => due.or(deadline),
            };
            Waiter::new().wait(wake, ParkedOn::ChannelRecv(self.id() as usize));
        }
    }

    /// The channel's (or timer's) address: its identity in a `Select`;
    /// null for [`never`], which no select ever completes.
    pub(super) fn id(&self) -> *const () {
        match &self.flavour {
            Flavour::Chan(chan) => Arc::as_ptr(chan) as *const (),
            Flavour::Timer { timer, .. } => Arc::as_ptr(timer) as *const (),
            Flavour::Never => std::ptr::null(),
        }
    }

    /// An iterator that receives until the channel is empty and every
    /// sender is gone (each `next` waits, as [`recv`](Self::recv)).
    ///
    /// ```
    /// use weft::sync::channel::unbounded;
    ///
    /// let (tx, rx) = unbounded();
    /// weft::spawn(move || (1..=3).for_each(|i| tx.send(i).unwrap()));
    /// assert_eq!(rx.iter().collect::<Vec<_>>(), [1, 2, 3]);
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { receiver: self }
    }

    /// An iterator over the values that are there now (it never waits).
    ///
    /// ```
    /// use weft::sync::channel::unbounded;
    ///
    /// let (tx, rx) = unbounded();
    /// tx.send(1).unwrap();
    /// tx.send(2).unwrap();
    /// assert_eq!(rx.try_iter().collect::<Vec<_>>(), [1, 2]);
    /// assert_eq!(rx.try_iter().next(), None); // tx is still alive
    /// ```
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { receiver: self }
    }

    /// How many values wait in the channel (a snapshot).
    ///
    /// ```
    /// use weft::sync::channel::bounded;
    ///
    /// let (tx, rx) = bounded(4);
    /// tx.send(1).unwrap();
    /// tx.send(2).unwrap();
    /// assert_eq!(rx.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        match &self.flavour {
            Flavour::Chan(chan) => chan.len(),
            Flavour::Timer { timer, .. } => timer.len(),
            Flavour::Never => 0,
        }
    }

    /// Whether no value waits in the channel (a snapshot).
    ///
    /// ```
    /// use weft::sync::channel::bounded;
    ///
    /// let (_tx, rx) = bounded::<u8>(4);
    /// assert!(rx.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the channel is full (a snapshot; see [`Sender::is_full`]).
    ///
    /// ```
    /// use weft::sync::channel::bounded;
    ///
    /// let (tx, rx) = bounded(1);
    /// tx.send(0).unwrap();
    /// assert!(rx.is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        match &self.flavour {
            Flavour::Chan(chan) => chan.is_full(),
            Flavour::Timer { timer, .. } => timer.len() == 1,
            Flavour::Never => true,
        }
    }

    /// The channel's capacity (see [`Sender::capacity`]); a timer's is
    /// `Some(1)`, [`never`]'s `Some(0)`.
    ///
    /// ```
    /// use weft::sync::channel::bounded;
    ///
    /// assert_eq!(bounded::<u8>(0).1.capacity(), Some(0));
    /// ```
    pub fn capacity(&self) -> Option<usize> {
        match &self.flavour {
            Flavour::Chan(chan) => chan.capacity(),
            Flavour::Timer { .. } => Some(1),
            Flavour::Never => Some(0),
        }
    }

    /// Whether both receivers belong to the same channel (or timer; any
    /// two [`never`]s are the same).
    ///
    /// ```
    /// use weft::sync::channel::bounded;
    ///
    /// let (_tx, rx) = bounded::<u8>(1);
    /// assert!(rx.same_channel(&rx.clone()));
    /// ```
    pub fn same_channel(&self, other: &Receiver<T>) -> bool {
        self.id() == other.id()
    }
}

impl Receiver<Instant> {
    fn of_timer(timer: Timer) -> Receiver<Instant> {
        Receiver { flavour: Flavour::Timer { timer: Arc::new(timer), make: |due| due } }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.acquire(Side::Send);
        Sender { chan: Arc::clone(&self.chan) }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        let flavour = match &self.flavour {
            Flavour::Chan(chan) => {
                chan.acquire(Side::Recv);
                Flavour::Chan(Arc::clone(chan))
            }
            Flavour::Timer { timer, make } => Flavour::Timer { timer: Arc::clone(timer), make: *make },
            Flavour::Never => Flavour::Never,
        };
        Receiver { flavour }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // Under loom a detected deadlock unwinds the model after its
        // execution is gone: its atomics must not be touched then.
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        self.chan.release(Side::Send);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // As in Sender's drop.
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        if let Flavour::Chan(chan) = &self.flavour {
            chan.release(Side::Recv);
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("capacity", &self.capacity()).finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").field("capacity", &self.capacity()).finish_non_exhaustive()
    }
}

/// A waiting iterator over a [`Receiver`]'s values, from
/// [`Receiver::iter`]: ends once the channel is empty and disconnected.
///
/// ```
/// use weft::sync::channel::unbounded;
///
/// let (tx, rx) = unbounded();
/// tx.send(1).unwrap();
/// drop(tx);
/// let mut iter = rx.iter();
/// assert_eq!(iter.next(), Some(1));
/// assert_eq!(iter.next(), None);
/// ```
pub struct Iter<'a, T> {
    receiver: &'a Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;

    // Inline always, as `Receiver::recv` (see `Sender::send`).
    #[inline(always)]
    fn next(&mut self) -> Option<T> {
        self.receiver.recv().ok()
    }
}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").finish_non_exhaustive()
    }
}

/// A non-waiting iterator over a [`Receiver`]'s values, from
/// [`Receiver::try_iter`]: ends at the first moment the channel is empty.
///
/// ```
/// use weft::sync::channel::bounded;
///
/// let (tx, rx) = bounded(2);
/// tx.send('x').unwrap();
/// let mut iter = rx.try_iter();
/// assert_eq!(iter.next(), Some('x'));
/// assert_eq!(iter.next(), None);
/// ```
pub struct TryIter<'a, T> {
    receiver: &'a Receiver<T>,
}

impl<T> Iterator for TryIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.receiver.try_recv().ok()
    }
}

impl<T> fmt::Debug for TryIter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TryIter").finish_non_exhaustive()
    }
}

/// A waiting iterator that owns its [`Receiver`] (`for value in receiver`).
///
/// ```
/// use weft::sync::channel::unbounded;
///
/// let (tx, rx) = unbounded();
/// tx.send(2).unwrap();
/// tx.send(3).unwrap();
/// drop(tx);
/// let product: i32 = rx.into_iter().product();
/// assert_eq!(product, 6);
/// ```
pub struct IntoIter<T> {
    receiver: Receiver<T>,
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;

    // Inline always, as `Receiver::recv` (see `Sender::send`).
    #[inline(always)]
    fn next(&mut self) -> Option<T> {
        self.receiver.recv().ok()
    }
}

impl<T> fmt::Debug for IntoIter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntoIter").finish_non_exhaustive()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter { receiver: self }
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}
