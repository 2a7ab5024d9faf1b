//! What `Runtime::dump` costs: parks N coroutines (a quarter each on a
//! Mutex, a Condvar, a sleep and a join, so the dump has four distinct
//! stacks to symbolise), then times R dumps taken from an OS thread, and
//! the printing of one (which symbolises the backtraces).
//!
//! ```text
//! cargo run --release --example dump                         # 10 000 coroutines, 11 dumps
//! cargo run --release --example dump -- 100000 5             # coroutines, dumps
//! cargo run --release --example dump -- --workers 1 10000    # choose the worker count
//! cargo run --release --example dump -- --quick              # CI's short mode (1 000 coroutines, 3 dumps)
//! ```
//!
//! Each parked coroutine holds a stack, two memory maps of the default
//! `vm.max_map_count` of 65 530: about 32 000 is the most this can park
//! without raising it (`sudo sysctl -w vm.max_map_count=262144`).
//!
//! With one worker, that worker is held for the whole collection (it walks
//! every stack); with several, each holds its own share.

#[path = "common/args.rs"]
mod args;

use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::sync::{Condvar, Mutex};

#[inline(never)]
fn waits_on_mutex(lock: &Mutex<()>) {
    drop(std::hint::black_box(lock.lock()));
}

#[inline(never)]
fn waits_on_condvar(pair: &(Mutex<bool>, Condvar)) {
    let mut guard = pair.0.lock();
    while !*guard {
        guard = pair.1.wait(guard);
    }
}

#[inline(never)]
fn sleeps(until: &Mutex<bool>) {
    while !*until.lock() {
        weft::sleep(Duration::from_millis(200));
    }
}

static ARGS: args::Spec = args::Spec { name: "dump", counts: &["coroutines", "dumps"], workers: true };

fn main() {
    let args = args::Args::parse(&ARGS);
    let coroutines = args.count(0, if args.quick { 1_000 } else { 10_000 }) as usize;
    let rounds = args.count(1, if args.quick { 3 } else { 11 }) as usize;
    if coroutines < 4 || rounds == 0 {
        args.fail("park at least 4 coroutines (a quarter on each kind of wait) and take at least one dump");
    }
    let mut builder = weft::Runtime::builder().stack_size(64 * 1024);
    if let Some(workers) = args.workers {
        builder = builder.workers(workers);
    }
    let rt = Arc::new(builder.build().expect("runtime"));
    let workers = rt.workers();

    let lock = Arc::new(Mutex::new(()));
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let stop = Arc::new(Mutex::new(false));
    let guard = lock.lock();
    let quarter = coroutines / 4;
    let mut handles = Vec::new();
    let mut mutex_waiters = Vec::new();
    for _ in 0..quarter {
        let lock = Arc::clone(&lock);
        mutex_waiters.push(rt.spawn(move || waits_on_mutex(&lock)));
        let pair = Arc::clone(&pair);
        handles.push(rt.spawn(move || waits_on_condvar(&pair)));
        let stop = Arc::clone(&stop);
        handles.push(rt.spawn(move || sleeps(&stop)));
    }
    for waiter in mutex_waiters {
        handles.push(rt.spawn(move || waiter.join().expect("a mutex waiter")));
    }
    // Wait until every one of them is parked.
    let parked = loop {
        let dump = rt.dump();
        let parked =
            dump.coroutines().iter().filter(|c| matches!(c.state(), weft::CoroutineState::Parked { .. })).count();
        if parked >= 4 * quarter {
            break parked;
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    let mut times = Vec::new();
    let mut dump = None;
    for _ in 0..rounds {
        let started = Instant::now();
        let d = rt.dump();
        times.push(started.elapsed());
        assert!(d.busy_workers().is_empty(), "a worker did not answer");
        dump = Some(d);
    }
    times.sort();
    let dump = dump.expect("at least one round");
    let started = Instant::now();
    let printed = dump.to_string();
    let print_time = started.elapsed();
    let started = Instant::now();
    let printed_again = dump.to_string();
    let reprint_time = started.elapsed();
    assert_eq!(printed.len(), printed_again.len());
    let backtraces = dump.coroutines().iter().filter(|c| c.backtrace().is_some()).count();
    println!(
        "dump probe: {parked} coroutines parked on {workers} workers; Runtime::dump() took median {:.1} ms \
         (min {:.1} ms, max {:.1} ms, {rounds} runs), {:.2} us per coroutine; its text: {} lines, {:.0} KiB, \
         {backtraces} backtraces; printing it took {:.1} ms the first time (symbolising the distinct stacks), \
         {:.1} ms again",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1]),
        ms(times[times.len() / 2]) * 1e3 / parked as f64,
        printed.lines().count(),
        printed.len() as f64 / 1024.0,
        ms(print_time),
        ms(reprint_time),
    );

    drop(guard);
    *pair.0.lock() = true;
    pair.1.notify_all();
    *stop.lock() = true;
    for h in handles {
        h.join().expect("a waiter");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
