//! Channels under stress, with a ledger: every value carries an id, and
//! the ledger counts its drops, its receipts and whether a send reported it
//! delivered. Senders and receivers (coroutines on two workers and OS
//! threads) use every operation at random — blocking, timed with timeouts of
//! a few microseconds, trying, and selects over two channels, or over both
//! ends of one — on rendezvous, small and unbounded channels, while
//! coroutines are cancelled at random, the runtime is dropped under them, or
//! the last receiver goes while senders are parked. At the end every value
//! must have been dropped exactly once, received at most once, and received
//! if its send said it was delivered; a value whose send failed or timed out
//! comes back to its sender. A destructor that panics while a channel drops
//! what it holds does not keep the other values from being dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use weft::sync::channel::{Receiver, RecvTimeoutError, Select, SendTimeoutError, Sender, bounded, unbounded};
use weft::{JoinHandle, Runtime};

/// A runtime of `workers` workers.
fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().unwrap()
}

/// A channel of capacity `cap`, or unbounded for `None`.
fn channel<T>(cap: Option<usize>) -> (Sender<T>, Receiver<T>) {
    match cap {
        Some(c) => bounded(c),
        None => unbounded(),
    }
}

/// What happened to each value: indexed by its id.
struct Ledger {
    drops: Vec<AtomicUsize>,
    received: Vec<AtomicUsize>,
    sent: Vec<AtomicBool>,
    next: AtomicU64,
}
impl Ledger {
    fn new(n: usize) -> Arc<Ledger> {
        Arc::new(Ledger {
            drops: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            received: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            sent: (0..n).map(|_| AtomicBool::new(false)).collect(),
            next: AtomicU64::new(0),
        })
    }
}
/// A value of the ledger: counts its drop.
struct V {
    id: u64,
    l: Arc<Ledger>,
}
impl V {
    fn new(l: &Arc<Ledger>) -> Option<V> {
        let id = l.next.fetch_add(1, Ordering::SeqCst);
        if id as usize >= l.drops.len() {
            return None;
        }
        Some(V { id, l: Arc::clone(l) })
    }
    fn got(self) {
        self.l.received[self.id as usize].fetch_add(1, Ordering::SeqCst);
    }
}
impl Drop for V {
    fn drop(&mut self) {
        self.l.drops[self.id as usize].fetch_add(1, Ordering::SeqCst);
    }
}

/// Every value made was dropped once, received at most once, and received
/// if its send reported it delivered.
fn check(l: &Ledger) {
    let made = (l.next.load(Ordering::SeqCst) as usize).min(l.drops.len());
    let mut bad = Vec::new();
    for i in 0..made {
        let d = l.drops[i].load(Ordering::SeqCst);
        let r = l.received[i].load(Ordering::SeqCst);
        let s = l.sent[i].load(Ordering::SeqCst);
        if d != 1 || r > 1 || (s && r != 1) {
            bad.push((i, d, r, s));
        }
    }
    assert!(bad.is_empty(), "made {made}; bad (id, drops, received, sent_ok): {:?}", &bad[..bad.len().min(20)]);
}

/// Receives what the channels still hold (values handed back after the
/// disconnection).
fn receive_leftovers(receivers: &[&Receiver<V>]) {
    for rx in receivers {
        for v in rx.try_iter() {
            v.got();
        }
    }
}

/// xorshift64.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Sends fresh values until the ledger's ids run out or the receivers are
/// gone: send, send_timeout, try_send, or a select of two sends.
fn producer(tx: &Sender<V>, tx2: &Sender<V>, l: &Arc<Ledger>, mut seed: u64) {
    while let Some(v) = V::new(l) {
        let id = v.id as usize;
        match rng(&mut seed) % 4 {
            0 => match tx.send(v) {
                Ok(()) => l.sent[id].store(true, Ordering::SeqCst),
                Err(_) => return,
            },
            1 => match tx.send_timeout(v, Duration::from_micros(rng(&mut seed) % 50)) {
                Ok(()) => l.sent[id].store(true, Ordering::SeqCst),
                Err(SendTimeoutError::Timeout(v)) => drop(v),
                Err(SendTimeoutError::Disconnected(_)) => return,
            },
            2 => match tx.try_send(v) {
                Ok(()) => l.sent[id].store(true, Ordering::SeqCst),
                Err(e) => {
                    if e.is_disconnected() {
                        return;
                    }
                }
            },
            _ => {
                let w = V::new(l);
                let wid = w.as_ref().map(|w| w.id as usize);
                let mut sel = Select::new();
                let a = sel.send(tx, v);
                if let Some(w) = w {
                    sel.send(tx2, w);
                }
                // A select that times out drops the values it held.
                if let Ok(op) = sel.select_timeout(Duration::from_micros(rng(&mut seed) % 100)) {
                    let (chan, sent) = if op.index() == a { (tx, id) } else { (tx2, wid.expect("a second case")) };
                    if op.send(chan).is_err() {
                        return;
                    }
                    l.sent[sent].store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

/// Receives until the senders are gone: recv, recv_timeout, try_recv, or a
/// select of two receives.
fn consumer(rx: &Receiver<V>, rx2: &Receiver<V>, mut seed: u64) {
    loop {
        match rng(&mut seed) % 4 {
            0 => match rx.recv() {
                Ok(v) => v.got(),
                Err(_) => return,
            },
            1 => match rx.recv_timeout(Duration::from_micros(rng(&mut seed) % 50)) {
                Ok(v) => v.got(),
                Err(RecvTimeoutError::Disconnected) => return,
                Err(_) => {}
            },
            2 => match rx.try_recv() {
                Ok(v) => v.got(),
                Err(e) => {
                    if e.is_disconnected() {
                        return;
                    }
                }
            },
            _ => {
                let mut sel = Select::new();
                let a = sel.recv(rx);
                sel.recv(rx2);
                if let Ok(op) = sel.select_timeout(Duration::from_micros(rng(&mut seed) % 100)) {
                    if op.index() == a {
                        match op.recv(rx) {
                            Ok(v) => v.got(),
                            Err(_) => return,
                        }
                    } else if let Ok(v) = op.recv(rx2) {
                        v.got();
                    }
                }
            }
        }
    }
}

/// Four producer and four consumer coroutines and two of each on OS
/// threads over two channels of capacity `cap` (`None`: unbounded); with
/// `cancel`, 40 more coroutines cancelled at random in their operations.
fn mixed(cap: Option<usize>, workers: usize, cancel: bool, seed0: u64) {
    let l = Ledger::new(20_000);
    let (tx, rx) = channel(cap);
    let (tx2, rx2) = channel(cap);
    let rt = runtime(workers);
    let mut cos: Vec<JoinHandle<()>> = Vec::new();
    let mut ths = Vec::new();
    for k in 0..6u64 {
        let (tx, tx2, l) = (tx.clone(), tx2.clone(), Arc::clone(&l));
        let seed = seed0 * 1000 + k * 7 + 1;
        if k < 4 {
            cos.push(rt.spawn(move || producer(&tx, &tx2, &l, seed)));
        } else {
            ths.push(thread::spawn(move || producer(&tx, &tx2, &l, seed)));
        }
    }
    for k in 0..6u64 {
        let (rx, rx2) = (rx.clone(), rx2.clone());
        let seed = seed0 * 1000 + k * 13 + 5;
        if k < 4 {
            cos.push(rt.spawn(move || consumer(&rx, &rx2, seed)));
        } else {
            ths.push(thread::spawn(move || consumer(&rx, &rx2, seed)));
        }
    }
    // Victims: cancelled while in operations.
    let mut victims = Vec::new();
    if cancel {
        for k in 0..40u64 {
            let (tx, tx2, rx, rx2, l) = (tx.clone(), tx2.clone(), rx.clone(), rx2.clone(), Arc::clone(&l));
            let seed = seed0 * 1000 + k * 31 + 3;
            victims.push(
                rt.spawn(move || if k % 2 == 0 { producer(&tx, &tx2, &l, seed) } else { consumer(&rx, &rx2, seed) }),
            );
        }
    }
    drop((tx, tx2));
    let start = Instant::now();
    let mut s = seed0 + 99;
    while victims.iter().any(|v| !v.is_finished()) {
        let i = (rng(&mut s) as usize) % victims.len();
        thread::sleep(Duration::from_micros(rng(&mut s) % 300));
        victims[i].cancel();
        assert!(start.elapsed() < Duration::from_secs(60), "victims did not finish");
    }
    for mut v in victims {
        let _ = v.join_timeout(Duration::from_secs(30)).expect("victim stuck");
    }
    for mut c in cos {
        c.join_timeout(Duration::from_secs(60)).expect("coroutine stuck").unwrap();
    }
    for t in ths {
        t.join().unwrap();
    }
    receive_leftovers(&[&rx, &rx2]);
    drop((rx, rx2));
    drop(rt);
    check(&l);
}

#[test]
fn mixed_no_cancel() {
    for seed in 1..4 {
        for cap in [Some(0), Some(1), Some(3), None] {
            mixed(cap, 2, false, seed);
        }
    }
}
#[test]
fn mixed_cancel() {
    for seed in 1..4 {
        for cap in [Some(0), Some(1), Some(3), None] {
            mixed(cap, 2, true, seed);
        }
    }
}

/// Runtime dropped while OS threads hammer hand-offs with coroutines.
fn shutdown_race(cap: Option<usize>, seed0: u64) {
    let l = Ledger::new(50_000);
    let (tx, rx) = channel(cap);
    let (tx2, rx2) = channel(cap);
    let rt = runtime(2);
    let mut cos = Vec::new();
    for k in 0..30u64 {
        let (tx, tx2, rx, rx2, l) = (tx.clone(), tx2.clone(), rx.clone(), rx2.clone(), Arc::clone(&l));
        let seed = seed0 * 1000 + k * 31 + 3;
        cos.push(rt.spawn(move || if k % 2 == 0 { producer(&tx, &tx2, &l, seed) } else { consumer(&rx, &rx2, seed) }));
    }
    let mut ths = Vec::new();
    for k in 0..2u64 {
        let (tx, tx2, rx, rx2, l) = (tx.clone(), tx2.clone(), rx.clone(), rx2.clone(), Arc::clone(&l));
        let seed = seed0 * 1000 + k * 17 + 9;
        if k % 2 == 0 {
            drop((rx, rx2));
            ths.push(thread::spawn(move || producer(&tx, &tx2, &l, seed)));
        } else {
            drop((tx, tx2, l));
            ths.push(thread::spawn(move || consumer(&rx, &rx2, seed)));
        }
    }
    thread::sleep(Duration::from_millis(5 + seed0 % 20));
    drop(rt);
    for c in cos {
        let _ = c.join();
    }
    drop((tx, tx2));
    let drain = thread::spawn({
        let (rx, rx2) = (rx.clone(), rx2.clone());
        move || {
            for v in rx.iter() {
                v.got();
            }
            for v in rx2.iter() {
                v.got();
            }
        }
    });
    for t in ths {
        t.join().unwrap();
    }
    drain.join().unwrap();
    receive_leftovers(&[&rx, &rx2]);
    drop((rx, rx2));
    check(&l);
}

#[test]
fn shutdown_races() {
    for seed in 1..6 {
        for cap in [Some(0), Some(1), Some(3), None] {
            shutdown_race(cap, seed);
        }
    }
}

/// Last receiver dropped from an OS thread while coroutines are parked in send / select send.
#[test]
fn last_receiver_dropped_from_thread() {
    for round in 0..20u64 {
        for cap in [0usize, 1, 2] {
            let l = Ledger::new(1000);
            let (tx, rx) = bounded::<V>(cap);
            let (tx2, _rx2) = bounded::<V>(0);
            let rt = runtime(2);
            let mut hs = Vec::new();
            for k in 0..20u64 {
                let (tx, tx2, l) = (tx.clone(), tx2.clone(), Arc::clone(&l));
                hs.push(rt.spawn(move || {
                    for _ in 0..5 {
                        let v = V::new(&l).unwrap();
                        let id = v.id as usize;
                        if k % 2 == 0 {
                            match tx.send(v) {
                                Ok(()) => l.sent[id].store(true, Ordering::SeqCst),
                                Err(e) => {
                                    drop(e.into_inner());
                                }
                            }
                        } else {
                            let mut s = Select::new();
                            let a = s.send(&tx, v);
                            s.send(&tx2, V::new(&l).unwrap());
                            let op = s.select();
                            if op.index() == a {
                                if op.send(&tx).is_ok() {
                                    l.sent[id].store(true, Ordering::SeqCst)
                                }
                            } else {
                                panic!("tx2 has no receiver waiting")
                            }
                        }
                    }
                }));
            }
            let rxs: Vec<_> = (0..3).map(|_| rx.clone()).collect();
            drop(rx);
            let mut joins = Vec::new();
            for (i, r) in rxs.into_iter().enumerate() {
                joins.push(thread::spawn(move || {
                    for _ in 0..(round as usize % 4 + i) {
                        if let Ok(v) = r.recv_timeout(Duration::from_millis(5)) {
                            v.got();
                        }
                    }
                    drop(r);
                }));
            }
            for j in joins {
                j.join().unwrap();
            }
            for mut h in hs {
                h.join_timeout(Duration::from_secs(20)).expect("stuck").unwrap();
            }
            drop((tx, tx2));
            drop(rt);
            // Values buffered when the receivers went were dropped by the
            // channel, and those not sent were given back: each dropped once.
            let made = l.next.load(Ordering::SeqCst) as usize;
            for i in 0..made {
                assert_eq!(l.drops[i].load(Ordering::SeqCst), 1, "value {i} drops");
            }
        }
    }
}

/// A value whose destructor may panic.
struct PanicDrop {
    panic: bool,
    drops: Arc<AtomicUsize>,
}
impl Drop for PanicDrop {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.panic {
            panic!("PanicDrop");
        }
    }
}

#[test]
fn panic_in_drop_of_buffered_values_on_disconnect() {
    for cap in [Some(4usize), None] {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = channel(cap);
        for i in 0..3 {
            tx.send(PanicDrop { panic: i == 0, drops: Arc::clone(&drops) }).unwrap();
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(rx)));
        assert!(r.is_err());
        assert_eq!(drops.load(Ordering::SeqCst), 3, "{cap:?}");
        let e = tx.send(PanicDrop { panic: false, drops: Arc::clone(&drops) });
        assert!(e.is_err());
        drop(e);
        drop(tx);
        assert_eq!(drops.load(Ordering::SeqCst), 4);
    }
}

#[test]
fn panic_in_drop_parked_senders_on_disconnect() {
    let rt = runtime(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = bounded::<PanicDrop>(1);
    tx.send(PanicDrop { panic: true, drops: Arc::clone(&drops) }).unwrap();
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let tx = tx.clone();
            let d = Arc::clone(&drops);
            rt.spawn(move || {
                tx.send(PanicDrop { panic: false, drops: d }).map_err(|e| {
                    drop(e.into_inner());
                })
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(50));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(rx)));
    assert!(r.is_err());
    for mut h in hs {
        assert!(h.join_timeout(Duration::from_secs(10)).expect("stuck").unwrap().is_err());
    }
    assert_eq!(drops.load(Ordering::SeqCst), 5);
}

/// Selects holding both ends of one rendezvous channel, many at once, plus plain ops.
#[test]
fn selects_on_both_ends_of_one_rendezvous() {
    for round in 0..5u64 {
        let l = Ledger::new(20_000);
        let (tx, rx) = bounded::<V>(0);
        let rt = runtime(2);
        let mut hs = Vec::new();
        for k in 0..8u64 {
            let (tx, rx, l) = (tx.clone(), rx.clone(), Arc::clone(&l));
            hs.push(rt.spawn(move || {
                let mut s = round * 100 + k + 1;
                for _ in 0..500 {
                    let Some(v) = V::new(&l) else { return };
                    let id = v.id as usize;
                    let mut sel = Select::new();
                    let a = sel.send(&tx, v);
                    // Two receive cases on the same channel: either may win.
                    sel.recv(&rx);
                    sel.recv(&rx);
                    let r = if rng(&mut s) % 2 == 0 {
                        sel.select_timeout(Duration::from_micros(rng(&mut s) % 200)).ok()
                    } else {
                        sel.try_select().ok()
                    };
                    if let Some(op) = r {
                        let i = op.index();
                        if i == a {
                            op.send(&tx).unwrap();
                            l.sent[id].store(true, Ordering::SeqCst);
                        } else {
                            op.recv(&rx).unwrap().got();
                        }
                    }
                }
            }));
        }
        for k in 0..2u64 {
            let (tx, rx, l) = (tx.clone(), rx.clone(), Arc::clone(&l));
            hs.push(rt.spawn(move || {
                let mut s = k + 77;
                for _ in 0..500 {
                    if k == 0 {
                        if let Some(v) = V::new(&l) {
                            let id = v.id as usize;
                            if tx.send_timeout(v, Duration::from_micros(rng(&mut s) % 100)).is_ok() {
                                l.sent[id].store(true, Ordering::SeqCst)
                            }
                        }
                    } else if let Ok(v) = rx.recv_timeout(Duration::from_micros(rng(&mut s) % 100)) {
                        v.got()
                    }
                }
            }));
        }
        for mut h in hs {
            h.join_timeout(Duration::from_secs(60)).expect("stuck").unwrap();
        }
        receive_leftovers(&[&rx]);
        drop((tx, rx, rt));
        check(&l);
    }
}
