//! Channels and coroutines that stop waiting against their will:
//! cancellation (`JoinHandle::cancel`) of coroutines parked in send, recv
//! and select, and runtime shutdown with coroutines parked on channels.
//! Each test counts every value: received exactly once, or still in the
//! channel, or (a cancelled sender's own value) dropped exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use weft::sync::channel::{Receiver, Select, Sender, bounded, unbounded};
use weft::{JoinHandle, Runtime};

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("a runtime with its worker threads")
}

#[track_caller]
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Counts its drops.
struct Counted {
    id: u64,
    drops: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Spawns `n` victims on `rt` that each count themselves in and then run
/// `wait`; returns their handles once all have arrived and had time to
/// park.
fn park_victims<R: Send + 'static>(
    rt: &Runtime,
    n: usize,
    wait: impl Fn(usize) -> R + Send + Sync + Clone + 'static,
) -> Vec<JoinHandle<R>> {
    let arrived = Arc::new(AtomicUsize::new(0));
    let handles = (0..n)
        .map(|i| {
            let (arrived, wait) = (Arc::clone(&arrived), wait.clone());
            rt.spawn(move || {
                arrived.fetch_add(1, Ordering::SeqCst);
                wait(i)
            })
        })
        .collect();
    wait_until(Duration::from_secs(30), "the victims to arrive", || arrived.load(Ordering::SeqCst) == n);
    thread::sleep(Duration::from_millis(30));
    handles
}

#[track_caller]
fn assert_cancelled<R>(handles: Vec<JoinHandle<R>>) {
    for (i, mut handle) in handles.into_iter().enumerate() {
        // Bounded: a cancel that is lost leaves its victim parked for ever
        // (it happened: a cancel deferred by another coroutine's unwind).
        match handle.join_timeout(Duration::from_secs(30)) {
            None => panic!("victim {i} (coroutine {}) was cancelled and is still parked after 30 s", handle.id()),
            Some(Ok(_)) => panic!("victim {i} got through"),
            Some(Err(error)) => assert!(error.is_cancelled(), "victim {i}: {error}"),
        }
    }
}

/// The hand-back path, made certain: receivers parked in `recv` on one
/// worker; a coroutine on that same worker hands each of them a value
/// (they are woken but cannot run: it keeps the worker) and then cancels
/// them all. Each victim unwinds with a value it was handed and never
/// took: every value must be back in the channel, in order.
#[test]
fn values_handed_to_cancelled_receivers_go_back() {
    for capacity in [Some(0), Some(4), None] {
        let rt = runtime(1);
        let (tx, rx) = match capacity {
            Some(cap) => bounded::<u64>(cap),
            None => unbounded(),
        };
        const VICTIMS: usize = 50;
        let victims = park_victims(&rt, VICTIMS, {
            let rx = rx.clone();
            move |_| rx.recv()
        });
        let sender = rt.spawn(move || {
            for i in 0..VICTIMS as u64 {
                // Each send hands its value to a parked victim: none waits.
                tx.try_send(i).expect("a parked receiver takes it");
            }
            for victim in &victims {
                victim.cancel();
            }
            victims
        });
        let victims = sender.join().unwrap();
        assert_cancelled(victims);
        let back: Vec<u64> = rx.try_iter().collect();
        let mut sorted = back.clone();
        sorted.sort();
        assert_eq!(sorted, (0..VICTIMS as u64).collect::<Vec<_>>(), "{capacity:?}: every handed value is back");
        assert!(rx.recv().is_err(), "the sender is gone");
    }
}

/// The same for victims parked in a select over two channels: the value
/// handed to a select goes back to the channel it came from.
#[test]
fn values_handed_to_cancelled_selects_go_back() {
    let rt = runtime(1);
    let (a_tx, a_rx) = bounded::<u64>(0);
    let (b_tx, b_rx) = unbounded::<u64>();
    const VICTIMS: usize = 40;
    let victims = park_victims(&rt, VICTIMS, {
        let (a_rx, b_rx) = (a_rx.clone(), b_rx.clone());
        move |_| {
            let mut select = Select::new();
            select.recv(&a_rx);
            select.recv(&b_rx);
            let operation = select.select();
            let index = operation.index();
            if index == 0 { operation.recv(&a_rx) } else { operation.recv(&b_rx) }
        }
    });
    let sender = rt.spawn(move || {
        for i in 0..VICTIMS as u64 {
            let tx = if i % 2 == 0 { &a_tx } else { &b_tx };
            tx.try_send(i).expect("a parked select takes it");
        }
        for victim in &victims {
            victim.cancel();
        }
        victims
    });
    let victims = sender.join().unwrap();
    assert_cancelled(victims);
    let a: Vec<u64> = a_rx.try_iter().collect();
    let b: Vec<u64> = b_rx.try_iter().collect();
    assert!(a.iter().all(|v| v % 2 == 0) && b.iter().all(|v| v % 2 == 1), "a value went back to the wrong channel");
    let mut all: Vec<u64> = a.into_iter().chain(b).collect();
    all.sort();
    assert_eq!(all, (0..VICTIMS as u64).collect::<Vec<_>>());
}

/// Senders parked on a rendezvous channel, offering `Counted` values; a
/// coroutine on the same worker receives some of them (completing those
/// sends) and cancels every victim. Each value is received exactly once
/// or dropped exactly once with its cancelled sender.
#[test]
fn cancelled_senders_values_are_sent_or_dropped_once() {
    let rt = runtime(1);
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = bounded::<Counted>(0);
    const VICTIMS: usize = 40;
    let victims = park_victims(&rt, VICTIMS, {
        let (tx, drops) = (tx.clone(), Arc::clone(&drops));
        move |i| tx.send(Counted { id: i as u64, drops: Arc::clone(&drops) }).map_err(|_| ())
    });
    drop(tx);
    let receiver = rt.spawn(move || {
        let taken: Vec<u64> = (0..VICTIMS / 2).map(|_| rx.try_recv().expect("a parked sender offers").id).collect();
        for victim in &victims {
            victim.cancel();
        }
        (taken, victims, rx)
    });
    let (taken, victims, rx) = receiver.join().unwrap();
    assert_cancelled(victims);
    assert_eq!(taken.len(), VICTIMS / 2);
    assert!(rx.try_recv().is_err(), "every sender is gone");
    assert_eq!(drops.load(Ordering::SeqCst), VICTIMS, "every value dropped exactly once");
}

/// Victims parked in recv, send and select are cancelled while users (2
/// coroutines, 2 OS threads) keep sending and receiving; afterwards every
/// value is accounted for exactly once: received by a user or a victim
/// before its cancellation, or still in the channel.
#[test]
fn cancel_victims_while_users_keep_going() {
    let rt = runtime(2);
    for capacity in [Some(0), Some(2), None] {
        let (tx, rx) = match capacity {
            Some(cap) => bounded::<u64>(cap),
            None => unbounded(),
        };
        let (other_tx, other_rx) = bounded::<u64>(0);
        let received = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
        const VICTIMS: usize = 300;
        let victims = park_victims(&rt, VICTIMS, {
            let (tx, rx, other_rx, received) = (tx.clone(), rx.clone(), other_rx.clone(), Arc::clone(&received));
            // (On an unbounded channel a send never parks: no victim
            // senders there, or they would never reach a cancellation point.)
            let kinds = if capacity.is_some() { 3 } else { 2 };
            move |i| match i % kinds {
                0 => loop {
                    let value = rx.recv().expect("senders remain");
                    received.lock().unwrap().push(value);
                },
                1 => loop {
                    let mut select = Select::new();
                    let mine = select.recv(&rx);
                    select.recv(&other_rx);
                    let operation = select.select();
                    if operation.index() == mine {
                        let value = operation.recv(&rx).expect("senders remain");
                        received.lock().unwrap().push(value);
                    } else {
                        let _ = operation.recv(&other_rx);
                    }
                },
                // Victim senders offer values nobody counts: tagged high.
                _ => loop {
                    tx.send(1 << 40 | i as u64).expect("receivers remain");
                },
            }
        });
        // Users: senders of the counted values, and receivers.
        const PER_USER: u64 = 3_000;
        let users_done = Arc::new(AtomicUsize::new(0));
        let mut senders: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
        for u in 0..4u64 {
            let tx = tx.clone();
            let body = move || (0..PER_USER).for_each(|i| tx.send(u * PER_USER + i).unwrap());
            senders.push(if u % 2 == 0 {
                let h = rt.spawn(body);
                Box::new(move || h.join().unwrap())
            } else {
                let h = thread::spawn(body);
                Box::new(move || h.join().unwrap())
            });
        }
        let mut receivers: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
        for u in 0..2 {
            let (rx, received, users_done) = (rx.clone(), Arc::clone(&received), Arc::clone(&users_done));
            let body = move || {
                while let Ok(value) = rx.recv_timeout(Duration::from_millis(200)) {
                    received.lock().unwrap().push(value);
                }
                users_done.fetch_add(1, Ordering::SeqCst);
            };
            receivers.push(if u == 0 {
                let h = rt.spawn(body);
                Box::new(move || h.join().unwrap())
            } else {
                let h = thread::spawn(body);
                Box::new(move || h.join().unwrap())
            });
        }
        thread::sleep(Duration::from_millis(5));
        for victim in &victims {
            victim.cancel();
        }
        assert_cancelled(victims);
        senders.into_iter().for_each(|s| s());
        drop(tx);
        receivers.into_iter().for_each(|r| r());
        drop(other_tx);
        let mut all = std::mem::take(&mut *received.lock().unwrap());
        all.extend(rx.try_iter());
        // The victim senders' values that got through are not counted.
        all.retain(|v| v >> 40 == 0);
        all.sort();
        let expected: Vec<u64> = (0..4 * PER_USER).collect();
        assert_eq!(all.len(), expected.len(), "{capacity:?}: values lost or duplicated");
        assert_eq!(all, expected, "{capacity:?}");
    }
}

/// A runtime dropped with coroutines parked in send (each holding a
/// value), in recv and in select: every value is dropped exactly once —
/// those still buffered, those offered by parked senders, and those
/// received — and the channel is usable by the threads that remain.
#[test]
fn shutdown_with_coroutines_parked_on_channels() {
    let drops = Arc::new(AtomicUsize::new(0));
    let made = Arc::new(AtomicUsize::new(0));
    let (full_tx, full_rx) = bounded::<Counted>(2);
    let (empty_tx, empty_rx) = bounded::<Counted>(0);
    let new = {
        let (drops, made) = (Arc::clone(&drops), Arc::clone(&made));
        move || {
            let id = made.fetch_add(1, Ordering::SeqCst) as u64;
            Counted { id, drops: Arc::clone(&drops) }
        }
    };
    full_tx.send(new()).unwrap();
    full_tx.send(new()).unwrap();
    let rt = runtime(2);
    let parked = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..60 {
        let (full_tx, empty_rx, full_rx2, parked, new) =
            (full_tx.clone(), empty_rx.clone(), full_rx.clone(), Arc::clone(&parked), new.clone());
        let _ = full_rx2;
        handles.push(rt.spawn(move || {
            parked.fetch_add(1, Ordering::SeqCst);
            match i % 3 {
                0 => drop(full_tx.send(new())),
                1 => drop(empty_rx.recv()),
                _ => {
                    let value = new();
                    let mut select = Select::new();
                    select.recv(&empty_rx);
                    select.send(&full_tx, value);
                    drop(select.select());
                }
            }
        }));
    }
    wait_until(Duration::from_secs(30), "the coroutines to park", || parked.load(Ordering::SeqCst) == 60);
    thread::sleep(Duration::from_millis(30));
    drop(rt);
    for handle in handles {
        assert!(handle.join().is_err(), "a coroutine parked on a channel got through the shutdown");
    }
    // The channels still work for the threads that hold them.
    empty_tx.try_send(new()).expect_err("nobody is parked in recv any more");
    assert_eq!(full_rx.try_iter().count(), 2, "the buffered values are still there");
    drop((full_tx, full_rx, empty_tx, empty_rx));
    assert_eq!(drops.load(Ordering::SeqCst), made.load(Ordering::SeqCst), "every value dropped exactly once");
}

/// Receivers and senders keep a channel alive only through their handles:
/// dropping a runtime whose coroutines hold the last handles disconnects
/// the other side.
#[test]
fn shutdown_disconnects_the_other_side() {
    let rt = runtime(2);
    let (tx, rx): (Sender<u8>, Receiver<u8>) = bounded(0);
    let parked = rt.spawn(move || rx.recv());
    thread::sleep(Duration::from_millis(20));
    drop(rt);
    assert!(parked.join().is_err());
    assert!(tx.send(1).is_err(), "the receiver went with the runtime");
}

/// Victims in short timed waits (recv_timeout, select_timeout), so that
/// many cancellations land while a victim leaves after a timeout (taking
/// a channel's lock to unregister), under contention from users on both
/// sides. Every value is accounted for exactly once.
#[test]
fn cancel_victims_in_timed_waits() {
    let rt = runtime(2);
    for round in 0..3 {
        let (tx, rx) = if round == 0 { bounded::<u64>(0) } else { bounded::<u64>(1) };
        let (_other_tx, other_rx) = unbounded::<u64>();
        let received = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
        const VICTIMS: usize = 200;
        let victims = park_victims(&rt, VICTIMS, {
            let (rx, other_rx, received) = (rx.clone(), other_rx.clone(), Arc::clone(&received));
            move |i| loop {
                if i % 2 == 0 {
                    if let Ok(value) = rx.recv_timeout(Duration::from_micros(20)) {
                        received.lock().unwrap().push(value);
                    }
                } else {
                    let mut select = Select::new();
                    select.recv(&other_rx);
                    let mine = select.recv(&rx);
                    if let Ok(operation) = select.select_timeout(Duration::from_micros(20)) {
                        if operation.index() == mine {
                            received.lock().unwrap().push(operation.recv(&rx).unwrap());
                        }
                    }
                }
            }
        });
        const PER_USER: u64 = 2_000;
        let users: Vec<_> = (0..2u64)
            .map(|u| {
                let tx = tx.clone();
                thread::spawn(move || (0..PER_USER).for_each(|i| tx.send(u * PER_USER + i).unwrap()))
            })
            .collect();
        thread::sleep(Duration::from_millis(2));
        for victim in &victims {
            victim.cancel();
        }
        assert_cancelled(victims);
        let drainer = {
            let (rx, received) = (rx.clone(), Arc::clone(&received));
            thread::spawn(move || {
                while let Ok(value) = rx.recv() {
                    received.lock().unwrap().push(value);
                }
            })
        };
        users.into_iter().for_each(|u| u.join().unwrap());
        drop(tx);
        drainer.join().unwrap();
        let mut all = std::mem::take(&mut *received.lock().unwrap());
        all.sort();
        assert_eq!(all, (0..2 * PER_USER).collect::<Vec<_>>(), "round {round}");
    }
}

/// A cancellation meeting the last sender's drop (the documented edge in
/// the channel module's cancellation paragraph): a value is handed to the
/// oldest parked receiver, the last sender goes (the other parked receiver
/// is told `RecvError`), and the first is cancelled before it runs. Its
/// value goes back to the channel after that `RecvError`: it is not lost
/// and not duplicated — the next `try_recv` returns it, once, and then the
/// channel is empty and disconnected. Every flavour.
#[test]
fn a_value_handed_back_after_the_last_sender_went_is_received_once() {
    use weft::sync::channel::{RecvError, TryRecvError};
    for capacity in [Some(0), Some(4), None] {
        let rt = runtime(1);
        let (tx, rx): (Sender<u64>, Receiver<u64>) = match capacity {
            Some(cap) => bounded(cap),
            None => unbounded(),
        };
        let mut parked = park_victims(&rt, 2, {
            let rx = rx.clone();
            move |_| rx.recv()
        });
        let witness = parked.pop().unwrap();
        let victim = parked.pop().unwrap();
        // On the receivers' one worker: neither runs until this returns.
        let driver = rt.spawn(move || {
            tx.try_send(7).expect("the oldest parked receiver takes it");
            drop(tx);
            victim.cancel();
            victim
        });
        assert_cancelled(vec![driver.join().unwrap()]);
        assert_eq!(
            witness.join().unwrap(),
            Err(RecvError),
            "{capacity:?}: the other receiver saw no value and no sender"
        );
        assert_eq!(rx.try_recv(), Ok(7), "{capacity:?}: the handed-back value is still in the channel");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "{capacity:?}: and only once");
    }
}

/// The same edge without a cancellation: a select's receive, dropped
/// without `recv`, hands its value back after another receiver was told
/// `RecvError`; the value is received once afterwards.
#[test]
fn a_dropped_selected_receive_hands_its_value_back_once() {
    use weft::sync::channel::{RecvError, TryRecvError};
    let (tx, rx) = unbounded::<u64>();
    tx.send(7).unwrap();
    let mut select = Select::new();
    select.recv(&rx);
    let operation = select.select();
    drop(tx);
    let other = rx.clone();
    assert_eq!(other.recv(), Err(RecvError), "the selected value is out of the channel");
    drop(operation);
    assert_eq!(other.try_recv(), Ok(7), "dropping the operation hands the value back");
    assert_eq!(other.try_recv(), Err(TryRecvError::Disconnected));
}
