//! UDP: datagrams arrive whole and exact (1 B to 8 KiB, contents checked)
//! between coroutines and from OS threads to a coroutine and back; a
//! receive timeout is `WouldBlock`, never early; `peek` leaves the datagram
//! queued and waits for one like `recv`; a datagram longer than the buffer
//! is truncated and the next one is intact.
//!
//! Each datagram is answered before the next is sent, so none is lost to a
//! full receive buffer (loopback UDP drops when the buffer is full).

mod common;

use common::net::XorShift;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weft::net::UdpSocket;

const DATAGRAMS: usize = 300;
const MAX: usize = 8 * 1024;

/// An echo coroutine: sends back each of `count` datagrams to its sender,
/// reversed (so that an echo is not mistaken for the datagram itself).
fn spawn_echo(rt: &weft::Runtime, count: usize) -> (SocketAddr, weft::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let handle = rt.spawn(move || {
        let mut buf = vec![0u8; MAX + 1];
        for _ in 0..count {
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            buf[..n].reverse();
            assert_eq!(socket.send_to(&buf[..n], from).unwrap(), n);
        }
    });
    (addr, handle)
}

/// Sends `DATAGRAMS` datagrams of random sizes and contents to `echo`, each
/// answered before the next; checks every answer byte for byte.
fn exchange(echo: SocketAddr, seed: u64) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(echo).unwrap();
    let mut rng = XorShift::new(seed);
    let mut datagram = vec![0u8; MAX];
    let mut answer = vec![0u8; MAX + 1];
    for i in 0..DATAGRAMS {
        // The extremes once each, random sizes otherwise.
        let size = match i {
            0 => 1,
            1 => MAX,
            _ => rng.range(1, MAX),
        };
        rng.fill(&mut datagram[..size]);
        assert_eq!(socket.send(&datagram[..size]).unwrap(), size);
        let n = socket.recv(&mut answer).unwrap();
        assert_eq!(n, size, "datagram {i}: the answer's size");
        answer[..n].reverse();
        assert!(answer[..n] == datagram[..size], "datagram {i} of {size} bytes came back altered");
    }
}

#[test]
fn datagrams_are_exact_between_coroutines_and_from_threads() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    // Coroutine to coroutine, four clients at once.
    let (addr, echo) = spawn_echo(&rt, 4 * DATAGRAMS);
    let clients: Vec<_> = (0..4).map(|c| rt.spawn(move || exchange(addr, c))).collect();
    for c in clients {
        c.join().unwrap();
    }
    echo.join().unwrap();
    // OS threads to a coroutine and back.
    let (addr, echo) = spawn_echo(&rt, 4 * DATAGRAMS);
    let threads: Vec<_> = (0..4).map(|t| std::thread::spawn(move || exchange(addr, 100 + t))).collect();
    for t in threads {
        t.join().unwrap();
    }
    echo.join().unwrap();
}

#[test]
fn recv_timeout_is_would_block_never_early() {
    const TIMEOUT: Duration = Duration::from_millis(60);
    let rt = weft::Runtime::builder().workers(1).build().unwrap();
    let check = || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        for _ in 0..3 {
            let start = Instant::now();
            let err = socket.recv_from(&mut [0u8; 16]).unwrap_err();
            let elapsed = start.elapsed();
            assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err:?}");
            assert!(elapsed >= TIMEOUT, "recv_from timed out after {elapsed:?}, before {TIMEOUT:?}");
            assert!(elapsed < TIMEOUT + Duration::from_secs(2), "recv_from timed out after {elapsed:?}");
        }
        // A datagram that comes in time is received.
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"in time", socket.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"in time"[..], sender.local_addr().unwrap()));
    };
    rt.block_on(check);
    std::thread::spawn(check).join().unwrap();
}

#[test]
fn peek_leaves_the_datagram_and_waits_like_recv() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = receiver.local_addr().unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sender_addr = sender.local_addr().unwrap();
    let peeker = rt.spawn(move || {
        let mut buf = [0u8; 64];
        // Parks until the datagram comes (sent 50 ms later).
        let (n, from) = receiver.peek_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"first"[..], sender_addr));
        // Still queued: peek again, then receive it.
        let (n, _) = receiver.peek_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"first");
        let (n, _) = receiver.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"first");
        // Connected: peek and recv.
        receiver.connect(sender_addr).unwrap();
        let n = receiver.peek(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"second, longer than the buffer");
        // Truncation: a short buffer gets the first bytes; the rest is lost.
        let mut short = [0u8; 6];
        assert_eq!(receiver.recv(&mut short).unwrap(), 6);
        assert_eq!(&short, b"second");
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"third");
    });
    std::thread::sleep(Duration::from_millis(50));
    sender.send_to(b"first", addr).unwrap();
    sender.send_to(b"second, longer than the buffer", addr).unwrap();
    sender.send_to(b"third", addr).unwrap();
    peeker.join().unwrap();
}

/// The socket options std's `UdpSocket` has: each setter's value reads back
/// through its getter, as on std's socket.
#[test]
fn socket_options_read_back_as_set() {
    let socket = weft::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket on loopback");
    socket.set_broadcast(true).unwrap();
    assert!(socket.broadcast().unwrap());
    socket.set_ttl(17).unwrap();
    assert_eq!(socket.ttl().unwrap(), 17);
    socket.set_multicast_loop_v4(false).unwrap();
    assert!(!socket.multicast_loop_v4().unwrap());
    socket.set_multicast_loop_v4(true).unwrap();
    assert!(socket.multicast_loop_v4().unwrap());
    socket.set_multicast_ttl_v4(9).unwrap();
    assert_eq!(socket.multicast_ttl_v4().unwrap(), 9);
    match weft::net::UdpSocket::bind("[::1]:0") {
        Ok(v6) => {
            v6.set_multicast_loop_v6(false).unwrap();
            assert!(!v6.multicast_loop_v6().unwrap());
            v6.set_multicast_loop_v6(true).unwrap();
            assert!(v6.multicast_loop_v6().unwrap());
        }
        // A host without IPv6 on loopback: std's socket could not either.
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::AddrNotAvailable, "binding [::1]: {e}"),
    }
}
