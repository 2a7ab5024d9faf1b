//! weft::net and descriptors: no stale readiness reaches a socket that gets
//! a closed one's number, descriptors come back after 100 000 connections,
//! 10 000 connections are served at once, and a runtime dropped with
//! coroutines parked in I/O closes their sockets. In a test binary of their
//! own, one test at a time (they count and reuse descriptor numbers, which
//! parallel tests would disturb).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;
use weft::Runtime;
use weft::net::{TcpListener, TcpStream, UnixStream};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).stack_size(64 * 1024).build().expect("a runtime")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// Raises the soft descriptor limit to the hard one; returns the new limit.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid out-parameter.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit; raising the soft limit to the hard one is allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    limit.rlim_cur
}

/// Sets SO_LINGER {on, 0}: the close sends a reset and leaves no TIME_WAIT
/// behind (100 000 connections in TIME_WAIT would use up the loopback's
/// ephemeral ports).
fn linger_zero(fd: i32) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket and a linger value that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// A socket closed and a new one that gets the same descriptor number: no
/// readiness of the old one reaches the new one. A read on the new socket
/// parks until its own data comes, and gets exactly that.
#[test]
fn no_stale_readiness_after_descriptor_reuse() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime(1);
    rt.block_on(|| {
        for round in 0..50u8 {
            let (a, mut b) = UnixStream::pair().unwrap();
            let fd = a.as_raw_fd();
            // The old socket: registered, an event pending (data it never read).
            b.write_all(&[round; 4]).unwrap();
            let mut one = [0; 1];
            (&a).read_exact(&mut one).unwrap();
            drop(a);
            drop(b);
            // The new pair takes the lowest free numbers: `fd` again.
            let (c, mut d) = UnixStream::pair().unwrap();
            assert_eq!(c.as_raw_fd(), fd, "the descriptor number was not reused");
            let reader = weft::spawn(move || {
                let mut buf = [0; 4];
                (&c).read_exact(&mut buf).unwrap();
                buf
            });
            weft::sleep(Duration::from_millis(1));
            assert!(!reader.is_finished(), "a read on a fresh socket returned without data");
            d.write_all(&[round.wrapping_add(100); 4]).unwrap();
            assert_eq!(reader.join().unwrap(), [round.wrapping_add(100); 4]);
        }
    });
}

/// 100 000 connect/accept/close cycles (100 coroutine clients at a time on
/// a 2-worker runtime): the process's descriptor count comes back to where
/// it was, so no registration or socket leaks.
#[test]
fn descriptors_come_back_after_100_000_connections() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime(2);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Warm up (worker pollers, stack caches), then count.
    let cycle = move |listener: &TcpListener, n: usize| {
        let clients: Vec<_> = (0..n)
            .map(|_| {
                weft::spawn(move || {
                    let mut stream = TcpStream::connect(addr).unwrap();
                    let mut byte = [0];
                    stream.read_exact(&mut byte).unwrap();
                    linger_zero(stream.as_raw_fd());
                })
            })
            .collect();
        for _ in 0..n {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(&[1]).unwrap();
        }
        for client in clients {
            client.join().unwrap();
        }
    };
    let listener = rt.block_on(move || {
        cycle(&listener, 100);
        listener
    });
    let before = open_fds();
    let listener = rt.block_on(move || {
        for _ in 0..1000 {
            cycle(&listener, 100);
        }
        listener
    });
    let after = open_fds();
    assert_eq!(after, before, "descriptors open: {before} before 100 000 connections, {after} after");
    drop(listener);
}

/// 10 000 connections open at once, each served by its own coroutine (and
/// each client a coroutine too: 20 000 coroutines, 40 000 memory maps for
/// their stacks under the default vm.max_map_count of 65 530), all served.
#[test]
fn ten_thousand_concurrent_connections() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const CONNECTIONS: usize = 10_000;
    let limit = raise_fd_limit();
    let needed = 2 * CONNECTIONS as u64 + 256;
    if limit < needed {
        eprintln!("note: RLIMIT_NOFILE's hard limit is {limit}; {needed} are needed: test skipped");
        return;
    }
    let max_maps: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65_530);
    let connections = CONNECTIONS.min((max_maps.saturating_sub(4_000)) / 4);
    if connections < CONNECTIONS {
        eprintln!("note: vm.max_map_count is {max_maps}: {connections} connections instead of {CONNECTIONS}");
    }
    let server = runtime(2);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s = std::sync::Arc::clone(&served);
    server.spawn(move || {
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().unwrap();
            let s = std::sync::Arc::clone(&s);
            weft::spawn(move || {
                // Held open: the request comes only once every connection is up.
                let mut request = [0; 8];
                stream.read_exact(&mut request).unwrap();
                stream.write_all(&request).unwrap();
                s.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    let clients = runtime(2);
    let all_up = std::sync::Arc::new(weft::sync::Barrier::new(connections));
    let handles: Vec<_> = (0..connections as u64)
        .map(|i| {
            let all_up = std::sync::Arc::clone(&all_up);
            clients.spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                all_up.wait();
                stream.write_all(&i.to_le_bytes()).unwrap();
                let mut back = [0; 8];
                stream.read_exact(&mut back).unwrap();
                assert_eq!(u64::from_le_bytes(back), i);
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(served.load(std::sync::atomic::Ordering::Relaxed), connections);
}

/// Dropping a runtime with 1 000 coroutines parked in accept and read is
/// prompt, and their sockets are closed.
#[test]
fn runtime_drop_with_coroutines_parked_in_io() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = open_fds();
    let rt = runtime(2);
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    // 500 coroutines parked in read on accepted connections ...
    let acceptor = {
        let (listener, accepted) = (Arc::clone(&listener), Arc::clone(&accepted));
        rt.spawn(move || {
            for _ in 0..500 {
                let (mut stream, _) = listener.accept().unwrap();
                accepted.fetch_add(1, Ordering::Relaxed);
                weft::spawn(move || {
                    let _ = stream.read(&mut [0; 16]);
                });
            }
        })
    };
    let clients: Vec<std::net::TcpStream> = (0..500).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    acceptor.join().unwrap();
    // ... and 500 in accept on a second listener.
    let idle = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    for _ in 0..500 {
        let idle = Arc::clone(&idle);
        rt.spawn(move || {
            let _ = idle.accept();
        });
    }
    drop(idle);
    drop(listener);
    std::thread::sleep(Duration::from_millis(100)); // let them all park
    assert_eq!(rt.metrics().total.parked, 1000);
    let start = Instant::now();
    drop(rt);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "dropping the runtime took {took:?}");
    // The server ends closed: every client reads EOF.
    for mut client in clients {
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(client.read(&mut [0; 4]).unwrap(), 0);
    }
    assert_eq!(accepted.load(Ordering::Relaxed), 500);
    // Workers' epoll instances and eventfds are gone with the runtime too.
    assert!(open_fds() <= before + 2, "{} descriptors open before, {} after", before, open_fds());
}
