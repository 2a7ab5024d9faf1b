//! What a weft context switch costs, next to the alternatives: corosensei's
//! switch, a futex hand-off between two OS threads, and the set-up cost of a
//! coroutine (with and without the stack cache) and of an OS thread.
//!
//! Everything is in one criterion group, `switch`, so the figures sit side by
//! side in the report:
//!
//! ```text
//! cargo bench -p weft-benches --bench switch                        # fp-control off (the default)
//! cargo bench -p weft-benches --bench switch --features fp-control  # the FP control state preserved
//! ```
//!
//! Setting `WEFT_SWITCH_COUNT=N` skips criterion and runs N weft round trips,
//! then N corosensei round trips, in the `#[inline(never)]` functions
//! `weft_round_trips` and `corosensei_round_trips`, then N create+run+drop
//! of each (`weft_create_run_drops`, from a cached stack;
//! `corosensei_create_run_drops`, on a reused stack), so an instruction
//! counter can be pointed at each one:
//!
//! ```text
//! WEFT_SWITCH_COUNT=1000000 valgrind --tool=callgrind \
//!     --toggle-collect='*weft_round_trips*' target/release/deps/switch-<hash>
//! ```

#[path = "../examples/common/linux.rs"]
mod linux;

use criterion::{Criterion, criterion_group};
use linux::{futex_wait, futex_wake, pin_to_cpu};
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use weft::coroutine::{Coroutine, set_thread_stack_cache_capacity};

/// The stack cache capacity a thread starts with (see
/// `set_thread_stack_cache_capacity`).
const DEFAULT_STACK_CACHE_CAPACITY: usize = 64;

fn switch(c: &mut Criterion) {
    let mut group = c.benchmark_group("switch");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(30);

    // One iteration = one round trip: resume in, suspend back out.
    group.bench_function("weft resume+suspend", |b| {
        let mut co = Coroutine::<(), (), ()>::new(|yielder, ()| {
            loop {
                yielder.suspend(());
            }
        });
        b.iter(|| co.resume(()));
    });
    group.bench_function("corosensei resume+suspend", |b| {
        let mut co = corosensei::Coroutine::<(), (), ()>::new(|yielder, ()| {
            loop {
                yielder.suspend(());
            }
        });
        b.iter(|| co.resume(()));
    });

    // One iteration = one round trip between two OS threads: A wakes B, B
    // wakes A.
    group.bench_function("futex hand-off, 2 threads pinned to one core", |b| {
        b.iter_custom(|iters| futex_ping_pong(iters, true));
    });
    group.bench_function("futex hand-off, 2 threads unpinned", |b| {
        b.iter_custom(|iters| futex_ping_pong(iters, false));
    });

    // One iteration = create a coroutine, run it to completion, drop it.
    group.bench_function("weft create+run+drop (cached stack)", |b| {
        b.iter(|| {
            let mut co = Coroutine::<(), (), u8>::new(|_, ()| 1u8);
            co.resume(())
        });
    });
    set_thread_stack_cache_capacity(0);
    group.bench_function("weft create+run+drop (fresh stack)", |b| {
        b.iter(|| {
            let mut co = Coroutine::<(), (), u8>::new(|_, ()| 1u8);
            co.resume(())
        });
    });
    set_thread_stack_cache_capacity(DEFAULT_STACK_CACHE_CAPACITY);
    group.bench_function("corosensei create+run+drop (fresh stack)", |b| {
        b.iter(|| {
            let mut co = corosensei::Coroutine::<(), (), u8>::new(|_, ()| 1u8);
            co.resume(())
        });
    });
    group.bench_function("corosensei create+run+drop (reused stack)", |b| {
        let mut stack = Some(corosensei::stack::DefaultStack::default());
        b.iter(|| {
            let mut co = corosensei::Coroutine::<(), (), u8, _>::with_stack(
                stack.take().expect("the stack is put back after every iteration"),
                |_, ()| 1u8,
            );
            let result = co.resume(());
            stack = Some(co.into_stack());
            result
        });
    });

    group.bench_function("std::thread spawn+join", |b| {
        b.iter(|| std::thread::spawn(|| 1u8).join().expect("the thread does not panic"));
    });

    group.finish();
}

/// Runs `iters` round trips between two fresh threads (pinned to CPU 0 if
/// `pin`) and returns how long they took, as seen by the thread that starts
/// each round trip. One untimed round trip first makes sure both threads are
/// up, so thread creation is not measured. The bench thread itself only
/// waits, so its affinity is left alone.
fn futex_ping_pong(iters: u64, pin: bool) -> Duration {
    // 0: A's turn, 1: B's turn.
    let turn = AtomicU32::new(0);
    let turn = &turn;
    let pin_if_asked = move || {
        if pin {
            pin_to_cpu(0).expect("CPU 0 is allowed for this process");
        }
    };
    std::thread::scope(|s| {
        s.spawn(move || {
            pin_if_asked();
            for _ in 0..=iters {
                wait_until(turn, 1);
                turn.store(0, Ordering::Release);
                futex_wake(turn, 1);
            }
        });
        let a = s.spawn(move || {
            pin_if_asked();
            let round_trip = || {
                turn.store(1, Ordering::Release);
                futex_wake(turn, 1);
                wait_until(turn, 0);
            };
            round_trip();
            let start = Instant::now();
            for _ in 0..iters {
                round_trip();
            }
            start.elapsed()
        });
        a.join().expect("the timing thread does not panic")
    })
}

/// Blocks on the futex until `word` holds `value`.
fn wait_until(word: &AtomicU32, value: u32) {
    loop {
        let current = word.load(Ordering::Acquire);
        if current == value {
            return;
        }
        futex_wait(word, current);
    }
}

/// `n` weft round trips on a coroutine that has already started.
#[inline(never)]
fn weft_round_trips(co: &mut Coroutine<(), (), ()>, n: u64) {
    for _ in 0..n {
        black_box(co.resume(()));
    }
}

/// `n` corosensei round trips on a coroutine that has already started.
#[inline(never)]
fn corosensei_round_trips(co: &mut corosensei::Coroutine<(), (), ()>, n: u64) {
    for _ in 0..n {
        black_box(co.resume(()));
    }
}

/// `n` create+run+drop of a weft coroutine (from a cached stack after the
/// first).
#[inline(never)]
fn weft_create_run_drops(n: u64) {
    for _ in 0..n {
        let mut co = Coroutine::<(), (), u8>::new(|_, ()| 1u8);
        black_box(co.resume(()));
    }
}

/// `n` create+run+drop of a corosensei coroutine on a reused stack.
#[inline(never)]
fn corosensei_create_run_drops(n: u64) {
    let mut stack = Some(corosensei::stack::DefaultStack::default());
    for _ in 0..n {
        let mut co = corosensei::Coroutine::<(), (), u8, _>::with_stack(
            stack.take().expect("the stack is put back after every iteration"),
            |_, ()| 1u8,
        );
        black_box(co.resume(()));
        stack = Some(co.into_stack());
    }
}

/// The `WEFT_SWITCH_COUNT` mode: both coroutines are created and started
/// (first resume: stack mapping, first frame) outside the counted functions.
fn count_round_trips(n: u64) {
    let mut weft_co = Coroutine::<(), (), ()>::new(|yielder, ()| {
        loop {
            yielder.suspend(());
        }
    });
    weft_co.resume(());
    weft_round_trips(&mut weft_co, n);

    let mut corosensei_co = corosensei::Coroutine::<(), (), ()>::new(|yielder, ()| {
        loop {
            yielder.suspend(());
        }
    });
    corosensei_co.resume(());
    corosensei_round_trips(&mut corosensei_co, n);
    // One first, outside the counted function: it maps the stack the
    // others take from the cache.
    weft_create_run_drops(1);
    weft_create_run_drops(n);
    corosensei_create_run_drops(n);
    println!("ran {n} weft and {n} corosensei round trips, then {n} create+run+drop of each");
}

criterion_group!(benches, switch);

fn main() {
    if let Ok(count) = std::env::var("WEFT_SWITCH_COUNT") {
        let n = count.parse().expect("WEFT_SWITCH_COUNT is a number of round trips");
        count_round_trips(n);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
