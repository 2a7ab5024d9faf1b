//! What weft's channels cost, side by side with the channels people use
//! instead: crossbeam-channel, flume and `std::sync::mpsc` on OS threads,
//! and may's channels on may's coroutines. The Go peer's matching workloads
//! are in `benches/peers/go` (keys `channel_handoff`, `chan_pc`,
//! `chan_select`, `chan_select_rendezvous`).
//!
//! Everything is in one criterion group, `channel`; the benchmark ids are
//! `WORKLOAD/PEER`, so each workload's peers sit together:
//!
//! ```text
//! cargo bench -p weft-benches --bench channel
//! cargo bench -p weft-benches --bench channel -- 'rendezvous/'   # one workload
//! cargo bench -p weft-benches --bench channel -- --quick         # smaller unbounded batch, criterion's quick mode
//! ```
//!
//! | workload                         | one iteration is                                                          |
//! |----------------------------------|---------------------------------------------------------------------------|
//! | `rendezvous/...`                 | one one-way hand-off: two tasks ping-pong a counter through two channels |
//! | `pc 4p4c cap 64 1M/...`          | a batch: 1 000 000 items from 4 producers to 4 consumers, capacity 64    |
//! | `unbounded 1p1c 10M/...`         | a batch: 10 000 000 items (1 000 000 with `--quick`), 1 producer, 1 consumer |
//! | `select 4 rendezvous 400k/...`   | a batch: 4 senders, one per channel, 100 000 items each; 1 task selects  |
//! | `select 4 cap 64 400k/...`       | the same with channels of capacity 64                                    |
//!
//! The peers:
//!
//! - `rendezvous/`: weft `bounded(0)` between two coroutines of a
//!   one-worker runtime (wall clock, and the worker thread's CPU clock);
//!   weft `unbounded()` the same way (may's like-for-like: may has no
//!   bounded channel, so its hand-off goes through `may::sync::mpsc`'s
//!   unbounded channels, each send answered before the next); may on one
//!   worker; crossbeam-channel `bounded(0)`, flume `bounded(0)` and std
//!   `sync_channel(0)` between two OS threads.
//! - `pc 4p4c ...`: weft `bounded(64)`, 8 coroutines on 2 workers (where
//!   the scheduler puts them: see the placements), and the same with the 4
//!   producers on one 1-worker runtime and the 4 consumers on another (every
//!   item crosses between two worker threads);
//!   crossbeam-channel and flume `bounded(64)` on 8 OS threads; std
//!   `sync_channel(64)` on 8 OS threads, its one `Receiver` shared by the
//!   4 consumers under a `std::sync::Mutex` (std has no multi-consumer
//!   channel; this is how the Rust book's thread pool shares one).
//! - `unbounded ...`: weft `unbounded()`, 2 coroutines on 2 workers;
//!   crossbeam-channel, flume and std `channel()` on 2 OS threads.
//! - `select ...`: weft `select!` over 4 receivers, 5 coroutines on one
//!   worker; crossbeam-channel `select!` on 5 OS threads. One iteration's
//!   time divided by its item count is the cost of one completed select
//!   (and of the send that fed it).
//!
//! Every task of a benchmark (coroutine or thread) reads the clock when it
//! starts (OS threads: after a barrier, so thread creation is not timed)
//! and when it is done; a run's time is the span from the earliest start to
//! the latest end. Every run checks what it moved: the count and the sum of
//! the items, so a lost or doubled item fails the bench. After the
//! criterion run the bench prints how the coroutines of each weft batch on
//! 2 workers were split over the workers (stderr; `common/placements.rs`),
//! and writes the same as JSON to the file `WEFT_CHANNEL_PLACEMENTS` names,
//! if set (`benches/report/channel.sh` records it).
//!
//! Setting `WEFT_CHANNEL_COUNT=what:n` runs one weft workload once with n
//! as its size, for an instruction counter (callgrind): `rendezvous` (n
//! one-way hand-offs through `bounded(0)`, 1 worker), `rendezvous_same_code`
//! (the same with both sides running one function that receives and sends
//! on, as a server's connections do), `pc` (n items, 4p4c
//! cap 64, 2 workers), `unbounded` (n items, 2 workers), `select` (n
//! selects over 4 rendezvous channels, 1 worker):
//!
//! ```text
//! cargo bench -p weft-benches --bench channel --no-run   # prints the path of the bench binary
//! WEFT_CHANNEL_COUNT=rendezvous:100000 valgrind --tool=callgrind target/release/deps/channel-<hash>
//! WEFT_CHANNEL_COUNT=rendezvous:200000 valgrind --tool=callgrind target/release/deps/channel-<hash>
//! ```
//!
//! (The difference of the two totals, divided by 100 000, is the
//! instructions per hand-off, start-up cancelled; `benches/report/channel.sh`
//! does that.)

#[path = "common/clock.rs"]
mod clock;
#[path = "common/placements.rs"]
mod placements;

use clock::Clock;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use placements::{Placements, span, worker_index};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use weft::Runtime;

/// Items per producer-consumer batch.
const PC_ITEMS: u64 = 1_000_000;
/// Producers, and consumers, in the producer-consumer batch.
const PC_SIDES: u64 = 4;
/// Capacity of the producer-consumer channel.
const PC_CAPACITY: usize = 64;
/// Items per unbounded batch (full size, and with `--quick`).
const UNBOUNDED_ITEMS: u64 = 10_000_000;
const UNBOUNDED_ITEMS_QUICK: u64 = 1_000_000;
/// Channels in a select, each with its own sender.
const SELECT_WAYS: u64 = 4;
/// Items (completed selects) per select batch.
const SELECT_ITEMS: u64 = 400_000;
/// Capacity of the channels of the buffered select batch.
const SELECT_CAPACITY: usize = 64;

/// The sum of 0..items, which what the receivers got must add up to.
fn expected_sum(items: u64) -> u64 {
    items * (items - 1) / 2
}

/// The items sender `p` of `senders` sends, out of `items` in all: every
/// `senders`-th number from `p`.
fn sent_by(p: u64, senders: u64, items: u64) -> impl Iterator<Item = u64> {
    (p..items).step_by(senders as usize)
}

/// How many of `items` receiver `c` of `receivers` takes (the first ones
/// take one more when they do not divide evenly).
fn share_of(c: u64, receivers: u64, items: u64) -> u64 {
    items / receivers + u64::from(c < items % receivers)
}

// ---------------------------------------------------------------------------
// Rendezvous hand-off
// ---------------------------------------------------------------------------

/// The pinger's side of the ping-pong: `n` one-way hand-offs, the even ones
/// from the pinger to the echo through `ping`, the odd ones back through
/// `pong`, each carrying one more than the last (`n` need not be even: the
/// last hand-off may go either way). Returns the last value received.
fn pinger(n: u64, ping: impl Fn(u64), pong: impl Fn() -> u64) -> u64 {
    let mut last = 0;
    for i in 0..n {
        if i % 2 == 0 {
            ping(last + 1);
        } else {
            last = pong();
        }
    }
    last
}

/// The echo's side of the same ping-pong.
fn echo(n: u64, ping: impl Fn() -> u64, pong: impl Fn(u64)) -> u64 {
    let mut last = 0;
    for i in 0..n {
        if i % 2 == 0 {
            last = ping();
        } else {
            pong(last + 1);
        }
    }
    last
}

/// What the two sides saw after `n` hand-offs, each adding one to the
/// counter it got: the last value each received.
fn check_ping_pong(n: u64, pinger_last: u64, echo_last: u64) {
    // Hand-off i carries i + 1; the pinger's last receive is the last odd
    // i below n, the echo's the last even one.
    let last_odd = if n >= 2 { (n - 1) - (n % 2 == 1) as u64 } else { 0 };
    let last_even = if n >= 1 { (n - 1) - (n % 2 == 0) as u64 } else { 0 };
    assert_eq!(pinger_last, if n >= 2 { last_odd + 1 } else { 0 }, "ping-pong: the pinger's last value");
    assert_eq!(echo_last, last_even + 1, "ping-pong: the echo's last value");
}

/// `n` one-way hand-offs between two coroutines of `rt` (one worker)
/// through two weft channels made by `make`; the span of the two sides'
/// `clock` readings.
fn weft_rendezvous(rt: &Runtime, n: u64, clock: Clock, make: fn() -> ChanPair) -> Duration {
    rt.block_on(move || {
        let (ping_tx, ping_rx) = make();
        let (pong_tx, pong_rx) = make();
        let echo_side = weft::spawn(move || {
            let start = clock.now();
            let last = echo(
                n,
                || ping_rx.recv().expect("the pinger hung up"),
                |v| pong_tx.send(v).expect("the pinger hung up"),
            );
            (last, (start, clock.now()))
        });
        let start = clock.now();
        let last =
            pinger(n, |v| ping_tx.send(v).expect("the echo hung up"), || pong_rx.recv().expect("the echo hung up"));
        let end = clock.now();
        let (echo_last, echo_span) = echo_side.join().expect("the echo does not panic");
        check_ping_pong(n, last, echo_last);
        span([(start, end), echo_span])
    })
}

type ChanPair = (weft::sync::channel::Sender<u64>, weft::sync::channel::Receiver<u64>);

/// The ping-pong of `weft_rendezvous` with both sides running the same
/// code (`relay`: receive, add one, send on), as a server's connections
/// do: each parks at the same place. `n` one-way hand-offs in all.
fn weft_relay(rt: &Runtime, n: u64) {
    #[inline(never)]
    fn relay(turns: u64, rx: &weft::sync::channel::Receiver<u64>, tx: &weft::sync::channel::Sender<u64>) -> u64 {
        let mut last = 0;
        for _ in 0..turns {
            last = rx.recv().expect("the other side hung up");
            tx.send(last + 1).expect("the other side hung up");
        }
        last
    }
    rt.block_on(move || {
        let (ping_tx, ping_rx) = weft_bounded0();
        let (pong_tx, pong_rx) = weft_bounded0();
        let turns = n / 2;
        let other = weft::spawn(move || relay(turns, &ping_rx, &pong_tx));
        ping_tx.send(0).expect("the other side hung up");
        relay(turns.saturating_sub(1), &pong_rx, &ping_tx);
        let last = pong_rx.recv().expect("the other side hung up");
        let other_last = other.join().expect("the relay does not panic");
        // Each hand-off adds one to what the other side sent.
        assert_eq!((last, other_last), (2 * turns - 1, 2 * turns - 2), "relay: the last values");
    })
}

fn weft_bounded0() -> ChanPair {
    weft::sync::channel::bounded(0)
}

fn weft_unbounded() -> ChanPair {
    weft::sync::channel::unbounded()
}

/// The same between two may coroutines (may has one worker: `main` sets it)
/// through `may::sync::mpsc`'s unbounded channels.
fn may_rendezvous(n: u64) -> Duration {
    let (ping_tx, ping_rx) = may::sync::mpsc::channel::<u64>();
    let (pong_tx, pong_rx) = may::sync::mpsc::channel::<u64>();
    may_spawn(move || {
        let echo_side = may_spawn(move || {
            let start = Clock::Wall.now();
            let last = echo(
                n,
                || ping_rx.recv().expect("the pinger hung up"),
                |v| pong_tx.send(v).expect("the pinger hung up"),
            );
            (last, (start, Clock::Wall.now()))
        });
        let start = Clock::Wall.now();
        let last =
            pinger(n, |v| ping_tx.send(v).expect("the echo hung up"), || pong_rx.recv().expect("the echo hung up"));
        let end = Clock::Wall.now();
        let (echo_last, echo_span) = echo_side.join().expect("the may echo does not panic");
        check_ping_pong(n, last, echo_last);
        span([(start, end), echo_span])
    })
    .join()
    .expect("the may pinger does not panic")
}

/// may's `spawn`.
fn may_spawn<F, T>(f: F) -> may::coroutine::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: may's spawn is unsafe because a coroutine may move between
    // worker threads (a thread-local reference held across a switch would
    // dangle; here may has one worker, and nothing holds one) and because
    // an overflow of its stack is not caught (these frames are shallow).
    unsafe { may::coroutine::spawn(f) }
}

/// A blocking channel of OS threads: how to make one, send and receive.
/// Function pointers, so that one generic driver serves every peer.
struct ThreadChannel<Tx, Rx> {
    make: fn() -> (Tx, Rx),
    send: fn(&Tx, u64),
    recv: fn(&Rx) -> Option<u64>,
    /// A second handle on the receiving side (`None`: single-consumer).
    share: Option<fn(&Rx) -> Rx>,
}

impl<Tx, Rx> Clone for ThreadChannel<Tx, Rx> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Tx, Rx> Copy for ThreadChannel<Tx, Rx> {}

/// `n` one-way hand-offs between two OS threads through two channels of
/// `chan`; each thread times itself from the barrier they start behind.
fn threads_rendezvous<Tx, Rx>(n: u64, chan: ThreadChannel<Tx, Rx>) -> Duration
where
    Tx: Send + 'static,
    Rx: Send + 'static,
{
    let (ping_tx, ping_rx) = (chan.make)();
    let (pong_tx, pong_rx) = (chan.make)();
    let barrier = Arc::new(Barrier::new(2));
    let echo_side = {
        let barrier = Arc::clone(&barrier);
        std::thread::spawn(move || {
            barrier.wait();
            let start = Clock::Wall.now();
            let last = echo(n, || (chan.recv)(&ping_rx).expect("the pinger hung up"), |v| (chan.send)(&pong_tx, v));
            (last, (start, Clock::Wall.now()))
        })
    };
    barrier.wait();
    let start = Clock::Wall.now();
    let last = pinger(n, |v| (chan.send)(&ping_tx, v), || (chan.recv)(&pong_rx).expect("the echo hung up"));
    let end = Clock::Wall.now();
    let (echo_last, echo_span) = echo_side.join().expect("the echo thread does not panic");
    check_ping_pong(n, last, echo_last);
    span([(start, end), echo_span])
}

fn crossbeam_bounded(cap: usize) -> ThreadChannel<crossbeam_channel::Sender<u64>, crossbeam_channel::Receiver<u64>> {
    let make = match cap {
        0 => || crossbeam_channel::bounded(0),
        PC_CAPACITY => || crossbeam_channel::bounded(PC_CAPACITY),
        _ => unreachable!("crossbeam_bounded: capacity {cap}"),
    };
    ThreadChannel {
        make,
        send: |tx, v| tx.send(v).expect("receivers alive"),
        recv: |rx| rx.recv().ok(),
        share: Some(Clone::clone),
    }
}

fn crossbeam_unbounded() -> ThreadChannel<crossbeam_channel::Sender<u64>, crossbeam_channel::Receiver<u64>> {
    ThreadChannel {
        make: crossbeam_channel::unbounded,
        send: |tx, v| tx.send(v).expect("receivers alive"),
        recv: |rx| rx.recv().ok(),
        share: Some(Clone::clone),
    }
}

fn flume_bounded(cap: usize) -> ThreadChannel<flume::Sender<u64>, flume::Receiver<u64>> {
    let make = match cap {
        0 => || flume::bounded(0),
        PC_CAPACITY => || flume::bounded(PC_CAPACITY),
        _ => unreachable!("flume_bounded: capacity {cap}"),
    };
    ThreadChannel {
        make,
        send: |tx, v| tx.send(v).expect("receivers alive"),
        recv: |rx| rx.recv().ok(),
        share: Some(Clone::clone),
    }
}

fn flume_unbounded() -> ThreadChannel<flume::Sender<u64>, flume::Receiver<u64>> {
    ThreadChannel {
        make: flume::unbounded,
        send: |tx, v| tx.send(v).expect("receivers alive"),
        recv: |rx| rx.recv().ok(),
        share: Some(Clone::clone),
    }
}

fn std_rendezvous() -> ThreadChannel<std::sync::mpsc::SyncSender<u64>, std::sync::mpsc::Receiver<u64>> {
    ThreadChannel {
        make: || std::sync::mpsc::sync_channel(0),
        send: |tx, v| tx.send(v).expect("the receiver is alive"),
        recv: |rx| rx.recv().ok(),
        share: None,
    }
}

/// std's bounded channel with its one receiver shared under a Mutex (std
/// has no multi-consumer channel).
type SharedStdReceiver = Arc<std::sync::Mutex<std::sync::mpsc::Receiver<u64>>>;

fn std_shared_bounded() -> ThreadChannel<std::sync::mpsc::SyncSender<u64>, SharedStdReceiver> {
    ThreadChannel {
        make: || {
            let (tx, rx) = std::sync::mpsc::sync_channel(PC_CAPACITY);
            (tx, Arc::new(std::sync::Mutex::new(rx)))
        },
        send: |tx, v| tx.send(v).expect("the receiver is alive"),
        recv: |rx| rx.lock().expect("not poisoned").recv().ok(),
        share: Some(Arc::clone),
    }
}

fn std_unbounded() -> ThreadChannel<std::sync::mpsc::Sender<u64>, std::sync::mpsc::Receiver<u64>> {
    ThreadChannel {
        make: std::sync::mpsc::channel,
        send: |tx, v| tx.send(v).expect("the receiver is alive"),
        recv: |rx| rx.recv().ok(),
        share: None,
    }
}

// ---------------------------------------------------------------------------
// Producers and consumers (the 4p4c batch and the 1p1c unbounded batch)
// ---------------------------------------------------------------------------

/// `items` numbers through one weft channel made by `make`, from
/// `producers` to `consumers` coroutines of `rt`; the span from the first
/// one's start to the last one's end, and the worker of each coroutine.
fn weft_prodcons(
    rt: &Runtime,
    producers: u64,
    consumers: u64,
    items: u64,
    make: impl FnOnce() -> ChanPair + Send + 'static,
) -> (Duration, Vec<usize>) {
    rt.block_on(move || {
        let (tx, rx) = make();
        let producer_tasks: Vec<_> = (0..producers)
            .map(|p| {
                let tx = tx.clone();
                weft::spawn(move || {
                    let start = Clock::Wall.now();
                    for item in sent_by(p, producers, items) {
                        tx.send(item).expect("the consumers are alive");
                    }
                    ((start, Clock::Wall.now()), worker_index())
                })
            })
            .collect();
        drop(tx);
        let consumer_tasks: Vec<_> = (0..consumers)
            .map(|c| {
                let rx = rx.clone();
                weft::spawn(move || {
                    let start = Clock::Wall.now();
                    let sum: u64 =
                        (0..share_of(c, consumers, items)).map(|_| rx.recv().expect("the producers send enough")).sum();
                    (sum, (start, Clock::Wall.now()), worker_index())
                })
            })
            .collect();
        let (mut spans, mut workers): (Vec<_>, Vec<_>) =
            producer_tasks.into_iter().map(|p| p.join().expect("a producer does not panic")).unzip();
        let mut sum = 0;
        for consumer in consumer_tasks {
            let (part, span, worker) = consumer.join().expect("a consumer does not panic");
            sum += part;
            spans.push(span);
            workers.push(worker);
        }
        assert_eq!(sum, expected_sum(items), "weft producer-consumer: every item received once");
        assert_eq!(rx.try_recv().ok(), None, "weft producer-consumer: nothing left over");
        (span(spans), workers)
    })
}

/// The same with every producer on `producers_rt` and every consumer on
/// `consumers_rt` (two one-worker runtimes): each item crosses between two
/// worker threads, the placement a 2-worker runtime may or may not choose.
fn weft_prodcons_split(producers_rt: &Runtime, consumers_rt: &Runtime, sides: u64, items: u64) -> Duration {
    let (tx, rx) = weft::sync::channel::bounded(PC_CAPACITY);
    let start_line = Arc::new(Barrier::new(2));
    let consumers = {
        let start_line = Arc::clone(&start_line);
        consumers_rt.spawn(move || {
            let tasks: Vec<_> = (0..sides)
                .map(|c| {
                    let rx = rx.clone();
                    weft::spawn(move || {
                        let start = Clock::Wall.now();
                        let sum: u64 =
                            (0..share_of(c, sides, items)).map(|_| rx.recv().expect("the producers send enough")).sum();
                        (sum, (start, Clock::Wall.now()))
                    })
                })
                .collect();
            start_line.wait();
            tasks.into_iter().map(|t| t.join().expect("a consumer does not panic")).collect::<Vec<_>>()
        })
    };
    let producers = producers_rt.spawn(move || {
        start_line.wait();
        let tasks: Vec<_> = (0..sides)
            .map(|p| {
                let tx = tx.clone();
                weft::spawn(move || {
                    let start = Clock::Wall.now();
                    for item in sent_by(p, sides, items) {
                        tx.send(item).expect("the consumers are alive");
                    }
                    (start, Clock::Wall.now())
                })
            })
            .collect();
        tasks.into_iter().map(|t| t.join().expect("a producer does not panic")).collect::<Vec<_>>()
    });
    let mut spans = producers.join().expect("the producers' launcher does not panic");
    let mut sum = 0;
    for (part, span) in consumers.join().expect("the consumers' launcher does not panic") {
        sum += part;
        spans.push(span);
    }
    assert_eq!(sum, expected_sum(items), "weft split producer-consumer: every item received once");
    span(spans)
}

/// The same on OS threads through a channel of `chan`; the span from the
/// first one's start (behind a barrier: thread creation is not timed) to
/// the last one's end.
fn threads_prodcons<Tx, Rx>(producers: u64, consumers: u64, items: u64, chan: ThreadChannel<Tx, Rx>) -> Duration
where
    Tx: Clone + Send + 'static,
    Rx: Send + 'static,
{
    let (tx, rx) = (chan.make)();
    let mut rx = Some(rx);
    let barrier = Arc::new(Barrier::new((producers + consumers) as usize));
    let producer_threads: Vec<_> = (0..producers)
        .map(|p| {
            let (tx, barrier) = (tx.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let start = Clock::Wall.now();
                for item in sent_by(p, producers, items) {
                    (chan.send)(&tx, item);
                }
                (start, Clock::Wall.now())
            })
        })
        .collect();
    drop(tx);
    let consumer_threads: Vec<_> = (0..consumers)
        .map(|c| {
            let rx = match chan.share {
                Some(share) if c + 1 < consumers => share(rx.as_ref().expect("kept for the last consumer")),
                _ => rx.take().expect("a single-consumer channel has one consumer"),
            };
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let start = Clock::Wall.now();
                let sum: u64 = (0..share_of(c, consumers, items))
                    .map(|_| (chan.recv)(&rx).expect("the producers send enough"))
                    .sum();
                (sum, (start, Clock::Wall.now()))
            })
        })
        .collect();
    let mut spans: Vec<_> =
        producer_threads.into_iter().map(|p| p.join().expect("a producer thread does not panic")).collect();
    let mut sum = 0;
    for consumer in consumer_threads {
        let (part, span) = consumer.join().expect("a consumer thread does not panic");
        sum += part;
        spans.push(span);
    }
    assert_eq!(sum, expected_sum(items), "producer-consumer: every item received once");
    span(spans)
}

// ---------------------------------------------------------------------------
// Select
// ---------------------------------------------------------------------------

/// `items` numbers from `SELECT_WAYS` sender coroutines of `rt`, each on its
/// own channel of capacity `cap`, received by one coroutine that selects
/// over the 4 receivers; the span of all five.
fn weft_select(rt: &Runtime, cap: usize, items: u64) -> (Duration, Vec<usize>) {
    rt.block_on(move || {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..SELECT_WAYS).map(|_| weft::sync::channel::bounded(cap)).unzip();
        // The senders' tasks use clones, and these stay until the selector
        // is done: a sender that finished must not disconnect its channel
        // (a disconnected receive is ready, with `RecvError`).
        let sender_tasks: Vec<_> = senders
            .iter()
            .enumerate()
            .map(|(p, tx)| {
                let tx = tx.clone();
                weft::spawn(move || {
                    let start = Clock::Wall.now();
                    for item in sent_by(p as u64, SELECT_WAYS, items) {
                        tx.send(item).expect("the selector is alive");
                    }
                    ((start, Clock::Wall.now()), worker_index())
                })
            })
            .collect();
        let selector = weft::spawn(move || {
            let start = Clock::Wall.now();
            let [r0, r1, r2, r3] = &receivers[..] else { unreachable!("4 receivers") };
            let (mut sum, mut got) = (0u64, 0u64);
            while got < items {
                let value: u64 = weft::select! {
                    recv(r0) -> v => v,
                    recv(r1) -> v => v,
                    recv(r2) -> v => v,
                    recv(r3) -> v => v,
                }
                .expect("the senders send enough");
                sum += value;
                got += 1;
            }
            (sum, (start, Clock::Wall.now()), worker_index())
        });
        let (sum, selector_span, selector_worker) = selector.join().expect("the selector does not panic");
        let (mut spans, mut workers): (Vec<_>, Vec<_>) =
            sender_tasks.into_iter().map(|s| s.join().expect("a sender does not panic")).unzip();
        drop(senders);
        assert_eq!(sum, expected_sum(items), "weft select: every item received once");
        spans.push(selector_span);
        workers.push(selector_worker);
        (span(spans), workers)
    })
}

/// The same on 5 OS threads with crossbeam-channel's `select!`.
fn crossbeam_select(cap: usize, items: u64) -> Duration {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..SELECT_WAYS).map(|_| crossbeam_channel::bounded(cap)).unzip();
    let barrier = Arc::new(Barrier::new(SELECT_WAYS as usize + 1));
    // As in `weft_select`: the senders stay until the selector is done.
    let sender_threads: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(p, tx)| {
            let (tx, barrier) = (tx.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let start = Clock::Wall.now();
                for item in sent_by(p as u64, SELECT_WAYS, items) {
                    tx.send(item).expect("the selector is alive");
                }
                (start, Clock::Wall.now())
            })
        })
        .collect();
    let selector = std::thread::spawn(move || {
        barrier.wait();
        let start = Clock::Wall.now();
        let [r0, r1, r2, r3] = &receivers[..] else { unreachable!("4 receivers") };
        let (mut sum, mut got) = (0u64, 0u64);
        while got < items {
            let value: u64 = crossbeam_channel::select! {
                recv(r0) -> v => v,
                recv(r1) -> v => v,
                recv(r2) -> v => v,
                recv(r3) -> v => v,
            }
            .expect("the senders send enough");
            sum += value;
            got += 1;
        }
        (sum, (start, Clock::Wall.now()))
    });
    let (sum, selector_span) = selector.join().expect("the selector thread does not panic");
    let mut spans: Vec<_> = sender_threads.into_iter().map(|s| s.join().expect("a sender does not panic")).collect();
    drop(senders);
    assert_eq!(sum, expected_sum(items), "crossbeam select: every item received once");
    spans.push(selector_span);
    span(spans)
}

// ---------------------------------------------------------------------------
// The criterion group
// ---------------------------------------------------------------------------

/// A runtime of one worker (the rendezvous and select rows; the split
/// producer-consumer takes two).
fn one_worker_runtime() -> Runtime {
    Runtime::builder().workers(1).build().expect("one worker thread")
}

/// Whether criterion runs in its quick mode (`-- --quick`, as
/// `benches/report/collect.sh --quick` runs it): the unbounded batch is
/// then smaller.
fn quick() -> bool {
    std::env::args().any(|arg| arg == "--quick")
}

fn channel(c: &mut Criterion) {
    let mut group = c.benchmark_group("channel");
    let mut placements = Placements::default();

    // --- Rendezvous: one iteration = one one-way hand-off. ---
    group.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));
    let one_worker = one_worker_runtime();
    group.bench_function("rendezvous/weft bounded(0) (2 coroutines, 1 worker)", |b| {
        b.iter_custom(|n| weft_rendezvous(&one_worker, n, Clock::Wall, weft_bounded0));
    });
    // Timed by the worker's CPU clock (everything runs on that one thread):
    // what the hand-offs cost when another process takes the core.
    group.bench_function("rendezvous/weft bounded(0) (2 coroutines, 1 worker), worker CPU time", |b| {
        b.iter_custom(|n| weft_rendezvous(&one_worker, n, Clock::ThreadCpu, weft_bounded0));
    });
    group.bench_function("rendezvous/weft unbounded (2 coroutines, 1 worker)", |b| {
        b.iter_custom(|n| weft_rendezvous(&one_worker, n, Clock::Wall, weft_unbounded));
    });
    group.bench_function("rendezvous/may mpsc (2 coroutines, 1 worker)", |b| b.iter_custom(may_rendezvous));
    group.measurement_time(Duration::from_secs(2));
    group.bench_function("rendezvous/crossbeam-channel bounded(0) (2 threads)", |b| {
        b.iter_custom(|n| threads_rendezvous(n, crossbeam_bounded(0)));
    });
    group.bench_function("rendezvous/flume bounded(0) (2 threads)", |b| {
        b.iter_custom(|n| threads_rendezvous(n, flume_bounded(0)));
    });
    group.bench_function("rendezvous/std sync_channel(0) (2 threads)", |b| {
        b.iter_custom(|n| threads_rendezvous(n, std_rendezvous()));
    });
    drop(one_worker);

    // --- Batches: one iteration = one whole batch; the same iteration
    // count in every sample (flat), so 10 samples take 10 x that. ---
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    // No stall reports: an unbounded send never waits, so a producer that
    // shares its worker with its consumer runs its whole batch (hundreds of
    // milliseconds) without a switch, which the monitor would report, with
    // a backtrace, every time.
    let two_workers = Runtime::builder().workers(2).stall_threshold(None).build().expect("two worker threads");

    group.throughput(Throughput::Elements(PC_ITEMS));
    group.bench_function("pc 4p4c cap 64 1M/weft bounded(64) (8 coroutines, 2 workers)", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| {
                    placements.time("pc 4p4c weft", || {
                        weft_prodcons(&two_workers, PC_SIDES, PC_SIDES, PC_ITEMS, || {
                            weft::sync::channel::bounded(PC_CAPACITY)
                        })
                    })
                })
                .sum()
        });
    });
    // The placement a 2-worker runtime may or may not choose, made certain:
    // every item crosses between two worker threads.
    let (producers_rt, consumers_rt) = (one_worker_runtime(), one_worker_runtime());
    group.bench_function("pc 4p4c cap 64 1M/weft bounded(64) (4 coroutines on each of two 1-worker runtimes)", |b| {
        b.iter_custom(|n| (0..n).map(|_| weft_prodcons_split(&producers_rt, &consumers_rt, PC_SIDES, PC_ITEMS)).sum());
    });
    drop((producers_rt, consumers_rt));
    group.bench_function("pc 4p4c cap 64 1M/crossbeam-channel bounded(64) (8 threads)", |b| {
        b.iter_custom(|n| {
            (0..n).map(|_| threads_prodcons(PC_SIDES, PC_SIDES, PC_ITEMS, crossbeam_bounded(PC_CAPACITY))).sum()
        });
    });
    group.bench_function("pc 4p4c cap 64 1M/flume bounded(64) (8 threads)", |b| {
        b.iter_custom(|n| {
            (0..n).map(|_| threads_prodcons(PC_SIDES, PC_SIDES, PC_ITEMS, flume_bounded(PC_CAPACITY))).sum()
        });
    });
    group.bench_function("pc 4p4c cap 64 1M/std sync_channel(64), receiver under a Mutex (8 threads)", |b| {
        b.iter_custom(|n| (0..n).map(|_| threads_prodcons(PC_SIDES, PC_SIDES, PC_ITEMS, std_shared_bounded())).sum());
    });

    let items = if quick() { UNBOUNDED_ITEMS_QUICK } else { UNBOUNDED_ITEMS };
    let label = if quick() { "unbounded 1p1c 1M" } else { "unbounded 1p1c 10M" };
    group.throughput(Throughput::Elements(items));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function(format!("{label}/weft unbounded (2 coroutines, 2 workers)"), |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| {
                    placements.time("unbounded weft", || {
                        weft_prodcons(&two_workers, 1, 1, items, weft::sync::channel::unbounded)
                    })
                })
                .sum()
        });
    });
    group.bench_function(format!("{label}/crossbeam-channel unbounded (2 threads)"), |b| {
        b.iter_custom(|n| (0..n).map(|_| threads_prodcons(1, 1, items, crossbeam_unbounded())).sum());
    });
    group.bench_function(format!("{label}/flume unbounded (2 threads)"), |b| {
        b.iter_custom(|n| (0..n).map(|_| threads_prodcons(1, 1, items, flume_unbounded())).sum());
    });
    group.bench_function(format!("{label}/std channel (2 threads)"), |b| {
        b.iter_custom(|n| (0..n).map(|_| threads_prodcons(1, 1, items, std_unbounded())).sum());
    });
    drop(two_workers);

    group.throughput(Throughput::Elements(SELECT_ITEMS));
    group.measurement_time(Duration::from_secs(3));
    let one_worker = one_worker_runtime();
    for (cap, name) in [(0, "select 4 rendezvous 400k"), (SELECT_CAPACITY, "select 4 cap 64 400k")] {
        group.bench_function(format!("{name}/weft select! (5 coroutines, 1 worker)"), |b| {
            b.iter_custom(|n| (0..n).map(|_| weft_select(&one_worker, cap, SELECT_ITEMS).0).sum());
        });
        group.bench_function(format!("{name}/crossbeam-channel select! (5 threads)"), |b| {
            b.iter_custom(|n| (0..n).map(|_| crossbeam_select(cap, SELECT_ITEMS)).sum());
        });
    }
    drop(one_worker);

    group.finish();
    placements.report();
    if let Ok(path) = std::env::var("WEFT_CHANNEL_PLACEMENTS") {
        placements.write_json(&path).unwrap_or_else(|e| panic!("WEFT_CHANNEL_PLACEMENTS={path}: {e}"));
    }
}

criterion_group!(benches, channel);

// ---------------------------------------------------------------------------
// Instruction-count mode
// ---------------------------------------------------------------------------

/// `WEFT_CHANNEL_COUNT=what:n`: one run of one weft workload, for callgrind.
fn count_mode(spec: &str) {
    let (what, n) = spec.split_once(':').unwrap_or_else(|| panic!("WEFT_CHANNEL_COUNT={spec}: expected what:n"));
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("WEFT_CHANNEL_COUNT={spec}: n is not a number"));
    let start = Instant::now();
    match what {
        "rendezvous" => {
            let rt = one_worker_runtime();
            weft_rendezvous(&rt, n, Clock::Wall, weft_bounded0);
        }
        "rendezvous_same_code" => {
            let rt = one_worker_runtime();
            weft_relay(&rt, n);
        }
        "pc" => {
            let rt = Runtime::builder().workers(2).build().expect("two worker threads");
            let workers = weft_prodcons(&rt, PC_SIDES, PC_SIDES, n, || weft::sync::channel::bounded(PC_CAPACITY)).1;
            println!("workers: {workers:?}");
        }
        "pc_split" => {
            let (a, b) = (one_worker_runtime(), one_worker_runtime());
            weft_prodcons_split(&a, &b, PC_SIDES, n);
            for (side, rt) in [("producers", &a), ("consumers", &b)] {
                let m = rt.metrics().total;
                println!(
                    "{side}: switches {} parks {} local wakes {} remote wakes {} sleeps {} wakeups {}",
                    m.switches, m.parks, m.local_wakes, m.remote_wakes, m.sleeps, m.wakeups
                );
            }
        }
        "unbounded" => {
            let rt = Runtime::builder().workers(2).build().expect("two worker threads");
            println!("workers: {:?}", weft_prodcons(&rt, 1, 1, n, weft::sync::channel::unbounded).1);
        }
        "select" => {
            let rt = one_worker_runtime();
            weft_select(&rt, 0, n);
        }
        _ => panic!(
            "WEFT_CHANNEL_COUNT={spec}: what is one of rendezvous, rendezvous_same_code, pc, pc_split, unbounded, select"
        ),
    }
    println!("{what} x {n}: {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
}

fn main() {
    if let Ok(spec) = std::env::var("WEFT_CHANNEL_COUNT") {
        count_mode(&spec);
        return;
    }
    // may's worker count is process-wide and fixed at its first use: one,
    // as weft's rendezvous rows.
    may::config().set_workers(1);
    benches();
    Criterion::default().configure_from_args().final_summary();
}
