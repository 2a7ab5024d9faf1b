//! The public API's handling of bad or extreme input, from a review
//! (2026-12-06). Each test failed at commit a6225c3 (see its doc comment),
//! except `extreme_timeouts_wait_for_the_event_and_past_deadlines_do_not_wait`,
//! which covers edges no other test covers (`Duration::MAX` timeouts and
//! deadlines in the past, from a thread and from a coroutine).
//!
//! Every scenario that could hang runs on its own thread and fails after
//! 20 s instead.

use std::any::Any;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex as StdMutex};
use std::thread;
use std::time::{Duration, Instant};

use weft::Runtime;
use weft::sync::channel::{self, Select};
use weft::sync::{Barrier, Condvar, Mutex, RwLock, Semaphore, WaitGroup};

/// How long a scenario may run before it counts as a hang.
const HANG: Duration = Duration::from_secs(20);

/// Runs `f` on its own thread; fails the test if it is still running after
/// [`HANG`], and passes its panic on otherwise.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(panic::catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(HANG) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(_) => panic!("{what}: still running after {HANG:?} (a hang)"),
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<a payload that is not text>".to_string())
}

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).stall_threshold(None).build().expect("a runtime")
}

/// Runs this test binary again, running only `test` with `WEFT_API_EDGES_CHILD`
/// set; returns whether it exited successfully and its stderr.
fn run_child(test: &str) -> (bool, String) {
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("WEFT_API_EDGES_CHILD", "1")
        .output()
        .expect("the child test runs");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn in_child() -> bool {
    std::env::var_os("WEFT_API_EDGES_CHILD").is_some()
}

// ---------------------------------------------------------------------------
// RuntimeBuilder::workers
// ---------------------------------------------------------------------------

/// `RuntimeBuilder::build` documents its failures as `io::Result` errors
/// (InvalidInput for zero workers, the OS error if a worker thread cannot
/// be started). A worker count that cannot even be allocated panics instead,
/// with std's bare "capacity overflow": `build` collects one deque per
/// worker (`(0..workers).map(..).collect()`, src/runtime/mod.rs) before
/// any check. (A count that fits a `Vec` but not memory, e.g. `1 << 40`,
/// aborts the process on the failed allocation.)
#[test]
fn workers_usize_max_is_an_error_not_a_capacity_overflow_panic() {
    let outcome = panic::catch_unwind(|| Runtime::builder().workers(usize::MAX).stall_threshold(None).build());
    match outcome {
        Ok(Ok(_)) => panic!("a runtime of usize::MAX workers was built"),
        Ok(Err(error)) => {
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "workers(usize::MAX): {error}");
            assert!(error.to_string().contains("worker"), "the error should say what was wrong: {error}");
        }
        Err(payload) => panic!(
            "RuntimeBuilder::workers(usize::MAX).build() panicked with {:?} instead of returning an InvalidInput \
             error that names the worker count",
            panic_text(&*payload)
        ),
    }
}

// ---------------------------------------------------------------------------
// channel::bounded
// ---------------------------------------------------------------------------

/// `bounded(cap)` allocates its ring of `cap` slots up front
/// (`VecDeque::with_capacity(cap)`, src/sync/channel/array.rs). A capacity
/// whose ring cannot be represented panics with std's bare "capacity
/// overflow", which names neither the channel nor the capacity nor what to
/// do (`bounded(usize::MAX)` is a common way to write "practically
/// unbounded").
#[test]
fn bounded_with_an_unrepresentable_capacity_says_what_was_wrong() {
    let payload =
        panic::catch_unwind(|| drop(channel::bounded::<u64>(usize::MAX))).err().map(|payload| panic_text(&*payload));
    if let Some(text) = payload {
        assert!(
            text.contains("bounded") || text.contains("unbounded"),
            "channel::bounded::<u64>(usize::MAX) panicked with {text:?}: the message should name the channel's \
             capacity and say what to do (use unbounded(), or a smaller capacity)"
        );
    }
}

/// The same with a capacity that fits a `Vec` but not memory: 2^40 slots
/// of 8 bytes (8 TiB). The up-front allocation fails and the process
/// aborts ("memory allocation of 8796093022208 bytes failed"), so no
/// caller can even catch it. Run in a child process.
#[test]
fn bounded_with_a_huge_capacity_does_not_abort_the_process() {
    if in_child() {
        let outcome = panic::catch_unwind(|| {
            let (tx, rx) = channel::bounded::<u64>(1 << 40);
            tx.send(7).expect("the receiver is alive");
            assert_eq!(rx.recv(), Ok(7));
        });
        // Either works (a ring that grows as needed) or panics with a
        // message; anything but the abort.
        if let Err(payload) = outcome {
            eprintln!("child: bounded(1 << 40) panicked: {}", panic_text(&*payload));
        }
        return;
    }
    let (ok, stderr) = run_child("bounded_with_a_huge_capacity_does_not_abort_the_process");
    assert!(ok, "channel::bounded::<u64>(1 << 40) killed the process; its stderr:\n{stderr}");
}

// ---------------------------------------------------------------------------
// JoinHandle::join of the calling coroutine itself
// ---------------------------------------------------------------------------

/// A coroutine that joins its own handle waits for itself: `join` never
/// returned (`join_timeout` waited out its whole timeout and said "still
/// running"); both now panic, the timed join first here. std's `JoinHandle::join` of the calling thread fails at once
/// (pthread_join's EDEADLK, a panic); weft's `JoinState::wait`
/// (src/runtime/join.rs) parks without looking at who waits. The handle
/// knows its task and the caller's task is at hand, so this is a cheap check
/// that turns a silent deadlock into a clear panic.
#[test]
fn a_coroutine_joining_its_own_handle_panics_instead_of_hanging() {
    let rt = runtime(1);
    let slot: Arc<StdMutex<Option<weft::JoinHandle<()>>>> = Arc::new(StdMutex::new(None));
    let (tx, rx) = mpsc::channel();
    let handle = {
        let slot = Arc::clone(&slot);
        rt.spawn(move || {
            let me = loop {
                if let Some(me) = slot.lock().unwrap().take() {
                    break me;
                }
                weft::sleep(Duration::from_millis(1));
            };
            let mut me = Some(me);
            let timed = panic::catch_unwind(AssertUnwindSafe(|| {
                me.as_mut().unwrap().join_timeout(Duration::from_secs(3600)).map(drop)
            }));
            let outcome = match timed {
                Ok(_) => Ok(()),
                Err(_) => panic::catch_unwind(AssertUnwindSafe(move || me.take().unwrap().join())).map(drop),
            };
            let _ = tx.send(outcome.map(|_| ()).map_err(|payload| panic_text(&*payload)));
        })
    };
    *slot.lock().unwrap() = Some(handle);
    let outcome = rx.recv_timeout(HANG);
    // The coroutine may be parked for ever: leave its runtime alone rather
    // than shut it down under it.
    std::mem::forget(rt);
    match outcome {
        Err(_) => panic!("a coroutine that joined its own JoinHandle was still waiting after {HANG:?} (a deadlock)"),
        Ok(Ok(())) => panic!("a coroutine's join of itself returned"),
        Ok(Err(text)) => assert!(
            text.contains("itself") || text.contains("its own JoinHandle"),
            "the panic should say it joined itself: {text:?}"
        ),
    }
}

// ---------------------------------------------------------------------------
// RuntimeBuilder::dump_on_signal
// ---------------------------------------------------------------------------

/// Signals 32 and 33 lie between SIGSYS and SIGRTMIN (34): glibc keeps them
/// for itself (thread cancellation, setxid) and its `sigaction` refuses
/// them. `check_dump_signal` (src/sys/signal.rs) lets them through (it
/// checks only `1..=SIGRTMAX` and its reserved list), so `build` fails
/// late, after starting the workers, with the bare OS error "Invalid
/// argument (os error 22)", which names neither the signal nor the option.
#[test]
fn dump_on_a_glibc_reserved_signal_says_which_signal_and_why() {
    for signal in [32, 33] {
        let error = Runtime::builder()
            .workers(1)
            .stall_threshold(None)
            .dump_on_signal(signal)
            .build()
            .expect_err("glibc does not let a program handle signals 32 and 33");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(
            error.to_string().contains(&signal.to_string()),
            "dump_on_signal({signal}): the error should name the signal and why it cannot be used: {error:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Extreme timeouts (coverage: no other test uses Duration::MAX)
// ---------------------------------------------------------------------------

/// Every timed wait with `Duration::MAX` (the deadline saturates at the end
/// of CLOCK_MONOTONIC) still ends when its event comes, and every
/// `*_until`/`*_deadline` wait with an `Instant` in the past gives up at
/// once, from an OS thread and from a coroutine.
#[test]
fn extreme_timeouts_wait_for_the_event_and_past_deadlines_do_not_wait() {
    let rt = Arc::new(runtime(2));
    let scenario = {
        let rt = Arc::clone(&rt);
        move |who: &'static str| {
            const LATER: Duration = Duration::from_millis(30);
            let after = |f: Box<dyn FnOnce() + Send>| {
                thread::spawn(move || {
                    thread::sleep(LATER);
                    f();
                })
            };
            // join_timeout
            let mut handle = rt.spawn(|| weft::sleep(LATER));
            assert!(handle.join_timeout(Duration::MAX).expect("finished").is_ok(), "{who}: join_timeout(MAX)");
            // channel receive, send and select
            let (tx, rx) = channel::bounded::<u8>(0);
            let t = after(Box::new(move || tx.send(1).unwrap()));
            assert_eq!(rx.recv_timeout(Duration::MAX), Ok(1), "{who}: recv_timeout(MAX)");
            t.join().unwrap();
            let (tx, rx) = channel::bounded::<u8>(0);
            let t = after(Box::new(move || assert_eq!(rx.recv(), Ok(2))));
            tx.send_timeout(2, Duration::MAX).expect("received");
            t.join().unwrap();
            let (tx, rx) = channel::unbounded::<u8>();
            let t = after(Box::new(move || tx.send(3).unwrap()));
            let mut select = Select::new();
            select.recv(&rx);
            let op = select.select_timeout(Duration::MAX).expect("a case completed");
            assert_eq!(op.recv(&rx), Ok(3), "{who}: select_timeout(MAX)");
            t.join().unwrap();
            // Mutex and RwLock
            let lock = Arc::new(Mutex::new(0));
            let guard = lock.lock();
            assert!(lock.try_lock_until(Instant::now() - Duration::from_secs(1)).is_none());
            let t = {
                let lock = Arc::clone(&lock);
                thread::spawn(move || {
                    let started = Instant::now();
                    let got = lock.try_lock_for(Duration::MAX).is_some();
                    (got, started.elapsed())
                })
            };
            thread::sleep(LATER);
            drop(guard);
            assert!(t.join().unwrap().0, "{who}: try_lock_for(MAX)");
            let rw = Arc::new(RwLock::new(0));
            let write = rw.write();
            let t = {
                let rw = Arc::clone(&rw);
                thread::spawn(move || rw.try_read_for(Duration::MAX).is_some())
            };
            assert!(rw.try_write_until(Instant::now() - Duration::from_secs(1)).is_none());
            thread::sleep(LATER);
            drop(write);
            assert!(t.join().unwrap(), "{who}: try_read_for(MAX)");
            // Condvar
            let pair = Arc::new((Mutex::new(false), Condvar::new()));
            let t = {
                let pair = Arc::clone(&pair);
                after(Box::new(move || {
                    *pair.0.lock() = true;
                    pair.1.notify_all();
                }))
            };
            let (guard, result) = pair.1.wait_timeout_while(pair.0.lock(), Duration::MAX, |ready| !*ready);
            assert!(*guard && !result.timed_out(), "{who}: wait_timeout_while(MAX)");
            drop(guard);
            t.join().unwrap();
            let (guard, result) = pair.1.wait_until(pair.0.lock(), Instant::now() - Duration::from_secs(1));
            assert!(result.timed_out(), "{who}: wait_until(the past)");
            drop(guard);
            // Semaphore, Barrier, WaitGroup
            let sem = Arc::new(Semaphore::new(0));
            let t = {
                let sem = Arc::clone(&sem);
                after(Box::new(move || sem.add_permits(2)))
            };
            assert!(sem.acquire_many_timeout(2, Duration::MAX).is_some(), "{who}: acquire_many_timeout(MAX)");
            t.join().unwrap();
            let barrier = Arc::new(Barrier::new(2));
            let t = {
                let barrier = Arc::clone(&barrier);
                after(Box::new(move || {
                    let _ = barrier.wait();
                }))
            };
            assert!(barrier.wait_timeout(Duration::MAX).is_some(), "{who}: Barrier::wait_timeout(MAX)");
            t.join().unwrap();
            let wg = WaitGroup::new();
            let other = wg.clone();
            let t = after(Box::new(move || drop(other)));
            assert!(wg.wait_timeout(Duration::MAX), "{who}: WaitGroup::wait_timeout(MAX)");
            t.join().unwrap();
            // A deadline in the past: at once.
            let (_tx, rx) = channel::unbounded::<u8>();
            let start = Instant::now();
            assert!(rx.recv_deadline(Instant::now() - Duration::from_secs(3600)).is_err());
            assert!(start.elapsed() < Duration::from_secs(5), "{who}: recv_deadline(the past) waited");
        }
    };
    bounded("extreme timeouts from a thread", {
        let scenario = scenario.clone();
        move || scenario("a thread")
    });
    bounded("extreme timeouts from a coroutine", {
        let rt = Arc::clone(&rt);
        move || rt.spawn(move || scenario("a coroutine")).join().map_err(|e| e.to_string()).unwrap()
    });
    // A sleep of Duration::MAX parks the coroutine until it is cancelled.
    bounded("a cancelled sleep of Duration::MAX", move || {
        let sleeper = rt.spawn(|| weft::sleep(Duration::MAX));
        thread::sleep(Duration::from_millis(20));
        assert!(!sleeper.is_finished(), "sleep(Duration::MAX) returned");
        sleeper.cancel();
        assert!(sleeper.join().expect_err("cancelled").is_cancelled());
    });
}

// ---------------------------------------------------------------------------
// Spawning on a runtime that has shut down
// ---------------------------------------------------------------------------

/// `Runtime::enter`'s guard keeps a reference to the runtime's shared state
/// in a thread-local. Forgetting the guard (safe code) and dropping the
/// runtime leaves that reference behind, and a bare `weft::spawn` on the
/// thread then queues the coroutine on the dead runtime's injector
/// (`spawn_outside` -> `Shared::push_injector`, src/runtime/mod.rs), which
/// nobody will ever drain: `Runtime::drop` drained it once, before. The
/// join waits for ever and the closure (with whatever it owns) is never
/// dropped. `requeue_unstarted` already guards the same race with the
/// shutdown flag; `push_injector` does not.
#[test]
fn a_spawn_on_a_runtime_that_shut_down_ends_its_join() {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let rt = runtime(1);
        std::mem::forget(rt.enter());
        drop(rt);
        let owned = Arc::new(());
        let witness = Arc::clone(&owned);
        let handle = weft::spawn(move || drop(witness));
        let joined = handle.join().map_err(|error| error.to_string());
        let _ = tx.send((joined, Arc::strong_count(&owned)));
    });
    match rx.recv_timeout(HANG) {
        Err(_) => panic!(
            "the join of a coroutine spawned (through a forgotten EnterGuard) on a runtime that had shut down was \
             still waiting after {HANG:?}: it should end with a shutdown error, or the spawn should panic"
        ),
        Ok((joined, refs)) => {
            assert!(joined.is_err(), "the coroutine ran on a runtime that had shut down");
            assert_eq!(refs, 1, "the closure that never ran must be dropped");
        }
    }
}
