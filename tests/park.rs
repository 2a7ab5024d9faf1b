//! `weft::park`, `weft::park_timeout` and `GreenThread::unpark`, std's
//! thread-parking shapes for coroutines: the token (an unpark before the
//! park lets it through, unparks do not add up), wakes from a coroutine of
//! the same worker, of another worker and from an OS thread, timeouts,
//! cancellation and shutdown of parked coroutines, the dump's naming, and
//! the OS-thread fallback.

mod common;

use common::watched;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use weft::{CoroutineState, GreenThread, ParkedOn, Runtime};

/// A generous bound for things that should take milliseconds.
const LIVENESS: Duration = Duration::from_secs(30);

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("worker threads")
}

/// Counts its drops (a coroutine's guard: dropped once, by its unwind or
/// with its unstarted closure).
struct Count(Arc<AtomicUsize>);
impl Drop for Count {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Spawns on `rt` a coroutine that parks until `flag` is set (counting its
/// returns from `park` in `returns`), and gives back its handle once it
/// runs.
fn parked_until(
    rt: &Runtime,
    flag: &Arc<AtomicBool>,
    returns: &Arc<AtomicUsize>,
) -> (weft::JoinHandle<()>, GreenThread) {
    let (tx, rx) = mpsc::channel();
    let (flag, returns) = (Arc::clone(flag), Arc::clone(returns));
    let waiter = rt.spawn(move || {
        tx.send(weft::current()).expect("the test waits for the handle");
        while !flag.load(Ordering::Acquire) {
            weft::park();
            returns.fetch_add(1, Ordering::Relaxed);
        }
    });
    let handle = rx.recv_timeout(LIVENESS).expect("the waiter starts");
    (waiter, handle)
}

#[test]
fn an_unpark_before_the_park_lets_it_through_and_unparks_do_not_add_up() {
    watched(LIVENESS, || {
        let rt = runtime(1);
        let timed = rt
            .spawn(|| {
                let me = weft::current();
                me.unpark();
                me.unpark();
                let start = Instant::now();
                weft::park(); // the token: returns at once
                let first = start.elapsed();
                // One token, not two: this one waits for its timeout.
                let start = Instant::now();
                weft::park_timeout(Duration::from_millis(100));
                (first, start.elapsed())
            })
            .join()
            .expect("no panic");
        assert!(timed.0 < LIVENESS, "the park with a token waiting returned");
        assert!(
            timed.1 >= Duration::from_millis(100),
            "a second park consumed a token that two unparks should not have left: returned after {:?}",
            timed.1
        );
    });
}

#[test]
fn unpark_from_an_os_thread_wakes_a_parked_coroutine() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        let (flag, returns) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (waiter, handle) = parked_until(&rt, &flag, &returns);
        std::thread::sleep(Duration::from_millis(20)); // let it park
        flag.store(true, Ordering::Release);
        handle.unpark();
        waiter.join().expect("the waiter returns once unparked");
        assert!(returns.load(Ordering::Relaxed) >= 1);
    });
}

#[test]
fn unpark_from_a_coroutine_of_the_same_worker_and_of_another() {
    watched(LIVENESS, || {
        for workers in [1, 2] {
            let rt = runtime(workers);
            for round in 0..200 {
                let (flag, returns) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
                let (waiter, handle) = parked_until(&rt, &flag, &returns);
                let flag2 = Arc::clone(&flag);
                let waker = rt.spawn(move || {
                    if round % 2 == 0 {
                        weft::yield_now(); // now and then after the waiter parked
                    }
                    flag2.store(true, Ordering::Release);
                    handle.unpark();
                });
                waker.join().expect("the waker does not panic");
                waiter.join().expect("every unpark reaches its waiter");
            }
        }
    });
}

/// Ping-pong through park/unpark alone, between coroutines spread over two
/// workers and an OS thread: every turn handed over exactly once (a lost
/// wake would hang the watch; a doubled turn breaks the count).
#[test]
fn a_ring_of_parkers_hands_every_turn_on() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        const MEMBERS: usize = 4;
        const TURNS: usize = 20_000;
        let turn = Arc::new(AtomicUsize::new(0));
        let handles: Arc<std::sync::OnceLock<Vec<GreenThread>>> = Arc::new(std::sync::OnceLock::new());
        let (tx, rx) = mpsc::channel();
        let members: Vec<_> = (0..MEMBERS)
            .map(|me| {
                let (turn, handles, tx) = (Arc::clone(&turn), Arc::clone(&handles), tx.clone());
                rt.spawn(move || {
                    tx.send((me, weft::current())).expect("the test collects the handles");
                    while handles.get().is_none() {
                        weft::park(); // the test unparks everyone once they are set
                    }
                    let mut mine = 0;
                    loop {
                        let now = turn.load(Ordering::Acquire);
                        if now >= TURNS {
                            return mine;
                        }
                        if now % MEMBERS == me {
                            turn.store(now + 1, Ordering::Release);
                            mine += 1;
                            let all = handles.get().expect("set before the first turn");
                            all[(me + 1) % MEMBERS].unpark();
                            if now + 1 >= TURNS {
                                for other in all {
                                    other.unpark(); // let everyone see the end
                                }
                            }
                        } else {
                            weft::park();
                        }
                    }
                })
            })
            .collect();
        let mut collected: Vec<_> = (0..MEMBERS).map(|_| rx.recv_timeout(LIVENESS).expect("a member starts")).collect();
        collected.sort_by_key(|(me, _)| *me);
        handles.set(collected.into_iter().map(|(_, h)| h).collect()).expect("set once");
        for h in handles.get().unwrap() {
            h.unpark(); // members park until the handles are set
        }
        let counts: Vec<usize> = members.into_iter().map(|m| m.join().expect("no panic")).collect();
        assert_eq!(counts.iter().sum::<usize>(), TURNS, "every turn taken exactly once: {counts:?}");
        for count in counts {
            assert_eq!(count, TURNS / MEMBERS, "turns go round the ring in order");
        }
    });
}

#[test]
fn park_timeout_returns_without_an_unpark_and_early_with_one() {
    watched(LIVENESS, || {
        let rt = runtime(1);
        // Without an unpark: the timer ends it.
        let alone = rt
            .spawn(|| {
                let start = Instant::now();
                weft::park_timeout(Duration::from_millis(30));
                start.elapsed()
            })
            .join()
            .expect("no panic");
        assert!(alone >= Duration::from_millis(30), "a park_timeout with nothing to wake it returned early: {alone:?}");
        // With one: an hour-long park ends long before.
        let (tx, rx) = mpsc::channel();
        let waiter = rt.spawn(move || {
            tx.send(weft::current()).unwrap();
            let start = Instant::now();
            weft::park_timeout(Duration::from_secs(3600));
            start.elapsed()
        });
        let handle = rx.recv_timeout(LIVENESS).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        handle.unpark();
        assert!(waiter.join().unwrap() < LIVENESS, "the unpark ended the hour-long park");
        // The timer of that park is disarmed: the runtime has no timer left
        // keeping it (or the task) alive. A new park with a timeout still
        // waits its own time.
        let again = rt
            .spawn(|| {
                let start = Instant::now();
                weft::park_timeout(Duration::from_millis(20));
                start.elapsed()
            })
            .join()
            .unwrap();
        assert!(again >= Duration::from_millis(20));
    });
}

#[test]
fn a_parked_coroutine_shows_in_the_dump_and_cancel_unwinds_it() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        let dropped = Arc::new(AtomicBool::new(false));
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = SetOnDrop(Arc::clone(&dropped));
        let (tx, rx) = mpsc::channel();
        let never = Arc::new(AtomicBool::new(false));
        let waiter = rt.spawn(move || {
            let _guard = guard;
            tx.send(()).unwrap();
            while !never.load(Ordering::Acquire) {
                weft::park(); // nobody unparks: only the cancel ends it
            }
        });
        rx.recv_timeout(LIVENESS).unwrap();
        let id = waiter.id();
        let started = Instant::now();
        let state = loop {
            let dump = rt.dump();
            let entry = dump.coroutines().iter().find(|c| c.id() == id).map(|c| c.state());
            if let Some(state @ CoroutineState::Parked { .. }) = entry {
                break state;
            }
            assert!(started.elapsed() < LIVENESS, "the coroutine never showed as parked: {entry:?}");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(matches!(state, CoroutineState::Parked { on: ParkedOn::Park, wakes_in: None }), "{state:?}");
        assert!(state.to_string().contains("park"), "{state}");
        waiter.cancel();
        let error = waiter.join().expect_err("cancelled");
        assert!(error.is_cancelled(), "{error}");
        assert!(dropped.load(Ordering::SeqCst), "the cancel unwound the parked coroutine");
    });
}

#[test]
fn a_runtime_drop_unwinds_coroutines_parked_for_ever() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        let dropped = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        for _ in 0..16 {
            let (count, tx, never) = (Count(Arc::clone(&dropped)), tx.clone(), Arc::new(AtomicBool::new(false)));
            drop(rt.spawn(move || {
                let _count = count;
                tx.send(()).unwrap();
                while !never.load(Ordering::Acquire) {
                    weft::park(); // nobody unparks: only the drop ends it
                }
            }));
        }
        for _ in 0..16 {
            rx.recv_timeout(LIVENESS).unwrap();
        }
        drop(rt);
        assert_eq!(dropped.load(Ordering::SeqCst), 16, "every parked coroutine unwound at the drop");
    });
}

#[test]
fn on_an_os_thread_park_and_park_timeout_are_std_s() {
    watched(LIVENESS, || {
        let start = Instant::now();
        weft::park_timeout(Duration::from_millis(20));
        // std's park_timeout may return spuriously: only liveness here.
        assert!(start.elapsed() < LIVENESS);
        let main = std::thread::current();
        let flag = Arc::new(AtomicBool::new(false));
        let setter = {
            let flag = Arc::clone(&flag);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(10));
                flag.store(true, Ordering::Release);
                main.unpark();
            })
        };
        while !flag.load(Ordering::Acquire) {
            weft::park();
        }
        setter.join().unwrap();
    });
}

#[test]
fn unpark_after_the_coroutine_finished_or_its_runtime_is_gone_does_nothing() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        let handle = rt.spawn(weft::current).join().unwrap();
        handle.unpark(); // finished: a token nobody takes
        // From a coroutine of the runtime too (the home worker's thread or
        // the other one).
        let again = handle.clone();
        rt.spawn(move || again.unpark()).join().unwrap();
        drop(rt);
        handle.unpark(); // the runtime is gone
        assert!(format!("{handle:?}").contains("GreenThread"));
    });
}

/// Cancels racing the first start: coroutines that park until cancelled,
/// each cancelled from an OS thread right after its spawn, on 2 workers.
/// A cancel that finds its coroutine unstarted sends no wake (its start
/// makes the flag visible instead), one that comes during the start or its
/// first park goes through the worker's inbox: whichever it was, every
/// coroutine ends as cancelled (a lost cancel hangs the watch), and every
/// one that started unwound its guard.
#[test]
fn cancels_racing_the_first_start_are_never_lost() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        let unwound = Arc::new(AtomicUsize::new(0));
        for round in 0..2_000 {
            let guard = Count(Arc::clone(&unwound));
            let never = Arc::new(AtomicBool::new(false));
            let waiter = rt.spawn(move || {
                let _guard = guard;
                while !never.load(Ordering::Acquire) {
                    weft::park(); // only the cancel ends this
                }
            });
            if round % 3 == 1 {
                std::thread::yield_now(); // now and then a little later
            }
            waiter.cancel();
            let error = waiter.join().expect_err("only a cancel ends the coroutine");
            assert!(error.is_cancelled(), "round {round}: {error}");
        }
        // Each guard is dropped once: by the unwind if the coroutine
        // started (65 to 638 of the 2 000 in three runs on a 2-CPU host),
        // with the unstarted closure otherwise.
        assert_eq!(unwound.load(Ordering::SeqCst), 2_000);
    });
}
