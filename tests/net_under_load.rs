//! I/O is served while a worker is busy: on a 1-worker runtime one
//! coroutine yields in a loop for the whole test, so the run queue is never
//! empty and the worker never sleeps in its poller; it must still check
//! epoll between rounds (DESIGN.md decision 8), so that a ping-pong over a
//! TCP connection on the same worker makes progress, each round within a
//! generous bound (50 ms; a round takes microseconds when the worker polls
//! every few dozen rounds as designed, and never completes at all if it
//! does not poll). In its own test binary: it bounds time per round.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weft::net::{TcpListener, TcpStream};

const ROUNDS: usize = 200;
/// What a round takes when the worker serves its socket between the
/// yielder's turns (well under a millisecond); a loaded machine may hold
/// a thread off its CPU past it now and then, so up to a tenth of the
/// rounds may exceed it.
const ROUND_BOUND: Duration = Duration::from_millis(50);
/// What no round may take: a worker that never polled its epoll while the
/// yielder kept it busy would never finish one.
const ROUND_LIMIT: Duration = Duration::from_secs(5);

/// Runs `ROUNDS` ping-pongs from `stream`, returning the slowest round.
fn ping(mut stream: &TcpStream) -> Duration {
    let mut slowest = Duration::ZERO;
    let mut slow = Vec::new();
    for round in 0..ROUNDS as u64 {
        let start = Instant::now();
        stream.write_all(&round.to_le_bytes()).unwrap();
        let mut answer = [0u8; 8];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(u64::from_le_bytes(answer), round + 1);
        let took = start.elapsed();
        assert!(took < ROUND_LIMIT, "round {round} took {took:?} with a coroutine yielding on the same worker");
        if took >= ROUND_BOUND {
            slow.push((round, took));
        }
        slowest = slowest.max(took);
    }
    assert!(
        slow.len() <= ROUNDS / 10,
        "{} of {ROUNDS} rounds took {ROUND_BOUND:?} or more with a coroutine yielding on the same worker: {slow:?}",
        slow.len()
    );
    slowest
}

fn pong(mut stream: &TcpStream) {
    for _ in 0..ROUNDS {
        let mut message = [0u8; 8];
        stream.read_exact(&mut message).unwrap();
        stream.write_all(&(u64::from_le_bytes(message) + 1).to_le_bytes()).unwrap();
    }
}

#[test]
fn ping_pong_on_a_worker_that_a_yielding_coroutine_keeps_busy() {
    let rt = weft::Runtime::builder().workers(1).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let yields = Arc::new(AtomicU64::new(0));
    let yielder = {
        let (stop, yields) = (Arc::clone(&stop), Arc::clone(&yields));
        rt.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                weft::yield_now();
                yields.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // The yielder is running before any socket exists.
    while yields.load(Ordering::Relaxed) < 1000 {
        std::thread::yield_now();
    }

    // Both ends coroutines of the busy worker.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let ponger = rt.spawn(move || pong(&listener.accept().unwrap().0));
    let slowest = rt.spawn(move || ping(&TcpStream::connect(addr).unwrap())).join().unwrap();
    ponger.join().unwrap();
    eprintln!("both ends on the busy worker: slowest of {ROUNDS} rounds {slowest:?}");

    // The far end an OS thread: every wake of the coroutine comes from epoll.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let far = std::thread::spawn(move || pong(&TcpStream::from_std(listener.accept().unwrap().0).unwrap()));
    let slowest = rt.spawn(move || ping(&TcpStream::connect(addr).unwrap())).join().unwrap();
    far.join().unwrap();
    eprintln!("far end on a thread: slowest of {ROUNDS} rounds {slowest:?}");

    assert!(!yielder.is_finished(), "the yielder stopped early");
    stop.store(true, Ordering::Relaxed);
    yielder.join().unwrap();
}

/// A socket that is always ready never parks its reader; the worker's I/O
/// budget still makes that reader yield every so often, so a coroutine
/// beside it on the same (only) worker keeps running while the reader reads
/// 50 000 bytes one at a time.
#[test]
fn an_always_ready_socket_does_not_starve_its_worker() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let (mut fill, reader_end) = std::os::unix::net::UnixStream::pair().unwrap();
    const BYTES: usize = 50_000;
    fill.write_all(&vec![7u8; BYTES]).unwrap(); // all buffered before the read starts
    let rt = weft::Runtime::builder().workers(1).build().unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (ticks, done) = (Arc::clone(&ticks), Arc::clone(&done));
        rt.spawn(move || {
            while !done.load(Ordering::Relaxed) {
                ticks.fetch_add(1, Ordering::Relaxed);
                weft::yield_now();
            }
        })
    };
    let seen_by_reader = rt.block_on(move || {
        let mut stream = weft::net::UnixStream::from_std(reader_end).unwrap();
        let mut byte = [0u8; 1];
        let before = ticks.load(Ordering::Relaxed);
        for _ in 0..BYTES {
            stream.read_exact(&mut byte).unwrap();
        }
        ticks.load(Ordering::Relaxed) - before
    });
    done.store(true, Ordering::Relaxed);
    ticker.join().unwrap();
    // 50 000 reads at one yield per 128 give the ticker about 390 turns
    // while they go on; without the budget it gets none.
    assert!(seen_by_reader > 100, "the coroutine beside the reader ran {seen_by_reader} times");
}
