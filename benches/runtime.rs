//! What the M:N runtime costs, next to OS threads: a yield between two
//! coroutines on one worker, spawning and joining many coroutines, and the
//! skynet spawn tree.
//!
//! Everything is in one criterion group, `runtime`, so the figures sit side by
//! side in the report:
//!
//! ```text
//! cargo bench -p weft-benches --bench runtime
//! ```
//!
//! | benchmark                                                  | one iteration is                                     |
//! |------------------------------------------------------------|------------------------------------------------------|
//! | `weft yield ping-pong (2 coroutines, 1 worker)`            | one `weft::yield_now` (two coroutines alternate)     |
//! | `weft yield ping-pong (..., 1 worker), worker CPU time`    | the same, timed by the worker thread's CPU clock     |
//! | `OS threads yield ping-pong`                               | one `std::thread::yield_now` (two threads, one core) |
//! | `weft spawn+join 100k (2 workers)`                         | spawn 100 000 empty coroutines, then join them all   |
//! | `std::thread spawn+join 1k`                                | one thread, spawned and joined in batches of 1 000   |
//! | `weft spawn+join bursts of 100 (1 worker)`                 | spawn 100 empty coroutines, then join them, in a loop |
//! | `weft spawn+join bursts of 100 (2 workers)`                | the same with a second worker idle beside the first  |
//! | `weft skynet 100k leaves (2 workers)`                      | a skynet tree of 111 111 coroutines                  |
//! | `weft skynet 1M leaves (2 workers)`                        | a skynet tree of 1 111 111 coroutines                |
//!
//! Setting `WEFT_RSS_PROBE` skips criterion and prints memory figures instead
//! (each mode wants a process of its own, so run them one at a time):
//!
//! ```text
//! WEFT_RSS_PROBE=1      cargo bench -p weft-benches --bench runtime  # RSS per parked coroutine (30 000 parked)
//! WEFT_RSS_PROBE=spawn  cargo bench -p weft-benches --bench runtime  # peak RSS of one spawn+join 100k (2 workers)
//! WEFT_RSS_PROBE=skynet cargo bench -p weft-benches --bench runtime  # peak RSS of one skynet 1M (2 workers)
//! WEFT_RSS_PROBE=skynet1 cargo bench -p weft-benches --bench runtime # the same on 1 worker
//! ```
//!
//! (`spawn` and `skynet` also sample the number of memory maps during the
//! run, which counts the mapped coroutine stacks, then repeat the run on the
//! same runtime and print each repeat's wall time, process CPU time and minor
//! page faults.)
//!
//! Setting `WEFT_RUNTIME_COUNT=what:n` runs one workload once, for an
//! instruction counter; the difference between two values of n gives the
//! instructions per yield or per coroutine:
//!
//! ```text
//! cargo bench -p weft-benches --bench runtime --no-run   # prints the path of the bench binary
//! WEFT_RUNTIME_COUNT=yield:1000000  valgrind --tool=callgrind target/release/deps/runtime-<hash>
//! WEFT_RUNTIME_COUNT=yield:2000000  valgrind --tool=callgrind target/release/deps/runtime-<hash>
//! WEFT_RUNTIME_COUNT=spawn:100000   valgrind --tool=callgrind --fair-sched=yes target/release/deps/runtime-<hash>
//! WEFT_RUNTIME_COUNT=skynet:100000  valgrind --tool=callgrind --fair-sched=yes target/release/deps/runtime-<hash>
//! ```
//!
//! The modes on 2 workers (`spawn`, `spawn_warm`, `skynet`) want
//! `--fair-sched=yes`: valgrind runs one thread at a time, and without it
//! the order is the kernel's, so the second worker steals more or less of
//! the work and the count moves by up to a third between runs of one build;
//! with it, by about 0.2 %. They also run without the stall monitor, whose
//! report (a backtrace of a worker that valgrind's slowness makes look
//! stalled) otherwise lands in one run's count and not the other's.
//!
//! Setting `WEFT_RUNTIME_PROBE=wake_many:N` prints the time per wake of N
//! coroutines woken in batches by an OS thread, each waiting on its own
//! channel (`probe_wake_many`): the case of a server with many
//! connections, whose coroutines' stacks are cold by their turn. (Up to
//! about 30 000: each stack is two memory maps, and `vm.max_map_count` is
//! 65 530 by default.)
//!
//! Setting `WEFT_RUNTIME_MONITOR_AB=rounds` runs the yield ping-pong on a
//! runtime with its monitor thread and on one without, alternately, and
//! prints each one's median (`common/monitor_ab.rs`); the criterion group
//! `monitor/` measures the same one after the other.

#[path = "common/clock.rs"]
mod clock;
#[path = "../examples/common/linux.rs"]
mod linux;
#[path = "common/monitor_ab.rs"]
mod monitor_ab;

use clock::Clock;
use criterion::{Criterion, SamplingMode, criterion_group};
use linux::pin_to_cpu;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use weft::Runtime;

/// Coroutines per batch in the weft spawn+join benchmark.
const SPAWN_BATCH: usize = 100_000;
/// Coroutines per burst in the small-burst spawn+join benchmarks.
const SMALL_BURST: usize = 100;
/// The burst before `WEFT_RUNTIME_COUNT=spawn_warm:n`'s measured one.
const SPAWN_WARM_UP: usize = 200_000;
/// Threads alive at once in the std::thread spawn+join benchmark.
const THREAD_BATCH: u64 = 1_000;
/// Coroutines parked at once by the RSS probe.
const PARKED: usize = 30_000;

fn runtime(c: &mut Criterion) {
    let mut group = c.benchmark_group("runtime");
    group.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));

    // One iteration = one yield: two coroutines on one worker take turns.
    let one_worker = Runtime::builder().workers(1).build().expect("one worker thread");
    group.bench_function("weft yield ping-pong (2 coroutines, 1 worker)", |b| {
        b.iter_custom(|iters| weft_yield_ping_pong(&one_worker, iters, Clock::Wall));
    });
    // The same, timed by the worker thread's CPU clock: what the yields cost
    // when another process takes the core meanwhile (a shared, loaded box).
    group.bench_function("weft yield ping-pong (2 coroutines, 1 worker), worker CPU time", |b| {
        b.iter_custom(|iters| weft_yield_ping_pong(&one_worker, iters, Clock::ThreadCpu));
    });
    drop(one_worker);

    // One iteration = one sched_yield, two threads pinned to CPU 0.
    group.bench_function("OS threads yield ping-pong", |b| {
        b.iter_custom(os_yield_ping_pong);
    });

    // One iteration = a burst of SMALL_BURST coroutines spawned, then
    // joined, by a coroutine that runs one burst after another, timed inside
    // it. On 2 workers the second has nothing of its own to do: it watches
    // the first one's queue, and may steal from it.
    for workers in [1, 2] {
        let runtime = Runtime::builder().workers(workers).build().expect("worker threads");
        let id = format!(
            "weft spawn+join bursts of {SMALL_BURST} ({workers} worker{})",
            if workers == 1 { "" } else { "s" }
        );
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                runtime.block_on(move || {
                    let start = Instant::now();
                    for _ in 0..iters {
                        spawn_join(SMALL_BURST);
                    }
                    start.elapsed()
                })
            });
        });
    }

    // The batch benchmarks take milliseconds to a second each: the same
    // iteration count in every sample (flat), so 10 samples take 10 x that
    // instead of criterion's linear 55 x.
    group.sampling_mode(SamplingMode::Flat).sample_size(10);

    let two_workers = Runtime::builder().workers(2).build().expect("two worker threads");
    // One iteration = spawn 100 000 empty coroutines from a coroutine, then
    // join them all.
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("weft spawn+join 100k (2 workers)", |b| {
        b.iter(|| two_workers.block_on(|| spawn_join(SPAWN_BATCH)));
    });

    // One iteration = one OS thread spawned and joined, 1 000 alive at once.
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("std::thread spawn+join 1k", |b| {
        b.iter_custom(thread_spawn_join);
    });

    // One iteration = a whole skynet tree.
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("weft skynet 100k leaves (2 workers)", |b| {
        b.iter(|| assert_eq!(two_workers.block_on(|| skynet(0, 100_000)), 100_000 * 99_999 / 2));
    });
    group.measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));
    group.bench_function("weft skynet 1M leaves (2 workers)", |b| {
        b.iter(|| assert_eq!(two_workers.block_on(|| skynet(0, 1_000_000)), 1_000_000 * 999_999 / 2));
    });
    drop(two_workers);

    group.finish();
}

/// `iters` yields in all, split between two coroutines of a one-worker
/// runtime. Timed inside the runtime, from before the two spawns to after
/// both joins (two spawns and joins, about a microsecond, amortised over
/// the yields). With one worker, everything runs on its thread, so its CPU
/// clock covers all of it. The worker runs the newest coroutine first and
/// starts the other within a few dozen rounds (its fairness rule); from then
/// on every yield switches from one to the other.
fn weft_yield_ping_pong(rt: &Runtime, iters: u64, clock: Clock) -> Duration {
    let first = iters - iters / 2;
    let second = iters / 2;
    rt.block_on(move || {
        let start = clock.now();
        let a = weft::spawn(move || {
            for _ in 0..first {
                weft::yield_now();
            }
        });
        let b = weft::spawn(move || {
            for _ in 0..second {
                weft::yield_now();
            }
        });
        a.join().expect("yielder a does not panic");
        b.join().expect("yielder b does not panic");
        clock.now() - start
    })
}

/// `iters` sched_yields in all, split between two threads pinned to CPU 0.
/// Thread creation is not timed: the clock starts when both threads have
/// reached a barrier and stops when both have been joined.
fn os_yield_ping_pong(iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(3));
    let yielder = |n: u64| {
        let barrier = Arc::clone(&barrier);
        std::thread::spawn(move || {
            pin_to_cpu(0).expect("CPU 0 is allowed for this process");
            barrier.wait();
            for _ in 0..n {
                std::thread::yield_now();
            }
        })
    };
    let a = yielder(iters - iters / 2);
    let b = yielder(iters / 2);
    barrier.wait();
    let start = Instant::now();
    a.join().expect("yielder a does not panic");
    b.join().expect("yielder b does not panic");
    start.elapsed()
}

/// Spawns `n` empty coroutines from the calling coroutine, then joins them.
fn spawn_join(n: usize) {
    let handles: Vec<_> = (0..n).map(|_| weft::spawn(|| ())).collect();
    for handle in handles {
        handle.join().expect("an empty coroutine does not panic");
    }
}

/// Spawns and joins `iters` OS threads, at most `THREAD_BATCH` alive at once.
fn thread_spawn_join(iters: u64) -> Duration {
    let start = Instant::now();
    let mut left = iters;
    while left > 0 {
        let batch = left.min(THREAD_BATCH);
        let handles: Vec<_> = (0..batch).map(|_| std::thread::spawn(|| black_box(1u8))).collect();
        for handle in handles {
            handle.join().expect("an empty thread does not panic");
        }
        left -= batch;
    }
    start.elapsed()
}

/// The skynet tree (as in `examples/skynet.rs`): `size` leaves under a
/// fan-out of 10, each leaf returning its index, each parent the sum of its
/// children's results.
fn skynet(num: u64, size: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let step = size / 10;
    let children: Vec<_> = (0..10).map(|i| weft::spawn(move || skynet(num + i * step, step))).collect();
    children.into_iter().map(|child| child.join().expect("a skynet child does not panic")).sum()
}

/// Skynet with a million leaves, checked.
fn skynet_1m() {
    assert_eq!(skynet(0, 1_000_000), 1_000_000 * 999_999 / 2);
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`, `VmPTE`...), in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// The bytes malloc has handed out and not had back, over all its arenas
/// (each chunk counted whole: its header and rounding included).
fn malloc_in_use() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    unsafe { libc::mallinfo2() }.uordblks
}

/// How many memory maps this process holds.
fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps is readable").lines().count()
}

/// The process's memory mappings, from `/proc/self/smaps`: start and end
/// address, permissions, resident KiB, and whether a path names it.
struct Mapping {
    start: usize,
    end: usize,
    perms: String,
    rss_kib: u64,
    named: bool,
}

fn mappings() -> Vec<Mapping> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps is readable");
    let mut maps: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))
        {
            let perms = fields.next().unwrap_or("").to_string();
            let named = fields.nth(3).is_some();
            maps.push(Mapping { start, end, perms, rss_kib: 0, named });
        } else if let Some(rss) = line.strip_prefix("Rss:")
            && let Some(last) = maps.last_mut()
        {
            last.rss_kib = rss.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        }
    }
    maps
}

/// For every coroutine stack of `size` bytes (a read-write mapping right
/// above a 4 KiB guard page), its resident KiB: a histogram
/// `(rss_kib, mappings)`.
fn stack_rss_histogram(maps: &[Mapping], size: usize) -> Vec<(u64, usize)> {
    let mut histogram = std::collections::BTreeMap::new();
    for pair in maps.windows(2) {
        let (guard, stack) = (&pair[0], &pair[1]);
        if guard.perms == "---p"
            && guard.end - guard.start == 4096
            && guard.end == stack.start
            && stack.perms == "rw-p"
            && stack.end - stack.start == size
        {
            *histogram.entry(stack.rss_kib).or_insert(0) += 1;
        }
    }
    histogram.into_iter().collect()
}

/// weft's task cells live in blocks of 256 KiB mapped at multiples of
/// 256 KiB (adjacent blocks may show as one mapping): the resident KiB of
/// the anonymous read-write mappings of that shape that are not stacks.
fn cell_block_rss_kib(maps: &[Mapping]) -> u64 {
    const BLOCK: usize = 256 << 10;
    maps.iter()
        .enumerate()
        .filter(|(i, m)| {
            let below_guard = *i > 0 && maps[i - 1].perms == "---p" && maps[i - 1].end == m.start;
            m.perms == "rw-p" && !m.named && !below_guard && m.start % BLOCK == 0 && (m.end - m.start) % BLOCK == 0
        })
        .map(|(_, m)| m.rss_kib)
        .sum()
}

/// `WEFT_RSS_PROBE=1`: RSS per parked coroutine, default stack size.
fn probe_parked() {
    let rt = Runtime::builder().workers(2).build().expect("two worker threads");
    // Warm up: workers started, their first coroutine run, the allocator's
    // per-thread arenas in place.
    rt.block_on(|| spawn_join(100));
    let started = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(PARKED);
    let maps_before = map_count();
    let pte_before = status_kib("VmPTE");
    let before = status_kib("VmRSS");
    let heap_before = malloc_in_use();
    let cells_before = cell_block_rss_kib(&mappings());
    let spawn_start = Instant::now();
    for _ in 0..PARKED {
        let started = Arc::clone(&started);
        let release = Arc::clone(&release);
        handles.push(rt.spawn(move || {
            started.fetch_add(1, Ordering::SeqCst);
            // Parks on the worker's timer heap; wakes once a second at most
            // to look at the release flag.
            while !release.load(Ordering::SeqCst) {
                weft::sleep(Duration::from_secs(1));
            }
        }));
    }
    while started.load(Ordering::SeqCst) < PARKED {
        std::thread::sleep(Duration::from_millis(1));
    }
    let all_started = spawn_start.elapsed();
    // The last ones counted themselves just before parking: let them park.
    std::thread::sleep(Duration::from_millis(100));
    let after = status_kib("VmRSS");
    let heap_after = malloc_in_use();
    let pte_after = status_kib("VmPTE");
    let maps_after = map_count();
    let maps = mappings();
    let cells_after = cell_block_rss_kib(&maps);
    let histogram = stack_rss_histogram(&maps, weft::coroutine::DEFAULT_STACK_SIZE);
    release.store(true, Ordering::SeqCst);
    let join_start = Instant::now();
    for handle in handles {
        handle.join().expect("a parked coroutine does not panic");
    }
    let joined = join_start.elapsed();
    let per = (after - before) as f64 / PARKED as f64;
    println!("RSS probe: {PARKED} coroutines parked in weft::sleep, 2 workers, default stack size");
    println!("  all started after {:.1} ms; released and joined in {:.1} ms", ms(all_started), ms(joined));
    println!("  VmRSS before {before} KiB, after {after} KiB: {} KiB more", after - before);
    println!("  RSS per parked coroutine: {per:.2} KiB");
    println!(
        "  malloc's bytes in use: {heap_before} -> {heap_after}, {:.0} bytes per coroutine (the probe's own join handles: 8)",
        (heap_after - heap_before) as f64 / PARKED as f64
    );
    println!(
        "  task cell blocks, resident: {cells_before} -> {cells_after} KiB, {:.0} bytes per coroutine",
        (cells_after - cells_before) as f64 * 1024.0 / PARKED as f64
    );
    println!(
        "  page tables (VmPTE, not in VmRSS): {pte_before} -> {pte_after} KiB, {:.2} KiB per coroutine",
        (pte_after - pte_before) as f64 / PARKED as f64
    );
    println!("  memory maps: {maps_before} -> {maps_after}");
    println!("  resident KiB per {} KiB stack mapping (rss: mappings):", weft::coroutine::DEFAULT_STACK_SIZE / 1024);
    for (rss, count) in histogram {
        println!("    {rss:>4} KiB: {count}");
    }
    drop(rt);
}

/// Minor page faults and CPU time (user + system) of the whole process.
fn rusage() -> (i64, Duration) {
    // SAFETY: all-zero is a valid `rusage` (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (usage.ru_minflt, tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// `WEFT_RSS_PROBE=spawn` / `skynet`: one run of `work` on a fresh two-worker
/// runtime, with the process's peak RSS before and after; then `repeat` more
/// runs on the same runtime, each with its wall time, the process's CPU time
/// and its minor page faults (what the allocator gives back and takes again).
fn probe_peak(what: &str, workers: usize, work: fn(), repeat: usize) {
    let rt = Runtime::builder().workers(workers).build().expect("worker threads");
    rt.block_on(|| spawn_join(100));
    let hwm_before = status_kib("VmHWM");
    let rss_before = status_kib("VmRSS");
    let maps_before = map_count();
    // A watcher samples the number of memory maps while the run goes on:
    // each coroutine stack (started and unfinished, or cached) holds two.
    let running = AtomicBool::new(true);
    let (elapsed, max_maps) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut max = 0;
            while running.load(Ordering::Relaxed) {
                max = max.max(map_count());
                std::thread::sleep(Duration::from_millis(1));
            }
            max
        });
        let start = Instant::now();
        rt.block_on(work);
        let elapsed = start.elapsed();
        running.store(false, Ordering::Relaxed);
        (elapsed, watcher.join().expect("the watcher does not panic"))
    });
    let hwm_after = status_kib("VmHWM");
    let rss_after = status_kib("VmRSS");
    println!("peak RSS probe: one {what} on a fresh {workers}-worker runtime, took {:.1} ms", ms(elapsed));
    println!("  before: VmRSS {rss_before} KiB, VmHWM {hwm_before} KiB");
    println!("  after:  VmRSS {rss_after} KiB, VmHWM {hwm_after} KiB");
    println!(
        "  memory maps: {maps_before} before, at most {max_maps} seen during the run (sampled every ~1 ms; \
         2 per mapped coroutine stack: about {} stacks above the start)",
        max_maps.saturating_sub(maps_before) / 2
    );
    println!(
        "  peak RSS of the process: {:.2} MiB ({:.2} MiB above the RSS before the run)",
        hwm_after as f64 / 1024.0,
        hwm_after.saturating_sub(rss_before) as f64 / 1024.0
    );
    if repeat > 0 {
        println!("  {repeat} more runs on the same runtime:");
    }
    for run in 1..=repeat {
        let (faults_before, cpu_before) = rusage();
        let start = Instant::now();
        rt.block_on(work);
        let wall = start.elapsed();
        let (faults_after, cpu_after) = rusage();
        println!(
            "    run {run}: {:.1} ms wall, {:.1} ms CPU (all threads), {} minor page faults",
            ms(wall),
            ms(cpu_after - cpu_before),
            faults_after - faults_before
        );
    }
    if repeat > 0 {
        println!("  VmHWM after all runs: {:.2} MiB", status_kib("VmHWM") as f64 / 1024.0);
    }
    drop(rt);
}

/// The 2-worker runtime of the counted modes: without the stall monitor.
/// Under valgrind a burst of spawns runs tens of times slower than
/// natively and holds its worker past the monitor's 100 ms threshold, and
/// the stall report's backtrace then landed in one run's count and not in
/// the other's: the count per spawn+join swung by 2 % between runs of one
/// build (587 to 602). The monitor's work is per unit of time, not per
/// spawn; the criterion benches keep it.
fn two_workers_for_counting() -> Runtime {
    Runtime::builder().workers(2).stall_threshold(None).build().expect("two worker threads")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `WEFT_RUNTIME_COUNT=what:n`: runs one workload once, outside criterion,
/// for an instruction counter (`valgrind --tool=callgrind`): `yield:n` (n
/// yields, 1 worker; `yield_nomon:n` the same without the monitor thread), `spawn:n` (spawn+join n, 2 workers: the
/// first burst, whose task cells come from the allocator), `spawn_warm:n` (the same after a burst of
/// `SPAWN_WARM_UP`, which left its cells in the worker's cache, as every burst after the first finds them)
/// or `skynet:n` (n leaves, a power of 10, 2 workers). Comparing two values of n gives the
/// instructions per yield or per coroutine with start-up cost subtracted.
fn count(spec: &str) {
    let (what, n) = spec.split_once(':').expect("WEFT_RUNTIME_COUNT is what:n");
    let n: u64 = n.parse().expect("WEFT_RUNTIME_COUNT: n is a number");
    let start = Instant::now();
    match what {
        "yield" => {
            let rt = Runtime::builder().workers(1).build().expect("one worker thread");
            weft_yield_ping_pong(&rt, n, Clock::Wall);
        }
        "yield_nomon" => {
            let rt = Runtime::builder().workers(1).stall_threshold(None).build().expect("one worker thread");
            weft_yield_ping_pong(&rt, n, Clock::Wall);
        }
        "spawn" => {
            let rt = two_workers_for_counting();
            rt.block_on(move || spawn_join(n as usize));
        }
        "spawn_warm" => {
            // The same after a burst of SPAWN_WARM_UP on the same worker: the
            // coroutine that spawns and joins both is the one that frees the
            // cells, so the measured burst takes its cells from the worker's
            // cache (n <= SPAWN_WARM_UP) instead of the allocator.
            assert!(n <= SPAWN_WARM_UP as u64, "spawn_warm:n takes n <= {SPAWN_WARM_UP}");
            let rt = two_workers_for_counting();
            rt.block_on(move || {
                spawn_join(SPAWN_WARM_UP);
                spawn_join(n as usize);
            });
        }
        "skynet" => {
            let rt = two_workers_for_counting();
            assert_eq!(rt.block_on(move || skynet(0, n)), n * (n - 1) / 2);
        }
        other => panic!(
            "WEFT_RUNTIME_COUNT: unknown workload {other:?}: expected yield, yield_nomon, spawn, spawn_warm or skynet"
        ),
    }
    println!("{what} x {n}: {:.1} ms", ms(start.elapsed()));
}

/// The runtime's monitor thread (`RuntimeBuilder::stall_threshold`) on
/// against off, on the yield ping-pong: the monitor reads each worker's
/// switch counter a few times a second, which costs the worker a cache-line
/// transfer per read; the counters themselves are kept either way.
///
/// ```text
/// cargo bench -p weft-benches --bench runtime -- monitor/ --measurement-time 3
/// ```
fn monitor(c: &mut Criterion) {
    let mut group = c.benchmark_group("monitor");
    group.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    for (label, threshold) in [("on", Some(Duration::from_millis(100))), ("off", None)] {
        let rt = Runtime::builder().workers(1).stall_threshold(threshold).build().expect("one worker thread");
        group.bench_function(format!("yield ping-pong (2 coroutines, 1 worker), monitor {label}"), |b| {
            b.iter_custom(|iters| weft_yield_ping_pong(&rt, iters, Clock::Wall));
        });
    }
    group.finish();
}

/// `WEFT_RUNTIME_PROBE=idle:SECONDS`: the process CPU time a runtime with
/// one worker per CPU and its monitor thread uses while idle (after one
/// `block_on` has woken every worker once), over SECONDS seconds.
fn probe_idle(seconds: f64) {
    let rt = Runtime::new().expect("worker threads");
    rt.block_on(|| ());
    // Let the workers and the monitor settle into their sleep.
    std::thread::sleep(Duration::from_millis(200));
    let (_, before) = rusage();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (_, after) = rusage();
    let cpu = after - before;
    println!(
        "idle probe: a {}-worker runtime with its monitor, idle for {seconds} s: {:.3} ms of CPU ({:.4} % of one core)",
        rt.workers(),
        ms(cpu),
        cpu.as_secs_f64() / seconds * 100.0
    );
}

/// `WEFT_RUNTIME_PROBE=what:arg`: one of the observability probes
/// (benches/report/observability.sh).
fn probe(spec: &str) {
    let (what, arg) = spec.split_once(':').unwrap_or_else(|| panic!("WEFT_RUNTIME_PROBE={spec}: expected what:arg"));
    match what {
        "idle" => probe_idle(arg.parse().unwrap_or_else(|_| panic!("WEFT_RUNTIME_PROBE={spec}: seconds"))),
        "wake_many" => probe_wake_many(arg.parse().unwrap_or_else(|_| panic!("WEFT_RUNTIME_PROBE={spec}: coroutines"))),
        other => panic!("WEFT_RUNTIME_PROBE: unknown probe {other:?}: expected idle:SECONDS or wake_many:COROUTINES"),
    }
}

/// `WEFT_RUNTIME_PROBE=wake_many:N`: N coroutines on one worker, each
/// waiting on a channel of its own; an OS thread sends to all of them, 21
/// rounds (the first a warm-up), and each wakes, touches its stack, counts
/// and waits again. Prints the median round's time per wake. Their wakes
/// reach the worker in batches, so its run queue holds many coroutines
/// whose stacks are cold by their turn, as a server's connections are:
/// what the worker's prefetch of the next resumes is for.
fn probe_wake_many(n: usize) {
    const ROUNDS: u64 = 21;
    let rt = Runtime::builder().workers(1).build().expect("one worker thread");
    let done = Arc::new(AtomicUsize::new(0));
    let (senders, handles): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| {
            let (tx, rx) = weft::sync::channel::bounded::<u64>(1);
            let done = Arc::clone(&done);
            let handle = rt.spawn(move || {
                let mut scratch = [0u64; 32];
                for round in rx.iter() {
                    scratch[round as usize % 32] += round;
                    black_box(&scratch);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
            (tx, handle)
        })
        .unzip();
    let mut per_wake = Vec::new();
    for round in 0..ROUNDS {
        let before = done.load(Ordering::Relaxed);
        let start = Instant::now();
        for tx in &senders {
            tx.send(round).expect("a waiter is there");
        }
        while done.load(Ordering::Relaxed) < before + n {
            std::hint::spin_loop();
        }
        if round > 0 {
            per_wake.push(start.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    drop(senders);
    for handle in handles {
        handle.join().expect("a waiter panicked");
    }
    per_wake.sort_by(f64::total_cmp);
    println!("wake_many {n}: {:.1} ns per wake (median of {} rounds)", per_wake[per_wake.len() / 2], ROUNDS - 1);
}

criterion_group!(benches, runtime, monitor);

fn main() {
    if let Ok(rounds) = std::env::var("WEFT_RUNTIME_MONITOR_AB") {
        let rounds = rounds.parse().expect("WEFT_RUNTIME_MONITOR_AB=rounds");
        monitor_ab::monitor_ab("yield ping-pong (1 worker)", rounds, 2_000_000, |rt, n, clock| {
            weft_yield_ping_pong(rt, n, clock)
        });
        return;
    }
    if let Ok(spec) = std::env::var("WEFT_RUNTIME_COUNT") {
        count(&spec);
        return;
    }
    if let Ok(spec) = std::env::var("WEFT_RUNTIME_PROBE") {
        probe(&spec);
        return;
    }
    if let Ok(mode) = std::env::var("WEFT_RSS_PROBE") {
        match mode.as_str() {
            "1" => probe_parked(),
            "spawn" => probe_peak("spawn+join 100k", 2, || spawn_join(SPAWN_BATCH), 9),
            "skynet" => probe_peak("skynet 1M leaves", 2, skynet_1m, 4),
            "skynet1" => probe_peak("skynet 1M leaves", 1, skynet_1m, 4),
            other => panic!("WEFT_RSS_PROBE={other:?}: expected 1, spawn, skynet or skynet1"),
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
