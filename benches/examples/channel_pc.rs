//! The channel bench's 4p4c workload as a program of its own: 4 producer
//! and 4 consumer coroutines through one `weft::sync::channel::bounded(64)`,
//! on a runtime of `--workers N` (default 2), several rounds in one
//! process. Prints each round's time and what the runtime did (steals,
//! sleeps, parks, wakes from the worker itself and from other threads), so
//! that a change of the time can be told from a change of placement or of
//! parking.
//!
//! `cargo run --release -p weft-benches --example channel_pc -- [items] [rounds] [--workers N]`
//! (defaults 10 000 000 and 3; `--quick`: 100 000 and 1, a smoke run for CI).
//!
//! Built against two commits side by side (the other one in a `git
//! worktree`, the example copied there), it compares runtimes outside the
//! bench binary, whose code placement moves its times by several per cent
//! between builds (BENCHMARKS.md, "The park word is the home worker's
//! alone").

#[path = "../../examples/common/args.rs"]
mod args;

use std::time::Instant;

static ARGS: args::Spec = args::Spec { name: "channel_pc", counts: &["items", "rounds"], workers: true };

const SIDES: u64 = 4;
const CAPACITY: usize = 64;

fn main() {
    let args = args::Args::parse(&ARGS);
    let (items, rounds) = if args.quick { (100_000, 1) } else { (args.count(0, 10_000_000), args.count(1, 3)) };
    let workers = args.workers.unwrap_or(2);
    let rt = weft::Runtime::builder().workers(workers).build().expect("worker threads");
    let per_side = items / SIDES;
    for _ in 0..rounds {
        let before = rt.metrics().total;
        let start = Instant::now();
        let sum = rt.block_on(move || {
            let (tx, rx) = weft::sync::channel::bounded::<u64>(CAPACITY);
            let producers: Vec<_> = (0..SIDES)
                .map(|p| {
                    let tx = tx.clone();
                    weft::spawn(move || {
                        for i in 0..per_side {
                            tx.send(p * per_side + i).expect("the consumers are alive");
                        }
                    })
                })
                .collect();
            let consumers: Vec<_> = (0..SIDES)
                .map(|_| {
                    let rx = rx.clone();
                    weft::spawn(move || {
                        (0..per_side).map(|_| rx.recv().expect("the producers send enough")).sum::<u64>()
                    })
                })
                .collect();
            producers.into_iter().for_each(|p| p.join().expect("a producer does not panic"));
            consumers.into_iter().map(|c| c.join().expect("a consumer does not panic")).sum::<u64>()
        });
        let elapsed = start.elapsed();
        let n = per_side * SIDES;
        assert_eq!(sum, n * (n - 1) / 2, "every item received exactly once");
        let m = rt.metrics().total;
        println!(
            "{n} items in {:.1} ms on {workers} workers: steals {} sleeps {} parks {} local wakes {} remote wakes {}",
            elapsed.as_secs_f64() * 1e3,
            m.steals - before.steals,
            m.sleeps - before.sleeps,
            m.parks - before.parks,
            m.local_wakes - before.local_wakes,
            m.remote_wakes - before.remote_wakes,
        );
    }
}
