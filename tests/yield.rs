//! `yield_now` between coroutines of one worker. A yield whose worker would
//! run an ordinary round next (a started task waits at the front of its run
//! queue; no woken task in its inbox, no timer, no fairness round due)
//! switches straight to that task instead of passing through the worker:
//! these tests check that the switch keeps everything the worker's round
//! gives — queue order, timers, wakes from other threads, cancellation,
//! panics, finishing, parking, generators, dumps and shutdown — with
//! coroutines that yield to each other back to back.
//!
//! Each test runs under a watchdog: a worker whose loop no longer runs
//! (timers never fired, a wake never seen) hangs the test, which then
//! fails with a message instead of hanging CI.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};
use weft::coroutine::{Coroutine, CoroutineResult};
use weft::sync::channel;
use weft::{CoroutineState, JoinHandle, Runtime};

/// The most any test here may take; each needs well under a second.
const WATCHDOG: Duration = Duration::from_secs(60);

const EXPECTED: &str = "expected panic (tests/yield.rs)";

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("a runtime with its worker threads")
}

/// Keeps the panics these tests cause on purpose out of the output: a
/// runtime is built first so that weft's hook (which names the coroutine)
/// is installed, and this one goes in front of it.
fn quiet_expected_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        drop(runtime(1));
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() == Some(&EXPECTED) {
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
    let started = Instant::now();
    let runner = thread::Builder::new().name("test-body".into()).spawn(body).expect("a test-body thread");
    while !runner.is_finished() {
        assert!(started.elapsed() < WATCHDOG, "the test body did not finish within {WATCHDOG:?} (hang?)");
        thread::sleep(Duration::from_millis(5));
    }
    if let Err(payload) = runner.join() {
        panic::resume_unwind(payload);
    }
}

/// Counts its drops (a coroutine's guard: its destructors ran once).
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Spawns `count` coroutines on `rt` that yield until `stop` is set; each
/// returns how many times it yielded.
fn spawn_yielders(rt: &Runtime, count: usize, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<u64>> {
    (0..count)
        .map(|_| {
            let stop = Arc::clone(stop);
            rt.spawn(move || {
                let mut yields = 0;
                while !stop.load(Ordering::Relaxed) {
                    weft::yield_now();
                    yields += 1;
                }
                yields
            })
        })
        .collect()
}

/// Four coroutines on one worker yield 2 000 times each, noting their
/// index before every yield. Once all four are in the run queue, each
/// yield runs the task that waited longest: the log repeats with period
/// four, and every index appears exactly 2 000 times.
#[test]
fn yields_on_one_worker_take_turns_in_queue_order() {
    const TASKS: usize = 4;
    const ROUNDS: usize = 2_000;
    watched(|| {
        let rt = runtime(1);
        let log = Arc::new(Mutex::new(Vec::with_capacity(TASKS * ROUNDS)));
        let start = Arc::new(weft::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|index| {
                let (log, start) = (Arc::clone(&log), Arc::clone(&start));
                rt.spawn(move || {
                    start.wait();
                    for _ in 0..ROUNDS {
                        log.lock().unwrap().push(index);
                        weft::yield_now();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.join().expect("a yielder");
        }
        let log = log.lock().unwrap();
        assert_eq!(log.len(), TASKS * ROUNDS);
        for index in 0..TASKS {
            assert_eq!(log.iter().filter(|&&i| i == index).count(), ROUNDS, "task {index}'s turns");
        }
        // After the barrier, the first TASKS entries are its wake order; from
        // then on the queue is a ring of the four.
        for i in TASKS..log.len() {
            assert_eq!(
                log[i],
                log[i - TASKS],
                "turn {i}: not the task that waited longest (log {:?}..)",
                &log[i - TASKS..=i]
            );
        }
    });
}

/// Two coroutines on one worker yield to each other back to back while a
/// third sleeps 20 ms and then waits for a message that a plain OS thread
/// sends 20 ms later (its wake goes through the worker's inbox). Both are
/// served: the sleep ends, never early, and the message arrives, while the
/// yielders keep yielding.
#[test]
fn timers_and_wakes_from_other_threads_reach_a_worker_whose_coroutines_yield() {
    watched(|| {
        let rt = runtime(1);
        let stop = Arc::new(AtomicBool::new(false));
        let yielders = spawn_yielders(&rt, 2, &stop);
        let (tx, rx) = channel::bounded::<u32>(0);
        let waiter = {
            let stop = Arc::clone(&stop);
            rt.spawn(move || {
                let asleep = Instant::now();
                weft::sleep(Duration::from_millis(20));
                let slept = asleep.elapsed();
                let value = rx.recv().expect("the OS thread's message");
                stop.store(true, Ordering::Relaxed);
                (slept, value)
            })
        };
        thread::sleep(Duration::from_millis(40));
        tx.send(7).expect("the waiter receives");
        let (slept, value) = waiter.join().expect("the waiter");
        assert!(slept >= Duration::from_millis(20), "the sleep ended early: {slept:?}");
        assert_eq!(value, 7);
        for yielder in yielders {
            assert!(yielder.join().expect("a yielder") > 0, "a yielder never yielded");
        }
    });
}

/// A coroutine cancelled by another one of its worker while the two yield
/// to each other unwinds at its very next turn (it takes no further turn;
/// its destructors run once; its join says cancelled), and the canceller
/// keeps yielding afterwards.
#[test]
fn a_coroutine_cancelled_between_yields_unwinds_at_its_next_turn() {
    watched(|| {
        let rt = runtime(1);
        let drops = Arc::new(AtomicUsize::new(0));
        let victim_turns = Arc::new(AtomicU64::new(0));
        let victim = {
            let (drops, victim_turns) = (Arc::clone(&drops), Arc::clone(&victim_turns));
            rt.spawn(move || {
                let _guard = Dropped(drops);
                loop {
                    weft::yield_now();
                    victim_turns.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let canceller = {
            let (drops, victim_turns) = (Arc::clone(&drops), Arc::clone(&victim_turns));
            rt.spawn(move || {
                while victim_turns.load(Ordering::Relaxed) < 1_000 {
                    weft::yield_now();
                }
                // Same worker: the victim waits in the run queue now.
                let turns_at_cancel = victim_turns.load(Ordering::Relaxed);
                victim.cancel();
                for _ in 0..100 {
                    weft::yield_now();
                }
                assert_eq!(
                    victim_turns.load(Ordering::Relaxed),
                    turns_at_cancel,
                    "the victim took turns after its cancel"
                );
                assert_eq!(drops.load(Ordering::SeqCst), 1, "the victim's guard dropped once");
                let error = victim.join().expect_err("a cancelled coroutine");
                assert!(error.is_cancelled(), "not a cancel: {error}");
                for _ in 0..1_000 {
                    weft::yield_now();
                }
            })
        };
        canceller.join().expect("the canceller");
    });
}

/// Coroutines that another one yielded to (not the one their worker
/// resumed) finish, panic and park, and each outcome reaches the right
/// join handle: a value, a panic payload, a value received after a park.
#[test]
fn coroutines_yielded_to_finish_panic_and_park() {
    watched(|| {
        let rt = runtime(1);
        let stop = Arc::new(AtomicBool::new(false));
        let yielders = spawn_yielders(&rt, 2, &stop);
        let finishers: Vec<JoinHandle<usize>> = (0..50)
            .map(|index| {
                rt.spawn(move || {
                    for _ in 0..index {
                        weft::yield_now();
                    }
                    index
                })
            })
            .collect();
        let panicker = rt.spawn(|| {
            for _ in 0..10 {
                weft::yield_now();
            }
            panic::panic_any(EXPECTED);
        });
        let (tx, rx) = channel::bounded::<usize>(0);
        let parker = rt.spawn(move || {
            weft::yield_now();
            let value = rx.recv().expect("a value");
            weft::yield_now();
            value + 1
        });
        let sender = rt.spawn(move || {
            for _ in 0..20 {
                weft::yield_now();
            }
            tx.send(41).expect("the parker receives");
        });
        for (index, finisher) in finishers.into_iter().enumerate() {
            assert_eq!(finisher.join().expect("a finisher"), index);
        }
        let error = panicker.join().expect_err("the panicker");
        assert!(error.is_panic(), "not a panic: {error}");
        assert_eq!(error.into_panic().downcast_ref::<&str>(), Some(&EXPECTED));
        assert_eq!(parker.join().expect("the parker"), 42);
        sender.join().expect("the sender");
        stop.store(true, Ordering::Relaxed);
        for yielder in yielders {
            yielder.join().expect("a yielder");
        }
    });
}

/// A coroutine yields from inside a generator it drives (the yield leaves
/// from the generator's stack) while others yield too; the generator's
/// values and the coroutine's count come out right.
#[test]
fn a_yield_inside_a_generator_driven_by_a_coroutine() {
    watched(|| {
        let rt = runtime(1);
        let stop = Arc::new(AtomicBool::new(false));
        let yielders = spawn_yielders(&rt, 2, &stop);
        let driver = rt.spawn(|| {
            let mut generator = Coroutine::<(), u32, u32>::new(|yielder, ()| {
                for value in 0..100 {
                    weft::yield_now();
                    yielder.suspend(value);
                    weft::yield_now();
                }
                100
            });
            let mut sum = 0;
            loop {
                match generator.resume(()) {
                    CoroutineResult::Yield(value) => sum += value,
                    CoroutineResult::Return(last) => return sum + last,
                }
                weft::yield_now();
            }
        });
        assert_eq!(driver.join().expect("the driver"), (0..=100).sum::<u32>());
        stop.store(true, Ordering::Relaxed);
        for yielder in yielders {
            yielder.join().expect("a yielder");
        }
    });
}

/// A coroutine that yields from a destructor while it unwinds a panic (its
/// switch goes through the worker: a suspend while panicking is recorded
/// as such) still ends with its panic, and the others go on.
#[test]
fn a_yield_while_unwinding_a_panic() {
    struct YieldsOnDrop(Arc<AtomicUsize>);
    impl Drop for YieldsOnDrop {
        fn drop(&mut self) {
            for _ in 0..5 {
                weft::yield_now();
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    watched(|| {
        let rt = runtime(1);
        let stop = Arc::new(AtomicBool::new(false));
        let yielders = spawn_yielders(&rt, 2, &stop);
        let yields_in_drop = Arc::new(AtomicUsize::new(0));
        let panicker = {
            let yields_in_drop = Arc::clone(&yields_in_drop);
            rt.spawn(move || {
                let _guard = YieldsOnDrop(yields_in_drop);
                weft::yield_now();
                panic::panic_any(EXPECTED);
            })
        };
        let error = panicker.join().expect_err("the panicker");
        assert!(error.is_panic(), "not a panic: {error}");
        assert_eq!(yields_in_drop.load(Ordering::SeqCst), 5);
        stop.store(true, Ordering::Relaxed);
        for yielder in yielders {
            yielder.join().expect("a yielder");
        }
    });
}

/// Keeps a recognisable frame on the stack of a coroutine that yields.
#[inline(never)]
fn yield_loop_marker(stop: &AtomicBool) -> u64 {
    let mut yields = 0;
    while !stop.load(Ordering::Relaxed) {
        weft::yield_now();
        yields += 1;
    }
    std::hint::black_box(yields)
}

/// A dump taken while three coroutines yield to each other lists all three
/// (runnable, or running for the one its worker is in), and the stack of
/// each runnable one, walked from where its yield left, shows its loop.
#[test]
fn a_dump_walks_coroutines_that_yield_to_each_other() {
    watched(|| {
        let rt = runtime(1);
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<JoinHandle<u64>> = (0..3)
            .map(|_| {
                let stop = Arc::clone(&stop);
                rt.spawn(move || yield_loop_marker(&stop))
            })
            .collect();
        // Dumps until all three have started (30 s at most; on a loaded
        // machine the worker's thread may not have run for a while).
        let polling = Instant::now();
        let dump = loop {
            let dump = rt.dump();
            let all_started = tasks
                .iter()
                .all(|task| dump.coroutine(task.id()).is_some_and(|entry| entry.state() != CoroutineState::Unstarted));
            if all_started || polling.elapsed() >= Duration::from_secs(30) {
                break dump;
            }
            thread::sleep(Duration::from_millis(1));
        };
        stop.store(true, Ordering::Relaxed);
        for task in &tasks {
            let entry =
                dump.coroutine(task.id()).unwrap_or_else(|| panic!("coroutine {} is missing:\n{dump}", task.id()));
            match entry.state() {
                CoroutineState::Runnable => {
                    let backtrace = entry.backtrace().unwrap_or_else(|| panic!("no backtrace:\n{dump}"));
                    assert!(
                        backtrace.contains("yield_loop_marker"),
                        "the yield loop is not on the stack:\n{backtrace}"
                    );
                }
                CoroutineState::Running => {}
                other => panic!("coroutine {} is {other}, not runnable or running:\n{dump}", task.id()),
            }
        }
        for task in tasks {
            assert!(task.join().expect("a yielder") > 0);
        }
    });
}

/// A coroutine spawned with `Builder::same_worker` joins two coroutines
/// that yield to each other: it waits unstarted in their worker's run
/// queue, behind the one that spawned it. The yield that finds it at the
/// front cannot switch straight to it (a first run needs the worker's
/// stack) and goes through the worker, which starts it in queue order;
/// its own yields then switch straight on. The log of turns is exactly
/// that of a FIFO ring (modelled here): the newcomer takes its place
/// behind the spawner's yield, takes every third turn while it runs, and
/// leaves the ring after its last.
#[test]
fn a_same_worker_spawn_joins_a_ring_of_yielders_in_queue_order() {
    const ROUNDS: usize = 600;
    const SPAWN_AT: usize = 100;
    const NEWCOMER_ROUNDS: usize = 300;
    watched(|| {
        let rt = runtime(1);
        let log = Arc::new(Mutex::new(Vec::with_capacity(2 * ROUNDS + NEWCOMER_ROUNDS)));
        let start = Arc::new(weft::sync::Barrier::new(2));
        let yielder = |name: char| {
            let (log, start) = (Arc::clone(&log), Arc::clone(&start));
            rt.spawn(move || {
                start.wait();
                weft::yield_now();
                let mut newcomer = None;
                for round in 0..ROUNDS {
                    log.lock().unwrap().push(name);
                    if name == 'A' && round == SPAWN_AT {
                        let log = Arc::clone(&log);
                        let here = thread::current().id();
                        let spawned = weft::Builder::new().same_worker(true).spawn(move || {
                            assert_eq!(thread::current().id(), here, "a same_worker coroutine moved");
                            for _ in 0..NEWCOMER_ROUNDS {
                                log.lock().unwrap().push('P');
                                weft::yield_now();
                            }
                        });
                        newcomer = Some(spawned.expect("spawned from a coroutine of the runtime"));
                    }
                    weft::yield_now();
                }
                if let Some(newcomer) = newcomer {
                    newcomer.join().expect("the newcomer");
                }
            })
        };
        let (a, b) = (yielder('A'), yielder('B'));
        a.join().expect("A");
        b.join().expect("B");
        let log = log.lock().unwrap();
        // The model: a FIFO ring; the one at the front logs its turn, a
        // spawn queues the newcomer, then the yielder goes to the back
        // unless that was its last turn.
        let mut ring: std::collections::VecDeque<char> = log.iter().copied().take(2).collect();
        assert!(ring == ['A', 'B'] || ring == ['B', 'A'], "first turns {ring:?}");
        let mut turns_left = std::collections::HashMap::from([('A', ROUNDS), ('B', ROUNDS), ('P', NEWCOMER_ROUNDS)]);
        let mut expected = Vec::with_capacity(log.len());
        while let Some(name) = ring.pop_front() {
            expected.push(name);
            let left = turns_left.get_mut(&name).expect("a known coroutine");
            *left -= 1;
            if name == 'A' && *left == ROUNDS - SPAWN_AT - 1 {
                ring.push_back('P');
            }
            if *left > 0 {
                ring.push_back(name);
            }
        }
        let first_difference = log.iter().zip(&expected).position(|(seen, model)| seen != model);
        assert!(
            first_difference.is_none() && log.len() == expected.len(),
            "the turns differ from the FIFO ring's at turn {first_difference:?} (of {} and {})",
            log.len(),
            expected.len()
        );
    });
}

/// A runtime dropped while its coroutines yield to each other stops them
/// promptly and unwinds each once.
#[test]
fn dropping_a_runtime_while_coroutines_yield_to_each_other() {
    watched(|| {
        let rt = runtime(1);
        let drops = Arc::new(AtomicUsize::new(0));
        let yields = Arc::new(AtomicU64::new(0));
        for _ in 0..8 {
            let (drops, yields) = (Arc::clone(&drops), Arc::clone(&yields));
            drop(rt.spawn(move || {
                let _guard = Dropped(drops);
                loop {
                    weft::yield_now();
                    yields.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        while yields.load(Ordering::Relaxed) < 10_000 {
            thread::sleep(Duration::from_millis(1));
        }
        let result = panic::catch_unwind(AssertUnwindSafe(|| drop(rt)));
        assert!(result.is_ok(), "dropping the runtime panicked");
        assert_eq!(drops.load(Ordering::SeqCst), 8, "every yielder unwound once");
    });
}

/// With `fp-control`, each coroutine keeps its own MXCSR rounding mode
/// across yields that switch straight between them: one rounds toward
/// zero, the other to nearest, and each sees its own mode at every turn.
#[cfg(feature = "fp-control")]
mod fp {
    use super::*;
    #[allow(deprecated)]
    use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
    use std::hint::black_box;

    const RC_MASK: u32 = 0x6000;
    const RC_TOWARD_ZERO: u32 = 0x6000;

    #[allow(deprecated)]
    fn mxcsr() -> u32 {
        // SAFETY: reading MXCSR has no preconditions on x86-64 (SSE is baseline).
        unsafe { _mm_getcsr() }
    }

    #[allow(deprecated)]
    fn set_mxcsr(value: u32) {
        // SAFETY: the value is MXCSR as read, with only the rounding-control
        // bits changed; no reserved bit is set.
        unsafe { _mm_setcsr(value) }
    }

    /// 1/10 in the current rounding mode: toward zero truncates, so it
    /// differs from round-to-nearest's 0.1 in the last bit.
    fn tenth() -> f64 {
        black_box(1.0f64) / black_box(10.0f64)
    }

    #[test]
    fn the_rounding_mode_stays_with_its_coroutine_across_direct_switches() {
        watched(|| {
            let rt = runtime(1);
            let toward_zero = rt.spawn(|| {
                set_mxcsr(mxcsr() & !RC_MASK | RC_TOWARD_ZERO);
                for turn in 0..1_000 {
                    weft::yield_now();
                    assert_eq!(mxcsr() & RC_MASK, RC_TOWARD_ZERO, "turn {turn}: lost its rounding mode");
                    assert!(tenth() < 0.1, "turn {turn}: 1/10 rounded to nearest");
                }
            });
            let nearest = rt.spawn(|| {
                for turn in 0..1_000 {
                    weft::yield_now();
                    assert_eq!(mxcsr() & RC_MASK, 0, "turn {turn}: got the other coroutine's rounding mode");
                    assert_eq!(tenth(), 0.1, "turn {turn}");
                }
            });
            toward_zero.join().expect("the coroutine rounding toward zero");
            nearest.join().expect("the coroutine rounding to nearest");
        });
    }
}
