//! Cancellation (`JoinHandle::cancel`) and runtime shutdown of coroutines
//! parked in every kind of wait (from a review, 2026-12-06), for the cells
//! the other test files leave out: the timed variants, `acquire_many`,
//! upgradable reads, `Select` with a timeout, `join_timeout`, the join of a
//! `spawn_blocking` job, UDP and Unix sockets; and cancellation that lands
//! *after* the wake was delivered (a lock handed over, permits granted, a
//! read phase counted in, a notify that chose the victim, a barrier opened,
//! a join result delivered): what the wake gave must pass on, not vanish.
//!
//! The "woken, then cancelled" scenarios run on one worker: a holder
//! coroutine releases the resource (which wakes the parked victim) and
//! cancels the victim in the same turn, without yielding, so the victim is
//! unwound before it ever runs with what it was given. Every scenario is
//! bounded: it fails after 20 s instead of hanging.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use weft::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use weft::sync::channel::{Select, bounded, unbounded};
use weft::sync::{Barrier, Condvar, Mutex, RwLock, RwLockUpgradableReadGuard, Semaphore, WaitGroup};
use weft::{CoroutineState, JoinErrorKind, JoinHandle, ParkedOn, Runtime};

const LIMIT: Duration = Duration::from_secs(20);

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("a runtime with its worker threads")
}

/// Runs `f` on its own thread and fails if it takes longer than 20 s (the
/// thread is left behind: a hang becomes a failure, not a stuck test).
#[track_caller]
fn within_limit<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(result);
    });
    match rx.recv_timeout(LIMIT) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what}: did not finish within {LIMIT:?} (hang)"),
    }
}

/// Counts its drops.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < LIMIT, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until coroutine `id` is parked on something `on` accepts.
#[track_caller]
fn wait_parked(rt: &Runtime, id: u64, what: &str, on: impl Fn(&ParkedOn) -> bool) {
    let started = Instant::now();
    loop {
        if let Some(CoroutineState::Parked { on: parked, .. }) = rt.dump().coroutine(id).map(|c| c.state())
            && on(&parked)
        {
            return;
        }
        assert!(started.elapsed() < LIMIT, "coroutine {id} never parked in {what}\n{}", rt.dump());
        thread::sleep(Duration::from_millis(2));
    }
}

#[track_caller]
fn assert_kind<T>(handle: JoinHandle<T>, kind: JoinErrorKind, what: &str) {
    match handle.join() {
        Ok(_) => panic!("{what}: the victim got through its wait"),
        Err(error) => assert_eq!(error.kind(), kind, "{what}: {error}"),
    }
}

// ---------------------------------------------------------------------------
// Woken, then cancelled before it runs: the resource passes on.
// ---------------------------------------------------------------------------

/// One worker. `holder` (a coroutine) takes the resource, calls the
/// `wait_go` it is given (which returns once the test says go), then gives
/// the resource up, which wakes the parked `victim`; the holder then
/// cancels the victim in the same turn. `behind`, an OS thread queued on
/// the resource after the victim, must get through.
fn woken_then_cancelled(
    name: &'static str,
    holder: impl FnOnce(&dyn Fn()) + Send + 'static,
    victim: impl FnOnce() + Send + 'static,
    parked_on: fn(&ParkedOn) -> bool,
    behind: impl FnOnce() + Send + 'static,
) {
    within_limit(name, move || {
        let rt = runtime(1);
        let held = Arc::new(AtomicBool::new(false));
        let go = Arc::new(AtomicBool::new(false));
        let slot: Arc<std::sync::Mutex<Option<JoinHandle<()>>>> = Arc::default();
        let holder = {
            let (held, go, slot) = (Arc::clone(&held), Arc::clone(&go), Arc::clone(&slot));
            rt.spawn(move || {
                holder(&|| {
                    held.store(true, Ordering::SeqCst);
                    while !go.load(Ordering::SeqCst) {
                        weft::sleep(Duration::from_millis(1));
                    }
                });
                // Same turn as the wake: the victim has not run since.
                let victim = slot.lock().unwrap().take().expect("the victim's handle");
                victim.cancel();
                victim
            })
        };
        wait_until("the holder to take the resource", || held.load(Ordering::SeqCst));
        let victim = rt.spawn(victim);
        let id = victim.id();
        *slot.lock().unwrap() = Some(victim);
        wait_parked(&rt, id, name, parked_on);
        let (done_tx, done_rx) = mpsc::channel();
        thread::spawn(move || {
            behind();
            let _ = done_tx.send(());
        });
        thread::sleep(Duration::from_millis(100)); // the thread queues behind the victim
        go.store(true, Ordering::SeqCst);
        let victim = holder.join().expect("the holder");
        assert_kind(victim, JoinErrorKind::Cancelled, name);
        assert!(
            done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "{name}: the thread queued behind a victim that was woken and then cancelled never got through \
             (what the wake handed the victim was lost)"
        );
        drop(rt);
    });
}

#[test]
fn mutex_handed_to_a_cancelled_victim_passes_on() {
    for _ in 0..3 {
        let m = Arc::new(Mutex::new(0u32));
        let (h, v, b) = (Arc::clone(&m), Arc::clone(&m), Arc::clone(&m));
        woken_then_cancelled(
            "Mutex::lock",
            move |wait_go| {
                let mut guard = h.lock();
                wait_go();
                *guard += 1;
                drop(guard);
            },
            move || *v.lock() += 100,
            |on| matches!(on, ParkedOn::Mutex(_)),
            move || *b.lock() += 10,
        );
        assert!(!m.is_locked());
        assert_eq!(*m.lock(), 11, "the victim never ran its critical section");
    }
}

#[test]
fn semaphore_permit_granted_to_a_cancelled_victim_passes_on() {
    let s = Arc::new(Semaphore::new(0));
    let (h, v, b) = (Arc::clone(&s), Arc::clone(&s), Arc::clone(&s));
    woken_then_cancelled(
        "Semaphore::acquire",
        move |wait_go| {
            wait_go();
            h.add_permits(1);
        },
        move || drop(v.acquire()),
        |on| matches!(on, ParkedOn::Semaphore(_)),
        move || drop(b.acquire()),
    );
    assert_eq!(s.available_permits(), 1, "no permit lost or made");
}

#[test]
fn semaphore_many_permits_granted_to_a_cancelled_victim_pass_on() {
    let s = Arc::new(Semaphore::new(0));
    let (h, v, b) = (Arc::clone(&s), Arc::clone(&s), Arc::clone(&s));
    woken_then_cancelled(
        "Semaphore::acquire_many",
        move |wait_go| {
            wait_go();
            h.add_permits(3);
        },
        move || drop(v.acquire_many(3)),
        |on| matches!(on, ParkedOn::Semaphore(_)),
        move || drop(b.acquire_many(2)),
    );
    assert_eq!(s.available_permits(), 3, "no permit lost or made");
}

#[test]
fn rwlock_read_phase_counting_in_a_cancelled_reader_passes_on() {
    let l = Arc::new(RwLock::new(0u32));
    let (h, v, b) = (Arc::clone(&l), Arc::clone(&l), Arc::clone(&l));
    woken_then_cancelled(
        "RwLock::read (handed a read lock)",
        move |wait_go| {
            let guard = h.write();
            wait_go();
            drop(guard);
        },
        move || drop(v.read()),
        |on| matches!(on, ParkedOn::RwLockRead(_)),
        move || *b.write() += 1,
    );
    assert!(!l.is_locked(), "a read lock handed to the cancelled reader stayed counted");
    assert_eq!(*l.read(), 1);
}

#[test]
fn rwlock_write_handed_to_a_cancelled_writer_passes_on() {
    let l = Arc::new(RwLock::new(0u32));
    let (h, v, b) = (Arc::clone(&l), Arc::clone(&l), Arc::clone(&l));
    woken_then_cancelled(
        "RwLock::write (handed the write lock)",
        move |wait_go| {
            let guard = h.write();
            wait_go();
            drop(guard);
        },
        move || *v.write() += 100,
        |on| matches!(on, ParkedOn::RwLockWrite(_)),
        move || *b.write() += 1,
    );
    assert!(!l.is_locked());
    assert_eq!(*l.read(), 1);
}

/// The victim holds the upgradable read and waits in `upgrade` for the
/// holder's read lock to go; a reader thread queues behind UPGRADING. The
/// holder's unlock wakes the upgrader, which is cancelled before it runs:
/// UPGRADING must go, the reader get in, and the lock end free.
#[test]
fn rwlock_upgrade_woken_then_cancelled_lets_readers_in() {
    let l = Arc::new(RwLock::new(0u32));
    let (h, v, b) = (Arc::clone(&l), Arc::clone(&l), Arc::clone(&l));
    woken_then_cancelled(
        "RwLockUpgradableReadGuard::upgrade",
        move |wait_go| {
            let guard = h.read();
            wait_go();
            drop(guard);
        },
        move || {
            let upgradable = v.upgradable_read();
            *RwLockUpgradableReadGuard::upgrade(upgradable) += 100;
        },
        |on| matches!(on, ParkedOn::RwLockWrite(_)),
        move || drop(b.read()),
    );
    assert!(!l.is_locked(), "the cancelled upgrader's read lock stayed counted");
    assert!(l.try_upgradable_read().is_some(), "the upgradable mutex was left locked");
    *l.write() += 1;
    assert_eq!(*l.read(), 1);
}

/// `notify_one` chooses the victim (the oldest waiter); it is cancelled
/// before it runs: the notification must reach the next waiter, a thread.
#[test]
fn condvar_notify_one_that_chose_a_cancelled_waiter_passes_on() {
    let state = Arc::new((Mutex::new(()), Condvar::new()));
    let (h, v, b) = (Arc::clone(&state), Arc::clone(&state), Arc::clone(&state));
    woken_then_cancelled(
        "Condvar::wait (notify_one)",
        move |wait_go| {
            wait_go();
            assert!(h.1.notify_one(), "the victim waits");
        },
        move || {
            let guard = v.0.lock();
            drop(v.1.wait(guard));
        },
        |on| matches!(on, ParkedOn::Condvar(_)),
        move || {
            let guard = b.0.lock();
            let (_guard, result) = b.1.wait_timeout(guard, Duration::from_secs(15));
            assert!(!result.timed_out(), "the notify was lost with the cancelled waiter");
        },
    );
    let other = Mutex::new(());
    let (_guard, result) = state.1.wait_timeout(other.lock(), Duration::from_millis(5));
    assert!(result.timed_out(), "nobody notifies; the condvar forgot the old mutex");
}

/// `notify_all` with the mutex free wakes the victim and requeues the
/// thread onto the mutex; the victim is cancelled before it runs.
#[test]
fn condvar_notify_all_that_woke_a_cancelled_waiter_passes_on() {
    let state = Arc::new((Mutex::new(false), Condvar::new()));
    let (h, v, b) = (Arc::clone(&state), Arc::clone(&state), Arc::clone(&state));
    woken_then_cancelled(
        "Condvar::wait_while (notify_all)",
        move |wait_go| {
            wait_go();
            *h.0.lock() = true;
            assert_eq!(h.1.notify_all(), 2, "the victim and the thread wait");
        },
        move || drop(v.1.wait_while(v.0.lock(), |open| !*open)),
        |on| matches!(on, ParkedOn::Condvar(_)),
        move || {
            let (_guard, result) = b.1.wait_timeout_while(b.0.lock(), Duration::from_secs(15), |open| !*open);
            assert!(!result.timed_out(), "the thread requeued behind the cancelled waiter was stranded");
        },
    );
    assert!(!state.0.is_locked());
}

/// The barrier opens (the holder is its leader) and the released victim is
/// cancelled before it runs: its arrival counted and must not be withdrawn
/// from the next generation.
#[test]
fn barrier_opened_for_a_cancelled_waiter_keeps_the_next_generation_whole() {
    let barrier = Arc::new(Barrier::new(2));
    let (h, v) = (Arc::clone(&barrier), Arc::clone(&barrier));
    woken_then_cancelled(
        "Barrier::wait (opened)",
        move |wait_go| {
            wait_go();
            assert!(h.wait().is_leader(), "the holder arrives last");
        },
        move || {
            let _ = v.wait();
        },
        |on| matches!(on, ParkedOn::Barrier(_)),
        || {},
    );
    // One arrival alone does not open it; two do, with one leader.
    assert!(barrier.wait_timeout(Duration::from_millis(20)).is_none(), "one arrival opened the barrier");
    let other = {
        let barrier = Arc::clone(&barrier);
        thread::spawn(move || barrier.wait_timeout(Duration::from_secs(10)).map(|r| r.is_leader()))
    };
    let me = barrier.wait_timeout(Duration::from_secs(10)).map(|r| r.is_leader());
    let other = other.join().unwrap();
    assert!(me.is_some() && other.is_some(), "a full generation did not open the barrier");
    assert!(me != other, "exactly one leader");
}

/// The victim joins a `spawn_blocking` job; the job finishes (its result
/// is delivered and the victim woken) while the only worker is held, and
/// the victim is cancelled before it runs. It joins as cancelled and the
/// job's result is dropped exactly once.
#[test]
fn join_result_delivered_to_a_cancelled_joiner_is_dropped_once() {
    within_limit("join of a finished blocking job", || {
        let rt = runtime(1);
        let drops = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let job_done = Arc::new(AtomicBool::new(false));
        let victim = {
            let (drops, job_done) = (Arc::clone(&drops), Arc::clone(&job_done));
            rt.spawn(move || {
                let job = weft::spawn_blocking(move || {
                    release_rx.recv().expect("released");
                    job_done.store(true, Ordering::SeqCst);
                    DropCount(drops)
                });
                let _ = job.join();
            })
        };
        wait_parked(&rt, victim.id(), "join", |on| matches!(on, ParkedOn::Join(_)));
        let victim = Arc::new(std::sync::Mutex::new(Some(victim)));
        let holder = {
            let (victim, job_done) = (Arc::clone(&victim), Arc::clone(&job_done));
            rt.spawn(move || {
                release_tx.send(()).unwrap();
                // Hold the worker (no yield) until the job has completed
                // and woken the victim.
                while !job_done.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                thread::sleep(Duration::from_millis(50));
                let victim = victim.lock().unwrap().take().unwrap();
                victim.cancel();
                victim
            })
        };
        let victim = holder.join().expect("the holder");
        assert_kind(victim, JoinErrorKind::Cancelled, "join (result delivered)");
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the job's result is dropped exactly once");
        drop(rt);
    });
}

// ---------------------------------------------------------------------------
// Cancelled while parked: the cells the other files leave out.
// ---------------------------------------------------------------------------

/// Spawns `victim` on `rt` holding a `DropCount`, waits until it is parked
/// on something `on` accepts.
fn park<T: Send + 'static>(
    rt: &Runtime,
    drops: &Arc<AtomicUsize>,
    what: &str,
    on: impl Fn(&ParkedOn) -> bool,
    victim: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let count = DropCount(Arc::clone(drops));
    let handle = rt.spawn(move || {
        let _count = count;
        victim()
    });
    wait_parked(rt, handle.id(), what, on);
    handle
}

#[test]
fn cancel_timed_lock_waits() {
    within_limit("timed lock waits", || {
        let rt = runtime(2);
        let drops = Arc::new(AtomicUsize::new(0));
        let hour = Duration::from_secs(3600);
        let mutex = Arc::new(Mutex::new(0u32));
        let rw_for_readers = Arc::new(RwLock::new(0u32));
        let rw_for_writers = Arc::new(RwLock::new(0u32));
        let mutex_guard = mutex.lock();
        let reader_blocker = rw_for_readers.write();
        let writer_blocker = rw_for_writers.read();
        let mut victims: Vec<(&str, JoinHandle<()>)> = Vec::new();
        for i in 0..3 {
            let m = Arc::clone(&mutex);
            victims.push((
                "Mutex::try_lock_for",
                park(
                    &rt,
                    &drops,
                    "try_lock_for",
                    |on| matches!(on, ParkedOn::Mutex(_)),
                    move || {
                        let _ = m.try_lock_for(hour).map(|mut g| *g += 100 + i);
                    },
                ),
            ));
            let l = Arc::clone(&rw_for_readers);
            victims.push((
                "RwLock::try_read_for",
                park(
                    &rt,
                    &drops,
                    "try_read_for",
                    |on| matches!(on, ParkedOn::RwLockRead(_)),
                    move || {
                        let _ = l.try_read_for(hour);
                    },
                ),
            ));
            let l = Arc::clone(&rw_for_writers);
            victims.push((
                "RwLock::try_write_for",
                park(
                    &rt,
                    &drops,
                    "try_write_for",
                    |on| matches!(on, ParkedOn::RwLockWrite(_)),
                    move || {
                        let _ = l.try_write_for(hour).map(|mut g| *g += 100);
                    },
                ),
            ));
        }
        let n = victims.len();
        for (_, v) in &victims {
            v.cancel();
        }
        for (what, v) in victims {
            assert_kind(v, JoinErrorKind::Cancelled, what);
        }
        assert_eq!(drops.load(Ordering::SeqCst), n);
        drop((mutex_guard, reader_blocker, writer_blocker));
        // Each lock works for threads and coroutines, and ends free.
        let (m, r, w) = (Arc::clone(&mutex), Arc::clone(&rw_for_readers), Arc::clone(&rw_for_writers));
        rt.block_on(move || {
            *m.lock() += 1;
            *r.write() += 1;
            *w.write() += 1;
            let _ = (r.read(), w.read());
        });
        assert!(!mutex.is_locked() && !rw_for_readers.is_locked() && !rw_for_writers.is_locked());
        assert_eq!((*mutex.lock(), *rw_for_readers.read(), *rw_for_writers.read()), (1, 1, 1));
        drop(rt);
    });
}

/// The head of the semaphore's queue waits for 3 permits and has 2 set
/// aside; a thread behind it waits for 1. Cancelling the head must give
/// the 2 back: the thread gets 1, 1 stays free (and nothing is made).
#[test]
fn cancel_the_head_of_a_semaphore_queue_with_permits_set_aside() {
    for timed in [false, true] {
        within_limit("acquire_many head", move || {
            let rt = runtime(1);
            let drops = Arc::new(AtomicUsize::new(0));
            let s = Arc::new(Semaphore::new(0));
            let v = Arc::clone(&s);
            let victim = park(
                &rt,
                &drops,
                "acquire_many",
                |on| matches!(on, ParkedOn::Semaphore(_)),
                move || {
                    if timed {
                        drop(v.acquire_many_timeout(3, Duration::from_secs(3600)));
                    } else {
                        drop(v.acquire_many(3));
                    }
                },
            );
            let (done_tx, done_rx) = mpsc::channel();
            {
                let s = Arc::clone(&s);
                thread::spawn(move || {
                    let permit = s.acquire();
                    done_tx.send(()).unwrap();
                    permit.forget();
                });
            }
            thread::sleep(Duration::from_millis(50)); // queued behind the victim
            s.add_permits(2); // set aside for the head
            thread::sleep(Duration::from_millis(20));
            assert!(done_rx.try_recv().is_err(), "FIFO: the thread overtook the head");
            victim.cancel();
            assert_kind(victim, JoinErrorKind::Cancelled, "acquire_many (head)");
            assert!(
                done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
                "timed {timed}: the permits set aside for the cancelled head were not given back"
            );
            assert_eq!(s.available_permits(), 1, "timed {timed}: 2 added, 1 taken for good");
            drop(rt);
        });
    }
}

#[test]
fn cancel_timed_condvar_barrier_waitgroup_semaphore_waits() {
    within_limit("timed waits", || {
        let rt = runtime(2);
        let drops = Arc::new(AtomicUsize::new(0));
        let hour = Duration::from_secs(3600);

        let cv = Arc::new((Mutex::new(false), Condvar::new()));
        let barrier = Arc::new(Barrier::new(3));
        let group = WaitGroup::new();
        let member = group.clone();
        let sem = Arc::new(Semaphore::new(0));

        let c = Arc::clone(&cv);
        let condvar_victim = park(
            &rt,
            &drops,
            "wait_timeout",
            |on| matches!(on, ParkedOn::Condvar(_)),
            move || {
                let mine = Mutex::new(()); // the condvar must forget this one
                let guard = mine.lock();
                let _ = c.1.wait_timeout(guard, hour);
            },
        );
        let b = Arc::clone(&barrier);
        let barrier_victim = park(
            &rt,
            &drops,
            "Barrier::wait_timeout",
            |on| matches!(on, ParkedOn::Barrier(_)),
            move || {
                let _ = b.wait_timeout(hour);
            },
        );
        let g = group.clone();
        let group_victim = park(
            &rt,
            &drops,
            "WaitGroup::wait_timeout",
            |on| matches!(on, ParkedOn::WaitGroup(_)),
            move || {
                let _ = g.wait_timeout(hour);
            },
        );
        let s = Arc::clone(&sem);
        let sem_victim = park(
            &rt,
            &drops,
            "acquire_timeout",
            |on| matches!(on, ParkedOn::Semaphore(_)),
            move || {
                let _ = s.acquire_timeout(hour).map(|p| p.forget());
            },
        );
        for v in [&condvar_victim, &barrier_victim, &group_victim, &sem_victim] {
            v.cancel();
        }
        assert_kind(condvar_victim, JoinErrorKind::Cancelled, "Condvar::wait_timeout");
        assert_kind(barrier_victim, JoinErrorKind::Cancelled, "Barrier::wait_timeout");
        assert_kind(group_victim, JoinErrorKind::Cancelled, "WaitGroup::wait_timeout");
        assert_kind(sem_victim, JoinErrorKind::Cancelled, "Semaphore::acquire_timeout");
        assert_eq!(drops.load(Ordering::SeqCst), 4);

        // Condvar: forgot the victim's mutex.
        let (_guard, result) = cv.1.wait_timeout(cv.0.lock(), Duration::from_millis(5));
        assert!(result.timed_out());
        // Barrier of 3: the arrival was withdrawn; two arrivals do not open it.
        let b = Arc::clone(&barrier);
        let other = thread::spawn(move || b.wait_timeout(Duration::from_millis(100)).is_some());
        let mine = barrier.wait_timeout(Duration::from_millis(100)).is_some();
        assert!(!mine && !other.join().unwrap(), "the cancelled arrival was not withdrawn: two opened a barrier of 3");
        // Semaphore: a permit added goes to a live acquirer.
        sem.add_permits(1);
        assert!(sem.acquire_timeout(Duration::from_secs(5)).is_some(), "the permit went to the cancelled waiter");
        // WaitGroup: still waits for `member`.
        assert!(!group.clone().wait_timeout(Duration::from_millis(5)));
        drop(member);
        assert!(group.wait_timeout(Duration::from_secs(5)));
        drop(rt);
    });
}

#[test]
fn cancel_join_timeout_and_blocking_join() {
    within_limit("timed joins", || {
        let rt = runtime(2);
        let drops = Arc::new(AtomicUsize::new(0));
        let result_drops = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (release_tx, release_rx) = mpsc::channel::<()>();

        let (st, rd) = (Arc::clone(&stop), Arc::clone(&result_drops));
        let timed = park(
            &rt,
            &drops,
            "join_timeout",
            |on| matches!(on, ParkedOn::Join(_)),
            move || {
                let mut target = weft::spawn(move || {
                    while !st.load(Ordering::SeqCst) {
                        weft::sleep(Duration::from_millis(1));
                    }
                    DropCount(rd)
                });
                let _ = target.join_timeout(Duration::from_secs(3600));
            },
        );
        let rd = Arc::clone(&result_drops);
        let blocking = park(
            &rt,
            &drops,
            "join of spawn_blocking",
            |on| matches!(on, ParkedOn::Join(_)),
            move || {
                let job = weft::spawn_blocking(move || {
                    let _ = release_rx.recv();
                    DropCount(rd)
                });
                let _ = job.join();
            },
        );
        timed.cancel();
        blocking.cancel();
        assert_kind(timed, JoinErrorKind::Cancelled, "join_timeout");
        assert_kind(blocking, JoinErrorKind::Cancelled, "join of a blocking job");
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        // The targets run on, detached; their results are dropped once.
        stop.store(true, Ordering::SeqCst);
        release_tx.send(()).unwrap();
        wait_until("both detached results to drop", || result_drops.load(Ordering::SeqCst) == 2);
        thread::sleep(Duration::from_millis(20));
        assert_eq!(result_drops.load(Ordering::SeqCst), 2, "each result dropped exactly once");
        drop(rt);
    });
}

/// Selects over several channels (receive and send cases), with and
/// without a timeout, cancelled while parked: every entry leaves every
/// channel (a later send or receive is not taken by a dead select), and
/// the offered values are dropped exactly once.
#[test]
fn cancel_selects_with_several_cases_and_a_timeout() {
    within_limit("select", || {
        let rt = runtime(2);
        let drops = Arc::new(AtomicUsize::new(0));
        let values = Arc::new(AtomicUsize::new(0));
        let (a_tx, a_rx) = bounded::<u32>(0);
        let (b_tx, b_rx) = unbounded::<u32>();
        let (c_tx, c_rx) = bounded::<DropCount>(0);
        let mut victims = Vec::new();
        for timed in [false, true, false, true] {
            let (a_rx, b_rx, c_tx, values) = (a_rx.clone(), b_rx.clone(), c_tx.clone(), Arc::clone(&values));
            victims.push(park(
                &rt,
                &drops,
                "select",
                |on| matches!(on, ParkedOn::Select(3)),
                move || {
                    let mut select = Select::new();
                    select.recv(&a_rx);
                    select.recv(&b_rx);
                    select.send(&c_tx, DropCount(values));
                    if timed {
                        let _ = select.select_timeout(Duration::from_secs(3600)).map(|op| op.index());
                    } else {
                        let _ = select.select().index();
                    }
                },
            ));
        }
        for v in &victims {
            v.cancel();
        }
        for v in victims {
            assert_kind(v, JoinErrorKind::Cancelled, "Select");
        }
        assert_eq!(drops.load(Ordering::SeqCst), 4);
        assert_eq!(values.load(Ordering::SeqCst), 4, "each offered value dropped once with its select");
        assert!(a_tx.try_send(1).unwrap_err().is_full(), "a dead select still receives on a rendezvous channel");
        assert!(c_rx.try_recv().is_err(), "a dead select still offers a value");
        b_tx.send(2).unwrap();
        assert_eq!(b_rx.try_recv(), Ok(2));
        drop(rt);
    });
}

fn unique_path(tag: &str) -> std::path::PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "weft-review-{}-{tag}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ))
}

/// UDP recv_from (plain and with a read timeout), Unix read, write and
/// accept, a TCP read with a read timeout: cancelled while parked, each
/// socket is closed (its address can be bound again, its peer sees EOF,
/// a connect is refused).
#[test]
fn cancel_udp_unix_and_timed_socket_waits() {
    within_limit("sockets", || {
        let rt = runtime(2);
        let drops = Arc::new(AtomicUsize::new(0));
        let readable = |on: &ParkedOn| matches!(on, ParkedOn::Readable(_));
        let writable = |on: &ParkedOn| matches!(on, ParkedOn::Writable(_));

        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_addr = udp.local_addr().unwrap();
        let udp_victim = park(&rt, &drops, "recv_from", readable, move || {
            let mut buf = [0; 16];
            let _ = udp.recv_from(&mut buf);
        });
        let udp_timed = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp_timed.set_read_timeout(Some(Duration::from_secs(3600))).unwrap();
        let udp_timed_addr = udp_timed.local_addr().unwrap();
        let udp_timed_victim = park(&rt, &drops, "recv_from (timed)", readable, move || {
            let mut buf = [0; 16];
            let _ = udp_timed.recv_from(&mut buf);
        });

        let (mut read_peer, reader) = UnixStream::pair().unwrap();
        let unix_read_victim = park(&rt, &drops, "UnixStream::read", readable, move || {
            let mut reader = reader;
            let mut buf = [0; 16];
            let _ = reader.read(&mut buf);
        });
        let (mut write_peer, writer) = UnixStream::pair().unwrap();
        let unix_write_victim = park(&rt, &drops, "UnixStream::write", writable, move || {
            let mut writer = writer;
            let chunk = vec![7u8; 1 << 16];
            loop {
                if writer.write(&chunk).is_err() {
                    return;
                }
            }
        });
        let path = unique_path("accept");
        let listener = UnixListener::bind(&path).unwrap();
        let unix_accept_victim = park(&rt, &drops, "UnixListener::accept", readable, move || {
            let _ = listener.accept();
        });

        let tcp_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_client = TcpStream::connect(tcp_listener.local_addr().unwrap()).unwrap();
        let (mut tcp_peer, _) = tcp_listener.accept().unwrap();
        tcp_client.set_read_timeout(Some(Duration::from_secs(3600))).unwrap();
        let tcp_timed_victim = park(&rt, &drops, "TcpStream::read (timed)", readable, move || {
            let mut client = tcp_client;
            let mut buf = [0; 16];
            let _ = client.read(&mut buf);
        });
        let tcp_accept = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_accept_addr = tcp_accept.local_addr().unwrap();
        tcp_accept.set_accept_timeout(Some(Duration::from_secs(3600))).unwrap();
        let tcp_accept_victim = park(&rt, &drops, "TcpListener::accept (timed)", readable, move || {
            let _ = tcp_accept.accept();
        });

        let victims = [
            ("UdpSocket::recv_from", udp_victim),
            ("UdpSocket::recv_from (timed)", udp_timed_victim),
            ("UnixStream::read", unix_read_victim),
            ("UnixStream::write", unix_write_victim),
            ("UnixListener::accept", unix_accept_victim),
            ("TcpStream::read (timed)", tcp_timed_victim),
            ("TcpListener::accept (timed)", tcp_accept_victim),
        ];
        for (_, v) in &victims {
            v.cancel();
        }
        let n = victims.len();
        for (what, v) in victims {
            assert_kind(v, JoinErrorKind::Cancelled, what);
        }
        assert_eq!(drops.load(Ordering::SeqCst), n);

        std::net::UdpSocket::bind(udp_addr).expect("the cancelled recv_from's socket is closed");
        std::net::UdpSocket::bind(udp_timed_addr).expect("the cancelled timed recv_from's socket is closed");
        read_peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(read_peer.read(&mut [0; 4]).unwrap(), 0, "the cancelled reader's end is closed");
        write_peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = Vec::new();
        write_peer.read_to_end(&mut sink).expect("the cancelled writer's end is closed (EOF after its data)");
        let refused = std::os::unix::net::UnixStream::connect(&path).expect_err("the cancelled acceptor's listener");
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
        let _ = std::fs::remove_file(&path);
        tcp_peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(tcp_peer.read(&mut [0; 4]).unwrap(), 0, "the cancelled timed reader's socket is closed");
        std::net::TcpListener::bind(tcp_accept_addr).expect("the cancelled acceptor's listener is closed");
        drop(rt);
    });
}

// ---------------------------------------------------------------------------
// Shutdown with a coroutine parked in each wait.
// ---------------------------------------------------------------------------

/// Drops a runtime with coroutines parked in every kind of wait (timed
/// and untimed); the drop finishes, every victim's destructors run once,
/// each joins with `Shutdown`, and every primitive works afterwards.
#[test]
fn shutdown_with_a_coroutine_parked_in_every_wait() {
    within_limit("shutdown matrix", || {
        let rt = runtime(2);
        let drops = Arc::new(AtomicUsize::new(0));
        let hour = Duration::from_secs(3600);
        let mutex = Arc::new(Mutex::new(0u32));
        let rw_r = Arc::new(RwLock::new(0u32));
        let rw_w = Arc::new(RwLock::new(0u32));
        let rw_up = Arc::new(RwLock::new(0u32));
        let cv = Arc::new((Mutex::new(()), Condvar::new()));
        let sem = Arc::new(Semaphore::new(0));
        let barrier = Arc::new(Barrier::new(3));
        let group = WaitGroup::new();
        let member = group.clone();
        let (tx, rx) = bounded::<DropCount>(0);
        let (tx2, _rx2) = bounded::<DropCount>(0);
        let (full_tx, full_rx) = bounded::<DropCount>(1);
        let values = Arc::new(AtomicUsize::new(0));
        full_tx.send(DropCount(Arc::clone(&values))).unwrap();
        let (release_tx, release_rx) = mpsc::channel::<()>();

        let mutex_guard = mutex.lock();
        let rw_r_guard = rw_r.write();
        let rw_w_guard = rw_w.read();
        let rw_up_guard = rw_up.read();

        let mut victims: Vec<(&str, JoinHandle<()>)> = Vec::new();
        macro_rules! victim {
            ($what:expr, $on:pat, $body:expr) => {
                victims.push(($what, park(&rt, &drops, $what, |on| matches!(on, $on), $body)));
            };
        }
        let m = Arc::clone(&mutex);
        victim!("Mutex::lock", ParkedOn::Mutex(_), move || *m.lock() += 100);
        let m = Arc::clone(&mutex);
        victim!("Mutex::try_lock_for", ParkedOn::Mutex(_), move || {
            let _ = m.try_lock_for(hour).map(|mut g| *g += 100);
        });
        let l = Arc::clone(&rw_r);
        victim!("RwLock::read", ParkedOn::RwLockRead(_), move || drop(l.read()));
        let l = Arc::clone(&rw_r);
        victim!("RwLock::try_read_for", ParkedOn::RwLockRead(_), move || drop(l.try_read_for(hour)));
        let l = Arc::clone(&rw_w);
        victim!("RwLock::write", ParkedOn::RwLockWrite(_), move || *l.write() += 100);
        let l = Arc::clone(&rw_w);
        victim!("RwLock::try_write_for", ParkedOn::RwLockWrite(_), move || drop(l.try_write_for(hour)));
        let l = Arc::clone(&rw_up);
        victim!("RwLockUpgradableReadGuard::upgrade", ParkedOn::RwLockWrite(_), move || {
            *RwLockUpgradableReadGuard::upgrade(l.upgradable_read()) += 100
        });
        let c = Arc::clone(&cv);
        victim!("Condvar::wait", ParkedOn::Condvar(_), move || drop(c.1.wait(c.0.lock())));
        let c = Arc::clone(&cv);
        victim!("Condvar::wait_timeout", ParkedOn::Condvar(_), move || drop(c.1.wait_timeout(c.0.lock(), hour)));
        let s = Arc::clone(&sem);
        victim!("Semaphore::acquire_many", ParkedOn::Semaphore(_), move || s.acquire_many(2).forget());
        let s = Arc::clone(&sem);
        victim!("Semaphore::acquire_timeout", ParkedOn::Semaphore(_), move || {
            let _ = s.acquire_timeout(hour).map(|p| p.forget());
        });
        let b = Arc::clone(&barrier);
        victim!("Barrier::wait", ParkedOn::Barrier(_), move || {
            let _ = b.wait();
        });
        let b = Arc::clone(&barrier);
        victim!("Barrier::wait_timeout", ParkedOn::Barrier(_), move || {
            let _ = b.wait_timeout(hour);
        });
        let g = group.clone();
        victim!("WaitGroup::wait", ParkedOn::WaitGroup(_), move || g.wait());
        let g = group.clone();
        victim!("WaitGroup::wait_timeout", ParkedOn::WaitGroup(_), move || {
            let _ = g.wait_timeout(hour);
        });
        let r = rx.clone();
        victim!("Receiver::recv", ParkedOn::ChannelRecv(_), move || drop(r.recv()));
        let r = rx.clone();
        victim!("Receiver::recv_timeout", ParkedOn::ChannelRecv(_), move || drop(r.recv_timeout(hour)));
        let (f, v) = (full_tx.clone(), Arc::clone(&values));
        victim!("Sender::send (full)", ParkedOn::ChannelSend(_), move || drop(f.send(DropCount(v))));
        let (t, v) = (tx2.clone(), Arc::clone(&values));
        victim!("Sender::send_timeout (rendezvous)", ParkedOn::ChannelSend(_), move || {
            drop(t.send_timeout(DropCount(v), hour))
        });
        let (r, t, v) = (rx.clone(), tx2.clone(), Arc::clone(&values));
        victim!("Select::select_timeout", ParkedOn::Select(2), move || {
            let mut select = Select::new();
            select.recv(&r);
            select.send(&t, DropCount(v));
            let _ = select.select_timeout(hour).map(|op| op.index());
        });
        victim!("sleep", ParkedOn::Sleep, move || weft::sleep(hour));
        victim!("join_timeout", ParkedOn::Join(_), move || {
            let mut target = weft::spawn(move || weft::sleep(Duration::from_secs(3600)));
            let _ = target.join_timeout(Duration::from_secs(3600));
        });
        victim!("join of spawn_blocking", ParkedOn::Join(_), move || {
            let _ = weft::spawn_blocking(move || {
                let _ = release_rx.recv();
            })
            .join();
        });
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_addr = udp.local_addr().unwrap();
        udp.set_read_timeout(Some(hour)).unwrap();
        victim!("UdpSocket::recv_from (timed)", ParkedOn::Readable(_), move || drop(udp.recv_from(&mut [0; 8])));
        let (mut peer, mine) = UnixStream::pair().unwrap();
        victim!("UnixStream::read", ParkedOn::Readable(_), move || {
            let mut mine = mine;
            drop(mine.read(&mut [0; 8]))
        });

        let n = victims.len();
        let dropper = thread::spawn(move || drop(rt));
        let started = Instant::now();
        while !dropper.is_finished() {
            assert!(started.elapsed() < Duration::from_secs(10), "the runtime's drop did not finish");
            thread::sleep(Duration::from_millis(2));
        }
        dropper.join().expect("dropping the runtime");
        assert_eq!(drops.load(Ordering::SeqCst), n, "each victim's destructors ran exactly once");
        for (what, v) in victims {
            assert_kind(v, JoinErrorKind::Shutdown, what);
        }

        // Every primitive works afterwards, from a thread.
        drop(mutex_guard);
        assert_eq!(*mutex.lock(), 0);
        drop(rw_r_guard);
        drop(rw_w_guard);
        drop(rw_up_guard);
        for l in [&rw_r, &rw_w, &rw_up] {
            assert!(!l.is_locked(), "an RwLock was left held by an unwound waiter");
            *l.write() += 1;
            assert!(l.try_upgradable_read().is_some());
        }
        let other = Mutex::new(());
        let (_g, result) = cv.1.wait_timeout(other.lock(), Duration::from_millis(5));
        assert!(result.timed_out());
        sem.add_permits(1);
        assert_eq!(sem.available_permits(), 1, "no permit went to an unwound waiter");
        let b = Arc::clone(&barrier);
        let b2 = Arc::clone(&barrier);
        let t1 = thread::spawn(move || b.wait_timeout(Duration::from_secs(5)).map(|r| r.is_leader()));
        let t2 = thread::spawn(move || b2.wait_timeout(Duration::from_secs(5)).map(|r| r.is_leader()));
        let me = barrier.wait_timeout(Duration::from_secs(5)).map(|r| r.is_leader());
        let (r1, r2) = (t1.join().unwrap(), t2.join().unwrap());
        assert!(me.is_some() && r1.is_some() && r2.is_some(), "the unwound arrivals were not withdrawn");
        assert_eq!([me, r1, r2].iter().filter(|r| **r == Some(true)).count(), 1);
        assert!(!group.clone().wait_timeout(Duration::from_millis(5)));
        drop(member);
        assert!(group.wait_timeout(Duration::from_secs(5)));
        // The full channel holds its one value; the offered ones were dropped.
        assert_eq!(values.load(Ordering::SeqCst), 3, "the three offered values were dropped once each");
        assert!(full_rx.try_recv().is_ok());
        assert!(tx.try_send(DropCount(Arc::clone(&values))).unwrap_err().is_full(), "an unwound receiver remains");
        assert_eq!(values.load(Ordering::SeqCst), 5);
        drop(release_tx);
        std::net::UdpSocket::bind(udp_addr).expect("the unwound recv_from's socket is closed");
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(peer.read(&mut [0; 4]).unwrap(), 0, "the unwound reader's end is closed");
    });
}

/// The Mutex's non-fair wake: the victim parks for microseconds only, so
/// the unlock wakes it to compete (it owns WOKEN) instead of handing the
/// lock over; it is cancelled before it runs. WOKEN must be given up, or
/// no later unlock wakes anyone.
#[test]
fn mutex_woken_bit_of_a_cancelled_victim_is_given_up() {
    within_limit("Mutex WOKEN", || {
        for _ in 0..20 {
            let rt = runtime(1);
            let m = Arc::new(Mutex::new(0u32));
            let h = Arc::clone(&m);
            let holder = rt.spawn(move || {
                let guard = h.lock();
                let started = Arc::new(AtomicBool::new(false));
                let victim = {
                    let (m, started) = (Arc::clone(&h), Arc::clone(&started));
                    weft::spawn(move || {
                        started.store(true, Ordering::SeqCst);
                        *m.lock() += 100;
                    })
                };
                while !started.load(Ordering::SeqCst) {
                    weft::yield_now();
                }
                // The victim spins without yielding and then parks: when
                // this coroutine runs again, it is parked.
                weft::yield_now();
                drop(guard);
                victim.cancel();
                victim
            });
            let victim = holder.join().expect("the holder");
            assert_kind(victim, JoinErrorKind::Cancelled, "Mutex::lock (woken)");
            assert!(!m.is_locked());
            // A later waiter is still woken by an unlock.
            let guard = m.lock();
            let (done_tx, done_rx) = mpsc::channel();
            let t = Arc::clone(&m);
            thread::spawn(move || {
                *t.lock() += 1;
                done_tx.send(()).unwrap();
            });
            thread::sleep(Duration::from_millis(20));
            drop(guard);
            assert!(
                done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
                "a waiter parked after the cancelled woken victim is never woken (WOKEN left set)"
            );
            assert_eq!(*m.lock(), 1);
            drop(rt);
        }
    });
}
