//! `weft::scope`: scoped coroutines that borrow from their caller's stack.
//! Results and borrows; the wait for coroutines nobody joined; panics (of
//! the scope's closure, of a joined and of an unjoined coroutine); nested
//! scopes and spawns from scoped coroutines; the caller as an OS thread; a
//! cancel of the caller while its scoped coroutines run; and a runtime's
//! shutdown with the caller and its scoped coroutines parked (on its worker,
//! on the other one, unstarted), where the scoped ones must end first.

mod common;

use common::watched;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use weft::{CoroutineState, ParkedOn, Runtime};

/// A generous bound for things that should take milliseconds.
const LIVENESS: Duration = Duration::from_secs(30);

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("worker threads")
}

/// Parks the calling coroutine until a cancel or its runtime's shutdown
/// unwinds it.
fn parked_for_good() -> ! {
    loop {
        weft::sleep(Duration::from_secs(3600));
    }
}

#[test]
fn scoped_coroutines_borrow_the_callers_stack_and_return_results() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        rt.block_on(|| {
            let mut numbers: Vec<u64> = (1..=1000).collect();
            let total = AtomicUsize::new(0);
            let sums = weft::scope(|s| {
                let handles: Vec<_> = numbers
                    .chunks(100)
                    .map(|chunk| {
                        let total = &total;
                        s.spawn(move || {
                            weft::yield_now();
                            let sum: u64 = chunk.iter().sum();
                            total.fetch_add(chunk.len(), Ordering::Relaxed);
                            sum
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("no panic")).collect::<Vec<u64>>()
            });
            assert_eq!(sums.iter().sum::<u64>(), 500_500);
            assert_eq!(total.load(Ordering::Relaxed), 1000);
            // The borrows have ended: `numbers` is ours again.
            numbers.push(1001);
            assert_eq!(numbers.len(), 1001);
        });
    });
}

/// `scope` returns only when every scoped coroutine has ended, joined or
/// not: each sets its flag after a sleep, and all are set when it returns.
#[test]
fn scope_waits_for_coroutines_nobody_joined() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        rt.block_on(|| {
            let flags: Vec<AtomicBool> = (0..16).map(|_| AtomicBool::new(false)).collect();
            weft::scope(|s| {
                for (i, flag) in flags.iter().enumerate() {
                    s.spawn(move || {
                        weft::sleep(Duration::from_millis(5 + i as u64 % 4 * 5));
                        flag.store(true, Ordering::Relaxed);
                    });
                }
            });
            assert!(flags.iter().all(|f| f.load(Ordering::Relaxed)), "scope returned before its coroutines ended");
        });
    });
}

/// Scoped coroutines spawn more into the same scope, and scopes nest; the
/// outer one still waits for all of them.
#[test]
fn nested_scopes_and_spawns_from_scoped_coroutines() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        rt.block_on(|| {
            let count = AtomicUsize::new(0);
            weft::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        for _ in 0..4 {
                            s.spawn(|| {
                                weft::sleep(Duration::from_millis(2));
                                count.fetch_add(1, Ordering::Relaxed);
                            });
                        }
                        let inner = AtomicUsize::new(0);
                        weft::scope(|inner_scope| {
                            for _ in 0..3 {
                                inner_scope.spawn(|| inner.fetch_add(1, Ordering::Relaxed));
                            }
                        });
                        assert_eq!(inner.load(Ordering::Relaxed), 3);
                        count.fetch_add(1, Ordering::Relaxed);
                    });
                }
            });
            assert_eq!(count.load(Ordering::Relaxed), 4 + 16);
        });
    });
}

/// A joined panic is the join's `Err` and not the scope's; an unjoined
/// one makes `scope` panic once all have ended; a panic of the closure
/// itself comes out of `scope` after the scoped coroutines have ended.
#[test]
fn panics_joined_unjoined_and_of_the_closure() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        rt.block_on(|| {
            let joined = weft::scope(|s| {
                let handle = s.spawn(|| -> u32 { panic!("joined panic") });
                let error = handle.join().expect_err("it panicked");
                assert!(error.is_panic());
                7
            });
            assert_eq!(joined, 7, "a joined panic does not make the scope panic");

            let finished = AtomicBool::new(false);
            let unjoined = panic::catch_unwind(AssertUnwindSafe(|| {
                weft::scope(|s| {
                    s.spawn(|| panic!("unjoined panic"));
                    s.spawn(|| {
                        weft::sleep(Duration::from_millis(20));
                        finished.store(true, Ordering::Relaxed);
                    });
                })
            }));
            let message = *unjoined.expect_err("scope panics").downcast::<&str>().expect("a str message");
            assert!(message.contains("panicked and no ScopedJoinHandle::join took its panic"), "{message}");
            assert!(finished.load(Ordering::Relaxed), "the scope panicked before the others ended");

            let finished = AtomicBool::new(false);
            let of_closure = panic::catch_unwind(AssertUnwindSafe(|| {
                weft::scope(|s| {
                    s.spawn(|| {
                        weft::sleep(Duration::from_millis(20));
                        finished.store(true, Ordering::Relaxed);
                    });
                    panic!("the closure's own panic");
                })
            }));
            let payload = of_closure.expect_err("scope re-raises the closure's panic");
            assert_eq!(*payload.downcast::<&str>().expect("a str payload"), "the closure's own panic");
            assert!(finished.load(Ordering::Relaxed), "the panic left before the scoped coroutine ended");
        });
    });
}

/// From a plain OS thread (no runtime entered: the default runtime runs
/// the scoped coroutines), the thread blocks until they end.
#[test]
fn an_os_thread_makes_a_scope() {
    watched(LIVENESS, || {
        let text = String::from("borrowed by coroutines");
        let lengths = weft::scope(|s| {
            let a = s.spawn(|| text.len());
            let b = s.spawn(|| {
                weft::sleep(Duration::from_millis(10));
                text.split(' ').count()
            });
            (a.join().expect("no panic"), b.join().expect("no panic"))
        });
        assert_eq!(lengths, (22, 3));
    });
}

/// A coroutine cancelled while its scoped coroutines run: its closure
/// unwinds, then it still waits for them (they go on using what they
/// borrowed), and only then does its cancel end it. The dump names the
/// wait meanwhile.
#[test]
fn a_cancelled_caller_waits_for_its_scoped_coroutines() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        let order = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let (started_tx, started_rx) = mpsc::channel();
        let caller = {
            let order = Arc::clone(&order);
            rt.spawn(move || {
                let borrowed = AtomicUsize::new(0);
                struct AfterScope<'a>(&'a AtomicUsize, Arc<AtomicUsize>);
                impl Drop for AfterScope<'_> {
                    fn drop(&mut self) {
                        // The caller's frame goes only after the scoped ones.
                        assert_eq!(self.0.load(Ordering::SeqCst), 3, "a scoped coroutine had not ended");
                        self.1.fetch_add(100, Ordering::SeqCst);
                    }
                }
                let _after = AfterScope(&borrowed, Arc::clone(&order));
                weft::scope(|s| {
                    for _ in 0..3 {
                        let release_rx = Arc::clone(&release_rx);
                        let borrowed = &borrowed;
                        s.spawn(move || {
                            // Waits on a thread's channel, in spawn_blocking (a
                            // cancel of the caller does not reach it).
                            weft::spawn_blocking(move || release_rx.lock().unwrap().recv().ok())
                                .join()
                                .expect("no panic");
                            borrowed.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                    started_tx.send(weft::current().id()).unwrap();
                    // Parks until cancelled.
                    parked_for_good()
                });
            })
        };
        let id = started_rx.recv().unwrap();
        caller.cancel();
        // The caller waits for its scoped coroutines: it shows as such.
        let started = Instant::now();
        loop {
            let dump = rt.dump();
            let waits = dump
                .coroutines()
                .iter()
                .any(|c| c.id() == id && matches!(c.state(), CoroutineState::Parked { on: ParkedOn::Scope, .. }));
            if waits {
                break;
            }
            assert!(started.elapsed() < LIVENESS, "the cancelled caller never waited for its scope:\n{dump}");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(!caller.is_finished(), "the cancel ended the caller before its scoped coroutines");
        for _ in 0..3 {
            release_tx.send(()).unwrap();
        }
        let error = caller.join().expect_err("cancelled");
        assert!(error.is_cancelled(), "{error}");
        assert_eq!(order.load(Ordering::SeqCst), 100, "the caller's frame ended once, after the scope");
    });
}

/// Guards for the shutdown tests: a scoped coroutine's counts its drop in
/// its caller's frame; the caller's checks, as its frame goes, that every
/// scoped one has gone.
struct ScopedGuard<'a>(&'a AtomicUsize);
impl Drop for ScopedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
struct CallerGuard<'a> {
    dropped: &'a AtomicUsize,
    expected: usize,
    checked: Arc<AtomicUsize>,
}
impl Drop for CallerGuard<'_> {
    fn drop(&mut self) {
        let dropped = self.dropped.load(Ordering::SeqCst);
        // Record rather than assert: a panic here, in a shutdown's unwind,
        // would abort the process.
        self.checked.store(if dropped == self.expected { 1 } else { 1000 + dropped }, Ordering::SeqCst);
    }
}

/// A runtime dropped while a coroutine waits inside a scope and its scoped
/// coroutines are parked: on its own worker (`same_worker`), on either
/// worker, and not yet started (spawned on its worker, which it never
/// leaves before the drop). Each time the scoped ones end first, and the
/// drop returns.
#[test]
fn shutdown_unwinds_scoped_coroutines_before_their_caller() {
    for placement in ["same worker", "either worker", "unstarted"] {
        watched(LIVENESS, move || {
            let rt = runtime(2);
            let checked = Arc::new(AtomicUsize::new(0));
            let (ready_tx, ready_rx) = mpsc::channel();
            {
                let checked = Arc::clone(&checked);
                rt.spawn(move || {
                    let dropped = AtomicUsize::new(0);
                    let _caller = CallerGuard { dropped: &dropped, expected: 8, checked };
                    weft::scope(|s| {
                        for _ in 0..8 {
                            // Made here, so that a body dropped unstarted
                            // drops it too.
                            let guard = ScopedGuard(&dropped);
                            let body = move || {
                                let _guard = guard;
                                parked_for_good()
                            };
                            let builder = weft::Builder::new().same_worker(placement != "either worker");
                            builder.spawn_scoped(s, body).expect("a scoped coroutine");
                        }
                        if placement != "unstarted" {
                            // Let them start and park.
                            weft::sleep(Duration::from_millis(20));
                        }
                        ready_tx.send(()).unwrap();
                        if placement == "unstarted" {
                            // Block the worker (not a park): the scoped ones
                            // stay unstarted until the drop.
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        parked_for_good()
                    });
                });
            }
            ready_rx.recv().unwrap();
            drop(rt);
            assert_eq!(checked.load(Ordering::SeqCst), 1, "{placement}: 1 = every scoped coroutine ended first");
        });
    }
}

/// A cancel that arrives while the caller already waits at the scope's end
/// (its closure has returned) is held until the scoped coroutine ends; then
/// the caller unwinds (helper-60's review found the wake's cancel check
/// unwinding the wait while the scoped coroutine still ran).
#[test]
fn a_cancel_during_the_final_wait_is_held_until_the_scoped_coroutines_end() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let (started_tx, started_rx) = mpsc::channel();
        let frame_gone = Arc::new(AtomicBool::new(false));
        let used_after = Arc::new(AtomicBool::new(false));
        let caller = {
            let (frame_gone, used_after) = (Arc::clone(&frame_gone), Arc::clone(&used_after));
            rt.spawn(move || {
                struct Frame(Arc<AtomicBool>);
                impl Drop for Frame {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::SeqCst);
                    }
                }
                let _frame = Frame(Arc::clone(&frame_gone));
                weft::scope(|s| {
                    s.spawn(move || {
                        weft::spawn_blocking(move || release_rx.lock().unwrap().recv().ok()).join().unwrap();
                        used_after.store(frame_gone.load(Ordering::SeqCst), Ordering::SeqCst);
                    });
                    started_tx.send(weft::current().id()).unwrap();
                });
                // Not reached: the cancel unwinds at the next park.
                parked_for_good();
            })
        };
        let id = started_rx.recv().unwrap();
        // Wait until the caller parks at the scope's end, then cancel it.
        let started = Instant::now();
        while !rt
            .dump()
            .coroutines()
            .iter()
            .any(|c| c.id() == id && matches!(c.state(), CoroutineState::Parked { on: ParkedOn::Scope, .. }))
        {
            assert!(started.elapsed() < LIVENESS, "the caller never waited at the scope's end");
            std::thread::sleep(Duration::from_millis(1));
        }
        caller.cancel();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!caller.is_finished(), "the cancel unwound the caller while its scoped coroutine ran");
        assert!(!frame_gone.load(Ordering::SeqCst));
        release_tx.send(()).unwrap();
        assert!(caller.join().expect_err("cancelled").is_cancelled());
        assert!(!used_after.load(Ordering::SeqCst), "the scoped coroutine ran after its caller's frame had gone");
        assert!(frame_gone.load(Ordering::SeqCst));
    });
}

/// Shutdown with nested scopes on one worker: the inner scope's coroutine
/// first, then the caller, whose unwind leaves both scopes' registrations
/// (helper-60's review found the inner one left behind, dangling, for the
/// outer scope's end to walk).
#[test]
fn shutdown_with_nested_scopes() {
    watched(LIVENESS, || {
        let rt = runtime(1);
        let checked = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        {
            let checked = Arc::clone(&checked);
            rt.spawn(move || {
                let dropped = AtomicUsize::new(0);
                let _caller = CallerGuard { dropped: &dropped, expected: 2, checked };
                weft::scope(|outer| {
                    let guard = ScopedGuard(&dropped);
                    outer.spawn(move || {
                        let _guard = guard;
                        parked_for_good();
                    });
                    weft::scope(|inner| {
                        let guard = ScopedGuard(&dropped);
                        inner.spawn(move || {
                            let _guard = guard;
                            parked_for_good();
                        });
                        ready_tx.send(()).unwrap();
                        parked_for_good();
                    });
                });
            });
        }
        ready_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(rt);
        assert_eq!(checked.load(Ordering::SeqCst), 1, "1 = both scoped coroutines ended before the caller's frame");
    });
}

/// At shutdown, a spawn from the caller's own unwind (a destructor in its
/// frame, unwound after its scoped coroutines) is failed, not lost: its
/// handle's join returns (helper-60's review found the queues not emptied
/// after such a deferred unwind).
#[test]
fn a_spawn_from_the_callers_unwind_at_shutdown_is_failed_not_lost() {
    for same_worker in [false, true] {
        watched(LIVENESS, move || {
            let rt = runtime(1);
            let (ready_tx, ready_rx) = mpsc::channel();
            let (handle_tx, handle_rx) = mpsc::channel::<weft::JoinHandle<()>>();
            rt.spawn(move || {
                struct SpawnsOnDrop(mpsc::Sender<weft::JoinHandle<()>>, bool);
                impl Drop for SpawnsOnDrop {
                    fn drop(&mut self) {
                        let handle = weft::Builder::new().same_worker(self.1).spawn(|| ()).expect("a spawn");
                        self.0.send(handle).unwrap();
                    }
                }
                let _spawns = SpawnsOnDrop(handle_tx, same_worker);
                weft::scope(|s| {
                    s.spawn(|| parked_for_good());
                    ready_tx.send(()).unwrap();
                });
            });
            ready_rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            drop(rt);
            let handle = handle_rx.recv().unwrap();
            let error = handle.join().expect_err("spawned during shutdown: never started");
            assert!(!error.is_panic(), "same_worker {same_worker}: {error}");
        });
    }
}

/// Whether a scoped coroutine panicked is its own: a clean one is not
/// counted while another coroutine of its worker is suspended mid-panic
/// (std's panic count is per thread), and one that panics after a cancel
/// was requested still counts (helper-60's review found both miscounted).
#[test]
fn a_scoped_coroutines_panic_is_its_own() {
    watched(LIVENESS, || {
        let rt = runtime(1);
        rt.block_on(|| {
            let mid_panic = weft::spawn(|| {
                struct ParksInDrop;
                impl Drop for ParksInDrop {
                    fn drop(&mut self) {
                        weft::sleep(Duration::from_millis(200));
                    }
                }
                let _parks = ParksInDrop;
                panic!("a panic whose unwind parks");
            });
            weft::sleep(Duration::from_millis(20));
            let clean = panic::catch_unwind(AssertUnwindSafe(|| {
                weft::scope(|s| {
                    drop(s.spawn(|| 1u32));
                    weft::sleep(Duration::from_millis(20));
                })
            }));
            assert!(clean.is_ok(), "a clean scoped coroutine was counted as panicked");
            assert!(mid_panic.join().expect_err("it panicked").is_panic());
        });
        // The caller is this thread, so that it runs beside the scoped
        // coroutine: the cancel comes after it started and before its panic,
        // with no park or yield in between for the cancel to begin at.
        let _entered = rt.enter();
        let (started, go) = (AtomicBool::new(false), AtomicBool::new(false));
        let own = panic::catch_unwind(AssertUnwindSafe(|| {
            weft::scope(|s| {
                let handle = s.spawn(|| {
                    started.store(true, Ordering::SeqCst);
                    while !go.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                    panic!("its own panic, after a cancel was requested");
                });
                while !started.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                handle.cancel();
                drop(handle);
                go.store(true, Ordering::SeqCst);
            })
        }));
        assert!(own.is_err(), "the unjoined panic was lost");
    });
}

/// A result nobody joined, whose destructor panics in the scoped coroutine:
/// the scope still ends (helper-60's review found its count never falling).
#[test]
fn a_detached_result_whose_drop_panics_still_ends_the_scope() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        rt.block_on(|| {
            struct PanicsOnDrop;
            impl Drop for PanicsOnDrop {
                fn drop(&mut self) {
                    panic!("a result's destructor panics");
                }
            }
            weft::scope(|s| {
                drop(s.spawn(|| PanicsOnDrop));
            });
        });
    });
}

/// A scoped coroutine that cannot be unwound at shutdown (it parks in a
/// destructor while unwinding a panic, so its stack is leaked): it counts
/// as stuck, and the drop returns, leaking its caller's stack too.
#[test]
fn a_scoped_coroutine_that_cannot_be_unwound_does_not_hang_shutdown() {
    watched(LIVENESS, || {
        let rt = runtime(1);
        let (ready_tx, ready_rx) = mpsc::channel();
        let caller = rt.spawn(move || {
            weft::scope(|s| {
                s.spawn(|| {
                    struct ParksInDrop;
                    impl Drop for ParksInDrop {
                        fn drop(&mut self) {
                            parked_for_good();
                        }
                    }
                    let _parks = ParksInDrop;
                    panic!("a scoped coroutine whose unwind parks");
                });
                ready_tx.send(()).unwrap();
            });
        });
        ready_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(rt);
        let error = caller.join().expect_err("failed at shutdown");
        assert!(!error.is_panic(), "{error}");
    });
}

/// A scoped coroutine that holds its worker (a blocking call) for longer
/// than any patience at shutdown, then reads what it borrowed, a value of
/// a thread-local of its caller's worker: the caller's worker waits for it,
/// so the value is still there (helper-61's review found an earlier version
/// giving up after 2 s, letting the worker exit and destroy the value).
#[test]
fn shutdown_waits_for_a_scoped_coroutine_that_holds_its_worker() {
    /// Overwritten when its thread's locals are destroyed.
    struct Values([std::sync::atomic::AtomicU64; 4]);
    impl Drop for Values {
        fn drop(&mut self) {
            for value in &self.0 {
                value.store(0xdead, Ordering::SeqCst);
            }
        }
    }
    thread_local! {
        static ON_WORKER: Values = Values(std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(7)));
    }
    watched(LIVENESS, || {
        let rt = runtime(2);
        let read = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        {
            let read = Arc::clone(&read);
            rt.spawn(move || {
                ON_WORKER.with(|values| {
                    let started = AtomicBool::new(false);
                    weft::scope(|s| {
                        let read = Arc::clone(&read);
                        let ready_tx = ready_tx.clone();
                        let started = &started;
                        s.spawn(move || {
                            started.store(true, Ordering::SeqCst);
                            ready_tx.send(()).unwrap();
                            std::thread::sleep(Duration::from_millis(2500));
                            let sum: u64 = values.0.iter().map(|v| v.load(Ordering::SeqCst)).sum();
                            read.store(sum as usize, Ordering::SeqCst);
                        });
                        // Hold this worker (not a park) until the scoped
                        // coroutine has started: on the other worker, then.
                        while !started.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        parked_for_good()
                    });
                });
            });
        }
        ready_rx.recv().unwrap();
        drop(rt);
        assert_eq!(read.load(Ordering::SeqCst), 28, "the scoped coroutine read its borrow after it was gone");
    });
}

/// At shutdown, a destructor in the scope's closure spawns into the scope
/// as the caller is unwound: that coroutine never runs, and is failed, so
/// the drop returns (helper-61's review found the caller's wait spinning).
#[test]
fn a_spawn_into_the_scope_during_its_callers_shutdown_unwind_is_failed() {
    watched(LIVENESS, || {
        let rt = runtime(1);
        let (ready_tx, ready_rx) = mpsc::channel();
        let ran = Arc::new(AtomicBool::new(false));
        {
            let ran = Arc::clone(&ran);
            rt.spawn(move || {
                weft::scope(|s| {
                    struct SpawnsOnDrop<'scope, 'env>(&'scope weft::Scope<'scope, 'env>, &'scope AtomicBool);
                    impl Drop for SpawnsOnDrop<'_, '_> {
                        fn drop(&mut self) {
                            let ran = self.1;
                            self.0.spawn(move || ran.store(true, Ordering::SeqCst));
                        }
                    }
                    let _spawns = SpawnsOnDrop(s, &ran);
                    ready_tx.send(()).unwrap();
                    parked_for_good()
                });
            });
        }
        ready_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(rt);
        assert!(!ran.load(Ordering::SeqCst), "a coroutine ran after its runtime's shutdown began");
    });
}

/// `weft::scope` in a destructor that a worker runs between coroutines (of
/// a cancelled coroutine's unstarted closure) panics with what to do
/// instead, rather than block the worker its scoped coroutines need
/// (helper-61's review found it blocking for good on one worker).
#[test]
fn a_scope_on_a_worker_between_coroutines_panics() {
    watched(LIVENESS, || {
        let rt = runtime(1);
        let message = Arc::new(std::sync::Mutex::new(None::<String>));
        rt.block_on({
            let message = Arc::clone(&message);
            move || {
                struct ScopeOnDrop(Arc<std::sync::Mutex<Option<String>>>);
                impl Drop for ScopeOnDrop {
                    fn drop(&mut self) {
                        let result = panic::catch_unwind(|| weft::scope(|s| s.spawn(|| ()).join().is_ok()));
                        let text = match result {
                            Ok(_) => "no panic".to_string(),
                            Err(payload) => match payload.downcast::<&str>() {
                                Ok(text) => text.to_string(),
                                Err(payload) => payload.downcast::<String>().map_or("no message".into(), |t| *t),
                            },
                        };
                        *self.0.lock().unwrap() = Some(text);
                    }
                }
                let guard = ScopeOnDrop(message);
                // Same worker, never started: cancelled, its closure (and
                // the guard) is dropped by the worker between coroutines.
                let handle = weft::Builder::new().same_worker(true).spawn(move || drop(guard)).expect("a coroutine");
                handle.cancel();
                assert!(handle.join().expect_err("cancelled before it started").is_cancelled());
            }
        });
        let text = message.lock().unwrap().clone().expect("the closure was dropped");
        assert!(text.contains("outside any coroutine"), "{text}");
    });
}
