//! What weft's synchronization primitives cost, next to std's and
//! parking_lot's on OS threads: uncontended locking, a Mutex+Condvar
//! hand-off, a contended Mutex, a bounded producer-consumer queue and a
//! read-mostly RwLock.
//!
//! Everything is in one criterion group, `sync`, so the figures sit side by
//! side in the report:
//!
//! ```text
//! cargo bench -p weft-benches --bench sync
//! cargo bench -p weft-benches --bench sync -- 'uncontended'   # a subset, by name
//! ```
//!
//! | benchmark                                              | one iteration is                                            |
//! |--------------------------------------------------------|-------------------------------------------------------------|
//! | `uncontended lock+unlock/{weft,std,parking_lot} Mutex` | one lock and unlock from a plain thread                     |
//! | `uncontended read+unlock/{weft,std,parking_lot} RwLock`| one read lock and unlock from a plain thread                |
//! | `uncontended lock+unlock/weft SpinLock`                | one lock and unlock from a plain thread                     |
//! | `hand-off/weft Mutex+Condvar (2 coroutines, 1 worker)` | one one-way hand-off (wall clock)                           |
//! | `hand-off/weft ..., worker CPU time`                   | the same, timed by the worker thread's CPU clock            |
//! | `hand-off/std Mutex+Condvar (2 threads, pinned ...)`   | one one-way hand-off, both threads on CPU 0                 |
//! | `hand-off/std Mutex+Condvar (2 threads, unpinned)`     | one one-way hand-off, threads free to move                  |
//! | `contended 2x1M/...`                                   | a batch: 2 tasks x 1 000 000 `*lock() += 1`                 |
//! | `contended 256x10k/...`                                | a batch: 256 tasks x 10 000 `*lock() += 1` (many waiters)   |
//! | `producer-consumer 4p4c 1M cap 64/...`                 | a batch: 1 000 000 items through a queue of capacity 64     |
//! | `rwlock 95% read 4x200k/...`                           | a batch: 4 tasks x 200 000 ops, every 20th a write          |
//!
//! The runtimes are built once, outside the timing. Every task of a
//! multi-task benchmark (coroutine or thread) reads the clock when it starts
//! (OS threads: after a barrier, so thread creation is not timed) and when
//! it is done; a run's time is the span from the earliest start to the
//! latest end, so a measuring thread that gets preempted (on a shared
//! machine) cannot shorten or stretch a figure.
//!
//! A started coroutine stays on its first worker, so where the coroutines
//! of a weft batch landed decides how much of it is cross-thread: after the
//! criterion run the bench prints, for each weft batch benchmark, each split
//! of its coroutines over the workers that occurred, how often, and the
//! median batch time with that split (stderr).
//!
//! Setting `WEFT_SYNC_COUNT=what:n` runs one workload once with n as its
//! size, for an instruction counter (callgrind); `what` is one of
//! `handoff` (n one-way hand-offs; `handoff_nomon` the same without the
//! runtime's monitor thread), `contended` (n increments per
//! coroutine, 2 coroutines on 2 workers), `contended_many` (n increments
//! per coroutine, 256 coroutines on 4 workers or on `WEFT_SYNC_WORKERS`;
//! prints the runtime's parks, wakes and sleeps too), `prodcons` (n
//! items), `rwlock` (n ops per coroutine; prints the runtime's parks,
//! wakes and switches too; `rwlock1` the same on a one-worker runtime), `handoff_timed` (n one-way hand-offs
//! whose every wait is a `wait_timeout` of an hour, always notified first:
//! the cost of arming and cancelling a timer):
//!
//! ```text
//! cargo bench -p weft-benches --bench sync --no-run   # prints the path of the bench binary
//! WEFT_SYNC_COUNT=handoff:100000 valgrind --tool=callgrind target/release/deps/sync-<hash>
//! WEFT_SYNC_COUNT=handoff:200000 valgrind --tool=callgrind target/release/deps/sync-<hash>
//! ```
//!
//! Setting `WEFT_SYNC_MONITOR_AB=rounds` runs the Mutex+Condvar hand-off on
//! a runtime with its monitor thread and on one without, alternately, and
//! prints each one's median (`common/monitor_ab.rs`); the criterion group
//! `monitor/` measures the same one after the other.
//!
//! Setting `WEFT_SYNC_INTERLEAVED=rounds` skips criterion and runs every
//! workload above once per round, in turn, then prints each one's median,
//! min and max over the rounds (uncontended: 10M ops a run; weft hand-off:
//! 1M, std hand-off: 50k). On a shared machine whose load drifts, this
//! compares the contenders under the same conditions:
//!
//! ```text
//! WEFT_SYNC_INTERLEAVED=20 cargo bench -p weft-benches --bench sync
//! ```
//!
//! Setting `WEFT_HOST_PROBE=1` skips criterion and prints, as one JSON
//! object, what the host charges for the operations every path above is
//! made of: an uncontended atomic read-modify-write (`fetch_add`) and a
//! successful compare-exchange on a line of the thread's own, a clock read
//! (`Instant::now`) and a spin-loop hint (`pause` on x86-64), each in
//! nanoseconds (the median of 7 timings of a few million). Hosts that look
//! alike can differ severalfold here (two 2-CPU "AMD EPYC" hosts of the
//! same day did), and a lock hand-off is a handful of such operations, so
//! `collect.sh` records the probe in `machine.json` and the report prints
//! it next to the machine:
//!
//! ```text
//! WEFT_HOST_PROBE=1 cargo bench -p weft-benches --bench sync
//! ```

#[path = "common/clock.rs"]
mod clock;
#[path = "../examples/common/linux.rs"]
mod linux;
#[path = "common/monitor_ab.rs"]
mod monitor_ab;
#[path = "common/placements.rs"]
mod placements;

use clock::Clock;
use criterion::{Criterion, SamplingMode, criterion_group};
use linux::pin_to_cpu;
use placements::{Placements, span, worker_index};
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use weft::Runtime;

/// Increments per task in the contended-Mutex batch.
const CONTENDED_OPS: u64 = 1_000_000;
/// Increments per task in the many-waiters batch (256 tasks).
const MANY_OPS: u64 = 10_000;
/// Items per producer-consumer batch.
const PC_ITEMS: u64 = 1_000_000;
/// Producers, and consumers, in the producer-consumer batch.
const PC_SIDES: u64 = 4;
/// Capacity of the producer-consumer queue.
const PC_CAPACITY: usize = 64;
/// Tasks in the RwLock batch.
const RW_TASKS: u64 = 4;
/// Operations per task in the RwLock batch.
const RW_OPS: u64 = 200_000;
/// Every `RW_WRITE_EVERY`-th operation of the RwLock batch is a write (5%).
const RW_WRITE_EVERY: u64 = 20;

fn sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("sync");
    group.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));

    // --- Uncontended, from a plain thread: one iteration = lock + unlock. ---
    let weft_mutex = weft::sync::Mutex::new(0u64);
    group.bench_function("uncontended lock+unlock/weft Mutex", |b| {
        b.iter(|| drop(black_box(black_box(&weft_mutex).lock())));
    });
    let std_mutex = std::sync::Mutex::new(0u64);
    group.bench_function("uncontended lock+unlock/std Mutex", |b| {
        b.iter(|| drop(black_box(black_box(&std_mutex).lock().expect("not poisoned"))));
    });
    let pl_mutex = parking_lot::Mutex::new(0u64);
    group.bench_function("uncontended lock+unlock/parking_lot Mutex", |b| {
        b.iter(|| drop(black_box(black_box(&pl_mutex).lock())));
    });
    let weft_spin = weft::sync::SpinLock::new(0u64);
    group.bench_function("uncontended lock+unlock/weft SpinLock", |b| {
        b.iter(|| drop(black_box(black_box(&weft_spin).lock())));
    });
    let weft_rw = weft::sync::RwLock::new(0u64);
    group.bench_function("uncontended read+unlock/weft RwLock", |b| {
        b.iter(|| drop(black_box(black_box(&weft_rw).read())));
    });
    let std_rw = std::sync::RwLock::new(0u64);
    group.bench_function("uncontended read+unlock/std RwLock", |b| {
        b.iter(|| drop(black_box(black_box(&std_rw).read().expect("not poisoned"))));
    });
    let pl_rw = parking_lot::RwLock::new(0u64);
    group.bench_function("uncontended read+unlock/parking_lot RwLock", |b| {
        b.iter(|| drop(black_box(black_box(&pl_rw).read())));
    });

    // --- Hand-off: one iteration = one one-way hand-off. ---
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    let one_worker = Runtime::builder().workers(1).build().expect("one worker thread");
    group.bench_function("hand-off/weft Mutex+Condvar (2 coroutines, 1 worker)", |b| {
        b.iter_custom(|iters| weft_handoff::<false>(&one_worker, iters, Clock::Wall));
    });
    // The same, timed by the worker's CPU clock (everything runs on that one
    // thread): what the hand-offs cost when another process takes the core.
    group.bench_function("hand-off/weft Mutex+Condvar (2 coroutines, 1 worker), worker CPU time", |b| {
        b.iter_custom(|iters| weft_handoff::<false>(&one_worker, iters, Clock::ThreadCpu));
    });
    drop(one_worker);
    group.bench_function("hand-off/std Mutex+Condvar (2 threads, pinned to CPU 0)", |b| {
        b.iter_custom(|iters| std_handoff(iters, true));
    });
    group.bench_function("hand-off/std Mutex+Condvar (2 threads, unpinned)", |b| {
        b.iter_custom(|iters| std_handoff(iters, false));
    });

    // --- Batches: one iteration = one whole batch. The same iteration count
    // in every sample (flat), so 10 samples take 10 x that, not 55 x. ---
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    let two_workers = Runtime::builder().workers(2).build().expect("two worker threads");
    let mut placements = Placements::default();

    group.bench_function("contended 2x1M/weft Mutex (2 coroutines, 2 workers)", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| placements.time("contended weft", || weft_contended(&two_workers, 2, CONTENDED_OPS)))
                .sum()
        });
    });
    group.bench_function("contended 2x1M/parking_lot Mutex (2 threads)", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| threads_contended::<parking_lot::Mutex<u64>>(2, CONTENDED_OPS)).sum());
    });
    group.bench_function("contended 2x1M/std Mutex (2 threads)", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| threads_contended::<std::sync::Mutex<u64>>(2, CONTENDED_OPS)).sum());
    });

    // Many waiters: the queue is long enough that every waiter waits longer
    // than the Mutex's fairness threshold (about 1 ms, weft's private
    // `FAIR_AFTER`), where fair hand-overs must stay rare (lot.rs, "Fair
    // hand-overs"); the tests' hammer, on 4 workers.
    let four_workers = Runtime::builder().workers(4).build().expect("four worker threads");
    group.bench_function("contended 256x10k/weft Mutex (256 coroutines, 4 workers)", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| weft_contended(&four_workers, 256, MANY_OPS).0).sum());
    });
    group.bench_function("contended 256x10k/parking_lot Mutex (256 threads)", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| threads_contended::<parking_lot::Mutex<u64>>(256, MANY_OPS)).sum());
    });
    drop(four_workers);

    group.measurement_time(Duration::from_secs(6));
    group.bench_function("producer-consumer 4p4c 1M cap 64/weft Mutex+2 Condvar (8 coroutines, 2 workers)", |b| {
        b.iter_custom(|iters| {
            (0..iters).map(|_| placements.time("prodcons weft", || weft_prodcons(&two_workers, PC_ITEMS))).sum()
        });
    });
    group.bench_function("producer-consumer 4p4c 1M cap 64/std Mutex+2 Condvar (8 threads)", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| std_prodcons(PC_ITEMS)).sum());
    });

    group.measurement_time(Duration::from_secs(3));
    group.bench_function("rwlock 95% read 4x200k/weft RwLock (4 coroutines, 2 workers)", |b| {
        b.iter_custom(|iters| {
            (0..iters).map(|_| placements.time("rwlock weft", || weft_rwlock(&two_workers, RW_OPS))).sum()
        });
    });
    group.bench_function("rwlock 95% read 4x200k/weft RwLock (4 threads)", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| threads_rwlock::<weft::sync::RwLock<u64>>(RW_OPS)).sum());
    });
    group.bench_function("rwlock 95% read 4x200k/std RwLock (4 threads)", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| threads_rwlock::<std::sync::RwLock<u64>>(RW_OPS)).sum());
    });
    group.bench_function("rwlock 95% read 4x200k/parking_lot RwLock (4 threads)", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| threads_rwlock::<parking_lot::RwLock<u64>>(RW_OPS)).sum());
    });
    drop(two_workers);

    group.finish();
    placements.report();
}

// ---------------------------------------------------------------------------
// Hand-off
// ---------------------------------------------------------------------------

/// `iters` one-way hand-offs between two coroutines of a one-worker runtime:
/// a counter under a weft Mutex, and a Condvar; coroutine `me` (0 or 1) may
/// increment the counter when `counter % 2 == me`, then notifies the other
/// and waits for its next turn. Each coroutine reads `clock` when it starts
/// and when it is done (both run on the one worker thread, so even its CPU
/// clock is common to them); the time is the span of those readings. With
/// `TIMED`, every wait is a `wait_timeout` of an hour (notified long before
/// it): each turn arms a timer that is never needed. (A const parameter, so
/// the untimed loop carries no test for it.)
fn weft_handoff<const TIMED: bool>(rt: &Runtime, iters: u64, clock: Clock) -> Duration {
    let turns = [iters - iters / 2, iters / 2];
    rt.block_on(move || {
        let shared = Arc::new((weft::sync::Mutex::new(0u64), weft::sync::Condvar::new()));
        let players: Vec<_> = (0..2)
            .map(|me| {
                let shared = Arc::clone(&shared);
                weft::spawn(move || {
                    let start = clock.now();
                    let (counter, turn) = &*shared;
                    let mut guard = counter.lock();
                    for _ in 0..turns[me as usize] {
                        while *guard % 2 != me {
                            guard = if TIMED {
                                let (next, result) = turn.wait_timeout(guard, Duration::from_secs(3600));
                                assert!(!result.timed_out(), "an hour-long wait timed out");
                                next
                            } else {
                                turn.wait(guard)
                            };
                        }
                        *guard += 1;
                        turn.notify_one();
                    }
                    drop(guard);
                    (start, clock.now())
                })
            })
            .collect();
        let elapsed = span(players.into_iter().map(|p| p.join().expect("a hand-off coroutine does not panic")));
        assert_eq!(*shared.0.lock(), iters);
        elapsed
    })
}

/// The same hand-off between two OS threads with std's Mutex and Condvar,
/// both pinned to CPU 0 or both free. Each thread times itself from the
/// barrier they start behind (thread creation is not timed).
fn std_handoff(iters: u64, pinned: bool) -> Duration {
    let shared = Arc::new((std::sync::Mutex::new(0u64), std::sync::Condvar::new()));
    let barrier = Arc::new(Barrier::new(2));
    let players: Vec<_> = [(0u64, iters - iters / 2), (1, iters / 2)]
        .into_iter()
        .map(|(me, turns)| {
            let shared = Arc::clone(&shared);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                if pinned {
                    pin_to_cpu(0).expect("CPU 0 is allowed for this process");
                }
                barrier.wait();
                let start = Clock::Wall.now();
                let (counter, turn) = &*shared;
                let mut guard = counter.lock().expect("not poisoned");
                for _ in 0..turns {
                    while *guard % 2 != me {
                        guard = turn.wait(guard).expect("not poisoned");
                    }
                    *guard += 1;
                    turn.notify_one();
                }
                drop(guard);
                (start, Clock::Wall.now())
            })
        })
        .collect();
    let elapsed = span(players.into_iter().map(|p| p.join().expect("a hand-off thread does not panic")));
    assert_eq!(*shared.0.lock().expect("not poisoned"), iters);
    elapsed
}

// ---------------------------------------------------------------------------
// Contended Mutex
// ---------------------------------------------------------------------------

/// `tasks` coroutines of `rt` each do `ops` increments under one weft
/// Mutex; the span from the first one's start to the last one's end.
fn weft_contended(rt: &Runtime, tasks: u64, ops: u64) -> (Duration, Vec<usize>) {
    rt.block_on(move || {
        let counter = Arc::new(weft::sync::Mutex::new(0u64));
        let tasks: Vec<_> = (0..tasks)
            .map(|_| {
                let counter = Arc::clone(&counter);
                weft::spawn(move || {
                    let start = Clock::Wall.now();
                    for _ in 0..ops {
                        *counter.lock() += 1;
                    }
                    ((start, Clock::Wall.now()), worker_index())
                })
            })
            .collect();
        let count = tasks.len() as u64;
        let (spans, workers): (Vec<_>, Vec<_>) =
            tasks.into_iter().map(|t| t.join().expect("an incrementer does not panic")).unzip();
        assert_eq!(*counter.lock(), count * ops);
        (span(spans), workers)
    })
}

/// A mutex around a counter, for the OS-thread side of the contended batch.
trait CounterLock: Default + Send + Sync + 'static {
    fn increment(&self);
    fn value(&self) -> u64;
}

impl CounterLock for parking_lot::Mutex<u64> {
    #[inline]
    fn increment(&self) {
        *self.lock() += 1;
    }
    fn value(&self) -> u64 {
        *self.lock()
    }
}

impl CounterLock for std::sync::Mutex<u64> {
    #[inline]
    fn increment(&self) {
        *self.lock().expect("not poisoned") += 1;
    }
    fn value(&self) -> u64 {
        *self.lock().expect("not poisoned")
    }
}

/// `tasks` OS threads each do `ops` increments under one `M`; the span from
/// the first one's start (behind a barrier: thread creation is not timed) to
/// the last one's end.
fn threads_contended<M: CounterLock>(tasks: u64, ops: u64) -> Duration {
    let counter = Arc::new(M::default());
    let barrier = Arc::new(Barrier::new(tasks as usize));
    let threads: Vec<_> = (0..tasks)
        .map(|_| {
            let counter = Arc::clone(&counter);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let start = Clock::Wall.now();
                for _ in 0..ops {
                    counter.increment();
                }
                (start, Clock::Wall.now())
            })
        })
        .collect();
    let elapsed = span(threads.into_iter().map(|t| t.join().expect("an incrementer does not panic")));
    assert_eq!(counter.value(), tasks * ops);
    elapsed
}

// ---------------------------------------------------------------------------
// Producer-consumer
// ---------------------------------------------------------------------------

/// A bounded queue: a weft Mutex around a VecDeque, and two weft Condvars.
struct WeftQueue {
    items: weft::sync::Mutex<VecDeque<u64>>,
    not_empty: weft::sync::Condvar,
    not_full: weft::sync::Condvar,
}

impl WeftQueue {
    fn new() -> WeftQueue {
        WeftQueue {
            items: weft::sync::Mutex::new(VecDeque::with_capacity(PC_CAPACITY)),
            not_empty: weft::sync::Condvar::new(),
            not_full: weft::sync::Condvar::new(),
        }
    }

    fn push(&self, item: u64) {
        let mut items = self.items.lock();
        while items.len() == PC_CAPACITY {
            items = self.not_full.wait(items);
        }
        items.push_back(item);
        self.not_empty.notify_one();
    }

    fn pop(&self) -> u64 {
        let mut items = self.items.lock();
        loop {
            if let Some(item) = items.pop_front() {
                self.not_full.notify_one();
                return item;
            }
            items = self.not_empty.wait(items);
        }
    }
}

/// The same queue with std's Mutex and Condvar.
struct StdQueue {
    items: std::sync::Mutex<VecDeque<u64>>,
    not_empty: std::sync::Condvar,
    not_full: std::sync::Condvar,
}

impl StdQueue {
    fn new() -> StdQueue {
        StdQueue {
            items: std::sync::Mutex::new(VecDeque::with_capacity(PC_CAPACITY)),
            not_empty: std::sync::Condvar::new(),
            not_full: std::sync::Condvar::new(),
        }
    }

    fn push(&self, item: u64) {
        let mut items = self.items.lock().expect("not poisoned");
        while items.len() == PC_CAPACITY {
            items = self.not_full.wait(items).expect("not poisoned");
        }
        items.push_back(item);
        self.not_empty.notify_one();
    }

    fn pop(&self) -> u64 {
        let mut items = self.items.lock().expect("not poisoned");
        loop {
            if let Some(item) = items.pop_front() {
                self.not_full.notify_one();
                return item;
            }
            items = self.not_empty.wait(items).expect("not poisoned");
        }
    }
}

/// The items producer `p` of `PC_SIDES` pushes, out of `items` in all: every
/// `PC_SIDES`-th number from `p`. Each consumer pops `items / PC_SIDES` of them.
fn produced_by(p: u64, items: u64) -> impl Iterator<Item = u64> {
    (p..items).step_by(PC_SIDES as usize)
}

/// The sum of 0..items, which the consumers' sums must add up to.
fn expected_sum(items: u64) -> u64 {
    items * (items - 1) / 2
}

/// `items` numbers through a `WeftQueue`, from 4 producer to 4 consumer
/// coroutines of `rt`; the span from the first one's start to the last
/// one's end.
fn weft_prodcons(rt: &Runtime, items: u64) -> (Duration, Vec<usize>) {
    assert_eq!(items % PC_SIDES, 0);
    rt.block_on(move || {
        let queue = Arc::new(WeftQueue::new());
        let producers: Vec<_> = (0..PC_SIDES)
            .map(|p| {
                let queue = Arc::clone(&queue);
                weft::spawn(move || {
                    let start = Clock::Wall.now();
                    for item in produced_by(p, items) {
                        queue.push(item);
                    }
                    ((start, Clock::Wall.now()), worker_index())
                })
            })
            .collect();
        let consumers: Vec<_> = (0..PC_SIDES)
            .map(|_| {
                let queue = Arc::clone(&queue);
                weft::spawn(move || {
                    let start = Clock::Wall.now();
                    let sum: u64 = (0..items / PC_SIDES).map(|_| queue.pop()).sum();
                    (sum, (start, Clock::Wall.now()), worker_index())
                })
            })
            .collect();
        let (mut spans, mut workers): (Vec<_>, Vec<_>) =
            producers.into_iter().map(|p| p.join().expect("a producer does not panic")).unzip();
        let mut sum = 0;
        for consumer in consumers {
            let (part, span, worker) = consumer.join().expect("a consumer does not panic");
            sum += part;
            spans.push(span);
            workers.push(worker);
        }
        assert_eq!(sum, expected_sum(items));
        (span(spans), workers)
    })
}

/// `items` numbers through a `StdQueue`, from 4 producer to 4 consumer OS
/// threads; the span from the first one's start (behind a barrier: thread
/// creation is not timed) to the last one's end.
fn std_prodcons(items: u64) -> Duration {
    assert_eq!(items % PC_SIDES, 0);
    let queue = Arc::new(StdQueue::new());
    let barrier = Arc::new(Barrier::new(2 * PC_SIDES as usize));
    let producers: Vec<_> = (0..PC_SIDES)
        .map(|p| {
            let queue = Arc::clone(&queue);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let start = Clock::Wall.now();
                for item in produced_by(p, items) {
                    queue.push(item);
                }
                (start, Clock::Wall.now())
            })
        })
        .collect();
    let consumers: Vec<_> = (0..PC_SIDES)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let start = Clock::Wall.now();
                let sum = (0..items / PC_SIDES).map(|_| queue.pop()).sum::<u64>();
                (sum, (start, Clock::Wall.now()))
            })
        })
        .collect();
    let mut spans: Vec<_> = producers.into_iter().map(|p| p.join().expect("a producer does not panic")).collect();
    let mut sum = 0;
    for consumer in consumers {
        let (part, span) = consumer.join().expect("a consumer does not panic");
        sum += part;
        spans.push(span);
    }
    assert_eq!(sum, expected_sum(items));
    span(spans)
}

// ---------------------------------------------------------------------------
// Read-mostly RwLock
// ---------------------------------------------------------------------------

/// One task's share of the RwLock batch on `lock`: `ops` operations, every
/// `RW_WRITE_EVERY`-th a write (an increment), the others a read.
fn rw_ops(ops: u64, read: impl Fn() -> u64, write: impl Fn()) {
    for i in 0..ops {
        if i % RW_WRITE_EVERY == RW_WRITE_EVERY - 1 {
            write();
        } else {
            black_box(read());
        }
    }
}

/// The writes the RwLock batch makes in all.
fn rw_expected(ops: u64) -> u64 {
    RW_TASKS * (ops / RW_WRITE_EVERY)
}

/// `RW_TASKS` coroutines of `rt` each do `ops` operations on one weft
/// RwLock; the span from the first one's start to the last one's end.
fn weft_rwlock(rt: &Runtime, ops: u64) -> (Duration, Vec<usize>) {
    rt.block_on(move || {
        let lock = Arc::new(weft::sync::RwLock::new(0u64));
        let tasks: Vec<_> = (0..RW_TASKS)
            .map(|_| {
                let lock = Arc::clone(&lock);
                weft::spawn(move || {
                    let start = Clock::Wall.now();
                    rw_ops(ops, || *lock.read(), || *lock.write() += 1);
                    ((start, Clock::Wall.now()), worker_index())
                })
            })
            .collect();
        let (spans, workers): (Vec<_>, Vec<_>) =
            tasks.into_iter().map(|t| t.join().expect("an RwLock task does not panic")).unzip();
        assert_eq!(*lock.read(), rw_expected(ops));
        (span(spans), workers)
    })
}

/// An RwLock around a counter, for the OS-thread side of the RwLock batch.
trait CounterRwLock: Default + Send + Sync + 'static {
    fn get(&self) -> u64;
    fn increment(&self);
}

impl CounterRwLock for std::sync::RwLock<u64> {
    #[inline]
    fn get(&self) -> u64 {
        *self.read().expect("not poisoned")
    }
    #[inline]
    fn increment(&self) {
        *self.write().expect("not poisoned") += 1;
    }
}

impl CounterRwLock for weft::sync::RwLock<u64> {
    #[inline]
    fn get(&self) -> u64 {
        *self.read()
    }
    #[inline]
    fn increment(&self) {
        *self.write() += 1;
    }
}

impl CounterRwLock for parking_lot::RwLock<u64> {
    #[inline]
    fn get(&self) -> u64 {
        *self.read()
    }
    #[inline]
    fn increment(&self) {
        *self.write() += 1;
    }
}

/// `RW_TASKS` OS threads each do `ops` operations on one `L`; the span from
/// the first one's start (behind a barrier: thread creation is not timed)
/// to the last one's end.
fn threads_rwlock<L: CounterRwLock>(ops: u64) -> Duration {
    let lock = Arc::new(L::default());
    let barrier = Arc::new(Barrier::new(RW_TASKS as usize));
    let threads: Vec<_> = (0..RW_TASKS)
        .map(|_| {
            let lock = Arc::clone(&lock);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let start = Clock::Wall.now();
                rw_ops(ops, || lock.get(), || lock.increment());
                (start, Clock::Wall.now())
            })
        })
        .collect();
    let elapsed = span(threads.into_iter().map(|t| t.join().expect("an RwLock thread does not panic")));
    assert_eq!(lock.get(), rw_expected(ops));
    elapsed
}

// ---------------------------------------------------------------------------
// Instruction-count mode
// ---------------------------------------------------------------------------

/// The runtime's parks, wakes, switches and sleeps since `before` (its
/// total counters then), for the count modes that say why a run was slow.
fn counters_since(rt: &Runtime, before: &weft::WorkerMetrics) -> String {
    let after = rt.metrics().total;
    format!(
        "parks {}, local wakes {}, remote wakes {}, switches {}, sleeps {}, wakeups {}",
        after.parks - before.parks,
        after.local_wakes - before.local_wakes,
        after.remote_wakes - before.remote_wakes,
        after.switches - before.switches,
        after.sleeps - before.sleeps,
        after.wakeups - before.wakeups,
    )
}

/// `WEFT_SYNC_COUNT=what:n`: one run of one workload, for callgrind.
fn count_mode(spec: &str) {
    let (what, n) = spec.split_once(':').unwrap_or_else(|| panic!("WEFT_SYNC_COUNT={spec}: expected what:n"));
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("WEFT_SYNC_COUNT={spec}: n is not a number"));
    let start = Instant::now();
    match what {
        "handoff" => {
            let rt = Runtime::builder().workers(1).build().expect("one worker thread");
            weft_handoff::<false>(&rt, n, Clock::Wall);
        }
        "handoff_nomon" => {
            let rt = Runtime::builder().workers(1).stall_threshold(None).build().expect("one worker thread");
            weft_handoff::<false>(&rt, n, Clock::Wall);
        }
        "handoff_timed" => {
            let rt = Runtime::builder().workers(1).build().expect("one worker thread");
            weft_handoff::<true>(&rt, n, Clock::Wall);
        }
        "contended" => {
            let rt = Runtime::builder().workers(2).build().expect("two worker threads");
            println!("workers: {:?}", weft_contended(&rt, 2, n).1);
        }
        "contended_many" => {
            let workers = std::env::var("WEFT_SYNC_WORKERS")
                .map_or(4, |w| w.parse().expect("WEFT_SYNC_WORKERS: expected a number of workers"));
            let rt = Runtime::builder().workers(workers).build().expect("the worker threads");
            let before = rt.metrics().total;
            let (elapsed, _) = weft_contended(&rt, 256, n);
            println!(
                "256 coroutines x {n} on {workers} workers: {:.1} ms; {}",
                elapsed.as_secs_f64() * 1e3,
                counters_since(&rt, &before)
            );
        }
        "prodcons" => {
            let rt = Runtime::builder().workers(2).build().expect("two worker threads");
            println!("workers: {:?}", weft_prodcons(&rt, n).1);
        }
        "rwlock" => {
            let rt = Runtime::builder().workers(2).build().expect("two worker threads");
            let before = rt.metrics().total;
            println!("workers: {:?}", weft_rwlock(&rt, n).1);
            println!("{}", counters_since(&rt, &before));
        }
        "rwlock1" => {
            let rt = Runtime::builder().workers(1).build().expect("one worker thread");
            println!("workers: {:?}", weft_rwlock(&rt, n).1);
        }
        _ => panic!("WEFT_SYNC_COUNT={spec}: unknown workload {what}"),
    }
    println!("{spec}: {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
}

// ---------------------------------------------------------------------------
// Interleaved mode
// ---------------------------------------------------------------------------

/// One workload of the interleaved mode: one run returns its time, which is
/// divided by `ops` (1 for a batch) and shown in `unit`.
struct Variant<'a> {
    name: &'static str,
    ops: u64,
    unit: Unit,
    run: Box<dyn FnMut() -> Duration + 'a>,
    samples: Vec<f64>,
}

#[derive(Clone, Copy)]
enum Unit {
    Ns,
    Ms,
}

impl<'a> Variant<'a> {
    fn new(name: &'static str, ops: u64, unit: Unit, run: Box<dyn FnMut() -> Duration + 'a>) -> Variant<'a> {
        Variant { name, ops, unit, run, samples: Vec::new() }
    }
}

/// `n` runs of `op`, timed together.
fn per_op(n: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        op();
    }
    start.elapsed()
}

/// `WEFT_SYNC_INTERLEAVED=rounds`: every workload of the criterion group
/// once per round, in turn, `rounds` times; then each one's median, min and
/// max. On a shared machine whose load changes from minute to minute, this
/// compares the contenders under the same conditions, which criterion's
/// one-after-another runs cannot.
fn interleaved_mode(spec: &str) {
    let rounds: usize = spec.parse().unwrap_or_else(|_| panic!("WEFT_SYNC_INTERLEAVED={spec}: expected a number"));
    const UNCONTENDED: u64 = 10_000_000;
    const WEFT_HANDOFFS: u64 = 1_000_000;
    const STD_HANDOFFS: u64 = 50_000;
    let one_worker = Runtime::builder().workers(1).build().expect("one worker thread");
    let two_workers = Runtime::builder().workers(2).build().expect("two worker threads");
    let placements = std::cell::RefCell::new(Placements::default());
    let weft_mutex = weft::sync::Mutex::new(0u64);
    let std_mutex = std::sync::Mutex::new(0u64);
    let pl_mutex = parking_lot::Mutex::new(0u64);
    let weft_spin = weft::sync::SpinLock::new(0u64);
    let weft_rw = weft::sync::RwLock::new(0u64);
    let std_rw = std::sync::RwLock::new(0u64);
    let pl_rw = parking_lot::RwLock::new(0u64);
    let mut variants = vec![
        Variant::new(
            "uncontended lock+unlock/weft Mutex",
            UNCONTENDED,
            Unit::Ns,
            Box::new(|| per_op(UNCONTENDED, || drop(black_box(black_box(&weft_mutex).lock())))),
        ),
        Variant::new(
            "uncontended lock+unlock/std Mutex",
            UNCONTENDED,
            Unit::Ns,
            Box::new(|| per_op(UNCONTENDED, || drop(black_box(black_box(&std_mutex).lock().expect("not poisoned"))))),
        ),
        Variant::new(
            "uncontended lock+unlock/parking_lot Mutex",
            UNCONTENDED,
            Unit::Ns,
            Box::new(|| per_op(UNCONTENDED, || drop(black_box(black_box(&pl_mutex).lock())))),
        ),
        Variant::new(
            "uncontended lock+unlock/weft SpinLock",
            UNCONTENDED,
            Unit::Ns,
            Box::new(|| per_op(UNCONTENDED, || drop(black_box(black_box(&weft_spin).lock())))),
        ),
        Variant::new(
            "uncontended read+unlock/weft RwLock",
            UNCONTENDED,
            Unit::Ns,
            Box::new(|| per_op(UNCONTENDED, || drop(black_box(black_box(&weft_rw).read())))),
        ),
        Variant::new(
            "uncontended read+unlock/std RwLock",
            UNCONTENDED,
            Unit::Ns,
            Box::new(|| per_op(UNCONTENDED, || drop(black_box(black_box(&std_rw).read().expect("not poisoned"))))),
        ),
        Variant::new(
            "uncontended read+unlock/parking_lot RwLock",
            UNCONTENDED,
            Unit::Ns,
            Box::new(|| per_op(UNCONTENDED, || drop(black_box(black_box(&pl_rw).read())))),
        ),
        Variant::new(
            "hand-off/weft (1 worker), wall",
            WEFT_HANDOFFS,
            Unit::Ns,
            Box::new(|| weft_handoff::<false>(&one_worker, WEFT_HANDOFFS, Clock::Wall)),
        ),
        Variant::new(
            "hand-off/weft (1 worker), worker CPU time",
            WEFT_HANDOFFS,
            Unit::Ns,
            Box::new(|| weft_handoff::<false>(&one_worker, WEFT_HANDOFFS, Clock::ThreadCpu)),
        ),
        Variant::new(
            "hand-off/std (2 threads, pinned to CPU 0)",
            STD_HANDOFFS,
            Unit::Ns,
            Box::new(|| std_handoff(STD_HANDOFFS, true)),
        ),
        Variant::new(
            "hand-off/std (2 threads, unpinned)",
            STD_HANDOFFS,
            Unit::Ns,
            Box::new(|| std_handoff(STD_HANDOFFS, false)),
        ),
        Variant::new(
            "contended 2x1M/weft Mutex (2 workers)",
            1,
            Unit::Ms,
            Box::new(|| {
                placements.borrow_mut().time("contended weft", || weft_contended(&two_workers, 2, CONTENDED_OPS))
            }),
        ),
        Variant::new(
            "contended 2x1M/parking_lot Mutex (2 threads)",
            1,
            Unit::Ms,
            Box::new(|| threads_contended::<parking_lot::Mutex<u64>>(2, CONTENDED_OPS)),
        ),
        Variant::new(
            "contended 2x1M/std Mutex (2 threads)",
            1,
            Unit::Ms,
            Box::new(|| threads_contended::<std::sync::Mutex<u64>>(2, CONTENDED_OPS)),
        ),
        Variant::new(
            "producer-consumer 1M/weft (8 coroutines, 2 workers)",
            1,
            Unit::Ms,
            Box::new(|| placements.borrow_mut().time("prodcons weft", || weft_prodcons(&two_workers, PC_ITEMS))),
        ),
        Variant::new("producer-consumer 1M/std (8 threads)", 1, Unit::Ms, Box::new(|| std_prodcons(PC_ITEMS))),
        Variant::new(
            "rwlock 95% read 4x200k/weft (2 workers)",
            1,
            Unit::Ms,
            Box::new(|| placements.borrow_mut().time("rwlock weft", || weft_rwlock(&two_workers, RW_OPS))),
        ),
        Variant::new(
            "rwlock 95% read 4x200k/std (4 threads)",
            1,
            Unit::Ms,
            Box::new(|| threads_rwlock::<std::sync::RwLock<u64>>(RW_OPS)),
        ),
        Variant::new(
            "rwlock 95% read 4x200k/parking_lot (4 threads)",
            1,
            Unit::Ms,
            Box::new(|| threads_rwlock::<parking_lot::RwLock<u64>>(RW_OPS)),
        ),
    ];
    for round in 0..rounds {
        for v in &mut variants {
            let elapsed = (v.run)();
            let scaled = match v.unit {
                Unit::Ns => elapsed.as_secs_f64() * 1e9 / v.ops as f64,
                Unit::Ms => elapsed.as_secs_f64() * 1e3 / v.ops as f64,
            };
            v.samples.push(scaled);
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    println!("{rounds} interleaved rounds: median (min .. max)");
    for v in &mut variants {
        v.samples.sort_by(f64::total_cmp);
        let unit = match v.unit {
            Unit::Ns => "ns/op",
            Unit::Ms => "ms/batch",
        };
        let n = v.samples.len();
        println!(
            "  {:<55} {:>10.2} {unit}  ({:.2} .. {:.2})",
            v.name,
            v.samples[n / 2],
            v.samples[0],
            v.samples[n - 1]
        );
    }
    drop(variants);
    placements.borrow_mut().report();
}

/// The runtime's monitor thread on against off, on the Mutex+Condvar
/// hand-off (see `monitor` in benches/runtime.rs). Run one after the
/// other, the two differ by whatever the machine did meanwhile: on the
/// shared 2-CPU machine the first of the pair came out 6-14 % slower in
/// either order. `WEFT_SYNC_MONITOR_AB` interleaves them.
///
/// ```text
/// cargo bench -p weft-benches --bench sync -- monitor/ --measurement-time 3
/// ```
fn monitor(c: &mut Criterion) {
    let mut group = c.benchmark_group("monitor");
    group.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    for (label, threshold) in [("on", Some(Duration::from_millis(100))), ("off", None)] {
        let rt = Runtime::builder().workers(1).stall_threshold(threshold).build().expect("one worker thread");
        group.bench_function(format!("hand-off Mutex+Condvar (2 coroutines, 1 worker), monitor {label}"), |b| {
            b.iter_custom(|iters| weft_handoff::<false>(&rt, iters, Clock::Wall));
        });
    }
    group.finish();
}

criterion_group!(benches, sync, monitor);

/// The `WEFT_HOST_PROBE` mode: see the module docs.
fn host_probe() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const ITERATIONS: u64 = 4_000_000;
    /// Nanoseconds per iteration of `op`, the median of 7 timings.
    fn median_ns(mut op: impl FnMut()) -> f64 {
        let mut timings: Vec<f64> = (0..7)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..ITERATIONS {
                    op();
                }
                start.elapsed().as_nanos() as f64 / ITERATIONS as f64
            })
            .collect();
        timings.sort_by(f64::total_cmp);
        timings[timings.len() / 2]
    }
    let word = AtomicU64::new(0);
    let rmw = median_ns(|| {
        black_box(word.fetch_add(1, Ordering::AcqRel));
    });
    let base = word.load(Ordering::Relaxed);
    let mut next = base;
    let cas = median_ns(|| {
        let swapped = word.compare_exchange(next, next + 1, Ordering::AcqRel, Ordering::Relaxed);
        next += u64::from(black_box(swapped).is_ok());
    });
    assert_eq!(next - base, 7 * ITERATIONS, "host probe: every compare-exchange should succeed");
    let clock = median_ns(|| {
        black_box(Instant::now());
    });
    let hint = median_ns(std::hint::spin_loop);
    println!(
        "{{\"atomic_rmw_ns\": {rmw:.2}, \"compare_exchange_ns\": {cas:.2}, \"clock_read_ns\": {clock:.2}, \"spin_hint_ns\": {hint:.2}}}"
    );
}

fn main() {
    if std::env::var_os("WEFT_HOST_PROBE").is_some() {
        host_probe();
        return;
    }
    if let Ok(rounds) = std::env::var("WEFT_SYNC_MONITOR_AB") {
        let rounds = rounds.parse().expect("WEFT_SYNC_MONITOR_AB=rounds");
        monitor_ab::monitor_ab("Mutex+Condvar hand-off (1 worker)", rounds, 1_000_000, |rt, n, clock| {
            weft_handoff::<false>(rt, n, clock)
        });
        return;
    }
    if let Ok(spec) = std::env::var("WEFT_SYNC_COUNT") {
        count_mode(&spec);
        return;
    }
    if let Ok(spec) = std::env::var("WEFT_SYNC_INTERLEAVED") {
        interleaved_mode(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
