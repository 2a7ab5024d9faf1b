//! Readers and writers sharing data behind a `weft::sync::RwLock`, on weft
//! coroutines. The writers keep an invariant (every slot of the array holds
//! the same value, and `sum` equals their total); each reader checks it on
//! every read, so a torn read would be caught. The report gives reads,
//! writes, and the longest time a writer waited for the lock — which stays
//! short because, once a writer waits, new readers queue behind it.
//!
//! ```text
//! cargo run --release --example readers_writers                # 16 readers, 2 writers, 1 s
//! cargo run --release --example readers_writers -- 8 4 500     # readers writers milliseconds
//! cargo run --release --example readers_writers -- --quick     # CI's short mode
//! ```

#[path = "common/args.rs"]
mod args;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use weft::sync::RwLock;

static ARGS: args::Spec =
    args::Spec { name: "readers_writers", counts: &["readers", "writers", "milliseconds"], workers: false };

struct Shared {
    slots: [u64; 16],
    sum: u64,
}

fn main() {
    let args = args::Args::parse(&ARGS);
    let readers = args.count(0, 16) as usize;
    let writers = args.count(1, 2) as usize;
    let millis = args.count(2, if args.quick { 100 } else { 1_000 });
    if readers == 0 || writers == 0 {
        args.fail("need at least one reader and one writer");
    }

    let runtime = weft::Runtime::builder().workers(2).build().expect("cannot start the runtime");
    let data = Arc::new(RwLock::new(Shared { slots: [0; 16], sum: 0 }));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let (reads, writes, longest_writer_wait) = runtime.block_on(move || {
        let reader_handles: Vec<_> = (0..readers)
            .map(|_| {
                let (data, stop) = (Arc::clone(&data), Arc::clone(&stop));
                weft::spawn(move || {
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let shared = data.read();
                        let first = shared.slots[0];
                        assert!(shared.slots.iter().all(|&s| s == first), "torn read: slots differ");
                        reads += 1;
                        drop(shared);
                        weft::yield_now();
                    }
                    reads
                })
            })
            .collect();
        let writer_handles: Vec<_> = (0..writers)
            .map(|_| {
                let (data, stop) = (Arc::clone(&data), Arc::clone(&stop));
                weft::spawn(move || {
                    let (mut writes, mut longest) = (0u64, Duration::ZERO);
                    while !stop.load(Ordering::Relaxed) {
                        let asked = Instant::now();
                        let mut shared = data.write();
                        longest = longest.max(asked.elapsed());
                        let next = shared.slots[0] + 1;
                        shared.slots = [next; 16];
                        shared.sum += 1;
                        writes += 1;
                        drop(shared);
                        weft::yield_now();
                    }
                    (writes, longest)
                })
            })
            .collect();
        weft::sleep(Duration::from_millis(millis));
        stop.store(true, Ordering::Relaxed);
        let reads: u64 = reader_handles.into_iter().map(|h| h.join().expect("a reader panicked")).sum();
        let (mut writes, mut longest) = (0, Duration::ZERO);
        for handle in writer_handles {
            let (w, l) = handle.join().expect("a writer panicked");
            writes += w;
            longest = longest.max(l);
        }
        let shared = data.read();
        assert_eq!(shared.sum, writes, "every write counted once");
        assert_eq!(shared.slots[0], writes, "the slots hold the number of writes");
        (reads, writes, longest)
    });
    println!(
        "{readers} readers, {writers} writers, {:.0} ms: {reads} reads, {writes} writes; longest writer wait {:.3} ms",
        start.elapsed().as_secs_f64() * 1e3,
        longest_writer_wait.as_secs_f64() * 1e3
    );
    assert!(reads > 0 && writes > 0, "both sides made progress");
    println!("check: ok (no torn read, every write counted, no side starved)");
}
