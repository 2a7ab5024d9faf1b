//! The API weft::sync shares with parking_lot and std beyond the basics:
//! timed waits (`try_lock_for`, `try_read_until`, `wait_until`,
//! `Barrier::wait_timeout`, `WaitGroup::wait_timeout`,
//! `Semaphore::acquire_many_timeout`), `Semaphore::acquire_many`, upgradable
//! reads, downgrades, mapped guards, `is_locked`, and what `notify_*`
//! return. Every timed wait is checked never to end early, and the
//! primitive to work normally after a waiter gave up; each runs from OS
//! threads and from coroutines.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use weft::sync::{
    Barrier, Condvar, MappedMutexGuard, MappedRwLockReadGuard, Mutex, MutexGuard, RwLock, RwLockReadGuard,
    RwLockUpgradableReadGuard, RwLockWriteGuard, Semaphore, WaitGroup,
};

fn runtime() -> &'static weft::Runtime {
    static RUNTIME: std::sync::OnceLock<weft::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| weft::Runtime::builder().workers(2).build().expect("runtime"))
}

/// Runs `f` on a fresh OS thread, then as a coroutine.
fn on_thread_and_coroutine(f: impl Fn(&str) + Send + Sync + 'static) {
    let f = Arc::new(f);
    let g = Arc::clone(&f);
    thread::spawn(move || g("thread")).join().expect("the thread panicked");
    runtime().spawn(move || f("coroutine")).join().expect("the coroutine panicked");
}

/// The time limits tried: zero, short, and long enough to sleep for real.
const TIMEOUTS: [Duration; 4] =
    [Duration::ZERO, Duration::from_millis(1), Duration::from_millis(5), Duration::from_millis(30)];

/// Time for a thread or coroutine just started to reach its wait. Only a
/// margin (the public API cannot see a queue): generous for a loaded machine.
const SETTLE: Duration = Duration::from_millis(100);

/// A bound for things that must happen; far beyond any honest delay.
const PATIENCE: Duration = Duration::from_secs(20);

fn assert_not_early(start: Instant, timeout: Duration, what: &str) {
    let waited = start.elapsed();
    assert!(waited >= timeout, "{what}: gave up after {waited:?}, before its {timeout:?}");
}

/// `recv_timeout` that does not block a coroutine's worker (it polls,
/// sleeping with `weft::sleep`, which parks a coroutine and sleeps a
/// thread).
trait RecvWithin<T> {
    fn recv_within(&self, limit: Duration) -> Result<T, mpsc::RecvTimeoutError>;
}

impl<T> RecvWithin<T> for mpsc::Receiver<T> {
    fn recv_within(&self, limit: Duration) -> Result<T, mpsc::RecvTimeoutError> {
        let start = Instant::now();
        loop {
            match self.try_recv() {
                Ok(value) => return Ok(value),
                Err(mpsc::TryRecvError::Disconnected) => return Err(mpsc::RecvTimeoutError::Disconnected),
                Err(mpsc::TryRecvError::Empty) if start.elapsed() >= limit => {
                    return Err(mpsc::RecvTimeoutError::Timeout);
                }
                Err(mpsc::TryRecvError::Empty) => weft::sleep(Duration::from_millis(1)),
            }
        }
    }
}

/// Runs `f` on a new thread; the receiver gets its result.
fn in_background<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

// ---------------------------------------------------------------------------
// Mutex
// ---------------------------------------------------------------------------

#[test]
fn mutex_timed_locks_never_early_and_leave_it_usable() {
    on_thread_and_coroutine(|who| {
        let mutex = Arc::new(Mutex::new(0u32));
        let held = mutex.lock();
        for timeout in TIMEOUTS {
            let start = Instant::now();
            assert!(mutex.try_lock_for(timeout).is_none(), "{who}: got a held mutex");
            assert_not_early(start, timeout, &format!("{who}: try_lock_for"));
            let deadline = Instant::now() + timeout;
            assert!(mutex.try_lock_until(deadline).is_none());
            assert!(Instant::now() >= deadline, "{who}: try_lock_until returned before its deadline");
        }
        assert!(mutex.is_locked());
        drop(held);
        assert!(!mutex.is_locked());
        // Nothing was left behind: the fast paths work, and a timed lock of a
        // free mutex succeeds at once.
        *mutex.try_lock().expect("free") += 1;
        *mutex.try_lock_for(Duration::ZERO).expect("free") += 1;
        *mutex.try_lock_until(Instant::now()).expect("free") += 1;
        assert_eq!(*mutex.lock(), 3);
    });
}

/// A timed waiter gives up while an untimed one waits behind the same
/// holder: the untimed one still gets in when the holder leaves.
#[test]
fn mutex_timed_out_waiter_strands_nobody() {
    let mutex = Arc::new(Mutex::new(0u32));
    let held = mutex.lock();
    let m = Arc::clone(&mutex);
    let untimed = in_background(move || *m.lock() += 1);
    weft::sleep(SETTLE);
    let m = Arc::clone(&mutex);
    let timed = runtime().spawn(move || m.try_lock_for(Duration::from_millis(50)).is_none());
    assert!(timed.join().unwrap(), "the timed waiter got a held mutex");
    drop(held);
    untimed.recv_within(PATIENCE).expect("the untimed waiter was stranded");
    assert_eq!(*mutex.lock(), 1);
}

#[test]
fn mutex_timed_lock_succeeds_when_released_in_time() {
    let mutex = Arc::new(Mutex::new(0u32));
    let held = mutex.lock();
    let m = Arc::clone(&mutex);
    let waiter = runtime().spawn(move || m.try_lock_for(PATIENCE).map(|mut g| *g += 1).is_some());
    weft::sleep(Duration::from_millis(20));
    drop(held);
    assert!(waiter.join().unwrap());
    assert_eq!(*mutex.lock(), 1);
}

// ---------------------------------------------------------------------------
// RwLock timeouts
// ---------------------------------------------------------------------------

#[test]
fn rwlock_timed_locks_never_early_and_leave_it_usable() {
    on_thread_and_coroutine(|who| {
        let lock = RwLock::new(0u32);
        // Readers behind a writer, writers behind a reader and a writer.
        {
            let writer = lock.write();
            for timeout in TIMEOUTS {
                let start = Instant::now();
                assert!(lock.try_read_for(timeout).is_none(), "{who}: read a write-locked lock");
                assert_not_early(start, timeout, &format!("{who}: try_read_for"));
                let start = Instant::now();
                assert!(lock.try_write_for(timeout).is_none(), "{who}: wrote a write-locked lock");
                assert_not_early(start, timeout, &format!("{who}: try_write_for"));
                let deadline = Instant::now() + timeout;
                assert!(lock.try_read_until(deadline).is_none());
                assert!(Instant::now() >= deadline, "{who}: try_read_until returned early");
                let deadline = Instant::now() + timeout;
                assert!(lock.try_write_until(deadline).is_none());
                assert!(Instant::now() >= deadline, "{who}: try_write_until returned early");
            }
            drop(writer);
        }
        {
            let reader = lock.read();
            for timeout in TIMEOUTS {
                let start = Instant::now();
                assert!(lock.try_write_for(timeout).is_none(), "{who}: wrote a read-locked lock");
                assert_not_early(start, timeout, &format!("{who}: try_write_for behind a reader"));
                // The writer that gave up left no flag: readers still get in.
                assert!(lock.try_read().is_some(), "{who}: a timed-out writer kept readers out");
            }
            drop(reader);
        }
        assert!(!lock.is_locked());
        *lock.try_write().expect("free") += 1;
        assert_eq!(*lock.try_read().expect("free"), 1);
        assert_eq!(*lock.try_read_for(Duration::ZERO).expect("free"), 1);
        *lock.try_write_until(Instant::now()).expect("free") += 1;
        assert_eq!(*lock.read(), 2);
    });
}

/// A reader that arrives while a timed writer waits queues behind it (no
/// barging past a waiting writer); when that writer gives up, the reader is
/// let in although the first reader still holds the lock.
#[test]
fn rwlock_timed_out_writer_lets_queued_readers_in() {
    for coroutine_writer in [false, true] {
        let lock = Arc::new(RwLock::new(0u32));
        let first = lock.read();
        let l = Arc::clone(&lock);
        let timed = move || l.try_write_for(Duration::from_millis(300)).is_none();
        let writer: Box<dyn FnOnce() -> bool + Send> = if coroutine_writer {
            let handle = runtime().spawn(timed);
            Box::new(move || handle.join().unwrap())
        } else {
            let handle = thread::spawn(timed);
            Box::new(move || handle.join().unwrap())
        };
        weft::sleep(SETTLE);
        assert!(lock.try_read().is_none(), "a reader barged past a waiting writer");
        let l = Arc::clone(&lock);
        let reader = in_background(move || *l.read());
        assert!(writer(), "the writer got a read-locked lock");
        // `first` is still held: the reader gets in beside it.
        assert_eq!(reader.recv_within(PATIENCE).expect("a reader was stranded behind a writer that left"), 0);
        drop(first);
        *lock.write() += 1;
        assert_eq!(*lock.read(), 1);
        assert!(!lock.is_locked());
    }
}

/// A timed reader behind a writer gives up; writers and readers then
/// proceed normally, and a timed reader whose writer leaves in time gets in.
#[test]
fn rwlock_timed_out_reader_leaves_no_trace() {
    let lock = Arc::new(RwLock::new(0u32));
    let writer = lock.write();
    let l = Arc::clone(&lock);
    let timed = runtime().spawn(move || l.try_read_for(Duration::from_millis(50)).is_none());
    assert!(timed.join().unwrap());
    drop(writer);
    *lock.try_write().expect("nothing left queued") += 1;
    let writer = lock.write();
    let l = Arc::clone(&lock);
    let timed = runtime().spawn(move || l.try_read_for(PATIENCE).map(|g| *g));
    weft::sleep(Duration::from_millis(20));
    drop(writer);
    assert_eq!(timed.join().unwrap(), Some(1));
    assert!(!lock.is_locked());
}

// ---------------------------------------------------------------------------
// RwLock: upgradable reads, downgrades, is_locked
// ---------------------------------------------------------------------------

#[test]
fn upgradable_read_shares_with_readers_but_not_with_upgradables() {
    on_thread_and_coroutine(|who| {
        let lock = Arc::new(RwLock::new(1u32));
        let upgradable = lock.upgradable_read();
        assert!(lock.is_locked() && !lock.is_locked_exclusive());
        let r1 = lock.read();
        let r2 = lock.try_read().expect("readers share with an upgradable reader");
        assert_eq!(*upgradable + *r1 + *r2, 3);
        assert!(lock.try_upgradable_read().is_none(), "{who}: two upgradable readers");
        assert!(lock.try_write().is_none());
        // Another upgradable reader waits for this one.
        let l = Arc::clone(&lock);
        let second = in_background(move || *l.upgradable_read());
        assert!(second.recv_within(SETTLE).is_err(), "{who}: a second upgradable read got in");
        drop((r1, r2));
        drop(upgradable);
        assert_eq!(second.recv_within(PATIENCE).expect("the second upgradable reader never got in"), 1);
        assert!(!lock.is_locked());
    });
}

#[test]
fn upgrade_waits_for_readers_and_stops_new_ones() {
    on_thread_and_coroutine(|who| {
        let lock = Arc::new(RwLock::new(Vec::new()));
        let reader = lock.read();
        let upgraded = Arc::new(AtomicBool::new(false));
        let (l, u) = (Arc::clone(&lock), Arc::clone(&upgraded));
        let upgrader = in_background(move || {
            let upgradable = l.upgradable_read();
            let mut writer = RwLockUpgradableReadGuard::upgrade(upgradable);
            u.store(true, Ordering::SeqCst);
            writer.push("upgraded");
        });
        weft::sleep(SETTLE);
        assert!(!upgraded.load(Ordering::SeqCst), "{who}: upgraded while a reader held the lock");
        // The upgrade waits: new readers queue behind it.
        assert!(lock.try_read().is_none(), "{who}: a reader barged past a waiting upgrade");
        let l = Arc::clone(&lock);
        let late_reader = in_background(move || l.read().clone());
        assert!(late_reader.recv_within(SETTLE).is_err(), "{who}: a new reader got in before the upgrade");
        drop(reader);
        upgrader.recv_within(PATIENCE).expect("the upgrade never happened");
        // The reader that queued behind the upgrade sees its write.
        assert_eq!(late_reader.recv_within(PATIENCE).expect("the queued reader never got in"), ["upgraded"]);
        assert!(!lock.is_locked());
    });
}

#[test]
fn try_upgrade_and_downgrades_of_an_upgradable_read() {
    let lock = RwLock::new(0u32);
    let reader = lock.read();
    let upgradable = lock.upgradable_read();
    let upgradable = RwLockUpgradableReadGuard::try_upgrade(upgradable).expect_err("a reader is in");
    drop(reader);
    let mut writer = RwLockUpgradableReadGuard::try_upgrade(upgradable).expect("alone");
    *writer = 5;
    assert!(lock.is_locked_exclusive());
    assert!(lock.try_upgradable_read().is_none());
    drop(writer);
    // Downgrade to a plain read: another upgradable reader may come in.
    let read = RwLockUpgradableReadGuard::downgrade(lock.upgradable_read());
    let other = lock.try_upgradable_read().expect("free for another upgradable reader");
    assert_eq!(*read + *other, 10);
    drop((read, other));
    assert!(!lock.is_locked());
}

/// A writer waiting before the upgradable reader arrived is not overtaken
/// by it: the upgradable read queues behind the writer, as a reader does.
#[test]
fn upgradable_read_does_not_barge_past_a_waiting_writer() {
    let lock = Arc::new(RwLock::new(Vec::new()));
    let reader = lock.read();
    let l = Arc::clone(&lock);
    let writer = in_background(move || l.write().push("writer"));
    weft::sleep(SETTLE);
    assert!(lock.try_upgradable_read().is_none(), "an upgradable reader barged past a waiting writer");
    let l = Arc::clone(&lock);
    let upgrader = in_background(move || {
        let upgradable = l.upgradable_read();
        let seen = upgradable.clone();
        RwLockUpgradableReadGuard::upgrade(upgradable).push("upgrader");
        seen
    });
    drop(reader);
    writer.recv_within(PATIENCE).unwrap();
    assert_eq!(upgrader.recv_within(PATIENCE).unwrap(), ["writer"], "the writer went first");
    assert_eq!(*lock.read(), ["writer", "upgrader"]);
}

#[test]
fn downgrade_lets_waiting_readers_in_and_keeps_writers_out() {
    on_thread_and_coroutine(|who| {
        let lock = Arc::new(RwLock::new(0u32));
        let mut writer = lock.write();
        // A reader and a writer queue behind the write lock.
        let (release_reader, reader_may_leave) = mpsc::channel::<()>();
        let l = Arc::clone(&lock);
        let reader = in_background(move || {
            let guard = l.read();
            let seen = *guard;
            reader_may_leave.recv().unwrap();
            seen
        });
        weft::sleep(SETTLE);
        let wrote = Arc::new(AtomicBool::new(false));
        let (l, w) = (Arc::clone(&lock), Arc::clone(&wrote));
        let second_writer = in_background(move || {
            *l.write() += 10;
            w.store(true, Ordering::SeqCst);
        });
        weft::sleep(SETTLE);
        *writer = 1;
        let read = RwLockWriteGuard::downgrade(writer);
        assert_eq!(*read, 1);
        assert!(!lock.is_locked_exclusive());
        drop(read);
        // The reader went in with the downgrade; the writer is still out.
        weft::sleep(SETTLE);
        assert!(!wrote.load(Ordering::SeqCst), "{who}: a writer got in while a reader held the lock");
        release_reader.send(()).unwrap();
        assert_eq!(reader.recv_within(PATIENCE).expect("the reader never got in"), 1);
        second_writer.recv_within(PATIENCE).expect("the writer never got in");
        assert_eq!(*lock.read(), 11);
        assert!(!lock.is_locked());
    });
}

/// std's `test_read_guard_covariance`: a read guard of `&'static T` is
/// usable as one of `&'a T`. This only has to compile.
#[test]
fn read_guard_is_covariant() {
    fn do_stuff<'a>(_: RwLockReadGuard<'_, &'a i32>, _: &'a i32) {}
    let j: i32 = 5;
    let lock = RwLock::new(&j);
    {
        let i = 6;
        do_stuff(lock.read(), &i);
    }

    fn shorten<'a>(guard: RwLockReadGuard<'a, &'static str>) -> RwLockReadGuard<'a, &'a str> {
        guard
    }
    fn shorten_mapped<'a>(guard: MappedRwLockReadGuard<'a, &'static str>) -> MappedRwLockReadGuard<'a, &'a str> {
        guard
    }
    let lock = RwLock::new("a");
    assert_eq!(*shorten(lock.read()), "a");
    let pair = RwLock::new(("b", 0));
    assert_eq!(*shorten_mapped(RwLockReadGuard::map(pair.read(), |p| &p.0)), "b");
}

// ---------------------------------------------------------------------------
// Mapped guards
// ---------------------------------------------------------------------------

#[test]
fn mapped_mutex_guards_hold_the_lock() {
    let mutex = Mutex::new((1u32, vec![10u32, 20]));
    let mut first: MappedMutexGuard<'_, u32> = MutexGuard::map(mutex.lock(), |p| &mut p.0);
    *first += 1;
    assert!(mutex.try_lock().is_none(), "a mapped guard holds the whole lock");
    assert!(mutex.is_locked());
    drop(first);
    let list = MutexGuard::map(mutex.lock(), |p| &mut p.1);
    let mut last = MappedMutexGuard::try_map(list, |l| l.last_mut()).expect("not empty");
    *last += 1;
    drop(last);
    let guard = MutexGuard::try_map(mutex.lock(), |p| p.1.get_mut(9)).expect_err("no element 9");
    assert_eq!(*guard, (2, vec![10, 21]));
    drop(guard);
    assert!(!mutex.is_locked());
}

#[test]
fn mapped_rwlock_guards_hold_the_lock() {
    let lock = RwLock::new((String::from("a"), 1u32));
    let name = RwLockReadGuard::map(lock.read(), |p| p.0.as_str());
    assert!(lock.try_write().is_none(), "a mapped read guard holds a read lock");
    assert!(lock.try_read().is_some(), "and only a read lock");
    assert_eq!(&*name, "a");
    drop(name);
    let mut count = RwLockWriteGuard::map(lock.write(), |p| &mut p.1);
    assert!(lock.try_read().is_none(), "a mapped write guard holds the write lock");
    *count += 1;
    drop(count);
    assert!(RwLockReadGuard::try_map(lock.read(), |p| p.0.chars().nth(5).map(|_| &p.0)).is_err());
    let mut text = RwLockWriteGuard::try_map(lock.write(), |p| Some(&mut p.0)).ok().unwrap();
    text.push('b');
    drop(text);
    assert_eq!(*lock.read(), (String::from("ab"), 2));
    assert!(!lock.is_locked());
}

/// A panic inside the mapping closure releases the lock (the original
/// guard unwinds).
#[test]
fn a_panicking_map_releases_the_lock() {
    let mutex = Mutex::new(0u32);
    let lock = RwLock::new(0u32);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = MutexGuard::map(mutex.lock(), |_| -> &mut u32 { panic!("boom in map") });
    }));
    assert!(result.is_err());
    assert!(!mutex.is_locked());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = RwLockWriteGuard::map(lock.write(), |_| -> &mut u32 { panic!("boom in map") });
    }));
    assert!(result.is_err());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = RwLockReadGuard::map(lock.read(), |_| -> &u32 { panic!("boom in map") });
    }));
    assert!(result.is_err());
    assert!(!lock.is_locked());
}

// ---------------------------------------------------------------------------
// Condvar
// ---------------------------------------------------------------------------

#[test]
fn condvar_deadline_waits_never_early() {
    on_thread_and_coroutine(|who| {
        let (mutex, condvar) = (Mutex::new(0u32), Condvar::new());
        for timeout in TIMEOUTS {
            let deadline = Instant::now() + timeout;
            let mut guard = mutex.lock();
            // Spurious wakeups may end a wait early, without a timeout: loop.
            loop {
                let (g, result) = condvar.wait_until(guard, deadline);
                guard = g;
                if result.timed_out() {
                    break;
                }
            }
            assert!(Instant::now() >= deadline, "{who}: wait_until timed out before its deadline");
            drop(guard);
            let deadline = Instant::now() + timeout;
            let (guard, result) = condvar.wait_while_until(mutex.lock(), |n| *n == 0, deadline);
            assert!(result.timed_out());
            assert!(Instant::now() >= deadline, "{who}: wait_while_until timed out before its deadline");
            drop(guard);
        }
        // The condvar forgot the timed-out waiters: nobody is left to wake.
        assert!(!condvar.notify_one());
        assert_eq!(condvar.notify_all(), 0);
    });
}

#[test]
fn condvar_wait_while_until_sees_the_notify() {
    let state = Arc::new((Mutex::new(false), Condvar::new()));
    let s = Arc::clone(&state);
    let waiter = runtime().spawn(move || {
        let (ready, condvar) = &*s;
        let (guard, result) = condvar.wait_while_until(ready.lock(), |ready| !*ready, Instant::now() + PATIENCE);
        (*guard, result.timed_out())
    });
    weft::sleep(Duration::from_millis(20));
    let (ready, condvar) = &*state;
    *ready.lock() = true;
    condvar.notify_all();
    assert_eq!(waiter.join().unwrap(), (true, false));
}

/// Waiters that count themselves in under the mutex before waiting, so that
/// whoever holds the mutex and sees all `n` counted knows all `n` are queued
/// on the condvar (each releases the mutex only once queued).
struct Gate {
    state: Mutex<(usize, bool)>,
    condvar: Condvar,
}

fn gate_with_waiters(n: usize) -> (Arc<Gate>, Vec<mpsc::Receiver<()>>) {
    let gate = Arc::new(Gate { state: Mutex::new((0, false)), condvar: Condvar::new() });
    let waiters = (0..n)
        .map(|i| {
            let g = Arc::clone(&gate);
            let wait = move || {
                let mut state = g.state.lock();
                state.0 += 1;
                drop(g.condvar.wait_while(state, |s| !s.1));
            };
            if i % 2 == 0 {
                let handle = runtime().spawn(wait);
                in_background(move || handle.join().unwrap())
            } else {
                in_background(wait)
            }
        })
        .collect();
    let start = Instant::now();
    while gate.state.lock().0 < n {
        assert!(start.elapsed() < PATIENCE, "the waiters never arrived");
        weft::sleep(Duration::from_millis(1));
    }
    (gate, waiters)
}

#[test]
fn notify_one_says_whether_it_woke_a_waiter() {
    let condvar = Condvar::new();
    assert!(!condvar.notify_one(), "nobody waits");
    let (gate, waiters) = gate_with_waiters(1);
    let mut state = gate.state.lock();
    state.1 = true;
    assert!(gate.condvar.notify_one(), "the waiter is queued");
    assert!(!gate.condvar.notify_one(), "it was the only one");
    drop(state);
    for w in waiters {
        w.recv_within(PATIENCE).expect("the waiter never returned");
    }
    assert!(!gate.condvar.notify_one());
}

#[test]
fn notify_all_counts_every_waiter() {
    const WAITERS: usize = 6;
    assert_eq!(Condvar::new().notify_all(), 0);
    // Notified under the mutex: all are moved onto it (none is woken yet).
    let (gate, waiters) = gate_with_waiters(WAITERS);
    let mut state = gate.state.lock();
    state.1 = true;
    assert_eq!(gate.condvar.notify_all(), WAITERS);
    assert_eq!(gate.condvar.notify_all(), 0, "all were reached by the first");
    drop(state);
    for w in waiters {
        w.recv_within(PATIENCE).expect("a waiter never returned");
    }
    // Notified without the mutex: one is woken, the rest moved.
    let (gate, waiters) = gate_with_waiters(WAITERS);
    let mut state = gate.state.lock();
    state.1 = true;
    drop(state);
    assert_eq!(gate.condvar.notify_all(), WAITERS);
    for w in waiters {
        w.recv_within(PATIENCE).expect("a waiter never returned");
    }
}

// ---------------------------------------------------------------------------
// Barrier
// ---------------------------------------------------------------------------

#[test]
fn barrier_wait_timeout_never_early_and_withdraws() {
    on_thread_and_coroutine(|who| {
        let barrier = Barrier::new(2);
        for timeout in TIMEOUTS {
            let start = Instant::now();
            assert!(barrier.wait_timeout(timeout).is_none(), "{who}: a barrier of 2 opened for one");
            assert_not_early(start, timeout, &format!("{who}: Barrier::wait_timeout"));
        }
        // A barrier of one opens at once, timed or not.
        assert!(Barrier::new(1).wait_timeout(Duration::ZERO).expect("opens").is_leader());
    });
}

/// After a participant timed out, the barrier still needs the full count:
/// the two others do not get through without a third.
#[test]
fn barrier_still_needs_the_full_count_after_a_timeout() {
    let barrier = Arc::new(Barrier::new(3));
    let b = Arc::clone(&barrier);
    assert!(runtime().spawn(move || b.wait_timeout(Duration::from_millis(20)).is_none()).join().unwrap());
    let passed = Arc::new(AtomicUsize::new(0));
    let others: Vec<_> = (0..2)
        .map(|i| {
            let (b, p) = (Arc::clone(&barrier), Arc::clone(&passed));
            let wait = move || {
                let leader = b.wait().is_leader();
                p.fetch_add(1, Ordering::SeqCst);
                leader
            };
            if i == 0 {
                let handle = runtime().spawn(wait);
                in_background(move || handle.join().unwrap())
            } else {
                in_background(wait)
            }
        })
        .collect();
    weft::sleep(SETTLE);
    assert_eq!(passed.load(Ordering::SeqCst), 0, "the barrier opened one participant short");
    let me = barrier.wait_timeout(PATIENCE).expect("the third arrival opens it");
    let mut leaders = usize::from(me.is_leader());
    for other in others {
        leaders += usize::from(other.recv_within(PATIENCE).expect("a participant was not released"));
    }
    assert_eq!(leaders, 1);
    // And the next generation works as usual.
    let b = Arc::clone(&barrier);
    let rounds: Vec<_> = (0..2)
        .map(|_| {
            let b = Arc::clone(&b);
            in_background(move || b.wait().is_leader())
        })
        .collect();
    let mut leaders = usize::from(barrier.wait().is_leader());
    for r in rounds {
        leaders += usize::from(r.recv_within(PATIENCE).unwrap());
    }
    assert_eq!(leaders, 1);
}

/// Timed and untimed participants, coroutines and threads, many rounds:
/// every round opens with exactly one leader, whatever the timeouts did.
#[test]
fn barrier_timeouts_racing_arrivals() {
    const PARTIES: usize = 4;
    const ROUNDS: usize = 200;
    let barrier = Arc::new(Barrier::new(PARTIES));
    let leaders = Arc::new(AtomicUsize::new(0));
    let timeouts = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..PARTIES)
        .map(|i| {
            let (b, l, t) = (Arc::clone(&barrier), Arc::clone(&leaders), Arc::clone(&timeouts));
            let body = move || {
                for round in 0..ROUNDS {
                    let result = if (i + round) % 3 == 0 {
                        // Retry a timed wait until the round opens.
                        loop {
                            match b.wait_timeout(Duration::from_micros(50)) {
                                Some(result) => break result,
                                None => t.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    } else {
                        b.wait()
                    };
                    if result.is_leader() {
                        l.fetch_add(1, Ordering::Relaxed);
                    }
                }
            };
            if i % 2 == 0 {
                let handle = runtime().spawn(body);
                in_background(move || handle.join().unwrap())
            } else {
                in_background(body)
            }
        })
        .collect();
    for h in handles {
        h.recv_within(PATIENCE * 3).expect("a participant never finished");
    }
    assert_eq!(leaders.load(Ordering::Relaxed), ROUNDS, "not exactly one leader per round");
}

// ---------------------------------------------------------------------------
// WaitGroup
// ---------------------------------------------------------------------------

/// One release wakes a crowd: 40 coroutines and 12 OS threads wait on one
/// WaitGroup (more than the 8 wakes the parking lot batches on its stack),
/// and the last `done` wakes every one of them.
#[test]
fn waitgroup_release_wakes_every_waiter_of_a_crowd() {
    const COROUTINES: usize = 40;
    const THREADS: usize = 12;
    let group = WaitGroup::new();
    let member = group.clone();
    let woken = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..COROUTINES + THREADS)
        .map(|i| {
            let (group, woken) = (group.clone(), Arc::clone(&woken));
            let body = move || {
                group.wait();
                woken.fetch_add(1, Ordering::SeqCst);
            };
            if i < COROUTINES {
                let handle = runtime().spawn(body);
                in_background(move || handle.join().unwrap())
            } else {
                in_background(body)
            }
        })
        .collect();
    drop(group);
    // Give every waiter time to park, then release them all at once.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(woken.load(Ordering::SeqCst), 0, "a waiter went through before the release");
    drop(member);
    for w in waiters {
        w.recv_within(PATIENCE).expect("a waiter was not woken by the release");
    }
    assert_eq!(woken.load(Ordering::SeqCst), COROUTINES + THREADS);
}

#[test]
fn waitgroup_wait_timeout_never_early_then_completes() {
    on_thread_and_coroutine(|who| {
        let wg = WaitGroup::new();
        let worker = wg.clone();
        for timeout in TIMEOUTS {
            let start = Instant::now();
            assert!(!wg.clone().wait_timeout(timeout), "{who}: returned with a handle alive");
            assert_not_early(start, timeout, &format!("{who}: WaitGroup::wait_timeout"));
        }
        let done = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&done);
        thread::spawn(move || {
            weft::sleep(Duration::from_millis(10));
            d.store(true, Ordering::Relaxed);
            drop(worker);
        });
        assert!(wg.wait_timeout(PATIENCE), "{who}: the last handle went, but the wait timed out");
        assert!(done.load(Ordering::Relaxed), "{who}: the worker's write is visible");
        assert!(WaitGroup::new().wait_timeout(Duration::ZERO), "{who}: nobody else: at once");
    });
}

// ---------------------------------------------------------------------------
// Semaphore: acquire_many
// ---------------------------------------------------------------------------

#[test]
fn acquire_many_basics() {
    let sem = Semaphore::new(5);
    let three = sem.acquire_many(3);
    assert_eq!(three.num_permits(), 3);
    assert_eq!(sem.available_permits(), 2);
    assert!(sem.try_acquire_many(3).is_none());
    let two = sem.try_acquire_many(2).expect("2 free");
    assert_eq!(sem.available_permits(), 0);
    let none = sem.try_acquire_many(0).expect("zero always succeeds");
    assert_eq!(none.num_permits(), 0);
    drop(three);
    assert_eq!(sem.available_permits(), 3);
    two.forget();
    drop(none);
    assert_eq!(sem.available_permits(), 3);
    assert_eq!(sem.acquire_many(0).num_permits(), 0);
}

#[test]
#[should_panic(expected = "could never be served")]
fn acquire_many_more_than_max_panics() {
    let sem = Semaphore::new(0);
    let _ = sem.acquire_many(Semaphore::MAX_PERMITS + 1);
}

#[test]
#[should_panic(expected = "could never be served")]
fn try_acquire_many_more_than_max_panics() {
    let _ = Semaphore::new(0).try_acquire_many(usize::MAX);
}

#[test]
fn acquire_many_timeout_never_early_and_leaves_permits() {
    on_thread_and_coroutine(|who| {
        let sem = Semaphore::new(2);
        for timeout in TIMEOUTS {
            let start = Instant::now();
            assert!(sem.acquire_many_timeout(3, timeout).is_none(), "{who}: got 3 of 2 permits");
            assert_not_early(start, timeout, &format!("{who}: acquire_many_timeout"));
            assert_eq!(sem.available_permits(), 2, "{who}: a timed-out waiter took permits");
            let start = Instant::now();
            let _two = sem.acquire_many(2);
            assert!(sem.acquire_timeout(timeout).is_none());
            assert_not_early(start, timeout, &format!("{who}: acquire_timeout"));
        }
        assert_eq!(sem.try_acquire_many(2).expect("both free").num_permits(), 2);
    });
}

/// Waiters queued in order: many(3), one, many(2). Permits released one at
/// a time go to them strictly in that order; the waiter for one never
/// overtakes the waiter for three, although a permit is there for it.
#[test]
fn acquire_many_is_fifo() {
    let sem = Arc::new(Semaphore::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for (i, n) in [3usize, 1, 2].into_iter().enumerate() {
        let (s, o) = (Arc::clone(&sem), Arc::clone(&order));
        let body = move || {
            s.acquire_many(n).forget();
            o.lock().push(n);
        };
        waiters.push(if i == 1 {
            let handle = runtime().spawn(body);
            in_background(move || handle.join().unwrap())
        } else {
            in_background(body)
        });
        weft::sleep(SETTLE);
    }
    let served = |count: usize| {
        let start = Instant::now();
        while order.lock().len() < count {
            assert!(start.elapsed() < PATIENCE, "only {:?} served", *order.lock());
            weft::sleep(Duration::from_millis(1));
        }
        weft::sleep(Duration::from_millis(20));
        assert_eq!(order.lock().len(), count, "served too many: {:?}", *order.lock());
    };
    sem.add_permits(1);
    sem.add_permits(1);
    weft::sleep(SETTLE);
    assert!(order.lock().is_empty(), "the waiter for one overtook the waiter for three");
    assert_eq!(sem.available_permits(), 0, "permits set aside for the head are not free");
    assert!(sem.try_acquire().is_none(), "a newcomer took a permit set aside for the head");
    sem.add_permits(1);
    served(1);
    sem.add_permits(1);
    served(2);
    sem.add_permits(1);
    weft::sleep(SETTLE);
    assert_eq!(order.lock().len(), 2);
    sem.add_permits(2); // one more than needed: banked
    served(3);
    for w in waiters {
        w.recv_within(PATIENCE).unwrap();
    }
    assert_eq!(*order.lock(), [3, 1, 2]);
    assert_eq!(sem.available_permits(), 1);
}

/// A waiter for many at the head of the queue gives up: the permits set
/// aside for it go to the waiter behind it (they cover it), as if it had
/// never waited.
#[test]
fn timed_out_head_passes_its_permits_on() {
    let sem = Arc::new(Semaphore::new(0));
    let s = Arc::clone(&sem);
    let head = runtime().spawn(move || s.acquire_many_timeout(5, Duration::from_millis(1000)).is_none());
    weft::sleep(SETTLE);
    let s = Arc::clone(&sem);
    let behind = in_background(move || s.acquire_many(2).forget());
    weft::sleep(SETTLE);
    sem.add_permits(2);
    assert!(behind.recv_within(SETTLE).is_err(), "the waiter behind overtook the head");
    assert!(head.join().unwrap(), "the head got 5 of 2 permits");
    behind.recv_within(PATIENCE).expect("the permits set aside for the head that left were stranded");
    assert_eq!(sem.available_permits(), 0);
    sem.add_permits(1);
    assert_eq!(sem.available_permits(), 1);
}

/// Coroutines and threads take random numbers of permits, timed and not:
/// never more held than exist, and the count ends exact.
#[test]
fn acquire_many_stress_exact() {
    const PERMITS: usize = 8;
    const PARTIES: usize = 8;
    const ROUNDS: usize = 1_000;
    let sem = Arc::new(Semaphore::new(PERMITS));
    let held = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..PARTIES)
        .map(|i| {
            let (sem, held) = (Arc::clone(&sem), Arc::clone(&held));
            let body = move || {
                let mut seed = i as u64 * 0x9E37_79B9 + 1;
                for round in 0..ROUNDS {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let n = 1 + (seed >> 33) as usize % 4;
                    let permit = if round % 5 == 0 {
                        match sem.acquire_many_timeout(n, Duration::from_micros(100)) {
                            Some(permit) => permit,
                            None => continue,
                        }
                    } else {
                        sem.acquire_many(n)
                    };
                    let now = held.fetch_add(n, Ordering::SeqCst) + n;
                    assert!(now <= PERMITS, "{now} permits held of {PERMITS}");
                    if round % 8 == 0 {
                        weft::yield_now();
                    }
                    held.fetch_sub(n, Ordering::SeqCst);
                    drop(permit);
                }
            };
            if i % 2 == 0 {
                let handle = runtime().spawn(body);
                in_background(move || handle.join().unwrap())
            } else {
                in_background(body)
            }
        })
        .collect();
    for h in handles {
        h.recv_within(PATIENCE * 3).expect("a party never finished");
    }
    assert_eq!(sem.available_permits(), PERMITS);
    assert_eq!(format!("{sem:?}"), format!("Semaphore {{ available_permits: {PERMITS}, waiters: false }}"));
}

// ---------------------------------------------------------------------------
// RwLock stress with every kind of lock
// ---------------------------------------------------------------------------

/// Readers, writers, upgradable readers (that upgrade, try to, or
/// downgrade), timed reads and writes, coroutines and threads on one lock:
/// a pair changed together is always seen equal, and every write counts.
#[test]
fn rwlock_stress_every_kind_of_lock() {
    const PARTIES: usize = 8;
    const ROUNDS: usize = 1_500;
    let lock = Arc::new(RwLock::new((0usize, 0usize)));
    let writes = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..PARTIES)
        .map(|i| {
            let (lock, writes) = (Arc::clone(&lock), Arc::clone(&writes));
            let body = move || {
                let write = |guard: &mut (usize, usize)| {
                    guard.0 += 1;
                    guard.1 += 1;
                    writes.fetch_add(1, Ordering::Relaxed);
                };
                for round in 0..ROUNDS {
                    match (i + round) % 9 {
                        0 => write(&mut lock.write()),
                        1 => {
                            if let Some(mut guard) = lock.try_write_for(Duration::from_micros(200)) {
                                write(&mut guard);
                            }
                        }
                        2 => {
                            let upgradable = lock.upgradable_read();
                            assert_eq!(upgradable.0, upgradable.1);
                            write(&mut RwLockUpgradableReadGuard::upgrade(upgradable));
                        }
                        3 => {
                            let upgradable = lock.upgradable_read();
                            match RwLockUpgradableReadGuard::try_upgrade(upgradable) {
                                Ok(mut guard) => write(&mut guard),
                                Err(upgradable) => {
                                    let read = RwLockUpgradableReadGuard::downgrade(upgradable);
                                    assert_eq!(read.0, read.1);
                                }
                            }
                        }
                        4 => {
                            let mut guard = lock.write();
                            write(&mut guard);
                            let read = RwLockWriteGuard::downgrade(guard);
                            assert_eq!(read.0, read.1, "a downgraded guard saw half a write");
                        }
                        5 => {
                            if let Some(guard) = lock.try_read_for(Duration::from_micros(100)) {
                                assert_eq!(guard.0, guard.1);
                            }
                        }
                        _ => {
                            let guard = lock.read();
                            assert_eq!(guard.0, guard.1, "a reader saw half a write");
                            if round % 16 == 0 {
                                weft::yield_now();
                            }
                        }
                    }
                }
            };
            if i % 2 == 0 {
                let handle = runtime().spawn(body);
                in_background(move || handle.join().unwrap())
            } else {
                in_background(body)
            }
        })
        .collect();
    for h in handles {
        h.recv_within(PATIENCE * 3).expect("a party never finished (deadlock?)");
    }
    let (a, b) = *lock.read();
    assert_eq!(a, b);
    assert_eq!(a, writes.load(Ordering::Relaxed));
    assert!(!lock.is_locked());
}

/// Owned permits (`Semaphore::acquire_owned` and its variants) keep their
/// semaphore's `Arc`: taken before a spawn, moved into the coroutine, given
/// back when it ends; at most the semaphore's permits run at once.
#[test]
fn owned_permits_move_into_coroutines_and_bound_concurrency() {
    let rt = weft::Runtime::builder().workers(2).build().expect("a runtime");
    let slots = Arc::new(weft::sync::Semaphore::new(3));
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..24)
        .map(|_| {
            let permit = Arc::clone(&slots).acquire_owned();
            assert_eq!(permit.num_permits(), 1);
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            rt.spawn(move || {
                let _permit = permit;
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                weft::sleep(Duration::from_millis(1));
                running.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker coroutine");
    }
    assert!(most.load(Ordering::SeqCst) <= 3, "{} ran at once with 3 permits", most.load(Ordering::SeqCst));
    assert_eq!(slots.available_permits(), 3, "every owned permit was given back");
    assert_eq!(Arc::strong_count(&slots), 1, "no permit kept the semaphore");

    let many = Arc::clone(&slots).acquire_many_owned(3);
    assert!(Arc::clone(&slots).try_acquire_owned().is_none(), "none free");
    assert_eq!(Arc::strong_count(&slots), 2, "the failed try dropped its Arc");
    assert!(std::ptr::eq(&**many.semaphore(), &*slots));
    many.forget();
    assert_eq!(slots.available_permits(), 0, "forgotten permits stay taken");
    assert_eq!(Arc::strong_count(&slots), 1, "forget dropped the Arc");
    slots.add_permits(2);
    let two = Arc::clone(&slots).try_acquire_many_owned(2).expect("two free");
    assert_eq!(format!("{two:?}"), "OwnedSemaphorePermit { permits: 2, .. }");
    drop(two);
    assert_eq!(slots.available_permits(), 2);
}
