//! Regressions found in a review of the scheduler (worker loop, sleeping and waking; 2026-12-06).

use std::sync::mpsc;
use std::time::{Duration, Instant};
use weft::CoroutineState;
use weft::sync::channel;

/// Sends on its channel when dropped.
struct WakeOnDrop(channel::Sender<()>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Waits (up to a generous bound) until the dump shows coroutine `id`
/// parked with a timer.
fn wait_until_parked_with_timer(rt: &weft::Runtime, id: u64) {
    let started = Instant::now();
    loop {
        let dump = rt.dump();
        if let Some(entry) = dump.coroutine(id)
            && matches!(entry.state(), CoroutineState::Parked { wakes_in: Some(_), .. })
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "coroutine {id} never parked with a timer");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A worker going idle drops the stale timer entries at the top of its heap
/// (`next_deadline`) after it has published SLEEPING and re-checked its
/// queues. Such an entry can hold the last reference to a finished,
/// detached coroutine, whose result is dropped there, on the worker thread;
/// a destructor that wakes a coroutine of the same worker queues it in
/// `runnable` (a local wake, no notify). The worker must not then sleep
/// with that coroutine queued.
#[test]
fn a_wake_from_a_result_dropped_with_a_stale_timer_is_not_lost() {
    let rt = weft::Runtime::builder().workers(1).build().expect("runtime");
    let (wake_tx, wake_rx) = channel::unbounded::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let waiter = rt.spawn(move || {
        wake_rx.recv().expect("woken by the detached coroutine's result");
        let _ = done_tx.send(());
    });
    let (go_tx, go_rx) = channel::unbounded::<()>();
    let detached = rt.spawn(move || {
        // A timed wait woken early: its timer entry stays in the heap, stale.
        go_rx.recv_timeout(Duration::from_secs(3600)).expect("sent long before the timeout");
        WakeOnDrop(wake_tx)
    });
    wait_until_parked_with_timer(&rt, detached.id());
    // Detached: its result stays in its cell until the last reference (the
    // stale timer entry) goes.
    drop(detached);
    go_tx.send(()).expect("the detached coroutine waits");
    assert!(
        done_rx.recv_timeout(Duration::from_secs(30)).is_ok(),
        "the waiter was woken into its worker's run queue while the worker went to sleep, and never ran"
    );
    waiter.join().expect("the waiter");
}

/// Two coroutines pushed from outside (the injector) while one worker
/// spins idle and the other sleeps: the pushes skip the wake because a
/// worker spins, and the spinner can take only one of them. Each waits,
/// busy, for the other to start: the sleeping worker must be woken for the
/// second, or it waits until the first gives up.
#[test]
fn a_second_spawn_during_an_idle_spin_wakes_a_sleeping_worker() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let rt = weft::Runtime::builder().workers(2).build().expect("runtime");
    let bound = Duration::from_secs(3);
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(20) && rounds < 3000 {
        rounds += 1;
        // A short coroutine: its worker then goes idle and spins.
        rt.spawn(|| ()).join().expect("the short one");
        let arrived = Arc::new(AtomicUsize::new(0));
        let meet = |arrived: Arc<AtomicUsize>| {
            move || {
                arrived.fetch_add(1, Ordering::SeqCst);
                let began = Instant::now();
                while arrived.load(Ordering::SeqCst) < 2 {
                    if began.elapsed() > bound {
                        return false;
                    }
                    std::hint::spin_loop();
                }
                true
            }
        };
        let first = rt.spawn(meet(Arc::clone(&arrived)));
        let second = rt.spawn(meet(Arc::clone(&arrived)));
        let (a, b) = (first.join().expect("first"), second.join().expect("second"));
        assert!(a && b, "round {rounds}: one coroutine waited {bound:?} in the injector while a worker slept");
    }
}
