//! `weft::sync::channel` through the public API: the producer-consumer
//! matrix, disconnection, timeouts, try operations, introspection, and
//! values dropped exactly once.
//!
//! Select is tested in `channel_select.rs`; cancellation and shutdown in
//! `channel_cancel.rs`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use weft::Runtime;
use weft::sync::channel::{
    Receiver, RecvError, RecvTimeoutError, SendError, SendTimeoutError, Sender, TryRecvError, TrySendError, bounded,
    oneshot, unbounded,
};

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("a runtime with its worker threads")
}

/// Polls `done` every millisecond until it holds, failing after `limit`.
#[track_caller]
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A channel of each kind the matrix covers.
#[derive(Debug, Clone, Copy)]
enum Capacity {
    Bounded(usize),
    Unbounded,
}

fn channel<T>(capacity: Capacity) -> (Sender<T>, Receiver<T>) {
    match capacity {
        Capacity::Bounded(cap) => bounded(cap),
        Capacity::Unbounded => unbounded(),
    }
}

const CAPACITIES: [Capacity; 4] =
    [Capacity::Bounded(0), Capacity::Bounded(1), Capacity::Bounded(64), Capacity::Unbounded];

/// Who runs the producers and consumers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tasks {
    Coroutines,
    Threads,
    /// Alternately coroutines and threads, on both sides.
    Mixed,
}

/// Runs `f` as a coroutine of `rt` or on an OS thread; the returned
/// closure joins it.
fn start<R: Send + 'static>(
    rt: &Runtime,
    on_coroutine: bool,
    f: impl FnOnce() -> R + Send + 'static,
) -> Box<dyn FnOnce() -> R> {
    if on_coroutine {
        let handle = rt.spawn(f);
        Box::new(move || handle.join().expect("a coroutine of the matrix"))
    } else {
        let handle = thread::spawn(f);
        Box::new(move || handle.join().expect("a thread of the matrix"))
    }
}

/// `producers` producers each send `per_producer` values `(producer,
/// sequence)`, `consumers` consumers receive until the channel
/// disconnects; every value is received exactly once, and within each
/// consumer each producer's values arrive in order.
fn producer_consumer(rt: &Runtime, tasks: Tasks, capacity: Capacity, producers: usize, consumers: usize) {
    let per_producer = (2_000 / producers) as u64;
    let (tx, rx) = channel::<(usize, u64)>(capacity);
    let on_coroutine = |i: usize| match tasks {
        Tasks::Coroutines => true,
        Tasks::Threads => false,
        Tasks::Mixed => i % 2 == 0,
    };
    let consumer_handles: Vec<_> = (0..consumers)
        .map(|c| {
            let rx = rx.clone();
            start(rt, on_coroutine(c + 1), move || rx.iter().collect::<Vec<_>>())
        })
        .collect();
    drop(rx);
    let producer_handles: Vec<_> = (0..producers)
        .map(|p| {
            let tx = tx.clone();
            start(rt, on_coroutine(p), move || {
                for seq in 0..per_producer {
                    tx.send((p, seq)).expect("a consumer is alive");
                }
            })
        })
        .collect();
    drop(tx);
    for producer in producer_handles {
        producer();
    }
    let what = format!("{tasks:?}, {capacity:?}, {producers}P/{consumers}C");
    let mut seen = vec![vec![false; per_producer as usize]; producers];
    let mut total = 0;
    for consumer in consumer_handles {
        let got = consumer();
        let mut last = vec![None::<u64>; producers];
        for (p, seq) in got {
            assert!(!seen[p][seq as usize], "{what}: ({p}, {seq}) received twice");
            seen[p][seq as usize] = true;
            assert!(last[p].is_none_or(|l| l < seq), "{what}: producer {p}'s values out of order");
            last[p] = Some(seq);
            total += 1;
        }
    }
    assert_eq!(total, producers as u64 * per_producer, "{what}: values lost");
}

fn matrix(tasks: Tasks) {
    let rt = runtime(2);
    for capacity in CAPACITIES {
        for producers in [1, 4, 16] {
            for consumers in [1, 4, 16] {
                producer_consumer(&rt, tasks, capacity, producers, consumers);
            }
        }
    }
}

#[test]
fn matrix_coroutines() {
    matrix(Tasks::Coroutines);
}

#[test]
fn matrix_threads() {
    matrix(Tasks::Threads);
}

#[test]
fn matrix_mixed() {
    matrix(Tasks::Mixed);
}

/// A bigger run of the busiest shape, on coroutines: rendezvous and a
/// small ring, many hand-offs each way.
#[test]
fn many_hand_offs_on_coroutines() {
    let rt = runtime(2);
    for capacity in [Capacity::Bounded(0), Capacity::Bounded(4)] {
        let (tx, rx) = channel::<u64>(capacity);
        let received = rt.block_on(move || {
            let producers: Vec<_> = (0..4u64)
                .map(|p| {
                    let tx = tx.clone();
                    weft::spawn(move || (0..25_000u64).for_each(|i| tx.send(p * 25_000 + i).unwrap()))
                })
                .collect();
            drop(tx);
            let consumers: Vec<_> = (0..4)
                .map(|_| {
                    let rx = rx.clone();
                    weft::spawn(move || rx.iter().collect::<Vec<u64>>())
                })
                .collect();
            producers.into_iter().for_each(|p| p.join().unwrap());
            consumers.into_iter().map(|c| c.join().unwrap()).collect::<Vec<_>>()
        });
        // Each value exactly once (a sum would miss a lost 0, or a loss and
        // a duplicate of equal total), and each producer's in its order as
        // every consumer saw them.
        let mut seen = vec![false; 100_000];
        for values in &received {
            let mut last = [None::<u64>; 4];
            for &value in values {
                assert!(!std::mem::replace(&mut seen[value as usize], true), "{capacity:?}: {value} delivered twice");
                let producer = (value / 25_000) as usize;
                assert!(last[producer] < Some(value), "{capacity:?}: producer {producer}'s values out of order");
                last[producer] = Some(value);
            }
        }
        let lost = seen.iter().filter(|&&s| !s).count();
        assert_eq!(lost, 0, "{capacity:?}: {lost} values lost");
    }
}

/// One parked receiver per value: a send finds the oldest parked receiver
/// and hands it the value, so receivers are served in the order they
/// parked (FIFO), from coroutines and threads alike.
#[test]
fn parked_receivers_are_served_in_order() {
    let rt = runtime(2);
    for capacity in [Capacity::Bounded(0), Capacity::Bounded(2), Capacity::Unbounded] {
        let (tx, rx) = channel::<usize>(capacity);
        let waiting = Arc::new(AtomicUsize::new(0));
        let mut receivers = Vec::new();
        for i in 0..8 {
            let (rx, arrived) = (rx.clone(), Arc::clone(&waiting));
            receivers.push(start(&rt, i % 2 == 0, move || {
                arrived.fetch_add(1, Ordering::SeqCst);
                rx.recv().expect("a value comes")
            }));
            // Queue them strictly one after another.
            wait_until(Duration::from_secs(10), "a receiver to arrive", || waiting.load(Ordering::SeqCst) == i + 1);
            thread::sleep(Duration::from_millis(10));
        }
        for i in 0..8 {
            tx.send(i).unwrap();
        }
        let got: Vec<usize> = receivers.into_iter().map(|r| r()).collect();
        assert_eq!(got, (0..8).collect::<Vec<_>>(), "{capacity:?}: not served in the order they parked");
    }
}

// ---------------------------------------------------------------------------
// Disconnection
// ---------------------------------------------------------------------------

/// Receivers parked on an empty channel (coroutines and threads); the
/// senders send a few values, then all go: the first receivers get the
/// values, every other one wakes with `RecvError`.
#[test]
fn senders_dropped_while_receivers_are_parked() {
    let rt = runtime(2);
    for capacity in CAPACITIES {
        let (tx, rx) = channel::<u32>(capacity);
        let parked = Arc::new(AtomicUsize::new(0));
        let receivers: Vec<_> = (0..12)
            .map(|i| {
                let (rx, parked) = (rx.clone(), Arc::clone(&parked));
                start(&rt, i % 3 != 0, move || {
                    parked.fetch_add(1, Ordering::SeqCst);
                    rx.recv()
                })
            })
            .collect();
        wait_until(Duration::from_secs(10), "the receivers to arrive", || parked.load(Ordering::SeqCst) == 12);
        thread::sleep(Duration::from_millis(20));
        let tx2 = tx.clone();
        for value in 0..3 {
            tx.send(value).unwrap();
        }
        drop(tx);
        drop(tx2);
        let results: Vec<Result<u32, RecvError>> = receivers.into_iter().map(|r| r()).collect();
        let mut values: Vec<u32> = results.iter().filter_map(|r| r.ok()).collect();
        values.sort();
        assert_eq!(values, [0, 1, 2], "{capacity:?}: the values sent before the disconnection");
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 9, "{capacity:?}");
        assert_eq!(rx.recv(), Err(RecvError));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }
}

/// With every sender gone, a receiver drains what is buffered first.
#[test]
fn receivers_drain_before_the_disconnection() {
    for capacity in [Capacity::Bounded(8), Capacity::Unbounded] {
        let (tx, rx) = channel(capacity);
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        drop(tx);
        assert_eq!(rx.iter().collect::<Vec<_>>(), [0, 1, 2, 3, 4], "{capacity:?}");
        assert_eq!(rx.recv(), Err(RecvError));
        assert_eq!(rx.recv_timeout(Duration::from_secs(1)), Err(RecvTimeoutError::Disconnected));
    }
}

/// Senders parked on a full channel (coroutines and threads); every
/// receiver goes: each sender gets its value back.
#[test]
fn receivers_dropped_while_senders_are_parked() {
    let rt = runtime(2);
    for capacity in [0, 1, 4] {
        let (tx, rx) = bounded::<u32>(capacity);
        for i in 0..capacity as u32 {
            tx.send(1000 + i).unwrap();
        }
        let parked = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..10u32)
            .map(|i| {
                let (tx, parked) = (tx.clone(), Arc::clone(&parked));
                start(&rt, i % 2 == 0, move || {
                    parked.fetch_add(1, Ordering::SeqCst);
                    if i % 3 == 0 {
                        tx.send_timeout(i, Duration::from_secs(60)).map_err(|e| e.into_inner())
                    } else {
                        tx.send(i).map_err(|e| e.into_inner())
                    }
                })
            })
            .collect();
        wait_until(Duration::from_secs(10), "the senders to arrive", || parked.load(Ordering::SeqCst) == 10);
        thread::sleep(Duration::from_millis(20));
        let rx2 = rx.clone();
        drop(rx);
        drop(rx2);
        let mut back: Vec<u32> = senders.into_iter().map(|s| s().expect_err("no receiver took it")).collect();
        back.sort();
        assert_eq!(back, (0..10).collect::<Vec<_>>(), "bounded({capacity}): every sender got its value back");
        assert_eq!(tx.send(99), Err(SendError(99)));
        assert_eq!(tx.try_send(98), Err(TrySendError::Disconnected(98)));
        assert_eq!(tx.len(), 0, "bounded({capacity}): the buffered values were dropped");
    }
}

// ---------------------------------------------------------------------------
// Timeouts, try operations, introspection
// ---------------------------------------------------------------------------

#[test]
fn timeouts_never_return_early() {
    let check = |side: &str| {
        let (tx, rx) = bounded::<u8>(0);
        for ms in [0, 1, 2, 5, 15] {
            let timeout = Duration::from_millis(ms);
            let start = Instant::now();
            assert_eq!(rx.recv_timeout(timeout), Err(RecvTimeoutError::Timeout));
            let waited = start.elapsed();
            assert!(waited >= timeout, "{side}: recv_timeout returned after {waited:?}, before {timeout:?}");
            let start = Instant::now();
            assert_eq!(tx.send_timeout(1, timeout), Err(SendTimeoutError::Timeout(1)));
            let waited = start.elapsed();
            assert!(waited >= timeout, "{side}: send_timeout returned after {waited:?}, before {timeout:?}");
            let deadline = Instant::now() + timeout;
            assert!(rx.recv_deadline(deadline).unwrap_err().is_timeout());
            assert!(Instant::now() >= deadline, "{side}: recv_deadline returned early");
        }
    };
    check("thread");
    runtime(2).block_on(move || check("coroutine"));
}

/// A timed wait that a value ends early succeeds, and after a timeout the
/// channel is consistent (no waiter is left behind: the next hand-off
/// works).
#[test]
fn timed_waits_succeed_when_the_other_side_comes() {
    let rt = runtime(2);
    let (tx, rx) = bounded::<u32>(0);
    let sender = rt.spawn(move || {
        weft::sleep(Duration::from_millis(20));
        tx.send(5).unwrap();
        tx
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(5));
    let tx = sender.join().unwrap();
    assert!(tx.send_timeout(6, Duration::from_millis(5)).unwrap_err().is_timeout());
    let receiver = rt.spawn(move || rx.recv_timeout(Duration::from_secs(30)));
    tx.send_timeout(7, Duration::from_secs(30)).unwrap();
    assert_eq!(receiver.join().unwrap(), Ok(7));
}

/// Many short timed receives racing senders: every value is received
/// exactly once (a receive that times out takes nothing).
#[test]
fn timed_receives_racing_senders_lose_nothing() {
    let rt = runtime(2);
    for capacity in [Capacity::Bounded(0), Capacity::Bounded(1), Capacity::Unbounded] {
        let (tx, rx) = channel::<u64>(capacity);
        let receivers: Vec<_> = (0..4)
            .map(|i| {
                let rx = rx.clone();
                start(&rt, i % 2 == 0, move || {
                    let mut got = Vec::new();
                    loop {
                        match rx.recv_timeout(Duration::from_micros(50)) {
                            Ok(v) => got.push(v),
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => return got,
                        }
                    }
                })
            })
            .collect();
        drop(rx);
        let senders: Vec<_> = (0..4u64)
            .map(|s| {
                let tx = tx.clone();
                start(&rt, s % 2 == 1, move || {
                    for i in 0..2_000 {
                        if i % 100 == 0 {
                            thread::sleep(Duration::from_micros(200));
                        }
                        tx.send(s * 2_000 + i).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        senders.into_iter().for_each(|s| s());
        let mut all: Vec<u64> = receivers.into_iter().flat_map(|r| r()).collect();
        all.sort();
        assert_eq!(all, (0..8_000).collect::<Vec<_>>(), "{capacity:?}");
    }
}

#[test]
fn try_operations_never_wait() {
    let (tx, rx) = bounded(1);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(tx.try_send(1), Ok(()));
    assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    assert_eq!(rx.try_recv(), Ok(1));

    // Rendezvous: a try succeeds only against a parked partner.
    let (tx, rx) = bounded::<u32>(0);
    assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    let receiver = thread::spawn(move || rx.recv());
    let start = Instant::now();
    loop {
        match tx.try_send(7) {
            Ok(()) => break,
            Err(TrySendError::Full(_)) => {
                assert!(start.elapsed() < Duration::from_secs(10), "the receiver never parked");
                thread::sleep(Duration::from_millis(1));
            }
            Err(TrySendError::Disconnected(_)) => panic!("the receiver is alive"),
        }
    }
    assert_eq!(receiver.join().unwrap(), Ok(7));

    let (tx, rx) = bounded::<u32>(0);
    let sender = thread::spawn(move || tx.send(8));
    let start = Instant::now();
    let value = loop {
        match rx.try_recv() {
            Ok(value) => break value,
            Err(TryRecvError::Empty) => {
                assert!(start.elapsed() < Duration::from_secs(10), "the sender never parked");
                thread::sleep(Duration::from_millis(1));
            }
            Err(TryRecvError::Disconnected) => panic!("the sender is alive"),
        }
    };
    assert_eq!(value, 8);
    assert_eq!(sender.join().unwrap(), Ok(()));
}

#[test]
fn lengths_and_capacities() {
    let (tx, rx) = bounded(3);
    assert_eq!((tx.capacity(), rx.capacity()), (Some(3), Some(3)));
    assert!(tx.is_empty() && !tx.is_full());
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    assert_eq!((tx.len(), rx.len()), (2, 2));
    tx.send(3).unwrap();
    assert!(rx.is_full());
    let (tx, rx) = bounded::<u8>(0);
    assert_eq!(tx.capacity(), Some(0));
    assert!(tx.is_full() && rx.is_empty(), "a rendezvous channel is always full and empty");
    let (tx, rx) = unbounded();
    assert_eq!(rx.capacity(), None);
    for i in 0..1000 {
        tx.send(i).unwrap();
    }
    assert_eq!(rx.len(), 1000);
    assert!(!tx.is_full());
    assert_eq!(rx.try_iter().count(), 1000);
    assert!(rx.is_empty());
}

#[test]
fn handles_are_send_sync_and_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Sender<Vec<u8>>>();
    assert_send_sync::<Receiver<Vec<u8>>>();
    let (tx, rx) = unbounded::<u8>();
    assert!(tx.same_channel(&tx.clone()));
    assert!(rx.same_channel(&rx.clone()));
    assert!(format!("{tx:?} {rx:?}").contains("Sender"));
}

#[test]
fn error_types_say_what_happened() {
    use std::error::Error;
    let errors: Vec<Box<dyn Error>> = vec![
        Box::new(SendError(1)),
        Box::new(TrySendError::Full(1)),
        Box::new(TrySendError::Disconnected(1)),
        Box::new(SendTimeoutError::Timeout(1)),
        Box::new(SendTimeoutError::Disconnected(1)),
        Box::new(RecvError),
        Box::new(TryRecvError::Empty),
        Box::new(TryRecvError::Disconnected),
        Box::new(RecvTimeoutError::Timeout),
        Box::new(RecvTimeoutError::Disconnected),
    ];
    let messages: HashSet<String> = errors.iter().map(|e| e.to_string()).collect();
    assert!(messages.len() >= 6, "distinct messages: {messages:?}");
    assert_eq!(TrySendError::from(SendError(3)), TrySendError::Disconnected(3));
    assert_eq!(SendTimeoutError::from(SendError(3)), SendTimeoutError::Disconnected(3));
    assert_eq!(TryRecvError::from(RecvError), TryRecvError::Disconnected);
    assert_eq!(RecvTimeoutError::from(RecvError), RecvTimeoutError::Disconnected);
}

#[test]
fn oneshot_between_coroutines_and_threads() {
    let rt = runtime(2);
    let (tx, rx) = oneshot();
    let waiter = rt.spawn(move || rx.recv());
    thread::sleep(Duration::from_millis(10));
    tx.send(String::from("answer")).unwrap();
    assert_eq!(waiter.join().unwrap().as_deref(), Ok("answer"));

    let (tx, rx) = oneshot::<u8>();
    let dropper = rt.spawn(move || drop(tx));
    assert_eq!(rx.recv(), Err(RecvError));
    dropper.join().unwrap();
}

// ---------------------------------------------------------------------------
// Values are dropped exactly once
// ---------------------------------------------------------------------------

/// Counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Values still buffered when the last handle goes are dropped once;
/// received ones are dropped by their receiver; none twice.
#[test]
fn buffered_values_are_dropped_exactly_once() {
    for capacity in [Capacity::Bounded(10), Capacity::Unbounded] {
        for drop_receiver_first in [false, true] {
            let drops = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = channel(capacity);
            for _ in 0..10 {
                tx.send(Counted(Arc::clone(&drops))).unwrap();
            }
            drop(rx.recv().unwrap());
            drop(rx.recv().unwrap());
            assert_eq!(drops.load(Ordering::SeqCst), 2);
            if drop_receiver_first {
                drop(rx);
                // The buffer is discarded with the last receiver.
                assert_eq!(drops.load(Ordering::SeqCst), 10, "{capacity:?}");
                let error = tx.send(Counted(Arc::clone(&drops))).unwrap_err();
                assert_eq!(drops.load(Ordering::SeqCst), 10, "the returned value is not dropped yet");
                drop(error);
                drop(tx);
            } else {
                drop(tx);
                assert_eq!(drops.load(Ordering::SeqCst), 2);
                drop(rx);
            }
            let expected = if drop_receiver_first { 11 } else { 10 };
            assert_eq!(drops.load(Ordering::SeqCst), expected, "{capacity:?}");
        }
    }
}

/// A value whose destructor uses the channel it was buffered in does not
/// deadlock (values are dropped outside the channel's lock).
#[test]
fn a_value_dropped_with_the_channel_may_use_another_handle() {
    struct SendsOnDrop(Sender<u8>);
    impl Drop for SendsOnDrop {
        fn drop(&mut self) {
            let _ = self.0.try_send(1);
        }
    }
    let (tx, rx) = unbounded::<SendsOnDrop>();
    let (inner_tx, inner_rx) = unbounded::<u8>();
    tx.send(SendsOnDrop(inner_tx.clone())).unwrap();
    drop(rx);
    drop(inner_tx);
    assert_eq!(inner_rx.iter().count(), 1);

    // A message holding a sender of its own channel: discarded (and its
    // destructor run, which drops that channel's last sender) when the
    // last receiver goes, so the channel does not keep itself alive.
    #[allow(dead_code)] // held for their destructors
    struct Loop(Sender<Loop>, Counted);
    let drops = Arc::new(AtomicUsize::new(0));
    let (loop_tx, loop_rx) = unbounded::<Loop>();
    loop_tx.send(Loop(loop_tx.clone(), Counted(Arc::clone(&drops)))).unwrap();
    drop(loop_tx);
    drop(loop_rx);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// Threads parked in send (offering a value) when the receivers all go:
/// the value comes back in the error, and is dropped once by the caller.
#[test]
fn values_of_parked_senders_are_dropped_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = bounded::<Counted>(0);
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (tx, drops) = (tx.clone(), Arc::clone(&drops));
            thread::spawn(move || tx.send(Counted(drops)).is_err())
        })
        .collect();
    thread::sleep(Duration::from_millis(20));
    drop(rx);
    for sender in senders {
        assert!(sender.join().unwrap());
    }
    assert_eq!(drops.load(Ordering::SeqCst), 4);
}
