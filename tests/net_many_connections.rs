//! Ten thousand connections open at once, all served: a server coroutine
//! per connection on one runtime, a client coroutine per connection on
//! another, every connection still open when the last one has made its
//! first round trip; then each makes a second round trip and closes.
//!
//! Resources, checked before the test starts (in its own test binary, so no
//! other test shares the process's descriptors or maps):
//!
//! - descriptors: two per connection (client and server end) plus slack;
//!   the soft RLIMIT_NOFILE is raised to the hard limit first. Where the
//!   hard limit is below 2 × 10 000 + slack, the test runs with as many
//!   connections as fit (printing a note; the CI machine's hard limit of
//!   20 000 allows 9 800), and skips below 1 000;
//! - memory maps: each coroutine stack is two maps (the stack and its
//!   guard page), two coroutines per connection: 40 000 maps for 10 000
//!   connections, under Linux's default vm.max_map_count of 65 530. A lower
//!   limit scales the count down the same way;
//! - memory: 64 KiB stacks (committed lazily, a few pages each are touched).

mod common;

use common::net::{proc_sys_number, raise_fd_limit, set_backlog};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use weft::net::{TcpListener, TcpStream};
use weft::sync::{Semaphore, WaitGroup};

const WANTED: usize = 10_000;
/// Descriptors and maps the rest of the process needs.
const FD_SLACK: u64 = 400;
const MAP_SLACK: u64 = 5_000;
const STACK: usize = 64 * 1024;
/// Connects in flight at once (the accept queue takes them in bursts).
const CONNECTING: usize = 512;

fn connections() -> Option<usize> {
    let fd_limit = raise_fd_limit();
    let by_fds = (fd_limit.saturating_sub(FD_SLACK) / 2) as usize;
    let max_maps = proc_sys_number("/proc/sys/vm/max_map_count").unwrap_or(65_530);
    let by_maps = (max_maps.saturating_sub(MAP_SLACK) / 4) as usize;
    let n = WANTED.min(by_fds).min(by_maps);
    if n < 1_000 {
        eprintln!("note: skipped: RLIMIT_NOFILE {fd_limit} and vm.max_map_count {max_maps} allow only {n} connections");
        return None;
    }
    if n < WANTED {
        eprintln!(
            "note: {n} connections instead of {WANTED}: RLIMIT_NOFILE (hard) is {fd_limit}, \
             vm.max_map_count {max_maps} (2 descriptors and 4 maps per connection)"
        );
    }
    Some(n)
}

#[test]
fn ten_thousand_connections_held_open_all_served() {
    let Some(n) = connections() else { return };
    let server_rt = weft::Runtime::builder().workers(2).stack_size(STACK).build().unwrap();
    let client_rt = weft::Runtime::builder().workers(2).stack_size(STACK).build().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    set_backlog(&listener, 4096);
    let addr = listener.local_addr().unwrap();

    // Server: one coroutine per connection, echoing 8-byte messages until EOF.
    let open = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let acceptor = {
        let (open, served) = (Arc::clone(&open), Arc::clone(&served));
        server_rt.spawn(move || {
            for _ in 0..n {
                let (mut stream, _) = listener.accept().expect("accept");
                open.fetch_add(1, Ordering::Relaxed);
                let (open, served) = (Arc::clone(&open), Arc::clone(&served));
                weft::spawn(move || {
                    let mut message = [0u8; 8];
                    let mut rounds = 0;
                    loop {
                        match stream.read_exact(&mut message) {
                            Ok(()) => {}
                            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => break,
                            Err(err) => panic!("server read: {err}"),
                        }
                        // The answer: the message with its bytes reversed.
                        message.reverse();
                        stream.write_all(&message).expect("server write");
                        rounds += 1;
                    }
                    assert_eq!(rounds, 2, "a connection made {rounds} round trips");
                    open.fetch_sub(1, Ordering::Relaxed);
                    served.fetch_add(1, Ordering::Relaxed);
                });
            }
        })
    };

    let start = Instant::now();
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let first_round = WaitGroup::new();
    let release = Arc::new(Semaphore::new(0));
    let clients: Vec<_> = (0..n as u64)
        .map(|id| {
            let (connecting, first_round, release) =
                (Arc::clone(&connecting), first_round.clone(), Arc::clone(&release));
            client_rt.spawn(move || {
                let permit = connecting.acquire();
                let mut stream = TcpStream::connect(addr).expect("connect");
                drop(permit);
                let round = |stream: &mut TcpStream, value: u64| {
                    stream.write_all(&value.to_le_bytes()).expect("client write");
                    let mut answer = [0u8; 8];
                    stream.read_exact(&mut answer).expect("client read");
                    assert_eq!(answer, value.to_be_bytes(), "connection {id}: a wrong answer");
                };
                round(&mut stream, id);
                drop(first_round);
                release.acquire().forget();
                round(&mut stream, id | 1 << 63);
            })
        })
        .collect();
    drop(first_round.clone());
    first_round.wait();
    eprintln!("{n} connections open, each one round trip done, after {:?}", start.elapsed());
    acceptor.join().expect("the acceptor");
    // Every connection is open at the same time: none can finish before
    // the release.
    assert_eq!(open.load(Ordering::Relaxed), n, "server coroutines holding an open connection");
    assert_eq!(served.load(Ordering::Relaxed), 0);
    release.add_permits(n);
    for client in clients {
        client.join().expect("a client");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while served.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "{} of {n} connections served to their end", served.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!("all {n} served after {:?}", start.elapsed());
}
