//! Regressions found in a review of the runtime's timers, joins, cancellation and
//! blocking pool (2026-12-06).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A coroutine cancelled while it waits in `join_timeout` on a handle it
/// does not own must leave that handle usable: a later join elsewhere
/// waits for the result instead of finding the dead joiner's registration
/// (the join state stays WAITING with the unwound joiner as its waiter, so
/// the next join takes a result that is not there: "result taken twice").
#[test]
fn join_after_a_cancelled_join_timeout_waits_for_the_result() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let (gate_tx, gate_rx) = weft::sync::channel::bounded::<()>(1);
    let target = rt.spawn(move || {
        gate_rx.recv().unwrap();
        7u32
    });
    let slot = Arc::new(Mutex::new(Some(target)));
    let waiting = Arc::new(AtomicBool::new(false));
    let joiner = {
        let (slot, waiting) = (Arc::clone(&slot), Arc::clone(&waiting));
        rt.spawn(move || {
            let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
            let handle = guard.as_mut().unwrap();
            waiting.store(true, Ordering::SeqCst);
            handle.join_timeout(Duration::from_secs(3600)).is_some()
        })
    };
    while !waiting.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(20));
    joiner.cancel();
    assert!(joiner.join().unwrap_err().is_cancelled());
    let mut target = slot.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap();
    // The target waits for the gate: it cannot have finished.
    let early = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        target.join_timeout(Duration::from_millis(100)).map(|r| r.map_err(|e| e.to_string()))
    }));
    assert!(
        matches!(early, Ok(None)),
        "join_timeout on an unfinished coroutine must time out (panicked: {})",
        early.is_err()
    );
    gate_tx.send(()).unwrap();
    assert_eq!(target.join().unwrap(), 7);
}

/// Runs this test binary again for the one test `name` with `WEFT_RR_CHILD`
/// set, and returns its exit status and output (for scenarios whose
/// failure is a process abort).
fn run_child(name: &str) -> (std::process::ExitStatus, String) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("WEFT_RR_CHILD", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status, text)
}

fn is_child() -> bool {
    std::env::var_os("WEFT_RR_CHILD").is_some()
}

struct SleepOnDrop(Arc<AtomicBool>);

impl Drop for SleepOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        weft::sleep(Duration::from_millis(1000));
    }
}

/// A coroutine that panicked and whose destructor parks during that unwind
/// (here: sleeps) must survive a cancel that arrives meanwhile: starting a
/// forced unwind inside a destructor that runs during a panic aborts the
/// process. Its join reports the panic (or a cancel), and the process lives.
#[test]
fn cancel_while_a_panicking_coroutine_parks_in_a_destructor_does_not_abort() {
    const NAME: &str = "cancel_while_a_panicking_coroutine_parks_in_a_destructor_does_not_abort";
    if !is_child() {
        let (status, text) = run_child(NAME);
        assert!(status.success(), "child exited with {status}:\n{text}");
        assert!(text.contains("child joined"), "child output:\n{text}");
        return;
    }
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let in_drop = Arc::new(AtomicBool::new(false));
    let handle = {
        let in_drop = Arc::clone(&in_drop);
        rt.spawn(move || {
            let _guard = SleepOnDrop(in_drop);
            panic!("boom");
        })
    };
    while !in_drop.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(50));
    handle.cancel();
    let error = handle.join().unwrap_err();
    assert!(error.is_panic() || error.is_cancelled(), "{error}");
    println!("child joined");
}

struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("PanicOnDrop dropped");
        }
    }
}

/// A `spawn_blocking` job cancelled before it starts has its closure
/// dropped by the pool thread; a destructor that panics there must not kill
/// that thread and leave the job's join handle waiting for ever: the join
/// ends (cancelled or with the panic).
#[test]
fn cancelled_blocking_job_whose_closure_panics_on_drop_still_joins() {
    let mut exercised = false;
    for _ in 0..50 {
        let ran = Arc::new(AtomicBool::new(false));
        let guard = PanicOnDrop;
        let handle = {
            let ran = Arc::clone(&ran);
            weft::spawn_blocking(move || {
                let _guard = &guard;
                ran.store(true, Ordering::SeqCst);
            })
        };
        handle.cancel(); // usually before the new pool thread takes the job
        let mut handle = handle;
        let joined = handle.join_timeout(Duration::from_secs(10));
        assert!(joined.is_some(), "the blocking job's join never ended (ran: {})", ran.load(Ordering::SeqCst));
        if !ran.load(Ordering::SeqCst) {
            exercised = true;
            break;
        }
    }
    assert!(exercised, "every job started before its cancel: the scenario never ran");
}

/// A coroutine cancelled before it starts has its closure dropped by the
/// worker that takes it; a destructor that panics there must not take the
/// worker thread down (its other coroutines, and every join on them, would
/// be lost): the cancelled coroutine joins as cancelled, the runtime runs on.
#[test]
fn cancelled_unstarted_coroutine_whose_closure_panics_on_drop_keeps_the_worker() {
    let rt = weft::Runtime::builder().workers(1).build().unwrap();
    let outcome = rt.spawn(|| {
        let guard = PanicOnDrop;
        // One worker, and we do not park before the cancel: it cannot start.
        let handle = weft::spawn(move || {
            let _guard = &guard;
        });
        handle.cancel();
        handle.join().map_err(|e| e.is_cancelled())
    });
    let mut outcome = outcome;
    let joined = outcome.join_timeout(Duration::from_secs(10));
    assert!(matches!(joined, Some(Ok(Err(true)))), "{joined:?}");
    assert_eq!(rt.spawn(|| 5).join_timeout(Duration::from_secs(10)).map(|r| r.ok()), Some(Some(5)));
}

/// Locks a weft Mutex when dropped: in a cancelled coroutine's unwind, that
/// parks (the lock is held elsewhere) in the middle of the unwind.
struct LockOnDrop(Arc<weft::sync::Mutex<()>>, Arc<AtomicBool>);

impl Drop for LockOnDrop {
    fn drop(&mut self) {
        self.1.store(true, Ordering::SeqCst);
        drop(self.0.lock());
    }
}

/// While one coroutine of a worker is parked in the middle of an unwind
/// (here a cancel's: a destructor waits for a lock), std says the thread is
/// panicking, so a cancel of another coroutine of that worker cannot start
/// its unwind yet (it would abort the process if that coroutine were
/// unwinding too). That deferred cancel must still happen once the first
/// unwind ends. The second coroutine was woken by its cancel, found it
/// deferred, and parked again on its channel with nothing left to wake it:
/// its join waited for ever (found hung in a stress run of
/// tests/channel_cancel.rs).
#[test]
fn a_cancel_deferred_by_another_coroutines_unwind_still_happens() {
    let rt = weft::Runtime::builder().workers(1).build().unwrap();
    let lock = Arc::new(weft::sync::Mutex::new(()));
    let (go_tx, go_rx) = weft::sync::channel::bounded::<()>(1);
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = {
        let lock = Arc::clone(&lock);
        rt.spawn(move || {
            let _held = lock.lock();
            locked_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        })
    };
    locked_rx.recv().unwrap();
    // A waits on a channel nobody feeds; cancelled, its unwind parks on the lock.
    let (_a_tx, a_rx) = weft::sync::channel::bounded::<()>(1);
    let in_drop = Arc::new(AtomicBool::new(false));
    let a = {
        let guard = LockOnDrop(Arc::clone(&lock), Arc::clone(&in_drop));
        rt.spawn(move || {
            let _guard = guard;
            let _ = a_rx.recv();
        })
    };
    // B waits on a channel nobody feeds either.
    let (_b_tx, b_rx) = weft::sync::channel::bounded::<()>(1);
    let mut b = rt.spawn(move || {
        let _ = b_rx.recv();
    });
    std::thread::sleep(Duration::from_millis(50));
    a.cancel();
    while !in_drop.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(50)); // A is parked on the lock, mid-unwind
    b.cancel();
    std::thread::sleep(Duration::from_millis(50)); // B woke, found its cancel deferred
    go_tx.send(()).unwrap(); // the holder lets go: A's unwind ends
    holder.join().unwrap();
    assert!(a.join().unwrap_err().is_cancelled());
    let joined = b.join_timeout(Duration::from_secs(10)).map(|r| r.map_err(|e| e.is_cancelled()));
    assert_eq!(joined, Some(Err(true)), "the deferred cancel never happened: the coroutine stayed parked");
}
