//! `oneshot()`: one value, from one sender to one receiver.
//!
//! It falls out of the bounded flavour: a `bounded(1)` channel whose
//! sender is consumed by its one `send`, so that send never waits (the one
//! slot is always free for it) and the receiver waits exactly as a channel
//! receiver does — a sender that finds it parked hands the value straight
//! over. The cost is one channel allocation; a dedicated one-word state
//! machine would save that allocation's lock and queues, not a wait.

use super::{Receiver, RecvError, RecvTimeoutError, SendError, Sender, TryRecvError, bounded};
use std::fmt;
use std::time::Duration;

/// A channel for exactly one value: [`OneshotSender::send`] consumes the
/// sender and never waits; the receiver waits for the value, or learns
/// that the sender was dropped without sending.
///
/// ```
/// use weft::sync::channel::oneshot;
///
/// let (reply_tx, reply_rx) = oneshot();
/// let worker = weft::spawn(move || reply_tx.send(6 * 7).unwrap());
/// assert_eq!(reply_rx.recv(), Ok(42));
/// worker.join().unwrap();
/// ```
pub fn oneshot<T>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    let (sender, receiver) = bounded(1);
    (OneshotSender { sender }, OneshotReceiver { receiver })
}

/// The sending half of a [`oneshot`] channel.
///
/// ```
/// use weft::sync::channel::{oneshot, RecvError};
///
/// let (tx, rx) = oneshot::<u8>();
/// drop(tx); // never sends
/// assert_eq!(rx.recv(), Err(RecvError));
/// ```
pub struct OneshotSender<T> {
    sender: Sender<T>,
}

/// The receiving half of a [`oneshot`] channel.
///
/// ```
/// use weft::sync::channel::oneshot;
///
/// let (tx, rx) = oneshot();
/// tx.send("done").unwrap();
/// assert_eq!(rx.recv(), Ok("done"));
/// ```
pub struct OneshotReceiver<T> {
    receiver: Receiver<T>,
}

impl<T> OneshotSender<T> {
    /// Sends the value; never waits. Fails, giving the value back, if the
    /// receiver is gone.
    ///
    /// ```
    /// use weft::sync::channel::oneshot;
    ///
    /// let (tx, rx) = oneshot();
    /// drop(rx);
    /// assert_eq!(tx.send(1).unwrap_err().into_inner(), 1);
    /// ```
    pub fn send(self, msg: T) -> Result<(), SendError<T>> {
        self.sender.try_send(msg).map_err(|error| {
            debug_assert!(error.is_disconnected(), "oneshot: the one slot was taken");
            SendError(error.into_inner())
        })
    }
}

impl<T> OneshotReceiver<T> {
    /// Waits for the value; fails if the sender was dropped without
    /// sending (or the value was already received).
    ///
    /// ```
    /// use weft::sync::channel::oneshot;
    ///
    /// let (tx, rx) = oneshot();
    /// weft::spawn(move || tx.send(String::from("hi")).unwrap());
    /// assert_eq!(rx.recv().unwrap(), "hi");
    /// ```
    pub fn recv(self) -> Result<T, RecvError> {
        self.receiver.recv()
    }

    /// Takes the value if it has arrived, without waiting.
    ///
    /// ```
    /// use weft::sync::channel::{oneshot, TryRecvError};
    ///
    /// let (tx, rx) = oneshot();
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    /// tx.send(1).unwrap();
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    /// ```
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.receiver.try_recv()
    }

    /// Waits at most `timeout` for the value (never less).
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::sync::channel::{oneshot, RecvTimeoutError};
    ///
    /// let (_tx, rx) = oneshot::<u8>();
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(5)), Err(RecvTimeoutError::Timeout));
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.receiver.recv_timeout(timeout)
    }
}

impl<T> fmt::Debug for OneshotSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneshotSender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for OneshotReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneshotReceiver").finish_non_exhaustive()
    }
}
