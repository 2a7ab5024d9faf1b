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
        println!(
            "{threads} threads: weft {w:7.2} ({wl:.2}..{wh:.2})  std {s:7.2} ({sl:.2}..{sh:.2})  parking_lot {p:7.2} ({pl:.2}..{ph:.2})  \
             bare word, load+CAS {c:7.2} ({cl:.2}..{ch:.2})  bare word, fetch_add {a:7.2} ({al:.2}..{ah:.2})"
        );
    }
}
