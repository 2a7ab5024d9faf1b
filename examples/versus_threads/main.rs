//! The same workloads on weft coroutines and on OS threads (`std::thread` +
//! `std::sync`), side by side in one table.
//!
//! ```text
//! cargo run --release --example versus_threads                          # 20-30 s on 2 cores
//! cargo run --release --example versus_threads -- --quick               # CI's short mode (a few seconds)
//! cargo run --release --example versus_threads -- --json results.json   # also write the rows as JSON
//! cargo run --release --example versus_threads -- --workers 8 --only skynet,pc_condvar
//! cargo run --release --example versus_threads -- --same-worker --only contended_mutex,readers_writers
//! ```
//!
//! `--same-worker` spawns weft's coroutines of the lock rows (contended
//! Mutex, the two producer-consumers, readers-writers) with
//! `weft::Builder::same_worker`, so that they all run on the worker of the
//! coroutine that spawns them instead of being spread over the workers.
//!
//! What it measures, weft against OS threads:
//!
//! - **hand-off latency**: two tasks take turns. weft: two coroutines on a
//!   one-worker runtime, each `yield_now`s until it is its turn; threads: two
//!   OS threads that sleep on a futex word and wake each other (the cheapest
//!   way one thread hands control to another). Once with everything pinned to
//!   CPU 0, once unpinned.
//! - **spawn+join** of empty tasks, per task.
//! - **memory per parked task**: how much the process's resident memory
//!   (`VmRSS`) grows per task blocked on a gate (a Mutex + Condvar).
//! - **Mutex+Condvar hand-off**, **contended Mutex** (one task per worker),
//!   **producer-consumer** (Mutex + 2 Condvars, and P/V Semaphores),
//!   **readers-writers** (95 % reads) and **skynet** (a tree of tasks, each
//!   parent spawning ten children and summing their results).
//! - **channel**: producers and one consumer through a bounded channel,
//!   `weft::sync::channel` on coroutines against `std::sync::mpsc` on OS
//!   threads (std's receiver is single-consumer).
//! - **socket echo**: a round trip of a 64-byte message over a Unix socket
//!   pair: two coroutines of a one-worker runtime with `weft::net` (each
//!   waits for its socket on the worker's epoll) against two OS threads
//!   with `std::os::unix::net` (blocking reads and writes).
//!
//! Apart from the hand-off latency rows, each workload is written once (in
//! `workloads.rs`, shared with the criterion bench `benches/versus.rs`) and
//! compiled twice: with `weft::spawn` and `weft::sync`, and with
//! `std::thread::spawn` and `std::sync` (behind thin wrappers that give them
//! weft's names). Each figure is the median of several runs, after one
//! unmeasured warm-up run (none for the memory row, each of whose runs is
//! a fresh process of this program, so that no earlier row's freed memory
//! is reused), and the `±`
//! columns give the runs' spread (half their range, as a share of the
//! median); the ratio column says how many times better weft did (above 1:
//! weft wins), whether the unit is a time, a size or a rate.
//!
//! Options: `--workers N` sets the worker count of the multi-worker runtimes
//! (default: one per core) and the task count of the contended Mutex;
//! `--only KEY,KEY` runs only the rows with those keys (`handoff_pinned`,
//! `handoff_unpinned`, `spawn_join`, `parked_memory`, `condvar_handoff`,
//! `contended_mutex`, `pc_condvar`, `pc_semaphore`, `readers_writers`,
//! `skynet`, `channel`, `socket_echo`; the keys are also in the JSON); `--list` prints the keys, one
//! per line, and exits.
//!
//! Every run checks its own results (sums, counts, invariants); the last
//! line is `check: ok` only when every check of every run passed. Progress
//! goes to stderr, the header and the table to stdout.

mod workloads;

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime};
use workloads::{CAPACITY, CONSUMERS, PRODUCERS, RW_TASKS, Sizes, on_weft};

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/// The command line: `--quick`, `--json PATH`, `--workers N`, `--only KEYS`,
/// `--same-worker`, `--list`.
struct Options {
    quick: bool,
    same_worker: bool,
    json: Option<String>,
    workers: Option<usize>,
    only: Option<Vec<String>>,
}

const USAGE: &str =
    "usage: versus_threads [--quick] [--json PATH] [--workers N] [--only KEY,KEY...] [--same-worker] [--list]";

impl Options {
    fn parse() -> Options {
        let mut options = Options { quick: false, same_worker: false, json: None, workers: None, only: None };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--same-worker" => options.same_worker = true,
                "--json" => match args.next() {
                    Some(path) => options.json = Some(path),
                    None => usage("--json needs a path"),
                },
                "--workers" => match args.next().and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) if n > 0 => options.workers = Some(n),
                    _ => usage("--workers needs a worker count of at least 1"),
                },
                "--only" => match args.next() {
                    Some(keys) => {
                        let keys: Vec<String> = keys.split(',').map(|k| k.trim().to_string()).collect();
                        if let Some(unknown) = keys.iter().find(|k| !ROWS.iter().any(|(key, _)| key == k)) {
                            let known: Vec<&str> = ROWS.iter().map(|(key, _)| *key).collect();
                            usage(&format!("unknown row key {unknown:?}; the keys are {}", known.join(", ")));
                        }
                        options.only = Some(keys);
                    }
                    None => usage("--only needs a comma-separated list of row keys"),
                },
                "--list" => {
                    ROWS.iter().for_each(|(key, _)| println!("{key}"));
                    std::process::exit(0);
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => usage(&format!("unknown argument {other:?}")),
            }
        }
        options
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("versus_threads: {problem}\n{USAGE}");
    std::process::exit(2);
}

// ---------------------------------------------------------------------------
// Progress and runs
// ---------------------------------------------------------------------------

/// One line per workload on stderr, growing as its runs finish:
/// `[3/10] memory per parked task: weft run 1/3 2/3 3/3; threads run 1/3 ...`.
struct Progress {
    step: usize,
    steps: usize,
    started: Instant,
}

impl Progress {
    fn begin(&mut self, workload: &str) {
        self.step += 1;
        self.started = Instant::now();
        eprint!("[{}/{}] {workload}:", self.step, self.steps);
        flush_stderr();
    }

    fn end(&self) {
        eprintln!(" ({:.1} s)", self.started.elapsed().as_secs_f64());
    }
}

fn flush_stderr() {
    let _ = std::io::stderr().flush();
}

/// A figure and the runs it is the median of.
struct Figure {
    median: f64,
    runs: Vec<f64>,
}

impl Figure {
    /// Half the runs' range as a share of the median: the noise the table
    /// reports.
    fn spread(&self) -> f64 {
        let (min, max) =
            self.runs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        if self.median != 0.0 { (max - min) / 2.0 / self.median.abs() } else { f64::NAN }
    }
}

/// Runs `f` once to warm up (its result is dropped), then `runs` times
/// (showing each run on the progress line), and returns the median of those
/// results, with every one of them. The warm-up run is what criterion's
/// warm-up time is to the `versus` bench: the first run of a workload in a
/// process pays for growing the allocator's heap and for first-touch page
/// faults (seen: spawn+join's first run 30 % slower than the next four),
/// which the bench's steady state does not, and the cross-check compares
/// the two.
fn median_of(side: &str, runs: usize, mut f: impl FnMut() -> f64) -> Figure {
    eprint!(" {side} warm-up");
    flush_stderr();
    f();
    median_of_cold(side, runs, f)
}

/// [`median_of`] without the warm-up run: for the memory row, where the
/// first touch of the memory is what is measured.
fn median_of_cold(side: &str, runs: usize, mut f: impl FnMut() -> f64) -> Figure {
    eprint!(" {side} run");
    let mut results = Vec::with_capacity(runs);
    for run in 1..=runs {
        eprint!(" {run}/{runs}");
        flush_stderr();
        results.push(f());
    }
    eprint!(";");
    let mut sorted = results.clone();
    sorted.sort_by(f64::total_cmp);
    Figure { median: sorted[sorted.len() / 2], runs: results }
}

/// Nanoseconds per operation.
fn nanos_per(elapsed: Duration, ops: u64) -> f64 {
    elapsed.as_nanos() as f64 / ops as f64
}

/// Millions of operations per second.
fn millions_per_second(elapsed: Duration, ops: u64) -> f64 {
    ops as f64 / elapsed.as_secs_f64() / 1e6
}

// ---------------------------------------------------------------------------
// The two sides
// ---------------------------------------------------------------------------

/// The workloads on weft coroutines and `weft::sync`; call them from inside
/// a runtime ([`on_weft`]).
mod weft_side {
    use weft::sync::{Condvar, Mutex, RwLock, Semaphore};
    use weft::{sleep, spawn, yield_now};
    crate::workloads::same_code!();
}

/// The same workloads on weft, each coroutine spawned with
/// `Builder::same_worker` (`--same-worker`): all on the worker of the
/// coroutine that spawns them.
// Only the lock rows use this side; the other workloads are compiled but unused.
#[allow(dead_code)]
mod weft_same_worker_side {
    use weft::sync::{Condvar, Mutex, RwLock, Semaphore};
    use weft::{sleep, yield_now};

    fn spawn<F, T>(f: F) -> weft::JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        weft::Builder::new().same_worker(true).spawn(f).expect("the workloads spawn from a coroutine of the runtime")
    }

    crate::workloads::same_code!();
}

/// The same workloads on OS threads and `std::sync`.
mod thread_side {
    use crate::workloads::os::{Condvar, Mutex, RwLock, Semaphore};
    use std::thread::{sleep, spawn, yield_now};
    crate::workloads::same_code!();
}

// ---------------------------------------------------------------------------
// The rows
// ---------------------------------------------------------------------------

/// One line of the table.
struct Row {
    key: &'static str,
    workload: &'static str,
    weft: Figure,
    threads: Figure,
    unit: &'static str,
    /// Rates: higher is better; times and sizes: lower is.
    higher_is_better: bool,
    note: String,
}

impl Row {
    /// How many times better weft did: above 1, weft wins.
    fn ratio(&self) -> f64 {
        let (weft, threads) = (self.weft.median, self.threads.median);
        let (better, worse) = if self.higher_is_better { (weft, threads) } else { (threads, weft) };
        if worse > 0.0 { better / worse } else { f64::NAN }
    }
}

/// What every row function gets.
struct Context {
    sizes: Sizes,
    /// `--same-worker`: the lock rows spawn with `Builder::same_worker`.
    same_worker: bool,
    /// Workers of the multi-worker weft runtimes (one per core unless
    /// `--workers` says otherwise); also the contended Mutex's task count.
    workers: usize,
    progress: Progress,
}

/// Measures one row.
type RowFn = fn(&mut Context) -> Row;

/// The rows in table order, by key.
const ROWS: [(&str, RowFn); 12] = [
    ("handoff_pinned", |cx| handoff_row(cx, true)),
    ("handoff_unpinned", |cx| handoff_row(cx, false)),
    ("spawn_join", spawn_join_row),
    ("parked_memory", memory_row),
    ("condvar_handoff", condvar_handoff_row),
    ("contended_mutex", contended_mutex_row),
    ("pc_condvar", |cx| producer_consumer_row(cx, false)),
    ("pc_semaphore", |cx| producer_consumer_row(cx, true)),
    ("readers_writers", readers_writers_row),
    ("skynet", skynet_row),
    ("channel", channel_row),
    ("socket_echo", socket_echo_row),
];

fn handoff_row(cx: &mut Context, pin: bool) -> Row {
    let s = &cx.sizes;
    let (key, workload, futex_turns) = if pin {
        ("handoff_pinned", "hand-off latency, pinned to 1 core", s.futex_turns_pinned)
    } else {
        ("handoff_unpinned", "hand-off latency, unpinned", s.futex_turns_unpinned)
    };
    cx.progress.begin(workload);
    let weft = median_of("weft", s.runs, || {
        nanos_per(workloads::weft_yield_handoff(s.weft_yield_turns, pin), workloads::handoff_ops(s.weft_yield_turns))
    });
    let threads = median_of("threads", s.runs, || {
        nanos_per(workloads::futex_handoff(futex_turns, pin), workloads::handoff_ops(futex_turns))
    });
    cx.progress.end();
    let note = if pin {
        "weft: 2 coroutines on a 1-worker runtime take turns with yield_now; threads: 2 OS threads take turns \
         through a futex word (futex wake + wait, the cheapest thread hand-off); worker and threads pinned to CPU 0"
    } else {
        "the same, nothing pinned: the two OS threads may sit on different cores, so each hand-off wakes an idle core"
    };
    Row { key, workload, weft, threads, unit: "ns/hand-off", higher_is_better: false, note: note.to_string() }
}

fn spawn_join_row(cx: &mut Context) -> Row {
    let (s, workers) = (&cx.sizes, cx.workers);
    cx.progress.begin("spawn+join");
    // One runtime for every run, unlike the other rows: Go's and may's
    // spawn+join rows run in a runtime that lives as long as the process,
    // whose freed goroutines (coroutines) and stacks serve the next run. A
    // fresh runtime's first burst pays for faulting in its 100 000 task
    // cells (about 40 MB); that figure is reported in the note.
    let runtime = weft::Runtime::builder().workers(workers).build().expect("cannot start weft's worker threads");
    let burst = || nanos_per(runtime.block_on(|| weft_side::spawn_join(s.weft_spawns)), s.weft_spawns) / 1e3;
    let first_burst = burst();
    let weft = median_of("weft", s.runs, burst);
    let threads =
        median_of("threads", s.runs, || nanos_per(thread_side::spawn_join(s.thread_spawns), s.thread_spawns) / 1e3);
    cx.progress.end();
    let note = format!(
        "weft: {} empty coroutines spawned, then joined, on {workers} workers, the runs one after another on one \
         runtime (a fresh runtime's first burst: {first_burst:.3} µs/task); threads: {} std::thread spawns, \
         then joins; each task returns its index and the sum is checked",
        count(s.weft_spawns),
        count(s.thread_spawns)
    );
    Row {
        key: "spawn_join",
        workload: "spawn+join, per task",
        weft,
        threads,
        unit: "µs/task",
        higher_is_better: false,
        note,
    }
}

fn memory_row(cx: &mut Context) -> Row {
    let (s, workers) = (&cx.sizes, cx.workers);
    cx.progress.begin("memory per parked task");
    let weft = median_of_cold("weft", s.costly_runs, || memory_in_child("weft", s.weft_parked, workers));
    let threads = median_of_cold("threads", s.costly_runs, || memory_in_child("threads", s.thread_parked, workers));
    cx.progress.end();
    let note = format!(
        "VmRSS growth with {} coroutines ({} KiB stacks, resident only where touched) / {} OS threads (std's \
         2 MiB stacks) blocked on a Mutex+Condvar gate; kernel memory (page tables, thread structures) is not in VmRSS",
        count(s.weft_parked as u64),
        weft::coroutine::DEFAULT_STACK_SIZE / 1024,
        count(s.thread_parked as u64)
    );
    Row {
        key: "parked_memory",
        workload: "memory per parked task",
        weft,
        threads,
        unit: "KiB/task",
        higher_is_better: false,
        note,
    }
}

/// The environment variable that makes this program a memory row's child:
/// `SIDE TASKS WORKERS`.
const MEMORY_CHILD: &str = "WEFT_VERSUS_MEMORY_CHILD";

/// One run of the memory row, in a fresh process of this program: growth
/// of resident memory is what it measures, and in this process the rows
/// before it (spawn+join's 100 000 task cells and stacks) leave freed heap
/// and cached stacks that the parked tasks would reuse without growing it.
fn memory_in_child(side: &str, tasks: usize, workers: usize) -> f64 {
    let exe = std::env::current_exe().expect("versus_threads: cannot find its own executable for the memory row");
    let output = std::process::Command::new(exe)
        .env(MEMORY_CHILD, format!("{side} {tasks} {workers}"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("versus_threads: cannot start a child process for the memory row");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let kib = stdout.trim().parse::<f64>().ok().filter(|_| output.status.success());
    workloads::verify(
        kib.is_some(),
        &format!("memory row: the {side} child process reported {stdout:?} ({})", output.status),
    );
    kib.unwrap_or(f64::NAN)
}

/// The child's side of [`memory_in_child`]: measures, prints KiB per task
/// on stdout, and exits (non-zero if a check failed).
fn memory_child(spec: &str) -> ! {
    let fields: Vec<&str> = spec.split_whitespace().collect();
    let (side, tasks, workers) = match fields[..] {
        [side, tasks, workers] => (side, tasks.parse().ok(), workers.parse().ok()),
        _ => ("", None, None),
    };
    let (Some(tasks), Some(workers)) = (tasks, workers) else {
        eprintln!("{MEMORY_CHILD}={spec:?}: expected \"SIDE TASKS WORKERS\" (set by versus_threads itself)");
        std::process::exit(2);
    };
    let kib = match side {
        "weft" => on_weft(workers, || weft_side::parked_memory(tasks)),
        "threads" => thread_side::parked_memory(tasks),
        other => {
            eprintln!("{MEMORY_CHILD}={spec:?}: unknown side {other:?} (weft or threads)");
            std::process::exit(2);
        }
    };
    println!("{kib}");
    std::process::exit(if workloads::failed_checks() == 0 { 0 } else { 1 });
}

fn condvar_handoff_row(cx: &mut Context) -> Row {
    let s = &cx.sizes;
    cx.progress.begin("Mutex+Condvar hand-off");
    let (weft_turns, thread_turns) = (s.weft_condvar_turns, s.thread_condvar_turns);
    let weft = median_of("weft", s.runs, || {
        nanos_per(on_weft(1, || weft_side::condvar_handoff(weft_turns)), workloads::handoff_ops(weft_turns))
    });
    let threads = median_of("threads", s.runs, || {
        nanos_per(thread_side::condvar_handoff(thread_turns), workloads::handoff_ops(thread_turns))
    });
    cx.progress.end();
    let note = "2 tasks take turns through a Mutex<u64> and one Condvar: weft::sync on a 1-worker runtime, \
                std::sync on 2 unpinned OS threads";
    Row {
        key: "condvar_handoff",
        workload: "Mutex+Condvar hand-off",
        weft,
        threads,
        unit: "ns/hand-off",
        higher_is_better: false,
        note: note.to_string(),
    }
}

/// What a lock row's note says about `--same-worker`.
fn same_worker_note(same_worker: bool) -> &'static str {
    if same_worker {
        "; --same-worker: weft's coroutines spawned with Builder::same_worker, all on the spawner's worker"
    } else {
        ""
    }
}

fn contended_mutex_row(cx: &mut Context) -> Row {
    let (s, tasks) = (&cx.sizes, cx.workers.max(2));
    cx.progress.begin("contended Mutex");
    let ops = tasks as u64 * s.increments_per_task;
    let mut spread_over = Vec::new();
    let contended_mutex =
        if cx.same_worker { weft_same_worker_side::contended_mutex } else { weft_side::contended_mutex };
    let weft = median_of("weft", s.runs, || {
        let (elapsed, threads) = on_weft(tasks, || contended_mutex(tasks, s.increments_per_task));
        spread_over.push(threads);
        nanos_per(elapsed, ops)
    });
    let threads =
        median_of("threads", s.runs, || nanos_per(thread_side::contended_mutex(tasks, s.increments_per_task).0, ops));
    cx.progress.end();
    // The first entry is the warm-up run's.
    let spread_over: Vec<String> = spread_over.iter().skip(1).map(usize::to_string).collect();
    let note = format!(
        "{tasks} tasks x {} increments of one Mutex<u64>: weft::sync with {tasks} coroutines on a {tasks}-worker \
         runtime (the workers they ran on, run by run: {}), std::sync with {tasks} OS threads",
        count(s.increments_per_task),
        spread_over.join(", ")
    ) + same_worker_note(cx.same_worker);
    Row {
        key: "contended_mutex",
        workload: "contended Mutex",
        weft,
        threads,
        unit: "ns/increment",
        higher_is_better: false,
        note,
    }
}

fn producer_consumer_row(cx: &mut Context, semaphores: bool) -> Row {
    let (s, workers) = (&cx.sizes, cx.workers);
    let (key, workload) = if semaphores {
        ("pc_semaphore", "producer-consumer, Semaphores")
    } else {
        ("pc_condvar", "producer-consumer, Mutex+Condvar")
    };
    cx.progress.begin(workload);
    let items = s.items_per_producer;
    let ops = workloads::producer_consumer_ops(items);
    type Workload = fn(u64) -> Duration;
    let (semaphore, condvar): (Workload, Workload) = if cx.same_worker {
        (weft_same_worker_side::producer_consumer_semaphore, weft_same_worker_side::producer_consumer_condvar)
    } else {
        (weft_side::producer_consumer_semaphore, weft_side::producer_consumer_condvar)
    };
    let (weft, threads) = if semaphores {
        (
            median_of("weft", s.runs, || millions_per_second(on_weft(workers, || semaphore(items)), ops)),
            median_of("threads", s.runs, || millions_per_second(thread_side::producer_consumer_semaphore(items), ops)),
        )
    } else {
        (
            median_of("weft", s.runs, || millions_per_second(on_weft(workers, || condvar(items)), ops)),
            median_of("threads", s.runs, || millions_per_second(thread_side::producer_consumer_condvar(items), ops)),
        )
    };
    cx.progress.end();
    let total = count(ops);
    let note = same_worker_note(cx.same_worker);
    let note = if semaphores {
        format!(
            "the same with P/V semaphores (empty, full) and a Mutex; std has no semaphore, so the threads use one \
             built from a std Mutex + Condvar; {total} items{note}"
        )
    } else {
        format!(
            "{PRODUCERS} producers, {CONSUMERS} consumers, capacity {CAPACITY}, {total} items, Mutex<VecDeque> + 2 \
             Condvars; weft: coroutines on {workers} workers; every item counted and summed{note}"
        )
    };
    Row { key, workload, weft, threads, unit: "M items/s", higher_is_better: true, note }
}

fn readers_writers_row(cx: &mut Context) -> Row {
    let (s, workers) = (&cx.sizes, cx.workers);
    cx.progress.begin("readers-writers");
    let ops = workloads::readers_writers_ops(s.rw_ops_per_task);
    let readers_writers =
        if cx.same_worker { weft_same_worker_side::readers_writers } else { weft_side::readers_writers };
    let weft =
        median_of("weft", s.runs, || millions_per_second(on_weft(workers, || readers_writers(s.rw_ops_per_task)), ops));
    let threads =
        median_of("threads", s.runs, || millions_per_second(thread_side::readers_writers(s.rw_ops_per_task), ops));
    cx.progress.end();
    let note = format!(
        "{RW_TASKS} tasks x {} operations on one RwLock, 95 % reads (each checks the data's invariant): weft \
         RwLock on {workers} workers, std RwLock on {RW_TASKS} OS threads",
        count(s.rw_ops_per_task)
    ) + same_worker_note(cx.same_worker);
    Row {
        key: "readers_writers",
        workload: "readers-writers (95 % reads)",
        weft,
        threads,
        unit: "M ops/s",
        higher_is_better: true,
        note,
    }
}

fn skynet_row(cx: &mut Context) -> Row {
    let (s, workers) = (&cx.sizes, cx.workers);
    cx.progress.begin("skynet");
    let weft = median_of("weft", s.costly_runs, || {
        nanos_per(on_weft(workers, || weft_side::skynet(s.weft_leaves)), s.weft_leaves) / 1e3
    });
    let threads =
        median_of("threads", s.costly_runs, || nanos_per(thread_side::skynet(s.thread_leaves), s.thread_leaves) / 1e3);
    cx.progress.end();
    let note = format!(
        "per leaf, so the two sizes compare: weft {} leaves ({} coroutines) on {workers} workers; threads {} \
         leaves ({} OS threads), the most this example asks of a machine (a million threads would not run)",
        count(s.weft_leaves),
        count((s.weft_leaves * 10 - 1) / 9),
        count(s.thread_leaves),
        count((s.thread_leaves * 10 - 1) / 9)
    );
    Row { key: "skynet", workload: "skynet", weft, threads, unit: "µs/leaf", higher_is_better: false, note }
}

fn channel_row(cx: &mut Context) -> Row {
    let (s, workers) = (&cx.sizes, cx.workers);
    cx.progress.begin("channel");
    let items = s.items_per_producer;
    let ops = workloads::channel_ops(items);
    let weft =
        median_of("weft", s.runs, || millions_per_second(on_weft(workers, || workloads::weft_channel(items)), ops));
    let threads = median_of("threads", s.runs, || millions_per_second(workloads::mpsc_channel(items), ops));
    cx.progress.end();
    let note = format!(
        "{PRODUCERS} producers, 1 consumer, capacity {CAPACITY}, {} items: weft::sync::channel::bounded with \
         coroutines on {workers} workers, std::sync::mpsc::sync_channel with OS threads; every item counted and summed",
        count(ops)
    );
    Row {
        key: "channel",
        workload: "channel, 4 producers 1 consumer",
        weft,
        threads,
        unit: "M items/s",
        higher_is_better: true,
        note,
    }
}

fn socket_echo_row(cx: &mut Context) -> Row {
    let s = &cx.sizes;
    cx.progress.begin("socket echo");
    let round_trips = s.socket_round_trips;
    let weft = median_of("weft", s.runs, || nanos_per(workloads::weft_socket_echo(round_trips), round_trips) / 1e3);
    let threads =
        median_of("threads", s.runs, || nanos_per(workloads::thread_socket_echo(round_trips), round_trips) / 1e3);
    cx.progress.end();
    let note = format!(
        "{} round trips of a {}-byte message over a Unix socket pair (socketpair(2)), each echo read whole and \
         compared: weft::net::UnixStream with 2 coroutines on a 1-worker runtime (a coroutine that would block \
         parks and the worker waits in its epoll); std::os::unix::net::UnixStream with 2 unpinned OS threads \
         blocking in read",
        count(round_trips),
        workloads::SOCKET_MESSAGE
    );
    Row {
        key: "socket_echo",
        workload: "socket echo round trip",
        weft,
        threads,
        unit: "µs/round trip",
        higher_is_better: false,
        note,
    }
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// `1234567` as `1 234 567`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(digit);
    }
    out
}

/// A figure with about three significant digits.
fn figure(value: f64) -> String {
    match value.abs() {
        v if !v.is_finite() => "n/a".to_string(),
        v if v >= 100.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}"),
        v if v >= 1.0 => format!("{value:.2}"),
        _ => format!("{value:.3}"),
    }
}

/// A spread as `±4%`.
fn spread(figure: &Figure) -> String {
    let spread = figure.spread();
    if spread.is_finite() { format!("±{:.0}%", spread * 100.0) } else { "".to_string() }
}

/// What the header says about the machine and the run.
struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
    profile: &'static str,
    load: String,
    unix_time: u64,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_string()))
            .unwrap_or_else(|| "unknown CPU".to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            profile: if cfg!(debug_assertions) { "debug" } else { "release" },
            load: load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
            unix_time: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        }
    }
}

/// The header: machine, kernel, build, load.
fn header(machine: &Machine, options: &Options, sizes: &Sizes, workers: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "weft {} versus OS threads (std::thread + std::sync)", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(
        out,
        "machine: {}, {} cores available, Linux {}; {} build",
        machine.cpu, machine.cores, machine.kernel, machine.profile
    );
    let _ = writeln!(
        out,
        "{} mode: median of {} runs after a warm-up run ({} for memory, without warm-up, and skynet); weft runtimes have {workers} workers unless a note \
         says otherwise; load average at start {}; unix time {}",
        if options.quick { "quick" } else { "full" },
        sizes.runs,
        sizes.costly_runs,
        machine.load,
        machine.unix_time
    );
    out
}

/// The table, then one note per row.
fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<34} {:>9} {:>5} {:>11} {:>5} {:>8}  unit",
        "workload", "weft", "±", "OS threads", "±", "ratio"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<34} {:>9} {:>5} {:>11} {:>5} {:>7}x  {}",
            row.workload,
            figure(row.weft.median),
            spread(&row.weft),
            figure(row.threads.median),
            spread(&row.threads),
            figure(row.ratio()),
            row.unit
        );
    }
    let _ = writeln!(out, "\nratio: how many times better weft did (above 1: weft wins; for rates, weft / threads).");
    let _ = writeln!(out, "±: half the range of the runs, as a share of the median (the noise of that figure).");
    let _ = writeln!(out, "notes:");
    for row in rows {
        let _ = writeln!(out, "  {}: {}", row.workload, row.note);
    }
    out
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `x` as a JSON number (`null` if not finite).
fn json_number(x: f64) -> String {
    if x.is_finite() { format!("{x}") } else { "null".to_string() }
}

/// A list of numbers as a JSON array.
fn json_numbers(xs: &[f64]) -> String {
    format!("[{}]", xs.iter().map(|&x| json_number(x)).collect::<Vec<_>>().join(", "))
}

/// The run and its rows as one JSON object (the schema the report script
/// `benches/report/render.py` reads).
fn json(machine: &Machine, options: &Options, sizes: &Sizes, workers: usize, rows: &[Row]) -> String {
    let rows: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "    {{\"key\": {}, \"workload\": {}, \"unit\": {}, \"higher_is_better\": {}, \"weft\": {}, \
                 \"threads\": {}, \"ratio\": {}, \"weft_runs\": {}, \"threads_runs\": {}, \"note\": {}}}",
                json_string(row.key),
                json_string(row.workload),
                json_string(row.unit),
                row.higher_is_better,
                json_number(row.weft.median),
                json_number(row.threads.median),
                json_number(row.ratio()),
                json_numbers(&row.weft.runs),
                json_numbers(&row.threads.runs),
                json_string(&row.note)
            )
        })
        .collect();
    format!(
        "{{\n  \"tool\": \"versus_threads\",\n  \"weft_version\": {},\n  \"mode\": {},\n  \"workers\": {workers},\n  \
         \"runs\": {},\n  \"costly_runs\": {},\n  \"machine\": {{\"cpu\": {}, \"cores\": {}, \"kernel\": {}, \
         \"profile\": {}}},\n  \"load_average_at_start\": {},\n  \"unix_time\": {},\n  \"rows\": [\n{}\n  ]\n}}\n",
        json_string(env!("CARGO_PKG_VERSION")),
        json_string(if options.quick { "quick" } else { "full" }),
        sizes.runs,
        sizes.costly_runs,
        json_string(&machine.cpu),
        machine.cores,
        json_string(&machine.kernel),
        json_string(machine.profile),
        json_string(&machine.load),
        machine.unix_time,
        rows.join(",\n")
    )
}

fn main() {
    if let Ok(spec) = std::env::var(MEMORY_CHILD) {
        memory_child(&spec);
    }
    let options = Options::parse();
    let sizes = if options.quick { Sizes::QUICK } else { Sizes::FULL };
    let machine = Machine::read();
    let workers = options.workers.unwrap_or(machine.cores);
    println!("{}", header(&machine, &options, &sizes, workers));
    let _ = std::io::stdout().flush();

    let selected: Vec<RowFn> = ROWS
        .iter()
        .filter(|(key, _)| options.only.as_ref().is_none_or(|only| only.iter().any(|k| k == key)))
        .map(|&(_, row)| row)
        .collect();
    let started = Instant::now();
    let mut cx = Context {
        sizes,
        same_worker: options.same_worker,
        workers,
        progress: Progress { step: 0, steps: selected.len(), started },
    };
    let rows: Vec<Row> = selected.iter().map(|row| row(&mut cx)).collect();
    eprintln!("all workloads done in {:.1} s", started.elapsed().as_secs_f64());

    println!("{}", table(&rows));
    if let Some(path) = &options.json {
        if let Err(e) = std::fs::write(path, json(&machine, &options, &cx.sizes, workers, &rows)) {
            eprintln!("versus_threads: cannot write {path}: {e}");
            std::process::exit(2);
        }
        println!("wrote {path}");
    }
    match workloads::failed_checks() {
        0 => println!("check: ok"),
        failed => {
            println!("check: FAILED ({failed} checks; see stderr)");
            std::process::exit(1);
        }
    }
}
