//! The skynet benchmark on weft: a coroutine spawns 10 children, each spawns
//! 10 more, down to `leaves` leaf coroutines (1 000 000 by default); each
//! leaf returns its index and each parent the sum of its children, so the
//! root returns `leaves * (leaves - 1) / 2` (499 999 500 000 for a million).
//!
//! ```text
//! cargo run --release --example skynet                 # 1 000 000 leaves
//! cargo run --release --example skynet -- 100000       # another leaf count (a power of 10)
//! cargo run --release --example skynet -- --workers 1  # choose the worker count
//! cargo run --release --example skynet -- --quick      # CI's short mode (10 000 leaves)
//! ```
//!
//! About 1.1 million coroutines are created in all, yet only a few dozen are
//! started and unfinished at any moment: a worker runs the newest unstarted
//! coroutine first (depth-first), and a coroutine takes its stack only when
//! it first runs, so this runs within Linux's default `vm.max_map_count`.

#[path = "common/args.rs"]
mod args;

use std::time::Instant;

static ARGS: args::Spec = args::Spec { name: "skynet", counts: &["leaves"], workers: true };

fn skynet(num: u64, size: u64) -> u64 {
    if size == 1 {
        return num;
    }
    let step = size / 10;
    let children: Vec<_> = (0..10).map(|i| weft::spawn(move || skynet(num + i * step, step))).collect();
    children.into_iter().map(|child| child.join().expect("a skynet child panicked")).sum()
}

fn main() {
    let args = args::Args::parse(&ARGS);
    let leaves = args.count(0, if args.quick { 10_000 } else { 1_000_000 });
    let workers = args.workers;
    let mut power = 1u64;
    while power < leaves {
        match power.checked_mul(10) {
            Some(next) => power = next,
            None => break,
        }
    }
    if power != leaves || leaves == 0 {
        args.fail(&format!("the leaf count must be a power of 10, got {leaves}"));
    }

    let mut builder = weft::Runtime::builder();
    if let Some(workers) = workers {
        builder = builder.workers(workers);
    }
    let runtime = builder.build().expect("cannot start the runtime");
    let start = Instant::now();
    let sum = runtime.block_on(move || skynet(0, leaves));
    let elapsed = start.elapsed();
    let expected = leaves * (leaves - 1) / 2;
    println!(
        "skynet: {leaves} leaves on {} workers: sum {sum} in {:.1} ms ({} coroutines)",
        runtime.workers(),
        elapsed.as_secs_f64() * 1e3,
        (leaves * 10 - 1) / 9
    );
    assert_eq!(sum, expected, "wrong skynet sum");
    println!("check: ok (expected {expected})");
}
