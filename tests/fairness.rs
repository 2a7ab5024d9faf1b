//! Fairness against a holder that takes the primitive again at once: Go's
//! `TestMutexFairness` (one task holds the lock across a 100 µs sleep and
//! re-locks at once, in a loop; another task takes it ten times), ported
//! onto weft, and the same shape for RwLock (both sides) and Semaphore.
//!
//! Each test runs 10 rounds, each with a fresh primitive, on coroutines (a
//! runtime with 2 workers, then one with 1 worker: the holder sleeps with
//! `weft::sleep` while it holds) and on OS threads (`std::thread::sleep`).
//! Fairness is counted, not timed: the holders' critical sections that end
//! while the waiter waits for one acquisition (it is overtaken that many
//! times). In the median round, the ten acquisitions may be overtaken fewer
//! than [`OVERTAKEN_BOUND`] times in all. The policy promises far less (for
//! the Mutex about 1 ms, its private `FAIR_AFTER`, plus one critical
//! section per acquisition: about `FAIR_AFTER / HOLD` + 1 = 11 overtakes;
//! one phase for RwLock, FIFO for the Semaphore: one or two). A count does
//! not grow on a loaded machine, where a time would: with two busy loops
//! beside the test on 2 CPUs, a 100 µs `weft::sleep` of the holder takes
//! about 10 ms, and a fair round took 100-300 ms (the bound this test had,
//! 100 ms for the median round, failed there) while overtaken about 20
//! times (the median round 71 at most, in eight runs). Before the Mutex
//! kept a wait's start across re-parks, one round took 3.5-6 s on
//! coroutines and up to 0.5 s on OS threads. With that bug put back (a fresh `FairWait` at each park), three
//! runs on this 2-CPU machine: the median round was overtaken 1 556-3 851
//! times on 1 worker, 217-2 018 on 2 workers, 8-269 on OS threads (where
//! the 100 ms time bound did not catch it either: 2.4-55 ms); with the
//! policy intact, 57-76 times for the Mutex, 38 at most for the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weft::sync::{Mutex, RwLock, Semaphore};

/// How long a holder keeps the primitive before it lets go and takes it again.
const HOLD: Duration = Duration::from_micros(100);
/// The waiter's pause between two acquisitions (Go's test sleeps as long).
const PAUSE: Duration = Duration::from_micros(100);
/// Acquisitions by the waiter per round.
const TAKES: usize = 10;
const ROUNDS: usize = 10;
/// The median round's ten acquisitions must be overtaken fewer times than
/// this, in all (module docs: the policy allows about 110 for the Mutex).
const OVERTAKEN_BOUND: u64 = 300;
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
/// Counts the holders' critical sections that end while `take` waits. Fails
/// if the median round's acquisitions were overtaken `OVERTAKEN_BOUND`
/// times or more in all (on OS threads only if `bounded_on_threads`), or if
/// a round took `ROUND_LIMIT`.
///
/// `bounded_on_threads: false` for RwLock: its waiters spin and then call
/// `sched_yield` a bounded number of times before they queue (rwlock/raw.rs,
/// "Waiting"), and its phase promises are about queued waiters. On a
/// saturated CPU each yield of the waiter's OS thread gives a busy process
/// a time slice while the holder threads, woken from their sleeps, go on:
/// with two busy loops beside it, the median round was overtaken 480-2 300
/// times on OS threads (100-320 ms, over the old 100 ms time bound too),
/// and 13-25 times on an idle machine. A waiter that never gets in still
/// fails at `ROUND_LIMIT`.
fn scenario<P: Send + Sync + 'static>(
    what: &'static str,
    bounded_on_threads: bool,
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
            let mut rounds = Vec::with_capacity(ROUNDS);
            for round in 0..ROUNDS {
                let primitive = Arc::new(new());
                let stop = Arc::new(AtomicBool::new(false));
                let holding = Arc::new(AtomicBool::new(false));
                let holds = Arc::new(AtomicU64::new(0));
                let hogs: Vec<Task<()>> = (0..holders)
                    .map(|_| {
                        let (primitive, stop, holding, holds) =
                            (Arc::clone(&primitive), Arc::clone(&stop), Arc::clone(&holding), Arc::clone(&holds));
                        Task::spawn(runtime.as_ref(), move || {
                            while !stop.load(Ordering::Relaxed) {
                                hold(&primitive, side);
                                holds.fetch_add(1, Ordering::SeqCst);
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
                    let mut overtaken = 0;
                    for _ in 0..TAKES {
                        side.nap(PAUSE);
                        let before = holds.load(Ordering::SeqCst);
                        total += take(&p);
                        overtaken += holds.load(Ordering::SeqCst) - before;
                    }
                    (total, overtaken)
                });
                let (total, overtaken) = waiter.join();
                stop.store(true, Ordering::Relaxed);
                for hog in hogs {
                    hog.join();
                }
                eprintln!(
                    "{what}, {side:?}, round {round}: {TAKES} acquisitions took {total:?}, overtaken {overtaken}"
                );
                assert!(total < ROUND_LIMIT, "{what}, {side:?}, round {round}: {TAKES} acquisitions took {total:?}");
                rounds.push((overtaken, total));
            }
            rounds.sort();
            let (median, slowest) = (rounds[ROUNDS / 2], rounds.iter().map(|r| r.1).max().expect("rounds"));
            eprintln!(
                "{what}, {side:?}: per round, median overtaken {} ({:?}), slowest {slowest:?}",
                median.0, median.1
            );
            assert!(
                median.0 < OVERTAKEN_BOUND || (matches!(side, Side::Threads) && !bounded_on_threads),
                "{what}, {side:?}: in the median round the waiter's {TAKES} acquisitions were overtaken {} times \
                 by the holders (rounds, (overtaken, took)): {rounds:?}",
                median.0
            );
        }
        let _ = done.send(());
    });
    match finished.recv_timeout(WATCHDOG) {
        Ok(()) => runner.join().expect("the scenario panicked"),
        // Disconnected: the runner panicked (it dropped `done` while it
        // unwinds, so it may not count as finished yet).
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(payload) = runner.join() {
                std::panic::resume_unwind(payload);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: not finished within {WATCHDOG:?}: the waiter starves")
        }
    }
}

/// Go's TestMutexFairness: a waiter is not kept out by a holder that
/// re-locks at once (Mutex's eventual fairness: a waiter that has waited
/// more than about 1 ms is handed the lock).
#[test]
fn mutex_waiter_gets_in_behind_a_holder_that_relocks() {
    scenario(
        "Mutex",
        true,
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
        false,
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
        false,
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
        true,
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
