//! What `weft::net`'s waits cost, next to OS threads and to weft's own idle
//! sleep without sockets: the criterion group `net`.
//!
//! ```text
//! cargo bench -p weft-benches --bench net
//! ```
//!
//! | benchmark                                               | one iteration is                                        |
//! |---------------------------------------------------------|---------------------------------------------------------|
//! | `wake an idle worker, futex (no sockets)`               | an OS thread spawns an empty coroutine on a 1-worker    |
//! |                                                         | runtime whose worker sleeps on its futex, and joins it  |
//! | `wake an idle worker, epoll (a socket registered)`      | the same, with a coroutine parked in `accept`: the      |
//! |                                                         | worker sleeps in `epoll_wait` and the spawn writes its  |
//! |                                                         | eventfd                                                 |
//! | `weft socket ping-pong (2 coroutines, 1 worker)`        | one 64-byte round trip over a Unix socket pair between  |
//! |                                                         | two coroutines (four system calls, two parks)           |
//! | `OS threads socket ping-pong`                           | the same between two threads, std's blocking sockets    |
//!
//! The first two answer the poller's design question: a worker with no
//! sockets keeps the futex sleep because an epoll round trip costs more
//! (the difference of the two rows is what the eventfd write, the
//! `epoll_wait` return and the extra system call cost per wake).

use criterion::{Criterion, criterion_group};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use weft::Runtime;
use weft::net::{TcpListener, UnixStream};

fn net(c: &mut Criterion) {
    let mut group = c.benchmark_group("net");
    group.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));

    let futex = Runtime::builder().workers(1).build().expect("one worker thread");
    group.bench_function("wake an idle worker, futex (no sockets)", |b| {
        b.iter(|| futex.spawn(|| ()).join().expect("an empty coroutine"));
    });
    drop(futex);

    let epoll = Runtime::builder().workers(1).build().expect("one worker thread");
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    listener.set_accept_timeout(Some(Duration::from_secs(3600))).expect("a timeout");
    let parked = epoll.spawn(move || {
        // Registered with the worker's epoll, parked until the runtime drops.
        let _ = listener.accept();
    });
    // Let the coroutine park (the worker then has a socket registered).
    std::thread::sleep(Duration::from_millis(50));
    group.bench_function("wake an idle worker, epoll (a socket registered)", |b| {
        b.iter(|| epoll.spawn(|| ()).join().expect("an empty coroutine"));
    });
    drop(epoll);
    let _ = parked.join();

    let one_worker = Runtime::builder().workers(1).build().expect("one worker thread");
    group.bench_function("weft socket ping-pong (2 coroutines, 1 worker)", |b| {
        b.iter_custom(|iters| one_worker.block_on(move || weft_ping_pong(iters)));
    });
    drop(one_worker);

    group.bench_function("OS threads socket ping-pong", |b| {
        b.iter_custom(thread_ping_pong);
    });
    group.finish();
}

fn weft_ping_pong(iters: u64) -> Duration {
    let (mut a, mut b) = UnixStream::pair().expect("a socket pair");
    let start = Instant::now();
    let echo = weft::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..iters {
            b.read_exact(&mut buf).expect("a ping");
            b.write_all(&buf).expect("a pong");
        }
    });
    let mut buf = [7u8; 64];
    for _ in 0..iters {
        a.write_all(&buf).expect("a ping");
        a.read_exact(&mut buf).expect("a pong");
    }
    echo.join().expect("the echo coroutine");
    start.elapsed()
}

fn thread_ping_pong(iters: u64) -> Duration {
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    let start = Instant::now();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..iters {
            b.read_exact(&mut buf).expect("a ping");
            b.write_all(&buf).expect("a pong");
        }
    });
    let mut buf = [7u8; 64];
    for _ in 0..iters {
        a.write_all(&buf).expect("a ping");
        a.read_exact(&mut buf).expect("a pong");
    }
    echo.join().expect("the echo thread");
    start.elapsed()
}

criterion_group!(benches, net);

fn main() {
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
