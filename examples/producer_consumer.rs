//! Producers and consumers over a bounded buffer, on weft coroutines, three
//! ways:
//!
//! 1. a `Mutex<VecDeque>` with two `Condvar`s (`not_full`, `not_empty`);
//! 2. the classic P/V solution with `Semaphore`s: `empty` counts free slots,
//!    `full` counts filled ones, and a `Mutex` guards the buffer;
//! 3. a `weft::sync::channel::bounded` channel, which is all of that built
//!    in (and hands an item straight to a waiting consumer).
//!
//! Every item is tagged with its producer and sequence number; the consumers
//! record what they got, and the check at the end proves each item was
//! consumed exactly once and each producer's items arrived in order.
//!
//! ```text
//! cargo run --release --example producer_consumer                  # 4 producers, 4 consumers, 200 000 items
//! cargo run --release --example producer_consumer -- 10 3 50000    # producers consumers items-per-producer
//! cargo run --release --example producer_consumer -- --quick       # CI's short mode
//! ```

#[path = "common/args.rs"]
mod args;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use weft::sync::channel::{self, Receiver, Sender};
use weft::sync::{Condvar, Mutex, Semaphore};

const CAPACITY: usize = 16;

static ARGS: args::Spec =
    args::Spec { name: "producer_consumer", counts: &["producers", "consumers", "items-per-producer"], workers: false };

/// (producer, sequence number within that producer)
type Item = (usize, u64);

struct CondvarBuffer {
    items: Mutex<VecDeque<Item>>,
    not_full: Condvar,
    not_empty: Condvar,
}

impl CondvarBuffer {
    fn put(&self, item: Item) {
        let mut items = self.not_full.wait_while(self.items.lock(), |items| items.len() == CAPACITY);
        items.push_back(item);
        drop(items);
        self.not_empty.notify_one();
    }

    fn take(&self) -> Item {
        let mut items = self.not_empty.wait_while(self.items.lock(), |items| items.is_empty());
        let item = items.pop_front().expect("not empty");
        drop(items);
        self.not_full.notify_one();
        item
    }
}

struct SemaphoreBuffer {
    items: Mutex<VecDeque<Item>>,
    empty: Semaphore,
    full: Semaphore,
}

impl SemaphoreBuffer {
    fn put(&self, item: Item) {
        self.empty.acquire().forget(); // P(empty)
        self.items.lock().push_back(item);
        self.full.add_permits(1); // V(full)
    }

    fn take(&self) -> Item {
        self.full.acquire().forget(); // P(full)
        let item = self.items.lock().pop_front().expect("a full slot");
        self.empty.add_permits(1); // V(empty)
        item
    }
}

/// A bounded channel: `put` is `send`, `take` is `recv`.
struct ChannelBuffer {
    sender: Sender<Item>,
    receiver: Receiver<Item>,
}

trait Buffer: Send + Sync + 'static {
    fn put(&self, item: Item);
    fn take(&self) -> Item;
}
impl Buffer for CondvarBuffer {
    fn put(&self, item: Item) {
        CondvarBuffer::put(self, item)
    }
    fn take(&self) -> Item {
        CondvarBuffer::take(self)
    }
}
impl Buffer for SemaphoreBuffer {
    fn put(&self, item: Item) {
        SemaphoreBuffer::put(self, item)
    }
    fn take(&self) -> Item {
        SemaphoreBuffer::take(self)
    }
}

impl Buffer for ChannelBuffer {
    fn put(&self, item: Item) {
        self.sender.send(item).expect("the buffer keeps a receiver")
    }
    fn take(&self) -> Item {
        self.receiver.recv().expect("the buffer keeps a sender")
    }
}

/// Runs the workload on `buffer`; returns items per second.
fn run(name: &str, buffer: Arc<dyn Buffer>, producers: usize, consumers: usize, per_producer: u64) -> f64 {
    let runtime = weft::Runtime::builder().workers(2).build().expect("cannot start the runtime");
    let total = producers as u64 * per_producer;
    let start = Instant::now();
    let received = runtime.block_on(move || {
        let producer_handles: Vec<_> = (0..producers)
            .map(|p| {
                let buffer = Arc::clone(&buffer);
                weft::spawn(move || {
                    for seq in 0..per_producer {
                        buffer.put((p, seq));
                    }
                })
            })
            .collect();
        // Consumer c takes its share; the shares add up to the total.
        let consumer_handles: Vec<_> = (0..consumers)
            .map(|c| {
                let buffer = Arc::clone(&buffer);
                let share = total / consumers as u64 + u64::from((c as u64) < total % consumers as u64);
                weft::spawn(move || (0..share).map(|_| buffer.take()).collect::<Vec<Item>>())
            })
            .collect();
        for handle in producer_handles {
            handle.join().expect("a producer panicked");
        }
        consumer_handles.into_iter().map(|h| h.join().expect("a consumer panicked")).collect::<Vec<_>>()
    });
    let elapsed = start.elapsed();

    // Check: every item exactly once, each producer's items in order within
    // every consumer's sequence.
    let mut seen = vec![vec![false; per_producer as usize]; producers];
    let mut count = 0u64;
    for taken in &received {
        let mut last = vec![None::<u64>; producers];
        for &(p, seq) in taken {
            assert!(!seen[p][seq as usize], "{name}: item ({p}, {seq}) consumed twice");
            seen[p][seq as usize] = true;
            assert!(last[p].is_none_or(|l| l < seq), "{name}: producer {p}'s items out of order");
            last[p] = Some(seq);
            count += 1;
        }
    }
    assert_eq!(count, total, "{name}: items lost");
    assert!(seen.iter().flatten().all(|&s| s), "{name}: an item was never consumed");
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<22} {producers} producers, {consumers} consumers, {total} items: {:>8.1} ms, {:>6.2} M items/s, each exactly once, in order",
        elapsed.as_secs_f64() * 1e3,
        rate / 1e6
    );
    rate
}

fn main() {
    let args = args::Args::parse(&ARGS);
    let producers = args.count(0, 4) as usize;
    let consumers = args.count(1, 4) as usize;
    let per_producer = args.count(2, if args.quick { 2_000 } else { 50_000 });
    if producers == 0 || consumers == 0 {
        args.fail("need at least one producer and one consumer");
    }

    let condvar = Arc::new(CondvarBuffer {
        items: Mutex::new(VecDeque::with_capacity(CAPACITY)),
        not_full: Condvar::new(),
        not_empty: Condvar::new(),
    });
    run("Mutex + 2 Condvars", condvar, producers, consumers, per_producer);
    let semaphores = Arc::new(SemaphoreBuffer {
        items: Mutex::new(VecDeque::with_capacity(CAPACITY)),
        empty: Semaphore::new(CAPACITY),
        full: Semaphore::new(0),
    });
    run("Semaphores (P/V)", semaphores, producers, consumers, per_producer);
    let (sender, receiver) = channel::bounded(CAPACITY);
    run("channel::bounded", Arc::new(ChannelBuffer { sender, receiver }), producers, consumers, per_producer);
    println!("check: ok");
}
