//! `Select` and `select!` through the public API: fairness, timeouts,
//! default cases, exactly one operation per select, and no value lost
//! when a select loses a race.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use weft::Runtime;
use weft::select;
use weft::sync::channel::{
    Receiver, RecvError, Select, SelectTimeoutError, SendError, Sender, TrySelectError, bounded, unbounded,
};

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("a runtime with its worker threads")
}

/// Three channels that always have values: each of 30 000 selects picks
/// one at random, so each is chosen between 25 % and 42 % of the time.
#[test]
fn fair_over_three_always_ready_channels() {
    const SELECTS: usize = 30_000;
    let channels: Vec<(Sender<usize>, Receiver<usize>)> = (0..3).map(|_| unbounded()).collect();
    for (tx, _) in &channels {
        for i in 0..SELECTS {
            tx.send(i).unwrap();
        }
    }
    let mut chosen = [0usize; 3];
    for _ in 0..SELECTS {
        let mut select = Select::new();
        for (_, rx) in &channels {
            select.recv(rx);
        }
        let operation = select.select();
        let index = operation.index();
        operation.recv(&channels[index].1).unwrap();
        chosen[index] += 1;
    }
    for (i, &n) in chosen.iter().enumerate() {
        let share = n as f64 / SELECTS as f64;
        assert!((0.25..=0.42).contains(&share), "channel {i} chosen {n} times of {SELECTS} ({chosen:?})");
    }
    // The values not taken are all still there.
    let left: usize = channels.iter().map(|(_, rx)| rx.len()).sum();
    assert_eq!(left, 2 * SELECTS);
}

/// The same with the macro and send cases that are always ready.
#[test]
fn fair_over_three_always_ready_sends() {
    const SELECTS: usize = 30_000;
    let (a_tx, a_rx) = unbounded::<u8>();
    let (b_tx, b_rx) = unbounded::<u8>();
    let (c_tx, c_rx) = unbounded::<u8>();
    for _ in 0..SELECTS {
        select! {
            send(a_tx, 0) -> sent => sent.unwrap(),
            send(b_tx, 1) -> sent => sent.unwrap(),
            send(c_tx, 2) -> sent => sent.unwrap(),
        }
    }
    let counts = [a_rx.len(), b_rx.len(), c_rx.len()];
    assert_eq!(counts.iter().sum::<usize>(), SELECTS, "exactly one send per select");
    for (i, &n) in counts.iter().enumerate() {
        let share = n as f64 / SELECTS as f64;
        assert!((0.25..=0.42).contains(&share), "send {i} chosen {n} times ({counts:?})");
    }
}

#[test]
fn timeouts_never_return_early() {
    let check = |side: &str| {
        let (_tx, rx) = bounded::<u8>(0);
        let (tx2, _rx2) = bounded::<u8>(0);
        for ms in [0, 1, 2, 5, 15] {
            let timeout = Duration::from_millis(ms);
            let start = Instant::now();
            let mut select = Select::new();
            select.recv(&rx);
            select.send(&tx2, 1);
            assert!(matches!(select.select_timeout(timeout), Err(SelectTimeoutError)));
            let waited = start.elapsed();
            assert!(waited >= timeout, "{side}: select_timeout returned after {waited:?}, before {timeout:?}");
            let start = Instant::now();
            let timed_out = select! {
                recv(rx) -> _ => false,
                default(timeout) => true,
            };
            assert!(timed_out);
            assert!(start.elapsed() >= timeout, "{side}: select!'s default(timeout) ran early");
            let deadline = Instant::now() + timeout;
            let mut select = Select::new();
            select.recv(&rx);
            assert!(select.select_deadline(deadline).is_err());
            assert!(Instant::now() >= deadline, "{side}: select_deadline returned early");
        }
    };
    check("thread");
    runtime(2).block_on(move || check("coroutine"));
}

/// A default case never waits, even with a partner about to arrive; it
/// completes an operation that is ready.
#[test]
fn default_never_blocks() {
    let (tx, rx) = bounded::<u8>(0);
    let (full_tx, _full_rx) = bounded::<u8>(1);
    full_tx.send(0).unwrap();
    for _ in 0..1000 {
        let start = Instant::now();
        let mut select = Select::new();
        select.recv(&rx);
        select.send(&full_tx, 1);
        select.send(&tx, 2); // rendezvous, nobody receiving
        assert!(matches!(select.try_select(), Err(TrySelectError)));
        let defaulted = select! {
            recv(rx) -> _ => false,
            send(tx, 3) -> _ => false,
            default => true,
        };
        assert!(defaulted);
        assert!(start.elapsed() < Duration::from_secs(1), "a default case waited");
    }
    // A parked partner makes a rendezvous case ready for a default select.
    let receiver = thread::spawn(move || rx.recv());
    let start = Instant::now();
    loop {
        let sent = select! {
            send(tx, 42) -> sent => { sent.unwrap(); true }
            default => false,
        };
        if sent {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the receiver never parked");
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(receiver.join().unwrap(), Ok(42));
}

/// A select waiting on several channels is woken by any of them, from a
/// coroutine or a thread, and completes exactly that one.
#[test]
fn waits_for_whichever_comes() {
    let rt = runtime(2);
    for which in 0..3usize {
        let (a_tx, a_rx) = bounded::<usize>(0);
        let (b_tx, b_rx) = unbounded::<usize>();
        let (c_tx, c_rx) = bounded::<usize>(1);
        c_tx.send(usize::MAX).unwrap(); // full: a send case waits
        let selector = rt.spawn(move || {
            let mut select = Select::new();
            let a = select.recv(&a_rx);
            let b = select.recv(&b_rx);
            let c = select.send(&c_tx, 7);
            let operation = select.select();
            let index = operation.index();
            let result = if index == a {
                operation.recv(&a_rx).unwrap()
            } else if index == b {
                operation.recv(&b_rx).unwrap()
            } else {
                assert_eq!(index, c);
                operation.send(&c_tx).unwrap();
                7
            };
            drop(select);
            (index, result, a_rx, b_rx, c_tx)
        });
        thread::sleep(Duration::from_millis(20));
        match which {
            0 => a_tx.send(100).unwrap(),
            1 => b_tx.send(200).unwrap(),
            _ => assert_eq!(c_rx.recv(), Ok(usize::MAX)),
        }
        let (index, result, a_rx, b_rx, _c_tx) = selector.join().unwrap();
        assert_eq!(index, which);
        assert_eq!(result, [100, 200, 7][which]);
        // Nothing else happened.
        assert!(a_rx.try_recv().is_err() && b_rx.try_recv().is_err());
        if which == 2 {
            assert_eq!(c_rx.try_recv(), Ok(7));
        } else {
            assert_eq!(c_rx.try_recv(), Ok(usize::MAX));
            assert!(c_rx.try_recv().is_err(), "a send case completed too");
        }
    }
}

/// Disconnected channels are ready: a receive reports `RecvError`, a send
/// gives its value back.
#[test]
fn disconnection_completes_a_select() {
    let (tx, rx) = bounded::<u8>(0);
    let waiter = thread::spawn(move || {
        let mut select = Select::new();
        select.recv(&rx);
        select.select().recv(&rx)
    });
    thread::sleep(Duration::from_millis(10));
    drop(tx);
    assert_eq!(waiter.join().unwrap(), Err(RecvError));

    let (tx, rx) = bounded::<u8>(0);
    let waiter = thread::spawn(move || {
        let mut select = Select::new();
        select.send(&tx, 9);
        select.select().send(&tx)
    });
    thread::sleep(Duration::from_millis(10));
    drop(rx);
    assert_eq!(waiter.join().unwrap(), Err(SendError(9)));
}

/// One select with a send and a receive on the same rendezvous channel
/// cannot meet itself: it waits until someone else comes.
#[test]
fn a_select_does_not_meet_itself() {
    let (tx, rx) = bounded::<u8>(0);
    let mut select = Select::new();
    select.recv(&rx);
    select.send(&tx, 1);
    assert!(select.select_timeout(Duration::from_millis(20)).is_err());
    drop(select);
    let (tx2, rx2) = (tx.clone(), rx.clone());
    let partner = thread::spawn(move || rx2.recv());
    let mut select = Select::new();
    let receive = select.recv(&rx);
    let send = select.send(&tx, 5);
    let operation = select.select_timeout(Duration::from_secs(30)).expect("the partner receives");
    assert_eq!(operation.index(), send);
    assert_ne!(operation.index(), receive);
    operation.send(&tx).unwrap();
    assert_eq!(partner.join().unwrap(), Ok(5));
    drop(tx2);
}

/// Selects that keep losing races (short timeouts, several selectors on
/// the same channels, senders on coroutines and threads): every value is
/// received exactly once, by a select or, afterwards, from the channel.
#[test]
fn no_value_lost_when_selects_lose_races() {
    let rt = runtime(2);
    for capacity in [0usize, 1, 16] {
        let (a_tx, a_rx) = bounded::<u64>(capacity);
        let (b_tx, b_rx) = bounded::<u64>(capacity);
        let stop = Arc::new(AtomicBool::new(false));
        let selectors: Vec<_> = (0..4)
            .map(|i| {
                let (a_rx, b_rx, stop) = (a_rx.clone(), b_rx.clone(), Arc::clone(&stop));
                let body = move || {
                    let mut got = Vec::new();
                    let mut timeouts = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        select! {
                            recv(a_rx) -> v => got.push(v.unwrap()),
                            recv(b_rx) -> v => got.push(v.unwrap()),
                            default(Duration::from_micros(30)) => timeouts += 1,
                        }
                    }
                    (got, timeouts)
                };
                if i % 2 == 0 {
                    let h = rt.spawn(body);
                    Box::new(move || h.join().unwrap()) as Box<dyn FnOnce() -> (Vec<u64>, u64)>
                } else {
                    let h = thread::spawn(body);
                    Box::new(move || h.join().unwrap())
                }
            })
            .collect();
        let senders: Vec<_> = (0..4u64)
            .map(|s| {
                let tx = if s % 2 == 0 { a_tx.clone() } else { b_tx.clone() };
                let body = move || {
                    for i in 0..2_000 {
                        // A timed send may time out too: then retry.
                        let mut value = s * 2_000 + i;
                        while let Err(e) = tx.send_timeout(value, Duration::from_micros(40)) {
                            value = e.into_inner();
                        }
                    }
                };
                if s < 2 {
                    let h = rt.spawn(body);
                    Box::new(move || h.join().unwrap()) as Box<dyn FnOnce()>
                } else {
                    let h = thread::spawn(body);
                    Box::new(move || h.join().unwrap())
                }
            })
            .collect();
        senders.into_iter().for_each(|s| s());
        stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for selector in selectors {
            all.extend(selector().0);
        }
        drop((a_tx, b_tx));
        all.extend(a_rx.iter());
        all.extend(b_rx.iter());
        all.sort();
        let expected: Vec<u64> = (0..8_000).collect();
        assert_eq!(all.len(), expected.len(), "capacity {capacity}: values lost or duplicated");
        assert_eq!(all, expected, "capacity {capacity}");
    }
}

/// Select-to-select hand-offs: one side selects over sends, the other
/// over receives, on rendezvous channels; every value arrives once.
#[test]
fn select_meets_select() {
    let rt = runtime(2);
    let (a_tx, a_rx) = bounded::<u32>(0);
    let (b_tx, b_rx) = bounded::<u32>(0);
    let producer = rt.spawn(move || {
        for i in 0..5_000u32 {
            select! {
                send(a_tx, i) -> sent => sent.unwrap(),
                send(b_tx, i) -> sent => sent.unwrap(),
            }
        }
    });
    let consumer = thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            select! {
                recv(a_rx) -> v => match v { Ok(v) => got.push(v), Err(_) => break },
                recv(b_rx) -> v => match v { Ok(v) => got.push(v), Err(_) => break },
            }
        }
        got
    });
    producer.join().unwrap();
    let got = consumer.join().unwrap();
    assert_eq!(got, (0..5_000).collect::<Vec<_>>(), "a single producer's values arrive in order");
}

/// A received value whose operation is dropped without `recv` goes back
/// to the channel; an unsent value is dropped with the select.
#[test]
fn values_of_an_unfinished_select_are_not_lost() {
    let (tx, rx) = unbounded::<u32>();
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    {
        let mut select = Select::new();
        select.recv(&rx);
        let operation = select.select();
        assert_eq!(operation.index(), 0);
        drop(operation);
    }
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), [1, 2], "the dropped operation's value went back, in front");

    let drops = Arc::new(AtomicUsize::new(0));
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (full_tx, _full_rx) = bounded::<Counted>(0);
    let (_ready_tx, ready_rx) = unbounded::<u8>();
    _ready_tx.send(0).unwrap();
    let mut select = Select::new();
    select.send(&full_tx, Counted(Arc::clone(&drops)));
    select.recv(&ready_rx);
    let operation = select.select();
    assert_eq!(operation.index(), 1);
    assert_eq!(operation.recv(&ready_rx), Ok(0));
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(select);
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the unsent value is dropped once, with the select");
}

#[test]
#[should_panic(expected = "is not a recv on this channel")]
fn completing_with_the_wrong_receiver_panics() {
    let (tx, rx) = unbounded::<u8>();
    let (_other_tx, other_rx) = unbounded::<u8>();
    tx.send(1).unwrap();
    let mut select = Select::new();
    select.recv(&rx);
    select.recv(&other_rx);
    let _ = select.select().recv(&other_rx);
}

/// A select may be run again: its receive cases stay, a send case that
/// sent is spent.
#[test]
fn a_select_can_be_reused() {
    let (tx, rx) = unbounded::<u32>();
    let (out_tx, out_rx) = unbounded::<u32>();
    let mut select = Select::new();
    let receive = select.recv(&rx);
    let send = select.send(&out_tx, 10);
    let mut seen = HashMap::new();
    for i in 0..5 {
        tx.send(i).unwrap();
        let operation = select.select();
        let index = operation.index();
        if index == receive {
            operation.recv(&rx).unwrap();
        } else {
            operation.send(&out_tx).unwrap();
        }
        *seen.entry(index).or_insert(0) += 1;
    }
    assert!(seen.get(&send).copied().unwrap_or(0) <= 1, "a spent send case was chosen again");
    assert_eq!(out_rx.try_iter().count(), seen.get(&send).copied().unwrap_or(0));
}

/// An empty select waits until its timeout.
#[test]
fn an_empty_select_waits_for_its_timeout() {
    let start = Instant::now();
    let timed_out = select! {
        default(Duration::from_millis(10)) => true,
    };
    assert!(timed_out && start.elapsed() >= Duration::from_millis(10));
}

/// The hidden function behind `select!` refuses more cases than it has room
/// for, with a message, rather than indexing out of bounds. (A case passed
/// twice, which two wakers could each fill, losing a value, no longer
/// compiles: `as_case` borrows the case exclusively; see its doctests.)
#[test]
fn select_cases_refuses_too_many_cases() {
    use weft::sync::channel::__private::{RecvCase, SelectMode, select_cases};
    let (tx, rx) = weft::sync::channel::bounded::<u32>(1);
    tx.send(1).unwrap();
    let mut cases: Vec<_> = (0..17).map(|_| RecvCase::new(&rx)).collect();
    let refs: Vec<_> = cases.iter_mut().map(RecvCase::as_case).collect();
    let many = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| select_cases(&refs, SelectMode::Try)));
    let message = *many.expect_err("17 cases").downcast::<String>().unwrap();
    assert!(message.contains("at most 16"), "{message}");
    drop(refs);
    assert_eq!(rx.try_recv(), Ok(1), "the refused select took nothing");
}
