//! Regressions found in a review of task-locals, the task-cell cache,
//! `spawn_blocking`, join handles and the clock (2026-12-06, second round).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};
use std::time::Duration;
use weft::coroutine::{Coroutine, CoroutineResult, Yielder};

/// Runs `f` on a thread of its own and fails if it takes more than 20 s (a
/// hang), passing on its panic otherwise.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(outcome);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => std::panic::resume_unwind(payload),
        Err(_) => panic!("{what}: did not finish within 20 s (hang)"),
    }
}

/// A value whose destructor panics (unless the thread already panics).
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("PanicOnDrop dropped");
        }
    }
}

/// Keeps the expected `PanicOnDrop` panics off stderr (hundreds of them in
/// the blocking-pool test); every other panic is reported as usual.
fn quiet_panic_on_drop() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() == Some(&"PanicOnDrop dropped") {
                return;
            }
            previous(info);
        }));
    });
}

/// A detached coroutine (its handle dropped before it finished) whose
/// result's destructor panics: the worker drops the last reference to the
/// cell after the coroutine returned, and the panic must not unwind the
/// worker thread (its other coroutines, and every join on them, would be
/// lost), as a panicking closure's or task-local's destructor does not.
#[test]
fn detached_result_whose_drop_panics_keeps_the_worker() {
    quiet_panic_on_drop();
    let probe = bounded("detached PanicOnDrop result", || {
        let rt = weft::Runtime::builder().workers(1).build().unwrap();
        let (gate_tx, gate_rx) = weft::sync::channel::bounded::<()>(1);
        let handle = rt.spawn(move || {
            gate_rx.recv().unwrap();
            PanicOnDrop
        });
        drop(handle); // detached: the worker holds the last reference
        gate_tx.send(()).unwrap();
        let mut probe = rt.spawn(|| 5u32);
        let joined = probe.join_timeout(Duration::from_secs(10)).map(|r| r.ok());
        // Dropping the runtime passes on a worker's panic: keep it apart.
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(rt))).is_ok();
        (joined, dropped)
    });
    assert_eq!(
        probe,
        (Some(Some(5)), true),
        "(a later coroutine's join, runtime dropped cleanly): the worker thread died of the result's destructor"
    );
}

/// The same for `spawn_blocking`: the pool thread drops the last reference
/// to a detached job's cell, and a result destructor that panics unwinds
/// that pool thread out of `thread_main` without giving back its slot in
/// the pool's thread count. After `MAX_THREADS` (512) such jobs the pool
/// believes it is full, starts no thread, and every later job waits for
/// ever in its queue.
#[test]
fn detached_blocking_results_whose_drop_panics_do_not_exhaust_the_pool() {
    quiet_panic_on_drop();
    let joined = bounded("blocking pool after panicking result drops", || {
        let rt = weft::Runtime::builder().workers(1).build().unwrap();
        let _entered = rt.enter();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        for _ in 0..512 {
            let gate = Arc::clone(&gate);
            // Dropped at once: the job finishes after it (behind the gate).
            drop(weft::spawn_blocking(move || {
                let (open, cv) = &*gate;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                PanicOnDrop
            }));
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let mut later = weft::spawn_blocking(|| 7u32);
        later.join_timeout(Duration::from_secs(10)).map(|r| r.ok())
    });
    assert_eq!(joined, Some(Some(7)), "a later spawn_blocking job never ran: the pool's thread slots leaked");
}

/// A probe value for the escaped-borrow test.
struct Probe;

static PROBE_DROPPED: AtomicBool = AtomicBool::new(false);

impl Drop for Probe {
    fn drop(&mut self) {
        PROBE_DROPPED.store(true, Ordering::SeqCst);
    }
}

weft::task_local! {
    static BORROWED: Probe = Probe;
}

thread_local! {
    /// A worker thread's stash for a suspended generator.
    static STASH: RefCell<Option<Coroutine<(), (), bool>>> = const { RefCell::new(None) };
}

/// `LocalKey::with` lends `&T` for the length of its closure, and the
/// task drops its values when its body ends. A plain `Coroutine` created
/// in the task can suspend inside a `with` and outlive the task (a
/// `thread_local!` holds it on the worker thread: safe code): the task's
/// end drops the value while that borrow is alive, and the generator,
/// resumed later by another coroutine of the worker, holds a dangling
/// reference (use after free). Here the generator only checks whether the
/// value it borrows was dropped, instead of reading it.
#[test]
fn a_task_local_borrowed_by_an_escaped_generator_is_not_dropped_under_it() {
    let alive = bounded("escaped generator", || {
        let rt = weft::Runtime::builder().workers(1).build().unwrap();
        rt.spawn(|| {
            let mut generator = Coroutine::new(|yielder: &Yielder<(), ()>, ()| {
                BORROWED.with(|_value: &Probe| {
                    yielder.suspend(());
                    // `_value` would be read here.
                    !PROBE_DROPPED.load(Ordering::SeqCst)
                })
            });
            assert!(matches!(generator.resume(()), CoroutineResult::Yield(())));
            STASH.with(|stash| *stash.borrow_mut() = Some(generator));
        })
        .join()
        .unwrap();
        // The first coroutine has ended (its task-locals were dropped);
        // the worker's only other coroutine resumes the generator.
        rt.spawn(|| {
            let mut generator = STASH.with(|stash| stash.borrow_mut().take()).expect("the same worker thread");
            match generator.resume(()) {
                CoroutineResult::Return(alive) => alive,
                CoroutineResult::Yield(()) => unreachable!(),
            }
        })
        .join()
        .unwrap()
    });
    assert!(alive, "the task-local value was dropped while a `with` borrow of it was still alive (use after free)");
}

/// A `spawn_blocking` job runs with its runtime current, so a bare spawn
/// inside it goes to that runtime (it went to the default one). A job that
/// outlives its runtime's drop and spawns then gets a handle that ends (the
/// coroutine never starts): its task must not wait for ever in an injector
/// that the drop has already drained.
#[test]
fn a_blocking_job_spawns_on_its_runtime_even_after_that_runtime_is_dropped() {
    let outcome = bounded("spawn from a job after its runtime's drop", || {
        let rt = weft::Runtime::builder().workers(1).build().unwrap();
        let (dropped_tx, dropped_rx) = mpsc::channel::<()>();
        let job = rt
            .spawn(move || {
                weft::spawn_blocking(move || {
                    dropped_rx.recv().unwrap();
                    weft::spawn(|| 1u8)
                })
            })
            .join()
            .unwrap();
        drop(rt);
        dropped_tx.send(()).unwrap();
        let mut inner = job.join().unwrap();
        inner.join_timeout(Duration::from_secs(10)).map(|joined| joined.map_err(|e| e.to_string()))
    });
    let error = match outcome {
        Some(Err(error)) => error,
        other => panic!("the job's spawn should end as its runtime's shutdown, got {other:?}"),
    };
    assert!(error.contains("shut down before it started"), "{error}");
}
