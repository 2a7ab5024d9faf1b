//! `weft::net::UnixDatagram`: datagrams arrive whole and exact between
//! coroutines and threads, through a pair and through bound paths; a
//! receive timeout is `WouldBlock`, never early; a send to a full receiver
//! waits (parking a coroutine) until the receiver drains, connected or not
//! (an unconnected sender gets no readiness edge: the send retries in
//! slices), and times out as a write does; a shut read half wakes a parked
//! receive; cancellation ends a parked receive and a waiting send.
//!
//! Each test runs under a watchdog: a wait that never ends fails the test
//! instead of hanging it.

mod common;

use common::net::TempDir;
use std::io::ErrorKind;
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use weft::net::UnixDatagram;

const WATCHDOG: Duration = Duration::from_secs(60);

fn watched(body: impl FnOnce() + Send + 'static) {
    common::watched(WATCHDOG, body);
}

fn runtime(workers: usize) -> weft::Runtime {
    weft::Runtime::builder().workers(workers).build().expect("a runtime")
}

/// Datagram `i`: its length and contents, both from `i`.
fn datagram(i: usize) -> Vec<u8> {
    (0..(i * 37) % 2000 + 1).map(|j| (i * 31 + j * 7) as u8).collect()
}

/// Sends datagrams 0..count from `from`, each answered (reversed) by the
/// echo before the next, and checks each answer.
fn exchange(from: &UnixDatagram, count: usize) {
    let mut buf = vec![0u8; 4096];
    for i in 0..count {
        let sent = datagram(i);
        assert_eq!(from.send(&sent).unwrap(), sent.len());
        let n = from.recv(&mut buf).unwrap();
        let mut expected = sent.clone();
        expected.reverse();
        assert_eq!(&buf[..n], &expected[..], "datagram {i} came back changed");
    }
}

/// An echo of `count` datagrams, each sent back reversed.
fn echo(socket: &UnixDatagram, count: usize) {
    let mut buf = vec![0u8; 4096];
    for _ in 0..count {
        let n = socket.recv(&mut buf).unwrap();
        buf[..n].reverse();
        socket.send(&buf[..n]).unwrap();
    }
}

#[test]
fn datagrams_are_exact_between_coroutines_and_threads() {
    watched(|| {
        let rt = runtime(2);
        // Coroutine to coroutine.
        let (a, b) = UnixDatagram::pair().unwrap();
        let echoer = rt.spawn(move || echo(&b, 200));
        rt.spawn(move || exchange(&a, 200)).join().unwrap();
        echoer.join().unwrap();
        // Thread to coroutine.
        let (a, b) = UnixDatagram::pair().unwrap();
        let echoer = rt.spawn(move || echo(&b, 200));
        exchange(&a, 200);
        echoer.join().unwrap();
    });
}

#[test]
fn bound_sockets_name_their_sender() {
    watched(|| {
        let dir = TempDir::new("bound");
        let (server_path, client_path) = (dir.0.join("server"), dir.0.join("client"));
        let server = UnixDatagram::bind(&server_path).unwrap();
        let client = UnixDatagram::bind(&client_path).unwrap();
        let rt = runtime(1);
        let receiver = rt.spawn(move || {
            let mut buf = [0u8; 64];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            (buf[..n].to_vec(), from.as_pathname().map(PathBuf::from))
        });
        client.send_to(b"hello", &server_path).unwrap();
        let (got, from) = receiver.join().unwrap();
        assert_eq!(got, b"hello");
        assert_eq!(from.as_deref(), Some(client_path.as_path()));
        let unbound = UnixDatagram::unbound().unwrap();
        unbound.connect(&client_path).unwrap();
        assert_eq!(unbound.peer_addr().unwrap().as_pathname(), Some(client_path.as_path()));
    });
}

#[test]
fn recv_timeout_is_would_block_never_early() {
    watched(|| {
        let (a, _b) = UnixDatagram::pair().unwrap();
        let timeout = Duration::from_millis(30);
        a.set_read_timeout(Some(timeout)).unwrap();
        let a = Arc::new(a);
        let check = move |a: &UnixDatagram, side: &str| {
            let started = Instant::now();
            let error = a.recv(&mut [0u8; 8]).expect_err("nothing to receive");
            assert_eq!(error.kind(), ErrorKind::WouldBlock, "{side}: {error}");
            assert!(started.elapsed() >= timeout, "{side}: timed out early: {:?}", started.elapsed());
        };
        check(&a, "thread");
        let rt = runtime(1);
        let in_coroutine = Arc::clone(&a);
        rt.spawn(move || check(&in_coroutine, "coroutine")).join().unwrap();
    });
}

/// Fills `to`'s receive queue with datagrams from `from` (non-blocking
/// sends until one would block); returns how many it took.
fn fill(from: &UnixDatagram, send: impl Fn(&UnixDatagram) -> std::io::Result<usize>) -> usize {
    from.set_nonblocking(true).unwrap();
    let mut sent = 0;
    loop {
        match send(from) {
            Ok(_) => sent += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the receiver: {e}"),
        }
        assert!(sent < 1_000_000, "the receiver's queue never filled");
    }
    from.set_nonblocking(false).unwrap();
    sent
}

/// A send to a full receiver parks until the receiver drains a datagram,
/// for an unconnected sender (no readiness edge: slices) and a connected
/// one (the peer's wake); with a write timeout and no drain, `WouldBlock`,
/// never early.
#[test]
fn a_send_to_a_full_receiver_waits_for_room() {
    watched(|| {
        let dir = TempDir::new("full");
        let path = dir.0.join("receiver");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let rt = runtime(1);
        for connected in [false, true] {
            let sender = UnixDatagram::unbound().unwrap();
            if connected {
                sender.connect(&path).unwrap();
            }
            let path_for_send = path.clone();
            let send = move |s: &UnixDatagram| if connected { s.send(b"x") } else { s.send_to(b"x", &path_for_send) };
            let queued = fill(&sender, &send);
            let sender = Arc::new(sender);
            let waiting = {
                let (sender, send) = (Arc::clone(&sender), send.clone());
                rt.spawn(move || send(&sender).map(|n| (n, Instant::now())))
            };
            thread::sleep(Duration::from_millis(20));
            assert!(!waiting.is_finished(), "connected {connected}: the send did not wait for room");
            let mut buf = [0u8; 8];
            // The send can complete only after this receive made room.
            let made_room = Instant::now();
            receiver.recv(&mut buf).unwrap();
            let (n, done) = waiting.join().unwrap().expect("sent once there was room");
            assert_eq!(n, 1);
            assert!(
                done >= made_room,
                "connected {connected}: the send completed {:?} before the receive made room",
                made_room - done
            );
            // Drain what is queued (the queued datagrams and the last send).
            receiver.set_nonblocking(true).unwrap();
            let mut drained = 0;
            while receiver.recv(&mut buf).is_ok() {
                drained += 1;
            }
            receiver.set_nonblocking(false).unwrap();
            assert_eq!(drained, queued, "connected {connected}: every datagram arrived once");
        }
        // A write timeout with nobody draining.
        let sender = UnixDatagram::unbound().unwrap();
        let path_for_send = path.clone();
        fill(&sender, move |s| s.send_to(b"x", &path_for_send));
        let timeout = Duration::from_millis(30);
        sender.set_write_timeout(Some(timeout)).unwrap();
        let started = Instant::now();
        let error = sender.send_to(b"x", &path).expect_err("the receiver is full");
        assert_eq!(error.kind(), ErrorKind::WouldBlock, "{error}");
        assert!(started.elapsed() >= timeout, "timed out early: {:?}", started.elapsed());
    });
}

/// A receive parked in a coroutine ends when another handle shuts the read
/// half down, and cancellation ends a parked receive and a waiting send.
#[test]
fn shutdown_and_cancel_end_parked_operations() {
    watched(|| {
        let rt = runtime(1);
        let (a, b) = UnixDatagram::pair().unwrap();
        let a = Arc::new(a);
        let receiving = {
            let a = Arc::clone(&a);
            rt.spawn(move || a.recv(&mut [0u8; 8]))
        };
        thread::sleep(Duration::from_millis(20));
        assert!(!receiving.is_finished());
        a.shutdown(Shutdown::Read).unwrap();
        assert_eq!(receiving.join().unwrap().expect("a shut read half reads nothing"), 0);
        // On a thread too, at once (poll says readable for good: no spin).
        assert_eq!(a.recv(&mut [0u8; 8]).expect("a thread's receive"), 0);
        let (n, from) = a.recv_from(&mut [0u8; 8]).expect("a thread's receive_from");
        assert_eq!((n, from.is_unnamed()), (0, true));

        let (c, _d) = UnixDatagram::pair().unwrap();
        let parked = rt.spawn(move || c.recv(&mut [0u8; 8]));
        thread::sleep(Duration::from_millis(20));
        parked.cancel();
        assert!(parked.join().expect_err("cancelled").is_cancelled());

        let dir = TempDir::new("cancel");
        let path = dir.0.join("receiver");
        let _receiver = UnixDatagram::bind(&path).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        let path_for_send = path.clone();
        fill(&sender, move |s| s.send_to(b"x", &path_for_send));
        let sending = rt.spawn(move || sender.send_to(b"x", &path));
        thread::sleep(Duration::from_millis(20));
        sending.cancel();
        assert!(sending.join().expect_err("cancelled").is_cancelled());
        drop(b);
    });
}

#[test]
fn std_conversions_and_clones_keep_settings() {
    let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
    a.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let a = UnixDatagram::from_std(a).unwrap();
    assert_eq!(a.read_timeout().unwrap(), Some(Duration::from_secs(1)));
    let clone = a.try_clone().unwrap();
    assert_eq!(clone.read_timeout().unwrap(), Some(Duration::from_secs(1)), "a clone shares the timeouts");
    let back = a.into_std().unwrap();
    b.send(b"std").unwrap();
    let mut buf = [0u8; 8];
    let n = back.recv(&mut buf).expect("blocking std socket again");
    assert_eq!(&buf[..n], b"std");
    assert!(format!("{clone:?}").starts_with("UnixDatagram"));
}
