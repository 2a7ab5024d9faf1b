//! `Runtime::dump` through the public API: every coroutine listed with the
//! state it is known to be in (from a coroutine of the runtime and from an
//! OS thread), backtraces that name the function a coroutine parked in, a
//! worker stuck in a coroutine reported as busy within the dump's timeout,
//! and the dump printed on a signal.
//!
//! Every test body takes [`SERIAL`]: the tests count on idle workers and on
//! the wall clock, and the machine is small and shared.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use weft::sync::{Condvar, Mutex};
use weft::{CoroutineDump, CoroutineState, Dump, JoinHandle, ParkedOn, Runtime};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime(workers: usize) -> Arc<Runtime> {
    Arc::new(Runtime::builder().workers(workers).build().expect("a runtime"))
}

/// What each coroutine of the scenario is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    OnMutex,
    OnCondvar,
    Sleeping,
    Joining,
    Yielding,
    Unstarted,
    Dumper,
}

#[inline(never)]
fn dump_test_marker_parks_on_mutex(lock: &Mutex<()>) {
    drop(std::hint::black_box(lock.lock()));
}

#[inline(never)]
fn dump_test_marker_waits_on_condvar(pair: &(Mutex<bool>, Condvar)) {
    let (flag, cv) = pair;
    let mut guard = flag.lock();
    while !*guard {
        guard = cv.wait(guard);
    }
}

#[inline(never)]
fn dump_test_marker_sleeps() {
    weft::sleep(Duration::from_secs(3600));
    std::hint::black_box(()); // not a tail call: this frame stays on the stack
}

#[inline(never)]
fn dump_test_marker_joins(handle: JoinHandle<()>) {
    let _ = std::hint::black_box(handle.join());
}

/// The scenario's coroutines, by role, and what ends their waits.
struct Scenario {
    roles: HashMap<u64, Role>,
    handles: Vec<JoinHandle<()>>,
    lock: Arc<Mutex<()>>,
    pair: Arc<(Mutex<bool>, Condvar)>,
    stop_yielding: Arc<AtomicBool>,
}

const EACH: usize = 160;

/// Spawns `EACH` coroutines of each waiting role plus `EACH` yielders
/// (from the calling coroutine, which holds `lock`'s guard meanwhile, so
/// the mutex waiters wait), and lets them all get where they wait. Returns
/// once every one of them is in place.
fn set_up(guard_holder: &Mutex<()>, lock: Arc<Mutex<()>>) -> Scenario {
    let _ = guard_holder;
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let stop_yielding = Arc::new(AtomicBool::new(false));
    let in_place = Arc::new(AtomicUsize::new(0));
    let mut roles = HashMap::new();
    let mut handles = Vec::new();
    let mut mutex_waiters = Vec::new();
    for _ in 0..EACH {
        let (lock, in_place) = (Arc::clone(&lock), Arc::clone(&in_place));
        let h = weft::spawn(move || {
            in_place.fetch_add(1, Ordering::SeqCst);
            dump_test_marker_parks_on_mutex(&lock);
        });
        roles.insert(h.id(), Role::OnMutex);
        mutex_waiters.push(h);
    }
    for _ in 0..EACH {
        let (pair, in_place) = (Arc::clone(&pair), Arc::clone(&in_place));
        let h = weft::spawn(move || {
            in_place.fetch_add(1, Ordering::SeqCst);
            dump_test_marker_waits_on_condvar(&pair);
        });
        roles.insert(h.id(), Role::OnCondvar);
        handles.push(h);
    }
    for _ in 0..EACH {
        let in_place = Arc::clone(&in_place);
        let h = weft::spawn(move || {
            in_place.fetch_add(1, Ordering::SeqCst);
            dump_test_marker_sleeps();
        });
        roles.insert(h.id(), Role::Sleeping);
        handles.push(h);
    }
    for waiter in mutex_waiters {
        let in_place = Arc::clone(&in_place);
        let h = weft::spawn(move || {
            in_place.fetch_add(1, Ordering::SeqCst);
            dump_test_marker_joins(waiter);
        });
        roles.insert(h.id(), Role::Joining);
        handles.push(h);
    }
    for _ in 0..EACH {
        let (stop, in_place) = (Arc::clone(&stop_yielding), Arc::clone(&in_place));
        let h = weft::spawn(move || {
            in_place.fetch_add(1, Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                weft::yield_now();
            }
        });
        roles.insert(h.id(), Role::Yielding);
        handles.push(h);
    }
    // Everyone has run up to its wait once the counter is full and a few
    // more rounds have passed (a park completes within its first run).
    while in_place.load(Ordering::SeqCst) < 5 * EACH {
        weft::yield_now();
    }
    for _ in 0..3 {
        weft::yield_now();
    }
    Scenario { roles, handles, lock, pair, stop_yielding }
}

impl Scenario {
    /// Ends every wait and joins everyone.
    fn finish(self, guard: weft::sync::MutexGuard<'_, ()>) {
        drop(guard);
        *self.pair.0.lock() = true;
        self.pair.1.notify_all();
        self.stop_yielding.store(true, Ordering::SeqCst);
        drop(self.lock);
        drop(self.handles); // detached: the sleepers never finish
        // The sleepers sleep for an hour: their runtime's drop unwinds them.
    }
}

/// Checks that each coroutine of `roles` is listed with its role's state.
fn check(dump: &Dump, roles: &HashMap<u64, Role>, lock: usize, condvar_pair: usize) {
    let text = dump.to_string();
    let mut seen = HashMap::<Role, usize>::new();
    for (&id, &role) in roles {
        let c: &CoroutineDump = dump.coroutine(id).unwrap_or_else(|| panic!("coroutine {id} ({role:?}) is missing"));
        *seen.entry(role).or_default() += 1;
        let state = c.state();
        let ok = match role {
            Role::OnMutex => {
                matches!(state, CoroutineState::Parked { on: ParkedOn::Mutex(at), wakes_in: None } if at >= lock && at < lock + 64)
            }
            Role::OnCondvar => {
                matches!(state, CoroutineState::Parked { on: ParkedOn::Condvar(at), .. } if at >= condvar_pair && at < condvar_pair + 64)
            }
            Role::Sleeping => matches!(state, CoroutineState::Parked { on: ParkedOn::Sleep, wakes_in: Some(left) }
                    if left > Duration::from_secs(3000)),
            Role::Joining => matches!(state, CoroutineState::Parked { on: ParkedOn::Join(joined), .. }
                    if roles.get(&joined) == Some(&Role::OnMutex)),
            Role::Yielding => state == CoroutineState::Runnable,
            Role::Unstarted => state == CoroutineState::Unstarted,
            Role::Dumper => state == CoroutineState::Running,
        };
        assert!(ok, "coroutine {id}, a {role:?}, is listed as {state:?}\n{c:?}");
        assert!(c.spawned_at().is_some_and(|at| at.file().ends_with("dump.rs")), "{c:?}: spawn site");
        // Runnable and running coroutines are not timed (yields, wakes and
        // resumes stay cheap).
        let timed = !matches!(role, Role::Yielding | Role::Dumper);
        assert_eq!(c.in_state_for().is_some(), timed, "{c:?}: time in state");
        let marker = match role {
            Role::OnMutex => Some("dump_test_marker_parks_on_mutex"),
            Role::OnCondvar => Some("dump_test_marker_waits_on_condvar"),
            Role::Sleeping => Some("dump_test_marker_sleeps"),
            Role::Joining => Some("dump_test_marker_joins"),
            _ => None,
        };
        if let Some(marker) = marker {
            let bt = c.backtrace().unwrap_or_else(|| panic!("{c:?} has no backtrace: {:?}", c.backtrace_skipped()));
            assert!(bt.contains(marker), "the backtrace of a {role:?} does not name {marker}:\n{bt}");
            // It ends at the coroutine's entry: nothing of the worker below.
            assert!(!bt.contains("worker::run"), "the backtrace of a {role:?} runs on into its worker:\n{bt}");
            assert!(!bt.contains("weft_call_on_stack"), "the walk's own frame is shown:\n{bt}");
        }
        if matches!(role, Role::Unstarted | Role::Dumper) {
            assert!(c.backtrace().is_none(), "{c:?} is not suspended but has a backtrace");
        }
    }
    assert!(text.contains("dump_test_marker_parks_on_mutex"), "the printed dump lacks the backtraces");
    let summary = dump.summary().to_string();
    assert_eq!(summary, format!("{dump:#}"));
    assert!(summary.lines().count() > roles.len(), "one line per coroutine, plus a header");
    assert!(!summary.contains("dump_test_marker"), "the summary has no backtraces");
    println!("{} coroutines, by role: {seen:?}; collected in {:?}", roles.len(), dump.took());
}

/// 960 coroutines in known states on one worker, dumped by a coroutine of
/// the runtime: the dumper is running, the yielders runnable, the fresh
/// spawns unstarted, the rest parked on what they wait on, with backtraces.
#[test]
fn a_dump_from_a_coroutine_lists_every_state() {
    let _serial = serial();
    let rt = runtime(1);
    let rt2 = Arc::clone(&rt);
    let lock = Arc::new(Mutex::new(()));
    let dumper = rt.spawn(move || {
        let guard = lock.lock();
        let scenario = set_up(&lock, Arc::clone(&lock));
        let mut roles = scenario.roles.clone();
        roles.insert(weft::current().id(), Role::Dumper);
        let stop = Arc::new(AtomicBool::new(false));
        let unstarted: Vec<_> = (0..EACH)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let h = weft::spawn(move || stop.store(true, Ordering::SeqCst));
                roles.insert(h.id(), Role::Unstarted);
                h
            })
            .collect();
        let dump = rt2.dump();
        let lock_at = Arc::as_ptr(&lock) as usize;
        let pair_at = Arc::as_ptr(&scenario.pair) as usize;
        check(&dump, &roles, lock_at, pair_at);
        assert!(dump.busy_workers().is_empty(), "{:?}", dump.busy_workers());
        scenario.finish(guard);
        for h in unstarted {
            h.join().expect("an unstarted coroutine");
        }
        drop(rt2);
    });
    dumper.join().expect("the dumping coroutine");
}

/// The same scenario on two workers, dumped from an OS thread while the
/// coroutine that set it up waits: both workers answer, and every
/// coroutine is listed as what it does.
#[test]
fn a_dump_from_an_os_thread_lists_every_state() {
    let _serial = serial();
    let rt = runtime(2);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let lock = Arc::new(Mutex::new(()));
    let conductor = rt.spawn(move || {
        let guard = lock.lock();
        let scenario = set_up(&lock, Arc::clone(&lock));
        let lock_at = Arc::as_ptr(&lock) as usize;
        let pair_at = Arc::as_ptr(&scenario.pair) as usize;
        ready_tx.send((scenario.roles.clone(), lock_at, pair_at)).unwrap();
        // Wait for the dump without holding a worker: poll with short sleeps.
        while done_rx.try_recv().is_err() {
            weft::sleep(Duration::from_millis(5));
        }
        scenario.finish(guard);
    });
    let (roles, lock_at, pair_at) = ready_rx.recv().expect("the scenario is set up");
    // Let hand-offs between the two workers settle (a Condvar waiter may
    // still be queued for the Condvar's Mutex).
    thread::sleep(Duration::from_millis(100));
    let dump = rt.dump();
    done_tx.send(()).unwrap();
    assert!(dump.busy_workers().is_empty(), "{:?}", dump.busy_workers());
    // The conductor itself sleeps between polls (or is about to).
    assert!(dump.coroutine(conductor.id()).is_some(), "the conductor is missing");
    check(&dump, &roles, lock_at, pair_at);
    conductor.join().expect("the conductor");
}

/// A worker stuck in a coroutine that spins cannot answer: the dump returns
/// after its timeout (half a second), names the worker and the coroutine it
/// is busy with (id and spawn site, asked of the worker's thread with the
/// stall monitor's probe signal), and still lists the unstarted coroutines queued there and
/// in the runtime's queue (and counts those spawned there with `same_worker`).
#[test]
fn a_stuck_worker_is_reported_busy() {
    let _serial = serial();
    let rt = runtime(1);
    let spinning = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st) = (Arc::clone(&spinning), Arc::clone(&stop));
    let spinner = rt.spawn(move || {
        let queued: Vec<_> = (0..20).map(|_| weft::spawn(|| {})).collect();
        let ids: Vec<u64> = queued.iter().map(JoinHandle::id).collect();
        // These wait in the worker's run queue, which only it reads: the
        // dump can count them, not list them.
        let pinned: Vec<_> =
            (0..3).map(|_| weft::Builder::new().same_worker(true).spawn(|| {}).expect("a coroutine")).collect();
        s.store(true, Ordering::SeqCst);
        while !st.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        for h in queued.into_iter().chain(pinned) {
            h.join().unwrap();
        }
        ids
    });
    while !spinning.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(1));
    }
    let outside: Vec<_> = (0..10).map(|_| rt.spawn(|| {})).collect();
    thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let dump = rt.dump();
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    assert!(took < Duration::from_secs(3), "the dump of a stuck runtime took {took:?}");
    assert!(took >= Duration::from_millis(400), "the dump gave up on the worker after only {took:?}");
    let busy = dump.busy_workers();
    assert_eq!(busy.len(), 1, "{busy:?}");
    assert_eq!(busy[0].worker, 0);
    assert_eq!(busy[0].running, Some(spinner.id()), "{busy:?}");
    assert_eq!(busy[0].unstarted_not_listed, 3, "{busy:?}");
    let listed = dump.coroutine(spinner.id()).expect("the spinner is listed");
    assert_eq!(listed.state(), CoroutineState::Running);
    // Asked of the worker's own thread: where the spinner was spawned.
    assert!(listed.spawned_at().is_some_and(|at| at.file().ends_with("dump.rs")), "{listed:?}");
    assert!(listed.backtrace_skipped().is_some_and(|why| why.contains("did not answer")), "{listed:?}");
    for h in &outside {
        let c = dump.coroutine(h.id()).expect("an unstarted coroutine from outside is listed");
        assert_eq!((c.state(), c.worker()), (CoroutineState::Unstarted, None), "{c:?}");
    }
    let text = dump.to_string();
    assert!(text.contains("worker 0 did not answer"), "{text}");
    assert!(text.contains(&format!("busy running coroutine {}", spinner.id())), "{text}");
    assert!(text.contains("nor the 3 spawned there with same_worker that have not started"), "{text}");
    let queued = spinner.join().expect("the spinner");
    for id in queued {
        let c = dump.coroutine(id).expect("an unstarted coroutine queued on the stuck worker is listed");
        assert_eq!((c.state(), c.worker()), (CoroutineState::Unstarted, Some(0)), "{c:?}");
    }
    for h in outside {
        h.join().unwrap();
    }
}

/// `dump_on_signal` refuses what is not a signal, and the signals weft or
/// the kernel keep for themselves.
#[test]
fn dump_on_signal_refuses_reserved_signals() {
    for signal in [0, -1, 1000, libc::SIGSEGV, libc::SIGBUS, libc::SIGURG, libc::SIGKILL, libc::SIGSTOP] {
        let error = Runtime::builder().workers(1).dump_on_signal(signal).build().expect_err("refused");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}");
        assert!(error.to_string().contains(&signal.to_string()), "the error names the signal: {error}");
    }
}

/// Runs `body` in a child process with `env` set; see
/// `common::in_child_process`.
fn in_child_process(name: &str, env: &[(&str, &str)], limit: Duration, body: impl FnOnce()) -> Option<String> {
    common::in_child_process(&SERIAL, name, env, limit, body)
}

#[inline(never)]
fn dump_test_marker_waits_for_the_signal(pair: &(Mutex<bool>, Condvar)) {
    dump_test_marker_waits_on_condvar(pair);
    std::hint::black_box(()); // not a tail call: this frame stays on the stack
}

/// The child's side of the signal tests: a coroutine parked on a Condvar,
/// the signal raised, and time for the dump thread to print.
fn raise_and_wait(rt: Runtime, signal: i32) {
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let p = Arc::clone(&pair);
    let waiter = weft::Builder::new()
        .name("signal-waiter".into())
        .spawn_on(&rt, move || dump_test_marker_waits_for_the_signal(&p))
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    // SAFETY: raise has no preconditions; the runtime's handler is installed.
    assert_eq!(unsafe { libc::raise(signal) }, 0);
    thread::sleep(Duration::from_millis(1000));
    *pair.0.lock() = true;
    pair.1.notify_all();
    waiter.join().unwrap();
}

fn check_signal_dump(stderr: &str, signal: i32) {
    assert!(stderr.contains(&format!("weft: signal {signal}: weft runtime dump")), "no dump on stderr:\n{stderr}");
    assert!(stderr.contains("'signal-waiter' [parked on Condvar"), "the waiter is not listed:\n{stderr}");
    assert!(stderr.contains("dump_test_marker_waits_for_the_signal"), "no backtrace of the waiter:\n{stderr}");
}

/// `dump_on_signal(SIGUSR1)`: raising it prints the dump on stderr.
#[test]
fn the_dump_prints_on_the_signal_chosen_by_the_builder() {
    const NAME: &str = "the_dump_prints_on_the_signal_chosen_by_the_builder";
    let stderr = in_child_process(NAME, &[], Duration::from_secs(20), || {
        let rt = Runtime::builder().workers(2).dump_on_signal(libc::SIGUSR1).build().unwrap();
        raise_and_wait(rt, libc::SIGUSR1);
    });
    if let Some(stderr) = stderr {
        check_signal_dump(&stderr, libc::SIGUSR1);
    }
}

/// `WEFT_DUMP_SIGNAL=USR2`: the same without touching the code.
#[test]
fn the_dump_prints_on_the_signal_named_by_the_environment() {
    const NAME: &str = "the_dump_prints_on_the_signal_named_by_the_environment";
    let stderr = in_child_process(NAME, &[("WEFT_DUMP_SIGNAL", "SIGUSR2")], Duration::from_secs(20), || {
        let rt = Runtime::builder().workers(1).build().unwrap();
        raise_and_wait(rt, libc::SIGUSR2);
    });
    if let Some(stderr) = stderr {
        check_signal_dump(&stderr, libc::SIGUSR2);
    }
}

/// A coroutine blocked in a channel's `recv`, `send` or a `Select` shows
/// what it waits on.
#[test]
fn dump_names_channel_waits() {
    use weft::sync::channel;
    let runtime = weft::Runtime::builder().workers(1).build().unwrap();
    let (tx, rx) = channel::bounded::<u32>(0);
    let (tx2, rx2) = channel::bounded::<u32>(0);
    let (_keep_tx, never) = channel::bounded::<u32>(0);
    let receiver = runtime.spawn(move || rx.recv().ok());
    let sender = runtime.spawn(move || tx2.send(1).is_ok());
    let selector = runtime.spawn(move || {
        let mut select = channel::Select::new();
        select.recv(&never);
        select.recv(&never);
        select.select_timeout(std::time::Duration::from_secs(30)).is_ok()
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    let text = runtime.dump().to_string();
    assert!(text.contains("(recv)"), "{text}");
    assert!(text.contains("(send)"), "{text}");
    assert!(text.contains("select over 2 operations"), "{text}");
    tx.send(7).unwrap();
    assert_eq!(receiver.join().unwrap(), Some(7));
    assert_eq!(rx2.recv().unwrap(), 1);
    assert!(sender.join().unwrap());
    selector.cancel();
    let _ = selector.join();
}

/// A cancelled coroutine whose destructor waits (here for a lock another
/// coroutine holds) is listed as cancelled and unwinding, with the
/// destructor's wait as its site: its cancel completes only when that wait
/// ends. One that nobody cancelled is not marked.
#[test]
fn a_cancelled_coroutine_waiting_in_a_destructor_is_marked_unwinding() {
    let _serial = serial();
    let rt = runtime(1);
    let lock = Arc::new(Mutex::new(()));
    /// Takes the lock as it is dropped.
    struct TakesTheLock(Arc<Mutex<()>>);
    impl Drop for TakesTheLock {
        fn drop(&mut self) {
            let _held = self.0.lock();
        }
    }
    let held = Arc::clone(&lock);
    let (locked_tx, locked_rx) = mpsc::channel();
    let (release_tx, release_rx) = weft::sync::channel::bounded::<()>(0);
    let holder = rt.spawn(move || {
        let _held = held.lock();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    locked_rx.recv().unwrap();
    let guarded = Arc::clone(&lock);
    let cancelled = rt.spawn(move || {
        let _guard = TakesTheLock(guarded);
        weft::sleep(Duration::from_secs(3600));
    });
    thread::sleep(Duration::from_millis(20));
    cancelled.cancel();
    let deadline = Instant::now() + Duration::from_secs(10);
    let entry = loop {
        let dump = rt.dump();
        let entry = dump.coroutines().iter().find(|c| c.id() == cancelled.id()).cloned();
        if let Some(entry) =
            entry.filter(|c| matches!(c.state(), CoroutineState::Parked { on: ParkedOn::Mutex(_), .. }))
        {
            break entry;
        }
        assert!(Instant::now() < deadline, "the cancelled coroutine never parked on the lock:\n{dump}");
        thread::sleep(Duration::from_millis(5));
    };
    assert!(entry.cancel_requested() && entry.is_unwinding(), "{entry:?}");
    let dump = rt.dump();
    let listing = format!("{dump:#}");
    let line = listing.lines().find(|l| l.starts_with(&format!("coroutine {} ", cancelled.id()))).expect("listed");
    assert!(line.contains("; cancelled, unwinding]"), "{listing}");
    let holder_entry = dump.coroutines().iter().find(|c| c.id() == holder.id()).expect("the holder is listed");
    assert!(!holder_entry.cancel_requested() && !holder_entry.is_unwinding(), "{holder_entry:?}");
    // The holder lets go: the destructor takes the lock, and the cancel ends.
    release_tx.send(()).unwrap();
    assert!(cancelled.join().unwrap_err().is_cancelled());
    holder.join().unwrap();
}
