//! A three-stage pipeline on weft coroutines, connected by channels:
//!
//! ```text
//!   source ──numbers──▶ worker ×W ──squares (rendezvous)──▶ sink
//!   (1 coroutine)       (fan-out:  ──primes  (unbounded) ──▶ (fan-in: one Select
//!                        MPMC)                                over both, with a
//!                                                             timeout)
//! ```
//!
//! 1. The source sends the numbers `1..=N` into a bounded channel, pausing
//!    once half-way so that the sink's select has something to time out on.
//! 2. W workers share the `numbers` receiver (each number goes to exactly
//!    one of them): each sends `(n, n²)` through a rendezvous channel, and
//!    `n` through a second channel when it is prime.
//! 3. The sink waits on both result channels at once with a [`Select`],
//!    `select_timeout` counting the moments nothing came; it drops a
//!    channel from the select once every worker has hung up on it.
//!
//! It prints what each stage moved, then checks it: every number came
//! through exactly once, the sum of the squares and the number of primes
//! are exact, and the workers' counts add up.
//!
//! ```text
//! cargo run --release --example pipeline                     # 1 000 000 numbers, 8 stage workers
//! cargo run --release --example pipeline -- 100000 3         # numbers, stage workers
//! cargo run --release --example pipeline -- --workers 4      # runtime workers (default 2)
//! cargo run --release --example pipeline -- --quick          # CI's short mode
//! ```

#[path = "common/args.rs"]
mod args;

use std::time::{Duration, Instant};
use weft::sync::channel::{self, Select};

static ARGS: args::Spec = args::Spec { name: "pipeline", counts: &["numbers", "stage-workers"], workers: true };

/// How long the sink waits before it counts an idle tick.
const TICK: Duration = Duration::from_millis(2);

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// What the sink saw.
struct Sunk {
    seen: Vec<bool>,
    sum_of_squares: u128,
    primes: u64,
    idle_ticks: u64,
    selects: u64,
}

fn main() {
    let args = args::Args::parse(&ARGS);
    let numbers = args.count(0, if args.quick { 20_000 } else { 1_000_000 });
    let stage_workers = args.count(1, 8) as usize;
    if numbers == 0 || stage_workers == 0 {
        args.fail("need at least one number and one stage worker");
    }
    let runtime =
        weft::Runtime::builder().workers(args.workers.unwrap_or(2)).build().expect("cannot start the runtime");
    let start = Instant::now();

    let (per_worker, sunk) = runtime.block_on(move || {
        let (numbers_tx, numbers_rx) = channel::bounded::<u64>(64);
        let (squares_tx, squares_rx) = channel::bounded::<(u64, u128)>(0);
        let (primes_tx, primes_rx) = channel::unbounded::<u64>();

        // Stage 1: the source.
        let source = weft::spawn(move || {
            for n in 1..=numbers {
                if n == numbers / 2 {
                    weft::sleep(TICK * 10); // a lull, for the sink's timeout
                }
                numbers_tx.send(n).expect("the workers are there");
            }
            // Dropping the sender ends the workers' loops.
        });

        // Stage 2: the workers, fanned out over one MPMC receiver.
        let workers: Vec<_> = (0..stage_workers)
            .map(|_| {
                let (numbers_rx, squares_tx, primes_tx) = (numbers_rx.clone(), squares_tx.clone(), primes_tx.clone());
                weft::spawn(move || {
                    let mut handled = 0u64;
                    for n in numbers_rx.iter() {
                        squares_tx.send((n, u128::from(n) * u128::from(n))).expect("the sink is there");
                        if is_prime(n) {
                            primes_tx.send(n).expect("the sink is there");
                        }
                        handled += 1;
                    }
                    handled
                })
            })
            .collect();
        // Only the workers hold these now: the sink sees each channel
        // disconnect once every worker is done with it.
        drop((numbers_rx, squares_tx, primes_tx));

        // Stage 3: the sink, fanned in with a select and a timeout.
        let sink = weft::spawn(move || {
            let mut sunk = Sunk {
                seen: vec![false; numbers as usize + 1],
                sum_of_squares: 0,
                primes: 0,
                idle_ticks: 0,
                selects: 0,
            };
            let (mut squares_open, mut primes_open) = (true, true);
            while squares_open || primes_open {
                let mut select = Select::new();
                let squares_case = squares_open.then(|| select.recv(&squares_rx));
                let primes_case = primes_open.then(|| select.recv(&primes_rx));
                sunk.selects += 1;
                let Ok(operation) = select.select_timeout(TICK) else {
                    sunk.idle_ticks += 1;
                    continue;
                };
                let index = Some(operation.index());
                if index == squares_case {
                    match operation.recv(&squares_rx) {
                        Ok((n, square)) => {
                            assert!(!sunk.seen[n as usize], "{n} came through twice");
                            sunk.seen[n as usize] = true;
                            sunk.sum_of_squares += square;
                        }
                        Err(_) => squares_open = false,
                    }
                } else if index == primes_case {
                    match operation.recv(&primes_rx) {
                        Ok(_) => sunk.primes += 1,
                        Err(_) => primes_open = false,
                    }
                }
            }
            sunk
        });

        source.join().expect("the source panicked");
        let per_worker: Vec<u64> = workers.into_iter().map(|w| w.join().expect("a worker panicked")).collect();
        (per_worker, sink.join().expect("the sink panicked"))
    });
    let elapsed = start.elapsed();

    // What moved.
    let n = u128::from(numbers);
    let expected_sum = n * (n + 1) * (2 * n + 1) / 6;
    let expected_primes = (1..=numbers).filter(|&k| is_prime(k)).count() as u64;
    let handled: u64 = per_worker.iter().sum();
    println!("source: {numbers} numbers into a bounded(64) channel, with one {} ms lull", (TICK * 10).as_millis());
    println!(
        "workers: {stage_workers} sharing one receiver, each handled {} (min {}, max {})",
        handled / stage_workers as u64,
        per_worker.iter().min().unwrap(),
        per_worker.iter().max().unwrap()
    );
    println!(
        "sink: {} squares (sum {}) through a rendezvous channel, {} primes through an unbounded one, \
         {} selects of which {} timed out after {} ms",
        sunk.seen.iter().filter(|&&s| s).count(),
        sunk.sum_of_squares,
        sunk.primes,
        sunk.selects,
        sunk.idle_ticks,
        TICK.as_millis()
    );
    println!(
        "{:.1} ms, {:.2} M numbers/s through the pipeline",
        elapsed.as_secs_f64() * 1e3,
        numbers as f64 / elapsed.as_secs_f64() / 1e6
    );

    // The checks.
    assert_eq!(handled, numbers, "the workers' counts do not add up");
    assert!(sunk.seen[1..].iter().all(|&s| s), "a number never came through");
    assert_eq!(sunk.sum_of_squares, expected_sum, "the sum of the squares");
    assert_eq!(sunk.primes, expected_primes, "the number of primes");
    println!("check: ok (every number exactly once, sum of squares and prime count exact)");
}
