//! The workloads of `versus_threads`, shared with the criterion bench
//! `benches/versus.rs` (which mounts this file with `#[path]`), so that the
//! example's table and the bench measure the same code.
//!
//! Apart from the hand-off latency pair at the bottom (weft's `yield_now`
//! against a futex: not the same source), each workload is written once in
//! [`same_code!`] and compiled once per side: a module that names `spawn`,
//! `sleep`, `yield_now`, `Mutex`, `Condvar`, `RwLock` and `Semaphore`, then
//! invokes `same_code!()`. weft's side takes them from `weft`, the OS-thread
//! side from `std` (through the [`os`] wrappers that give std weft's
//! signatures), a peer's side from the peer.
//!
//! Every timed workload returns the [`Duration`] of its measured part; the
//! caller knows how many operations that was (the `*_ops` functions) and
//! turns it into a figure. Every run checks its own results with [`verify`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[path = "../common/linux.rs"]
mod linux;

/// Capacity of the producer-consumer buffer.
pub const CAPACITY: usize = 64;
/// Tasks in the readers-writers workload.
pub const RW_TASKS: usize = 8;
/// One operation in this many is a write in the readers-writers workload (5 %).
pub const WRITE_EVERY: u64 = 20;
/// Producers and consumers in the producer-consumer workloads.
pub const PRODUCERS: usize = 4;
pub const CONSUMERS: usize = 4;

/// Hand-offs in a hand-off workload of `turns` turns per task (two tasks).
pub fn handoff_ops(turns: u64) -> u64 {
    2 * turns
}

/// Items in a producer-consumer workload of `per_producer` items per producer.
pub fn producer_consumer_ops(per_producer: u64) -> u64 {
    PRODUCERS as u64 * per_producer
}

/// Operations in a readers-writers workload of `per_task` operations per task.
pub fn readers_writers_ops(per_task: u64) -> u64 {
    RW_TASKS as u64 * per_task
}

// ---------------------------------------------------------------------------
// Sizes
// ---------------------------------------------------------------------------

/// How big each workload is: `FULL` for the example's table and the
/// criterion bench, `QUICK` for `--quick`.
pub struct Sizes {
    /// Runs per figure (the median is reported).
    pub runs: usize,
    /// Runs per figure for the costly workloads (memory, skynet).
    pub costly_runs: usize,
    pub weft_yield_turns: u64,
    pub futex_turns_pinned: u64,
    pub futex_turns_unpinned: u64,
    pub weft_spawns: u64,
    pub thread_spawns: u64,
    pub weft_parked: usize,
    pub thread_parked: usize,
    pub weft_condvar_turns: u64,
    pub thread_condvar_turns: u64,
    pub increments_per_task: u64,
    pub items_per_producer: u64,
    pub rw_ops_per_task: u64,
    pub weft_leaves: u64,
    pub thread_leaves: u64,
    /// Round trips of the socket echo (both sides).
    pub socket_round_trips: u64,
}

impl Sizes {
    pub const FULL: Sizes = Sizes {
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
        socket_round_trips: 20_000,
    };

    pub const QUICK: Sizes = Sizes {
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
        socket_round_trips: 5_000,
    };
}

// ---------------------------------------------------------------------------
// Checks and helpers
// ---------------------------------------------------------------------------

/// How many checks failed, in any run.
static FAILED_CHECKS: AtomicUsize = AtomicUsize::new(0);

/// Records a correctness check; a failure is reported on stderr and counted
/// (see [`failed_checks`]).
pub fn verify(ok: bool, what: &str) {
    if !ok {
        FAILED_CHECKS.fetch_add(1, Ordering::SeqCst);
        eprintln!("\ncheck failed: {what}");
    }
}

/// How many [`verify`] checks have failed so far.
pub fn failed_checks() -> usize {
    FAILED_CHECKS.load(Ordering::SeqCst)
}

/// The process's resident memory (`VmRSS` in `/proc/self/status`), in KiB.
pub fn vm_rss_kib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Runs `f` as a coroutine on a fresh runtime with `workers` workers, which
/// is shut down afterwards (so every run starts from the same state).
pub fn on_weft<T: Send>(workers: usize, f: impl FnOnce() -> T + Send) -> T {
    let runtime = weft::Runtime::builder().workers(workers).build().expect("cannot start weft's worker threads");
    runtime.block_on(f)
}

// ---------------------------------------------------------------------------
// std::sync behind weft's names
// ---------------------------------------------------------------------------

/// `Mutex`, `Condvar` and `RwLock` with weft's signatures, wrapping the
/// locks of a library whose API is std's (`$lib::Mutex::lock` returning a
/// `LockResult`, and so on): `lock()` and friends return the guard, and
/// poisoning is ignored, as weft's locks do not poison. Used by [`os`] for
/// `std::sync`, and by `benches/versus.rs` for `may::sync`.
macro_rules! poison_free_locks {
    ($($lib:ident)::+) => {
        use std::sync::PoisonError;
        use $($lib)::+::{MutexGuard, RwLockReadGuard, RwLockWriteGuard};

        pub struct Mutex<T>($($lib)::+::Mutex<T>);

        impl<T> Mutex<T> {
            pub fn new(value: T) -> Mutex<T> {
                Mutex($($lib)::+::Mutex::new(value))
            }

            pub fn lock(&self) -> MutexGuard<'_, T> {
                self.0.lock().unwrap_or_else(PoisonError::into_inner)
            }
        }

        pub struct Condvar($($lib)::+::Condvar);

        impl Condvar {
            pub fn new() -> Condvar {
                Condvar($($lib)::+::Condvar::new())
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

        pub struct RwLock<T>($($lib)::+::RwLock<T>);

        impl<T> RwLock<T> {
            pub fn new(value: T) -> RwLock<T> {
                RwLock($($lib)::+::RwLock::new(value))
            }

            pub fn read(&self) -> RwLockReadGuard<'_, T> {
                self.0.read().unwrap_or_else(PoisonError::into_inner)
            }

            pub fn write(&self) -> RwLockWriteGuard<'_, T> {
                self.0.write().unwrap_or_else(PoisonError::into_inner)
            }
        }
    };
}

pub(crate) use poison_free_locks;

/// `std::sync` behind weft's names ([`poison_free_locks!`]), and a counting
/// `Semaphore`, which std lacks, built from a std Mutex + Condvar.
pub mod os {
    crate::workloads::poison_free_locks!(std::sync);

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

// ---------------------------------------------------------------------------
// The workloads written once
// ---------------------------------------------------------------------------

/// The workloads, written once. Invoke inside a module that has `spawn`
/// (returning a handle whose `join()` gives a `Result`), `sleep`,
/// `yield_now`, `Mutex`, `Condvar`, `RwLock` and `Semaphore` in scope.
macro_rules! same_code {
    () => {
        use crate::workloads::{CAPACITY, CONSUMERS, PRODUCERS, RW_TASKS, WRITE_EVERY, verify, vm_rss_kib};
        use std::collections::VecDeque;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::{Duration, Instant};

        /// Spawns `tasks` tasks that each return their index, then joins
        /// them all.
        pub fn spawn_join(tasks: u64) -> Duration {
            let start = Instant::now();
            let handles: Vec<_> = (0..tasks).map(|i| spawn(move || i)).collect();
            let sum: u64 = handles.into_iter().map(|h| h.join().expect("an empty task panicked")).sum();
            let elapsed = start.elapsed();
            verify(sum == tasks * (tasks - 1) / 2, "spawn+join: the sum of the tasks' results");
            elapsed
        }

        /// Parks `tasks` tasks on a gate (a Mutex<bool> + Condvar), measures
        /// how much VmRSS grew, then opens the gate and joins them; KiB per
        /// task.
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
                sleep(Duration::from_millis(1));
            }
            // The last ones counted themselves just before parking: let them park.
            sleep(Duration::from_millis(30));
            let after = vm_rss_kib();
            *gate.0.lock() = true;
            gate.1.notify_all();
            let joined = handles.into_iter().map(|h| h.join()).filter(Result::is_ok).count();
            verify(joined == tasks, "parked tasks: every one was released and joined");
            (after - before) / tasks as f64
        }

        /// Two tasks take `turns` turns each through a Mutex<u64> (the
        /// hand-offs so far; even: task 0's turn) and one Condvar.
        pub fn condvar_handoff(turns: u64) -> Duration {
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
            elapsed
        }

        /// A start line for `tasks` tasks, so that the measured part begins
        /// with all of them running and competing.
        struct StartLine {
            ready: AtomicUsize,
            tasks: usize,
            /// Until then, a waiting task spins (an idle worker gets the
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
                    if Instant::now() < self.spin_until { std::hint::spin_loop() } else { yield_now() }
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

        /// `tasks` tasks each add 1 to a shared Mutex<u64> `per_task` times;
        /// the time once all are running, and on how many distinct OS
        /// threads they ran (always `tasks` for threads; for coroutines,
        /// how many workers they were spread over).
        pub fn contended_mutex(tasks: usize, per_task: u64) -> (Duration, usize) {
            let counter = Arc::new(Mutex::new(0u64));
            let start_line = Arc::new(StartLine::new(tasks));
            let handles: Vec<_> = (0..tasks)
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
            let (times, threads): (Vec<_>, std::collections::HashSet<_>) =
                handles.into_iter().map(|t| t.join().expect("an incrementing task panicked")).unzip();
            verify(*counter.lock() == tasks as u64 * per_task, "contended Mutex: no increment lost");
            (span(times), threads.len())
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

        /// Producer-consumer through a Mutex + 2 Condvars.
        pub fn producer_consumer_condvar(per_producer: u64) -> Duration {
            let channel = CondvarChannel {
                items: Mutex::new(VecDeque::with_capacity(CAPACITY)),
                not_full: Condvar::new(),
                not_empty: Condvar::new(),
            };
            producer_consumer(Arc::new(channel), per_producer)
        }

        /// Producer-consumer through P/V Semaphores.
        pub fn producer_consumer_semaphore(per_producer: u64) -> Duration {
            let channel = SemaphoreChannel {
                items: Mutex::new(VecDeque::with_capacity(CAPACITY)),
                empty: Semaphore::new(CAPACITY),
                full: Semaphore::new(0),
            };
            producer_consumer(Arc::new(channel), per_producer)
        }

        /// `PRODUCERS` producers put distinct items (0..total), `CONSUMERS`
        /// consumers take their shares and sum them.
        fn producer_consumer(channel: Arc<dyn Channel>, per_producer: u64) -> Duration {
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
                    spawn(move || {
                        (0..share).map(|_| (1u64, channel.take())).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
                    })
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
            verify(
                count == total && sum == total * (total - 1) / 2,
                "producer-consumer: every item taken exactly once",
            );
            elapsed
        }

        /// Data whose invariant (all slots equal, `writes` counts the writes)
        /// a torn read would break.
        struct Table {
            slots: [u64; 8],
            writes: u64,
        }

        /// `RW_TASKS` tasks each do `ops` operations on one RwLock<Table>,
        /// one in `WRITE_EVERY` a write; the time once all are running.
        pub fn readers_writers(ops: u64) -> Duration {
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
            elapsed
        }

        /// A skynet node: spawns ten children down to single leaves, each
        /// returning its index, and sums their results.
        fn skynet_node(num: u64, size: u64) -> u64 {
            if size == 1 {
                return num;
            }
            let step = size / 10;
            let children: Vec<_> = (0..10).map(|i| spawn(move || skynet_node(num + i * step, step))).collect();
            children.into_iter().map(|child| child.join().expect("a skynet node panicked")).sum()
        }

        /// Skynet over `leaves` leaves (a power of 10).
        pub fn skynet(leaves: u64) -> Duration {
            let start = Instant::now();
            let sum = skynet_node(0, leaves);
            let elapsed = start.elapsed();
            verify(sum == leaves * (leaves - 1) / 2, "skynet: the root's sum");
            elapsed
        }
    };
}

pub(crate) use same_code;

// ---------------------------------------------------------------------------
// Channels: weft's against std::sync::mpsc (not the same source: std's
// receiver is single-consumer, so both sides run PRODUCERS producers and one
// consumer)
// ---------------------------------------------------------------------------

/// Items through a channel workload of `per_producer` items per producer.
pub fn channel_ops(per_producer: u64) -> u64 {
    PRODUCERS as u64 * per_producer
}

/// `PRODUCERS` coroutines send distinct items (0..total) through a
/// `weft::sync::channel::bounded(CAPACITY)` to one consumer coroutine,
/// which sums them. Call from inside a runtime ([`on_weft`]).
pub fn weft_channel(per_producer: u64) -> Duration {
    let (tx, rx) = weft::sync::channel::bounded::<u64>(CAPACITY);
    let start = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS as u64)
        .map(|p| {
            let tx = tx.clone();
            weft::spawn(move || (p * per_producer..(p + 1) * per_producer).for_each(|i| tx.send(i).unwrap()))
        })
        .collect();
    drop(tx);
    let consumer = weft::spawn(move || rx.iter().fold((0u64, 0u64), |(n, sum), i| (n + 1, sum + i)));
    producers.into_iter().for_each(|p| p.join().expect("a channel producer panicked"));
    let (count, sum) = consumer.join().expect("the channel consumer panicked");
    let elapsed = start.elapsed();
    let total = channel_ops(per_producer);
    verify(count == total && sum == total * (total - 1) / 2, "weft channel: every item received exactly once");
    elapsed
}

/// The same on OS threads through `std::sync::mpsc::sync_channel(CAPACITY)`.
pub fn mpsc_channel(per_producer: u64) -> Duration {
    let (tx, rx) = std::sync::mpsc::sync_channel::<u64>(CAPACITY);
    let start = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS as u64)
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || (p * per_producer..(p + 1) * per_producer).for_each(|i| tx.send(i).unwrap()))
        })
        .collect();
    drop(tx);
    let consumer = std::thread::spawn(move || rx.iter().fold((0u64, 0u64), |(n, sum), i| (n + 1, sum + i)));
    producers.into_iter().for_each(|p| p.join().expect("a channel producer panicked"));
    let (count, sum) = consumer.join().expect("the channel consumer panicked");
    let elapsed = start.elapsed();
    let total = channel_ops(per_producer);
    verify(count == total && sum == total * (total - 1) / 2, "std::sync::mpsc: every item received exactly once");
    elapsed
}

// ---------------------------------------------------------------------------
// Socket echo: weft::net against std's sockets (not the same source: the
// socket types differ, the loop is the same)
// ---------------------------------------------------------------------------

/// Bytes in one socket echo message.
pub const SOCKET_MESSAGE: usize = 64;

/// The two ends of a socket echo, written once for any socket whose `&T`
/// reads and writes: `echo` writes back every message until EOF; `ping`
/// sends `round_trips` messages (each numbered in its first 8 bytes), reads
/// each echo whole and checks it, then shuts down its side. Returns the
/// echoes that came back right.
macro_rules! socket_echo_ends {
    ($stream:ty) => {
        fn echo(stream: $stream) {
            use std::io::{Read, Write};
            let mut buf = [0u8; SOCKET_MESSAGE];
            loop {
                match (&stream).read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => (&stream).write_all(&buf[..n]).expect("socket echo: write back"),
                    Err(e) => panic!("socket echo: read: {e}"),
                }
            }
        }

        fn ping(stream: $stream, round_trips: u64) -> u64 {
            use std::io::{Read, Write};
            let (mut message, mut echoed) = ([0xa5u8; SOCKET_MESSAGE], [0u8; SOCKET_MESSAGE]);
            let mut right = 0;
            for i in 0..round_trips {
                message[..8].copy_from_slice(&i.to_le_bytes());
                (&stream).write_all(&message).expect("socket echo: send");
                (&stream).read_exact(&mut echoed).expect("socket echo: read the echo");
                right += u64::from(echoed == message);
            }
            stream.shutdown(std::net::Shutdown::Write).expect("socket echo: shutdown");
            right
        }
    };
}

/// Two coroutines on a one-worker runtime ping-pong `round_trips` messages
/// of [`SOCKET_MESSAGE`] bytes over a `weft::net::UnixStream::pair()`:
/// each waits for its socket on the worker's epoll.
pub fn weft_socket_echo(round_trips: u64) -> Duration {
    socket_echo_ends!(weft::net::UnixStream);
    on_weft(1, move || {
        let (a, b) = weft::net::UnixStream::pair().expect("a weft Unix socket pair");
        let start = Instant::now();
        let echoer = weft::spawn(move || echo(b));
        let right = weft::spawn(move || ping(a, round_trips)).join().expect("the pinging coroutine panicked");
        echoer.join().expect("the echoing coroutine panicked");
        let elapsed = start.elapsed();
        verify(right == round_trips, "weft socket echo: every message came back unchanged");
        elapsed
    })
}

/// The same with two OS threads over a `std::os::unix::net::UnixStream::pair()`
/// (blocking reads and writes).
pub fn thread_socket_echo(round_trips: u64) -> Duration {
    socket_echo_ends!(std::os::unix::net::UnixStream);
    let (a, b) = std::os::unix::net::UnixStream::pair().expect("a std Unix socket pair");
    let start = Instant::now();
    let echoer = std::thread::spawn(move || echo(b));
    let right = std::thread::spawn(move || ping(a, round_trips)).join().expect("the pinging thread panicked");
    echoer.join().expect("the echoing thread panicked");
    let elapsed = start.elapsed();
    verify(right == round_trips, "std socket echo: every message came back unchanged");
    elapsed
}

// ---------------------------------------------------------------------------
// The hand-off latency pair (yield vs futex: not the same source)
// ---------------------------------------------------------------------------

/// Pins the calling thread to CPU 0; false (and a message) if it cannot.
pub fn pin_here() -> bool {
    match linux::pin_to_cpu(0) {
        Ok(()) => true,
        Err(e) => {
            eprint!(" (cannot pin to CPU 0: {e})");
            false
        }
    }
}

/// Two coroutines on a one-worker runtime take `turns` turns each through a
/// counter (even: coroutine 0's turn), yielding until it is theirs. `pin`
/// pins the worker to CPU 0 first.
pub fn weft_yield_handoff(turns: u64, pin: bool) -> Duration {
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
        elapsed
    })
}

/// Two OS threads take `turns` turns each through a futex word (0: thread
/// 0's turn, 1: thread 1's), sleeping in `linux::futex_wait` until woken by the
/// other. `pin` pins both to CPU 0.
pub fn futex_handoff(turns: u64, pin: bool) -> Duration {
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
                        linux::futex_wait(&turn, 1 - me);
                    }
                    handoffs.fetch_add(1, Ordering::Relaxed);
                    turn.store(1 - me, Ordering::Release);
                    linux::futex_wake(&turn, 1);
                }
                start.elapsed()
            })
        })
        .collect();
    let elapsed = players.into_iter().map(|p| p.join().expect("a futex thread panicked")).max().expect("two players");
    verify(handoffs.load(Ordering::SeqCst) == 2 * turns, "futex hand-off: every turn taken");
    elapsed
}
