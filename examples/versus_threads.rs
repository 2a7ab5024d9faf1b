//! The same workloads on weft coroutines and on OS threads (`std::thread` +
//! `std::sync`), side by side in one table.
//!
//! ```text
//! cargo run --release --example versus_threads                          # 20-30 s on 2 cores
//! cargo run --release --example versus_threads -- --quick               # CI's short mode (a few seconds)
//! cargo run --release --example versus_threads -- --json results.json   # also write the rows as JSON
//! ```
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
//! - **Mutex+Condvar hand-off**, **contended Mutex**, **producer-consumer**
//!   (Mutex + 2 Condvars, and P/V Semaphores), **readers-writers** (95 %
//!   reads) and **skynet** (a tree of tasks, each parent spawning ten
//!   children and summing their results).
//!
//! Apart from the hand-off latency rows, each workload is written once (in
//! [`same_code_for_both!`]) and compiled twice: with `weft::spawn` and
//! `weft::sync`, and with `std::thread::spawn` and `std::sync` (behind thin
//! wrappers that give them weft's names). Each figure is the median of
//! several runs; the ratio column says how many times better weft did (above
//! 1: weft wins), whether the unit is a time, a size or a rate.
//!
//! Every run checks its own results (sums, counts, invariants); the last
//! line is `check: ok` only when every check of every run passed. Progress
//! goes to stderr, the header and the table to stdout.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use weft::sys::futex;

/// Capacity of the producer-consumer buffer.
const CAPACITY: usize = 64;
/// Tasks in the readers-writers workload.
const RW_TASKS: usize = 8;
/// One operation in this many is a write in the readers-writers workload (5 %).
const WRITE_EVERY: u64 = 20;
/// Producers and consumers in the producer-consumer workloads.
const PRODUCERS: usize = 4;
const CONSUMERS: usize = 4;

// ---------------------------------------------------------------------------
// Sizes and options
// ---------------------------------------------------------------------------

/// How big each workload is; `--quick` shrinks everything.
struct Sizes {
    /// Runs per figure (the median is reported).
    runs: usize,
    /// Runs per figure for the costly workloads (memory, skynet).
    costly_runs: usize,
    weft_yield_turns: u64,
    futex_turns_pinned: u64,
    futex_turns_unpinned: u64,
    weft_spawns: u64,
    thread_spawns: u64,
    weft_parked: usize,
    thread_parked: usize,
    weft_condvar_turns: u64,
    thread_condvar_turns: u64,
    increments_per_task: u64,
    items_per_producer: u64,
    rw_ops_per_task: u64,
    weft_leaves: u64,
    thread_leaves: u64,
}

impl Sizes {
    const FULL: Sizes = Sizes {
        runs: 5,
        costly_runs: 3,
        weft_yield_turns: 1_000_000,
        futex_turns_pinned: 50_000,
        futex_turns_unpinned: 10_000,
        weft_spawns: 100_000,
        thread_spawns: 1_000,
        weft_parked: 10_000,
        thread_parked: 1_000,
        weft_condvar_turns: 500_000,
        thread_condvar_turns: 10_000,
        increments_per_task: 2_000_000,
        items_per_producer: 100_000,
        rw_ops_per_task: 100_000,
        weft_leaves: 1_000_000,
        thread_leaves: 10_000,
    };

    const QUICK: Sizes = Sizes {
        runs: 3,
        costly_runs: 3,
        weft_yield_turns: 100_000,
        futex_turns_pinned: 5_000,
        futex_turns_unpinned: 2_000,
        weft_spawns: 10_000,
        thread_spawns: 200,
        weft_parked: 2_000,
        thread_parked: 200,
        weft_condvar_turns: 50_000,
        thread_condvar_turns: 2_000,
        increments_per_task: 200_000,
        items_per_producer: 10_000,
        rw_ops_per_task: 20_000,
        weft_leaves: 100_000,
        thread_leaves: 1_000,
    };
}

/// The command line: `--quick`, `--json PATH`.
struct Options {
    quick: bool,
    json: Option<String>,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options { quick: false, json: None };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--json" => match args.next() {
                    Some(path) => options.json = Some(path),
                    None => usage("--json needs a path"),
                },
                "-h" | "--help" => {
                    println!("usage: versus_threads [--quick] [--json PATH]");
                    std::process::exit(0);
                }
                other => usage(&format!("unknown argument {other:?}")),
            }
        }
        options
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("versus_threads: {problem}\nusage: versus_threads [--quick] [--json PATH]");
    std::process::exit(2);
}

// ---------------------------------------------------------------------------
// Checks, memory, progress
// ---------------------------------------------------------------------------

/// How many checks failed, in any run.
static FAILED_CHECKS: AtomicUsize = AtomicUsize::new(0);

/// Records a correctness check; a failure is reported on stderr and turns
/// the final `check: ok` into `check: FAILED`.
fn verify(ok: bool, what: &str) {
    if !ok {
        FAILED_CHECKS.fetch_add(1, Ordering::SeqCst);
        eprintln!("\ncheck failed: {what}");
    }
}

/// The process's resident memory (`VmRSS` in `/proc/self/status`), in KiB.
fn vm_rss_kib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .expect("VmRSS in /proc/self/status")
}

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

/// Runs `f` `runs` times (showing each run on the progress line) and
/// returns the median of its results.
fn median_of(side: &str, runs: usize, mut f: impl FnMut() -> f64) -> f64 {
    eprint!(" {side} run");
    let mut results = Vec::with_capacity(runs);
    for run in 1..=runs {
        eprint!(" {run}/{runs}");
        flush_stderr();
        results.push(f());
    }
    eprint!(";");
    results.sort_by(f64::total_cmp);
    results[results.len() / 2]
}

/// Runs `f` as a coroutine on a fresh runtime with `workers` workers, which
/// is shut down afterwards (so every run starts from the same state).
fn on_weft<T: Send>(workers: usize, f: impl FnOnce() -> T + Send) -> T {
    let runtime = weft::Runtime::builder().workers(workers).build().expect("cannot start weft's worker threads");
    runtime.block_on(f)
}

fn nanos_per(elapsed: Duration, count: u64) -> f64 {
    elapsed.as_nanos() as f64 / count as f64
}

// ---------------------------------------------------------------------------
// The workloads written once, for weft and for OS threads
// ---------------------------------------------------------------------------

/// `std::sync` behind weft's names: `lock()` and friends return the guard
/// (std's poisoning is ignored, as weft's locks do not poison), and a
/// counting `Semaphore`, which std lacks, built from a std Mutex + Condvar.
mod os {
    use std::sync::{MutexGuard, PoisonError, RwLockReadGuard, RwLockWriteGuard};

    pub struct Mutex<T>(std::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub fn new(value: T) -> Mutex<T> {
            Mutex(std::sync::Mutex::new(value))
        }

        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    pub struct Condvar(std::sync::Condvar);

    impl Condvar {
        pub fn new() -> Condvar {
            Condvar(std::sync::Condvar::new())
        }

        pub fn wait_while<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
            condition: impl FnMut(&mut T) -> bool,
        ) -> MutexGuard<'a, T> {
            self.0.wait_while(guard, condition).unwrap_or_else(PoisonError::into_inner)
        }

        pub fn notify_one(&self) {
            self.0.notify_one();
        }

        pub fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    pub struct RwLock<T>(std::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub fn new(value: T) -> RwLock<T> {
            RwLock(std::sync::RwLock::new(value))
        }

        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(PoisonError::into_inner)
        }

        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(PoisonError::into_inner)
        }
    }

    /// A counting semaphore from a std Mutex (the free permits) and Condvar.
    pub struct Semaphore {
        permits: Mutex<usize>,
        freed: Condvar,
    }

    /// A taken permit; only `forget` is used here (P/V style).
    pub struct SemaphorePermit<'a>(&'a Semaphore);

    impl SemaphorePermit<'_> {
        pub fn forget(self) {
            std::mem::forget(self);
        }
    }

    impl Drop for SemaphorePermit<'_> {
        fn drop(&mut self) {
            self.0.add_permits(1);
        }
    }

    impl Semaphore {
        pub fn new(permits: usize) -> Semaphore {
            Semaphore { permits: Mutex::new(permits), freed: Condvar::new() }
        }

        pub fn acquire(&self) -> SemaphorePermit<'_> {
            *self.freed.wait_while(self.permits.lock(), |permits| *permits == 0) -= 1;
            SemaphorePermit(self)
        }

        pub fn add_permits(&self, n: usize) {
            *self.permits.lock() += n;
            if n == 1 { self.freed.notify_one() } else { self.freed.notify_all() }
        }
    }
}

/// Compiles the workloads twice: into `weft_side` with weft's `spawn` and
/// locks, and into `thread_side` with `std::thread::spawn` and the [`os`]
/// wrappers of `std::sync`. `weft::sleep` and `weft::yield_now` are shared:
/// on a plain OS thread they are `std::thread::sleep` and `yield_now`.
macro_rules! same_code_for_both {
    ($($workload:item)*) => {
        /// The workloads on weft coroutines and `weft::sync`; call them from
        /// inside a runtime ([`on_weft`]).
        mod weft_side {
            use weft::spawn;
            use weft::sync::{Condvar, Mutex, RwLock, Semaphore};
            $($workload)*
        }

        /// The same workloads on OS threads and `std::sync`.
        mod thread_side {
            use super::os::{Condvar, Mutex, RwLock, Semaphore};
            use std::thread::spawn;
            $($workload)*
        }
    };
}

same_code_for_both! {
    use super::{CAPACITY, CONSUMERS, PRODUCERS, RW_TASKS, WRITE_EVERY, nanos_per, verify, vm_rss_kib};
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// Spawns `tasks` tasks that each return their index, then joins them
    /// all; microseconds per task.
    pub fn spawn_join(tasks: u64) -> f64 {
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks).map(|i| spawn(move || i)).collect();
        let sum: u64 = handles.into_iter().map(|h| h.join().expect("an empty task panicked")).sum();
        let elapsed = start.elapsed();
        verify(sum == tasks * (tasks - 1) / 2, "spawn+join: the sum of the tasks' results");
        nanos_per(elapsed, tasks) / 1e3
    }

    /// Parks `tasks` tasks on a gate (a Mutex<bool> + Condvar), measures how
    /// much VmRSS grew, then opens the gate and joins them; KiB per task.
    pub fn parked_memory(tasks: usize) -> f64 {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let started = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::with_capacity(tasks);
        let before = vm_rss_kib();
        for _ in 0..tasks {
            let (gate, started) = (Arc::clone(&gate), Arc::clone(&started));
            handles.push(spawn(move || {
                started.fetch_add(1, Ordering::SeqCst);
                let (open, opened) = &*gate;
                drop(opened.wait_while(open.lock(), |open| !*open));
            }));
        }
        while started.load(Ordering::SeqCst) < tasks {
            weft::sleep(Duration::from_millis(1));
        }
        // The last ones counted themselves just before parking: let them park.
        weft::sleep(Duration::from_millis(30));
        let after = vm_rss_kib();
        *gate.0.lock() = true;
        gate.1.notify_all();
        let joined = handles.into_iter().map(|h| h.join()).filter(Result::is_ok).count();
        verify(joined == tasks, "parked tasks: every one was released and joined");
        (after - before) / tasks as f64
    }

    /// Two tasks take turns through a Mutex<u64> (the hand-offs so far;
    /// even: task 0's turn) and one Condvar; nanoseconds per hand-off.
    pub fn condvar_handoff(turns: u64) -> f64 {
        let shared = Arc::new((Mutex::new(0u64), Condvar::new()));
        let start = Instant::now();
        let players: Vec<_> = (0..2u64)
            .map(|me| {
                let shared = Arc::clone(&shared);
                spawn(move || {
                    let (count, changed) = &*shared;
                    for _ in 0..turns {
                        let mut count = changed.wait_while(count.lock(), |n| *n % 2 != me);
                        *count += 1;
                        drop(count);
                        changed.notify_one();
                    }
                })
            })
            .collect();
        for player in players {
            player.join().expect("a hand-off task panicked");
        }
        let elapsed = start.elapsed();
        verify(*shared.0.lock() == 2 * turns, "Mutex+Condvar hand-off: every turn taken");
        nanos_per(elapsed, 2 * turns)
    }

    /// A start line for `tasks` tasks, so that the measured part begins
    /// with all of them running and competing.
    struct StartLine {
        ready: AtomicUsize,
        tasks: usize,
        /// Until then, a waiting task spins (an idle weft worker gets the
        /// time to steal unstarted coroutines); afterwards it yields (so
        /// coroutines that share a worker can all arrive).
        spin_until: Instant,
    }

    impl StartLine {
        fn new(tasks: usize) -> StartLine {
            StartLine { ready: AtomicUsize::new(0), tasks, spin_until: Instant::now() + Duration::from_millis(20) }
        }

        /// Waits until every task has arrived; returns the moment it saw that.
        fn arrive(&self) -> Instant {
            self.ready.fetch_add(1, Ordering::SeqCst);
            while self.ready.load(Ordering::SeqCst) < self.tasks {
                if Instant::now() < self.spin_until { std::hint::spin_loop() } else { weft::yield_now() }
            }
            Instant::now()
        }
    }

    /// From the first task's start to the last one's end.
    fn span(runs: impl IntoIterator<Item = (Instant, Instant)>) -> Duration {
        let (starts, ends): (Vec<_>, Vec<_>) = runs.into_iter().unzip();
        let first = starts.into_iter().min().expect("at least one task");
        ends.into_iter().max().expect("at least one task") - first
    }

    /// Two tasks each add 1 to a shared Mutex<u64> `per_task` times;
    /// nanoseconds per increment (once both are running), and whether the
    /// two ran on different OS threads (always, for threads; for weft,
    /// whether they ran on different workers).
    pub fn contended_mutex(per_task: u64) -> (f64, bool) {
        let counter = Arc::new(Mutex::new(0u64));
        let start_line = Arc::new(StartLine::new(2));
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let (counter, start_line) = (Arc::clone(&counter), Arc::clone(&start_line));
                spawn(move || {
                    let start = start_line.arrive();
                    for _ in 0..per_task {
                        *counter.lock() += 1;
                    }
                    ((start, Instant::now()), std::thread::current().id())
                })
            })
            .collect();
        let (times, threads): (Vec<_>, Vec<_>) =
            tasks.into_iter().map(|t| t.join().expect("an incrementing task panicked")).unzip();
        verify(*counter.lock() == 2 * per_task, "contended Mutex: no increment lost");
        (nanos_per(span(times), 2 * per_task), threads[0] != threads[1])
    }

    /// A bounded buffer of `CAPACITY` items.
    trait Channel: Send + Sync + 'static {
        fn put(&self, item: u64);
        fn take(&self) -> u64;
    }

    /// Mutex<VecDeque> + `not_full` and `not_empty` Condvars.
    struct CondvarChannel {
        items: Mutex<VecDeque<u64>>,
        not_full: Condvar,
        not_empty: Condvar,
    }

    impl Channel for CondvarChannel {
        fn put(&self, item: u64) {
            let mut items = self.not_full.wait_while(self.items.lock(), |items| items.len() == CAPACITY);
            items.push_back(item);
            drop(items);
            self.not_empty.notify_one();
        }

        fn take(&self) -> u64 {
            let mut items = self.not_empty.wait_while(self.items.lock(), |items| items.is_empty());
            let item = items.pop_front().expect("not empty");
            drop(items);
            self.not_full.notify_one();
            item
        }
    }

    /// The classic P/V solution: `empty` counts free slots, `full` filled
    /// ones, a Mutex guards the buffer.
    struct SemaphoreChannel {
        items: Mutex<VecDeque<u64>>,
        empty: Semaphore,
        full: Semaphore,
    }

    impl Channel for SemaphoreChannel {
        fn put(&self, item: u64) {
            self.empty.acquire().forget(); // P(empty)
            self.items.lock().push_back(item);
            self.full.add_permits(1); // V(full)
        }

        fn take(&self) -> u64 {
            self.full.acquire().forget(); // P(full)
            let item = self.items.lock().pop_front().expect("a full slot");
            self.empty.add_permits(1); // V(empty)
            item
        }
    }

    /// Producer-consumer through a Mutex + 2 Condvars; items per second.
    pub fn producer_consumer_condvar(per_producer: u64) -> f64 {
        let channel = CondvarChannel {
            items: Mutex::new(VecDeque::with_capacity(CAPACITY)),
            not_full: Condvar::new(),
            not_empty: Condvar::new(),
        };
        producer_consumer(Arc::new(channel), per_producer)
    }

    /// Producer-consumer through P/V Semaphores; items per second.
    pub fn producer_consumer_semaphore(per_producer: u64) -> f64 {
        let channel = SemaphoreChannel {
            items: Mutex::new(VecDeque::with_capacity(CAPACITY)),
            empty: Semaphore::new(CAPACITY),
            full: Semaphore::new(0),
        };
        producer_consumer(Arc::new(channel), per_producer)
    }

    /// `PRODUCERS` producers put distinct items (0..total), `CONSUMERS`
    /// consumers take their shares and sum them; items per second.
    fn producer_consumer(channel: Arc<dyn Channel>, per_producer: u64) -> f64 {
        let total = PRODUCERS as u64 * per_producer;
        let start = Instant::now();
        let producers: Vec<_> = (0..PRODUCERS as u64)
            .map(|p| {
                let channel = Arc::clone(&channel);
                spawn(move || (p * per_producer..(p + 1) * per_producer).for_each(|item| channel.put(item)))
            })
            .collect();
        let consumers: Vec<_> = (0..CONSUMERS as u64)
            .map(|c| {
                let channel = Arc::clone(&channel);
                let share = total / CONSUMERS as u64 + u64::from(c < total % CONSUMERS as u64);
                spawn(move || (0..share).map(|_| (1u64, channel.take())).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)))
            })
            .collect();
        for producer in producers {
            producer.join().expect("a producer panicked");
        }
        let (count, sum) = consumers
            .into_iter()
            .map(|c| c.join().expect("a consumer panicked"))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let elapsed = start.elapsed();
        verify(count == total && sum == total * (total - 1) / 2, "producer-consumer: every item taken exactly once");
        total as f64 / elapsed.as_secs_f64()
    }

    /// Data whose invariant (all slots equal, `writes` counts the writes) a
    /// torn read would break.
    struct Table {
        slots: [u64; 8],
        writes: u64,
    }

    /// `RW_TASKS` tasks each do `ops` operations on one RwLock<Table>, one
    /// in `WRITE_EVERY` a write; operations per second (once all are running).
    pub fn readers_writers(ops: u64) -> f64 {
        let table = Arc::new(RwLock::new(Table { slots: [0; 8], writes: 0 }));
        let start_line = Arc::new(StartLine::new(RW_TASKS));
        let tasks: Vec<_> = (0..RW_TASKS)
            .map(|_| {
                let (table, start_line) = (Arc::clone(&table), Arc::clone(&start_line));
                spawn(move || {
                    let start = start_line.arrive();
                    let mut torn = 0u64;
                    for op in 0..ops {
                        if op % WRITE_EVERY == WRITE_EVERY - 1 {
                            let mut table = table.write();
                            let next = table.slots[0] + 1;
                            table.slots = [next; 8];
                            table.writes += 1;
                        } else {
                            let table = table.read();
                            torn += u64::from(table.slots.iter().any(|&s| s != table.slots[0]));
                        }
                    }
                    (torn, (start, Instant::now()))
                })
            })
            .collect();
        let (torn, times): (Vec<u64>, Vec<_>) =
            tasks.into_iter().map(|t| t.join().expect("a reader-writer panicked")).unzip();
        let (torn, elapsed) = (torn.iter().sum::<u64>(), span(times));
        let table = table.read();
        let writes = RW_TASKS as u64 * (ops / WRITE_EVERY);
        verify(torn == 0, "readers-writers: no torn read");
        verify(table.writes == writes && table.slots == [writes; 8], "readers-writers: every write applied once");
        (RW_TASKS as u64 * ops) as f64 / elapsed.as_secs_f64()
    }

    /// A skynet node: spawns ten children down to single leaves, each
    /// returning its index, and sums their results.
    fn skynet(num: u64, size: u64) -> u64 {
        if size == 1 {
            return num;
        }
        let step = size / 10;
        let children: Vec<_> = (0..10).map(|i| spawn(move || skynet(num + i * step, step))).collect();
        children.into_iter().map(|child| child.join().expect("a skynet node panicked")).sum()
    }

    /// Skynet over `leaves` leaves (a power of 10); microseconds per leaf.
    pub fn skynet_per_leaf(leaves: u64) -> f64 {
        let start = Instant::now();
        let sum = skynet(0, leaves);
        let elapsed = start.elapsed();
        verify(sum == leaves * (leaves - 1) / 2, "skynet: the root's sum");
        nanos_per(elapsed, leaves) / 1e3
    }
}

// ---------------------------------------------------------------------------
// The hand-off latency pair (yield vs futex: not the same source)
// ---------------------------------------------------------------------------

/// Pins the calling thread to CPU 0; false (and a message) if it cannot.
fn pin_here() -> bool {
    match weft::sys::thread::pin_to_cpu(0) {
        Ok(()) => true,
        Err(e) => {
            eprint!(" (cannot pin to CPU 0: {e})");
            false
        }
    }
}

/// Two coroutines on a one-worker runtime take `turns` turns each through a
/// counter (even: coroutine 0's turn), yielding until it is theirs;
/// nanoseconds per hand-off. `pin` pins the worker to CPU 0 first.
fn weft_yield_handoff(turns: u64, pin: bool) -> f64 {
    on_weft(1, move || {
        if pin {
            pin_here();
        }
        let handoffs = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let players: Vec<_> = (0..2u64)
            .map(|me| {
                let handoffs = Arc::clone(&handoffs);
                weft::spawn(move || {
                    for _ in 0..turns {
                        while handoffs.load(Ordering::Acquire) % 2 != me {
                            weft::yield_now();
                        }
                        handoffs.fetch_add(1, Ordering::Release);
                    }
                })
            })
            .collect();
        for player in players {
            player.join().expect("a yielding coroutine panicked");
        }
        let elapsed = start.elapsed();
        verify(handoffs.load(Ordering::SeqCst) == 2 * turns, "yield hand-off: every turn taken");
        nanos_per(elapsed, 2 * turns)
    })
}

/// Two OS threads take `turns` turns each through a futex word (0: thread
/// 0's turn, 1: thread 1's), sleeping in `futex::wait` until woken by the
/// other; nanoseconds per hand-off. `pin` pins both to CPU 0.
fn futex_handoff(turns: u64, pin: bool) -> f64 {
    let turn = Arc::new(AtomicU32::new(0));
    let handoffs = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(std::sync::Barrier::new(2));
    let players: Vec<_> = (0..2u32)
        .map(|me| {
            let (turn, handoffs, ready) = (Arc::clone(&turn), Arc::clone(&handoffs), Arc::clone(&ready));
            std::thread::spawn(move || {
                if pin {
                    pin_here();
                }
                ready.wait();
                let start = Instant::now();
                for _ in 0..turns {
                    while turn.load(Ordering::Acquire) != me {
                        futex::wait(&turn, 1 - me, None);
                    }
                    handoffs.fetch_add(1, Ordering::Relaxed);
                    turn.store(1 - me, Ordering::Release);
                    futex::wake(&turn, 1);
                }
                start.elapsed()
            })
        })
        .collect();
    let elapsed = players.into_iter().map(|p| p.join().expect("a futex thread panicked")).max().expect("two players");
    verify(handoffs.load(Ordering::SeqCst) == 2 * turns, "futex hand-off: every turn taken");
    nanos_per(elapsed, 2 * turns)
}

// ---------------------------------------------------------------------------
// The rows
// ---------------------------------------------------------------------------

/// One line of the table.
struct Row {
    workload: &'static str,
    weft: f64,
    threads: f64,
    unit: &'static str,
    /// Rates: higher is better; times and sizes: lower is.
    higher_is_better: bool,
    note: String,
}

impl Row {
    /// How many times better weft did: above 1, weft wins.
    fn ratio(&self) -> f64 {
        let (better, worse) = if self.higher_is_better { (self.weft, self.threads) } else { (self.threads, self.weft) };
        if worse > 0.0 { better / worse } else { f64::NAN }
    }
}

/// What every row function gets.
struct Context {
    sizes: Sizes,
    /// Workers of the multi-worker weft runtimes: one per core.
    workers: usize,
    progress: Progress,
}

fn handoff_row(cx: &mut Context, pin: bool) -> Row {
    let s = &cx.sizes;
    let (workload, futex_turns) = if pin {
        ("hand-off latency, pinned to 1 core", s.futex_turns_pinned)
    } else {
        ("hand-off latency, unpinned", s.futex_turns_unpinned)
    };
    cx.progress.begin(workload);
    let weft = median_of("weft", s.runs, || weft_yield_handoff(s.weft_yield_turns, pin));
    let threads = median_of("threads", s.runs, || futex_handoff(futex_turns, pin));
    cx.progress.end();
    let note = if pin {
        "weft: 2 coroutines on a 1-worker runtime take turns with yield_now; threads: 2 OS threads take turns \
         through a futex word (futex wake + wait, the cheapest thread hand-off); worker and threads pinned to CPU 0"
    } else {
        "the same, nothing pinned: the two OS threads may sit on different cores, so each hand-off wakes an idle core"
    };
    Row { workload, weft, threads, unit: "ns/hand-off", higher_is_better: false, note: note.to_string() }
}

fn spawn_join_row(cx: &mut Context) -> Row {
    let (s, workers) = (&cx.sizes, cx.workers);
    cx.progress.begin("spawn+join");
    let weft = median_of("weft", s.runs, || on_weft(workers, || weft_side::spawn_join(s.weft_spawns)));
    let threads = median_of("threads", s.runs, || thread_side::spawn_join(s.thread_spawns));
    cx.progress.end();
    let note = format!(
        "weft: {} empty coroutines spawned, then joined, on {workers} workers; threads: {} std::thread spawns, \
         then joins; each task returns its index and the sum is checked",
        count(s.weft_spawns),
        count(s.thread_spawns)
    );
    Row { workload: "spawn+join, per task", weft, threads, unit: "µs/task", higher_is_better: false, note }
}

fn memory_row(cx: &mut Context) -> Row {
    let (s, workers) = (&cx.sizes, cx.workers);
    cx.progress.begin("memory per parked task");
    let weft = median_of("weft", s.costly_runs, || on_weft(workers, || weft_side::parked_memory(s.weft_parked)));
    let threads = median_of("threads", s.costly_runs, || thread_side::parked_memory(s.thread_parked));
    cx.progress.end();
    let note = format!(
        "VmRSS growth with {} coroutines ({} KiB stacks, resident only where touched) / {} OS threads (std's \
         2 MiB stacks) blocked on a Mutex+Condvar gate; kernel memory (page tables, thread structures) is not in VmRSS",
        count(s.weft_parked as u64),
        weft::coroutine::DEFAULT_STACK_SIZE / 1024,
        count(s.thread_parked as u64)
    );
    Row { workload: "memory per parked task", weft, threads, unit: "KiB/task", higher_is_better: false, note }
}

fn condvar_handoff_row(cx: &mut Context) -> Row {
    let s = &cx.sizes;
    cx.progress.begin("Mutex+Condvar hand-off");
    let weft = median_of("weft", s.runs, || on_weft(1, || weft_side::condvar_handoff(s.weft_condvar_turns)));
    let threads = median_of("threads", s.runs, || thread_side::condvar_handoff(s.thread_condvar_turns));
    cx.progress.end();
    let note = "2 tasks take turns through a Mutex<u64> and one Condvar: weft::sync on a 1-worker runtime, \
                std::sync on 2 unpinned OS threads";
    Row {
        workload: "Mutex+Condvar hand-off",
        weft,
        threads,
        unit: "ns/hand-off",
        higher_is_better: false,
        note: note.to_string(),
    }
}

fn contended_mutex_row(cx: &mut Context) -> Row {
    let s = &cx.sizes;
    cx.progress.begin("contended Mutex");
    let mut apart = 0;
    let weft = median_of("weft", s.runs, || {
        let (ns, different_workers) = on_weft(2, || weft_side::contended_mutex(s.increments_per_task));
        apart += usize::from(different_workers);
        ns
    });
    let threads = median_of("threads", s.runs, || thread_side::contended_mutex(s.increments_per_task).0);
    cx.progress.end();
    let note = format!(
        "2 tasks x {} increments of one Mutex<u64>: weft::sync with 2 coroutines on a 2-worker runtime (they ran \
         on different workers in {apart} of {} runs), std::sync with 2 OS threads",
        count(s.increments_per_task),
        s.runs
    );
    Row { workload: "contended Mutex", weft, threads, unit: "ns/increment", higher_is_better: false, note }
}

fn producer_consumer_row(cx: &mut Context, semaphores: bool) -> Row {
    let (s, workers) = (&cx.sizes, cx.workers);
    let workload = if semaphores { "producer-consumer, Semaphores" } else { "producer-consumer, Mutex+Condvar" };
    cx.progress.begin(workload);
    let items = s.items_per_producer;
    let (weft, threads) = if semaphores {
        (
            median_of("weft", s.runs, || on_weft(workers, || weft_side::producer_consumer_semaphore(items))),
            median_of("threads", s.runs, || thread_side::producer_consumer_semaphore(items)),
        )
    } else {
        (
            median_of("weft", s.runs, || on_weft(workers, || weft_side::producer_consumer_condvar(items))),
            median_of("threads", s.runs, || thread_side::producer_consumer_condvar(items)),
        )
    };
    cx.progress.end();
    let total = count(PRODUCERS as u64 * items);
    let note = if semaphores {
        format!(
            "the same with P/V semaphores (empty, full) and a Mutex; std has no semaphore, so the threads use one \
             built from a std Mutex + Condvar; {total} items"
        )
    } else {
        format!(
            "{PRODUCERS} producers, {CONSUMERS} consumers, capacity {CAPACITY}, {total} items, Mutex<VecDeque> + 2 \
             Condvars; weft: coroutines on {workers} workers; every item counted and summed"
        )
    };
    Row { workload, weft: weft / 1e6, threads: threads / 1e6, unit: "M items/s", higher_is_better: true, note }
}

fn readers_writers_row(cx: &mut Context) -> Row {
    let (s, workers) = (&cx.sizes, cx.workers);
    cx.progress.begin("readers-writers");
    let weft = median_of("weft", s.runs, || on_weft(workers, || weft_side::readers_writers(s.rw_ops_per_task)));
    let threads = median_of("threads", s.runs, || thread_side::readers_writers(s.rw_ops_per_task));
    cx.progress.end();
    let note = format!(
        "{RW_TASKS} tasks x {} operations on one RwLock, 95 % reads (each checks the data's invariant): weft \
         RwLock on {workers} workers, std RwLock on {RW_TASKS} OS threads",
        count(s.rw_ops_per_task)
    );
    Row {
        workload: "readers-writers (95 % reads)",
        weft: weft / 1e6,
        threads: threads / 1e6,
        unit: "M ops/s",
        higher_is_better: true,
        note,
    }
}

fn skynet_row(cx: &mut Context) -> Row {
    let (s, workers) = (&cx.sizes, cx.workers);
    cx.progress.begin("skynet");
    let weft = median_of("weft", s.costly_runs, || on_weft(workers, || weft_side::skynet_per_leaf(s.weft_leaves)));
    let threads = median_of("threads", s.costly_runs, || thread_side::skynet_per_leaf(s.thread_leaves));
    cx.progress.end();
    let note = format!(
        "per leaf, so the two sizes compare: weft {} leaves ({} coroutines) on {workers} workers; threads {} \
         leaves ({} OS threads), the most this example asks of a machine (a million threads would not run)",
        count(s.weft_leaves),
        count((s.weft_leaves * 10 - 1) / 9),
        count(s.thread_leaves),
        count((s.thread_leaves * 10 - 1) / 9)
    );
    Row { workload: "skynet", weft, threads, unit: "µs/leaf", higher_is_better: false, note }
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

/// The header: machine, kernel, build, load.
fn header(options: &Options, sizes: &Sizes, workers: usize) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let epoch = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut out = String::new();
    let _ = writeln!(out, "weft {} versus OS threads (std::thread + std::sync)", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(
        out,
        "machine: {model}, {} cores available, Linux {}; {profile} build",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel.trim()
    );
    let _ = writeln!(
        out,
        "{} mode: median of {} runs ({} for memory and skynet); weft runtimes have {workers} workers unless a note \
         says otherwise; load average at start {load}; unix time {epoch}",
        if options.quick { "quick" } else { "full" },
        sizes.runs,
        sizes.costly_runs
    );
    out
}

/// The table, then one note per row.
fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<36} {:>10} {:>11} {:>8}  unit", "workload", "weft", "OS threads", "ratio");
    for row in rows {
        let _ = writeln!(
            out,
            "{:<36} {:>10} {:>11} {:>7}x  {}",
            row.workload,
            figure(row.weft),
            figure(row.threads),
            figure(row.ratio()),
            row.unit
        );
    }
    let _ = writeln!(out, "\nratio: how many times better weft did (above 1: weft wins; for rates, weft / threads).");
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

/// The rows as a JSON array of `{workload, weft, threads, ratio, unit, note}`.
fn json(rows: &[Row]) -> String {
    let objects: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "  {{\"workload\": {}, \"weft\": {}, \"threads\": {}, \"ratio\": {}, \"unit\": {}, \"note\": {}}}",
                json_string(row.workload),
                json_number(row.weft),
                json_number(row.threads),
                json_number(row.ratio()),
                json_string(row.unit),
                json_string(&row.note)
            )
        })
        .collect();
    format!("[\n{}\n]\n", objects.join(",\n"))
}

fn main() {
    let options = Options::parse();
    let sizes = if options.quick { Sizes::QUICK } else { Sizes::FULL };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{}", header(&options, &sizes, workers));
    let _ = std::io::stdout().flush();

    let rows: [fn(&mut Context) -> Row; 10] = [
        |cx| handoff_row(cx, true),
        |cx| handoff_row(cx, false),
        spawn_join_row,
        memory_row,
        condvar_handoff_row,
        contended_mutex_row,
        |cx| producer_consumer_row(cx, false),
        |cx| producer_consumer_row(cx, true),
        readers_writers_row,
        skynet_row,
    ];
    let started = Instant::now();
    let mut cx = Context { sizes, workers, progress: Progress { step: 0, steps: rows.len(), started } };
    let rows: Vec<Row> = rows.iter().map(|row| row(&mut cx)).collect();
    eprintln!("all workloads done in {:.1} s", started.elapsed().as_secs_f64());

    println!("{}", table(&rows));
    if let Some(path) = &options.json {
        if let Err(e) = std::fs::write(path, json(&rows)) {
            eprintln!("versus_threads: cannot write {path}: {e}");
            std::process::exit(2);
        }
        println!("wrote {path}");
    }
    match FAILED_CHECKS.load(Ordering::SeqCst) {
        0 => println!("check: ok"),
        failed => {
            println!("check: FAILED ({failed} checks; see stderr)");
            std::process::exit(1);
        }
    }
}
