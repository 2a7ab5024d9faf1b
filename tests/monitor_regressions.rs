//! Regression tests from a review of the runtime's observability: the stall
//! monitor, `Runtime::dump` and `Runtime::metrics` (2026-12-06).
//!
//! Scenarios that read what the monitor prints run in a child process (this
//! test binary re-executed, see `common::in_child_process`); every scenario
//! that could hang is bounded.

mod common;

use std::sync::Mutex;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use weft::Runtime;

/// Held by every child-process scenario (they time things on a small machine).
static SERIAL: Mutex<()> = Mutex::new(());

fn in_child_process(name: &str, limit: Duration, body: impl FnOnce()) -> Option<String> {
    common::in_child_process(&SERIAL, name, &[], limit, body)
}

/// Polls `cond` every 5 ms until it holds, failing after 20 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// `WorkerMetrics::alive` is documented as "started and not finished", but a
/// coroutine cancelled before it started is counted in `finished` (by the
/// worker that drops it) and never in `started`: every such cancel hides one
/// live coroutine from `alive` for good (and from the monitor's "N other
/// coroutines are ready" count, which is derived from it).
#[test]
fn worker_alive_is_not_lowered_by_coroutines_cancelled_before_they_started() {
    let rt = Runtime::builder().workers(1).stall_threshold(None).build().expect("a runtime");
    // Hold the only worker so that the next spawns stay unstarted.
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let blocker = rt.spawn(move || {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    started_rx.recv_timeout(Duration::from_secs(20)).expect("the blocker started");
    let cancelled: Vec<_> = (0..4).map(|_| rt.spawn(|| ())).collect();
    for handle in &cancelled {
        handle.cancel();
    }
    release_tx.send(()).unwrap();
    blocker.join().expect("the blocker returns");
    for handle in cancelled {
        assert!(handle.join().expect_err("cancelled before it started").is_cancelled());
    }
    // Two coroutines that stay parked, alive.
    let (tx, rx) = weft::sync::channel::unbounded::<()>();
    let parked: Vec<_> = (0..2)
        .map(|_| {
            let rx = rx.clone();
            rt.spawn(move || {
                let _ = rx.recv();
            })
        })
        .collect();
    wait_until("both coroutines are parked", || rt.metrics().total.parked == 2);
    let metrics = rt.metrics();
    assert_eq!(metrics.alive(), 2, "RuntimeMetrics::alive: {metrics:?}");
    assert_eq!(
        metrics.workers[0].alive, 2,
        "WorkerMetrics::alive must count the two parked coroutines (started {}, finished {}): {metrics:?}",
        metrics.workers[0].started, metrics.workers[0].finished
    );
    drop(tx);
    for handle in parked {
        handle.join().expect("it returns once the channel closes");
    }
}

/// While every worker sleeps with coroutines parked and no timer armed, the
/// monitor waits out the deadlock hint's quiet time (1 s, up to 64 s after
/// refuted hints) in a futex wait that only its deadline ends: a worker that
/// wakes meanwhile does not wake the monitor (`on_worker_running` wakes it
/// only when PARKED). A coroutine that then blocks its worker for four
/// stall thresholds and more, and lets go before the quiet time is over,
/// is never reported.
#[test]
fn a_stall_that_begins_while_the_monitor_waits_for_quiet_is_reported() {
    let stderr = in_child_process(
        "a_stall_that_begins_while_the_monitor_waits_for_quiet_is_reported",
        Duration::from_secs(30),
        || {
            let rt = Runtime::builder()
                .workers(1)
                .stall_threshold(Some(Duration::from_millis(50)))
                .build()
                .expect("a runtime");
            // A coroutine parked with no timer: the runtime is in the hint's
            // quiet state once its worker sleeps.
            let (tx, rx) = weft::sync::channel::unbounded::<()>();
            let waiter = rt.spawn(move || {
                let _ = rx.recv();
            });
            wait_until("the waiter is parked", || rt.metrics().total.parked == 1);
            thread::sleep(Duration::from_millis(100));
            // Holds its worker for 400 ms (8 thresholds), well inside the
            // monitor's 1 s quiet wait.
            let hog = weft::Builder::new()
                .name("hog-in-quiet-window".to_string())
                .spawn_on(&rt, || thread::sleep(Duration::from_millis(400)))
                .expect("a valid builder");
            hog.join().expect("the hog returns");
            // Leave the monitor time for a (late) report before shutting down.
            thread::sleep(Duration::from_millis(300));
            drop(tx);
            waiter.join().expect("the waiter returns");
        },
    );
    let Some(stderr) = stderr else { return };
    let reports: Vec<_> = stderr.lines().filter(|l| l.contains("has held worker")).collect();
    assert!(
        reports.len() == 1 && reports[0].contains("hog-in-quiet-window"),
        "a 400 ms stall (threshold 50 ms) must get one report naming the coroutine; stderr:\n{stderr}"
    );
}

/// A value whose destructor blocks its thread.
struct SlowDrop(Duration);

impl Drop for SlowDrop {
    fn drop(&mut self) {
        thread::sleep(self.0);
    }
}

/// A worker can block with no coroutine running: a coroutine cancelled
/// before it started is dropped by its worker, closure and all, and a
/// captured value whose destructor blocks holds the worker as long as a
/// blocking coroutine would. The probe answers "no coroutine runs", and
/// the monitor once stayed silent; it reports the worker once, and its end.
/// (This test first used a detached coroutine's result, which its worker
/// used to drop after the coroutine's end; a result nobody can take is now
/// dropped inside the coroutine, and the next test checks that report.)
#[test]
fn a_worker_blocked_dropping_a_detached_result_is_reported() {
    let stderr =
        in_child_process("a_worker_blocked_dropping_a_detached_result_is_reported", Duration::from_secs(30), || {
            let rt = Runtime::builder()
                .workers(1)
                .stall_threshold(Some(Duration::from_millis(50)))
                .build()
                .expect("a runtime");
            rt.block_on(|| {
                // Pinned to this worker, which this coroutine holds until
                // the cancel: the victim cannot start before it.
                let slow = SlowDrop(Duration::from_millis(500));
                let victim = weft::Builder::new().same_worker(true).spawn(move || drop(slow)).expect("a valid builder");
                victim.cancel();
                drop(victim);
            });
            // The worker drops the victim's closure (500 ms) after the
            // block_on's coroutine ended.
            thread::sleep(Duration::from_millis(900));
        });
    let Some(stderr) = stderr else { return };
    let reports: Vec<_> = stderr.lines().filter(|l| l.contains("has run no coroutine for")).collect();
    assert!(
        reports.len() == 1 && stderr.contains("released worker 0"),
        "a worker blocked for 500 ms (threshold 50 ms) must be reported once, and its end; stderr:\n{stderr}"
    );
}

/// A detached coroutine's result is dropped at the coroutine's end, inside
/// it (nobody can take it): a destructor there that blocks is that
/// coroutine holding its worker, reported once with its name, and its end.
#[test]
fn a_coroutine_blocked_dropping_its_detached_result_is_reported() {
    let stderr = in_child_process(
        "a_coroutine_blocked_dropping_its_detached_result_is_reported",
        Duration::from_secs(30),
        || {
            let rt = Runtime::builder()
                .workers(1)
                .stall_threshold(Some(Duration::from_millis(50)))
                .build()
                .expect("a runtime");
            let detached = weft::Builder::new()
                .name("returns-a-slow-drop".to_string())
                .spawn_on(&rt, move || {
                    weft::sleep(Duration::from_millis(50));
                    SlowDrop(Duration::from_millis(500))
                })
                .expect("a valid builder");
            drop(detached);
            // The coroutine ends after 50 ms, dropping its result (500 ms).
            thread::sleep(Duration::from_millis(900));
        },
    );
    let Some(stderr) = stderr else { return };
    let reports: Vec<_> =
        stderr.lines().filter(|l| l.contains("('returns-a-slow-drop')") && l.contains("has held worker 0")).collect();
    assert!(
        reports.len() == 1 && stderr.contains("('returns-a-slow-drop') released worker 0"),
        "a coroutine blocked for 500 ms (threshold 50 ms) in its result's destructor must be reported once, and its \
         end; stderr:\n{stderr}"
    );
}

/// `Runtime::drop` stops the monitor before it stops the workers, so a
/// coroutine that holds its worker while the runtime shuts down makes the
/// drop wait, for as long as it holds it (forever, for a spinning one),
/// without a word on stderr: the stall that holds up the shutdown is
/// exactly the one nobody reports.
#[test]
fn a_stall_that_holds_up_shutdown_is_reported() {
    let stderr = in_child_process("a_stall_that_holds_up_shutdown_is_reported", Duration::from_secs(30), || {
        let rt =
            Runtime::builder().workers(1).stall_threshold(Some(Duration::from_millis(50))).build().expect("a runtime");
        let (started_tx, started_rx) = mpsc::channel();
        let _holder = weft::Builder::new()
            .name("holds-up-shutdown".to_string())
            .spawn_on(&rt, move || {
                started_tx.send(()).unwrap();
                thread::sleep(Duration::from_millis(800));
            })
            .expect("a valid builder");
        started_rx.recv_timeout(Duration::from_secs(20)).expect("the holder started");
        let start = Instant::now();
        drop(rt);
        eprintln!("[drop took {} ms]", start.elapsed().as_millis());
    });
    let Some(stderr) = stderr else { return };
    let reports: Vec<_> = stderr.lines().filter(|l| l.contains("has held worker")).collect();
    assert!(
        reports.len() == 1 && reports[0].contains("holds-up-shutdown"),
        "the drop waited 800 ms (16 thresholds) on a coroutine that held its worker; it must be reported once; stderr:\n{stderr}"
    );
}

/// A worker that slept is not stalled when it wakes: the monitor, parked
/// meanwhile, must not count the sleep as time the worker was held. Here
/// the worker wakes to list its parked coroutines for `Runtime::dump`
/// (from its sleep path: no switch), which takes a few milliseconds, long
/// enough for the monitor it wakes to look. (Once the monitor reported
/// workers held between coroutines, that look compared the counter with the
/// one it saw before it parked, and reported the sleep as a stall.)
#[test]
fn a_worker_waking_from_a_long_sleep_is_not_reported() {
    let stderr = in_child_process("a_worker_waking_from_a_long_sleep_is_not_reported", Duration::from_secs(30), || {
        let rt =
            Runtime::builder().workers(1).stall_threshold(Some(Duration::from_millis(50))).build().expect("a runtime");
        let (tx, rx) = weft::sync::channel::bounded::<()>(1);
        const PARKED: usize = 500;
        for _ in 0..PARKED {
            let rx = rx.clone();
            drop(rt.spawn(move || {
                let _ = rx.recv();
            }));
        }
        wait_until("every coroutine parked", || rt.metrics().total.parked == PARKED as u64);
        // (Starting them may be slow on a busy machine, and reported.)
        thread::sleep(Duration::from_millis(100));
        eprintln!("[all parked]");
        for _ in 0..5 {
            thread::sleep(Duration::from_millis(150));
            assert_eq!(rt.dump().coroutines().len(), PARKED);
        }
        drop(tx);
    });
    let Some(stderr) = stderr else { return };
    let (_, after) = stderr.split_once("[all parked]").expect("the child's marker");
    assert!(
        !after.contains("has run no coroutine") && !after.contains("has held worker"),
        "nothing held the worker, nothing may be reported; stderr:\n{stderr}"
    );
}
