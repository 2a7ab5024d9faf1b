//! Spawning coroutines from coroutines and from an OS thread, and joining
//! them both ways.
//!
//! ```text
//! cargo run --release --example hello
//! ```

#[path = "common/args.rs"]
mod args;

use std::time::Duration;

static ARGS: args::Spec = args::Spec { name: "hello", counts: &[], workers: false };

fn main() {
    // Short already; --quick is accepted (CI passes it to every example).
    let _ = args::Args::parse(&ARGS);
    let runtime = weft::Runtime::builder().workers(2).build().expect("cannot start the runtime");

    // From an OS thread: spawn onto the runtime and join (blocks this thread).
    let greeting = runtime.spawn(|| format!("hello from coroutine {}", weft::current().id()));
    println!("{}", greeting.join().expect("no panic"));

    // From a coroutine: spawn children and join them (parks only the parent).
    let total = runtime.block_on(|| {
        let children: Vec<_> = (1..=5u64)
            .map(|i| {
                weft::Builder::new()
                    .name(format!("child-{i}"))
                    .spawn(move || {
                        weft::sleep(Duration::from_millis(10 * i));
                        let me = weft::current();
                        println!("  {} (id {}) slept {} ms", me.name().unwrap_or("?"), me.id(), 10 * i);
                        i * 100
                    })
                    .expect("valid builder")
            })
            .collect();
        children.into_iter().map(|c| c.join().expect("no panic")).sum::<u64>()
    });
    println!("children returned {total} in all");
    assert_eq!(total, 1500);

    // A panic in a coroutine reaches whoever joins it, as with std::thread:
    // a JoinError that names the coroutine and keeps the panic's payload.
    let failed = runtime.spawn(|| panic!("this coroutine fails on purpose")).join();
    let error = failed.expect_err("it panicked");
    println!("a panicking coroutine's join: Err({error})");
    assert!(error.is_panic());

    // A coroutine can be cancelled: it unwinds where it waits (its
    // destructors run) and its join says so.
    let sleeper = runtime.spawn(|| weft::sleep(Duration::from_secs(3600)));
    sleeper.cancel();
    let error = sleeper.join().expect_err("cancelled");
    println!("a cancelled coroutine's join: Err({error})");
    assert!(error.is_cancelled());

    // Blocking work goes to a separate pool of OS threads.
    let blocking =
        runtime.block_on(|| weft::spawn_blocking(|| std::thread::current().name().map(str::to_owned)).join());
    println!("blocking work ran on {:?}", blocking.expect("no panic").unwrap_or_default());
    println!("check: ok");
}
