//! Soundness audit: edges reachable from safe code.
//!
//! Tests from a soundness review: destructors that run once when a callback
//! panics, a value that is not lost, a lock that is released, a join that
//! cannot wait for itself. (The review's one unsound finding, two selects
//! sharing one `select!` case through the hidden `__private` API, is now a
//! compile error: see the `compile_fail` doctests of `RecvCase::as_case`.)

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use weft::coroutine::{Coroutine, CoroutineResult, Yielder};
use weft::sync::channel::{Select, unbounded};
use weft::sync::{
    Condvar, MappedMutexGuard, MappedRwLockWriteGuard, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use weft::{JoinErrorKind, Runtime};

/// Counts its drops in a shared counter.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn one_worker() -> Runtime {
    Runtime::builder().workers(1).build().expect("a runtime")
}

// ---------------------------------------------------------------------------
// Edges pinned down.
// ---------------------------------------------------------------------------

/// `mem::forget` of an `EnterGuard` ends its borrow, so the runtime can be
/// dropped while this thread still has it entered. A later bare spawn must
/// fail cleanly (Shutdown), not queue a task nobody runs (a hung join), and
/// `spawn_blocking` still runs on the pool that the entered runtime keeps.
#[test]
fn forgotten_enter_guard_then_dropped_runtime_fails_spawns_cleanly() {
    std::thread::spawn(|| {
        let runtime = one_worker();
        std::mem::forget(runtime.enter());
        drop(runtime);
        let error = weft::spawn(|| 1).join().unwrap_err();
        assert_eq!(error.kind(), JoinErrorKind::Shutdown);
        assert_eq!(weft::spawn_blocking(|| 2).join().unwrap(), 2);
    })
    .join()
    .unwrap();
}

/// A coroutine that swallows the forced unwind of its drop and suspends
/// again with a value whose destructor panics: the panic leaves
/// `Coroutine::drop` (the stack is leaked), the value is dropped exactly
/// once, and nothing else runs on the leaked stack.
#[test]
fn coroutine_drop_whose_yielded_value_panics_drops_it_once() {
    struct Bomb(Arc<AtomicUsize>);
    impl Drop for Bomb {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
            panic!("bomb");
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let after = Arc::new(AtomicUsize::new(0));
    let (d, a) = (Arc::clone(&drops), Arc::clone(&after));
    let mut c = Coroutine::<(), Option<Bomb>, ()>::new(move |y, ()| {
        let _after = Counted(a);
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            y.suspend(None);
        }));
        assert!(weft::is_forced_unwind(&*caught.unwrap_err()));
        y.suspend(Some(Bomb(d)));
        unreachable!("never resumed again");
    });
    assert!(matches!(c.resume(()), CoroutineResult::Yield(None)));
    let dropped = panic::catch_unwind(AssertUnwindSafe(|| drop(c)));
    assert!(dropped.is_err(), "the bomb's panic leaves Coroutine::drop");
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the yielded value is dropped exactly once");
    assert_eq!(after.load(Ordering::SeqCst), 0, "the leaked stack's values are not dropped");
}

/// An outer coroutine's `&Yielder` passed (safely) as the input of an inner
/// coroutine: the inner one suspends the outer one from its own stack. Both
/// values come out, and dropping the outer coroutine while it is suspended
/// on the inner stack unwinds both stacks, each destructor once.
#[test]
fn outer_coroutine_suspended_from_inner_stack_unwinds_both_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = Arc::clone(&drops);
    let mut outer = Coroutine::<(), u32, ()>::new(move |outer_yielder, ()| {
        let _a = Counted(Arc::clone(&d));
        let d = Arc::clone(&d);
        let mut inner = Coroutine::<&Yielder<(), u32>, (), ()>::new(move |_, oy| {
            let _b = Counted(d);
            oy.suspend(1);
            oy.suspend(2);
            oy.suspend(3);
        });
        inner.resume(outer_yielder);
    });
    assert_eq!(outer.resume(()), CoroutineResult::Yield(1));
    assert_eq!(outer.resume(()), CoroutineResult::Yield(2));
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(outer);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}

/// A `SelectedOperation` that is forgotten: its received value goes back to
/// the channel (when the `Select` is dropped, or at its next select) and is
/// received and dropped exactly once.
#[test]
fn forgotten_selected_operation_value_goes_back_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = unbounded::<Counted>();
    tx.send(Counted(Arc::clone(&drops))).unwrap();
    {
        let mut select = Select::new();
        select.recv(&rx);
        std::mem::forget(select.select());
        // Selecting again first gives the forgotten value back, then takes it.
        let op = select.select();
        std::mem::forget(op);
    } // dropping the Select gives it back once more
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    assert_eq!(rx.len(), 1);
    drop(rx.try_recv().unwrap());
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert!(rx.try_recv().is_err());
}

/// A `wait_while` predicate that panics on its second call (after a wait):
/// the lock is released by the unwinding guard, and the condvar forgets the
/// waiter (a later wait with another mutex does not panic with "two
/// mutexes").
#[test]
fn condvar_predicate_panic_releases_the_lock() {
    let lock = Mutex::new(0u32);
    let condvar = Condvar::new();
    let calls = Cell::new(0);
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let (_guard, _timeout) = condvar.wait_timeout_while(lock.lock(), Duration::from_millis(1), |_| {
            calls.set(calls.get() + 1);
            if calls.get() == 2 {
                panic!("predicate");
            }
            true
        });
    }));
    assert!(result.is_err());
    assert_eq!(calls.get(), 2);
    assert!(lock.try_lock().is_some(), "the lock was released during the unwind");
    let other = Mutex::new(());
    let (_g, timeout) = condvar.wait_timeout(other.lock(), Duration::from_millis(1));
    assert!(timeout.timed_out());
}

/// A `map` closure that panics, for each guard kind: the lock is released.
#[test]
fn guard_map_closure_panic_releases_the_lock() {
    let m = Mutex::new((1u8, 2u8));
    assert!(
        panic::catch_unwind(AssertUnwindSafe(|| MutexGuard::map(m.lock(), |_| -> &mut u8 { panic!("map") }))).is_err()
    );
    assert!(m.try_lock().is_some());
    assert!(
        panic::catch_unwind(AssertUnwindSafe(|| {
            let g = MutexGuard::map(m.lock(), |p| p);
            MappedMutexGuard::map(g, |_| -> &mut u8 { panic!("map") })
        }))
        .is_err()
    );
    assert!(m.try_lock().is_some());
    let rw = RwLock::new((1u8, 2u8));
    assert!(
        panic::catch_unwind(AssertUnwindSafe(|| RwLockWriteGuard::map(rw.write(), |_| -> &mut u8 { panic!("map") })))
            .is_err()
    );
    assert!(rw.try_write().is_some());
    assert!(
        panic::catch_unwind(AssertUnwindSafe(|| {
            let g = RwLockWriteGuard::map(rw.write(), |p| p);
            MappedRwLockWriteGuard::map(g, |_| -> &mut u8 { panic!("map") })
        }))
        .is_err()
    );
    assert!(rw.try_write().is_some());
    assert!(
        panic::catch_unwind(AssertUnwindSafe(|| RwLockReadGuard::map(rw.read(), |_| -> &u8 { panic!("map") })))
            .is_err()
    );
    assert!(rw.try_write().is_some(), "the read lock was released");
}

weft::task_local! {
    static FLAKY: u32 = {
        static TRIES: AtomicUsize = AtomicUsize::new(0);
        if TRIES.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("first init fails");
        }
        42
    };
}

/// A task-local initialiser that panics leaves no value behind: the next
/// access in the same coroutine initialises again.
#[test]
fn task_local_init_panic_then_retry() {
    let runtime = one_worker();
    let value = runtime.block_on(|| {
        assert!(panic::catch_unwind(|| FLAKY.with(|v| *v)).is_err());
        FLAKY.with(|v| *v)
    });
    assert_eq!(value, 42);
}

weft::task_local! {
    static CANARY: RefCell<Vec<u64>> = RefCell::new(vec![0xC0FFEE; 4]);
}

std::thread_local! {
    static PARKED_GENERATOR: RefCell<Option<Coroutine<(), u64, ()>>> = const { RefCell::new(None) };
}

/// A generator made by task A suspends inside `CANARY.with` (holding A's
/// `&T`), outlives A (kept in a `thread_local!`), and is resumed by task B
/// of the same worker: the reference still reads A's intact value (A's
/// values were leaked at its end, not freed), and B's own value is separate.
#[test]
fn generator_suspended_in_task_local_with_outlives_its_task() {
    let runtime = one_worker();
    runtime
        .spawn(|| {
            CANARY.with(|c| c.borrow_mut()[0] = 1);
            let mut g = Coroutine::<(), u64, ()>::new(|y, ()| {
                CANARY.with(|c| {
                    y.suspend(c.borrow().iter().sum());
                    // Big allocations in between would reuse a freed box.
                    y.suspend(c.borrow().iter().sum());
                });
            });
            assert_eq!(g.resume(()), CoroutineResult::Yield(1 + 3 * 0xC0FFEE));
            PARKED_GENERATOR.with(|p| *p.borrow_mut() = Some(g));
        })
        .join()
        .unwrap();
    let seen = runtime
        .spawn(|| {
            let junk: Vec<Vec<u64>> = (0..64).map(|i| vec![i; 4]).collect();
            drop(junk);
            let mut g = PARKED_GENERATOR.with(|p| p.borrow_mut().take()).expect("same worker");
            let seen = g.resume(());
            assert_eq!(g.resume(()), CoroutineResult::Return(()));
            (seen, CANARY.with(|c| c.borrow()[0]))
        })
        .join()
        .unwrap();
    assert_eq!(seen, (CoroutineResult::Yield(1 + 3 * 0xC0FFEE), 0xC0FFEE));
}

/// `SelectedOperation::recv` with the wrong receiver panics (its check);
/// the operation, dropped during that unwind, gives the received value back
/// to its channel: nothing is lost or dropped.
#[test]
fn selected_operation_with_wrong_receiver_gives_the_value_back() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = unbounded::<Counted>();
    let (_other_tx, other_rx) = unbounded::<Counted>();
    tx.send(Counted(Arc::clone(&drops))).unwrap();
    let mut select = Select::new();
    select.recv(&rx);
    let result = panic::catch_unwind(AssertUnwindSafe(|| select.select().recv(&other_rx).map(drop)));
    assert!(result.is_err(), "a receive case on another channel is refused");
    drop(select);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(rx.try_recv().expect("the value went back to its channel"));
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

/// A `spawn_blocking` job that joins its own handle panics, as a coroutine
/// that does so does. Before the fix the check saw only coroutines: the
/// job's `join` waited for ever, holding its pool thread (shown here with
/// `join_timeout`, which timed out).
#[test]
fn spawn_blocking_job_joining_itself_is_refused() {
    let runtime = one_worker();
    let _entered = runtime.enter();
    let (handle_tx, handle_rx) = weft::sync::channel::oneshot::<weft::JoinHandle<()>>();
    let (verdict_tx, verdict_rx) = weft::sync::channel::oneshot::<&'static str>();
    let job = weft::spawn_blocking(move || {
        let mut me = handle_rx.recv().unwrap();
        let verdict = match panic::catch_unwind(AssertUnwindSafe(|| me.join_timeout(Duration::from_millis(50)))) {
            Err(_) => "panicked (refused)",
            Ok(None) => "timed out (a plain join would wait for ever)",
            Ok(Some(_)) => "returned a result",
        };
        verdict_tx.send(verdict).unwrap();
    });
    handle_tx.send(job).unwrap();
    assert_eq!(verdict_rx.recv().unwrap(), "panicked (refused)");
}
