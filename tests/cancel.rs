//! Cancellation (`JoinHandle::cancel`), typed join errors (`JoinError`),
//! timed joins (`join_timeout`) and task-locals (`task_local!`), through the
//! public API.
//!
//! The cancellation tests park many coroutines on one primitive, cancel
//! them while other coroutines and OS threads keep using that primitive,
//! and then check exact counts: every victim's destructors ran once, every
//! victim joins as cancelled, and the primitive's users finished every
//! operation they started (nobody lost a wake or a hand-over).

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use weft::sync::{Barrier, Condvar, Mutex, RwLock, Semaphore, WaitGroup};
use weft::{JoinErrorKind, JoinHandle, Runtime};

/// Victims per primitive.
const VICTIMS: usize = 1_000;
/// Operations each user (2 coroutines, 2 OS threads) does on the primitive.
const USER_OPS: u64 = 2_000;

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("a runtime with its worker threads")
}

/// Counts its drops: a victim holds one, so its destructors ran exactly once
/// if the count matches at the end.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `done` every millisecond until it holds, failing after `limit`.
#[track_caller]
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// The scenario of one primitive: `victim` parks (it must not return while
/// the primitive is "closed"), `user` does one operation that completes
/// once it is "open", `open` opens it after the victims are cancelled.
struct Scenario<S> {
    name: &'static str,
    state: Arc<S>,
    victim: fn(&S),
    user: fn(&S),
    open: fn(&S),
    /// After everything: checks the primitive's own counts.
    check: fn(&S, u64),
}

/// Parks `VICTIMS` coroutines with `victim`, starts users (2 coroutines, 2
/// OS threads) doing `USER_OPS` operations each, cancels every victim,
/// opens the primitive, and checks the counts.
fn cancel_parked<S: Send + Sync + 'static>(scenario: Scenario<S>) {
    let Scenario { name, state, victim, user, open, check } = scenario;
    let rt = runtime(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(AtomicUsize::new(0));
    let got_through = Arc::new(AtomicUsize::new(0));
    let victims: Vec<JoinHandle<()>> = (0..VICTIMS)
        .map(|_| {
            let (state, drops, arrived, got_through) =
                (Arc::clone(&state), Arc::clone(&drops), Arc::clone(&arrived), Arc::clone(&got_through));
            rt.spawn(move || {
                let _count = DropCount(drops);
                arrived.fetch_add(1, Ordering::SeqCst);
                victim(&state);
                got_through.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    wait_until(Duration::from_secs(30), "the victims to arrive", || arrived.load(Ordering::SeqCst) == VICTIMS);
    // Let the last ones reach their park (one that has not is cancelled at it).
    thread::sleep(Duration::from_millis(20));

    let ops = Arc::new(AtomicU64::new(0));
    let mut users: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
    for _ in 0..2 {
        let (state, ops) = (Arc::clone(&state), Arc::clone(&ops));
        let handle = rt.spawn(move || {
            for _ in 0..USER_OPS {
                user(&state);
                ops.fetch_add(1, Ordering::SeqCst);
            }
        });
        users.push(Box::new(move || handle.join().expect("a user coroutine")));
    }
    for _ in 0..2 {
        let (state, ops) = (Arc::clone(&state), Arc::clone(&ops));
        let handle = thread::spawn(move || {
            for _ in 0..USER_OPS {
                user(&state);
                ops.fetch_add(1, Ordering::SeqCst);
            }
        });
        users.push(Box::new(move || handle.join().expect("a user thread")));
    }

    for handle in &victims {
        handle.cancel();
    }
    open(&state);
    for user in users {
        user();
    }
    for (i, handle) in victims.into_iter().enumerate() {
        let error = handle.join().expect_err("a cancelled victim never gets through");
        assert!(error.is_cancelled(), "{name}: victim {i}: {error}");
        assert_eq!(error.kind(), JoinErrorKind::Cancelled, "{name}: victim {i}");
    }
    assert_eq!(got_through.load(Ordering::SeqCst), 0, "{name}: a cancelled victim returned from its wait");
    assert_eq!(drops.load(Ordering::SeqCst), VICTIMS, "{name}: each victim's destructors run exactly once");
    let total = ops.load(Ordering::SeqCst);
    assert_eq!(total, 4 * USER_OPS, "{name}: every user operation completed");
    check(&state, total);
    drop(rt);
}

/// A lock (or gate) held by an OS thread until told to let go.
struct Holder {
    release: mpsc::Sender<()>,
    done: thread::JoinHandle<()>,
}

impl Holder {
    /// Runs `hold` on a thread: it takes its lock, says so on `held`, and
    /// keeps the lock until `wait` receives.
    fn start(hold: impl FnOnce(mpsc::Sender<()>, mpsc::Receiver<()>) + Send + 'static) -> Holder {
        let (release, wait) = mpsc::channel();
        let (held_tx, held) = mpsc::channel();
        let done = thread::spawn(move || hold(held_tx, wait));
        held.recv().expect("the holder took the lock");
        Holder { release, done }
    }

    fn release(self) {
        self.release.send(()).expect("the holder waits");
        self.done.join().expect("the holder thread");
    }
}

struct Gated<T> {
    lock: T,
    holder: std::sync::Mutex<Option<Holder>>,
}

impl<T> Gated<T> {
    fn open(&self) {
        self.holder.lock().unwrap().take().expect("held once").release();
    }
}

#[test]
fn cancel_coroutines_parked_on_a_mutex() {
    let state = Arc::new(Gated { lock: Mutex::new(0u64), holder: std::sync::Mutex::new(None) });
    let held = Arc::clone(&state);
    *state.holder.lock().unwrap() = Some(Holder::start(move |held_tx, wait| {
        let _guard = held.lock.lock();
        held_tx.send(()).expect("the test waits");
        wait.recv().expect("released");
    }));
    cancel_parked(Scenario {
        name: "Mutex",
        state,
        victim: |s| *s.lock.lock() += 1_000_000,
        user: |s| *s.lock.lock() += 1,
        open: Gated::open,
        check: |s, total| {
            assert_eq!(*s.lock.lock(), total, "the Mutex's value counts user increments only");
            assert!(!s.lock.is_locked(), "the Mutex is free at the end");
        },
    });
}

#[test]
fn cancel_coroutines_parked_on_a_rwlock_write() {
    let state = Arc::new(Gated { lock: RwLock::new(0u64), holder: std::sync::Mutex::new(None) });
    let held = Arc::clone(&state);
    *state.holder.lock().unwrap() = Some(Holder::start(move |held_tx, wait| {
        let _guard = held.lock.read();
        held_tx.send(()).expect("the test waits");
        wait.recv().expect("released");
    }));
    cancel_parked(Scenario {
        name: "RwLock::write",
        state,
        victim: |s| *s.lock.write() += 1_000_000,
        user: |s| {
            *s.lock.write() += 1;
            let _ = *s.lock.read();
        },
        open: Gated::open,
        check: |s, total| {
            assert_eq!(*s.lock.read(), total);
            assert!(s.lock.try_write().is_some(), "no reader or writer is left inside");
        },
    });
}

#[test]
fn cancel_coroutines_parked_on_a_rwlock_read() {
    let state = Arc::new(Gated { lock: RwLock::new(0u64), holder: std::sync::Mutex::new(None) });
    let held = Arc::clone(&state);
    *state.holder.lock().unwrap() = Some(Holder::start(move |held_tx, wait| {
        let _guard = held.lock.write();
        held_tx.send(()).expect("the test waits");
        wait.recv().expect("released");
    }));
    cancel_parked(Scenario {
        name: "RwLock::read",
        state,
        victim: |s| {
            let _ = *s.lock.read();
        },
        user: |s| {
            let _ = *s.lock.read();
            *s.lock.write() += 1;
        },
        open: Gated::open,
        check: |s, total| {
            assert_eq!(*s.lock.read(), total);
            assert!(s.lock.try_write().is_some(), "no reader or writer is left inside");
        },
    });
}

/// Victims wait on the Condvar for a flag that never comes; users run a
/// hand-off through the same Mutex and Condvar (each user op puts one item
/// and takes one, notifying all every time, so the victims are woken and
/// requeued all along).
struct CondvarState {
    items: Mutex<(bool, u64, u64)>, // (victims' flag, in the box, taken in total)
    ready: Condvar,
}

#[test]
fn cancel_coroutines_parked_on_a_condvar() {
    cancel_parked(Scenario {
        name: "Condvar",
        state: Arc::new(CondvarState { items: Mutex::new((false, 0, 0)), ready: Condvar::new() }),
        victim: |s| {
            let guard = s.items.lock();
            let _guard = s.ready.wait_while(guard, |(flag, _, _)| !*flag);
        },
        user: |s| {
            {
                let mut items = s.items.lock();
                items.1 += 1;
            }
            s.ready.notify_all();
            let mut items = s.ready.wait_while(s.items.lock(), |(_, boxed, _)| *boxed == 0);
            items.1 -= 1;
            items.2 += 1;
        },
        open: |_| {},
        check: |s, total| {
            let items = s.items.lock();
            assert_eq!((items.1, items.2), (0, total), "every item put was taken once");
        },
    });
}

/// The semaphore starts with no permits: victims queue first; users queue
/// behind them (FIFO) until `open` adds four permits.
#[test]
fn cancel_coroutines_parked_on_a_semaphore() {
    cancel_parked(Scenario {
        name: "Semaphore",
        state: Arc::new(Semaphore::new(0)),
        victim: |s| {
            let _permit = s.acquire();
        },
        user: |s| {
            let _permit = s.acquire();
        },
        open: |s| s.add_permits(4),
        check: |s, _| assert_eq!(s.available_permits(), 4, "no permit lost or made by the cancels"),
    });
}

/// Victims wait on a WaitGroup one of whose members the test holds; users
/// meanwhile wait on groups of their own, ended by a helper coroutine.
struct WaitGroupState {
    victims: std::sync::Mutex<Option<WaitGroup>>,
    member: std::sync::Mutex<Option<WaitGroup>>,
}

#[test]
fn cancel_coroutines_parked_on_a_waitgroup() {
    let group = WaitGroup::new();
    let member = group.clone();
    cancel_parked(Scenario {
        name: "WaitGroup",
        state: Arc::new(WaitGroupState {
            victims: std::sync::Mutex::new(Some(group)),
            member: std::sync::Mutex::new(Some(member)),
        }),
        victim: |s| {
            let group = s.victims.lock().unwrap().as_ref().expect("the group").clone();
            group.wait();
        },
        user: |_| {
            let group = WaitGroup::new();
            let helper = group.clone();
            weft::spawn(move || drop(helper));
            group.wait();
        },
        open: |s| {
            // Every victim is cancelled: ending the group now wakes nobody
            // who could still get through.
            drop(s.victims.lock().unwrap().take());
            drop(s.member.lock().unwrap().take());
        },
        check: |_, _| {},
    });
}

#[test]
fn cancel_coroutines_parked_in_sleep() {
    cancel_parked(Scenario {
        name: "sleep",
        state: Arc::new(()),
        victim: |_| weft::sleep(Duration::from_secs(3600)),
        user: |_| weft::sleep(Duration::from_micros(10)),
        open: |_| {},
        check: |_, _| {},
    });
}

#[test]
fn cancel_coroutines_parked_in_join() {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let blocker = weft::spawn_blocking(move || {
        let _ = rx.lock().unwrap().recv();
    });
    let blocker = std::sync::Mutex::new(Some(blocker));
    let done = Arc::new(AtomicBool::new(false));
    struct JoinScenario {
        tx: std::sync::Mutex<Option<mpsc::Sender<()>>>,
        blocker: std::sync::Mutex<Option<JoinHandle<()>>>,
        targets: std::sync::Mutex<Vec<JoinHandle<()>>>,
        done: Arc<AtomicBool>,
    }
    cancel_parked(Scenario {
        name: "join",
        state: Arc::new(JoinScenario {
            tx: std::sync::Mutex::new(Some(tx)),
            blocker,
            targets: std::sync::Mutex::new(Vec::new()),
            done,
        }),
        victim: |s| {
            // Each victim joins a coroutine of its own that waits for the
            // test's signal.
            let done = Arc::clone(&s.done);
            let target = weft::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    weft::sleep(Duration::from_millis(1));
                }
            });
            target.join().expect("the target");
        },
        user: |_| weft::spawn(|| 1).join().map(|_| ()).expect("a user's own join"),
        open: |s| {
            s.done.store(true, Ordering::SeqCst);
            drop(s.tx.lock().unwrap().take());
            s.targets.lock().unwrap().clear();
        },
        check: |s, _| {
            s.blocker.lock().unwrap().take().expect("the blocker").join().expect("the blocker ends");
        },
    });
}

/// A Barrier of `VICTIMS + 1`: the victims arrive and are cancelled, which
/// must take their arrivals back; then a full set of users trips it once.
#[test]
fn cancel_coroutines_parked_on_a_barrier() {
    let rt = runtime(2);
    let barrier = Arc::new(Barrier::new(VICTIMS + 1));
    let drops = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(AtomicUsize::new(0));
    let victims: Vec<_> = (0..VICTIMS)
        .map(|_| {
            let (barrier, drops, arrived) = (Arc::clone(&barrier), Arc::clone(&drops), Arc::clone(&arrived));
            rt.spawn(move || {
                let _count = DropCount(drops);
                arrived.fetch_add(1, Ordering::SeqCst);
                barrier.wait();
            })
        })
        .collect();
    wait_until(Duration::from_secs(30), "the victims to arrive", || arrived.load(Ordering::SeqCst) == VICTIMS);
    thread::sleep(Duration::from_millis(20));
    for handle in &victims {
        handle.cancel();
    }
    for handle in victims {
        assert!(handle.join().expect_err("cancelled").is_cancelled());
    }
    assert_eq!(drops.load(Ordering::SeqCst), VICTIMS);
    // A full generation: VICTIMS + 1 users, coroutines and threads.
    let leaders = Arc::new(AtomicUsize::new(0));
    let mut coroutines = Vec::new();
    for _ in 0..VICTIMS - 1 {
        let (barrier, leaders) = (Arc::clone(&barrier), Arc::clone(&leaders));
        coroutines.push(rt.spawn(move || {
            if barrier.wait().is_leader() {
                leaders.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (barrier, leaders) = (Arc::clone(&barrier), Arc::clone(&leaders));
            thread::spawn(move || {
                if barrier.wait().is_leader() {
                    leaders.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for handle in coroutines {
        handle.join().expect("a barrier user");
    }
    for thread in threads {
        thread.join().expect("a barrier thread");
    }
    assert_eq!(leaders.load(Ordering::SeqCst), 1, "the cancelled arrivals were taken back: one generation tripped");
}

/// Cancel racing the coroutine's own finish: each joins either with its
/// value or as cancelled, never both, and its destructors run once.
#[test]
fn cancel_racing_finish_has_exactly_one_outcome() {
    const N: usize = 20_000;
    let rt = runtime(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let ran_to_end = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..N)
        .map(|i| {
            // Made outside: a coroutine cancelled before it starts drops it
            // with its closure.
            let (count, ran_to_end) = (DropCount(Arc::clone(&drops)), Arc::clone(&ran_to_end));
            rt.spawn(move || {
                let _count = count;
                for _ in 0..i % 4 {
                    weft::yield_now();
                }
                ran_to_end.fetch_add(1, Ordering::SeqCst);
                i
            })
        })
        .collect();
    for (i, handle) in handles.iter().enumerate() {
        if i % 3 != 0 {
            handle.cancel();
            handle.cancel(); // a second cancel does nothing more
        }
    }
    let (mut values, mut cancelled) = (0, 0);
    for (i, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(value) => {
                assert_eq!(value, i);
                values += 1;
            }
            Err(error) => {
                assert!(error.is_cancelled(), "coroutine {i}: {error}");
                assert_ne!(i % 3, 0, "coroutine {i} was never cancelled");
                cancelled += 1;
            }
        }
    }
    assert_eq!(values + cancelled, N);
    assert_eq!(values, ran_to_end.load(Ordering::SeqCst), "a value for every coroutine that ran to its end");
    assert_eq!(drops.load(Ordering::SeqCst), N, "destructors ran once per coroutine");
}

/// A finished coroutine ignores a cancel; its value is kept.
#[test]
fn cancelling_a_finished_coroutine_does_nothing() {
    let rt = runtime(1);
    let handle = rt.spawn(|| 7);
    wait_until(Duration::from_secs(10), "the coroutine to finish", || handle.is_finished());
    handle.cancel();
    assert_eq!(handle.join().expect("finished before the cancel"), 7);
}

/// Coroutines cancelled before they start never run; their closures are
/// dropped once.
#[test]
fn cancelled_before_start_never_runs() {
    let rt = Runtime::builder().workers(1).stall_threshold(None).build().expect("a runtime");
    // Hold the only worker so the next spawns stay unstarted.
    let (release, wait) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel::<()>();
    let blocker = rt.spawn(move || {
        started_tx.send(()).unwrap();
        wait.recv().unwrap(); // blocks the worker thread, on purpose
    });
    started.recv().unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..100)
        .map(|_| {
            let (count, ran) = (DropCount(Arc::clone(&drops)), Arc::clone(&ran));
            rt.spawn(move || {
                let _count = count;
                ran.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for handle in &handles {
        handle.cancel();
    }
    release.send(()).unwrap();
    blocker.join().expect("the blocker");
    for handle in handles {
        let error = handle.join().expect_err("cancelled before it started");
        assert_eq!(error.kind(), JoinErrorKind::Cancelled);
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a cancelled coroutine started");
    assert_eq!(drops.load(Ordering::SeqCst), 100, "each closure dropped once");
}

/// A coroutine busy computing sees `is_cancelled` and can stop; a yield
/// after the cancel unwinds it.
#[test]
fn a_computing_coroutine_sees_is_cancelled() {
    let rt = runtime(2);
    assert!(!weft::is_cancelled(), "a plain thread is never cancelled");
    let running = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&running);
    let handle = rt.spawn(move || {
        flag.store(true, Ordering::SeqCst);
        let mut spins = 0u64;
        while !weft::is_cancelled() {
            spins += 1;
            std::hint::spin_loop();
        }
        assert!(spins > 0 || weft::is_cancelled());
        weft::yield_now();
        unreachable!("the yield after a cancel unwinds");
    });
    wait_until(Duration::from_secs(10), "the coroutine to run", || running.load(Ordering::SeqCst));
    handle.cancel();
    assert_eq!(handle.join().expect_err("cancelled").kind(), JoinErrorKind::Cancelled);
}

/// A destructor that parks during the cancel's unwind (it needs a lock that
/// another coroutine of the same worker holds) waits for it like any park,
/// and the unwind then completes.
#[test]
fn a_destructor_may_park_during_the_cancel_unwind() {
    let rt = runtime(1);
    let lock = Arc::new(Mutex::new(Vec::<u32>::new()));
    struct Unregister(Arc<Mutex<Vec<u32>>>);
    impl Drop for Unregister {
        fn drop(&mut self) {
            self.0.lock().push(1);
        }
    }
    let holder_lock = Arc::clone(&lock);
    let holding = Arc::new(AtomicBool::new(false));
    let holding2 = Arc::clone(&holding);
    let holder = rt.spawn(move || {
        let _guard = holder_lock.lock();
        holding2.store(true, Ordering::SeqCst);
        weft::sleep(Duration::from_millis(100)); // holds the lock across a park
    });
    wait_until(Duration::from_secs(10), "the holder to lock", || holding.load(Ordering::SeqCst));
    let victim_lock = Arc::clone(&lock);
    let started = Arc::new(AtomicBool::new(false));
    let victim_started = Arc::clone(&started);
    let victim = rt.spawn(move || {
        let _unregister = Unregister(victim_lock);
        victim_started.store(true, Ordering::SeqCst);
        weft::sleep(Duration::from_secs(3600));
    });
    // Started (a cancel before the start would drop it unrun, and its
    // destructor would never be built).
    wait_until(Duration::from_secs(10), "the victim to start", || started.load(Ordering::SeqCst));
    victim.cancel();
    assert!(victim.join().expect_err("cancelled").is_cancelled());
    holder.join().expect("the holder");
    assert_eq!(*lock.lock(), [1], "the destructor ran once, after the holder let go");
}

/// `catch_unwind` inside a coroutine sees the cancel as a forced unwind,
/// and resuming it lets the cancel finish.
#[test]
fn catch_unwind_can_tell_a_cancel_from_a_panic() {
    let rt = runtime(1);
    let saw = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&saw);
    let handle = rt.spawn(move || {
        let real = panic::catch_unwind(|| panic!("a real panic")).expect_err("it panicked");
        assert!(!weft::is_forced_unwind(&*real), "a panic is not a forced unwind");
        seen.fetch_add(1, Ordering::SeqCst);
        let caught = panic::catch_unwind(AssertUnwindSafe(|| weft::sleep(Duration::from_secs(3600))));
        let payload = caught.expect_err("the sleep was cancelled");
        assert!(weft::is_forced_unwind(&*payload), "a cancel is a forced unwind");
        seen.fetch_add(1, Ordering::SeqCst);
        panic::resume_unwind(payload);
    });
    wait_until(Duration::from_secs(10), "the first check", || saw.load(Ordering::SeqCst) == 1);
    thread::sleep(Duration::from_millis(10));
    handle.cancel();
    assert!(handle.join().expect_err("cancelled").is_cancelled());
    assert_eq!(saw.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------
// JoinError
// ---------------------------------------------------------------------------

#[test]
fn join_error_of_a_panic_names_the_coroutine_and_keeps_the_payload() {
    let rt = runtime(1);
    let handle = weft::Builder::new()
        .name("checker".into())
        .spawn_on(&rt, || -> u8 { panic::panic_any(41u32) })
        .expect("spawned");
    let id = handle.id();
    let error = handle.join().expect_err("it panicked");
    assert!(error.is_panic() && !error.is_cancelled());
    assert_eq!((error.id(), error.name()), (id, Some("checker")));
    let text = error.to_string();
    assert!(text.contains(&format!("coroutine {id}")) && text.contains("'checker'"), "{text}");
    assert!(error.stack_error().is_none());
    let error = error.try_into_panic().expect("a panic");
    assert_eq!(error.downcast_ref::<u32>(), Some(&41));

    let text_panic = rt.spawn(|| -> u8 { panic!("with {} words", 3) }).join().expect_err("panicked");
    assert!(text_panic.to_string().ends_with("panicked: with 3 words"), "{text_panic}");
    let as_io: std::io::Error = text_panic.into();
    assert!(as_io.to_string().contains("with 3 words"));
}

#[test]
fn join_error_of_a_cancel_is_not_a_panic() {
    let rt = runtime(1);
    let handle = rt.spawn(|| weft::sleep(Duration::from_secs(3600)));
    handle.cancel();
    let error = handle.join().expect_err("cancelled");
    assert!(error.is_cancelled() && !error.is_panic());
    assert!(error.to_string().contains("was cancelled"), "{error}");
    let error = error.try_into_panic().expect_err("not a panic");
    assert_eq!(error.kind(), JoinErrorKind::Cancelled);
    let result = panic::catch_unwind(AssertUnwindSafe(|| error.into_panic()));
    let message = result.expect_err("into_panic on a cancel panics");
    let message = message.downcast_ref::<String>().expect("a formatted message");
    assert!(message.contains("not a panic"), "{message}");
}

// ---------------------------------------------------------------------------
// join_timeout
// ---------------------------------------------------------------------------

#[test]
fn join_timeout_is_never_early_and_keeps_the_handle() {
    let rt = runtime(2);
    for timeout in [Duration::from_millis(1), Duration::from_millis(20)] {
        // From an OS thread.
        let mut handle = rt.spawn(|| weft::sleep(Duration::from_secs(3600)));
        let started = Instant::now();
        assert!(handle.join_timeout(timeout).is_none(), "still sleeping");
        assert!(started.elapsed() >= timeout, "join_timeout returned early: {:?} < {timeout:?}", started.elapsed());
        handle.cancel();
        let result = handle.join_timeout(Duration::from_secs(30)).expect("the cancel ends it");
        assert!(result.expect_err("cancelled").is_cancelled());

        // From a coroutine.
        let early = rt
            .spawn(move || {
                let mut handle = weft::spawn(|| {
                    weft::sleep(Duration::from_millis(50));
                    5
                });
                let started = Instant::now();
                let first = handle.join_timeout(timeout);
                let waited = started.elapsed();
                let value = match first {
                    Some(result) => result.expect("finished"),
                    None => handle.join().expect("finished later"),
                };
                (waited, value)
            })
            .join()
            .expect("the joiner");
        assert!(early.0 >= timeout.min(Duration::from_millis(50)), "early by {:?}", early.0);
        assert_eq!(early.1, 5);
    }
}

#[test]
fn join_timeout_result_is_taken_once() {
    let rt = runtime(1);
    let mut handle = rt.spawn(|| 3);
    let result = handle.join_timeout(Duration::from_secs(30)).expect("it finishes");
    assert_eq!(result.expect("a value"), 3);
    let again = panic::catch_unwind(AssertUnwindSafe(|| handle.join_timeout(Duration::ZERO)));
    let message = again.expect_err("the result is gone");
    let message = message.downcast_ref::<String>().expect("a formatted message");
    assert!(message.contains("already returned"), "{message}");
}

// ---------------------------------------------------------------------------
// task_local!
// ---------------------------------------------------------------------------

/// A task-local value that counts its drops into a shared counter set by
/// whoever makes it.
struct Tracked {
    id: Cell<u64>,
    drops: RefCell<Option<Arc<AtomicUsize>>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(drops) = self.drops.borrow_mut().take() {
            drops.fetch_add(1, Ordering::SeqCst);
        }
    }
}

weft::task_local! {
    static MINE: Tracked = Tracked { id: Cell::new(u64::MAX), drops: RefCell::new(None) };
    static INITS: Cell<u32> = Cell::new(0);
}

#[test]
fn task_locals_are_per_coroutine_and_dropped_once() {
    const N: u64 = 10_000;
    let rt = runtime(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let drops = Arc::clone(&drops);
            rt.spawn(move || {
                MINE.with(|m| {
                    assert_eq!(m.id.get(), u64::MAX, "coroutine {i} starts with a fresh value");
                    m.id.set(i);
                    *m.drops.borrow_mut() = Some(drops);
                });
                weft::yield_now();
                assert_eq!(MINE.with(|m| m.id.get()), i, "after a yield");
                weft::sleep(Duration::from_micros(100 + i % 50));
                assert_eq!(MINE.with(|m| m.id.get()), i, "after a sleep");
                INITS.with(|c| c.set(c.get() + 1));
                INITS.with(Cell::get)
            })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().expect("a coroutine"), 1, "INITS is per coroutine");
    }
    assert_eq!(drops.load(Ordering::SeqCst), N as usize, "each coroutine's value dropped once");
}

#[test]
fn task_locals_are_dropped_on_cancel_and_at_shutdown() {
    let rt = runtime(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let set = Arc::new(AtomicUsize::new(0));
    let spawn = |rt: &Runtime| {
        let (drops, set) = (Arc::clone(&drops), Arc::clone(&set));
        rt.spawn(move || {
            MINE.with(|m| *m.drops.borrow_mut() = Some(drops));
            set.fetch_add(1, Ordering::SeqCst);
            weft::sleep(Duration::from_secs(3600));
        })
    };
    let cancelled: Vec<_> = (0..500).map(|_| spawn(&rt)).collect();
    let at_shutdown: Vec<_> = (0..500).map(|_| spawn(&rt)).collect();
    wait_until(Duration::from_secs(30), "the values to be set", || set.load(Ordering::SeqCst) == 1000);
    for handle in &cancelled {
        handle.cancel();
    }
    for handle in cancelled {
        assert!(handle.join().expect_err("cancelled").is_cancelled());
    }
    assert_eq!(drops.load(Ordering::SeqCst), 500, "cancelled coroutines drop their task-locals");
    drop(rt);
    for handle in at_shutdown {
        assert_eq!(handle.join().expect_err("shut down").kind(), JoinErrorKind::Shutdown);
    }
    assert_eq!(drops.load(Ordering::SeqCst), 1000, "and so do those unwound at shutdown");
}

/// A task-local whose destructor touches another task-local (made again
/// by that touch, after the coroutine's values were taken for dropping).
struct Reviver {
    drops: Arc<AtomicUsize>,
}

impl Drop for Reviver {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        let drops = Arc::clone(&self.drops);
        REVIVED.with(|r| *r.drops.borrow_mut() = Some(drops));
    }
}

weft::task_local! {
    static REVIVER: RefCell<Option<Reviver>> = RefCell::new(None);
    static REVIVED: Tracked = Tracked { id: Cell::new(0), drops: RefCell::new(None) };
}

#[test]
fn a_task_local_made_by_a_destructor_is_dropped_too() {
    let rt = runtime(1);
    let drops = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..100)
        .map(|_| {
            let drops = Arc::clone(&drops);
            rt.spawn(move || REVIVER.with(|r| *r.borrow_mut() = Some(Reviver { drops })))
        })
        .collect();
    for handle in handles {
        handle.join().expect("a coroutine");
    }
    // Each coroutine: its Reviver in the first round, the REVIVED value
    // its destructor made in the second.
    assert_eq!(drops.load(Ordering::SeqCst), 200, "both values of every coroutine dropped, once each");
}

#[test]
fn task_locals_outside_a_coroutine_say_why() {
    assert!(INITS.try_with(Cell::get).is_err());
    let error = INITS.try_with(Cell::get).unwrap_err();
    assert!(error.to_string().contains("outside a coroutine"), "{error}");
    let caught = panic::catch_unwind(|| INITS.with(Cell::get)).expect_err("with panics on a plain thread");
    let message =
        caught.downcast_ref::<&str>().copied().or_else(|| caught.downcast_ref::<String>().map(|s| s.as_str()));
    let message = message.expect("a text message");
    assert!(message.contains("outside a coroutine") && message.contains("thread_local!"), "{message}");
}

/// A running `spawn_blocking` job is not interrupted by its cancel, but it
/// sees it through `weft::is_cancelled` and can stop early; before the
/// cancel it reads `false`, as does a plain thread.
#[test]
fn a_running_blocking_job_sees_its_cancel() {
    let (started_tx, started_rx) = mpsc::channel();
    let job = weft::spawn_blocking(move || {
        started_tx.send(weft::is_cancelled()).unwrap();
        let since = std::time::Instant::now();
        while !weft::is_cancelled() {
            assert!(since.elapsed() < Duration::from_secs(30), "the job never saw its cancel");
            std::thread::sleep(Duration::from_millis(1));
        }
        "stopped early"
    });
    assert!(!started_rx.recv().unwrap(), "a job reads false before its cancel");
    assert!(!weft::is_cancelled(), "a plain thread reads false");
    job.cancel();
    // It finished by itself: its value is its result.
    assert_eq!(job.join().expect("the job returned"), "stopped early");
}
