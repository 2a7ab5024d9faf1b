//! The rendezvous flavour, `bounded(0)`: no storage at all. A send
//! completes only when a receiver takes the value.
//!
//! # State (under the channel's lock, `chan.rs`)
//!
//! ```text
//!  parked               a send                          a recv
//!  -------------------  ------------------------------  -------------------------------
//!  nobody               parks, offering its value       parks
//!  receivers (FIFO)     moves its value into the        parks behind them
//!                       oldest's slot, wakes it, and
//!                       returns: the hand-off is done
//!  senders (FIFO)       parks behind them               takes the oldest's value out of
//!                                                       its slot, wakes it, and returns
//! ```
//!
//! One side parks, the other completes both operations under the lock:
//! a hand-off costs one wake, and for a coroutine one switch; nobody
//! polls. The value moves from the sender's stack to the receiver's (Go's
//! `sendDirect`/`recvDirect`), never through the channel.
//!
//! Parked waiters on both sides at once happen only for one Select that
//! registered a send and a receive on the same channel (it cannot meet
//! itself), or for stale entries. A value handed to a receiver that is
//! cancelled before it runs goes to the channel's `handed_back` queue
//! (or straight to the next parked receiver), which `recv` serves first:
//! so even a rendezvous channel may briefly hold values, and `len` counts
//! them.

#[cfg(all(test, loom))]
mod loom_models {
    //! Rendezvous hand-offs.
    use super::super::bounded;
    use crate::loom::{AtomicUsize, Ordering, thread};
    use loom::sync::Arc;

    /// One send, one recv: the value arrives, and what the sender wrote
    /// before sending is visible after the recv. Either side may park.
    #[test]
    fn rendezvous_send_recv() {
        loom::model(|| {
            let (tx, rx) = bounded::<u32>(0);
            let data = Arc::new(AtomicUsize::new(0));
            let sender = {
                let data = Arc::clone(&data);
                thread::spawn(move || {
                    data.store(42, Ordering::Relaxed);
                    tx.send(7).unwrap();
                })
            };
            assert_eq!(rx.recv(), Ok(7));
            assert_eq!(data.load(Ordering::Relaxed), 42);
            sender.join().unwrap();
        });
    }
}
