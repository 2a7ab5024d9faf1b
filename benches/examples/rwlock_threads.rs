//! RwLock from plain OS threads under oversubscription: N threads x ops on
//! one lock, 95 % reads (every 20th op a write), weft's RwLock against
//! std's and parking_lot's. Prints the median of several runs in M ops/s.
//!
//! `cargo run --release -p weft-benches --example rwlock_threads -- [ops_per_thread] [runs]`
//! (defaults 200 000 and 5; `--quick`: 2 000 and 1, a smoke run for CI).
//! `THREADS=2,4,8,16` picks the thread counts (default 2, 4, 8);
//! `WRITE_EVERY=n` makes every n-th operation a write (default 20: 5 %);
//! `HOLD=n` spins n `spin_loop` hints inside each write (default 0).
//!
//! Two bare lock words run beside them, with no queue and no parking (a
//! waiter spins, then yields its thread): one takes a read lock as weft's
//! RwLock does, a load then a compare-exchange, the other with a single
//! `fetch_add`, as Go's RWMutex does (undone if a writer holds the word).
//! Side by side they say what the read lock's instruction choice costs
//! when the word's cache line is what the threads wait for (give each
//! thread a few million operations, so that the threads overlap for most
//! of the run: `THREADS=2 ... rwlock_threads 2000000`).
//!
//! A third bare lock gives each thread its own reader slot (a count on its
//! own cache line) and makes the writer wait for every slot to empty, so
//! readers share no line while no writer comes: how much of the read
//! lock's cost under contention is the line the readers share, and how
//! much the writes leave when they no longer do.

#[path = "../../examples/common/args.rs"]
mod args;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

static ARGS: args::Spec = args::Spec { name: "rwlock_threads", counts: &["ops-per-thread", "runs"], workers: false };
use std::time::{Duration, Instant};

trait Lock: Send + Sync + 'static {
    fn new() -> Self;
    fn read_check(&self) -> bool;
    fn write_bump(&self);
}

/// `HOLD=n`: n `spin_loop` hints inside each write (a longer critical
/// section); 0 by default.
fn hold() {
    static HOLD: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let n = *HOLD.get_or_init(|| std::env::var("HOLD").map_or(0, |s| s.parse().expect("HOLD: a number")));
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

macro_rules! impl_lock {
    ($t:ty, $($unwrap:ident)?) => {
        impl Lock for $t {
            fn new() -> Self {
                <$t>::new([0u64; 8])
            }
            fn read_check(&self) -> bool {
                let g = self.read()$(.$unwrap())?;
                g.iter().any(|&s| s != g[0])
            }
            fn write_bump(&self) {
                let mut g = self.write()$(.$unwrap())?;
                let next = g[0] + 1;
                *g = [next; 8];
                hold();
            }
        }
    };
}

impl_lock!(weft::sync::RwLock<[u64; 8]>,);
impl_lock!(std::sync::RwLock<[u64; 8]>, unwrap);
impl_lock!(parking_lot::RwLock<[u64; 8]>,);

/// A bare reader-writer lock word (see the module docs), over data kept in
/// atomics so that no `unsafe` is needed; `FETCH_ADD` picks the read lock.
struct Word<const FETCH_ADD: bool> {
    state: AtomicU32,
    data: [AtomicU64; 8],
}

/// The writer's bit of a [`Word`]; the readers count below it.
const WRITER: u32 = 1 << 31;

impl<const FETCH_ADD: bool> Word<FETCH_ADD> {
    fn read_lock(&self) {
        let mut waited = 0u32;
        loop {
            if FETCH_ADD {
                if self.state.fetch_add(1, Ordering::Acquire) & WRITER == 0 {
                    return;
                }
                self.state.fetch_sub(1, Ordering::Relaxed);
            } else {
                let state = self.state.load(Ordering::Relaxed);
                if state & WRITER == 0
                    && self.state.compare_exchange_weak(state, state + 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
                {
                    return;
                }
            }
            while self.state.load(Ordering::Relaxed) & WRITER != 0 {
                backoff(&mut waited);
            }
        }
    }

    fn write_lock(&self) {
        let mut waited = 0u32;
        while self.state.compare_exchange_weak(0, WRITER, Ordering::Acquire, Ordering::Relaxed).is_err() {
            backoff(&mut waited);
        }
    }
}

/// A spin hint for the first 64 waits, then an OS yield (the threads may
/// outnumber the CPUs).
fn backoff(waited: &mut u32) {
    *waited += 1;
    if *waited < 64 { std::hint::spin_loop() } else { std::thread::yield_now() }
}

impl<const FETCH_ADD: bool> Lock for Word<FETCH_ADD> {
    fn new() -> Self {
        Word { state: AtomicU32::new(0), data: Default::default() }
    }
    fn read_check(&self) -> bool {
        self.read_lock();
        let first = self.data[0].load(Ordering::Relaxed);
        let torn = self.data.iter().any(|s| s.load(Ordering::Relaxed) != first);
        // Release: the next writer's Acquire sees our reads done.
        self.state.fetch_sub(1, Ordering::Release);
        torn
    }
    fn write_bump(&self) {
        self.write_lock();
        let next = self.data[0].load(Ordering::Relaxed) + 1;
        for slot in &self.data {
            slot.store(next, Ordering::Relaxed);
        }
        hold();
        // Release: the next reader's or writer's Acquire sees the new data.
        self.state.fetch_sub(WRITER, Ordering::Release);
    }
}

/// Reader slots of a [`Sharded`] lock: threads beyond this share slots
/// (each slot is a count, so sharing is correct, only slower).
const SHARDS: usize = 16;

/// One reader slot, alone on its cache lines (128 bytes: the adjacent-line
/// prefetcher pairs lines).
#[repr(align(128))]
#[derive(Default)]
struct Shard(AtomicU64);

/// A lock whose readers do not share a cache line while no writer comes:
/// each reader counts itself in its own thread's slot, then checks the
/// writer's word (a read-mostly line, which the readers' CPUs keep a copy
/// of); a writer takes the word, then waits for every slot to empty. The
/// design of NUMA-aware reader-writer locks (per-node read indicators) and
/// of Linux's percpu-rwsem, bare here as [`Word`] is (no queue, no parking).
/// It asks how much of the read lock's cost is the line its readers share:
/// the writes (one in `WRITE_EVERY`) still cross between the CPUs.
struct Sharded {
    writer: AtomicU32,
    shards: [Shard; SHARDS],
    data: [AtomicU64; 8],
}

/// This thread's reader slot in a [`Sharded`] lock.
fn shard_index() -> usize {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    thread_local!(static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) as usize % SHARDS);
    INDEX.with(|i| *i)
}

impl Lock for Sharded {
    fn new() -> Self {
        Sharded { writer: AtomicU32::new(0), shards: Default::default(), data: Default::default() }
    }
    fn read_check(&self) -> bool {
        let shard = &self.shards[shard_index()].0;
        let mut waited = 0u32;
        loop {
            // SeqCst, with the load after it: a reader counts itself before
            // it looks for a writer, a writer flags itself before it looks
            // for readers (SeqCst both), so one of the two sees the other.
            shard.fetch_add(1, Ordering::SeqCst);
            if self.writer.load(Ordering::SeqCst) == 0 {
                break;
            }
            shard.fetch_sub(1, Ordering::Release);
            while self.writer.load(Ordering::Relaxed) != 0 {
                backoff(&mut waited);
            }
        }
        let first = self.data[0].load(Ordering::Relaxed);
        let torn = self.data.iter().any(|s| s.load(Ordering::Relaxed) != first);
        // Release: the writer's Acquire load of the slot sees our reads done.
        shard.fetch_sub(1, Ordering::Release);
        torn
    }
    fn write_bump(&self) {
        let mut waited = 0u32;
        while self.writer.compare_exchange_weak(0, 1, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            backoff(&mut waited);
        }
        for shard in &self.shards {
            while shard.0.load(Ordering::SeqCst) != 0 {
                backoff(&mut waited);
            }
        }
        let next = self.data[0].load(Ordering::Relaxed) + 1;
        for slot in &self.data {
            slot.store(next, Ordering::Relaxed);
        }
        hold();
        // Release: the next reader's or writer's SeqCst load sees the data.
        self.writer.store(0, Ordering::Release);
    }
}

fn run<L: Lock>(threads: usize, ops: u64, write_every: u64) -> Duration {
    let lock = Arc::new(L::new());
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (lock, barrier) = (Arc::clone(&lock), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let mut torn = 0u64;
                for op in 0..ops {
                    if op % write_every == write_every - 1 {
                        lock.write_bump();
                    } else {
                        torn += u64::from(lock.read_check());
                    }
                }
                (torn, start, Instant::now())
            })
        })
        .collect();
    barrier.wait();
    let spans: Vec<(u64, Instant, Instant)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let torn: u64 = spans.iter().map(|s| s.0).sum();
    // From the first thread's start to the last one's end.
    let first = spans.iter().map(|s| s.1).min().expect("at least one thread");
    let last = spans.iter().map(|s| s.2).max().expect("at least one thread");
    let elapsed = last - first;
    assert_eq!(torn, 0, "torn read");
    elapsed
}

fn median_mops<L: Lock>(threads: usize, ops: u64, runs: usize, write_every: u64) -> (f64, f64, f64) {
    let mut v: Vec<f64> = (0..runs)
        .map(|_| (threads as u64 * ops) as f64 / run::<L>(threads, ops, write_every).as_secs_f64() / 1e6)
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let args = args::Args::parse(&ARGS);
    let ops = args.count(0, if args.quick { 2_000 } else { 200_000 });
    let runs = args.count(1, if args.quick { 1 } else { 5 }) as usize;
    if runs == 0 {
        args.fail("runs: at least 1");
    }
    let write_every: u64 = match std::env::var("WRITE_EVERY").map(|s| s.parse::<u64>()) {
        Err(_) => 20,
        Ok(Ok(n)) if n > 0 => n,
        Ok(_) => args.fail("WRITE_EVERY: expected a whole number of at least 1"),
    };
    let thread_counts: Vec<usize> = match std::env::var("THREADS") {
        Err(_) => vec![2, 4, 8],
        Ok(list) => {
            list.split(',').map(|t| t.trim().parse().ok().filter(|&n| n > 0)).collect::<Option<_>>().unwrap_or_else(
                || args.fail(&format!("THREADS: expected a comma-separated list of thread counts, got {list:?}")),
            )
        }
    };
    println!("{ops} ops per thread, 1 write in every {write_every} ops, median of {runs} runs (min..max), M ops/s");
    for threads in thread_counts {
        let (w, wl, wh) = median_mops::<weft::sync::RwLock<[u64; 8]>>(threads, ops, runs, write_every);
        let (s, sl, sh) = median_mops::<std::sync::RwLock<[u64; 8]>>(threads, ops, runs, write_every);
        let (p, pl, ph) = median_mops::<parking_lot::RwLock<[u64; 8]>>(threads, ops, runs, write_every);
        let (c, cl, ch) = median_mops::<Word<false>>(threads, ops, runs, write_every);
        let (a, al, ah) = median_mops::<Word<true>>(threads, ops, runs, write_every);
        let (d, dl, dh) = median_mops::<Sharded>(threads, ops, runs, write_every);
        println!(
            "{threads} threads: weft {w:7.2} ({wl:.2}..{wh:.2})  std {s:7.2} ({sl:.2}..{sh:.2})  parking_lot {p:7.2} ({pl:.2}..{ph:.2})  \
             bare word, load+CAS {c:7.2} ({cl:.2}..{ch:.2})  bare word, fetch_add {a:7.2} ({al:.2}..{ah:.2})  \
             bare, a reader slot per thread {d:7.2} ({dl:.2}..{dh:.2})"
        );
    }
}
