//! Chaos tests: weft's sync primitives stay consistent when the coroutines
//! that use them are cancelled at random moments.
//!
//! Each chaos test runs a dozen coroutines on a 2-worker runtime, and two OS
//! threads beside them, all hammering one primitive (an RwLock; a
//! Semaphore; a Mutex with a Condvar; a Barrier) with a random mix of its
//! blocking, timed and non-blocking operations. Meanwhile the test thread
//! cancels a random coroutine every 0.05 to 0.35 ms (`JoinHandle::cancel`),
//! wherever it is: parked in the primitive, spinning before it parks, woken
//! (handed a lock, a permit, a notification) but not yet run again, or
//! holding a guard. It joins the coroutine and spawns a replacement. The
//! tests check, during the chaos and after it, that:
//!
//! - exclusion is never violated: no reader beside a writer, no two writers
//!   or Mutex holders, never more Semaphore permits out than there are;
//! - nothing is lost: a lock, permit or wake handed to a cancelled waiter is
//!   passed on, and a cancelled Barrier waiter withdraws its arrival;
//! - the primitive ends free and usable: unlocked, every permit back, no
//!   waiter or arrival left behind;
//! - nothing hangs: every join and every final acquisition runs under a 10 s
//!   watchdog (a bound on liveness, never on speed).
//!
//! `condvar_notify_all_reaches_every_waiter_despite_cancels` cancels
//! waiters around a `notify_all` and checks every waiter that was not
//! cancelled gets through, in 150 short rounds. The last test checks that a
//! WaitGroup handle cloned during a wait is waited for.
//!
//! Each chaos test runs about 1 s of chaos on 2 workers; the whole file
//! takes about 3 s on a 2-CPU machine, in release and in debug alike.
//! The random choices come from fixed seeds; the interleavings depend on
//! the scheduler, so a failure may take a few runs to reproduce.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use weft::sync::{Barrier, Condvar, Mutex, RwLock, RwLockUpgradableReadGuard, RwLockWriteGuard, Semaphore, WaitGroup};

/// How long each chaos test cancels coroutines.
const CHAOS: Duration = Duration::from_secs(1);

/// The runtime's workers.
const WORKERS: usize = 2;

/// Coroutines and OS threads using the primitive at once.
const COROUTINES: usize = 12;
const THREADS: usize = 2;

/// The liveness bound of every join and final acquisition.
const PATIENCE: Duration = Duration::from_secs(10);

/// xorshift64: a fixed seed gives a fixed sequence.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn micros_below(&mut self, n: u64) -> Duration {
        Duration::from_micros(self.below(n))
    }
}

fn runtime() -> weft::Runtime {
    // No stall reports: on a loaded 2-CPU machine a worker thread may be
    // descheduled for 100 ms, which the monitor would report on stderr.
    weft::Runtime::builder().workers(WORKERS).stall_threshold(None).build().expect("a runtime")
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a payload that is not text)")
}

/// Joins a coroutine that was cancelled or told to stop: it must finish
/// within PATIENCE, and only by returning or by its cancel.
fn join_coroutine(what: &str, mut handle: weft::JoinHandle<()>) {
    match handle.join_timeout(PATIENCE) {
        None => panic!("{what}: not finished {PATIENCE:?} after its cancel or stop (stuck in the primitive)"),
        Some(Ok(())) => {}
        Some(Err(error)) => assert!(error.is_cancelled(), "{what} failed: {error}"),
    }
}

/// Joins an OS thread that was told to stop: it must finish within
/// PATIENCE, without a panic.
fn join_thread<T>(what: &str, handle: thread::JoinHandle<T>) -> T {
    let start = Instant::now();
    while !handle.is_finished() {
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: not finished {PATIENCE:?} after its stop (stuck in the primitive)"
        );
        thread::sleep(Duration::from_millis(1));
    }
    handle.join().unwrap_or_else(|payload| panic!("{what} panicked: {}", panic_text(&*payload)))
}

/// Runs `f` on a thread of its own; it must return within PATIENCE.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    join_thread(what, thread::spawn(f))
}

/// Sets the flag when dropped, also when the test fails, so that the
/// threads and coroutines it stops do not run on after the test.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What each participant runs in a loop: `body(participant, rng)`.
type Body = Arc<dyn Fn(usize, &mut Rng) + Send + Sync>;

/// How a chaos run ends.
#[derive(Clone, Copy)]
enum End {
    /// Every participant finishes its current operation and stops.
    Stop,
    /// As `Stop`, but every coroutine is cancelled at once too (most are
    /// then parked in the primitive): no later operation can mend what
    /// those cancels leave behind before the test looks.
    CancelAll,
}

/// Runs `body` in a loop in COROUTINES coroutines (participants
/// 0..COROUTINES) and THREADS OS threads (participants 1000..), for
/// `duration`, cancelling a random coroutine every 0.05 to 0.35 ms and
/// spawning a replacement; then stops (`end`) and joins everyone. `seed`
/// fixes every participant's random choices and the canceller's.
fn chaos(name: &str, seed: u64, duration: Duration, end: End, body: Body) {
    let runtime = runtime();
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let spawn = |i: usize, seed: u64| {
        let (body, stop) = (Arc::clone(&body), Arc::clone(&stop.0));
        runtime.spawn(move || {
            let mut rng = Rng::new(seed);
            while !stop.load(Ordering::Relaxed) {
                body(i, &mut rng);
            }
        })
    };
    let mut rng = Rng::new(seed);
    let mut coroutines: Vec<Option<weft::JoinHandle<()>>> =
        (0..COROUTINES).map(|i| Some(spawn(i, rng.next()))).collect();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (body, stop, seed) = (Arc::clone(&body), Arc::clone(&stop.0), rng.next());
            thread::spawn(move || {
                let mut rng = Rng::new(seed);
                while !stop.load(Ordering::Relaxed) {
                    body(1000 + t, &mut rng);
                }
            })
        })
        .collect();
    let start = Instant::now();
    while start.elapsed() < duration {
        thread::sleep(Duration::from_micros(50) + rng.micros_below(300));
        let i = rng.below(COROUTINES as u64) as usize;
        let victim = coroutines[i].take().expect("every slot holds a coroutine");
        victim.cancel();
        join_coroutine(&format!("{name}: cancelled coroutine {i}"), victim);
        coroutines[i] = Some(spawn(i, rng.next()));
    }
    drop(stop);
    if let End::CancelAll = end {
        for handle in coroutines.iter().flatten() {
            handle.cancel();
        }
    }
    for (i, handle) in coroutines.into_iter().enumerate() {
        join_coroutine(&format!("{name}: coroutine {i}"), handle.expect("every slot holds a coroutine"));
    }
    for (t, handle) in threads.into_iter().enumerate() {
        join_thread(&format!("{name}: thread {t}"), handle);
    }
}

/// Who is inside an RwLock: the number of readers, or -1 for a writer.
/// `Reading` and `Writing` mark a stay inside and check it is allowed.
struct Reading<'a>(&'a AtomicIsize);

impl<'a> Reading<'a> {
    fn new(inside: &'a AtomicIsize) -> Self {
        let before = inside.fetch_add(1, Ordering::SeqCst);
        assert!(before >= 0, "rwlock: a reader got in while a writer held the lock");
        Reading(inside)
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Writing<'a>(&'a AtomicIsize);

impl<'a> Writing<'a> {
    fn new(inside: &'a AtomicIsize) -> Self {
        let before = inside.swap(-1, Ordering::SeqCst);
        assert_eq!(before, 0, "rwlock: a writer got in while the lock was held (-1: by a writer, n: by n readers)");
        Writing(inside)
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

/// Sometimes yields while holding a lock, so that others (and cancels) come
/// in meanwhile.
fn maybe_yield(rng: &mut Rng) {
    if rng.below(4) == 0 {
        weft::yield_now();
    }
}

/// Every way into an RwLock (read, write, timed, try, upgradable read with
/// upgrade, try_upgrade and downgrades), under cancels.
#[test]
fn rwlock_chaos() {
    let lock = Arc::new(RwLock::new(0u64));
    let inside = Arc::new(AtomicIsize::new(0));
    let (l, inside2) = (Arc::clone(&lock), Arc::clone(&inside));
    let body: Body = Arc::new(move |_, rng| {
        let inside = &*inside2;
        match rng.below(9) {
            0 | 1 => {
                let _guard = l.read();
                let _reading = Reading::new(inside);
                maybe_yield(rng);
            }
            2 => {
                let mut guard = l.write();
                let _writing = Writing::new(inside);
                *guard += 1;
                maybe_yield(rng);
            }
            3 => {
                if let Some(_guard) = l.try_read_for(rng.micros_below(300)) {
                    let _reading = Reading::new(inside);
                    maybe_yield(rng);
                }
            }
            4 => {
                if let Some(_guard) = l.try_write_for(rng.micros_below(300)) {
                    let _writing = Writing::new(inside);
                    maybe_yield(rng);
                }
            }
            5 => {
                let upgradable = l.upgradable_read();
                {
                    let _reading = Reading::new(inside);
                    maybe_yield(rng);
                }
                let write = RwLockUpgradableReadGuard::upgrade(upgradable);
                {
                    let _writing = Writing::new(inside);
                    maybe_yield(rng);
                }
                if rng.below(2) == 0 {
                    let _read = RwLockWriteGuard::downgrade(write);
                    let _reading = Reading::new(inside);
                    maybe_yield(rng);
                }
            }
            6 => {
                let write = l.write();
                drop(Writing::new(inside));
                let _read = RwLockWriteGuard::downgrade(write);
                let _reading = Reading::new(inside);
                maybe_yield(rng);
            }
            7 => {
                let upgradable = l.upgradable_read();
                {
                    let _reading = Reading::new(inside);
                    maybe_yield(rng);
                }
                match RwLockUpgradableReadGuard::try_upgrade(upgradable) {
                    Ok(_write) => drop(Writing::new(inside)),
                    Err(upgradable) => {
                        let _read = RwLockUpgradableReadGuard::downgrade(upgradable);
                        let _reading = Reading::new(inside);
                        maybe_yield(rng);
                    }
                }
            }
            _ => {
                if let Some(_guard) = l.try_read() {
                    drop(Reading::new(inside));
                }
            }
        }
    });
    chaos("rwlock", 0x5157_10c4, CHAOS, End::Stop, body);
    let l = Arc::clone(&lock);
    within("rwlock: the final write lock", move || drop(l.write()));
    assert!(!lock.is_locked(), "rwlock: locked after everyone left: {lock:?}");
    assert_eq!(inside.load(Ordering::SeqCst), 0, "rwlock: someone still marked inside after everyone left");
}

/// Permits out of a Semaphore of PERMITS, counted by `Out`, which checks
/// there are never more.
const PERMITS: usize = 5;

struct Out<'a> {
    out: &'a AtomicUsize,
    n: usize,
}

impl<'a> Out<'a> {
    fn new(out: &'a AtomicUsize, n: usize) -> Self {
        let now = out.fetch_add(n, Ordering::SeqCst) + n;
        assert!(now <= PERMITS, "semaphore: {now} permits out at once, of {PERMITS}");
        Out { out, n }
    }
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        self.out.fetch_sub(self.n, Ordering::SeqCst);
    }
}

/// acquire, acquire_many (1 to 4 of 5), their timed and try forms, and a
/// forget + add_permits, under cancels.
#[test]
fn semaphore_chaos() {
    let semaphore = Arc::new(Semaphore::new(PERMITS));
    let out = Arc::new(AtomicUsize::new(0));
    let (s, out2) = (Arc::clone(&semaphore), Arc::clone(&out));
    let body: Body = Arc::new(move |_, rng| {
        let out = &*out2;
        let n = 1 + rng.below(4) as usize;
        match rng.below(5) {
            0 => {
                let _permit = s.acquire_many(n);
                let _out = Out::new(out, n);
                if rng.below(3) == 0 {
                    weft::yield_now();
                }
            }
            1 => {
                if let Some(_permit) = s.acquire_many_timeout(n, rng.micros_below(500)) {
                    let _out = Out::new(out, n);
                    weft::yield_now();
                }
            }
            2 => {
                let _permit = s.acquire();
                let _out = Out::new(out, 1);
            }
            3 => {
                if let Some(_permit) = s.try_acquire_many(n) {
                    drop(Out::new(out, n));
                }
            }
            _ => {
                if let Some(permit) = s.acquire_timeout(rng.micros_below(200)) {
                    drop(Out::new(out, 1));
                    permit.forget();
                    s.add_permits(1);
                }
            }
        }
    });
    chaos("semaphore", 0x5e3a_4405, CHAOS, End::Stop, body);
    let s = Arc::clone(&semaphore);
    within("semaphore: the final acquire of every permit", move || drop(s.acquire_many(PERMITS)));
    assert_eq!(semaphore.available_permits(), PERMITS, "semaphore: permits lost or made up: {semaphore:?}");
    assert!(format!("{semaphore:?}").contains("waiters: false"), "semaphore: a waiter left behind: {semaphore:?}");
    assert_eq!(out.load(Ordering::SeqCst), 0, "semaphore: permits still marked out after everyone left");
}

/// Marks a stay inside the Mutex and checks nobody else is.
struct Holding<'a>(&'a AtomicBool);

impl<'a> Holding<'a> {
    fn new(held: &'a AtomicBool) -> Self {
        assert!(!held.swap(true, Ordering::SeqCst), "mutex: two holders at once");
        Holding(held)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// lock, try_lock_for, and the Condvar's waits (plain, timed, with
/// predicates) and notifies, under cancels; an OS thread notifies every
/// 2 ms, so that `wait_while` always ends.
#[test]
fn mutex_condvar_chaos() {
    let pair = Arc::new((Mutex::new((0u64, 0u64)), Condvar::new()));
    let held = Arc::new(AtomicBool::new(false));
    let (p, held2) = (Arc::clone(&pair), Arc::clone(&held));
    let body: Body = Arc::new(move |i, rng| {
        let ((m, cv), held) = (&*p, &*held2);
        match rng.below(7) {
            0 => {
                let mut guard = m.lock();
                let _holding = Holding::new(held);
                guard.0 += 1;
                if rng.below(2) == 0 {
                    cv.notify_one();
                } else {
                    cv.notify_all();
                }
            }
            1 => {
                let (_guard, _) = cv.wait_timeout(m.lock(), rng.micros_below(500));
                let _holding = Holding::new(held);
            }
            2 => {
                if i % 3 == 0 {
                    let _guard = cv.wait_while(m.lock(), |v| v.0 % 2 == 0);
                    let _holding = Holding::new(held);
                }
            }
            3 => {
                if let Some(mut guard) = m.try_lock_for(rng.micros_below(300)) {
                    let _holding = Holding::new(held);
                    guard.1 += 1;
                    if rng.below(3) == 0 {
                        weft::yield_now();
                    }
                }
            }
            4 => {
                let mut guard = m.lock();
                drop(Holding::new(held));
                guard.1 += 1;
                drop(guard);
                cv.notify_all();
            }
            5 => {
                let mut guard = m.lock();
                drop(Holding::new(held));
                guard.0 += 1;
                drop(guard);
                cv.notify_one();
            }
            _ => {
                let (_guard, _) = cv.wait_timeout_while(m.lock(), rng.micros_below(300), |v| v.1 % 3 != 0);
                let _holding = Holding::new(held);
            }
        }
    });
    let notifier = {
        let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let (p, flag) = (Arc::clone(&pair), Arc::clone(&stop.0));
        let handle = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                p.0.lock().0 += 1;
                p.1.notify_all();
                thread::sleep(Duration::from_millis(2));
            }
        });
        (stop, handle)
    };
    chaos("mutex+condvar", 0x3c07_da55, CHAOS, End::Stop, body);
    drop(notifier.0);
    join_thread("mutex+condvar: the notifier thread", notifier.1);
    let p = Arc::clone(&pair);
    within("mutex+condvar: the final lock", move || drop(p.0.lock()));
    let (m, cv) = &*pair;
    assert!(!m.is_locked(), "mutex+condvar: the mutex is locked after everyone left");
    // Every waiter left the Condvar: it may serve another Mutex now (it
    // panics if it still names the first as its waiters' mutex).
    let other = Mutex::new(());
    let (_guard, result) = cv.wait_timeout(other.lock(), Duration::from_millis(1));
    assert!(result.timed_out(), "mutex+condvar: a wait nobody notified did not time out");
}

/// Barrier::wait_timeout with 0 to 2 ms timeouts, a Barrier of 3, under
/// cancels; in 10 rounds of a tenth of CHAOS, each ending with every
/// coroutine cancelled at once, and checked to leave no arrival behind (one
/// a cancelled waiter did not withdraw).
#[test]
fn barrier_chaos() {
    const ROUNDS: u32 = 10;
    let barrier = Arc::new(Barrier::new(3));
    let b = Arc::clone(&barrier);
    let body: Body = Arc::new(move |_, rng| {
        let _ = b.wait_timeout(rng.micros_below(2000));
    });
    for round in 0..ROUNDS {
        chaos(
            &format!("barrier round {round}"),
            0xba44_1e40 + u64::from(round),
            CHAOS / ROUNDS,
            End::CancelAll,
            Arc::clone(&body),
        );
        assert!(
            format!("{barrier:?}").contains("arrived: 0"),
            "barrier round {round}: an arrival left behind after everyone left: {barrier:?}"
        );
    }
    // Still needs the full count: three arrivals open it, with one leader.
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let b = Arc::clone(&barrier);
            thread::spawn(move || b.wait().is_leader())
        })
        .collect();
    let leaders = waiters.into_iter().map(|w| join_thread("barrier: a final waiter", w));
    let leaders = leaders.filter(|&leader| leader).count();
    assert_eq!(leaders, 1, "barrier: the final generation had {leaders} leaders, not one");
}

/// Rounds of: 8 coroutines and 2 OS threads wait on a Condvar for a flag;
/// some coroutines (the victims: every timed waiter, and one untimed) are
/// cancelled at random moments before the flag is set and notified with
/// `notify_all` (with the lock held or not), the rest right after. Every
/// waiter that is not a victim must get through: a wake, a requeue onto
/// the Mutex, or a lock hand-off that reached a cancelled victim is passed
/// on.
#[test]
fn condvar_notify_all_reaches_every_waiter_despite_cancels() {
    const ROUNDS: usize = 150;
    let runtime = runtime();
    let mut rng = Rng::new(0xc0d7_a411);
    for round in 0..ROUNDS {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let woke = Arc::new(AtomicUsize::new(0));
        let mut waiters = Vec::new();
        let mut victims = Vec::new();
        for i in 0..8 {
            let (p, woke) = (Arc::clone(&pair), Arc::clone(&woke));
            let timed = i % 2 == 1;
            let victim = timed || i == 2;
            let handle = runtime.spawn(move || {
                let (m, cv) = &*p;
                if timed {
                    let _ = cv.wait_timeout_while(m.lock(), Duration::from_millis(1), |flag| !*flag);
                } else {
                    let _guard = cv.wait_while(m.lock(), |flag| !*flag);
                    if !victim {
                        woke.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
            if victim {
                victims.push((i, handle));
            } else {
                waiters.push((i, handle));
            }
        }
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (p, woke) = (Arc::clone(&pair), Arc::clone(&woke));
                thread::spawn(move || {
                    let (m, cv) = &*p;
                    let _guard = cv.wait_while(m.lock(), |flag| !*flag);
                    woke.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        thread::sleep(rng.micros_below(2000));
        for (_, victim) in &victims {
            if rng.below(2) == 0 {
                victim.cancel();
            }
        }
        {
            let (m, cv) = &*pair;
            let mut guard = m.lock();
            *guard = true;
            if rng.below(2) == 0 {
                cv.notify_all();
                drop(guard);
            } else {
                drop(guard);
                cv.notify_all();
            }
        }
        for (_, victim) in &victims {
            victim.cancel();
        }
        let expected = waiters.len() + threads.len();
        for (i, mut waiter) in waiters {
            let what = format!("condvar round {round}: untimed waiter {i}, notified");
            match waiter.join_timeout(PATIENCE) {
                None => panic!("{what}: still waiting {PATIENCE:?} later (its wake was lost)"),
                Some(result) => result.unwrap_or_else(|error| panic!("{what}: {error}")),
            }
        }
        for (t, thread) in threads.into_iter().enumerate() {
            join_thread(&format!("condvar round {round}: thread {t}, notified"), thread);
        }
        for (i, victim) in victims {
            join_coroutine(&format!("condvar round {round}: victim {i}"), victim);
        }
        assert_eq!(woke.load(Ordering::SeqCst), expected, "condvar round {round}: waiters that got through");
        assert!(!pair.0.is_locked(), "condvar round {round}: the mutex is locked after everyone left");
    }
}

/// A WaitGroup handle cloned while another handle waits counts: the wait
/// ends only once the clone is dropped too.
#[test]
fn waitgroup_wait_counts_a_clone_made_during_the_wait() {
    let group = WaitGroup::new();
    let member = group.clone();
    let clone_dropped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&clone_dropped);
    let worker = thread::spawn(move || {
        let clone = member.clone();
        drop(member);
        thread::sleep(Duration::from_millis(20));
        flag.store(true, Ordering::SeqCst);
        drop(clone);
    });
    group.wait();
    assert!(clone_dropped.load(Ordering::SeqCst), "waitgroup: the wait ended while a clone was alive");
    join_thread("waitgroup: the worker", worker);
}
