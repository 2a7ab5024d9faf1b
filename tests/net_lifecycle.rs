//! How sockets end: dropping a runtime whose coroutines are parked in
//! accept and read (promptly, closing every socket they held); cancelling
//! coroutines parked in accept, read, write and connect (each unwinds, its
//! socket closes, the runtime goes on serving I/O); and no stale readiness
//! for a new socket that gets a closed socket's descriptor number.
//!
//! The tests count and look up descriptors of the whole process, so each
//! holds [`SERIAL`]: no other test of this binary opens or closes any
//! meanwhile.

mod common;

use common::net::{FullBacklog, fd_identity, fd_is_open, open_fds, set_small_buffers};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use weft::net::{TcpListener, TcpStream, UnixStream};
use weft::{CoroutineState, ParkedOn};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// What coroutine `id` is parked on, once it is parked on a socket.
fn wait_parked_on_socket(rt: &weft::Runtime, id: u64) -> ParkedOn {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(CoroutineState::Parked { on, .. }) = rt.dump().coroutine(id).map(|c| c.state())
            && matches!(on, ParkedOn::Readable(_) | ParkedOn::Writable(_))
        {
            return on;
        }
        assert!(Instant::now() < deadline, "coroutine {id} never parked on a socket\n{}", rt.dump());
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn dropping_a_runtime_with_1000_coroutines_parked_in_accept_and_read_is_prompt_and_closes_their_sockets() {
    let _serial = serial();
    const LISTENERS: usize = 10;
    const ACCEPTORS_EACH: usize = 50;
    const READERS: usize = 500;
    let baseline = open_fds();
    let rt = weft::Runtime::builder().workers(2).stack_size(64 * 1024).build().unwrap();
    // 500 coroutines in accept, 50 on each of 10 listeners that only they hold.
    for _ in 0..LISTENERS {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        for _ in 0..ACCEPTORS_EACH {
            let listener = Arc::clone(&listener);
            rt.spawn(move || {
                let _ = listener.accept();
                unreachable!("nobody connects to this listener");
            });
        }
    }
    // 500 coroutines in read, each on its own connection; the other ends
    // stay here.
    let peers_listener = common::net::listener_with_backlog(1024);
    let addr = peers_listener.local_addr().unwrap();
    let mut peers = Vec::new();
    for _ in 0..READERS {
        peers.push(std::net::TcpStream::connect(addr).unwrap());
        let mut stream = TcpStream::from_std(peers_listener.accept().unwrap().0).unwrap();
        rt.spawn(move || {
            let _ = stream.read(&mut [0u8; 16]);
            unreachable!("nobody writes to this connection");
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dump = rt.dump();
        let parked = dump
            .coroutines()
            .iter()
            .filter(|c| matches!(c.state(), CoroutineState::Parked { on: ParkedOn::Readable(_), .. }))
            .count();
        let workers: std::collections::HashSet<_> = dump.coroutines().iter().filter_map(|c| c.worker()).collect();
        if parked == LISTENERS * ACCEPTORS_EACH + READERS {
            assert_eq!(workers.len(), 2, "the coroutines are all on one worker");
            break;
        }
        assert!(Instant::now() < deadline, "only {parked} coroutines parked on sockets");
        std::thread::sleep(Duration::from_millis(10));
    }

    let start = Instant::now();
    drop(rt);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "dropping the runtime took {took:?}");
    eprintln!("runtime with 1000 coroutines parked on sockets dropped in {took:?}");
    // The readers' sockets are closed: their peers read EOF.
    for peer in &mut peers {
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(peer.read(&mut [0u8; 16]).unwrap(), 0, "a reader's socket outlived its runtime");
    }
    drop(peers);
    drop(peers_listener);
    assert_eq!(open_fds(), baseline, "descriptors open after the runtime and the peers are gone");
}

#[test]
fn cancelling_coroutines_parked_in_accept_read_write_and_connect_closes_their_sockets() {
    let _serial = serial();
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let cancel = |handle: weft::JoinHandle<()>| {
        let on = wait_parked_on_socket(&rt, handle.id());
        let (ParkedOn::Readable(fd) | ParkedOn::Writable(fd)) = on else { unreachable!() };
        let socket = fd_identity(fd);
        assert!(socket.is_some(), "descriptor {fd} ({on}) is not open while its coroutine waits on it");
        handle.cancel();
        let err = handle.join().expect_err("a cancelled coroutine joined with a value");
        assert!(err.is_cancelled(), "join reported {err}, not a cancel");
        // The socket is closed (its number may already be another file's).
        assert_ne!(fd_identity(fd), socket, "descriptor {fd} ({on}) is still open after the cancel");
        on
    };

    // Accept.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listener_fd = listener.as_raw_fd();
    let on = cancel(rt.spawn(move || {
        let _ = listener.accept();
        unreachable!("nobody connects");
    }));
    assert_eq!(on, ParkedOn::Readable(listener_fd));
    assert_eq!(std::net::TcpStream::connect(addr).unwrap_err().kind(), ErrorKind::ConnectionRefused);

    // Read.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut stream = TcpStream::from_std(listener.accept().unwrap().0).unwrap();
    let fd = stream.as_raw_fd();
    let on = cancel(rt.spawn(move || {
        let _ = stream.read(&mut [0u8; 16]);
        unreachable!("nobody writes");
    }));
    assert_eq!(on, ParkedOn::Readable(fd));
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(peer.read(&mut [0u8; 16]).unwrap(), 0, "the peer of a cancelled reader sees EOF");

    // Write, on a full send buffer.
    let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut stream = TcpStream::from_std(listener.accept().unwrap().0).unwrap();
    set_small_buffers(&stream, 4096);
    set_small_buffers(&peer, 4096);
    let fd = stream.as_raw_fd();
    let on = cancel(rt.spawn(move || {
        let chunk = vec![0u8; 64 * 1024];
        loop {
            stream.write_all(&chunk).unwrap();
        }
    }));
    assert_eq!(on, ParkedOn::Writable(fd));
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = Vec::new();
    peer.read_to_end(&mut sink).expect("the peer of a cancelled writer reads what was sent, then EOF");

    // Connect, to a listener that never answers.
    match FullBacklog::new() {
        Some(full) => {
            let addr = full.addr;
            let on = cancel(rt.spawn(move || {
                let result = TcpStream::connect(addr);
                panic!("a connect to a full backlog returned {result:?}");
            }));
            assert!(matches!(on, ParkedOn::Writable(_)), "a connect parked on {on}");
        }
        None => eprintln!("note: the connect part is skipped (see above)"),
    }

    // The runtime still serves I/O.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = rt.spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).unwrap();
        stream.write_all(&buf).unwrap();
    });
    let echoed = rt.spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"after").unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).unwrap();
        buf
    });
    assert_eq!(&echoed.join().unwrap(), b"after");
    server.join().unwrap();
}

/// A runtime dropped while a coroutine is parked in a connect (to a
/// listener that never answers) unwinds it promptly: its join reports the
/// shutdown, and the socket it was connecting closes with it.
#[test]
fn dropping_a_runtime_with_a_coroutine_parked_in_connect_is_prompt() {
    let _serial = serial();
    let Some(full) = FullBacklog::new() else {
        eprintln!("note: skipped (see above)");
        return;
    };
    let addr = full.addr;
    let before = open_fds();
    let rt = weft::Runtime::builder().workers(1).build().unwrap();
    let parked = rt.spawn(move || TcpStream::connect(addr).map(drop));
    let on = wait_parked_on_socket(&rt, parked.id());
    assert!(matches!(on, ParkedOn::Writable(_)), "the connect parked on {on}");
    let start = std::time::Instant::now();
    drop(rt);
    assert!(start.elapsed() < Duration::from_secs(5), "dropping the runtime took {:?}", start.elapsed());
    let err = parked.join().expect_err("a connect unwound at shutdown");
    assert!(err.is_cancelled(), "{err}");
    assert_eq!(open_fds(), before, "the connecting socket (or the worker's epoll) is still open");
}

/// The epoll trap: epoll registers (descriptor, open file), and closing a
/// descriptor removes the registration only when no other descriptor (a
/// `try_clone`) refers to the same open file. A socket that did not
/// deregister before closing would keep receiving events for the old file
/// under its old number, naming its freed entry. Here the old file stays
/// open through a clone and becomes readable while a new socket with the
/// same descriptor number waits: the new socket's read must stay parked
/// until its own data comes, and get exactly that, and the worker must see
/// no event for the old file (checked against a negative control: with the
/// poller's `EPOLL_CTL_DEL` commented out, the event count assertion fails).
#[test]
fn no_stale_readiness_for_a_new_socket_with_a_closed_sockets_descriptor() {
    let _serial = serial();
    let rt = weft::Runtime::builder().workers(1).build().unwrap();
    for drop_on_worker in [true, false] {
        let (old, mut old_peer) = UnixStream::pair().unwrap();
        let clone = old.try_clone().unwrap();
        let old_fd = clone.as_raw_fd();
        // Register the clone with the worker's poller: a read that waits.
        let reader = rt.spawn(move || {
            let mut byte = [0u8; 1];
            (&clone).read_exact(&mut byte).unwrap();
            assert_eq!(&byte, b"1");
            if drop_on_worker {
                drop(clone);
                None
            } else {
                Some(clone)
            }
        });
        assert_eq!(wait_parked_on_socket(&rt, reader.id()), ParkedOn::Readable(old_fd));
        old_peer.write_all(b"1").unwrap();
        drop(reader.join().unwrap()); // closed on the worker or here
        assert!(!fd_is_open(old_fd));

        // A new socket with the old number (descriptors are allocated
        // lowest first; any that come out lower are kept aside).
        let mut aside = Vec::new();
        let (new, mut new_peer) = loop {
            let (a, b) = UnixStream::pair().unwrap();
            if a.as_raw_fd() == old_fd {
                break (a, b);
            }
            assert!(aside.len() < 64, "no new socket got descriptor {old_fd}");
            aside.push((a, b));
        };
        let reader = rt.spawn(move || {
            let mut buf = [0u8; 16];
            let n = (&new).read(&mut buf).unwrap();
            buf[..n].to_vec()
        });
        assert_eq!(wait_parked_on_socket(&rt, reader.id()), ParkedOn::Readable(old_fd));
        // The worker's events so far (the new registration's first
        // EPOLLOUT edge among them) have been handled once the count holds
        // still.
        let io_events = || rt.metrics().total.io_events;
        let mut before = io_events();
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let now = io_events();
            if now == before {
                break;
            }
            before = now;
        }
        // The old open file becomes readable, and stays so. Nothing of ours
        // is registered for it any more: no event may reach the worker. (A
        // stale registration's event would name the freed entry; the retry
        // loop would hide the spurious wake, the count does not.)
        old_peer.write_all(b"for the old socket").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(io_events(), before, "an event for the closed socket's open file reached the worker");
        assert!(!reader.is_finished(), "the new socket's read returned on the old socket's readiness");
        assert_eq!(wait_parked_on_socket(&rt, reader.id()), ParkedOn::Readable(old_fd));
        new_peer.write_all(b"mine").unwrap();
        assert_eq!(reader.join().unwrap(), b"mine");
        // The old socket's data is still there for it.
        let mut buf = [0u8; 18];
        (&old).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"for the old socket");
    }
}
