//! weft's stackful coroutine used on its own, as a generator, and what one
//! switch costs next to waking an OS thread.
//!
//! ```text
//! cargo run --release --example generator            # full run (a few seconds)
//! cargo run --release --example generator -- --quick # CI's short mode
//! ```
//!
//! It prints the Fibonacci numbers a coroutine yields, a parser that
//! suspends from deep inside recursion, and then times a resume+suspend
//! round trip against a futex hand-off between two OS threads (the cheapest
//! way one thread can hand control to another).

#[path = "common/args.rs"]
mod args;
#[path = "common/linux.rs"]
mod linux;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use weft::coroutine::{Coroutine, CoroutineResult, Yielder};

static ARGS: args::Spec = args::Spec { name: "generator", counts: &[], workers: false };

fn main() {
    let quick = args::Args::parse(&ARGS).quick;

    // 1. A generator: yields values until it returns.
    let mut fib = Coroutine::<(), u64, &'static str>::new(|yielder, ()| {
        let (mut a, mut b) = (0u64, 1u64);
        while a < 100 {
            yielder.suspend(a);
            (a, b) = (b, a + b);
        }
        "past 100"
    });
    let mut numbers = Vec::new();
    let end = loop {
        match fib.resume(()) {
            CoroutineResult::Yield(n) => numbers.push(n.to_string()),
            CoroutineResult::Return(why) => break why,
        }
    };
    println!("fibonacci: {} ({end})", numbers.join(" "));

    // 2. Suspending from inside recursion: an in-order walk of a tree that
    //    yields each leaf, with the walk's state kept on the coroutine's stack.
    #[derive(Debug)]
    enum Tree {
        Leaf(u32),
        Node(Box<Tree>, Box<Tree>),
    }
    fn walk(tree: &Tree, yielder: &Yielder<(), u32>) {
        match tree {
            Tree::Leaf(v) => yielder.suspend(*v),
            Tree::Node(l, r) => {
                walk(l, yielder);
                walk(r, yielder);
            }
        }
    }
    let tree = Tree::Node(
        Box::new(Tree::Node(Box::new(Tree::Leaf(1)), Box::new(Tree::Leaf(2)))),
        Box::new(Tree::Node(
            Box::new(Tree::Leaf(3)),
            Box::new(Tree::Node(Box::new(Tree::Leaf(4)), Box::new(Tree::Leaf(5)))),
        )),
    );
    let mut leaves = Coroutine::<(), u32, ()>::new(move |yielder, ()| walk(&tree, yielder));
    let mut seen = Vec::new();
    while let CoroutineResult::Yield(v) = leaves.resume(()) {
        seen.push(v);
    }
    println!("tree leaves, in order: {seen:?}");

    // 3. What a switch costs.
    let rounds: u32 = if quick { 200_000 } else { 10_000_000 };
    let handoffs: u32 = if quick { 2_000 } else { 100_000 };
    let samples = if quick { 3 } else { 7 };
    let switch = median(samples, || time_coroutine_round_trip(rounds));
    let handoff = median(samples, || time_futex_round_trip(handoffs));
    println!();
    println!("{:<48} {:>12}", "round trip (there and back)", "median");
    println!("{:<48} {:>9.1} ns", "weft coroutine resume + suspend", switch);
    println!("{:<48} {:>9.1} ns", "OS threads, futex wake + wait, both ways", handoff);
    println!("{:<48} {:>9.0} x", "OS threads / weft", handoff / switch);
    println!();
    println!("({} samples each; the OS-thread figure depends on whether the two threads share a core:", samples);
    println!(" see BENCHMARKS.md for pinned and unpinned figures measured side by side with criterion)");
}

/// Nanoseconds per resume+suspend round trip.
fn time_coroutine_round_trip(rounds: u32) -> f64 {
    let mut ping = Coroutine::<u32, u32, ()>::new(|yielder, mut n| {
        loop {
            n = yielder.suspend(n + 1);
        }
    });
    let start = Instant::now();
    let mut n = 0;
    for _ in 0..rounds {
        match ping.resume(n) {
            CoroutineResult::Yield(next) => n = next,
            CoroutineResult::Return(()) => unreachable!(),
        }
    }
    assert_eq!(n, rounds, "every round trip must have happened");
    per_round(start.elapsed(), rounds)
}

/// Nanoseconds per round trip between two OS threads that take turns through
/// a futex word: 0 = main's turn, 1 = partner's turn.
fn time_futex_round_trip(rounds: u32) -> f64 {
    let turn = Arc::new(AtomicU32::new(0));
    let partner = {
        let turn = Arc::clone(&turn);
        std::thread::spawn(move || {
            for _ in 0..rounds {
                while turn.load(Ordering::Acquire) != 1 {
                    linux::futex_wait(&turn, 0);
                }
                turn.store(0, Ordering::Release);
                linux::futex_wake(&turn, 1);
            }
        })
    };
    let start = Instant::now();
    for _ in 0..rounds {
        turn.store(1, Ordering::Release);
        linux::futex_wake(&turn, 1);
        while turn.load(Ordering::Acquire) != 0 {
            linux::futex_wait(&turn, 1);
        }
    }
    let elapsed = start.elapsed();
    partner.join().expect("partner thread");
    per_round(elapsed, rounds)
}

fn per_round(elapsed: Duration, rounds: u32) -> f64 {
    elapsed.as_nanos() as f64 / f64::from(rounds)
}

fn median(samples: usize, mut f: impl FnMut() -> f64) -> f64 {
    let mut v: Vec<f64> = (0..samples).map(|_| f()).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
