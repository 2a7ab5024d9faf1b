//! The same types on plain OS threads, with no runtime anywhere in the
//! process's use of them: they block like std's. A read waits for data, an
//! accept for a connection; `set_nonblocking(true)` turns a wait into
//! `WouldBlock` at once; read and write timeouts give `WouldBlock` after
//! the timeout, never before it.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};
use weft::net::{TcpListener, TcpStream, UdpSocket, UnixStream};

const DELAY: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_millis(80);

/// A connected pair of weft TCP streams, made on this thread.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    (client, listener.accept().unwrap().0)
}

#[test]
fn a_read_waits_for_data_and_an_accept_for_a_connection() {
    let (mut a, mut b) = tcp_pair();
    // Before the spawn: the writer's sleep begins after `start`, however
    // late this thread runs again.
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(DELAY);
        b.write_all(b"late").unwrap();
        b
    });
    let mut buf = [0u8; 4];
    a.read_exact(&mut buf).unwrap();
    assert!(start.elapsed() >= DELAY, "the read returned after {:?}, before the data was sent", start.elapsed());
    assert_eq!(&buf, b"late");
    drop(writer.join().unwrap());
    assert_eq!(a.read(&mut buf).unwrap(), 0, "EOF after the peer closed");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let start = Instant::now();
    let connector = std::thread::spawn(move || {
        std::thread::sleep(DELAY);
        TcpStream::connect(addr).unwrap()
    });
    let (_accepted, _) = listener.accept().unwrap();
    assert!(start.elapsed() >= DELAY, "accept returned after {:?}, before the connect", start.elapsed());
    connector.join().unwrap();
}

#[test]
fn nonblocking_mode_gives_would_block_at_once() {
    let (a, b) = tcp_pair();
    a.set_nonblocking(true).unwrap();
    let start = Instant::now();
    assert_eq!((&a).read(&mut [0u8; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(a.peek(&mut [0u8; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
    // Fill the send buffer: a non-blocking write ends in WouldBlock.
    let chunk = vec![0u8; 64 * 1024];
    let mut sent = 0usize;
    let err = loop {
        match (&a).write(&chunk) {
            Ok(n) => sent += n,
            Err(err) => break err,
        }
        assert!(sent < 256 << 20, "wrote {sent} bytes without WouldBlock");
    };
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    assert_eq!(listener.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    assert_eq!(udp.recv_from(&mut [0u8; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
    let (u, _u2) = UnixStream::pair().unwrap();
    u.set_nonblocking(true).unwrap();
    assert_eq!((&u).read(&mut [0u8; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert!(start.elapsed() < Duration::from_secs(2), "non-blocking calls waited: {:?}", start.elapsed());

    // Back to blocking: the read waits again, and gets the data.
    a.set_nonblocking(false).unwrap();
    let mut b = b;
    let writer = std::thread::spawn(move || {
        // Drain what `a` sent, then answer.
        let mut drained = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while drained < sent {
            drained += b.read(&mut buf).unwrap();
        }
        b.write_all(b"x").unwrap();
        b
    });
    let mut one = [0u8; 1];
    (&a).read_exact(&mut one).unwrap();
    assert_eq!(&one, b"x");
    drop(writer.join().unwrap());
}

#[test]
fn read_and_write_timeouts_give_would_block_never_early() {
    let (a, _b) = tcp_pair();
    a.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(a.read_timeout().unwrap(), Some(TIMEOUT));
    let start = Instant::now();
    assert_eq!((&a).read(&mut [0u8; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
    let elapsed = start.elapsed();
    assert!(elapsed >= TIMEOUT, "the read timed out after {elapsed:?}, before {TIMEOUT:?}");
    assert!(elapsed < TIMEOUT + Duration::from_secs(2), "the read timed out after {elapsed:?}");

    // A write timeout, with nobody reading the other end.
    a.set_write_timeout(Some(TIMEOUT)).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let start = Instant::now();
    let err = loop {
        if let Err(err) = (&a).write(&chunk) {
            break err;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "writes never timed out");
    };
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    // The timeout counts from when the write began to wait, after the
    // buffers filled; the whole loop took at least that long.
    assert!(start.elapsed() >= TIMEOUT, "the write timed out after {:?}", start.elapsed());

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let start = Instant::now();
    assert_eq!(udp.recv_from(&mut [0u8; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert!(start.elapsed() >= TIMEOUT, "recv_from timed out after {:?}", start.elapsed());

    let (u, _u2) = UnixStream::pair().unwrap();
    u.set_read_timeout(Some(TIMEOUT)).unwrap();
    let start = Instant::now();
    assert_eq!((&u).read(&mut [0u8; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert!(start.elapsed() >= TIMEOUT, "the Unix read timed out after {:?}", start.elapsed());

    // A zero timeout is refused, as std refuses it.
    assert_eq!(a.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(), ErrorKind::InvalidInput);
}
