//! `weft::sync::OnceLock` and `LazyLock`: one initialiser runs, however many
//! coroutines and threads race for it; the others wait (parking if they are
//! coroutines) and get its value. The edges: an initialiser that parks while
//! a coroutine of its own worker waits (std's `OnceLock` deadlocks there), one
//! that panics, fails, is cancelled or reaches its own cell again, waiters
//! cancelled or unwound at shutdown, values dropped exactly once.
//!
//! Each test runs under a watchdog: a wait that never ends fails the test
//! with a message instead of hanging it.

mod common;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::thread;
use std::time::{Duration, Instant};
use weft::sync::{LazyLock, OnceLock, channel};
use weft::{CoroutineState, ParkedOn, Runtime};

/// The most any test here may take; each needs well under a second.
const WATCHDOG: Duration = Duration::from_secs(60);

const EXPECTED: &str = "expected panic (tests/once.rs)";

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("a runtime with its worker threads")
}

/// Keeps the panics these tests cause on purpose out of the output.
fn quiet_expected_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        drop(runtime(1));
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if message.contains(EXPECTED) || message.contains("poisoned") || message.contains("its own initialiser") {
                return;
            }
            previous(info);
        }));
    });
}

/// Runs `body` on a helper thread and fails the test if it takes longer
/// than [`WATCHDOG`]; a panic in `body` fails the test with its payload.
fn watched(body: impl FnOnce() + Send + 'static) {
    quiet_expected_panics();
    common::watched(WATCHDOG, body);
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Waits (from an OS thread) until the dump shows `id` parked on what
/// `on` accepts.
fn wait_until_parked_on(rt: &Runtime, id: u64, on: impl Fn(ParkedOn) -> bool) {
    let started = Instant::now();
    loop {
        let dump = rt.dump();
        let parked = dump
            .coroutines()
            .iter()
            .any(|c| c.id() == id && matches!(c.state(), CoroutineState::Parked { on: what, .. } if on(what)));
        if parked {
            return;
        }
        assert!(started.elapsed() < WATCHDOG / 2, "coroutine {id} never parked as expected:\n{}", dump.summary());
        thread::sleep(Duration::from_millis(1));
    }
}

/// [`wait_until_parked_on`] a OnceLock.
fn wait_until_parked_on_once_lock(rt: &Runtime, id: u64) {
    wait_until_parked_on(rt, id, |on| matches!(on, ParkedOn::OnceLock(_)));
}

/// The case std's `OnceLock` deadlocks on: the initialiser is a coroutine
/// that parks, and another coroutine of the same (only) worker asks for the
/// value meanwhile. It parks, the initialiser resumes and finishes, and both
/// get its value.
#[test]
fn a_parking_initialiser_serves_a_coroutine_of_its_own_worker() {
    watched(|| {
        let rt = runtime(1);
        let inits = Arc::new(AtomicUsize::new(0));
        let lazy = {
            let inits = Arc::clone(&inits);
            Arc::new(LazyLock::new(move || {
                inits.fetch_add(1, Ordering::SeqCst);
                weft::sleep(Duration::from_millis(30)); // a fetch
                42u32
            }))
        };
        let first = {
            let lazy = Arc::clone(&lazy);
            rt.spawn(move || **lazy)
        };
        let second = {
            let lazy = Arc::clone(&lazy);
            rt.spawn(move || {
                weft::sleep(Duration::from_millis(5)); // the first is in its initialiser
                **lazy
            })
        };
        assert_eq!(first.join().unwrap(), 42);
        assert_eq!(second.join().unwrap(), 42);
        assert_eq!(inits.load(Ordering::SeqCst), 1, "one initialiser ran");
    });
}

/// Coroutines on two workers and OS threads race for one cell whose
/// initialisers park: in every round exactly one initialiser runs and every
/// caller gets its value.
#[test]
fn racing_coroutines_and_threads_run_one_initialiser() {
    watched(|| {
        let rt = Arc::new(runtime(2));
        for round in 0..20 {
            let cell = Arc::new(OnceLock::new());
            let inits = Arc::new(AtomicUsize::new(0));
            let init = |me: usize, inits: &AtomicUsize| {
                inits.fetch_add(1, Ordering::SeqCst);
                weft::sleep(Duration::from_micros(200)); // parks a coroutine, sleeps a thread
                me
            };
            let coroutines: Vec<_> = (0..16)
                .map(|me| {
                    let (cell, inits) = (Arc::clone(&cell), Arc::clone(&inits));
                    rt.spawn(move || *cell.get_or_init(|| init(me, &inits)))
                })
                .collect();
            let threads: Vec<_> = (16..20)
                .map(|me| {
                    let (cell, inits) = (Arc::clone(&cell), Arc::clone(&inits));
                    thread::spawn(move || *cell.get_or_init(|| init(me, &inits)))
                })
                .collect();
            let mut got: Vec<usize> = coroutines.into_iter().map(|c| c.join().unwrap()).collect();
            got.extend(threads.into_iter().map(|t| t.join().unwrap()));
            let winner = *cell.get().expect("the cell is set");
            assert!(got.iter().all(|&v| v == winner), "round {round}: callers saw {got:?}, the cell holds {winner}");
            assert_eq!(inits.load(Ordering::SeqCst), 1, "round {round}: one initialiser ran");
        }
    });
}

/// An initialiser that panics leaves the cell empty, and a coroutine that
/// waited for it runs its own; the panic reaches the first caller's join.
#[test]
fn a_panicking_initialiser_hands_the_cell_to_a_waiter() {
    watched(|| {
        let rt = runtime(1);
        let cell = Arc::new(OnceLock::new());
        let doomed = {
            let cell = Arc::clone(&cell);
            rt.spawn(move || {
                *cell.get_or_init(|| {
                    weft::sleep(Duration::from_millis(30));
                    panic!("{EXPECTED}");
                })
            })
        };
        let waiter = {
            let cell = Arc::clone(&cell);
            rt.spawn(move || {
                weft::sleep(Duration::from_millis(5));
                *cell.get_or_init(|| 7u32)
            })
        };
        assert!(doomed.join().expect_err("its initialiser panicked").is_panic());
        assert_eq!(waiter.join().unwrap(), 7);
        assert_eq!(cell.get(), Some(&7));
    });
}

/// `get_or_try_init`: an `Err` leaves the cell empty and is returned; a
/// waiter then initialises it.
#[test]
fn a_failing_initialiser_hands_the_cell_to_a_waiter() {
    watched(|| {
        let rt = runtime(1);
        let cell: Arc<OnceLock<u32>> = Arc::new(OnceLock::new());
        let failing = {
            let cell = Arc::clone(&cell);
            rt.spawn(move || {
                cell.get_or_try_init(|| {
                    weft::sleep(Duration::from_millis(30));
                    Err("unreachable host")
                })
                .copied()
            })
        };
        let waiter = {
            let cell = Arc::clone(&cell);
            rt.spawn(move || {
                weft::sleep(Duration::from_millis(5));
                cell.get_or_try_init(|| Ok::<u32, &str>(9)).copied()
            })
        };
        assert_eq!(failing.join().unwrap(), Err("unreachable host"));
        assert_eq!(waiter.join().unwrap(), Ok(9));
    });
}

/// A LazyLock whose initialiser panicked panics on every later use, with
/// a message that says so.
#[test]
fn a_lazy_lock_is_poisoned_by_a_panicking_initialiser() {
    watched(|| {
        let lazy: LazyLock<u32> = LazyLock::new(|| panic!("{EXPECTED}"));
        let first = panic::catch_unwind(AssertUnwindSafe(|| *lazy)).expect_err("the initialiser panics");
        assert!(panic_message(&*first).contains(EXPECTED), "{}", panic_message(&*first));
        let second = panic::catch_unwind(AssertUnwindSafe(|| *lazy)).expect_err("poisoned");
        assert!(panic_message(&*second).contains("poisoned"), "{}", panic_message(&*second));
    });
}

/// An initialiser that reaches its own cell again panics with a message,
/// from a coroutine and from a thread, instead of waiting for itself.
#[test]
fn reentrant_initialisation_panics_instead_of_hanging() {
    watched(|| {
        fn reenter(cell: &OnceLock<u32>) -> u32 {
            *cell.get_or_init(|| *cell.get_or_init(|| 1) + 1)
        }
        let cell = Arc::new(OnceLock::new());
        let on_thread = panic::catch_unwind(AssertUnwindSafe(|| reenter(&cell))).expect_err("reentered");
        assert!(panic_message(&*on_thread).contains("its own initialiser"), "{}", panic_message(&*on_thread));
        assert_eq!(cell.get(), None, "the cell is empty again");
        let rt = runtime(1);
        let in_coroutine = {
            let cell = Arc::clone(&cell);
            rt.spawn(move || reenter(&cell))
        };
        let error = in_coroutine.join().expect_err("reentered");
        let message = panic_message(&*error.into_panic());
        assert!(message.contains("its own initialiser"), "{message}");
        assert_eq!(*cell.get_or_init(|| 5), 5, "usable afterwards");
    });
}

/// Cancelling the initialiser while it is parked gives the cell back, and
/// the coroutine waiting for it initialises it; cancelling a waiter leaves
/// the initialiser alone.
#[test]
fn cancelling_an_initialiser_or_a_waiter_leaves_the_cell_consistent() {
    watched(|| {
        let rt = runtime(2);
        let cell = Arc::new(OnceLock::new());
        let (_never_tx, never) = channel::bounded::<u32>(0);
        let initialiser = {
            let cell = Arc::clone(&cell);
            rt.spawn(move || *cell.get_or_init(|| never.recv().unwrap_or(0)))
        };
        wait_until_parked_on(&rt, initialiser.id(), |on| matches!(on, ParkedOn::ChannelRecv(_)));
        let waiter = {
            let cell = Arc::clone(&cell);
            rt.spawn(move || *cell.get_or_init(|| 3u32))
        };
        let doomed_waiter = {
            let cell = Arc::clone(&cell);
            rt.spawn(move || *cell.get_or_init(|| 4u32))
        };
        wait_until_parked_on_once_lock(&rt, doomed_waiter.id());
        doomed_waiter.cancel();
        assert!(doomed_waiter.join().expect_err("cancelled").is_cancelled());
        assert_eq!(cell.get(), None, "the initialiser still runs");
        wait_until_parked_on_once_lock(&rt, waiter.id());
        initialiser.cancel();
        assert!(initialiser.join().expect_err("cancelled in its initialiser").is_cancelled());
        assert_eq!(waiter.join().unwrap(), 3, "the waiter initialised the cell");
        assert_eq!(cell.get(), Some(&3));
    });
}

/// Dropping the runtime unwinds coroutines parked waiting on a cell (and
/// the initialiser parked inside it); nothing hangs.
#[test]
fn shutdown_unwinds_coroutines_waiting_on_a_cell() {
    watched(|| {
        let rt = runtime(1);
        let cell = Arc::new(OnceLock::new());
        let (_never_tx, never) = channel::bounded::<u32>(0);
        let initialiser = {
            let cell = Arc::clone(&cell);
            rt.spawn(move || *cell.get_or_init(|| never.recv().unwrap_or(0)))
        };
        wait_until_parked_on(&rt, initialiser.id(), |on| matches!(on, ParkedOn::ChannelRecv(_)));
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let cell = Arc::clone(&cell);
                rt.spawn(move || *cell.get_or_init(|| 1u32))
            })
            .collect();
        for w in &waiters {
            wait_until_parked_on_once_lock(&rt, w.id());
        }
        drop(rt);
        assert!(initialiser.join().is_err(), "unwound by the shutdown");
        for w in waiters {
            assert!(w.join().is_err(), "unwound by the shutdown");
        }
        assert_eq!(*cell.get_or_init(|| 2), 2, "the cell was given back empty");
    });
}

/// `wait` parks until somebody sets the cell (it never initialises it), and
/// the dump names what it waits on.
#[test]
fn wait_parks_until_the_cell_is_set() {
    watched(|| {
        let rt = runtime(1);
        let cell = Arc::new(OnceLock::new());
        let waiter = {
            let cell = Arc::clone(&cell);
            rt.spawn(move || *cell.wait() + 1)
        };
        wait_until_parked_on_once_lock(&rt, waiter.id());
        assert_eq!(cell.get(), None);
        cell.set(41u32).expect("the cell is empty");
        assert_eq!(waiter.join().unwrap(), 42);
        let thread_waiter = {
            let cell = Arc::clone(&cell);
            thread::spawn(move || *cell.wait())
        };
        assert_eq!(thread_waiter.join().unwrap(), 41, "set already: no wait");
    });
}

/// Values are dropped exactly once: set and not taken, taken, moved out
/// with `into_inner`, refused by `set`, cloned, and a LazyLock's.
#[test]
fn values_are_dropped_exactly_once() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl Clone for Counted {
        fn clone(&self) -> Counted {
            Counted(Arc::clone(&self.0))
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let counted = || Counted(Arc::clone(&drops));
    {
        let cell = OnceLock::new();
        assert!(cell.set(counted()).is_ok());
        let refused = cell.set(counted()).expect_err("already set");
        drop(refused);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the refused value");
        let copy = cell.clone();
        drop(copy);
        assert_eq!(drops.load(Ordering::SeqCst), 2, "the clone's value");
    }
    assert_eq!(drops.load(Ordering::SeqCst), 3, "the cell's value, at its drop");
    let mut cell = OnceLock::from(counted());
    let taken = cell.take().expect("set");
    drop(cell);
    assert_eq!(drops.load(Ordering::SeqCst), 3, "nothing left in the cell");
    drop(taken);
    assert_eq!(drops.load(Ordering::SeqCst), 4);
    let cell = OnceLock::from(counted());
    drop(cell.into_inner().expect("set"));
    assert_eq!(drops.load(Ordering::SeqCst), 5);
    let lazy = LazyLock::new(counted);
    let _ = &*lazy;
    drop(lazy);
    assert_eq!(drops.load(Ordering::SeqCst), 6, "a forced LazyLock's value");
    let lazy = LazyLock::new(counted);
    assert!(LazyLock::into_inner(lazy).is_err(), "never forced: the initialiser comes back");
    assert_eq!(drops.load(Ordering::SeqCst), 6, "no value was made");
    let mut cell: OnceLock<u8> = OnceLock::default();
    assert_eq!(format!("{cell:?}"), "OnceLock(<uninit>)");
    assert_eq!(cell.get_mut(), None);
    cell.set(1).unwrap();
    *cell.get_mut().expect("set") += 1;
    assert_eq!(format!("{cell:?}"), "OnceLock(2)");
    assert_eq!(cell, OnceLock::from(2));
}
