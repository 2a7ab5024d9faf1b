//! Five dining philosophers on weft coroutines, two deadlock-free ways:
//!
//! 1. lock ordering: each philosopher picks up the lower-numbered fork
//!    first, so no cycle of waiting can form;
//! 2. a `Semaphore` with 4 permits at the table: at most four philosophers
//!    reach for forks at once, so at least one always gets both.
//!
//! Forks are `Mutex`es. Each philosopher eats a fixed number of meals; the
//! report shows meals per philosopher and the longest wait for forks, and
//! the check proves the forks were never shared (each fork counts exactly
//! the meals of its two philosophers: no increment lost to two holders at
//! once) and that the dinner ended (no deadlock).
//!
//! ```text
//! cargo run --release --example dining_philosophers            # 1 000 meals each
//! cargo run --release --example dining_philosophers -- 5000    # meals each
//! cargo run --release --example dining_philosophers -- --quick # CI's short mode
//! ```

#[path = "common/args.rs"]
mod args;

use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::sync::{Mutex, Semaphore};

const PHILOSOPHERS: usize = 5;

static ARGS: args::Spec = args::Spec { name: "dining_philosophers", counts: &["meals"], workers: false };

#[derive(Clone, Copy)]
enum Strategy {
    LockOrdering,
    Waiter,
}

fn dine(strategy: Strategy, meals: u64) -> (Vec<u64>, Duration) {
    let runtime = weft::Runtime::builder().workers(2).build().expect("cannot start the runtime");
    let forks: Arc<Vec<Mutex<u64>>> = Arc::new((0..PHILOSOPHERS).map(|_| Mutex::new(0)).collect());
    let table = Arc::new(Semaphore::new(PHILOSOPHERS - 1));
    runtime.block_on(move || {
        let diners: Vec<_> = (0..PHILOSOPHERS)
            .map(|i| {
                let forks = Arc::clone(&forks);
                let table = Arc::clone(&table);
                weft::spawn(move || {
                    let (left, right) = (i, (i + 1) % PHILOSOPHERS);
                    let mut eaten = 0;
                    let mut longest_wait = Duration::ZERO;
                    for _ in 0..meals {
                        let asked = Instant::now();
                        let seat = match strategy {
                            Strategy::Waiter => Some(table.acquire()),
                            Strategy::LockOrdering => None,
                        };
                        let (first, second) = match strategy {
                            Strategy::LockOrdering => (left.min(right), left.max(right)),
                            Strategy::Waiter => (left, right),
                        };
                        let mut a = forks[first].lock();
                        let mut b = forks[second].lock();
                        longest_wait = longest_wait.max(asked.elapsed());
                        *a += 1; // each fork counts its uses
                        *b += 1;
                        eaten += 1;
                        drop((a, b, seat));
                        weft::yield_now(); // think
                    }
                    (eaten, longest_wait)
                })
            })
            .collect();
        let results: Vec<(u64, Duration)> =
            diners.into_iter().map(|d| d.join().expect("a philosopher panicked")).collect();
        // Fork i is shared by philosophers i - 1 and i, who each ate every
        // meal: an increment lost to two holders at once would show here.
        for (i, fork) in forks.iter().enumerate() {
            assert_eq!(*fork.lock(), 2 * meals, "fork {i} was used by two philosophers at once");
        }
        let longest = results.iter().map(|r| r.1).max().unwrap_or_default();
        (results.into_iter().map(|r| r.0).collect(), longest)
    })
}

fn main() {
    let args = args::Args::parse(&ARGS);
    let meals = args.count(0, if args.quick { 100 } else { 1_000 });
    for (name, strategy) in [("lock ordering", Strategy::LockOrdering), ("semaphore waiter", Strategy::Waiter)] {
        let start = Instant::now();
        let (eaten, longest) = dine(strategy, meals);
        println!(
            "{name:<17} meals per philosopher {eaten:?} in {:.1} ms; longest wait for forks {:.3} ms",
            start.elapsed().as_secs_f64() * 1e3,
            longest.as_secs_f64() * 1e3
        );
    }
    println!("check: ok (no deadlock, no fork shared)");
}
