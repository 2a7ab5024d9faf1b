//! A coroutine that parks while a started coroutine waits at the front of
//! its worker's run queue (and the worker's round would do nothing else)
//! switches straight to that coroutine instead of passing through the
//! worker, as a yield does. These tests park coroutines with other
//! coroutines of their worker runnable, so that their parks take that
//! switch, and check what the worker's round used to give them: wakes in
//! order and never lost, cancellation, shutdown, the dump's park time.
//!
//! Each test runs under a watchdog, as in tests/yield.rs: a wake lost by
//! the switch hangs the test, which then fails with a message.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;
use weft::sync::{Condvar, Mutex, channel};
use weft::{CoroutineState, Runtime};

/// The most any test here may take; each needs well under a second.
const WATCHDOG: Duration = Duration::from_secs(60);

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("a runtime with its worker threads")
}

/// Runs `body` on a helper thread and fails the test if it takes longer
/// than [`WATCHDOG`]; a panic in `body` fails the test with its payload.
fn watched(body: impl FnOnce() + Send + 'static) {
    common::watched(WATCHDOG, body);
}

/// Yields until `stop` is set: keeps a started coroutine at the front of
/// its worker's run queue whenever another coroutine of the worker parks.
fn yield_until(stop: &AtomicBool) -> u64 {
    let mut turns = 0;
    while !stop.load(Ordering::Relaxed) {
        weft::yield_now();
        turns += 1;
    }
    turns
}

/// A coroutine of `rt` that runs [`yield_until`] `stop`.
fn spawn_yielder(rt: &Runtime, stop: &Arc<AtomicBool>) -> weft::JoinHandle<u64> {
    let stop = Arc::clone(stop);
    rt.spawn(move || yield_until(&stop))
}

/// A ring of coroutines on one worker passes a counter through rendezvous
/// channels while two others yield: every receive parks with a started
/// coroutine runnable, and every value arrives once, in order.
#[test]
fn a_ring_of_parks_beside_yielders_passes_every_value_in_order() {
    watched(|| {
        const RING: usize = 8;
        const LAPS: u64 = 5_000;
        let rt = runtime(1);
        let stop = Arc::new(AtomicBool::new(false));
        let yielders: Vec<_> = (0..2).map(|_| spawn_yielder(&rt, &stop)).collect();
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..RING).map(|_| channel::bounded::<u64>(0)).unzip();
        let mut members = Vec::new();
        for (i, rx) in receivers.into_iter().enumerate() {
            let tx = senders[(i + 1) % RING].clone();
            members.push(rt.spawn(move || {
                let mut expected = i as u64;
                let mut got = 0;
                while let Ok(value) = rx.recv() {
                    assert_eq!(value, expected, "member {i}: values out of order");
                    got += 1;
                    expected += RING as u64;
                    if value + 1 < LAPS * RING as u64 {
                        tx.send(value + 1).expect("the next member receives");
                    } else {
                        break;
                    }
                }
                got
            }));
        }
        senders[0].send(0).expect("member 0 receives");
        drop(senders);
        let received: u64 = members.into_iter().map(|m| m.join().expect("a ring member")).sum();
        assert_eq!(received, LAPS * RING as u64, "every value received exactly once");
        stop.store(true, Ordering::Relaxed);
        for y in yielders {
            assert!(y.join().expect("a yielder") > 0, "the yielders ran between the parks");
        }
    });
}

/// Mutex+Condvar hand-offs between coroutines of one worker, with a yielder
/// beside them and OS threads notifying too: no wake is lost.
#[test]
fn condvar_hand_offs_beside_a_yielder_lose_no_wake() {
    watched(|| {
        const ROUNDS: u64 = 20_000;
        let rt = runtime(1);
        let stop = Arc::new(AtomicBool::new(false));
        let yielder = spawn_yielder(&rt, &stop);
        let pair = Arc::new((Mutex::new(0u64), Condvar::new()));
        let players: Vec<_> = (0..2u64)
            .map(|me| {
                let pair = Arc::clone(&pair);
                rt.spawn(move || {
                    let (turn, cv) = &*pair;
                    for _ in 0..ROUNDS {
                        let mut t = cv.wait_while(turn.lock(), |t| *t % 2 != me);
                        *t += 1;
                        drop(t);
                        cv.notify_all();
                    }
                })
            })
            .collect();
        for p in players {
            p.join().expect("a player");
        }
        assert_eq!(*pair.0.lock(), 2 * ROUNDS);
        stop.store(true, Ordering::Relaxed);
        yielder.join().expect("the yielder");
    });
}

/// A coroutine parked (in a receive) while another of its worker was
/// runnable is cancelled from an OS thread: it unwinds, its receiver goes,
/// and the channel tells the sender so.
#[test]
fn a_coroutine_parked_beside_a_yielder_is_cancelled() {
    watched(|| {
        let rt = runtime(1);
        let stop = Arc::new(AtomicBool::new(false));
        let yielder = spawn_yielder(&rt, &stop);
        let (tx, rx) = channel::bounded::<u32>(0);
        let parked = Arc::new(AtomicBool::new(false));
        let receiver = {
            let parked = Arc::clone(&parked);
            rt.spawn(move || {
                parked.store(true, Ordering::Relaxed);
                rx.recv()
            })
        };
        while !parked.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(20));
        receiver.cancel();
        let error = receiver.join().expect_err("cancelled in its receive");
        assert!(error.is_cancelled(), "{error}");
        assert_eq!(tx.send(5).map_err(|e| e.into_inner()), Err(5), "the receiver went with the unwind");
        stop.store(true, Ordering::Relaxed);
        yielder.join().expect("the yielder");
    });
}

/// Dropping the runtime unwinds coroutines that parked beside a yielder:
/// each destructor runs once.
#[test]
fn shutdown_unwinds_coroutines_parked_beside_a_yielder() {
    watched(|| {
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        const PARKED: usize = 16;
        let rt = runtime(1);
        let stop = Arc::new(AtomicBool::new(false));
        let yielder = spawn_yielder(&rt, &stop);
        let dropped = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock();
        let (_tx, rx) = channel::unbounded::<()>();
        for i in 0..PARKED {
            let counted = Counted(Arc::clone(&dropped));
            let started = Arc::clone(&started);
            let (gate, rx) = (Arc::clone(&gate), rx.clone());
            rt.spawn(move || {
                let _counted = counted;
                started.fetch_add(1, Ordering::SeqCst);
                if i % 2 == 0 {
                    drop(gate.lock());
                } else {
                    let _ = rx.recv();
                }
            });
        }
        while started.load(Ordering::SeqCst) < PARKED {
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(20));
        drop(rt);
        // The yielder was unwound at its yield by the same shutdown.
        assert!(yielder.join().expect_err("unwound by the shutdown").to_string().contains("shut down"));
        assert_eq!(dropped.load(Ordering::SeqCst), PARKED, "each parked coroutine's destructor ran once");
        drop(held);
    });
}

/// The dump counts a park's time from the park, whether it switched to the
/// worker or straight to the next coroutine: a receiver that ran for a while
/// (parked in a first receive) is shown parked in its second receive for
/// about as long as it has been, not since it was spawned.
#[test]
fn the_dump_times_a_park_beside_a_yielder() {
    watched(|| {
        let rt = runtime(1);
        let stop = Arc::new(AtomicBool::new(false));
        let yielder = spawn_yielder(&rt, &stop);
        let (tx, rx) = channel::bounded::<()>(0);
        let receiver = rt.spawn(move || rx.recv().is_ok() && rx.recv().is_ok());
        let id = receiver.id();
        let first_wait = Duration::from_millis(400);
        thread::sleep(first_wait);
        tx.send(()).expect("the receiver is parked");
        let second_wait = Duration::from_millis(50);
        thread::sleep(second_wait);
        let dump = rt.dump();
        let entry = dump.coroutines().iter().find(|c| c.id() == id).expect("the receiver is in the dump");
        assert!(matches!(entry.state(), CoroutineState::Parked { .. }), "{}", dump.summary());
        let parked_for = entry.in_state_for().expect("a parked coroutine's time in its state");
        assert!(parked_for >= second_wait / 2, "parked for {parked_for:?}, after sleeping {second_wait:?} beside it");
        assert!(
            parked_for < first_wait - second_wait,
            "parked for {parked_for:?}: counted from before its second park ({second_wait:?} ago)"
        );
        tx.send(()).expect("the receiver is parked again");
        assert!(receiver.join().expect("the receiver"));
        stop.store(true, Ordering::Relaxed);
        yielder.join().expect("the yielder");
    });
}
