//! Regressions found in a review of `weft::net` and the per-worker poller (2026-12-06).
//! Each test runs its coroutine on a one-worker runtime on a helper thread
//! and waits for the answer with a deadline, so that a coroutine that hangs
//! or spins (the bugs) fails the test instead of hanging the suite.

use std::io::{ErrorKind, IoSliceMut, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};
use weft::net::{TcpListener, UdpSocket, UnixStream};

/// Runs `f` as a coroutine of a fresh one-worker runtime; fails the test if
/// it has not returned within `secs` seconds (the runtime is then left
/// behind: its worker may be spinning, and could not be dropped).
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let rt = weft::Runtime::builder().workers(1).build().unwrap();
        let out = rt.block_on(f);
        let _ = tx.send(out);
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out,
        Err(RecvTimeoutError::Timeout) => panic!("{what}: the coroutine did not return within {secs} s"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: the coroutine panicked (see above)"),
    }
}

/// A connected UDP socket whose peer port is closed gets an ICMP "port
/// unreachable": EPOLLERR on its epoll, and `ECONNREFUSED` from the next
/// receive, once (the kernel clears SO_ERROR when it reports it). The
/// receive after that must wait like any other — here, until its read
/// timeout, with `WouldBlock` — as std's does. The poller made ERR a sticky
/// READ_CLOSED bit, so every later receive found the socket "ready", got
/// EAGAIN, and retried at once: a busy loop that held the worker for good
/// and never reached its timeout.
#[test]
fn udp_recv_after_a_refused_datagram_still_waits_for_its_timeout() {
    let timeout = Duration::from_millis(300);
    let (first, second, waited) = within(20, "recv after ECONNREFUSED", move || {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(closed).unwrap();
        socket.set_read_timeout(Some(timeout)).unwrap();
        socket.send(b"anyone there?").unwrap();
        // The worker goes idle and polls: the ICMP error arrives as EPOLLERR.
        weft::sleep(Duration::from_millis(100));
        let mut buf = [0u8; 64];
        let first = socket.recv(&mut buf).map_err(|e| e.kind());
        let start = Instant::now();
        let second = socket.recv(&mut buf).map_err(|e| e.kind());
        (first, second, start.elapsed())
    });
    assert_eq!(first, Err(ErrorKind::ConnectionRefused), "the first receive reports the ICMP error");
    assert_eq!(second, Err(ErrorKind::WouldBlock), "the next receive times out");
    assert!(waited >= timeout, "the timeout ended early: {waited:?}");
}

/// `try_clone` duplicates the descriptor: both handles share one open file,
/// and O_NONBLOCK belongs to the open file. `into_std` of one handle puts
/// the file back in blocking mode, so the other weft handle's next read
/// blocked its worker thread in read(2) instead of parking the coroutine:
/// nothing else ran on that worker until data came.
#[test]
fn into_std_of_a_clone_does_not_make_the_other_handle_block_its_worker() {
    let (other_coroutine_ran, got) = within(20, "read after a clone's into_std", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        let std_clone = stream.try_clone().unwrap().into_std().unwrap();
        let ticked = Arc::new(AtomicBool::new(false));
        let ticker = {
            let ticked = Arc::clone(&ticked);
            weft::spawn(move || {
                weft::sleep(Duration::from_millis(20));
                ticked.store(true, Ordering::SeqCst);
            })
        };
        // The peer answers once the other coroutine has run (or after 3 s).
        let writer = {
            let ticked = Arc::clone(&ticked);
            std::thread::spawn(move || {
                let start = Instant::now();
                while !ticked.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(3) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let ran = ticked.load(Ordering::SeqCst);
                peer.write_all(b"hi").unwrap();
                ran
            })
        };
        let mut buf = [0u8; 16];
        let n = (&stream).read(&mut buf).unwrap();
        ticker.join().unwrap();
        let ran = writer.join().unwrap();
        drop(std_clone);
        (ran, buf[..n].to_vec())
    });
    assert_eq!(got, b"hi");
    assert!(other_coroutine_ran, "the read blocked the worker thread: no other coroutine ran while it waited");
}

/// In non-blocking mode an operation fails with `WouldBlock` only if it
/// would wait; data already in the socket is returned, as std does. weft
/// answered from its cached readiness without asking the kernel: after one
/// `WouldBlock`, data written meanwhile was not seen until the worker next
/// polled its epoll (never, for a coroutine that does not yield).
#[test]
fn a_nonblocking_read_returns_data_already_in_the_socket() {
    fn sequence() -> (Result<usize, ErrorKind>, Result<Vec<u8>, ErrorKind>) {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let first = b.read(&mut buf).map_err(|e| e.kind());
        a.write_all(b"hi").unwrap();
        let second = b.read(&mut buf).map(|n| buf[..n].to_vec()).map_err(|e| e.kind());
        (first, second)
    }
    // Control: a plain thread gets std's answer.
    let on_thread = std::thread::spawn(sequence).join().unwrap();
    assert_eq!(on_thread, (Err(ErrorKind::WouldBlock), Ok(b"hi".to_vec())));
    let in_coroutine = within(20, "non-blocking read", sequence);
    assert_eq!(in_coroutine, on_thread, "a coroutine's non-blocking read missed queued data");
}

/// A vectored read over more than IOV_MAX (1024) buffers: std passes the
/// kernel only the first 1024, so the read returns less than the buffers
/// hold while data is still queued. weft took that short read for "the
/// socket is empty", cleared its readiness, and the next read parked
/// although the rest of the data was there (no new edge comes for it).
#[test]
fn a_vectored_read_over_more_than_iov_max_buffers_does_not_strand_the_rest() {
    let (first, second) = within(20, "read after a 2000-buffer read_vectored", || {
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        // Register `b` with the worker's poller (a short read).
        a.write_all(b"x").unwrap();
        let mut one = [0u8; 16];
        assert_eq!((&b).read(&mut one).unwrap(), 1);
        a.write_all(&[7u8; 2000]).unwrap();
        // The worker polls meanwhile: every event for `b` so far is handled.
        weft::sleep(Duration::from_millis(50));
        let mut storage = vec![[0u8; 1]; 2000];
        let mut slices: Vec<IoSliceMut<'_>> = storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let first = (&b).read_vectored(&mut slices).unwrap();
        let mut rest = vec![0u8; 4096];
        let second = (&b).read(&mut rest).map_err(|e| e.kind());
        (first, second)
    });
    assert_eq!(first, 1024, "readv takes at most IOV_MAX buffers");
    assert_eq!(second, Ok(2000 - 1024), "the rest of the queued data was not read");
}

/// TCP urgent data: a read stops short at the urgent mark, with the data
/// after the mark still queued. weft took that short read for "the receive
/// queue is empty" and the next read parked until new data or its timeout,
/// although std's read returns the queued bytes at once.
#[test]
fn tcp_data_after_the_urgent_mark_is_read_without_waiting_for_more() {
    let (first, second) = within(20, "read past a TCP urgent mark", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        peer.set_nodelay(true).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        // Register the stream with the worker's poller (a short read).
        peer.write_all(b"x").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!((&stream).read(&mut buf).unwrap(), 1);
        // "ab!" with '!' as the urgent byte (not inline), then "cd".
        // SAFETY: a valid socket and a 3-byte buffer.
        let sent = unsafe { libc::send(peer.as_raw_fd(), b"ab!".as_ptr().cast(), 3, libc::MSG_OOB) };
        assert_eq!(sent, 3);
        peer.write_all(b"cd").unwrap();
        // The worker polls meanwhile: every event for the stream is handled.
        weft::sleep(Duration::from_millis(100));
        let n = (&stream).read(&mut buf).unwrap();
        let first = buf[..n].to_vec();
        let second = (&stream).read(&mut buf).map(|n| buf[..n].to_vec()).map_err(|e| e.kind());
        drop(peer);
        (first, second)
    });
    assert_eq!(first, b"ab", "the read stops at the urgent mark");
    assert_eq!(second, Ok(b"cd".to_vec()), "the bytes after the mark were stranded");
}
