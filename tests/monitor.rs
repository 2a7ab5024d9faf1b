//! The runtime's monitor and metrics, through the public API: stall reports
//! (a coroutine that spins or sleeps on its worker), the deadlock hint, the
//! counters of `Runtime::metrics`, runtime ids in thread names, and the
//! CPU an idle runtime's monitor uses.
//!
//! The monitor writes to the process's stderr, so each scenario that checks
//! what it prints runs in a child process (this test binary re-executed,
//! filtered to one test) and the parent reads the child's stderr. Time
//! bounds are generous: the machine is small and shared.

mod common;

use std::panic::Location;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use weft::{JoinHandle, Runtime};

/// Held by every test body: the child-process tests measure time and CPU on
/// a two-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `body` in a child process; see `common::in_child_process`.
fn in_child_process(name: &str, limit: Duration, body: impl FnOnce()) -> Option<String> {
    common::in_child_process(&SERIAL, name, &[], limit, body)
}

/// Spawns `f` on `rt` under `name`; returns its handle and its spawn site
/// (the caller's line, which is what the monitor must print).
#[track_caller]
fn spawn_named<T: Send + 'static>(
    rt: &Runtime,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> (JoinHandle<T>, &'static Location<'static>) {
    let handle = weft::Builder::new().name(name.to_string()).spawn_on(rt, f).expect("a valid builder");
    (handle, Location::caller())
}

/// Prints the spawn site for the parent to look for in the report.
fn announce_site(site: &Location<'_>) {
    eprintln!("[expected site: {}:{}]", site.file(), site.line());
}

/// The `file:line` the child announced.
fn announced_site(stderr: &str) -> &str {
    let start = stderr.find("[expected site: ").expect("the child announced the spawn site") + 16;
    let end = start + stderr[start..].find(']').expect("a closing bracket");
    &stderr[start..end]
}

/// The lines of `stderr` that contain `needle`.
fn lines_with<'a>(stderr: &'a str, needle: &str) -> Vec<&'a str> {
    stderr.lines().filter(|line| line.contains(needle)).collect()
}

/// Spins on the CPU without yielding for `duration`.
fn spin(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

/// A coroutine that spins for 500 ms on one of two workers, while others
/// yield around it: the child's stderr names it.
fn hog_scenario(threshold: Option<Duration>) {
    let rt = Runtime::builder().workers(2).stall_threshold(threshold).build().expect("a runtime");
    // Others keep both workers busy switching, before and after the hog.
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            rt.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    weft::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    let (hog, site) = spawn_named(&rt, "hog", || spin(Duration::from_millis(500)));
    announce_site(site);
    hog.join().expect("the hog finished");
    // Let the monitor see the end of the stall.
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for handle in busy {
        handle.join().expect("a busy coroutine finished");
    }
}

/// One spinning coroutine gets exactly one stall report, naming it and its
/// spawn site, and one line when it lets go of its worker.
#[test]
fn a_spinning_coroutine_is_reported_once() {
    let Some(stderr) = in_child_process("a_spinning_coroutine_is_reported_once", Duration::from_secs(30), || {
        hog_scenario(Some(Duration::from_millis(100)))
    }) else {
        return;
    };
    let site = announced_site(&stderr);
    // Only the hog's lines: on a loaded machine the OS may hold a busy
    // coroutine's worker off the CPU past the threshold too.
    let reports: Vec<_> =
        lines_with(&stderr, "without yielding").into_iter().filter(|l| l.contains("('hog')")).collect();
    assert_eq!(reports.len(), 1, "expected one stall report naming the hog:\n{stderr}");
    assert!(reports[0].contains(site), "the report does not give the spawn site {site}:\n{stderr}");
    let ended = lines_with(&stderr, "released worker").into_iter().filter(|l| l.contains("('hog')")).count();
    assert_eq!(ended, 1, "expected one end-of-stall line naming the hog:\n{stderr}");
    assert!(stderr.contains("backtrace of the worker thread"), "no backtrace in the report:\n{stderr}");
}

/// `stall_threshold(None)`: the same hog, and not a word.
#[test]
fn no_stall_report_when_the_threshold_is_off() {
    let Some(stderr) =
        in_child_process("no_stall_report_when_the_threshold_is_off", Duration::from_secs(30), || hog_scenario(None))
    else {
        return;
    };
    assert!(lines_with(&stderr, "without yielding").is_empty(), "a report with the monitor off:\n{stderr}");
    assert!(lines_with(&stderr, "released worker").is_empty(), "a report with the monitor off:\n{stderr}");
}

/// A coroutine blocked in `std::thread::sleep` holds its worker just the
/// same, and is reported the same way; the probe signal does not cut its
/// sleep short.
#[test]
fn a_coroutine_in_thread_sleep_is_reported() {
    let Some(stderr) = in_child_process("a_coroutine_in_thread_sleep_is_reported", Duration::from_secs(30), || {
        let rt = Runtime::builder().workers(2).build().expect("a runtime");
        let (sleeper, site) = spawn_named(&rt, "sleepy", || {
            let start = Instant::now();
            thread::sleep(Duration::from_millis(300));
            start.elapsed()
        });
        announce_site(site);
        let slept = sleeper.join().expect("the sleeper finished");
        assert!(slept >= Duration::from_millis(300), "std::thread::sleep returned early: {slept:?}");
        thread::sleep(Duration::from_millis(300));
    }) else {
        return;
    };
    let site = announced_site(&stderr);
    let reports: Vec<_> =
        lines_with(&stderr, "without yielding").into_iter().filter(|l| l.contains("('sleepy')")).collect();
    assert_eq!(reports.len(), 1, "expected one stall report naming the sleeper:\n{stderr}");
    assert!(reports[0].contains(site), "the report does not give the spawn site {site}:\n{stderr}");
    let ended = lines_with(&stderr, "released worker").into_iter().filter(|l| l.contains("('sleepy')")).count();
    assert_eq!(ended, 1, "expected one end-of-stall line naming the sleeper:\n{stderr}");
}

/// Two coroutines that each hold one `weft::sync::Mutex` and wait for the
/// other's: the monitor prints the deadlock hint exactly once, listing both.
#[test]
fn a_lock_cycle_gets_one_deadlock_hint() {
    let Some(stderr) = in_child_process("a_lock_cycle_gets_one_deadlock_hint", Duration::from_secs(30), || {
        let rt = Runtime::builder().workers(2).build().expect("a runtime");
        let locks = Arc::new((weft::sync::Mutex::new(()), weft::sync::Mutex::new(())));
        let (l, r) = (Arc::clone(&locks), Arc::clone(&locks));
        let (_left, left_site) = spawn_named(&rt, "left", move || {
            let _first = l.0.lock();
            weft::sleep(Duration::from_millis(100));
            let _second = l.1.lock();
        });
        let (_right, right_site) = spawn_named(&rt, "right", move || {
            let _first = r.1.lock();
            weft::sleep(Duration::from_millis(100));
            let _second = r.0.lock();
        });
        announce_site(left_site);
        eprintln!("[right site: {}:{}]", right_site.file(), right_site.line());
        // The hint comes after a second of quiet; wait for more than two.
        thread::sleep(Duration::from_millis(3500));
        println!("{}", common::CHILD_DONE);
        std::process::exit(0); // the runtime can never be dropped
    }) else {
        return;
    };
    let hints = lines_with(&stderr, "are parked and nothing can wake them");
    assert_eq!(hints.len(), 1, "expected one deadlock hint:\n{stderr}");
    assert!(hints[0].contains("all 2 coroutines"), "wrong count:\n{stderr}");
    assert!(hints[0].contains("hint, not a verdict"), "the hint must say it is one:\n{stderr}");
    // One summary line each, saying what it waits on.
    let left = lines_with(&stderr, "'left' [parked on Mutex");
    let right = lines_with(&stderr, "'right' [parked on Mutex");
    assert_eq!((left.len(), right.len()), (1, 1), "each parked coroutine listed once:\n{stderr}");
    assert!(left[0].contains(announced_site(&stderr)), "the summary lacks left's spawn site:\n{stderr}");
}

/// A coroutine that an OS thread wakes every 1.5 s: the first pause gets a
/// hint (nothing inside the runtime can wake it), which the next wake
/// refutes; each refuted hint doubles the quiet time the next one needs, so
/// the later pauses get none.
#[test]
fn a_coroutine_fed_by_an_os_thread_gets_one_hint_not_one_per_pause() {
    const NAME: &str = "a_coroutine_fed_by_an_os_thread_gets_one_hint_not_one_per_pause";
    let Some(stderr) = in_child_process(NAME, Duration::from_secs(30), || {
        let rt = Runtime::builder().workers(1).build().expect("a runtime");
        let shared = Arc::new((weft::sync::Mutex::new(0u32), weft::sync::Condvar::new()));
        let fed = Arc::clone(&shared);
        let consumer = rt.spawn(move || {
            let (count, cv) = &*fed;
            let mut seen = 0;
            while seen < 3 {
                let guard = cv.wait_while(count.lock(), |n| *n == seen);
                seen = *guard;
            }
        });
        for _ in 0..3 {
            thread::sleep(Duration::from_millis(1500));
            *shared.0.lock() += 1;
            shared.1.notify_one();
        }
        consumer.join().expect("the consumer finished");
    }) else {
        return;
    };
    let hints = lines_with(&stderr, "are parked and nothing can wake them");
    assert_eq!(hints.len(), 1, "expected one hint for three pauses:\n{stderr}");
}

/// Coroutines that all sleep on timers (and one that joins a sleeper) are
/// not deadlocked: no hint.
#[test]
fn sleeping_coroutines_get_no_deadlock_hint() {
    let Some(stderr) = in_child_process("sleeping_coroutines_get_no_deadlock_hint", Duration::from_secs(30), || {
        let rt = Runtime::builder().workers(2).build().expect("a runtime");
        let sleepers: Vec<_> = (0..4).map(|_| rt.spawn(|| weft::sleep(Duration::from_secs(3)))).collect();
        let _joiner = rt.spawn(move || {
            for sleeper in sleepers {
                sleeper.join().expect("a sleeper finished");
            }
        });
        thread::sleep(Duration::from_millis(2500));
        println!("{}", common::CHILD_DONE);
        std::process::exit(0);
    }) else {
        return;
    };
    assert!(lines_with(&stderr, "nothing can wake them").is_empty(), "a hint for sleeping coroutines:\n{stderr}");
}

/// N spawns from one coroutine, each child yielding M times, on one
/// worker: the counters that are exact match.
#[test]
fn metrics_count_a_known_workload() {
    const N: u64 = 50;
    const M: u64 = 20;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = Runtime::builder().workers(1).build().expect("a runtime");
    let before = rt.metrics();
    assert_eq!(before.spawned(), 0);
    assert_eq!(before.total.switches, 0);
    rt.block_on(|| {
        let children: Vec<_> = (0..N)
            .map(|_| {
                weft::spawn(|| {
                    for _ in 0..M {
                        weft::yield_now();
                    }
                })
            })
            .collect();
        for child in children {
            child.join().expect("no panic");
        }
    });
    // A coroutine counts its finish before its joiner gets the result, so
    // the counts are exact as soon as block_on returns.
    let metrics = rt.metrics();
    assert_eq!(metrics.workers.len(), 1);
    assert_eq!(metrics.runtime_id, rt.id());
    assert_eq!(metrics.spawned_from_outside, 1, "block_on's coroutine");
    assert_eq!(metrics.total.spawned, N);
    assert_eq!(metrics.spawned(), N + 1);
    assert_eq!(metrics.total.started, N + 1);
    assert_eq!(metrics.total.finished, N + 1);
    assert_eq!(metrics.alive(), 0);
    assert_eq!(metrics.total.alive, 0);
    assert_eq!(metrics.total.parked, 0);
    assert_eq!(metrics.total.steals, 0, "one worker steals from nobody");
    // Each child ran M + 1 times, block_on's coroutine at least once.
    assert!(metrics.total.switches > N * (M + 1), "{} switches", metrics.total.switches);
    assert_eq!(metrics.total.parks, metrics.total.local_wakes + metrics.total.remote_wakes, "{metrics:?}");
    assert_eq!(metrics.total, metrics.workers[0]);
    assert!(metrics.stack_maps == 2 * metrics.stacks_mapped as u64);

    // Timers and spawn_blocking.
    rt.block_on(|| {
        weft::sleep(Duration::from_millis(1));
        weft::spawn_blocking(|| 1).join().expect("no panic")
    });
    let metrics = rt.metrics();
    assert!(metrics.total.timers_armed >= 1);
    assert!(metrics.blocking_threads >= 1, "{metrics:?}");
}

/// Worker threads carry their runtime's id, so two runtimes can be told
/// apart in a debugger or a panic message.
#[test]
fn worker_threads_are_named_after_their_runtime() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = Runtime::builder().workers(1).build().expect("a runtime");
    let b = Runtime::builder().workers(1).build().expect("a runtime");
    assert_ne!(a.id(), b.id());
    for rt in [&a, &b] {
        let name = rt.block_on(|| thread::current().name().map(str::to_owned));
        assert_eq!(name, Some(format!("weft-r{}-w0", rt.id())));
    }
}

/// The kernel id of runtime `id`'s monitor thread (`weft-mon-r<id>`).
fn monitor_thread(id: usize) -> u32 {
    let name = format!("weft-mon-r{id}");
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|tid| std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).is_ok_and(|c| c.trim() == name))
        .expect("the runtime's monitor thread")
}

/// An idle 2-worker runtime with its monitor (after warm-up, one coroutine
/// asleep on a one-hour timer and one parked joining it) uses under 0.1 % of
/// a core over a second, and its monitor thread does not wake: it parks
/// while every worker sleeps.
#[test]
fn an_idle_runtime_with_its_monitor_uses_under_a_thousandth_of_a_core() {
    const NAME: &str = "an_idle_runtime_with_its_monitor_uses_under_a_thousandth_of_a_core";
    in_child_process(NAME, Duration::from_secs(30), || {
        const WINDOW: Duration = Duration::from_secs(1);
        let rt = Runtime::builder().workers(2).build().expect("a runtime");
        let warm: Vec<_> = (0..200u64)
            .map(|i| {
                rt.spawn(move || {
                    weft::yield_now();
                    if i % 10 == 0 {
                        weft::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        for handle in warm {
            handle.join().expect("no panic");
        }
        let sleeper = rt.spawn(|| weft::sleep(Duration::from_secs(3600)));
        let parked = rt.spawn(move || sleeper.join().is_ok());
        thread::sleep(Duration::from_millis(300));
        let monitor = monitor_thread(rt.id());
        let (monitor_cpu_before, monitor_switches_before) = common::thread_activity(monitor);
        let before = common::process_cpu_time();
        thread::sleep(WINDOW);
        let used = common::process_cpu_time() - before;
        let (monitor_cpu_after, monitor_switches_after) = common::thread_activity(monitor);
        eprintln!(
            "idle process: {used:?} of CPU in {WINDOW:?}; its monitor thread {} ns and {} context switches",
            monitor_cpu_after - monitor_cpu_before,
            monitor_switches_after - monitor_switches_before
        );
        assert!(used < WINDOW / 1000, "the idle process used {used:?} of CPU in {WINDOW:?}");
        // Parked, not ticking: a tick a few times a second would show here.
        assert!(
            monitor_switches_after - monitor_switches_before <= 1,
            "the idle runtime's monitor woke {} times in {WINDOW:?}",
            monitor_switches_after - monitor_switches_before
        );
        assert!(!parked.is_finished());
    });
}
