//! Chaos tests of the locks under cancellation: coroutines (on two
//! workers) and OS threads use one primitive at random — every kind of
//! acquire, timed acquires with short timeouts, upgrades and downgrades,
//! notifies with and without the mutex held — while a canceller cancels a
//! random coroutine every 0.2-1 ms, wherever it is (parked, spinning,
//! yielding, holding a guard), and spawns a fresh one in its place. Each
//! chaos runs for about a second, then every coroutine and thread must end
//! (within 10 s: no lost wakeup), and the primitive must be whole: exclusion
//! never broken while it ran (occupancy counters that unwinding undoes), no
//! permit or arrival lost or made up, the lock free at the end. Seeds are
//! fixed; the interleavings are not, so a failure may need several runs to
//! show again.

use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use weft::sync::{Barrier, Condvar, Mutex, RwLock, RwLockUpgradableReadGuard, RwLockWriteGuard, Semaphore};

/// How long each chaos test cancels and respawns.
const CHAOS: Duration = Duration::from_secs(1);

/// Rounds of `condvar_waiters_wake_despite_cancelled_neighbours`.
const ROUNDS: usize = 50;

/// xorshift64: a deterministic stream of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs `f` on a thread of its own and waits at most `limit` for it: a
/// lost wakeup fails the test (naming `what`) instead of hanging it.
fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what}: still waiting after {limit:?} (a lost wakeup?)"),
    }
}

type Body = Arc<dyn Fn(usize, &mut Rng) + Send + Sync>;

/// Runs `body` in a loop on `coroutines` coroutines of a 2-worker runtime
/// and on `threads` OS threads for [`CHAOS`], cancelling a random coroutine
/// every 0.2-1 ms and spawning a fresh one in its place; then stops them
/// all. A coroutine may end cancelled, never failed otherwise.
fn chaos(name: &'static str, coroutines: usize, threads: usize, body: Body) {
    let runtime = weft::Runtime::builder().workers(2).build().expect("a 2-worker runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |i: usize, seed: u64| {
        let (body, stop) = (Arc::clone(&body), Arc::clone(&stop));
        runtime.spawn(move || {
            let mut rng = Rng(seed | 1);
            while !stop.load(Ordering::Relaxed) {
                body(i, &mut rng);
            }
        })
    };
    let mut handles: Vec<_> = (0..coroutines).map(|i| spawn(i, 0x9e37_79b9_7f4a_7c15 ^ (i as u64 * 7919))).collect();
    let threads: Vec<_> = (0..threads)
        .map(|t| {
            let (body, stop) = (Arc::clone(&body), Arc::clone(&stop));
            thread::spawn(move || {
                let mut rng = Rng((0xdead_beef ^ (t as u64 * 104_729)) | 1);
                while !stop.load(Ordering::Relaxed) {
                    body(1000 + t, &mut rng);
                }
            })
        })
        .collect();
    let check = |i: usize, result: Result<(), weft::JoinError>| {
        if let Err(e) = result {
            assert!(e.is_cancelled(), "{name}: coroutine {i} failed: {e}");
        }
    };
    let mut rng = Rng(12345);
    let start = Instant::now();
    while start.elapsed() < CHAOS {
        thread::sleep(Duration::from_micros(200 + rng.below(800)));
        let i = rng.below(coroutines as u64) as usize;
        let victim = std::mem::replace(&mut handles[i], spawn(i, rng.next()));
        victim.cancel();
        check(i, within(Duration::from_secs(10), name, move || victim.join()));
    }
    stop.store(true, Ordering::Relaxed);
    for (i, handle) in handles.into_iter().enumerate() {
        check(i, within(Duration::from_secs(10), name, move || handle.join()));
    }
    for t in threads {
        t.join().expect("an OS thread of the chaos does not panic");
    }
}

/// A reader inside the lock: counts itself in `inside` (a writer inside
/// makes it -1) for as long as it lives, unwinding included.
struct R<'a>(&'a AtomicIsize);
impl<'a> R<'a> {
    fn new(a: &'a AtomicIsize) -> Self {
        let v = a.fetch_add(1, Ordering::SeqCst);
        assert!(v >= 0, "reader with a writer inside");
        R(a)
    }
}
impl Drop for R<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
/// A writer inside the lock: finds nobody else inside and marks it -1.
struct W<'a>(&'a AtomicIsize);
impl<'a> W<'a> {
    fn new(a: &'a AtomicIsize) -> Self {
        let v = a.swap(-1, Ordering::SeqCst);
        assert_eq!(v, 0, "writer with someone inside");
        W(a)
    }
}
impl Drop for W<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

/// Every RwLock operation, plain, timed and trying, upgrades and both
/// downgrades, under cancellation.
#[test]
fn rwlock_chaos() {
    let lock = Arc::new(RwLock::new(0u64));
    let inside = Arc::new(AtomicIsize::new(0));
    let (l, ins) = (Arc::clone(&lock), Arc::clone(&inside));
    let body: Body = Arc::new(move |_i, rng| {
        let ins = &*ins;
        let hold = |rng: &mut Rng| {
            if rng.below(4) == 0 {
                weft::yield_now();
            }
        };
        match rng.below(9) {
            0 | 1 => {
                let _g = l.read();
                let _c = R::new(ins);
                hold(rng);
            }
            2 => {
                let mut g = l.write();
                let _c = W::new(ins);
                *g += 1;
                hold(rng);
            }
            3 => {
                if let Some(_g) = l.try_read_for(Duration::from_micros(rng.below(300))) {
                    let _c = R::new(ins);
                    hold(rng);
                }
            }
            4 => {
                if let Some(_g) = l.try_write_for(Duration::from_micros(rng.below(300))) {
                    let _c = W::new(ins);
                    hold(rng);
                }
            }
            5 => {
                let u = l.upgradable_read();
                {
                    let _c = R::new(ins);
                    hold(rng);
                }
                let w = RwLockUpgradableReadGuard::upgrade(u);
                {
                    let _c = W::new(ins);
                    hold(rng);
                }
                if rng.below(2) == 0 {
                    let _r = RwLockWriteGuard::downgrade(w);
                    let _c = R::new(ins);
                    hold(rng);
                } else {
                    drop(w);
                }
            }
            6 => {
                let w = l.write();
                {
                    let _c = W::new(ins);
                }
                let _r = RwLockWriteGuard::downgrade(w);
                let _c = R::new(ins);
                hold(rng);
            }
            7 => {
                let u = l.upgradable_read();
                {
                    let _c = R::new(ins);
                    hold(rng);
                }
                match RwLockUpgradableReadGuard::try_upgrade(u) {
                    Ok(_w) => {
                        let _c = W::new(ins);
                    }
                    Err(u) => {
                        let _r = RwLockUpgradableReadGuard::downgrade(u);
                        let _c = R::new(ins);
                        hold(rng);
                    }
                }
            }
            _ => {
                if let Some(_g) = l.try_read() {
                    let _c = R::new(ins);
                }
            }
        }
    });
    chaos("rwlock", 12, 2, body);
    let l2 = Arc::clone(&lock);
    within(Duration::from_secs(10), "final write", move || drop(l2.write()));
    assert!(!lock.is_locked(), "the RwLock is still held after every user is gone");
    assert_eq!(inside.load(Ordering::SeqCst), 0, "a guard's occupancy count was not undone");
}

/// Semaphore acquires of one to four of its five permits, plain, timed
/// and trying, and permits forgotten and added back, under cancellation.
#[test]
fn semaphore_chaos() {
    let sem = Arc::new(Semaphore::new(5));
    let s = Arc::clone(&sem);
    let body: Body = Arc::new(move |_i, rng| {
        let n = 1 + rng.below(4) as usize;
        match rng.below(5) {
            0 => {
                let _p = s.acquire_many(n);
                if rng.below(3) == 0 {
                    weft::yield_now();
                }
            }
            1 => {
                if let Some(_p) = s.acquire_many_timeout(n, Duration::from_micros(rng.below(500))) {
                    weft::yield_now();
                }
            }
            2 => {
                let _p = s.acquire();
            }
            3 => {
                let _p = s.try_acquire_many(n);
            }
            _ => {
                if let Some(p) = s.acquire_timeout(Duration::from_micros(rng.below(200))) {
                    p.forget();
                    s.add_permits(1);
                }
            }
        }
    });
    chaos("semaphore", 12, 2, body);
    let s2 = Arc::clone(&sem);
    within(Duration::from_secs(10), "final acquire", move || drop(s2.acquire_many(5)));
    assert_eq!(sem.available_permits(), 5, "permits were lost or made up");
    assert!(format!("{sem:?}").contains("waiters: false"), "{sem:?}");
}

/// Mutex locks (plain and timed) and Condvar waits (timed, with a
/// predicate) and notifies (one and all, with the mutex held and not),
/// under cancellation.
#[test]
fn mutex_condvar_chaos() {
    let pair = Arc::new((Mutex::new((0u64, 0u64)), Condvar::new()));
    let p = Arc::clone(&pair);
    let body: Body = Arc::new(move |i, rng| {
        let (m, cv) = &*p;
        match rng.below(7) {
            0 => {
                let mut g = m.lock();
                g.0 += 1;
                if rng.below(2) == 0 {
                    cv.notify_one();
                } else {
                    cv.notify_all();
                }
            }
            1 => {
                let g = m.lock();
                let (g, _) = cv.wait_timeout(g, Duration::from_micros(rng.below(500)));
                drop(g);
            }
            2 => {
                if i % 3 == 0 {
                    let g = m.lock();
                    let _g = cv.wait_while(g, |v| v.0 % 2 == 0);
                }
            }
            3 => {
                if let Some(mut g) = m.try_lock_for(Duration::from_micros(rng.below(300))) {
                    g.1 += 1;
                    if rng.below(3) == 0 {
                        weft::yield_now();
                    }
                }
            }
            4 => {
                let mut g = m.lock();
                g.1 += 1;
                drop(g);
                cv.notify_all();
            }
            5 => {
                let mut g = m.lock();
                g.0 += 1;
                drop(g);
                cv.notify_one();
            }
            _ => {
                let g = m.lock();
                let (_g, _) = cv.wait_timeout_while(g, Duration::from_micros(rng.below(300)), |v| v.1 % 3 != 0);
            }
        }
    });
    let p2 = Arc::clone(&pair);
    // A background notifier keeps wait_while from sleeping forever.
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::clone(&stop);
    let bg = thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            {
                let mut g = p2.0.lock();
                g.0 += 1;
            }
            p2.1.notify_all();
            thread::sleep(Duration::from_millis(2));
        }
    });
    chaos("mutex+condvar", 12, 2, body);
    stop.store(true, Ordering::Relaxed);
    bg.join().unwrap();
    let p3 = Arc::clone(&pair);
    within(Duration::from_secs(10), "final lock", move || drop(p3.0.lock()));
    assert!(!pair.0.is_locked(), "the Mutex is still held after every user is gone");
}

/// Timed waits at a Barrier of three, generation after generation, under
/// cancellation: every arrival that a cancel withdraws is withdrawn whole.
#[test]
fn barrier_chaos() {
    let barrier = Arc::new(Barrier::new(3));
    let b = Arc::clone(&barrier);
    let body: Body = Arc::new(move |_i, rng| {
        let _ = b.wait_timeout(Duration::from_micros(rng.below(2000)));
    });
    chaos("barrier", 8, 2, body);
    assert!(format!("{barrier:?}").contains("arrived: 0"), "{barrier:?}");
}

/// Round after round, eight coroutines and two OS threads wait on one
/// Condvar; some coroutines wait with a 1 ms timeout and are cancelled
/// (before the notify or after it). Every untimed waiter that is not
/// cancelled must still wake, and the mutex must end free. (The exact case
/// of a notify that picked a waiter cancelled before it ran is
/// `tests/cancel_matrix.rs`'s.)
#[test]
fn condvar_waiters_wake_despite_cancelled_neighbours() {
    let runtime = weft::Runtime::builder().workers(2).build().expect("a 2-worker runtime");
    let mut rng = Rng(777);
    for round in 0..ROUNDS {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let woke = Arc::new(AtomicUsize::new(0));
        let mut strict = Vec::new();
        let mut victims = Vec::new();
        for i in 0..8 {
            let (p, w) = (Arc::clone(&pair), Arc::clone(&woke));
            let timed = i % 2 == 1;
            // Coroutine 2 waits untimed but is cancelled too: it may or may
            // not wake first, so only the others count their wakes.
            let victim = timed || i == 2;
            let h = runtime.spawn(move || {
                let (m, cv) = &*p;
                let g = m.lock();
                if timed {
                    let _ = cv.wait_timeout_while(g, Duration::from_millis(1), |f| !*f);
                } else {
                    let _g = cv.wait_while(g, |f| !*f);
                    if !victim {
                        w.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
            if victim { victims.push(h) } else { strict.push(h) }
        }
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (p, w) = (Arc::clone(&pair), Arc::clone(&woke));
                thread::spawn(move || {
                    let (m, cv) = &*p;
                    let _g = cv.wait_while(m.lock(), |f| !*f);
                    w.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        thread::sleep(Duration::from_micros(rng.below(2000)));
        for v in &victims {
            if rng.below(2) == 0 {
                v.cancel();
            }
        }
        {
            let (m, cv) = &*pair;
            let held = rng.below(2) == 0;
            let mut g = m.lock();
            *g = true;
            if held {
                cv.notify_all();
                drop(g);
            } else {
                drop(g);
                cv.notify_all();
            }
        }
        for v in &victims {
            v.cancel();
        }
        let expect = strict.len() + threads.len();
        let w = Arc::clone(&woke);
        within(Duration::from_secs(10), &format!("round {round}"), move || {
            for h in strict {
                h.join().unwrap();
            }
            for t in threads {
                t.join().unwrap();
            }
            for v in victims {
                let _ = v.join();
            }
            assert_eq!(w.load(Ordering::SeqCst), expect, "round {round}: not every untimed waiter woke");
        });
        assert!(!pair.0.is_locked(), "round {round}: the Mutex is still held");
    }
}
