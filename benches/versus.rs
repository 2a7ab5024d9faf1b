//! The workloads of `examples/versus_threads` under criterion, with a peer
//! beside weft and OS threads: [may](https://crates.io/crates/may), the
//! other stackful-coroutine runtime for Rust. The workload code is the
//! example's own (`examples/versus_threads/workloads.rs`, mounted here), at
//! the example's full sizes, so the ratios of this group and of the
//! example's table measure the same thing twice (`benches/report` prints
//! them side by side).
//!
//! ```text
//! cargo bench -p weft-benches --bench versus                                  # weft, OS threads, may on one worker per core
//! WEFT_BENCH_MAY_WORKERS=1 cargo bench -p weft-benches --bench versus -- /may # may's one-worker rows
//! ```
//!
//! Ids are `<key>/<side>`: the key is the example's row key
//! (`handoff_pinned`, `spawn_join`, ...; all but `parked_memory`, a size),
//! plus `channel_handoff` (a ping-pong over may's and std's mpsc; weft's
//! channels have their own bench, `benches/channel.rs`, and the nearest
//! row here is `condvar_handoff`); the side is `weft`, `threads` or `may`.
//! One iteration is one whole run of the workload, exactly as the example
//! runs it (a fresh weft runtime per run, but for `spawn_join`, whose runs
//! share one, as the example's do); its throughput (criterion's
//! `Elements`) is the run's operation count (hand-offs, tasks, increments,
//! items, operations, leaves), so criterion's report also gives the time
//! per operation.
//!
//! may's worker count is process-wide and fixed at its first use, so it
//! comes from `WEFT_BENCH_MAY_WORKERS` (default: one per core, like weft's
//! multi-worker runtimes). The hand-off rows, where weft runs on one
//! worker, get a may row only when may has one worker too (the second
//! command above); the other rows only when it has more.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "../examples/versus_threads/workloads.rs"]
#[allow(dead_code, reason = "shared with the example; the bench times everything but the memory row")]
mod workloads;

use workloads::{Sizes, on_weft};

/// Coroutines spawned (then joined) in may's spawn+join, and leaves of its
/// skynet: fewer than weft's (100 000 and 1 000 000). may gives every
/// coroutine its own mmap'd stack with a guard page when it is spawned (two
/// memory maps), so tens of thousands of live coroutines exceed Linux's
/// default `vm.max_map_count` (65 530) and may panics ("failed to alloc sys
/// stack"; seen with 100 000 spawns, and with skynet's 100 000 leaves);
/// weft takes a stack only when a coroutine first runs. Figures are per
/// task and per leaf, so the sizes still compare (as the OS threads', which
/// run 1 000 and 10 000).
const MAY_SPAWNS: u64 = 20_000;
const MAY_LEAVES: u64 = 10_000;

/// The workloads on weft coroutines and `weft::sync`.
#[allow(dead_code, reason = "parked_memory is a size, not timed here")]
mod weft_side {
    use weft::sync::{Condvar, Mutex, RwLock, Semaphore};
    use weft::{sleep, spawn, yield_now};
    crate::workloads::same_code!();
}

/// The same workloads on OS threads and `std::sync`.
#[allow(dead_code, reason = "parked_memory is a size, not timed here")]
mod thread_side {
    use crate::workloads::os::{Condvar, Mutex, RwLock, Semaphore};
    use std::thread::{sleep, spawn, yield_now};
    crate::workloads::same_code!();
}

/// The same workloads on may's coroutines and `may::sync`.
#[allow(dead_code, reason = "parked_memory is a size, not timed here")]
mod may_side {
    use crate::peer_may::{Condvar, Mutex, RwLock, Semaphore, spawn, yield_now};
    use may::coroutine::sleep;
    crate::workloads::same_code!();
}

/// `may::sync` behind weft's names (the example's `poison_free_locks!`),
/// may's counting semaphore, and may's `spawn`.
mod peer_may {
    crate::workloads::poison_free_locks!(may::sync);

    /// may's `spawn`.
    pub fn spawn<F, T>(f: F) -> may::coroutine::JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // SAFETY: may's spawn is unsafe for two reasons (its docs): a
        // coroutine may move between worker threads, so a thread-local
        // reference held across a switch would dangle, and an overflow of
        // its stack is not caught. The workloads hold no thread-local across
        // a blocking call (`thread::current()` is read and dropped at once),
        // and each coroutine runs one shallow frame (skynet recurses one
        // frame per coroutine), far inside may's default stack.
        unsafe { may::coroutine::spawn(f) }
    }

    /// What the workloads' wait loops (their start line) call to let other
    /// coroutines run: a 10 µs sleep, not may's `yield_now`. may re-queues a
    /// yielding coroutine ahead of coroutines that have not started yet, so
    /// a wait loop of bare yields can starve them: readers-writers' start
    /// line (8 coroutines on 2 workers, each yielding until all 8 have
    /// arrived) was seen spinning for minutes with both workers busy
    /// yielding. The start line is outside the timed part.
    pub fn yield_now() {
        may::coroutine::sleep(std::time::Duration::from_micros(10));
    }

    /// Runs `f` as a may coroutine and waits for it (so the driver is a
    /// coroutine, as weft's is inside `block_on`).
    pub fn on_may<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        spawn(f).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// may's counting semaphore (`Semphore`, sic) with weft's P/V names.
    pub struct Semaphore(may::sync::Semphore);

    /// A taken permit; only `forget` is used (P/V style).
    pub struct SemaphorePermit;

    impl SemaphorePermit {
        pub fn forget(self) {}
    }

    impl Semaphore {
        pub fn new(permits: usize) -> Semaphore {
            Semaphore(may::sync::Semphore::new(permits))
        }

        pub fn acquire(&self) -> SemaphorePermit {
            self.0.wait();
            SemaphorePermit
        }

        pub fn add_permits(&self, n: usize) {
            (0..n).for_each(|_| self.0.post());
        }
    }
}

use peer_may::on_may;

/// Two may coroutines take `turns` turns each through a counter, yielding
/// until it is theirs (the example's weft yield hand-off, on may). With
/// `pin`, the worker running them is pinned to CPU 0 for good: run it last.
fn may_yield_handoff(turns: u64, pin: bool) -> Duration {
    on_may(move || {
        if pin {
            workloads::pin_here();
        }
        let handoffs = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let players: Vec<_> = (0..2u64)
            .map(|me| {
                let handoffs = Arc::clone(&handoffs);
                peer_may::spawn(move || {
                    for _ in 0..turns {
                        while handoffs.load(Ordering::Acquire) % 2 != me {
                            may::coroutine::yield_now();
                        }
                        handoffs.fetch_add(1, Ordering::Release);
                    }
                })
            })
            .collect();
        for player in players {
            player.join().expect("a yielding may coroutine panicked");
        }
        let elapsed = start.elapsed();
        workloads::verify(handoffs.load(Ordering::SeqCst) == 2 * turns, "may yield hand-off: every turn taken");
        elapsed
    })
}

/// Two tasks take `turns` turns each, passing a counter back and forth
/// through two channels (`ping`, `pong`); `spawn` starts the second task,
/// and `channel` makes a channel. Generic over std's and may's mpsc.
macro_rules! channel_ping_pong {
    ($turns:expr, $spawn:path, $channel:path) => {{
        let turns: u64 = $turns;
        let (ping_tx, ping_rx) = $channel();
        let (pong_tx, pong_rx) = $channel();
        let start = Instant::now();
        let echo = $spawn(move || {
            for _ in 0..turns {
                let n: u64 = ping_rx.recv().expect("the pinger hung up");
                pong_tx.send(n + 1).expect("the pinger hung up");
            }
        });
        let mut n = 0u64;
        for _ in 0..turns {
            ping_tx.send(n + 1).expect("the echo hung up");
            n = pong_rx.recv().expect("the echo hung up");
        }
        echo.join().expect("the echo task panicked");
        let elapsed = start.elapsed();
        workloads::verify(n == 2 * turns, "channel hand-off: every turn taken");
        elapsed
    }};
}

/// One benchmark: each iteration is one run of `run` (which returns the
/// measured part of the run), over `ops` operations.
fn bench(group: &mut BenchmarkGroup<'_, WallTime>, id: &str, ops: u64, mut run: impl FnMut() -> Duration) {
    group.throughput(Throughput::Elements(ops));
    group.bench_function(id, |b| b.iter_custom(|iters| (0..iters).map(|_| run()).sum()));
}

fn versus(c: &mut Criterion) {
    let s = Sizes::FULL;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let may_workers = may_workers(workers);
    // The hand-off rows (weft on one worker) compare with may on one
    // worker; the others with may on `workers`.
    let (may_one, may_many) = (may_workers == 1, may_workers > 1 || workers == 1);

    let mut group = c.benchmark_group("versus");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));

    let (turns, ops) = (s.weft_yield_turns, workloads::handoff_ops(s.weft_yield_turns));
    bench(&mut group, "handoff_pinned/weft", ops, || workloads::weft_yield_handoff(turns, true));
    let futex_turns = s.futex_turns_pinned;
    bench(&mut group, "handoff_pinned/threads", workloads::handoff_ops(futex_turns), || {
        workloads::futex_handoff(futex_turns, true)
    });
    bench(&mut group, "handoff_unpinned/weft", ops, || workloads::weft_yield_handoff(turns, false));
    if may_one {
        bench(&mut group, "handoff_unpinned/may", ops, || may_yield_handoff(turns, false));
    }
    let futex_turns = s.futex_turns_unpinned;
    bench(&mut group, "handoff_unpinned/threads", workloads::handoff_ops(futex_turns), || {
        workloads::futex_handoff(futex_turns, false)
    });

    let tasks = s.weft_spawns;
    // One runtime for every run (as the example's row, which says why).
    let runtime = weft::Runtime::builder().workers(workers).build().expect("cannot start weft's worker threads");
    bench(&mut group, "spawn_join/weft", tasks, || runtime.block_on(|| weft_side::spawn_join(tasks)));
    drop(runtime);
    if may_many {
        let tasks = MAY_SPAWNS;
        bench(&mut group, "spawn_join/may", tasks, || on_may(move || may_side::spawn_join(tasks)));
    }
    let threads = s.thread_spawns;
    bench(&mut group, "spawn_join/threads", threads, || thread_side::spawn_join(threads));

    let (turns, threads_turns) = (s.weft_condvar_turns, s.thread_condvar_turns);
    let ops = workloads::handoff_ops(turns);
    bench(&mut group, "condvar_handoff/weft", ops, || on_weft(1, || weft_side::condvar_handoff(turns)));
    if may_one {
        bench(&mut group, "condvar_handoff/may", ops, || on_may(move || may_side::condvar_handoff(turns)));
        bench(&mut group, "channel_handoff/may", ops, || {
            on_may(move || channel_ping_pong!(turns, peer_may::spawn, may::sync::mpsc::channel))
        });
    }
    bench(&mut group, "condvar_handoff/threads", workloads::handoff_ops(threads_turns), || {
        thread_side::condvar_handoff(threads_turns)
    });
    bench(&mut group, "channel_handoff/threads", workloads::handoff_ops(threads_turns), || {
        channel_ping_pong!(threads_turns, std::thread::spawn, std::sync::mpsc::channel)
    });

    let (tasks, per_task) = (workers.max(2), s.increments_per_task);
    let ops = tasks as u64 * per_task;
    bench(&mut group, "contended_mutex/weft", ops, || on_weft(tasks, || weft_side::contended_mutex(tasks, per_task).0));
    if may_many {
        bench(&mut group, "contended_mutex/may", ops, || on_may(move || may_side::contended_mutex(tasks, per_task).0));
    }
    bench(&mut group, "contended_mutex/threads", ops, || thread_side::contended_mutex(tasks, per_task).0);

    let items = s.items_per_producer;
    let ops = workloads::producer_consumer_ops(items);
    bench(&mut group, "pc_condvar/weft", ops, || on_weft(workers, || weft_side::producer_consumer_condvar(items)));
    if may_many {
        bench(&mut group, "pc_condvar/may", ops, || on_may(move || may_side::producer_consumer_condvar(items)));
    }
    bench(&mut group, "pc_condvar/threads", ops, || thread_side::producer_consumer_condvar(items));
    bench(&mut group, "pc_semaphore/weft", ops, || on_weft(workers, || weft_side::producer_consumer_semaphore(items)));
    if may_many {
        bench(&mut group, "pc_semaphore/may", ops, || on_may(move || may_side::producer_consumer_semaphore(items)));
    }
    bench(&mut group, "pc_semaphore/threads", ops, || thread_side::producer_consumer_semaphore(items));

    let per_task = s.rw_ops_per_task;
    let ops = workloads::readers_writers_ops(per_task);
    bench(&mut group, "readers_writers/weft", ops, || on_weft(workers, || weft_side::readers_writers(per_task)));
    if may_many {
        bench(&mut group, "readers_writers/may", ops, || on_may(move || may_side::readers_writers(per_task)));
    }
    bench(&mut group, "readers_writers/threads", ops, || thread_side::readers_writers(per_task));

    let leaves = s.weft_leaves;
    bench(&mut group, "skynet/weft", leaves, || on_weft(workers, || weft_side::skynet(leaves)));
    if may_many {
        let leaves = MAY_LEAVES;
        bench(&mut group, "skynet/may", leaves, || on_may(move || may_side::skynet(leaves)));
    }
    let leaves = s.thread_leaves;
    bench(&mut group, "skynet/threads", leaves, || thread_side::skynet(leaves));

    // Last: pinning may's only worker lasts for the rest of the process.
    if may_one {
        let turns = s.weft_yield_turns;
        bench(&mut group, "handoff_pinned/may", workloads::handoff_ops(turns), || may_yield_handoff(turns, true));
    }
    group.finish();
}

/// may's worker count: `WEFT_BENCH_MAY_WORKERS`, else `default`; set
/// before may's first use.
fn may_workers(default: usize) -> usize {
    let workers = match std::env::var("WEFT_BENCH_MAY_WORKERS") {
        Ok(n) => n
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("WEFT_BENCH_MAY_WORKERS={n:?}: expected a worker count of at least 1")),
        Err(_) => default,
    };
    may::config().set_workers(workers);
    workers
}

criterion_group!(benches, versus);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let failed = workloads::failed_checks();
    assert!(
        failed == 0,
        "{failed} workload checks failed (see the messages above): a figure above is not to be trusted"
    );
}
