//! weft::sync under load, from coroutines, from OS threads, and from both at
//! once. Every test runs its participants three ways (`Mode`), and checks
//! exact counts: nothing lost, nothing twice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use weft::sync::{Condvar, Mutex, RwLock, Semaphore};

#[derive(Debug, Clone, Copy)]
enum Mode {
    Coroutines,
    Threads,
    Mixed,
}

const MODES: [Mode; 3] = [Mode::Coroutines, Mode::Threads, Mode::Mixed];

fn runtime() -> &'static weft::Runtime {
    static RUNTIME: std::sync::OnceLock<weft::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| weft::Runtime::builder().workers(4).build().expect("runtime"))
}

/// Runs `f(i)` for i in 0..n as coroutines, OS threads, or alternately (even
/// i a coroutine, odd i a thread), and waits for all; returns their results
/// in order.
fn run_all<T, F>(mode: Mode, n: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> T + Send + Sync + 'static,
{
    let f = Arc::new(f);
    enum Handle<T> {
        Coroutine(weft::JoinHandle<T>),
        Thread(std::thread::JoinHandle<T>),
    }
    let handles: Vec<Handle<T>> = (0..n)
        .map(|i| {
            let f = Arc::clone(&f);
            let coroutine = match mode {
                Mode::Coroutines => true,
                Mode::Threads => false,
                Mode::Mixed => i % 2 == 0,
            };
            if coroutine {
                Handle::Coroutine(runtime().spawn(move || f(i)))
            } else {
                Handle::Thread(std::thread::spawn(move || f(i)))
            }
        })
        .collect();
    handles
        .into_iter()
        .map(|h| match h {
            Handle::Coroutine(h) => h.join().expect("a coroutine panicked"),
            Handle::Thread(h) => h.join().expect("a thread panicked"),
        })
        .collect()
}

/// 4 workers; 256 coroutines and 8 OS threads each increment one
/// `Mutex<u64>` 10 000 times: exactly 2 640 000. (The brief's mixed hammer;
/// the all-coroutine and all-thread variants use 264 of one kind.)
#[test]
fn mutex_hammer_exact_count() {
    for mode in MODES {
        let counter = Arc::new(Mutex::new(0u64));
        let participants = 264;
        let c = Arc::clone(&counter);
        let mode_for = move |i: usize| match mode {
            Mode::Mixed => i < 256,
            Mode::Coroutines => true,
            Mode::Threads => false,
        };
        // Mixed: exactly 256 coroutines and 8 threads.
        let f = move |_: usize| {
            for _ in 0..10_000 {
                *c.lock() += 1;
            }
        };
        let f = Arc::new(f);
        let handles: Vec<_> = (0..participants)
            .map(|i| {
                let f = Arc::clone(&f);
                if mode_for(i) { Ok(runtime().spawn(move || f(i))) } else { Err(std::thread::spawn(move || f(i))) }
            })
            .collect();
        for h in handles {
            match h {
                Ok(h) => h.join().unwrap(),
                Err(h) => h.join().unwrap(),
            }
        }
        assert_eq!(*counter.lock(), 2_640_000, "{mode:?}");
    }
}

/// A bounded buffer (Mutex + two Condvars); every item delivered exactly once
/// and each producer's items in order, for {1,4,10} producers x {1,4,10}
/// consumers x capacity {1,16}.
#[test]
fn producer_consumer_matrix() {
    struct Buffer {
        items: Mutex<VecDeque<(usize, u64)>>,
        not_full: Condvar,
        not_empty: Condvar,
        capacity: usize,
    }
    for mode in MODES {
        for producers in [1usize, 4, 10] {
            for consumers in [1usize, 4, 10] {
                for capacity in [1usize, 16] {
                    let per_producer = 300u64;
                    let total = producers as u64 * per_producer;
                    let buffer = Arc::new(Buffer {
                        items: Mutex::new(VecDeque::new()),
                        not_full: Condvar::new(),
                        not_empty: Condvar::new(),
                        capacity,
                    });
                    let b = Arc::clone(&buffer);
                    let got = run_all(mode, producers + consumers, move |i| {
                        if i < producers {
                            for seq in 0..per_producer {
                                let mut items = b.not_full.wait_while(b.items.lock(), |q| q.len() >= b.capacity);
                                items.push_back((i, seq));
                                drop(items);
                                b.not_empty.notify_one();
                            }
                            Vec::new()
                        } else {
                            let c = (i - producers) as u64;
                            let share = total / consumers as u64 + u64::from(c < total % consumers as u64);
                            (0..share)
                                .map(|_| {
                                    let mut items = b.not_empty.wait_while(b.items.lock(), |q| q.is_empty());
                                    let item = items.pop_front().expect("not empty");
                                    drop(items);
                                    b.not_full.notify_one();
                                    item
                                })
                                .collect()
                        }
                    });
                    let mut seen = vec![vec![false; per_producer as usize]; producers];
                    let mut count = 0;
                    for taken in got {
                        let mut last = vec![None; producers];
                        for (p, seq) in taken {
                            assert!(!seen[p][seq as usize], "{mode:?}: ({p},{seq}) delivered twice");
                            seen[p][seq as usize] = true;
                            assert!(last[p] < Some(seq), "{mode:?}: producer {p} out of order");
                            last[p] = Some(seq);
                            count += 1;
                        }
                    }
                    assert_eq!(count, total, "{mode:?} {producers}x{consumers} cap {capacity}: items lost");
                }
            }
        }
    }
}

/// Condvar broadcast: 200 waiters x 200 rounds; each waiter wakes exactly once
/// per round (it waits for the round number to change, then reports).
#[test]
fn condvar_broadcast_rounds() {
    for mode in MODES {
        let (waiters, rounds) = (200usize, 200u64);
        // (round, how many waiters have seen this round)
        let state = Arc::new((Mutex::new((0u64, 0usize)), Condvar::new(), Condvar::new()));
        let s = Arc::clone(&state);
        let driver = std::thread::spawn(move || {
            let (lock, round_changed, all_seen) = &*s;
            for round in 1..=rounds {
                let mut st = lock.lock();
                st.0 = round;
                st.1 = 0;
                round_changed.notify_all();
                let st = all_seen.wait_while(st, |st| st.1 < waiters);
                assert_eq!(st.1, waiters);
            }
        });
        let s = Arc::clone(&state);
        let seen = run_all(mode, waiters, move |_| {
            let (lock, round_changed, all_seen) = &*s;
            let mut wakes = 0u64;
            let mut st = lock.lock();
            for round in 1..=rounds {
                st = round_changed.wait_while(st, |st| st.0 < round);
                assert_eq!(st.0, round, "a waiter missed a round");
                st.1 += 1;
                wakes += 1;
                if st.1 == waiters {
                    all_seen.notify_one();
                }
            }
            wakes
        });
        driver.join().unwrap();
        assert!(seen.iter().all(|&w| w == rounds), "{mode:?}: a waiter was not woken once per round");
    }
}

/// Signal stealing: 1 000 iterations in which a waiter is already waiting
/// when notify_one is called; a thread that locks right after the notify
/// must not swallow the signal — the waiter wakes.
#[test]
fn condvar_signal_is_not_stolen() {
    for mode in MODES {
        let state = Arc::new((Mutex::new((0u64, false)), Condvar::new()));
        for iteration in 1..=1_000u64 {
            let s = Arc::clone(&state);
            let waiter = run_all_async(mode, move || {
                let (lock, cv) = &*s;
                let mut st = lock.lock();
                st.1 = true; // I am waiting
                while st.0 < iteration {
                    // Bounded, so a lost signal fails the test instead of hanging it.
                    let (next, result) = cv.wait_timeout(st, Duration::from_secs(10));
                    st = next;
                    // The notifier sets the value and notifies within microseconds
                    // of seeing `st.1`: a timeout here is a lost signal, whatever
                    // `st.0` says now (it was set before the notify).
                    assert!(!result.timed_out(), "iteration {iteration}: the signal was lost (value {})", st.0);
                }
            });
            // Wait until the waiter is inside wait().
            loop {
                let mut st = state.0.lock();
                if st.1 {
                    st.1 = false;
                    st.0 = iteration;
                    drop(st);
                    state.1.notify_one();
                    // A barging locker right after the notify.
                    drop(state.0.lock());
                    break;
                }
                drop(st);
                std::thread::yield_now();
            }
            waiter();
        }
    }
}

/// Spawns `f` as a coroutine or thread per `mode` (Mixed alternates by
/// call) and returns a closure that joins it.
fn run_all_async(mode: Mode, f: impl FnOnce() + Send + 'static) -> impl FnOnce() {
    static FLIP: AtomicUsize = AtomicUsize::new(0);
    let coroutine = match mode {
        Mode::Coroutines => true,
        Mode::Threads => false,
        Mode::Mixed => FLIP.fetch_add(1, Ordering::Relaxed) % 2 == 0,
    };
    let handle: Box<dyn FnOnce() + Send> = if coroutine {
        let h = runtime().spawn(f);
        Box::new(move || h.join().expect("coroutine panicked"))
    } else {
        let h = std::thread::spawn(f);
        Box::new(move || h.join().expect("thread panicked"))
    };
    handle
}

/// RwLock hammer: readers add 1 to an activity counter, writers 10 000; a
/// reader that sees a writer inside, or a writer that sees anyone, fails.
#[test]
fn rwlock_hammer_exclusion() {
    for mode in MODES {
        let lock = Arc::new(RwLock::new(0u64));
        let activity = Arc::new(AtomicUsize::new(0));
        let (l, a) = (Arc::clone(&lock), Arc::clone(&activity));
        run_all(mode, 24, move |i| {
            for _ in 0..500 {
                if i % 6 == 0 {
                    let mut guard = l.write();
                    let before = a.fetch_add(10_000, Ordering::SeqCst);
                    assert_eq!(before, 0, "a writer saw activity {before}");
                    *guard += 1;
                    a.fetch_sub(10_000, Ordering::SeqCst);
                } else {
                    let guard = l.read();
                    let before = a.fetch_add(1, Ordering::SeqCst);
                    assert!(before < 10_000, "a reader saw a writer inside");
                    std::hint::black_box(*guard);
                    a.fetch_sub(1, Ordering::SeqCst);
                }
                if i % 2 == 0 {
                    weft::yield_now();
                }
            }
        });
        assert_eq!(*lock.read(), 4 * 500, "{mode:?}: every write counted once");
    }
}

/// A writer gets the RwLock within 100 ms (liveness margin: 2 s here on a
/// shared 2-core box) while 16 readers keep overlapping read locks.
#[test]
fn rwlock_writer_not_starved() {
    for mode in MODES {
        let lock = Arc::new(RwLock::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (Arc::clone(&lock), Arc::clone(&stop));
        let readers = std::thread::spawn(move || {
            run_all(mode, 16, move |_| {
                let mut reads = 0u64;
                while !s.load(Ordering::Relaxed) {
                    let guard = l.read();
                    std::hint::black_box(*guard);
                    std::thread::sleep(Duration::from_micros(200)); // hold it, overlapping others
                    drop(guard);
                    reads += 1;
                }
                reads
            })
        });
        std::thread::sleep(Duration::from_millis(50)); // readers are in
        let asked = Instant::now();
        *lock.write() += 1;
        let waited = asked.elapsed();
        stop.store(true, Ordering::Relaxed);
        readers.join().unwrap();
        assert!(waited < Duration::from_secs(2), "{mode:?}: writer waited {waited:?}");
    }
}

/// Mutex eventual fairness: a waiter gets the lock at least 10 times in 2 s
/// against a hog that re-locks at once.
#[test]
fn mutex_waiter_not_starved_by_hog() {
    for mode in MODES {
        let lock = Arc::new(Mutex::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (Arc::clone(&lock), Arc::clone(&stop));
        let got = run_all(mode, 2, move |i| {
            let mut got = 0u64;
            let start = Instant::now();
            if i == 0 {
                // The hog: holds it, releases, re-locks at once.
                while !s.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(2) {
                    let mut g = l.lock();
                    *g += 1;
                    std::hint::spin_loop();
                }
            } else {
                while got < 10 && start.elapsed() < Duration::from_secs(2) {
                    drop(l.lock());
                    got += 1;
                    weft::yield_now();
                }
                s.store(true, Ordering::Relaxed);
            }
            got
        });
        assert!(got[1] >= 10, "{mode:?}: waiter got the lock {} times in 2 s", got[1]);
    }
}

/// Semaphore: 10 tasks x 100 000 acquire/release (20 000 under debug) leave
/// exactly the initial count; holders never exceed the permits.
#[test]
fn semaphore_exact_and_bounded() {
    for mode in MODES {
        let permits = 3;
        let sem = Arc::new(Semaphore::new(permits));
        let holders = Arc::new(AtomicUsize::new(0));
        let (s, h) = (Arc::clone(&sem), Arc::clone(&holders));
        let rounds = if cfg!(debug_assertions) { 20_000 } else { 100_000 };
        run_all(mode, 10, move |_| {
            for _ in 0..rounds {
                let permit = s.acquire();
                let now = h.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(now <= permits, "{now} holders with {permits} permits");
                h.fetch_sub(1, Ordering::SeqCst);
                drop(permit);
            }
        });
        assert_eq!(sem.available_permits(), permits, "{mode:?}");
    }
}

/// Timeouts never return before their deadline.
#[test]
fn timeouts_never_early() {
    for mode in MODES {
        let shared = Arc::new((Mutex::new(()), Condvar::new(), Semaphore::new(0)));
        let s = Arc::clone(&shared);
        run_all(mode, 8, move |i| {
            let wait = Duration::from_millis(5 + (i as u64 % 4) * 5);
            let start = Instant::now();
            let (guard, result) = s.1.wait_timeout(s.0.lock(), wait);
            drop(guard);
            let waited = start.elapsed();
            if result.timed_out() {
                assert!(waited >= wait, "wait_timeout returned after {waited:?} < {wait:?}");
            }
            let start = Instant::now();
            assert!(s.2.acquire_timeout(wait).is_none(), "no permit was ever added");
            let waited = start.elapsed();
            assert!(waited >= wait, "acquire_timeout returned after {waited:?} < {wait:?}");
        });
    }
}

/// A coroutine parked on a Condvar and a Mutex when its runtime is dropped is
/// unwound; its wait-queue entry (which lives on its stack) must leave the
/// queue with it, so the primitives keep working for everyone else.
#[test]
fn primitives_survive_a_runtime_dropped_under_their_waiters() {
    let shared = Arc::new((Mutex::new(false), Condvar::new(), Mutex::new(0u32)));
    let runtime = weft::Runtime::builder().workers(1).build().expect("runtime");
    let held = shared.2.lock(); // the second waiter parks on this mutex
    let started = Arc::new(AtomicUsize::new(0));
    for i in 0..2 {
        let (s, started) = (Arc::clone(&shared), Arc::clone(&started));
        runtime.spawn(move || {
            started.fetch_add(1, Ordering::SeqCst);
            if i == 0 {
                let guard = s.0.lock();
                let _guard = s.1.wait_while(guard, |ready| !*ready); // parks forever
            } else {
                let _guard = s.2.lock(); // parks behind `held`
            }
        });
    }
    while started.load(Ordering::SeqCst) < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20)); // both are parked now
    drop(runtime);
    // The queues no longer hold the dead waiters' nodes.
    let (guard, result) = shared.1.wait_timeout(shared.0.lock(), Duration::from_millis(5));
    assert!(result.timed_out() && !*guard);
    drop(guard);
    shared.1.notify_all();
    drop(held);
    *shared.2.lock() += 1;
    assert_eq!(*shared.2.lock(), 1);
}

/// A Condvar remembers the Mutex its waiters use until the last one leaves.
/// A waiter unwound by its runtime's shutdown must leave like one that timed
/// out: otherwise the Condvar keeps naming a Mutex nobody waits with (here
/// one on the dead coroutine's stack, which a later notify would
/// dereference), and the next wait with another Mutex panics ("two
/// different Mutexes"). Covers a waiter still parked at shutdown and one
/// that `notify_all` woke but that never ran again (its worker was busy).
#[test]
fn condvar_forgets_the_mutex_of_a_waiter_unwound_at_shutdown() {
    for woken_first in [false, true] {
        let condvar = Arc::new(Condvar::new());
        let runtime = weft::Runtime::builder().workers(1).build().expect("runtime");
        let parked = Arc::new(AtomicBool::new(false));
        {
            let (condvar, parked) = (Arc::clone(&condvar), Arc::clone(&parked));
            runtime.spawn(move || {
                let mine = Mutex::new(0u64); // on this coroutine's stack
                let guard = mine.lock();
                parked.store(true, Ordering::SeqCst);
                let _guard = condvar.wait(guard);
            });
        }
        while !parked.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20)); // parked on the Condvar now
        let busy = Arc::new(AtomicBool::new(true));
        if woken_first {
            // Keep the worker busy, so the woken waiter cannot run again.
            let busy = Arc::clone(&busy);
            runtime.spawn(move || {
                while busy.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
            });
            std::thread::sleep(Duration::from_millis(20));
            condvar.notify_all();
        }
        busy.store(false, Ordering::SeqCst);
        drop(runtime);
        let other = Mutex::new(());
        let (_guard, result) = condvar.wait_timeout(other.lock(), Duration::from_millis(5));
        assert!(result.timed_out(), "woken first {woken_first}: nobody notifies");
        condvar.notify_all();
    }
}

/// Readers and a writer parked on an RwLock when their runtime is dropped:
/// the lock works as before afterwards, from threads and coroutines.
#[test]
fn rwlock_works_after_a_runtime_dropped_under_its_waiters() {
    let lock = Arc::new(RwLock::new(0u64));
    let writer_guard = lock.write();
    let runtime = weft::Runtime::builder().workers(1).build().expect("runtime");
    let started = Arc::new(AtomicUsize::new(0));
    for i in 0..4 {
        let (lock, started) = (Arc::clone(&lock), Arc::clone(&started));
        runtime.spawn(move || {
            started.fetch_add(1, Ordering::SeqCst);
            if i == 0 {
                *lock.write() += 1;
            } else {
                let _ = *lock.read();
            }
        });
    }
    while started.load(Ordering::SeqCst) < 4 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50)); // all parked (or yielding) now
    drop(runtime);
    drop(writer_guard);
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let lock = Arc::clone(&lock);
            std::thread::spawn(move || *lock.read())
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.join().expect("a reader thread panicked"), 0);
    }
    *lock.write() += 1;
    let again = weft::Runtime::builder().workers(1).build().expect("runtime");
    let lock2 = Arc::clone(&lock);
    assert_eq!(again.block_on(move || *lock2.read()), 1);
}

/// A coroutine woken by an unlock (or release) but unwound by its runtime's
/// shutdown before it ran again must pass on what the wake gave it: a lock
/// handed over, a permit, or the turn to compete for a free lock. Otherwise
/// an OS thread queued behind it waits forever on a lock nobody holds.
/// `kind`: "mutex", "semaphore", "rwlock". The coroutine queues first, the
/// thread second; the main thread then lets go while the coroutine's only
/// worker is kept busy, and drops the runtime (from another thread, before
/// the worker is let go).
fn thread_behind_an_abandoned_wake_gets_through(kind: &'static str) {
    let mutex = Arc::new(Mutex::new(()));
    let semaphore = Arc::new(Semaphore::new(0));
    let rwlock = Arc::new(RwLock::new(()));
    let take = {
        let (mutex, semaphore, rwlock) = (Arc::clone(&mutex), Arc::clone(&semaphore), Arc::clone(&rwlock));
        move || match kind {
            "mutex" => drop(mutex.lock()),
            "semaphore" => drop(semaphore.acquire()),
            _ => drop(rwlock.write()),
        }
    };
    let mutex_guard = mutex.lock();
    let rwlock_guard = rwlock.write();
    let runtime = weft::Runtime::builder().workers(1).build().expect("runtime");
    let queued = Arc::new(AtomicBool::new(false));
    {
        let (take, queued) = (take.clone(), Arc::clone(&queued));
        runtime.spawn(move || {
            queued.store(true, Ordering::SeqCst);
            take();
        });
    }
    while !queued.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50)); // the coroutine is parked now
    let busy = Arc::new(AtomicBool::new(true));
    {
        let busy = Arc::clone(&busy);
        runtime.spawn(move || {
            while busy.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        });
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        take();
        done_tx.send(()).expect("the test waits");
    });
    std::thread::sleep(Duration::from_millis(50)); // the thread is queued now
    // Wakes the coroutine, which cannot run: its worker spins.
    match kind {
        "mutex" => drop(mutex_guard),
        "semaphore" => semaphore.add_permits(1),
        _ => drop(rwlock_guard),
    }
    std::thread::sleep(Duration::from_millis(20));
    // Shut down while the worker spins, so the woken coroutine never runs
    // again before it is unwound.
    let dropper = std::thread::spawn(move || drop(runtime));
    std::thread::sleep(Duration::from_millis(100));
    busy.store(false, Ordering::SeqCst);
    dropper.join().expect("dropping the runtime panicked");
    assert!(
        done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "{kind}: the thread queued behind the unwound coroutine never got through"
    );
}

#[test]
fn mutex_wake_abandoned_at_shutdown_is_passed_on() {
    thread_behind_an_abandoned_wake_gets_through("mutex");
}

#[test]
fn semaphore_permit_abandoned_at_shutdown_is_passed_on() {
    thread_behind_an_abandoned_wake_gets_through("semaphore");
}

#[test]
fn rwlock_hand_off_abandoned_at_shutdown_is_passed_on() {
    thread_behind_an_abandoned_wake_gets_through("rwlock");
}

/// `notify_all` with the mutex free wakes the first waiter (a coroutine)
/// and moves the others (an OS thread) onto the mutex, for the coroutine's
/// re-lock and unlock to wake. If the coroutine is unwound by its runtime's
/// shutdown before it runs again, the thread must still get the mutex. The
/// runtime is dropped from another thread while the coroutine's only worker
/// spins, so the woken coroutine cannot run first.
#[test]
fn condvar_notify_all_abandoned_at_shutdown_is_passed_on() {
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let runtime = weft::Runtime::builder().workers(1).build().expect("runtime");
    let queued = Arc::new(AtomicBool::new(false));
    {
        let (gate, queued) = (Arc::clone(&gate), Arc::clone(&queued));
        runtime.spawn(move || {
            let (open, condvar) = &*gate;
            let guard = open.lock();
            queued.store(true, Ordering::SeqCst);
            drop(condvar.wait_while(guard, |open| !*open));
        });
    }
    while !queued.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50)); // the coroutine waits on the condvar
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    {
        let gate = Arc::clone(&gate);
        std::thread::spawn(move || {
            let (open, condvar) = &*gate;
            drop(condvar.wait_while(open.lock(), |open| !*open));
            done_tx.send(()).expect("the test waits");
        });
    }
    std::thread::sleep(Duration::from_millis(50)); // the thread waits behind it
    let busy = Arc::new(AtomicBool::new(true));
    {
        let busy = Arc::clone(&busy);
        runtime.spawn(move || {
            while busy.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        });
    }
    std::thread::sleep(Duration::from_millis(50)); // the only worker spins now
    {
        let (open, condvar) = &*gate;
        *open.lock() = true;
        condvar.notify_all(); // mutex free: wakes the coroutine, requeues the thread
    }
    let dropper = std::thread::spawn(move || drop(runtime)); // shutdown while the worker spins
    std::thread::sleep(Duration::from_millis(100));
    busy.store(false, Ordering::SeqCst);
    dropper.join().expect("dropping the runtime panicked");
    assert!(
        done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the thread requeued behind the unwound coroutine never got the mutex"
    );
}

/// A failed `try_lock` / `try_lock_for` must leave the holder's lock alone
/// (an eagerly built guard, dropped on failure, would unlock it).
#[test]
fn failed_try_lock_does_not_release_the_holders_lock() {
    let mutex = Mutex::new(7);
    let held = mutex.lock();
    assert!(mutex.try_lock().is_none());
    assert!(mutex.try_lock().is_none(), "the first failed try_lock unlocked the mutex");
    assert!(mutex.try_lock_for(Duration::from_millis(2)).is_none());
    assert!(mutex.try_lock().is_none(), "a timed-out try_lock_for unlocked the mutex");
    drop(held);
    assert_eq!(mutex.try_lock().map(|g| *g), Some(7));
}

/// While a runtime shuts down, a coroutine's destructor that waits on a lock
/// held by an OS thread blocks its worker like a thread would, and finishes
/// once the thread lets go (no busy loop, no abort, no hang).
#[test]
fn destructor_waiting_on_a_lock_during_shutdown_completes() {
    struct LockOnDrop(Arc<Mutex<u32>>);
    impl Drop for LockOnDrop {
        fn drop(&mut self) {
            *self.0.lock() += 1;
        }
    }
    let lock = Arc::new(Mutex::new(0u32));
    let runtime = weft::Runtime::builder().workers(1).build().expect("runtime");
    let started = Arc::new(AtomicBool::new(false));
    {
        let (lock, started) = (Arc::clone(&lock), Arc::clone(&started));
        runtime.spawn(move || {
            let _on_drop = LockOnDrop(lock);
            started.store(true, Ordering::SeqCst);
            weft::sleep(Duration::from_secs(3600)); // unwound at shutdown
        });
    }
    while !started.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let releaser = {
        let lock = Arc::clone(&lock);
        std::thread::spawn(move || {
            let held = lock.lock();
            locked_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
        })
    };
    locked_rx.recv().unwrap();
    drop(runtime); // the destructor waits for the thread's lock
    releaser.join().unwrap();
    assert_eq!(*lock.lock(), 1, "the destructor ran once, under the lock");
}

/// Runs `body` on a helper thread and fails (instead of hanging) if it does
/// not finish within `limit`: a lost wakeup shows up as a timeout.
fn within(limit: Duration, what: &str, body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => runner.join().expect("the test body panicked"),
        Err(_) if runner.is_finished() => {
            // It panicked before sending: report its payload.
            if let Err(payload) = runner.join() {
                std::panic::resume_unwind(payload);
            }
        }
        Err(_) => panic!("{what}: not finished within {limit:?} (a lost wakeup?)"),
    }
}

/// Two coroutines on one worker take turns through a Mutex and a Condvar
/// (the `hand-off` benchmark's shape) 50 000 times: every notify goes from a
/// coroutine to a parked coroutine of the same worker (its local run queue),
/// and one lost notify would leave both waiting forever. Every fourth wait
/// is a short `wait_timeout`, so stale timer wakes keep arriving while the
/// waiter runs or waits again (tokens left on a running coroutine); they may
/// wake it spuriously but must not swallow a notify.
#[test]
fn condvar_same_worker_ping_pong_never_loses_a_notify() {
    const TURNS: u64 = 50_000;
    within(Duration::from_secs(60), "same-worker ping-pong", || {
        let rt = weft::Runtime::builder().workers(1).build().expect("runtime");
        let total = rt.block_on(|| {
            let shared = Arc::new((Mutex::new(0u64), Condvar::new()));
            let players: Vec<_> = (0..2u64)
                .map(|me| {
                    let shared = Arc::clone(&shared);
                    weft::spawn(move || {
                        let (counter, turn) = &*shared;
                        let mut guard = counter.lock();
                        let mut waits = 0u64;
                        for _ in 0..TURNS / 2 {
                            while *guard % 2 != me {
                                waits += 1;
                                guard = if waits % 4 == 0 {
                                    turn.wait_timeout(guard, Duration::from_micros(50)).0
                                } else {
                                    turn.wait(guard)
                                };
                            }
                            *guard += 1;
                            turn.notify_one();
                        }
                    })
                })
                .collect();
            for player in players {
                player.join().expect("a player panicked");
            }
            *shared.0.lock()
        });
        assert_eq!(total, TURNS);
    });
}

/// A coroutine and an OS thread take turns through a Mutex and a Condvar
/// 20 000 times: the thread's notifies reach the coroutine through its
/// worker's inbox (a cross-thread wake), the coroutine's reach the thread's
/// futex parker. A lost wake hangs, and fails the test by its time limit.
#[test]
fn condvar_coroutine_thread_ping_pong_never_loses_a_notify() {
    const TURNS: u64 = 20_000;
    within(Duration::from_secs(60), "coroutine-thread ping-pong", || {
        let rt = weft::Runtime::builder().workers(1).build().expect("runtime");
        let shared = Arc::new((Mutex::new(0u64), Condvar::new()));
        let play = |me: u64, shared: Arc<(Mutex<u64>, Condvar)>| {
            move || {
                let (counter, turn) = &*shared;
                let mut guard = counter.lock();
                for _ in 0..TURNS / 2 {
                    while *guard % 2 != me {
                        guard = turn.wait(guard);
                    }
                    *guard += 1;
                    turn.notify_one();
                }
            }
        };
        let coroutine = rt.spawn(play(0, Arc::clone(&shared)));
        let thread = std::thread::spawn(play(1, Arc::clone(&shared)));
        coroutine.join().expect("the coroutine player panicked");
        thread.join().expect("the thread player panicked");
        assert_eq!(*shared.0.lock(), TURNS);
    });
}

/// On one worker, a coroutine yields without pause while a second waits on
/// a Condvar that a third coroutine and an OS thread notify in turns: the
/// waiter must get every turn (local wakes while the run queue is never
/// empty, and inbox wakes picked up between yields), and the yielder keeps
/// running alongside.
#[test]
fn wakes_reach_a_waiter_while_another_coroutine_yields_forever() {
    const ROUNDS: u64 = 2_000;
    within(Duration::from_secs(60), "wakes during a yield storm", || {
        let rt = weft::Runtime::builder().workers(1).build().expect("runtime");
        let stop = Arc::new(AtomicBool::new(false));
        let yielder = {
            let stop = Arc::clone(&stop);
            rt.spawn(move || {
                let mut yields = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    weft::yield_now();
                    yields += 1;
                }
                yields
            })
        };
        // state: (rounds posted, rounds taken)
        let shared = Arc::new((Mutex::new((0u64, 0u64)), Condvar::new()));
        let waiter = {
            let shared = Arc::clone(&shared);
            rt.spawn(move || {
                let (state, posted) = &*shared;
                let mut guard = state.lock();
                while guard.1 < ROUNDS {
                    while guard.0 == guard.1 {
                        guard = posted.wait(guard);
                    }
                    guard.1 += 1;
                    posted.notify_all();
                }
            })
        };
        let poster = |parity: u64, shared: Arc<(Mutex<(u64, u64)>, Condvar)>| {
            move || {
                let (state, posted) = &*shared;
                let mut guard = state.lock();
                while guard.0 < ROUNDS {
                    // Post on our parity once the previous post was taken.
                    if guard.0 == guard.1 && guard.0 % 2 == parity {
                        guard.0 += 1;
                        posted.notify_all();
                    }
                    guard = posted.wait_timeout(guard, Duration::from_millis(1)).0;
                }
            }
        };
        let coroutine_poster = rt.spawn(poster(0, Arc::clone(&shared)));
        let thread_poster = std::thread::spawn(poster(1, Arc::clone(&shared)));
        waiter.join().expect("the waiter panicked");
        coroutine_poster.join().expect("the coroutine poster panicked");
        thread_poster.join().expect("the thread poster panicked");
        stop.store(true, Ordering::Relaxed);
        assert!(yielder.join().expect("the yielder panicked") > 0);
        assert_eq!(*shared.0.lock(), (ROUNDS, ROUNDS));
    });
}

/// A coroutine that waits for a Mutex while its worker has nothing else to
/// run spins longer before it parks, but it still parks: behind a holder
/// that keeps the lock for 200 ms (asleep, on another runtime's worker), the
/// waiter parks instead of spinning the whole time, and gets the lock once
/// the holder lets go. (Checked to fail with an unbounded spin.)
#[test]
fn an_idle_workers_mutex_waiter_still_parks_behind_a_long_holder() {
    let holder_rt = weft::Runtime::builder().workers(1).build().expect("runtime");
    let waiter_rt = weft::Runtime::builder().workers(1).build().expect("runtime");
    let lock = Arc::new(Mutex::new(0u32));
    let held = Arc::new(AtomicBool::new(false));
    let holder = {
        let (lock, held) = (Arc::clone(&lock), Arc::clone(&held));
        holder_rt.spawn(move || {
            let mut guard = lock.lock();
            held.store(true, Ordering::SeqCst);
            weft::sleep(Duration::from_millis(200));
            *guard += 1;
        })
    };
    while !held.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = waiter_rt.metrics().total;
    let waiter = {
        let lock = Arc::clone(&lock);
        // Alone on its runtime's only worker: nothing else to run.
        waiter_rt.spawn(move || *lock.lock() + 1)
    };
    assert_eq!(waiter.join().expect("the waiter"), 2, "the waiter got the lock after the holder's increment");
    holder.join().expect("the holder");
    let after = waiter_rt.metrics().total;
    assert!(after.parks > before.parks, "the waiter never parked: it spun through a 200 ms hold");
}
