//! The fresh queue (each worker's queue of unstarted coroutines: the owner
//! pushes and pops the newest, idle workers steal the oldest) as the runtime
//! uses it, through the public API, in crossbeam-deque's test pattern
//! (`crossbeam-deque/tests/lifo.rs`): smoke, stampede, stress, no
//! starvation, destructors. Every spawned coroutine must run exactly once
//! (or, if it never starts, have its closure dropped exactly once): each
//! test counts runs per coroutine and drops per closure.
//!
//! The owner's push is `weft::spawn` from a coroutine; its pop is its worker
//! taking the newest unstarted coroutine (when the spawner parks in `join`
//! or yields); the thieves are the other workers, idle, stealing. Sizes are
//! liveness sizes for a small shared machine, not benchmarks.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use weft::{JoinErrorKind, JoinHandle, Runtime};

/// The tests measure latencies and share two cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().expect("a runtime with its worker threads")
}

/// The worker this coroutine runs on, from its thread's name
/// (`weft-r<R>-w<N>`).
fn worker_index() -> usize {
    let thread = thread::current();
    let name = thread.name().expect("worker threads are named");
    name.rsplit_once("-w").and_then(|(_, n)| n.parse().ok()).expect("a worker thread's name ends in -w<N>")
}

/// One counter per spawned coroutine: how many times it ran.
fn counters(n: usize) -> Arc<Vec<AtomicUsize>> {
    Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect())
}

#[track_caller]
fn assert_each_ran_once(runs: &[AtomicUsize]) {
    for (i, count) in runs.iter().enumerate() {
        assert_eq!(count.load(Ordering::SeqCst), 1, "coroutine {i} ran {} times", count.load(Ordering::SeqCst));
    }
}

/// One coroutine spawns, joins; a few, joined newest first and oldest
/// first.
#[test]
fn smoke() {
    let _serial = serial();
    let rt = runtime(2);
    assert_eq!(rt.block_on(|| weft::spawn(|| 7).join().unwrap()), 7);
    let sum = rt.block_on(|| {
        let handles: Vec<_> = (0..10u64).map(|i| weft::spawn(move || i)).collect();
        handles.into_iter().rev().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(sum, 45);
    let sum = rt.block_on(|| {
        let handles: Vec<_> = (0..10u64).map(|i| weft::spawn(move || i)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(sum, 45);
}

/// One coroutine fills its worker's fresh queue with 20 000 coroutines
/// without switching out, while three idle workers steal from it at once;
/// then it joins them all. Each runs exactly once, and the thieves took
/// some: the owner holds its worker (without switching out) until they
/// have, so that this does not depend on the thieves' threads getting a
/// CPU before the owner's worker has run the whole queue itself (on a
/// loaded 2-CPU machine they did not, once).
#[test]
fn stampede() {
    const COUNT: usize = 20_000;
    let _serial = serial();
    let rt = runtime(4);
    let runs = counters(COUNT);
    let by_others = Arc::new(AtomicUsize::new(0));
    let (r, o) = (Arc::clone(&runs), Arc::clone(&by_others));
    rt.block_on(move || {
        let owner = worker_index();
        let handles: Vec<JoinHandle<()>> = (0..COUNT)
            .map(|i| {
                let (r, o) = (Arc::clone(&r), Arc::clone(&o));
                weft::spawn(move || {
                    r[i].fetch_add(1, Ordering::SeqCst);
                    if worker_index() != owner {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let started = Instant::now();
        while o.load(Ordering::SeqCst) == 0 && started.elapsed() < Duration::from_secs(30) {
            thread::sleep(Duration::from_millis(1)); // holds this worker: the queue stays full
        }
        for h in handles {
            h.join().expect("a stampede coroutine");
        }
    });
    assert_each_ran_once(&runs);
    assert!(by_others.load(Ordering::SeqCst) > 0, "no coroutine was stolen by the three idle workers in 30 s");
}

/// The owner pushes and pops against three thieves: a coroutine spawns in
/// bursts and, between bursts, joins a random-ish earlier one (parking, so
/// its worker pops the newest unstarted ones) or yields; the other three
/// workers steal whenever they run dry, and every coroutine spawns a child
/// now and then (so the thieves push and pop their own queues too).
#[test]
fn stress() {
    const COUNT: usize = 60_000;
    let _serial = serial();
    let rt = runtime(4);
    let runs = counters(2 * COUNT);
    let r = Arc::clone(&runs);
    rt.block_on(move || {
        let mut pending = std::collections::VecDeque::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..COUNT {
            let r = Arc::clone(&r);
            let child = i % 3 == 0;
            pending.push_back(weft::spawn(move || {
                r[i].fetch_add(1, Ordering::SeqCst);
                if child {
                    let r = Arc::clone(&r);
                    weft::spawn(move || {
                        r[COUNT + i].fetch_add(1, Ordering::SeqCst);
                    })
                    .join()
                    .expect("a child");
                } else {
                    r[COUNT + i].fetch_add(1, Ordering::SeqCst);
                }
            }));
            match next() % 16 {
                0 => weft::yield_now(),
                1 | 2 if pending.len() > 64 => {
                    let h = if next() % 2 == 0 { pending.pop_front() } else { pending.pop_back() };
                    h.expect("pending").join().expect("a stress coroutine");
                }
                _ => {}
            }
        }
        for h in pending {
            h.join().expect("a stress coroutine");
        }
    });
    assert_each_ran_once(&runs);
}

/// Neither side starves. The owner keeps spawning and yielding (its queue
/// never runs dry and newest-first would never come back to the first
/// one); the first coroutine it spawned must still start within a bounded
/// time, alone on one worker (only the scheduler's fairness rule can start
/// it) and with three thieves; and with thieves, they must get work while
/// the owner keeps pushing (it pushes until they have, within a bound: on
/// a loaded machine the thieves' threads may get a CPU only after a while).
#[test]
fn no_starvation() {
    let _serial = serial();
    for workers in [1, 4] {
        let rt = runtime(workers);
        let stolen = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&stolen);
        let (waited, spawned, took) = rt.block_on(move || {
            let owner = worker_index();
            let ran = Arc::new(AtomicBool::new(false));
            let ran_in_first = Arc::clone(&ran);
            let start = Instant::now();
            let first = weft::spawn(move || ran_in_first.store(true, Ordering::SeqCst));
            let mut spawned = 0u64;
            let mut waited = None;
            let thieves_done = || workers == 1 || s.load(Ordering::SeqCst) > 0;
            while (waited.is_none() || !thieves_done()) && start.elapsed() < Duration::from_secs(10) {
                let s = Arc::clone(&s);
                drop(weft::spawn(move || {
                    if worker_index() != owner {
                        s.fetch_add(1, Ordering::SeqCst);
                    }
                }));
                spawned += 1;
                if waited.is_none() && ran.load(Ordering::SeqCst) {
                    waited = Some(start.elapsed());
                }
                weft::yield_now();
            }
            first.join().expect("the first coroutine");
            (waited, spawned, start.elapsed())
        });
        let waited = waited.unwrap_or_else(|| panic!("the first coroutine never ran behind {spawned} newer ones"));
        assert!(
            waited < Duration::from_secs(2),
            "the first coroutine waited {waited:?} behind {spawned} newer ones on {workers} worker(s)"
        );
        if workers > 1 {
            assert!(
                stolen.load(Ordering::SeqCst) > 0,
                "the thieves got no coroutine in {took:?} ({spawned} spawned and counting)"
            );
        }
    }
}

/// Counts drops of the closures' captures.
struct Droppable(Arc<AtomicUsize>);

impl Drop for Droppable {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Every closure is dropped exactly once, whether its coroutine ran,
/// was cancelled before it started, or was still queued when the runtime
/// was dropped; and none that was cancelled or left queued ran.
#[test]
fn destructors() {
    const COUNT: usize = 10_000;
    let _serial = serial();
    let runs = counters(COUNT);
    let drops = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(AtomicBool::new(false));
    {
        let rt = runtime(4);
        let (r, d, rel) = (Arc::clone(&runs), Arc::clone(&drops), Arc::clone(&released));
        let (tx, rx) = std::sync::mpsc::channel();
        // The spawner keeps its worker busy after spawning (it spins until
        // released), so what the other workers do not steal stays queued.
        let spawner = rt.spawn(move || {
            let handles: Vec<JoinHandle<()>> = (0..COUNT)
                .map(|i| {
                    let (r, guard) = (Arc::clone(&r), Droppable(Arc::clone(&d)));
                    weft::spawn(move || {
                        let _guard = guard;
                        r[i].fetch_add(1, Ordering::SeqCst);
                        // Keep the thieves' own workers busy for a while.
                        thread::sleep(Duration::from_micros(20));
                    })
                })
                .collect();
            // Cancel every fourth one; those not started yet never start.
            for h in handles.iter().step_by(4) {
                h.cancel();
            }
            tx.send(handles).expect("the test waits for the handles");
            while !rel.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        });
        let handles = rx.recv().expect("the spawner sends its handles");
        thread::sleep(Duration::from_millis(20));
        // Drop the runtime with coroutines still queued: released first,
        // so that the spawner finishes and its worker can stop.
        released.store(true, Ordering::SeqCst);
        spawner.join().expect("the spawner");
        drop(rt);
        let mut outcomes = [0usize; 3]; // ran, cancelled, shut down unstarted
        for (i, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(()) => outcomes[0] += 1,
                Err(e) if e.kind() == JoinErrorKind::Cancelled => {
                    assert_eq!(i % 4, 0, "coroutine {i} was not cancelled, yet ended as cancelled");
                    outcomes[1] += 1;
                }
                Err(e) => {
                    assert!(!e.is_panic(), "coroutine {i} panicked: {e}");
                    assert_eq!(runs[i].load(Ordering::SeqCst), 0, "coroutine {i} ran yet ended in error: {e}");
                    outcomes[2] += 1;
                }
            }
        }
        assert_eq!(outcomes.iter().sum::<usize>(), COUNT);
        assert!(outcomes[1] > 0, "no coroutine was cancelled before it started: {outcomes:?}");
        // Each started one sleeps 20 us on its worker: 10 000 take three
        // thieves far longer than the 20 ms before the runtime is dropped.
        assert!(outcomes[2] > 0, "no coroutine was left queued at shutdown (untested): {outcomes:?}");
    }
    assert_eq!(drops.load(Ordering::SeqCst), COUNT, "closures dropped");
    for (i, count) in runs.iter().enumerate() {
        assert!(count.load(Ordering::SeqCst) <= 1, "coroutine {i} ran {} times", count.load(Ordering::SeqCst));
    }
}

/// Computes (spins) for `duration` without yielding.
fn compute_for(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

/// From a coroutine: spawns `tasks` coroutines that each compute for
/// `compute`, then wait until all of them have; returns the spawner's
/// worker, and where and how long after the burst began each one started.
fn burst(tasks: usize, compute: Duration) -> (usize, Vec<(usize, Duration)>) {
    let home = worker_index();
    let burst_began = Instant::now();
    let barrier = Arc::new(weft::sync::Barrier::new(tasks));
    let handles: Vec<JoinHandle<(usize, Duration)>> = (0..tasks)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            weft::spawn(move || {
                let started = (worker_index(), burst_began.elapsed());
                compute_for(compute);
                barrier.wait();
                started
            })
        })
        .collect();
    (home, handles.into_iter().map(|h| h.join().expect("a burst coroutine")).collect())
}

/// How many of `rounds` bursts, each on a fresh 2-worker runtime, started
/// all their coroutines on the spawner's worker.
fn local_bursts(rounds: usize, tasks: usize, compute: Duration) -> usize {
    (0..rounds)
        .filter(|_| {
            let (home, starts) = runtime(2).block_on(|| burst(tasks, compute));
            starts.iter().all(|&(worker, _)| worker == home)
        })
        .count()
}

/// Coroutines spawned together that park at once (they wait for one
/// another) start on their spawner's worker: the other worker, idle and
/// woken by the spawns, leaves a deque alone until it has held work for
/// 100 µs, and the spawner's worker starts all eight well within that.
/// Twenty rounds, each with a fresh runtime; a round counts when all eight
/// started where the spawner runs. A descheduled worker thread may let a
/// thief in now and then, so the test asks for most rounds, not all.
/// (Checked to fail with no wait before stealing: 3 of 20 rounds.)
#[test]
fn a_burst_that_parks_at_once_starts_on_its_spawners_worker() {
    const ROUNDS: usize = 20;
    let _serial = serial();
    let local_rounds = local_bursts(ROUNDS, 8, Duration::ZERO);
    assert!(local_rounds >= ROUNDS * 3 / 4, "only {local_rounds} of {ROUNDS} bursts started on their spawner's worker");
}

/// The wait starts afresh with each burst. One runtime, burst after burst,
/// idle for a millisecond between them (both workers go to sleep): no
/// coroutine of a burst starts on another worker sooner than 100 µs after
/// the burst's first spawn (a thief sees the work only once it is pushed,
/// and then waits 100 µs by the same monotonic clock). Whether the thief
/// takes some at all depends on how fast the spawner starts them (waking
/// the sleeping worker can take the spawner tens of microseconds on a
/// virtual machine), so this checks the bound, not the placement. The
/// thief's clock used to keep running across its sleep when the previous
/// burst's work was started by its owner first, and it stole the next
/// burst at once: checked to fail that way (a coroutine stolen 7-99 µs
/// into its burst, in every run).
#[test]
fn a_thief_waits_100_us_for_every_burst() {
    const ROUNDS: usize = 40;
    const WAIT: Duration = Duration::from_micros(100);
    let _serial = serial();
    // A thief thread that the OS deschedules between a look at one burst
    // and its next look keeps its wait across the gap (it never looked at
    // empty queues) and may steal the next burst early: a loaded machine
    // spoils a round now and then (3 of 40 seen with three copies of this
    // binary on two CPUs). The bug this guards against (the thief's clock
    // running across its sleep) stole early whenever the owner had started
    // the previous burst itself, most rounds.
    const SPOILT_AT_MOST: usize = ROUNDS / 8;
    let rt = runtime(2);
    let mut early = Vec::new();
    for round in 0..ROUNDS {
        thread::sleep(Duration::from_millis(1));
        // Each computes 10 µs: long enough for the woken worker to see the burst.
        let (home, starts) = rt.block_on(|| burst(16, Duration::from_micros(10)));
        if let Some(after) = starts.iter().filter(|&&(worker, _)| worker != home).map(|&(_, after)| after).min()
            && after < WAIT
        {
            early.push((round, after));
        }
    }
    assert!(
        early.len() <= SPOILT_AT_MOST,
        "in {} of {ROUNDS} rounds a coroutine was stolen less than {WAIT:?} into its burst (round, when): {early:?}",
        early.len()
    );
}

/// A burst that its owner keeps starting stays on its owner's worker even
/// when starting all of it takes longer than the 100 µs wait: eight
/// coroutines that each compute for 30 µs before they wait for the others
/// (240 µs in all). The thief restarts its wait whenever it finds fewer
/// queued tasks than at its previous look while the queues have not grown.
/// A worker thread descheduled for 100 µs lets the thief in (a loaded CI
/// machine: 14 of 20 rounds once), so the test asks for half the rounds.
/// (Checked to fail without that restart: 2, 7 and 17 of 40 rounds.)
#[test]
fn a_burst_its_owner_keeps_starting_stays_on_its_worker() {
    const ROUNDS: usize = 40;
    let _serial = serial();
    let local_rounds = local_bursts(ROUNDS, 8, Duration::from_micros(30));
    assert!(local_rounds >= ROUNDS / 2, "only {local_rounds} of {ROUNDS} bursts started on their spawner's worker");
}

/// A queue that its owner drains only slowly is still shared: 64
/// coroutines that compute for 200 µs each and never wait (13 ms of work)
/// run on both workers, although their owner keeps starting them (one
/// every 200 µs): the thief's wait ends 1 ms after it began at the latest.
/// (A thief that saw the queue grow while the burst was spawned steals
/// 100 µs after its first look anyway; this checks that the restarts above
/// do not keep such work on one worker, whichever way the thief saw it.)
/// The coroutines go on computing, 100 µs at a time, until one has run on
/// each worker (30 s at most in all), so that a thief whose thread gets no
/// CPU for those 13 ms on a loaded machine still finds work.
#[test]
fn a_queue_drained_slowly_is_still_shared() {
    const TASKS: usize = 64;
    let _serial = serial();
    let rt = runtime(2);
    let workers = rt.block_on(|| {
        let ran_on = Arc::new(AtomicUsize::new(0)); // a bit per worker
        let deadline = Instant::now() + Duration::from_secs(30);
        let handles: Vec<JoinHandle<usize>> = (0..TASKS)
            .map(|_| {
                let ran_on = Arc::clone(&ran_on);
                weft::spawn(move || {
                    ran_on.fetch_or(1 << worker_index(), Ordering::SeqCst);
                    compute_for(Duration::from_micros(200));
                    while ran_on.load(Ordering::SeqCst).count_ones() < 2 && Instant::now() < deadline {
                        compute_for(Duration::from_micros(100));
                    }
                    worker_index()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a computing coroutine")).collect::<std::collections::HashSet<_>>()
    });
    assert_eq!(workers.len(), 2, "all {TASKS} computing coroutines ran on worker(s) {workers:?}");
}

/// Work that keeps its worker busy is still stolen: two coroutines that
/// compute for 30 ms each without yielding, spawned together on a runtime
/// with two workers, run at the same time on different workers. Each goes
/// on computing until the other has started too (30 s at most), so that a
/// thief whose thread gets no CPU for 30 ms on a loaded machine still
/// finds the second one queued.
#[test]
fn a_burst_that_keeps_its_worker_busy_is_still_stolen() {
    let _serial = serial();
    let rt = runtime(2);
    let workers = rt.block_on(|| {
        let started = Arc::new(AtomicUsize::new(0));
        let handles: Vec<JoinHandle<(usize, Instant, Instant)>> = (0..2)
            .map(|_| {
                let started = Arc::clone(&started);
                weft::spawn(move || {
                    let start = Instant::now();
                    started.fetch_add(1, Ordering::SeqCst);
                    compute_for(Duration::from_millis(30));
                    while started.load(Ordering::SeqCst) < 2 && start.elapsed() < Duration::from_secs(30) {
                        compute_for(Duration::from_millis(1));
                    }
                    (worker_index(), start, Instant::now())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a busy coroutine")).collect::<Vec<_>>()
    });
    let ((first, first_start, first_end), (second, second_start, second_end)) = (workers[0], workers[1]);
    assert_ne!(first, second, "both busy coroutines ran on worker {first}");
    assert!(first_start < second_end && second_start < first_end, "the two busy coroutines did not overlap in time");
}

/// Once a thief's wait has run out, it steals at each of its later looks
/// in that wait, however the queues moved: its own steals shrink them too,
/// and that is no sign that their owner is starting the work itself. The
/// owner here is busy for 4 ms and starts nothing; the thief, busy in a
/// coroutine of its own while a burst of 64 short computations (10 µs
/// each) is spawned, finds the burst whole, waits its 100 µs, and then
/// takes batch after batch: its starts, in order, are never more than a
/// batch's steal apart (checked: under 60 µs, in most rounds). Its own
/// steals used to restart its 100 µs window while the wait was younger
/// than 1 ms, so it idled 100 µs between its first batches (checked to
/// fail that way: gaps of 100-110 µs in every round).
#[test]
fn a_thief_whose_wait_ran_out_steals_at_each_look() {
    const ROUNDS: usize = 10;
    const ATTEMPTS: usize = 40;
    /// On a loaded machine few attempts are judged (the other worker is
    /// not there in time): attempts go on for this long at least.
    const TRY_FOR: Duration = Duration::from_secs(10);
    const TASKS: usize = 64;
    let _serial = serial();
    let rt = runtime(2);
    let mut judged = 0;
    let mut without_pause = 0;
    let mut gaps = Vec::new();
    let trying_since = Instant::now();
    let mut attempts = 0;
    while judged < ROUNDS && (attempts < ATTEMPTS || trying_since.elapsed() < TRY_FOR) {
        attempts += 1;
        let (thief, starts) = rt.block_on(|| {
            let home = worker_index();
            // The thief's own coroutine, stolen while the spawner computes:
            // it parks at once (its worker finds nothing queued, which ends
            // that wait), then computes until well after the burst is
            // spawned, so that the thief's next look finds the burst whole.
            let thiefs = weft::spawn(|| {
                weft::sleep(Duration::from_micros(50));
                let computing_since = Instant::now();
                compute_for(Duration::from_millis(2));
                (worker_index(), computing_since)
            });
            compute_for(Duration::from_millis(1));
            let began = Instant::now();
            let handles: Vec<JoinHandle<(usize, Duration)>> = (0..TASKS)
                .map(|_| {
                    weft::spawn(move || {
                        let started = (worker_index(), began.elapsed());
                        compute_for(Duration::from_micros(10));
                        started
                    })
                })
                .collect();
            // The owner starts none of them meanwhile.
            compute_for(Duration::from_millis(4));
            let (thief, computing_since) = thiefs.join().expect("the thief's coroutine");
            let starts: Vec<(usize, Duration)> =
                handles.into_iter().map(|h| h.join().expect("a burst coroutine")).collect();
            // On a loaded machine the other worker may come too late: such a
            // round is not judged.
            let thief = (thief != home && computing_since < began).then_some(thief);
            (thief, starts)
        });
        let Some(thief) = thief else { continue };
        let mut stolen: Vec<Duration> =
            starts.iter().filter(|&&(worker, _)| worker == thief).map(|&(_, at)| at).collect();
        stolen.sort();
        let longest = stolen.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or_default();
        judged += 1;
        gaps.push(longest);
        if stolen.len() >= 2 && longest < Duration::from_micros(60) {
            without_pause += 1;
        }
    }
    // Whether the other worker was there in time is the machine's doing,
    // not the scheduler's: too few judged rounds say nothing either way.
    if judged < ROUNDS / 2 {
        eprintln!(
            "note: not judged: only {judged} of {attempts} rounds had the thief computing on the other worker \
             when the burst began (a loaded machine)"
        );
        return;
    }
    assert!(
        without_pause * 2 >= judged,
        "the thief paused between its batches in {} of {judged} rounds (longest gaps between its starts: {gaps:?})",
        judged - without_pause
    );
}
