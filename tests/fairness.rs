//! Fairness against a holder that takes the primitive again at once: Go's
//! `TestMutexFairness` (one task holds the lock across a 100 µs sleep and
//! re-locks at once, in a loop; another task takes it ten times), ported
//! onto weft, and the same shape for RwLock (both sides) and Semaphore.
//!
//! Each test runs 10 rounds, each with a fresh primitive, on coroutines (a
//! runtime with 2 workers, then one with 1 worker: the holder sleeps with
//! `weft::sleep` while it holds) and on OS threads (`std::thread::sleep`).
//! A round's ten acquisitions must take under [`BOUND`] in all. The policy
//! promises far less than that (about 1 ms, the Mutex's private
//! `FAIR_AFTER`, plus one critical section per acquisition for the Mutex,
//! one phase for RwLock, FIFO for the Semaphore); the bound is a liveness
//! margin for a shared, noisy 2-core machine. Before the Mutex kept a wait's start across re-parks, one round
//! took 3.5-6 s on coroutines and up to 0.5 s on OS threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use weft::sync::{Mutex, RwLock, Semaphore};

/// How long a holder keeps the primitive before it lets go and takes it again.
const HOLD: Duration = Duration::from_micros(100);
/// The waiter's pause between two acquisitions (Go's test sleeps as long).
const PAUSE: Duration = Duration::from_micros(100);
/// Acquisitions by the waiter per round.
const TAKES: usize = 10;
const ROUNDS: usize = 10;
/// The most the median round's ten acquisitions may take in all (a
/// loaded machine may hold one round's hand-over thread off its CPU longer;
/// a starved waiter makes every round long).
const BOUND: Duration = Duration::from_millis(100);
/// The most any one round may take.
const ROUND_LIMIT: Duration = Duration::from_secs(5);
/// A starved waiter fails the test after this instead of hanging it.
const WATCHDOG: Duration = Duration::from_secs(120);

/// Where the holders and the waiter run.
#[derive(Debug, Clone, Copy)]
enum Side {
    Coroutines { workers: usize },
    Threads,
}

const SIDES: [Side; 3] = [Side::Coroutines { workers: 2 }, Side::Coroutines { workers: 1 }, Side::Threads];

impl Side {
    /// Sleeps as a task of this side does while it holds the primitive.
    fn nap(self, duration: Duration) {
        match self {
            Side::Coroutines { .. } => weft::sleep(duration),
            Side::Threads => std::thread::sleep(duration),
        }
    }
}

/// A coroutine of `runtime`, or an OS thread when there is none.
enum Task<T> {
    Coroutine(weft::JoinHandle<T>),
    Thread(std::thread::JoinHandle<T>),
}

impl<T: Send + 'static> Task<T> {
    fn spawn(runtime: Option<&weft::Runtime>, f: impl FnOnce() -> T + Send + 'static) -> Task<T> {
        match runtime {
            Some(runtime) => Task::Coroutine(runtime.spawn(f)),
            None => Task::Thread(std::thread::spawn(f)),
        }
    }

    fn join(self) -> T {
        match self {
            Task::Coroutine(handle) => handle.join().expect("a coroutine panicked"),
            Task::Thread(handle) => handle.join().expect("a thread panicked"),
        }
    }
}

/// Runs the scenario `ROUNDS` times on each side. Per round: a fresh
/// primitive from `new`; `holders` tasks each loop `hold(&primitive, side)`
/// (take it, nap `HOLD` while holding it, let go, and at once again) until
/// the round ends; one more task waits until a holder is in, then calls
/// `take(&primitive)` `TAKES` times, pausing `PAUSE` between calls. `take`
/// acquires and releases once and returns how long the acquisition took.
/// Fails if a round's acquisitions took `BOUND` or more in all.
fn scenario<P: Send + Sync + 'static>(
    what: &'static str,
    holders: usize,
    new: fn() -> P,
    hold: fn(&P, Side),
    take: fn(&P) -> Duration,
) {
    let (done, finished) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        for side in SIDES {
            let runtime = match side {
                Side::Coroutines { workers } => {
                    Some(weft::Runtime::builder().workers(workers).build().expect("runtime"))
                }
                Side::Threads => None,
            };
            let mut totals = Vec::with_capacity(ROUNDS);
            for round in 0..ROUNDS {
                let primitive = Arc::new(new());
                let stop = Arc::new(AtomicBool::new(false));
                let holding = Arc::new(AtomicBool::new(false));
                let hogs: Vec<Task<()>> = (0..holders)
                    .map(|_| {
                        let (primitive, stop, holding) =
                            (Arc::clone(&primitive), Arc::clone(&stop), Arc::clone(&holding));
                        Task::spawn(runtime.as_ref(), move || {
                            while !stop.load(Ordering::Relaxed) {
                                hold(&primitive, side);
                                holding.store(true, Ordering::Relaxed);
                            }
                        })
                    })
                    .collect();
                let p = Arc::clone(&primitive);
                let waiter = Task::spawn(runtime.as_ref(), move || {
                    while !holding.load(Ordering::Relaxed) {
                        side.nap(PAUSE);
                    }
                    let mut total = Duration::ZERO;
                    for _ in 0..TAKES {
                        side.nap(PAUSE);
                        total += take(&p);
                    }
                    total
                });
                let total = waiter.join();
                stop.store(true, Ordering::Relaxed);
                for hog in hogs {
                    hog.join();
                }
                eprintln!("{what}, {side:?}, round {round}: {TAKES} acquisitions took {total:?}");
                assert!(total < ROUND_LIMIT, "{what}, {side:?}, round {round}: {TAKES} acquisitions took {total:?}");
                totals.push(total);
            }
            totals.sort();
            eprintln!("{what}, {side:?}: per round, median {:?}, max {:?}", totals[ROUNDS / 2], totals[ROUNDS - 1]);
            assert!(
                totals[ROUNDS / 2] < BOUND,
                "{what}, {side:?}: the median round's {TAKES} acquisitions took {:?} (rounds: {totals:?})",
                totals[ROUNDS / 2]
            );
        }
        let _ = done.send(());
    });
    match finished.recv_timeout(WATCHDOG) {
        Ok(()) => runner.join().expect("the scenario panicked"),
        Err(_) if runner.is_finished() => {
            if let Err(payload) = runner.join() {
                std::panic::resume_unwind(payload);
            }
        }
        Err(_) => panic!("{what}: not finished within {WATCHDOG:?}: the waiter starves"),
    }
}

/// Go's TestMutexFairness: a waiter is not kept out by a holder that
/// re-locks at once (Mutex's eventual fairness: a waiter that has waited
/// more than about 1 ms is handed the lock).
#[test]
fn mutex_waiter_gets_in_behind_a_holder_that_relocks() {
    scenario(
        "Mutex",
        1,
        || Mutex::new(0u64),
        |mutex, side| {
            let mut guard = mutex.lock();
            side.nap(HOLD);
            *guard += 1;
        },
        |mutex| {
            let asked = Instant::now();
            let guard = mutex.lock();
            let took = asked.elapsed();
            drop(guard);
            took
        },
    );
}

/// A writer waiting behind two readers that keep re-reading (overlapping,
/// each taking its read lock again as soon as it let go): once the writer
/// waits, new readers queue behind it.
#[test]
fn rwlock_writer_gets_in_behind_readers_that_reread() {
    scenario(
        "RwLock writer",
        2,
        || RwLock::new(0u64),
        |lock, side| {
            let guard = lock.read();
            side.nap(HOLD);
            std::hint::black_box(*guard);
        },
        |lock| {
            let asked = Instant::now();
            let mut guard = lock.write();
            let took = asked.elapsed();
            *guard += 1;
            drop(guard);
            took
        },
    );
}

/// A reader waiting behind a writer that re-writes at once: when the writer
/// leaves, the waiting readers go in before its next write.
#[test]
fn rwlock_reader_gets_in_behind_a_writer_that_rewrites() {
    scenario(
        "RwLock reader",
        1,
        || RwLock::new(0u64),
        |lock, side| {
            let mut guard = lock.write();
            side.nap(HOLD);
            *guard += 1;
        },
        |lock| {
            let asked = Instant::now();
            let guard = lock.read();
            let took = asked.elapsed();
            std::hint::black_box(*guard);
            drop(guard);
            took
        },
    );
}

/// A one-permit Semaphore whose holder gives the permit back and acquires it
/// again at once: FIFO hands the permit to the waiter queued first.
#[test]
fn semaphore_acquirer_gets_in_behind_a_holder_that_reacquires() {
    scenario(
        "Semaphore",
        1,
        || Semaphore::new(1),
        |semaphore, side| {
            let permit = semaphore.acquire();
            side.nap(HOLD);
            drop(permit);
        },
        |semaphore| {
            let asked = Instant::now();
            let permit = semaphore.acquire();
            let took = asked.elapsed();
            drop(permit);
            took
        },
    );
}
