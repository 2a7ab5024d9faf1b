//! Integration tests of the M:N runtime through its public API: spawning and
//! joining at scale, thread affinity of started coroutines, timers, idle
//! behaviour, panics, shutdown, `spawn_blocking`, misuse, and fairness.
//!
//! # Why every test runs alone
//!
//! The tests share process-global resources that make parallel runs
//! meaningless or flaky: the memory-map budget (`vm.max_map_count` is 65 530
//! by default and the scale test alone needs 60 000 maps), process CPU time
//! (the idle test measures it), and the two cores of the test machine (the
//! timing tests measure latencies). So each test body takes [`SERIAL`] and
//! runs under a watchdog ([`isolated`]) that turns a hang into a failure
//! instead of a stuck test binary.
//!
//! Time bounds are liveness checks with generous margins, never performance
//! assertions: the machine these run on is small and shared.

mod common;

use common::gettid;
use std::any::Any;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use weft::{JoinError, JoinErrorKind, JoinHandle, Runtime};

/// Held by every test body: see the module docs.
static SERIAL: Mutex<()> = Mutex::new(());

/// Marks panics the tests cause on purpose; the panic hook keeps them quiet
/// (and those whose payload is a [`Counted`]).
const EXPECTED: &str = "[weft-test: expected panic]";

/// Installs (once, process-wide) a panic hook that stays silent for the
/// panics the tests cause on purpose and defers to the previous hook for
/// everything else. Panics on worker threads are not captured by the test
/// harness, so without this the panic test prints a hundred messages.
///
/// The first runtime chains weft's hook (which names the coroutine) in front
/// of the installed one; a runtime is built first so that this hook goes in
/// front of weft's, and expected panics stay silent.
fn quiet_expected_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        drop(runtime(1));
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if payload_str(info.payload()).is_some_and(|s| s.contains(EXPECTED)) || info.payload().is::<Counted>() {
                return;
            }
            previous(info);
        }));
    });
}

/// Runs `body` alone (under [`SERIAL`]) on a helper thread and fails the test
/// if it takes longer than `limit`; a panic in `body` fails the test with
/// the same payload.
fn isolated(limit: Duration, body: impl FnOnce() + Send + 'static) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    quiet_expected_panics();
    let started = Instant::now();
    let runner = thread::Builder::new().name("test-body".into()).spawn(body).expect("a test-body thread");
    while !runner.is_finished() {
        assert!(started.elapsed() < limit, "the test body did not finish within {limit:?} (hang?)");
        thread::sleep(Duration::from_millis(5));
    }
    if let Err(payload) = runner.join() {
        panic::resume_unwind(payload);
    }
}

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("a runtime with its worker threads")
}

/// The text of a panic payload (`&str` or `String`), if it is text.
fn payload_str(payload: &(dyn Any + Send)) -> Option<&str> {
    payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// A printable description of a `join` error.
fn describe(error: &JoinError) -> String {
    match error.stack_error() {
        Some(io) => format!("{error} (io::Error of kind {:?})", io.kind()),
        None => error.to_string(),
    }
}

/// The text of a join error's panic payload; fails the test for any other
/// error.
#[track_caller]
fn panic_text(error: JoinError) -> String {
    let description = describe(&error);
    let payload = error.try_into_panic().unwrap_or_else(|_| panic!("expected a panic, got: {description}"));
    payload_str(&*payload).unwrap_or_else(|| panic!("a panic payload that is not text: {description}")).to_owned()
}

/// Joins a coroutine that its runtime's shutdown cancelled: the join is an
/// `Err` whose text says the runtime shut down. `what` names it in failures.
#[track_caller]
fn joins_as_cancelled<T>(handle: JoinHandle<T>, what: &str) {
    let Err(error) = handle.join() else { panic!("{what}: a coroutine cancelled by shutdown joined as Ok") };
    assert!(error.is_cancelled(), "{what}: not a cancellation: {error}");
    assert_eq!(error.kind(), JoinErrorKind::Shutdown, "{what}: {error}");
    assert!(
        error.to_string().contains("shut down"),
        "{what}: the join error does not say the runtime shut down: {error}"
    );
}

/// Unwraps a join result, failing with the payload's text.
#[track_caller]
fn joined<T>(handle: JoinHandle<T>) -> T {
    handle.join().unwrap_or_else(|error| panic!("join failed: {}", describe(&error)))
}

/// Polls `done` every millisecond until it holds or `limit` passes.
#[track_caller]
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------
// 1. Spawn and join at scale
// ---------------------------------------------------------------------------

const SPAWN_COUNT: u64 = 100_000;

/// 100 000 coroutines spawned from a coroutine: they go to the spawning
/// worker's local `fresh` queue, are run newest-first and stolen
/// oldest-first by the other worker; every result must come back exactly
/// once, through `join` called from a coroutine.
#[test]
fn hundred_thousand_spawned_from_a_coroutine_are_all_joined() {
    isolated(Duration::from_secs(120), || {
        let rt = runtime(2);
        let results = rt.block_on(|| {
            let handles: Vec<_> = (0..SPAWN_COUNT).map(|i| weft::spawn(move || i * 3 + 1)).collect();
            handles.into_iter().map(joined).collect::<Vec<u64>>()
        });
        assert_eq!(results.len() as u64, SPAWN_COUNT);
        for (i, value) in results.into_iter().enumerate() {
            assert_eq!(value, i as u64 * 3 + 1, "wrong result for coroutine {i}");
        }
    });
}

/// 100 000 coroutines spawned from 4 plain OS threads at once (25 000 each,
/// through the shared injector queue) and joined from those OS threads
/// (futex wait, not a coroutine park): every result exact.
#[test]
fn hundred_thousand_spawned_from_os_threads_are_all_joined() {
    isolated(Duration::from_secs(120), || {
        const THREADS: u64 = 4;
        const PER_THREAD: u64 = SPAWN_COUNT / THREADS;
        let rt = runtime(2);
        let checked = AtomicUsize::new(0);
        thread::scope(|scope| {
            for t in 0..THREADS {
                let (rt, checked) = (&rt, &checked);
                scope.spawn(move || {
                    let handles: Vec<_> = (0..PER_THREAD).map(|i| rt.spawn(move || (t << 32) | i)).collect();
                    for (i, handle) in handles.into_iter().enumerate() {
                        assert_eq!(joined(handle), (t << 32) | i as u64, "thread {t}, coroutine {i}");
                        checked.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(checked.load(Ordering::Relaxed) as u64, SPAWN_COUNT);
    });
}

// ---------------------------------------------------------------------------
// 2. Thread affinity (DESIGN.md decision 3)
// ---------------------------------------------------------------------------

thread_local! {
    /// The kernel id of the thread this instance belongs to.
    static OWNER_TID: u32 = gettid();
    /// Per thread: how many increments each coroutine made on this thread.
    static INCREMENTS: RefCell<HashMap<u64, u32>> = RefCell::new(HashMap::new());
}

const AFFINITY_COROUTINES: usize = 10_000;
const AFFINITY_ROUNDS: u32 = 100;

/// One coroutine of the affinity test. Each round it bumps its own entry in
/// a thread-local map, then yields (or sleeps), then checks that it is still
/// on the same OS thread by independent witnesses: `gettid()` (a syscall,
/// which no compiler can cache: the authoritative one), `std::thread`'s id,
/// the tid stored *in* the thread-local and the thread-local's address (LLVM
/// may fold these TLS address computations across the switch — the very
/// hazard of decision 3 — so alone they could miss a move), and that the
/// thread-local map still holds exactly its own increments (a migrated
/// coroutine would see another thread's map, without its entry). A mutant
/// runtime that moves every 1000th yield to the other worker is caught here.
fn affinity_body(index: usize) -> Result<u32, String> {
    let me = weft::current().id();
    let tid = gettid();
    let std_id = thread::current().id();
    let sleeper = index % 100 == 0;
    for round in 0..AFFINITY_ROUNDS {
        let mine = INCREMENTS.with(|map| {
            let mut map = map.borrow_mut();
            let count = map.entry(me).or_insert(0);
            *count += 1;
            *count
        });
        if mine != round + 1 {
            return Err(format!("coroutine {index} round {round}: thread-local count {mine} before the switch"));
        }
        let tls_address = OWNER_TID.with(|t| std::ptr::from_ref(t) as usize);
        if sleeper && round % 25 == 0 {
            weft::sleep(Duration::from_millis(1));
        } else {
            weft::yield_now();
        }
        let now_tid = gettid();
        let owner = OWNER_TID.with(|t| *t);
        let now_address = OWNER_TID.with(|t| std::ptr::from_ref(t) as usize);
        let after = INCREMENTS.with(|map| map.borrow().get(&me).copied());
        if now_tid != tid || owner != tid || now_address != tls_address || thread::current().id() != std_id {
            return Err(format!(
                "coroutine {index} moved in round {round}: tid {tid} -> {now_tid}, thread-local owner {owner}, \
                 TLS address {tls_address:#x} -> {now_address:#x}"
            ));
        }
        if after != Some(round + 1) {
            return Err(format!(
                "coroutine {index} round {round}: its thread-local count is {after:?} after the switch"
            ));
        }
    }
    match INCREMENTS.with(|map| map.borrow_mut().remove(&me)) {
        Some(AFFINITY_ROUNDS) => Ok(tid),
        other => Err(format!("coroutine {index}: final thread-local count {other:?}")),
    }
}

/// 10 000 coroutines on 2 workers, each doing 100 yields (every 100th also
/// sleeps 1 ms four times, so it is woken by a timer): a started coroutine
/// must always resume on the same OS thread and see the same thread-locals.
/// Spawned from outside (the injector), so both workers pick them up.
#[test]
fn started_coroutines_never_change_thread_across_yields_and_sleeps() {
    isolated(Duration::from_secs(120), || {
        let rt = runtime(2);
        let handles: Vec<_> = (0..AFFINITY_COROUTINES).map(|i| rt.spawn(move || affinity_body(i))).collect();
        let mut tids = HashSet::new();
        let mut failures = Vec::new();
        for handle in handles {
            match joined(handle) {
                Ok(tid) => {
                    tids.insert(tid);
                }
                Err(message) => failures.push(message),
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {AFFINITY_COROUTINES} coroutines saw a thread change; first: {}",
            failures.len(),
            failures[0]
        );
        assert_eq!(tids.len(), 2, "expected the coroutines to run on both workers, saw threads {tids:?}");
    });
}

// ---------------------------------------------------------------------------
// 3. Timers
// ---------------------------------------------------------------------------

/// A 64-bit LCG (Knuth's MMIX constants): deterministic "random" numbers.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// 1 000 concurrent sleepers of 1–50 ms on 2 workers (many timers per
/// worker heap, deadlines in random order): none may wake early, and all
/// must be done within 2 × the longest sleep + 400 ms. The 400 ms margin
/// absorbs scheduling noise on a 2-core shared machine (including the
/// start-up of 1 000 stacks); a lost or late timer wake would show up as a
/// hang (watchdog) or as seconds, not milliseconds.
#[test]
fn thousand_random_sleepers_never_wake_early_and_all_finish_promptly() {
    isolated(Duration::from_secs(60), || {
        let rt = runtime(2);
        let mut lcg = Lcg(0x5eed);
        let requests: Vec<Duration> = (0..1_000).map(|_| Duration::from_millis(1 + lcg.next() % 50)).collect();
        let longest = *requests.iter().max().expect("1 000 requests");
        let started = Instant::now();
        let handles: Vec<_> = requests
            .iter()
            .map(|&requested| {
                rt.spawn(move || {
                    let at = Instant::now();
                    weft::sleep(requested);
                    at.elapsed()
                })
            })
            .collect();
        for (i, (handle, requested)) in handles.into_iter().zip(&requests).enumerate() {
            let slept = joined(handle);
            assert!(slept >= *requested, "sleeper {i} asked for {requested:?} and woke after {slept:?}");
        }
        let total = started.elapsed();
        let bound = longest * 2 + Duration::from_millis(400);
        assert!(total <= bound, "1 000 sleepers (longest {longest:?}) took {total:?}, more than {bound:?}");
    });
}

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A coroutine waits with a one-hour timeout, is notified at once, and
/// returns a value; its join handle is dropped unjoined, so the value lives
/// in the task's cell until the last reference to the task goes. The timer
/// of the wait must not be that reference: the value is dropped within
/// seconds, not an hour (before timers were cancelled, the heap entry kept
/// the task for the full hour).
#[test]
fn a_wait_woken_early_leaves_no_timer_holding_its_task() {
    isolated(Duration::from_secs(30), || {
        let rt = runtime(1);
        let shared = Arc::new((weft::sync::Mutex::new(false), weft::sync::Condvar::new()));
        let waiting = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicBool::new(false));
        let handle = {
            let (shared, waiting, dropped) = (Arc::clone(&shared), Arc::clone(&waiting), Arc::clone(&dropped));
            rt.spawn(move || {
                let (flag, cv) = &*shared;
                let mut guard = flag.lock();
                waiting.store(true, Ordering::SeqCst);
                while !*guard {
                    let (next, result) = cv.wait_timeout(guard, Duration::from_secs(3600));
                    assert!(!result.timed_out(), "an hour-long wait timed out");
                    guard = next;
                }
                SetOnDrop(dropped)
            })
        };
        wait_until(Duration::from_secs(10), "the coroutine to wait", || waiting.load(Ordering::SeqCst));
        // The waiter holds the mutex until its wait has released it.
        *shared.0.lock() = true;
        shared.1.notify_all();
        wait_until(Duration::from_secs(10), "the coroutine to finish", || handle.is_finished());
        drop(handle);
        wait_until(Duration::from_secs(5), "the unjoined result to be dropped", || dropped.load(Ordering::SeqCst));
    });
}

/// While two coroutines hand a turn back and forth with hour-long timed
/// waits (each woken early, and each a millisecond shorter than the last,
/// so that stale timers pile up under the armed ones and the heap is
/// compacted over and over), on the same single worker: 20 ms sleeps never
/// wake early, and a coroutine that waits with a 100 ms timeout, is
/// notified early 20 times (each wait reuses its timer's entry, due at the
/// first wait's deadline), then waits once more unnotified, reports a
/// timeout not before 100 ms after that last wait began and not much later.
/// An armed timer lost in a compaction, or a reused entry that did not move
/// on to its new deadline, would hang a waiter (the watchdog fails it).
#[test]
fn armed_timers_survive_the_cancellation_of_many_others() {
    isolated(Duration::from_secs(60), || {
        let rt = runtime(1);
        let (hand_offs, timed_wait, sleeps) = rt.block_on(|| {
            let stop = Arc::new(AtomicBool::new(false));
            let shared = Arc::new((weft::sync::Mutex::new(0u64), weft::sync::Condvar::new()));
            let players: Vec<_> = (0..2u64)
                .map(|me| {
                    let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
                    weft::spawn(move || {
                        let (counter, turn) = &*shared;
                        let mut guard = counter.lock();
                        for waits in 0u64.. {
                            if stop.load(Ordering::SeqCst) {
                                turn.notify_all();
                                break;
                            }
                            if *guard % 2 == me {
                                *guard += 1;
                                turn.notify_one();
                            } else {
                                let shorter = Duration::from_millis(waits.min(1_000_000));
                                let (next, result) = turn.wait_timeout(guard, Duration::from_secs(3600) - shorter);
                                assert!(!result.timed_out(), "an hour-long wait timed out");
                                guard = next;
                            }
                        }
                        *guard
                    })
                })
                .collect();
            // 0: nothing asked; 1: the waiter asks for a notification; 2: done.
            let asks = Arc::new((weft::sync::Mutex::new(0u32), weft::sync::Condvar::new()));
            let notifier = {
                let asks = Arc::clone(&asks);
                weft::spawn(move || {
                    loop {
                        let mut state = asks.0.lock();
                        match *state {
                            1 => {
                                *state = 0;
                                asks.1.notify_one();
                            }
                            2 => return,
                            _ => {}
                        }
                        drop(state);
                        weft::yield_now();
                    }
                })
            };
            let waiter = {
                let asks = Arc::clone(&asks);
                weft::spawn(move || {
                    let (state, cv) = &*asks;
                    let mut guard = state.lock();
                    for _ in 0..20 {
                        *guard = 1;
                        while *guard == 1 {
                            guard = cv.wait_timeout(guard, Duration::from_millis(100)).0;
                        }
                    }
                    *guard = 2;
                    let at = Instant::now();
                    // (`_while`: a spurious wake must not end the test early.)
                    let (_guard, result) = cv.wait_timeout_while(guard, Duration::from_millis(100), |_| true);
                    (result.timed_out(), at.elapsed())
                })
            };
            let sleeper = weft::spawn(|| {
                (0..5)
                    .map(|_| {
                        let at = Instant::now();
                        weft::sleep(Duration::from_millis(20));
                        at.elapsed()
                    })
                    .collect::<Vec<_>>()
            });
            let timed_wait = joined(waiter);
            joined(notifier);
            let sleeps = joined(sleeper);
            stop.store(true, Ordering::SeqCst);
            let hand_offs: Vec<u64> = players.into_iter().map(joined).collect();
            (hand_offs[0], timed_wait, sleeps)
        });
        let (timed_out, waited) = timed_wait;
        assert!(timed_out, "a 100 ms wait nobody notified did not time out (after {waited:?})");
        assert!(waited >= Duration::from_millis(100), "a 100 ms wait timed out after {waited:?}");
        assert!(waited < Duration::from_secs(5), "a 100 ms wait timed out only after {waited:?}");
        for slept in sleeps {
            assert!(slept >= Duration::from_millis(20), "a 20 ms sleep woke after {slept:?}");
        }
        assert!(hand_offs >= 1_000, "only {hand_offs} hand-offs ran meanwhile: the test exercised little");
    });
}

// ---------------------------------------------------------------------------
// 4. Idle runtime
// ---------------------------------------------------------------------------

/// Whether a thread name is a weft worker's: `weft-r<runtime>-w<index>`.
fn is_worker_thread_name(name: &str) -> bool {
    let Some((runtime, index)) = name.strip_prefix("weft-r").and_then(|rest| rest.split_once("-w")) else {
        return false;
    };
    runtime.parse::<usize>().is_ok() && index.trim_end().parse::<usize>().is_ok()
}

/// The ids of this process's weft worker threads.
fn worker_threads() -> HashSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|entry| {
            let tid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
            is_worker_thread_name(&comm).then_some(tid)
        })
        .collect()
}

/// An idle 2-worker runtime (after warm-up, with one coroutine asleep on a
/// one-hour timer and one parked joining it) must not poll: over a 1 s
/// window the whole process uses under 1 % of a CPU (10 ms, from
/// `getrusage`), and its two worker threads under 1 % with at most a few
/// context switches (from /proc; a timed poll loop would show hundreds).
/// In a child process of its own: the process-wide figure must not count
/// the other tests of this binary, which run meanwhile.
#[test]
fn idle_runtime_uses_under_one_percent_of_a_cpu() {
    const NAME: &str = "idle_runtime_uses_under_one_percent_of_a_cpu";
    in_child_process(NAME, Duration::from_secs(60), || {
        const WINDOW: Duration = Duration::from_secs(1);
        let before: HashSet<u32> = worker_threads();
        let rt = runtime(2);
        // A new thread names itself once it runs: wait for both names.
        let mut workers = Vec::new();
        wait_until(Duration::from_secs(10), "this runtime's 2 named worker threads", || {
            workers = worker_threads().difference(&before).copied().collect();
            workers.len() == 2
        });
        // Warm up: start coroutines on the workers (stacks, signal stacks, caches).
        let warm: Vec<_> = (0..200u64)
            .map(|i| {
                rt.spawn(move || {
                    weft::yield_now();
                    if i % 10 == 0 {
                        weft::sleep(Duration::from_millis(2));
                    }
                    i
                })
            })
            .collect();
        for (i, handle) in warm.into_iter().enumerate() {
            assert_eq!(joined(handle), i as u64);
        }
        // A far-off timer and a parked joiner stay in place during the window.
        let sleeper = rt.spawn(|| weft::sleep(Duration::from_secs(3600)));
        let parked = rt.spawn(move || sleeper.join().is_ok());
        thread::sleep(Duration::from_millis(200));

        let cpu_before = common::process_cpu_time();
        let workers_before: Vec<_> = workers.iter().map(|&tid| common::thread_activity(tid)).collect();
        thread::sleep(WINDOW);
        let cpu_used = common::process_cpu_time() - cpu_before;
        let workers_after: Vec<_> = workers.iter().map(|&tid| common::thread_activity(tid)).collect();

        let mut worker_cpu_ns = 0;
        let mut worker_switches = 0;
        for ((cpu0, sw0), (cpu1, sw1)) in workers_before.iter().zip(&workers_after) {
            worker_cpu_ns += cpu1 - cpu0;
            worker_switches += sw1 - sw0;
        }
        let budget = WINDOW / 100;
        assert!(
            Duration::from_nanos(worker_cpu_ns) < budget && worker_switches <= 4,
            "idle workers used {:?} of CPU and {worker_switches} context switches in {WINDOW:?}",
            Duration::from_nanos(worker_cpu_ns)
        );
        assert!(cpu_used < budget, "the idle process used {cpu_used:?} of CPU in {WINDOW:?} (budget {budget:?})");
        assert!(!parked.is_finished(), "the joiner of a one-hour sleeper finished early");
        drop(rt);
        assert!(parked.join().is_err(), "the parked joiner was killed by the shutdown");
    });
}

// ---------------------------------------------------------------------------
// 5. Panics
// ---------------------------------------------------------------------------

/// 1 000 coroutines of which every 10th panics, half with a `&'static str`
/// payload and half with a formatted `String`: exactly those 100 joins
/// return `Err` carrying the very payload, the other 900 return their value,
/// and the runtime keeps working afterwards (a panic must not kill or wedge
/// a worker).
#[test]
fn panicking_coroutines_report_their_payload_and_the_runtime_survives() {
    isolated(Duration::from_secs(60), || {
        const STATIC_PAYLOAD: &str = "[weft-test: expected panic] static payload";
        let rt = runtime(2);
        let handles: Vec<_> = (0..1_000usize)
            .map(|i| {
                rt.spawn(move || {
                    weft::yield_now();
                    match i % 20 {
                        0 => panic!("{}", STATIC_PAYLOAD),
                        10 => panic!("{EXPECTED} coroutine {i} panics"),
                        _ => i,
                    }
                })
            })
            .collect();
        let mut errors = 0;
        for (i, handle) in handles.into_iter().enumerate() {
            match handle.join() {
                Ok(value) => {
                    assert_ne!(i % 10, 0, "coroutine {i} should have panicked");
                    assert_eq!(value, i);
                }
                Err(payload) => {
                    errors += 1;
                    let expected = match i % 20 {
                        0 => STATIC_PAYLOAD.to_string(),
                        10 => format!("{EXPECTED} coroutine {i} panics"),
                        _ => panic!("coroutine {i} failed unexpectedly: {}", describe(&payload)),
                    };
                    assert_eq!(panic_text(payload), expected, "payload of coroutine {i}");
                }
            }
        }
        assert_eq!(errors, 100);
        assert_eq!(joined(rt.spawn(|| 7)), 7, "the runtime still runs coroutines after panics");
        assert_eq!(rt.block_on(|| joined(weft::spawn(|| 8))), 8);
    });
}

// ---------------------------------------------------------------------------
// 6. Shutdown
// ---------------------------------------------------------------------------

/// Counts its drop in `drops[index]` and in `total`.
struct DropGuard {
    index: usize,
    drops: Arc<Vec<AtomicUsize>>,
    total: Arc<AtomicUsize>,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.drops[self.index].fetch_add(1, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
    }
}

/// Dropping a runtime that holds 10 000 started coroutines — 5 000 asleep
/// on one-hour timers, 5 000 parked in `join` on coroutines of a second
/// runtime that sleep an hour — returns within 5 s, unwinds every one of
/// them so each guard on their stacks is dropped exactly once, never lets
/// one continue past its sleep or join, and ends all their join handles
/// with an error saying the runtime shut down.
#[test]
fn dropping_a_runtime_unwinds_every_parked_and_sleeping_coroutine_once() {
    isolated(Duration::from_secs(120), || {
        const N: usize = 10_000;
        let rt = runtime(2);
        let gates_rt = runtime(1);
        let drops: Arc<Vec<AtomicUsize>> = Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
        let total = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let continued = Arc::new(AtomicUsize::new(0));
        let handles: Vec<JoinHandle<()>> = (0..N)
            .map(|index| {
                let guard = DropGuard { index, drops: Arc::clone(&drops), total: Arc::clone(&total) };
                let (started, continued) = (Arc::clone(&started), Arc::clone(&continued));
                if index % 2 == 0 {
                    rt.spawn(move || {
                        let _guard = guard;
                        started.fetch_add(1, Ordering::SeqCst);
                        weft::sleep(Duration::from_secs(3600));
                        continued.fetch_add(1, Ordering::SeqCst);
                    })
                } else {
                    let gate = gates_rt.spawn(|| weft::sleep(Duration::from_secs(3600)));
                    rt.spawn(move || {
                        let _guard = guard;
                        started.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.join();
                        continued.fetch_add(1, Ordering::SeqCst);
                    })
                }
            })
            .collect();
        wait_until(Duration::from_secs(60), "all 10 000 coroutines to start", || started.load(Ordering::SeqCst) == N);
        assert_eq!(total.load(Ordering::SeqCst), 0, "a guard was dropped before the runtime was");

        let dropping = Instant::now();
        drop(rt);
        let took = dropping.elapsed();
        assert!(took < Duration::from_secs(5), "dropping the runtime took {took:?}");

        assert_eq!(continued.load(Ordering::SeqCst), 0, "a coroutine ran past its sleep or join during shutdown");
        assert_eq!(total.load(Ordering::SeqCst), N, "guards dropped");
        for (index, count) in drops.iter().enumerate() {
            assert_eq!(count.load(Ordering::SeqCst), 1, "guard of coroutine {index} dropped this many times");
        }
        for (index, handle) in handles.into_iter().enumerate() {
            assert!(handle.is_finished(), "the handle of coroutine {index} is not finished after the drop");
            joins_as_cancelled(handle, &format!("coroutine {index}"));
        }

        let dropping = Instant::now();
        drop(gates_rt);
        let took = dropping.elapsed();
        assert!(took < Duration::from_secs(5), "dropping the runtime of 5 000 sleeping gates took {took:?}");
    });
}

/// Runs `body` in a child process, so that a hang (a `Runtime::drop` that
/// never returns, with a worker spinning) is contained, or so that a
/// process-wide figure or stderr is the scenario's alone: see
/// `common::in_child_process`. Returns the child's stderr in the parent,
/// `None` in the child.
fn in_child_process(name: &str, limit: Duration, body: impl FnOnce()) -> Option<String> {
    common::in_child_process(&SERIAL, name, &[], limit, body)
}

/// Runs a named coroutine that panics, on a runtime built after `hook` (if
/// any) was installed, and a plain OS thread that panics too. Returns the
/// child's stderr in the parent, `None` in the child.
fn panic_reports(name: &str, user_hook: bool) -> Option<String> {
    in_child_process(name, Duration::from_secs(30), move || {
        if user_hook {
            let previous = panic::take_hook();
            panic::set_hook(Box::new(move |info| {
                eprintln!("USER HOOK RAN for {}", payload_str(info.payload()).unwrap_or("?"));
                previous(info);
            }));
        }
        let rt = runtime(2);
        let handle = weft::Builder::new()
            .name("updater".to_string())
            .spawn_on(&rt, || panic!("the update failed"))
            .expect("spawned");
        let id = handle.id();
        assert!(handle.join().is_err(), "the coroutine panicked");
        eprintln!("THE COROUTINE'S ID WAS {id}");
        let thread = thread::Builder::new().name("plain-thread".into()).spawn(|| panic!("a plain thread failed"));
        assert!(thread.expect("spawned").join().is_err(), "the thread panicked");
    })
}

/// A panic in a named coroutine is reported with the coroutine's id, name
/// and spawn site, not as a panic of the worker thread; a panic on another
/// thread keeps std's report.
#[test]
fn a_coroutine_panic_names_the_coroutine() {
    const NAME: &str = "a_coroutine_panic_names_the_coroutine";
    let Some(stderr) = panic_reports(NAME, false) else { return };
    let id = stderr.split("THE COROUTINE'S ID WAS ").nth(1).and_then(|rest| rest.lines().next()).expect("the id line");
    let expected = format!("coroutine {id} ('updater') panicked at tests/runtime.rs:");
    assert!(stderr.contains(&expected), "no {expected:?} in the child's stderr:\n{stderr}");
    assert!(stderr.contains("the update failed"), "the payload is missing:\n{stderr}");
    assert!(stderr.contains("spawned at tests/runtime.rs:"), "the spawn site is missing:\n{stderr}");
    assert!(!stderr.contains("thread 'weft-"), "the worker thread was named instead:\n{stderr}");
    assert!(
        stderr.contains("thread 'plain-thread'") && stderr.contains("a plain thread failed"),
        "a plain thread's panic lost std's report:\n{stderr}"
    );
}

/// A panic in a generator (a plain `Coroutine`) that a named coroutine of
/// the runtime drives names the generator, the innermost coroutine, not the
/// task that resumed it; a panic in the task itself, after the generator
/// suspended, names the task again.
#[test]
fn a_panic_in_a_generator_driven_by_a_coroutine_names_the_generator() {
    const NAME: &str = "a_panic_in_a_generator_driven_by_a_coroutine_names_the_generator";
    let Some(stderr) = in_child_process(NAME, Duration::from_secs(30), || {
        let rt = runtime(2);
        // Other tasks alive on the workers, so the search for the running
        // stack has several started stacks to choose from.
        let parked: Vec<_> = (0..50).map(|_| rt.spawn(|| weft::sleep(Duration::from_millis(300)))).collect();
        let handle = weft::Builder::new()
            .name("driver".to_string())
            .spawn_on(&rt, || {
                let mut quiet = weft::coroutine::Coroutine::<(), (), ()>::builder()
                    .name("quiet".to_string())
                    .build(|yielder, ()| yielder.suspend(()))
                    .expect("a generator");
                quiet.resume(());
                let mut parser = weft::coroutine::Coroutine::<(), (), ()>::builder()
                    .name("parser".to_string())
                    .build(|_, ()| panic!("the generator failed"))
                    .expect("a generator");
                let caught = panic::catch_unwind(panic::AssertUnwindSafe(|| parser.resume(())));
                assert!(caught.is_err(), "the generator's panic reaches its resumer");
                eprintln!("THE DRIVER'S ID WAS {}", weft::current().id());
                panic!("the driver failed");
            })
            .expect("spawned");
        assert!(handle.join().is_err(), "the driver panicked");
        for task in parked {
            task.join().expect("a sleeper");
        }
    }) else {
        return;
    };
    assert!(stderr.contains("('parser') panicked at tests/runtime.rs:"), "the generator is not named:\n{stderr}");
    assert!(stderr.contains("the generator failed"), "the generator's payload is missing:\n{stderr}");
    let id = stderr.split("THE DRIVER'S ID WAS ").nth(1).and_then(|rest| rest.lines().next()).expect("the id line");
    let expected = format!("coroutine {id} ('driver') panicked at tests/runtime.rs:");
    assert!(stderr.contains(&expected), "no {expected:?} in the child's stderr:\n{stderr}");
    assert!(!stderr.contains("'quiet'"), "a suspended generator was named:\n{stderr}");
    assert!(!stderr.contains("thread 'weft-"), "the worker thread was named instead:\n{stderr}");
}

/// With the user's own panic hook installed before the runtime, a coroutine
/// panic still names the coroutine, and the user's hook still runs (for it
/// and for the plain thread).
#[test]
fn a_coroutine_panic_names_the_coroutine_and_keeps_the_users_hook() {
    const NAME: &str = "a_coroutine_panic_names_the_coroutine_and_keeps_the_users_hook";
    let Some(stderr) = panic_reports(NAME, true) else { return };
    let id = stderr.split("THE COROUTINE'S ID WAS ").nth(1).and_then(|rest| rest.lines().next()).expect("the id line");
    let expected = format!("coroutine {id} ('updater') panicked");
    assert!(stderr.contains(&expected), "no {expected:?} in the child's stderr:\n{stderr}");
    assert!(stderr.contains("USER HOOK RAN for the update failed"), "the user's hook did not run:\n{stderr}");
    assert!(stderr.contains("USER HOOK RAN for a plain thread failed"), "the user's hook missed a thread:\n{stderr}");
}

/// Dropping a runtime while some of its coroutines are *running* (not
/// parked) loops of `yield_now` or of short sleeps: the one running on each
/// worker when shutdown begins must still be stopped and unwound, so the
/// drop returns promptly (< 5 s), each guard is dropped once, no `sleep`
/// returns early, and every handle reports the shutdown. Runs in a child
/// process, so a drop that never returns fails the test instead of leaving
/// a spinning worker behind in this one.
#[test]
fn dropping_a_runtime_stops_coroutines_running_yield_and_sleep_loops() {
    const NAME: &str = "dropping_a_runtime_stops_coroutines_running_yield_and_sleep_loops";
    in_child_process(NAME, Duration::from_secs(30), || {
        const ROUNDS: usize = 20;
        const EACH: usize = 4;
        for round in 0..ROUNDS {
            let rt = runtime(2);
            let drops: Arc<Vec<AtomicUsize>> = Arc::new((0..2 * EACH).map(|_| AtomicUsize::new(0)).collect());
            let total = Arc::new(AtomicUsize::new(0));
            let started = Arc::new(AtomicUsize::new(0));
            let early = Arc::new(AtomicUsize::new(0));
            let never = Arc::new(AtomicBool::new(false));
            let handles: Vec<JoinHandle<()>> = (0..2 * EACH)
                .map(|index| {
                    let guard = DropGuard { index, drops: Arc::clone(&drops), total: Arc::clone(&total) };
                    let (started, early, never) = (Arc::clone(&started), Arc::clone(&early), Arc::clone(&never));
                    rt.spawn(move || {
                        let _guard = guard;
                        started.fetch_add(1, Ordering::SeqCst);
                        while !never.load(Ordering::Relaxed) {
                            if index < EACH {
                                weft::yield_now();
                            } else {
                                let at = Instant::now();
                                weft::sleep(Duration::from_millis(1));
                                if at.elapsed() < Duration::from_millis(1) {
                                    early.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                    })
                })
                .collect();
            wait_until(Duration::from_secs(10), "the looping coroutines to start", || {
                started.load(Ordering::SeqCst) == 2 * EACH
            });
            thread::sleep(Duration::from_millis(10));
            println!("round {round}: dropping the runtime");
            let dropping = Instant::now();
            drop(rt);
            let took = dropping.elapsed();
            println!("round {round}: dropped in {took:?}");
            assert!(took < Duration::from_secs(5), "round {round}: dropping the runtime took {took:?}");
            assert_eq!(total.load(Ordering::SeqCst), 2 * EACH, "round {round}: guards dropped");
            for (index, count) in drops.iter().enumerate() {
                assert_eq!(count.load(Ordering::SeqCst), 1, "round {round}: guard {index} dropped this many times");
            }
            assert_eq!(early.load(Ordering::SeqCst), 0, "round {round}: a sleep returned early");
            for (index, handle) in handles.into_iter().enumerate() {
                joins_as_cancelled(handle, &format!("round {round}, coroutine {index}"));
            }
        }
    });
}

/// A task parked from inside a generator it drives (a `weft::coroutine::
/// Coroutine` resumed on the task's stack) is cancelled at shutdown like any
/// other: the forced unwind goes through the generator's frames and then the
/// task's, both sides' destructors run, and `join` reports the shutdown.
#[test]
fn shutdown_unwinds_a_task_parked_inside_a_generator() {
    isolated(Duration::from_secs(30), || {
        let rt = runtime(1);
        let lock = Arc::new(weft::sync::Mutex::new(()));
        let held = lock.lock();
        // Slot 0: a local of the task; slot 1: a local of the generator.
        let drops: Arc<Vec<AtomicUsize>> = Arc::new((0..2).map(|_| AtomicUsize::new(0)).collect());
        let total = Arc::new(AtomicUsize::new(0));
        let parked = Arc::new(AtomicBool::new(false));
        let handle = {
            let guard = |index| DropGuard { index, drops: Arc::clone(&drops), total: Arc::clone(&total) };
            let (outer, inner) = (guard(0), guard(1));
            let (lock, parked) = (Arc::clone(&lock), Arc::clone(&parked));
            rt.spawn(move || {
                let _outer = outer;
                let mut generator = weft::coroutine::Coroutine::<(), (), ()>::new(move |_, ()| {
                    let _inner = inner;
                    parked.store(true, Ordering::SeqCst);
                    drop(lock.lock()); // parks the task from the generator's stack
                });
                let _ = generator.resume(());
            })
        };
        wait_until(Duration::from_secs(10), "the task to block in the generator", || parked.load(Ordering::SeqCst));
        thread::sleep(Duration::from_millis(20));
        drop(rt);
        drop(held);
        let dropped: Vec<usize> = drops.iter().map(|d| d.load(Ordering::SeqCst)).collect();
        assert_eq!(dropped, [1, 1], "the task's and the generator's locals are each dropped once");
        joins_as_cancelled(handle, "the task");
    });
}

/// A task that parks in a destructor while unwinding its own panic cannot
/// be force-unwound at shutdown (a second unwind through a panicking frame
/// would abort), so its stack is leaked; its `join` must still end, with an
/// error that names the shutdown, instead of waiting forever.
#[test]
fn shutdown_ends_the_join_of_a_task_parked_while_panicking() {
    isolated(Duration::from_secs(30), || {
        struct SleepOnDrop(Arc<AtomicBool>);
        impl Drop for SleepOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
                weft::sleep(Duration::from_secs(3600));
            }
        }
        let rt = runtime(1);
        let parked = Arc::new(AtomicBool::new(false));
        let handle = {
            let parked = Arc::clone(&parked);
            rt.spawn(move || {
                let _sleeps_when_dropped = SleepOnDrop(parked);
                panic!("this coroutine fails on purpose, then sleeps in a destructor");
            })
        };
        wait_until(Duration::from_secs(10), "the destructor to start sleeping", || parked.load(Ordering::SeqCst));
        thread::sleep(Duration::from_millis(20));
        drop(rt);
        joins_as_cancelled(handle, "the task");
    });
}

// ---------------------------------------------------------------------------
// 7. spawn_blocking
// ---------------------------------------------------------------------------

/// While 4 coroutines on a 2-worker runtime (so both workers' coroutines)
/// are each waiting for a `spawn_blocking` job that blocks its thread until
/// it is told to end (30 s at most), 10 000 other coroutines are spawned
/// and joined, and only then are the jobs told. Each job must hear it: a
/// blocking job that ran on (or held) a worker would keep the quick
/// coroutines from finishing until it gave up waiting, and the word would
/// come too late. (An ordering of events, not of timings: it holds however
/// slowly the machine runs.)
#[test]
fn blocking_jobs_do_not_stall_the_workers() {
    isolated(Duration::from_secs(90), || {
        const BLOCKERS: usize = 4;
        const QUICK: usize = 10_000;
        let rt = runtime(2);
        let jobs_running = Arc::new(AtomicUsize::new(0));
        let mut done_senders = Vec::new();
        let blockers: Vec<_> = (0..BLOCKERS)
            .map(|_| {
                let jobs_running = Arc::clone(&jobs_running);
                let (done_tx, done_rx) = mpsc::channel::<()>();
                done_senders.push(done_tx);
                rt.spawn(move || {
                    let job = weft::spawn_blocking(move || {
                        jobs_running.fetch_add(1, Ordering::SeqCst);
                        done_rx.recv_timeout(Duration::from_secs(30)).is_ok()
                    });
                    joined(job)
                })
            })
            .collect();
        wait_until(Duration::from_secs(30), "the blocking jobs to start", || {
            jobs_running.load(Ordering::SeqCst) == BLOCKERS
        });
        let spawned_at = Instant::now();
        rt.block_on(|| {
            let quick: Vec<_> = (0..QUICK).map(|i| weft::spawn(move || i + 1)).collect();
            for (i, handle) in quick.into_iter().enumerate() {
                assert_eq!(joined(handle), i + 1);
            }
        });
        let quick_took = spawned_at.elapsed();
        for done_tx in done_senders {
            let _ = done_tx.send(()); // the job may have given up already
        }
        for (i, blocker) in blockers.into_iter().enumerate() {
            assert!(
                joined(blocker),
                "blocking job {i} was not told to end within 30 s: the {QUICK} quick coroutines took {quick_took:?}"
            );
        }
    });
}

/// Two jobs submitted back to back while the pool has one idle thread: the
/// first waits for the second, so both must run at once. (The pool once
/// woke its one idle thread for each, and started no second thread: the
/// second job waited for the first, which waited for it.) Repeated, because
/// the window between the two submissions is short.
#[test]
fn blocking_jobs_submitted_together_run_together() {
    isolated(Duration::from_secs(120), || {
        let rt = runtime(1);
        rt.block_on(|| {
            for round in 0..20 {
                // Leaves one pool thread idle (its job is done).
                joined(weft::spawn_blocking(|| ()));
                weft::sleep(Duration::from_millis(5));
                let (tx, rx) = std::sync::mpsc::channel();
                let first = weft::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)).is_ok());
                let second = weft::spawn_blocking(move || tx.send(()).expect("the first job waits"));
                assert!(joined(first), "round {round}: the second job did not run while the first waited for it");
                joined(second);
            }
        });
    });
}

// ---------------------------------------------------------------------------
// 8. block_on misuse
// ---------------------------------------------------------------------------

/// `block_on` from inside a coroutine would block its worker: it must panic
/// with a message that says so, whether the coroutine belongs to the same
/// runtime or another one, and the runtime must go on working.
#[test]
fn block_on_inside_a_coroutine_panics_with_a_clear_message() {
    isolated(Duration::from_secs(60), || {
        let rt = Arc::new(runtime(2));
        let inner = Arc::clone(&rt);
        let payload = rt.spawn(move || inner.block_on(|| 1)).join().expect_err("block_on inside a coroutine");
        let text = panic_text(payload);
        assert!(text.contains("inside a coroutine"), "message: {text:?}");

        // Caught inside the coroutine itself.
        let inner = Arc::clone(&rt);
        let caught = joined(rt.spawn(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(|| inner.block_on(|| 2)));
            result.map_err(|payload| payload_str(&*payload).map(str::to_owned))
        }));
        match caught {
            Err(Some(text)) => assert!(text.contains("inside a coroutine"), "message: {text:?}"),
            other => panic!("expected a caught panic with a message, got {other:?}"),
        }

        // From a coroutine of another runtime.
        let other = runtime(1);
        let inner = Arc::clone(&rt);
        let payload = other.spawn(move || inner.block_on(|| 3)).join().expect_err("block_on from another runtime");
        let text = panic_text(payload);
        assert!(text.contains("inside a coroutine"), "message: {text:?}");

        assert_eq!(rt.block_on(|| 4), 4, "block_on still works from a plain thread");
        assert_eq!(other.block_on(|| 5), 5);
    });
}

// ---------------------------------------------------------------------------
// 9. Builder, current(), the default runtime
// ---------------------------------------------------------------------------

/// Edges of the small API: invalid stack sizes (0 and `usize::MAX`) are
/// `InvalidInput` errors and not panics or aborts, names and ids are visible
/// through `weft::current()`, `try_current()` is `None` on a plain thread,
/// and `weft::spawn` outside any runtime starts (and reuses) a default one.
#[test]
fn builder_current_and_default_runtime() {
    isolated(Duration::from_secs(60), || {
        let rt = runtime(2);
        for bytes in [0, usize::MAX] {
            let error = weft::Builder::new().stack_size(bytes).spawn_on(&rt, || ()).expect_err("invalid stack size");
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "stack_size({bytes}) on a runtime: {error}");
            let error = weft::Builder::new().stack_size(bytes).spawn(|| ()).expect_err("invalid stack size");
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "stack_size({bytes}) by default: {error}");
            let error = Runtime::builder().stack_size(bytes).build().expect_err("invalid runtime stack size");
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "runtime stack_size({bytes}): {error}");
        }
        let error = Runtime::builder().workers(0).build().expect_err("zero workers");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);

        // Names and ids.
        let named = weft::Builder::new()
            .name("sprocket".to_string())
            .stack_size(64 * 1024)
            .spawn_on(&rt, || {
                let me = weft::current();
                (me.name().map(str::to_owned), me.id(), weft::try_current().map(|c| c.id()))
            })
            .expect("a valid builder");
        let id = named.id();
        let (name, seen_id, try_id) = joined(named);
        assert_eq!(name.as_deref(), Some("sprocket"));
        assert_eq!(seen_id, id, "current().id() inside == JoinHandle::id()");
        assert_eq!(try_id, Some(id));
        let unnamed = rt.spawn(|| weft::current().name().map(str::to_owned));
        assert_eq!(joined(unnamed), None);
        // Builder::spawn from inside a coroutine lands on the same runtime (same worker names).
        let nested = rt.block_on(|| {
            let h = weft::Builder::new()
                .name("inner".to_string())
                .spawn(|| (weft::current().name().map(str::to_owned), thread::current().name().map(str::to_owned)))
                .expect("a valid builder");
            joined(h)
        });
        assert_eq!(nested.0.as_deref(), Some("inner"));
        assert!(nested.1.as_deref().is_some_and(is_worker_thread_name), "ran on {:?}", nested.1);

        // Plain threads.
        assert!(weft::try_current().is_none(), "try_current() on a plain thread");
        let outside = panic::catch_unwind(weft::current).expect_err("current() outside a coroutine panics");
        assert!(payload_str(&*outside).is_some_and(|t| t.contains("outside a coroutine")));
        weft::yield_now();
        let at = Instant::now();
        weft::sleep(Duration::from_millis(5));
        assert!(at.elapsed() >= Duration::from_millis(5), "weft::sleep on a plain thread returned early");

        // The default runtime, from this thread and from another plain thread.
        let h = weft::spawn(|| {
            let inner = weft::spawn(|| 6 * 7);
            (joined(inner), weft::try_current().is_some())
        });
        assert_eq!(joined(h), (42, true));
        let from_thread = thread::spawn(|| joined(weft::spawn(|| 9))).join().expect("a plain thread");
        assert_eq!(from_thread, 9);
        assert_eq!(joined(weft::spawn_blocking(|| 10)), 10, "spawn_blocking outside any runtime");
    });
}

// ---------------------------------------------------------------------------
// 10-11. Fairness under yield storms
// ---------------------------------------------------------------------------

/// Spawns `count` coroutines on `rt` that yield in a loop until `stop`, each
/// returning how many times it yielded; waits until all have started.
fn spawn_yielders(rt: &Runtime, count: usize, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<u64>> {
    let started = Arc::new(AtomicUsize::new(0));
    let handles = (0..count)
        .map(|_| {
            let (stop, started) = (Arc::clone(stop), Arc::clone(&started));
            rt.spawn(move || {
                started.fetch_add(1, Ordering::SeqCst);
                let mut yields = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    weft::yield_now();
                    yields += 1;
                }
                yields
            })
        })
        .collect();
    wait_until(Duration::from_secs(10), "the yielders to start", || started.load(Ordering::SeqCst) == count);
    handles
}

/// On a 1-worker runtime whose two coroutines yield forever (the run queue
/// is never empty, so the worker never goes idle), work submitted from
/// outside must still be picked up: `rt.spawn(|| 42).join()` from an OS
/// thread returns; a coroutine woken from a plain thread (its
/// `spawn_blocking` job ends: an inbox wake) and by a timer also finishes.
/// Joins run on helper threads bounded by a 5 s channel timeout, so a
/// starved queue fails the test instead of hanging it.
#[test]
fn outside_work_is_picked_up_while_coroutines_yield_forever() {
    isolated(Duration::from_secs(60), || {
        let rt = Arc::new(runtime(1));
        let stop = Arc::new(AtomicBool::new(false));
        let yielders = spawn_yielders(&rt, 2, &stop);

        let (tx, rx) = mpsc::channel();
        let submitter = Arc::clone(&rt);
        let tx_spawn = tx.clone();
        thread::spawn(move || {
            let _ = tx_spawn.send(("spawn from an OS thread", submitter.spawn(|| 42).join().ok()));
        });
        let submitter = Arc::clone(&rt);
        thread::spawn(move || {
            let woken = submitter.spawn(|| {
                let from_pool = joined(weft::spawn_blocking(|| 40));
                weft::sleep(Duration::from_millis(5));
                from_pool + 2
            });
            let _ = tx.send(("inbox and timer wakes", woken.join().ok()));
        });
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            outcomes.push(rx.recv_timeout(Duration::from_secs(5)));
        }
        stop.store(true, Ordering::SeqCst);
        for outcome in outcomes {
            match outcome {
                Ok((what, value)) => assert_eq!(value, Some(42), "{what}"),
                Err(e) => panic!("outside work was not picked up within 5 s while coroutines yield: {e}"),
            }
        }
        for handle in yielders {
            assert!(joined(handle) > 0);
        }
    });
}

/// On a 1-worker runtime, two coroutines yield in a loop counting their own
/// yields until a shared stop flag is set; a third sets the flag after 50
/// yields of its own. If yielding did not let every ready coroutine run,
/// the third would never get to 50 and the yielders would never stop. All
/// three must complete (5 s channel timeout), and both yielders must have
/// run.
#[test]
fn a_yield_heavy_coroutine_does_not_starve_others() {
    isolated(Duration::from_secs(60), || {
        let rt = Arc::new(runtime(1));
        let (tx, rx) = mpsc::channel();
        let runner = Arc::clone(&rt);
        thread::spawn(move || {
            let counts = runner.block_on(|| {
                let stop = Arc::new(AtomicBool::new(false));
                let yielders: Vec<_> = (0..2)
                    .map(|_| {
                        let stop = Arc::clone(&stop);
                        weft::spawn(move || {
                            let mut count = 0u64;
                            while !stop.load(Ordering::Relaxed) {
                                count += 1;
                                weft::yield_now();
                            }
                            count
                        })
                    })
                    .collect();
                let stopper = weft::spawn(move || {
                    for _ in 0..50 {
                        weft::yield_now();
                    }
                    stop.store(true, Ordering::Relaxed);
                    50u64
                });
                let mut counts: Vec<u64> = yielders.into_iter().map(joined).collect();
                counts.push(joined(stopper));
                counts
            });
            let _ = tx.send(counts);
        });
        let counts = rx.recv_timeout(Duration::from_secs(5)).expect("all three coroutines complete within 5 s");
        assert!(counts[0] > 0 && counts[1] > 0, "both yielders ran: {counts:?}");
        assert_eq!(counts[2], 50);
    });
}

/// The two fairness rules (injector first every 61st round, newest fresh
/// task first every 31st) keep working after thousands of rounds in which
/// both come due together while the injector always has work: on a
/// 1-worker runtime two coroutines yield forever, an OS thread keeps the
/// injector non-empty, and after a while a coroutine spawns a child (a fresh
/// task) and joins it. The run queue never empties, so only the fresh rule
/// can start the child; it must finish (5 s channel timeout).
#[test]
fn fresh_tasks_still_start_after_many_rounds_with_a_busy_injector() {
    isolated(Duration::from_secs(60), || {
        let rt = Arc::new(runtime(1));
        let stop = Arc::new(AtomicBool::new(false));
        let yielders = spawn_yielders(&rt, 2, &stop);
        let feeder = {
            let (rt, stop) = (Arc::clone(&rt), Arc::clone(&stop));
            thread::spawn(move || {
                let mut handles = VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    handles.push_back(rt.spawn(|| ()));
                    if handles.len() > 64 {
                        joined(handles.pop_front().expect("not empty"));
                    }
                }
                handles.len()
            })
        };
        // Let many rounds pass (each coincidence of the two rules is 1 891
        // rounds; a yield round is some tens of nanoseconds).
        thread::sleep(Duration::from_millis(50));
        let (tx, rx) = mpsc::channel();
        let parent = rt.spawn(move || {
            let child = weft::spawn(|| 7u32);
            let _ = tx.send(joined(child));
        });
        let outcome = rx.recv_timeout(Duration::from_secs(5));
        stop.store(true, Ordering::SeqCst);
        assert_eq!(outcome.expect("a fresh child starts while coroutines yield and the injector is busy"), 7);
        joined(parent);
        feeder.join().expect("the feeder does not panic");
        for handle in yielders {
            assert!(joined(handle) > 0);
        }
    });
}

/// The oldest unstarted coroutine of a worker starts within a bounded time
/// even while the running coroutine keeps spawning and yielding (one task
/// per accepted request, say): newest-first alone would pick the newest
/// spawn at every fresh round and never reach the first one. The victim is
/// spawned first, then the spawner loops (spawn, yield) until it ran; it
/// must run within 100 ms (the scheduler's bound is 20 ms while the queue
/// grows), however many newer tasks pile up meanwhile. That is wall-clock
/// time, which a loaded machine can stretch by descheduling the worker
/// threads: up to 5 attempts, and the test fails only if every one took
/// 100 ms or more (without the rule, each takes far longer, or for ever).
fn oldest_unstarted_coroutine_starts_while_newer_ones_keep_coming(workers: usize) {
    isolated(Duration::from_secs(120), move || {
        const ATTEMPTS: usize = 5;
        let mut attempts = Vec::new();
        for _ in 0..ATTEMPTS {
            let rt = runtime(workers);
            let ran = Arc::new(AtomicBool::new(false));
            let ran_in_spawner = Arc::clone(&ran);
            let (waited, spawned) = rt.block_on(move || {
                let ran_in_victim = Arc::clone(&ran_in_spawner);
                let start = Instant::now();
                let victim = weft::spawn(move || ran_in_victim.store(true, Ordering::SeqCst));
                let mut spawned = 0u64;
                while !ran_in_spawner.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(10) {
                    drop(weft::spawn(|| {}));
                    spawned += 1;
                    weft::yield_now();
                }
                let waited = start.elapsed();
                joined(victim);
                (waited, spawned)
            });
            assert!(
                ran.load(Ordering::SeqCst),
                "the victim never ran: {spawned} newer coroutines were spawned in 10 s"
            );
            if waited < Duration::from_millis(100) {
                return;
            }
            attempts.push((waited, spawned));
        }
        panic!(
            "in each of {ATTEMPTS} attempts the victim waited 100 ms or more on {workers} worker(s) \
             (waited, newer coroutines spawned meanwhile): {attempts:?}"
        );
    });
}

#[test]
fn oldest_unstarted_coroutine_starts_on_one_busy_worker() {
    oldest_unstarted_coroutine_starts_while_newer_ones_keep_coming(1);
}

#[test]
fn oldest_unstarted_coroutine_starts_on_two_busy_workers() {
    oldest_unstarted_coroutine_starts_while_newer_ones_keep_coming(2);
}

/// The other shape of the same starvation: the fresh queue never grows, yet
/// is never down to the victim when a fresh task is picked. The running
/// coroutine keeps exactly one newer unstarted child at a time (it spawns
/// the next one only when the last one finished, and yields meanwhile), so
/// every pick of the newest takes that child. Only the absolute bound (a
/// quarter second) starts the victim; it must start well within 2 s.
#[test]
fn oldest_unstarted_coroutine_starts_behind_a_steady_queue() {
    isolated(Duration::from_secs(60), || {
        let rt = runtime(1);
        let (waited, spawned) = rt.block_on(|| {
            let ran = Arc::new(AtomicBool::new(false));
            let ran_in_victim = Arc::clone(&ran);
            let start = Instant::now();
            let victim = weft::spawn(move || ran_in_victim.store(true, Ordering::SeqCst));
            let mut spawned = 0u64;
            while !ran.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(10) {
                let child = weft::spawn(|| {});
                spawned += 1;
                while !child.is_finished() && !ran.load(Ordering::SeqCst) {
                    weft::yield_now();
                }
            }
            let waited = start.elapsed();
            joined(victim);
            (waited, spawned)
        });
        assert!(waited < Duration::from_secs(2), "the victim waited {waited:?} behind {spawned} newer children");
    });
}

// ---------------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------------

/// 40 000 coroutines that park until a gate opens, under the process's
/// `vm.max_map_count` (65 530 by default: about 32 000 stacks fit). Those
/// that got a stack park; the others cannot start, and their join handles
/// say why (naming `vm.max_map_count`). The first such failure is reported
/// on stderr exactly once; the parked ones use no CPU while they wait; once
/// the gate opens they all finish, and the runtime still spawns and runs new
/// coroutines. Runs in a child process (it counts stderr lines and process
/// CPU time).
#[test]
fn forty_thousand_parked_coroutines_past_the_map_limit() {
    const NAME: &str = "forty_thousand_parked_coroutines_past_the_map_limit";
    const COUNT: usize = 40_000;
    const REPORT: &str = "could not start";
    let Some(stderr) = in_child_process(NAME, Duration::from_secs(120), || {
        let rt = runtime(2);
        let gate = Arc::new((weft::sync::Mutex::new(false), weft::sync::Condvar::new()));
        let started = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..COUNT)
            .map(|_| {
                let (gate, started) = (Arc::clone(&gate), Arc::clone(&started));
                rt.spawn(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    let (open, opened) = &*gate;
                    let mut open = open.lock();
                    while !*open {
                        open = opened.wait(open);
                    }
                })
            })
            .collect();
        // Every coroutine has either started (and parked) or failed to.
        let failed = || handles.iter().filter(|h| h.is_finished()).count();
        wait_until(Duration::from_secs(60), "every coroutine to start or fail", || {
            thread::sleep(Duration::from_millis(20));
            started.load(Ordering::SeqCst) + failed() == COUNT
        });
        let cpu_before = common::process_cpu_time();
        thread::sleep(Duration::from_secs(1));
        let cpu_parked = common::process_cpu_time() - cpu_before;
        assert!(cpu_parked < Duration::from_millis(100), "{cpu_parked:?} of CPU in 1 s while parked");
        let failures = failed();
        {
            let (open, opened) = &*gate;
            *open.lock() = true;
            opened.notify_all();
        }
        let mut finished = 0;
        for handle in handles {
            match handle.join() {
                Ok(()) => finished += 1,
                Err(payload) => {
                    let why = describe(&payload);
                    assert_eq!(payload.kind(), JoinErrorKind::NoStack, "{why}");
                    assert!(payload.stack_error().is_some(), "a stack failure carries its io::Error: {why}");
                    assert!(why.contains("could not start"), "the error says the coroutine never started: {why}");
                    assert!(why.contains("vm.max_map_count"), "a coroutine failed for another reason: {why}");
                }
            }
        }
        assert_eq!(finished + failures, COUNT);
        assert_eq!(finished, started.load(Ordering::SeqCst), "a started coroutine did not finish");
        // Healthy: the stacks came back, and new coroutines run.
        let sums: Vec<_> = (0..1000u64).map(|i| rt.spawn(move || i * 2)).collect();
        assert_eq!(sums.into_iter().map(joined).sum::<u64>(), 999 * 1000);
        eprintln!("FAILED TO START: {failures}");
    }) else {
        return;
    };
    let failures: usize = stderr
        .split("FAILED TO START: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the child's count is missing:\n{stderr}"));
    let reports = stderr.matches(REPORT).count();
    if failures == 0 {
        // vm.max_map_count was raised on this machine: nothing to report.
        assert_eq!(reports, 0, "a failure was reported although none happened:\n{stderr}");
    } else {
        assert_eq!(reports, 1, "{failures} failures were reported {reports} times:\n{stderr}");
        assert!(stderr.contains("sysctl -w vm.max_map_count="), "the report does not say how to raise the limit");
    }
}

/// 30 000 coroutines with the default stack size (256 KiB) alive and parked
/// at the same time, under the default `vm.max_map_count` (65 530; each
/// stack is 2 maps, so this is 60 000 maps): none may exit before all have
/// started (each sleeps 300 ms at a time until the started count is
/// complete), and all must complete with exact results. A failure to get a
/// stack surfaces as a join error whose message is reported.
#[test]
fn thirty_thousand_parked_coroutines_at_once() {
    isolated(Duration::from_secs(120), || {
        const N: usize = 30_000;
        let rt = runtime(2);
        let started = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicUsize::new(0));
        let most_alive = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let (started, alive, most_alive) = (Arc::clone(&started), Arc::clone(&alive), Arc::clone(&most_alive));
                rt.spawn(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    most_alive.fetch_max(alive.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    loop {
                        weft::sleep(Duration::from_millis(300));
                        if started.load(Ordering::SeqCst) == N {
                            break;
                        }
                    }
                    alive.fetch_sub(1, Ordering::SeqCst);
                    i * 7
                })
            })
            .collect();
        let mut failures = Vec::new();
        for (i, handle) in handles.into_iter().enumerate() {
            match handle.join() {
                Ok(value) => assert_eq!(value, i * 7, "result of coroutine {i}"),
                Err(payload) => failures.push((i, describe(&payload))),
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {N} coroutines failed; first: coroutine {} -> {}",
            failures.len(),
            failures[0].0,
            failures[0].1
        );
        assert_eq!(most_alive.load(Ordering::SeqCst), N, "all coroutines were alive at once");
        assert_eq!(alive.load(Ordering::SeqCst), 0);
    });
}

// ---------------------------------------------------------------------------
// 11. What a task owns: its closure's captures and its result
// ---------------------------------------------------------------------------

/// Counts drops per kind: what a closure captured, and what it returned.
#[derive(Default)]
struct Drops {
    captures: AtomicUsize,
    results: AtomicUsize,
}

/// Counts its own drop in one of the two counters of a [`Drops`].
struct Counted {
    drops: Arc<Drops>,
    is_result: bool,
}

impl Counted {
    fn capture(drops: &Arc<Drops>) -> Counted {
        Counted { drops: Arc::clone(drops), is_result: false }
    }

    fn result(drops: &Arc<Drops>) -> Counted {
        Counted { drops: Arc::clone(drops), is_result: true }
    }
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted").field("is_result", &self.is_result).finish_non_exhaustive()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let counter = if self.is_result { &self.drops.results } else { &self.drops.captures };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// A task keeps its closure (and, once finished, its result) in memory its
/// join handle shares: each captured value and each result must be dropped
/// exactly once, whoever lets go last. Four ways a handle ends — joined,
/// dropped after the coroutine finished, dropped before it started, and a
/// coroutine that panics (its payload, itself a counted value, still
/// reaches `join`) — each 1 000 times, from a coroutine and from an OS
/// thread.
#[test]
fn every_capture_and_result_is_dropped_exactly_once() {
    isolated(Duration::from_secs(60), || {
        const N: usize = 1_000;
        let rt = runtime(2);
        for from_coroutine in [false, true] {
            let drops = Arc::new(Drops::default());
            let spawn = |rt: &Runtime, f: Box<dyn FnOnce() -> Counted + Send>| -> JoinHandle<Counted> {
                if from_coroutine { rt.block_on(|| weft::spawn(f)) } else { rt.spawn(f) }
            };
            // Joined: the result comes out of `join` and is dropped here.
            for _ in 0..N {
                let (capture, drops2) = (Counted::capture(&drops), Arc::clone(&drops));
                let handle = spawn(
                    &rt,
                    Box::new(move || {
                        let _capture = capture;
                        Counted::result(&drops2)
                    }),
                );
                drop(joined(handle));
            }
            assert_eq!(drops.captures.load(Ordering::SeqCst), N, "captures of joined coroutines");
            assert_eq!(drops.results.load(Ordering::SeqCst), N, "results taken by join");

            // Detached after finishing: the result waits in the task's memory
            // and is dropped with the handle.
            let mut handles = Vec::new();
            for _ in 0..N {
                let (capture, drops2) = (Counted::capture(&drops), Arc::clone(&drops));
                handles.push(spawn(
                    &rt,
                    Box::new(move || {
                        let _capture = capture;
                        Counted::result(&drops2)
                    }),
                ));
            }
            wait_until(Duration::from_secs(10), "the detached coroutines to finish", || {
                handles.iter().all(JoinHandle::is_finished)
            });
            assert_eq!(drops.results.load(Ordering::SeqCst), N, "a result was dropped before its handle");
            drop(handles);
            assert_eq!(drops.captures.load(Ordering::SeqCst), 2 * N, "captures of detached coroutines");
            assert_eq!(drops.results.load(Ordering::SeqCst), 2 * N, "results of detached coroutines");

            // Detached before finishing: the coroutine drops what it returns
            // into memory nobody will read; it goes when the task does.
            let gate = Arc::new(AtomicBool::new(false));
            for _ in 0..N {
                let (capture, drops2, gate) = (Counted::capture(&drops), Arc::clone(&drops), Arc::clone(&gate));
                drop(spawn(
                    &rt,
                    Box::new(move || {
                        let _capture = capture;
                        while !gate.load(Ordering::SeqCst) {
                            weft::yield_now();
                        }
                        Counted::result(&drops2)
                    }),
                ));
            }
            gate.store(true, Ordering::SeqCst);
            wait_until(Duration::from_secs(10), "the detached coroutines' captures and results to go", || {
                drops.captures.load(Ordering::SeqCst) == 3 * N && drops.results.load(Ordering::SeqCst) == 3 * N
            });

            // Panicking: the capture is dropped by the unwinding, the payload
            // (a counted value) travels to `join` and is dropped here.
            for _ in 0..N {
                let (capture, drops2) = (Counted::capture(&drops), Arc::clone(&drops));
                let handle = spawn(
                    &rt,
                    Box::new(move || {
                        let _capture = capture;
                        panic::panic_any(Counted::result(&drops2))
                    }),
                );
                let payload = handle.join().expect_err("the coroutine panicked");
                assert!(payload.into_panic().is::<Counted>(), "the panic payload reaches join unchanged");
            }
            assert_eq!(drops.captures.load(Ordering::SeqCst), 4 * N, "captures of panicking coroutines");
            assert_eq!(drops.results.load(Ordering::SeqCst), 4 * N, "panic payloads");
            assert_eq!(Arc::strong_count(&drops), 1, "every counted value is gone");
        }
    });
}

/// Coroutines that never start because their runtime shuts down: each
/// join handle ends with the shutdown error, and each closure is dropped
/// exactly once without running. The only worker is held by a coroutine
/// that blocks its thread until after `Runtime::drop` has begun, so the
/// others are still queued (half from outside, in the injector; half from
/// a coroutine, in the worker's own queue) when shutdown comes.
#[test]
fn unstarted_coroutines_at_shutdown_fail_their_join_and_drop_their_closure_once() {
    isolated(Duration::from_secs(60), || {
        const N: usize = 1_000;
        let rt = runtime(1);
        let drops = Arc::new(Drops::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let blocking = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let queued_inside: Arc<Mutex<Vec<JoinHandle<Counted>>>> = Arc::default();
        let spawn_one = |ran: &Arc<AtomicUsize>| {
            let (capture, drops2, ran) = (Counted::capture(&drops), Arc::clone(&drops), Arc::clone(ran));
            move || {
                let _capture = capture;
                ran.fetch_add(1, Ordering::SeqCst);
                Counted::result(&drops2)
            }
        };
        let inside: Vec<_> = (0..N / 2).map(|_| spawn_one(&ran)).collect();
        let blocker = {
            let (blocking, release, queued_inside) =
                (Arc::clone(&blocking), Arc::clone(&release), Arc::clone(&queued_inside));
            rt.spawn(move || {
                // Queued on this worker's own queue, behind us.
                let handles: Vec<_> = inside.into_iter().map(weft::spawn).collect();
                *queued_inside.lock().unwrap() = handles;
                blocking.store(true, Ordering::SeqCst);
                // Hold the worker thread itself (no yield): nothing else runs.
                while !release.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(1));
                }
            })
        };
        wait_until(Duration::from_secs(10), "the blocker to hold the worker", || blocking.load(Ordering::SeqCst));
        let mut handles: Vec<_> = (0..N / 2).map(|_| rt.spawn(spawn_one(&ran))).collect();
        handles.append(&mut queued_inside.lock().unwrap());
        assert_eq!(handles.len(), N);
        let dropping = Arc::new(AtomicBool::new(false));
        let releaser = {
            let (release, dropping) = (Arc::clone(&release), Arc::clone(&dropping));
            // Runtime::drop below marks the shutdown first thing; 300 ms
            // after this thread is about to call it (30 s at most), by the
            // time the blocker lets go, the worker leaves its loop instead
            // of starting the queued coroutines.
            thread::spawn(move || {
                let waiting = Instant::now();
                while !dropping.load(Ordering::SeqCst) && waiting.elapsed() < Duration::from_secs(30) {
                    thread::sleep(Duration::from_millis(1));
                }
                thread::sleep(Duration::from_millis(300));
                release.store(true, Ordering::SeqCst);
            })
        };
        dropping.store(true, Ordering::SeqCst);
        drop(rt);
        releaser.join().unwrap();
        assert!(blocker.join().is_ok(), "the blocker finished normally");
        assert_eq!(ran.load(Ordering::SeqCst), 0, "a queued coroutine ran during shutdown");
        assert_eq!(drops.captures.load(Ordering::SeqCst), N, "each unstarted closure dropped once");
        for (index, handle) in handles.into_iter().enumerate() {
            assert!(handle.is_finished(), "handle {index} is not finished after the runtime was dropped");
            let payload = handle.join().expect_err("an unstarted coroutine joins as Err");
            assert_eq!(payload.kind(), JoinErrorKind::Shutdown, "handle {index}: {payload}");
            let text = payload.to_string();
            assert!(text.contains("before it started"), "handle {index}: {text:?}");
        }
        assert_eq!(drops.results.load(Ordering::SeqCst), 0, "no results were made");
        assert_eq!(Arc::strong_count(&drops), 1, "every closure is gone");
    });
}

/// A coroutine parked in `join` of an unstarted sibling when the runtime
/// shuts down: the worker unwinds the joiner, then fails the sibling as
/// unstarted, which wakes the (finished) joiner into the run queue after the
/// queue was emptied once. The worker empties its queues until they stay
/// empty, so the shutdown ends cleanly (a debug build's worker asserted
/// that, and `Runtime::drop` passes a worker thread's panic on). The sibling is kept from starting by a coroutine
/// that yields a few times (fewer or more than a fairness interval: every
/// k below) and then blocks its worker while the runtime is dropped.
#[test]
fn shutdown_with_a_joiner_of_an_unstarted_task_ends_cleanly() {
    isolated(Duration::from_secs(60), || {
        for k in 0..40 {
            let rt = runtime(1);
            let (tx, rx) = mpsc::channel();
            let joiner = rt.spawn(move || {
                let sibling = weft::spawn(|| ());
                let blocker = weft::spawn(move || {
                    for _ in 0..k {
                        weft::yield_now();
                    }
                    let _ = tx.send(());
                    thread::sleep(Duration::from_millis(20));
                });
                let result = sibling.join();
                drop(blocker);
                result
            });
            rx.recv_timeout(Duration::from_secs(10)).expect("the blocker runs");
            drop(rt);
            // Unwound by the shutdown; or woken with the sibling's shutdown
            // error (the worker failed it before it stopped); or the
            // sibling ran (a fairness round started it, k >= 31).
            match joiner.join() {
                Err(error) => assert_eq!(error.kind(), weft::JoinErrorKind::Shutdown, "k = {k}: {}", describe(&error)),
                Ok(Err(error)) => {
                    assert_eq!(error.kind(), weft::JoinErrorKind::Shutdown, "k = {k}: {}", describe(&error))
                }
                Ok(Ok(())) => {}
            }
        }
    });
}

/// A `JoinError` is one pointer wide (its contents are boxed), so that a
/// successful join moves no more than its value; the error survives the
/// round trips through `try_into_panic` and `io::Error` whole.
#[test]
fn join_error_is_one_pointer_and_keeps_what_it_says() {
    assert_eq!(std::mem::size_of::<JoinError>(), std::mem::size_of::<usize>());
    assert_eq!(std::mem::size_of::<Result<(), JoinError>>(), std::mem::size_of::<usize>());
    let rt = runtime(1);
    let error = rt.block_on(|| {
        let handle = weft::Builder::new()
            .name("sleeper".to_string())
            .spawn(|| weft::sleep(Duration::from_secs(60)))
            .expect("spawn");
        handle.cancel();
        handle.join().expect_err("a cancelled coroutine has no result")
    });
    let (id, text) = (error.id(), error.to_string());
    assert_eq!(error.kind(), JoinErrorKind::Cancelled, "{text}");
    // Not a panic: the same error comes back.
    let error = error.try_into_panic().expect_err("a cancellation is not a panic");
    assert_eq!((error.id(), error.name(), error.kind()), (id, Some("sleeper"), JoinErrorKind::Cancelled));
    assert_eq!(error.to_string(), text);
    // Into io::Error: kind Other, carrying the JoinError.
    let io_error = std::io::Error::from(error);
    assert_eq!(io_error.kind(), std::io::ErrorKind::Other);
    let inner = io_error.into_inner().expect("carries the JoinError").downcast::<JoinError>().expect("a JoinError");
    assert_eq!(inner.to_string(), text);
}
