//! Echo stress: thousands of concurrent connections, each a client
//! coroutine sending messages of random sizes (1 B to 64 KiB) to a 2-worker
//! runtime's echo server (a coroutine per connection) and checking every
//! byte that comes back, in order; then the same server driven by OS
//! threads using `weft::net` outside any runtime (they block like std).
//!
//! Sizes: the issue asks for 2 000 clients × 100 messages. At 32 KiB a
//! message on average that is 6.4 GB each way, each byte copied four times
//! (client send, server receive, server send, client receive): tens of
//! seconds on a 2-CPU CI machine. The concurrency stays at 2 000; the
//! message count is shrunk to `MESSAGES` (about 0.6 GB each way), which
//! keeps the test to a few seconds. `WEFT_NET_STRESS_MESSAGES` raises it
//! for a soak run.

mod common;

use common::net::{Pattern, XorShift, listener_with_backlog};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use weft::net::{TcpListener, TcpStream};

const CLIENT_COROUTINES: usize = 2_000;
const CLIENT_THREADS: usize = 32;
/// Messages per connection (see the module docs for why not 100).
const MESSAGES: usize = 10;
const MAX_MESSAGE: usize = 64 * 1024;
const STACK: usize = 64 * 1024;

fn messages() -> usize {
    std::env::var("WEFT_NET_STRESS_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(MESSAGES)
}

/// One client's session: `messages` messages of random sizes, each written
/// whole and then read back whole; the stream of bytes back must be the
/// stream sent. Ends with a half-close and the server's EOF. Returns the
/// bytes echoed.
fn client_session(addr: SocketAddr, client: u64, messages: usize) -> u64 {
    let mut stream = TcpStream::connect(addr).expect("connect to the echo server");
    let mut sizes = XorShift::new(client);
    let mut sent = Pattern::new(client);
    let mut expected = Pattern::new(client);
    let mut buf = vec![0u8; 16 * 1024];
    for m in 0..messages {
        let size = sizes.range(1, MAX_MESSAGE);
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len());
            sent.fill(&mut buf[..n]);
            stream.write_all(&buf[..n]).expect("write to the echo server");
            left -= n;
        }
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len());
            stream.read_exact(&mut buf[..n]).unwrap_or_else(|e| panic!("client {client}, message {m}: {e}"));
            expected.check(&buf[..n], &format!("client {client}, message {m}"));
            left -= n;
        }
    }
    stream.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(stream.read(&mut buf).expect("read the server's EOF"), 0, "client {client}: bytes after the last echo");
    expected.position()
}

/// Accepts `connections` connections, each served by its own coroutine that
/// echoes until EOF; returns when all are accepted. Counts the connections
/// served to their end.
fn serve(listener: TcpListener, connections: usize, done: Arc<AtomicUsize>) {
    for _ in 0..connections {
        let (mut stream, _) = listener.accept().expect("accept");
        let done = Arc::clone(&done);
        weft::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = stream.read(&mut buf).expect("server read");
                if n == 0 {
                    break;
                }
                stream.write_all(&buf[..n]).expect("server write");
            }
            done.fetch_add(1, Ordering::Relaxed);
        });
    }
}

#[test]
fn echo_stress_coroutine_clients_then_thread_clients() {
    let messages = messages();
    let server_rt = weft::Runtime::builder().workers(2).stack_size(STACK).build().unwrap();
    let client_rt = weft::Runtime::builder().workers(2).stack_size(STACK).build().unwrap();
    // A backlog that holds the whole burst of connects (std's 128 would
    // send most of them through SYN retries, a second each).
    let listener = TcpListener::from_std(listener_with_backlog(4096)).unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let server = {
        let served = Arc::clone(&served);
        server_rt.spawn(move || serve(listener, CLIENT_COROUTINES + CLIENT_THREADS, served))
    };

    let start = Instant::now();
    let clients: Vec<_> =
        (0..CLIENT_COROUTINES).map(|c| client_rt.spawn(move || client_session(addr, c as u64, messages))).collect();
    let mut echoed = 0u64;
    for client in clients {
        echoed += client.join().expect("a client coroutine");
    }
    eprintln!(
        "{CLIENT_COROUTINES} coroutine clients x {messages} messages: {} MiB echoed in {:?}",
        echoed >> 20,
        start.elapsed()
    );

    let start = Instant::now();
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| std::thread::spawn(move || client_session(addr, (CLIENT_COROUTINES + t) as u64, messages)))
        .collect();
    let mut echoed = 0u64;
    for thread in threads {
        echoed += thread.join().expect("a client thread");
    }
    eprintln!(
        "{CLIENT_THREADS} thread clients x {messages} messages: {} MiB echoed in {:?}",
        echoed >> 20,
        start.elapsed()
    );

    server.join().expect("the accept loop");
    // Every connection's coroutine saw its EOF (the clients saw theirs, so
    // the server's coroutines have at least left their loops by now or are
    // about to: wait for the count).
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while served.load(Ordering::Relaxed) < CLIENT_COROUTINES + CLIENT_THREADS {
        assert!(Instant::now() < deadline, "only {} connections served to their end", served.load(Ordering::Relaxed));
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
