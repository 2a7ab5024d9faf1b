//! Regressions found in a review of `weft::net`'s Unix sockets and UDP
//! (2026-12-06). Each test compares with std's behaviour (checked
//! first, in the same test, on std's own type where that helps) and is
//! bounded: a coroutine runs on a fresh one-worker runtime on a helper
//! thread, a plain-thread case on its own thread, and the test fails if
//! the answer has not come within 20 s, instead of hanging the suite.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;
use weft::net::UnixStream;

const LIMIT_S: u64 = 20;

/// Runs `f` on its own thread; fails the test if it has not returned within
/// `LIMIT_S` seconds.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(LIMIT_S)) {
        Ok(out) => out,
        Err(RecvTimeoutError::Timeout) => panic!("{what}: did not return within {LIMIT_S} s"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: panicked (see above)"),
    }
}

/// Runs `f` as a coroutine of a fresh one-worker runtime, bounded as
/// `bounded` (the runtime is left behind if it hangs).
fn in_coroutine<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    bounded(what, move || {
        let rt = weft::Runtime::builder().workers(1).build().unwrap();
        rt.block_on(f)
    })
}

/// Sends `data` on the Unix stream `sock` with `fd` attached
/// (`SCM_RIGHTS`), as a peer that passes descriptors does.
fn send_with_fd(sock: RawFd, data: &[u8], fd: RawFd) {
    // SAFETY: plain C structs; every pointer below points at live locals of
    // the right size for the duration of the call.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        let n = libc::sendmsg(sock, &msg, 0);
        assert_eq!(n, data.len() as isize, "sendmsg: {}", std::io::Error::last_os_error());
    }
}

/// A Unix stream read stops after a message that carried descriptors
/// (`unix_stream_read_generic`: "if (scm.fp) break"), with the bytes sent
/// after it still queued: a short read there does not mean the socket is
/// empty. std's next read returns those bytes at once. weft's
/// `read_stream` takes every short read as "drained", clears READ_READY,
/// and the next read parks waiting for an edge that already came: the
/// coroutine hangs until more data arrives (here, until its read timeout).
#[test]
fn unix_read_after_a_message_with_passed_fds_returns_the_data_queued_behind_it() {
    // std, for reference: the first read stops after "A"; the next gets "B".
    let (std_tx, mut std_rx) = std::os::unix::net::UnixStream::pair().unwrap();
    send_with_fd(std_tx.as_raw_fd(), b"A", std_tx.as_raw_fd());
    (&std_tx).write_all(b"B").unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(std_rx.read(&mut buf).unwrap(), 1, "the kernel no longer stops a read at passed fds");
    std_rx.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    assert_eq!(std_rx.read(&mut buf).map(|n| buf[..n].to_vec()).unwrap(), b"B");

    let second = in_coroutine("weft read after passed fds", || {
        let (tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut rx = UnixStream::from_std(rx).unwrap();
        let mut buf = [0u8; 64];
        // Register with the worker's poller and find the socket empty.
        rx.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        assert_eq!(rx.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        send_with_fd(tx.as_raw_fd(), b"A", tx.as_raw_fd());
        (&tx).write_all(b"B").unwrap();
        // Let the worker's poller see the edges of both sends.
        weft::sleep(Duration::from_millis(50));
        rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let first = rx.read(&mut buf).map(|n| buf[..n].to_vec()).map_err(|e| e.kind());
        assert_eq!(first, Ok(b"A".to_vec()));
        rx.read(&mut buf).map(|n| buf[..n].to_vec()).map_err(|e| (e.kind(), e.to_string()))
    });
    assert_eq!(second, Ok(b"B".to_vec()), "the bytes queued behind the passed fds were not read");
}

/// Fills `stream`'s send buffer and keeps writing: the write that finds it
/// full blocks (std) or waits (weft).
const BIG: usize = 16 << 20;

/// A plain thread blocked in a Unix stream write (send buffer full) gets
/// `EPIPE` as soon as the peer shuts its read half: the kernel wakes the
/// writer and `sock_alloc_send_pskb` sees SEND_SHUTDOWN. But `unix_poll`
/// reports neither POLLOUT nor POLLHUP for that state, so weft's
/// `poll(POLLOUT)` sleeps on, and the write waits until its timeout (or
/// for ever without one) instead of failing with `BrokenPipe`.
#[test]
fn unix_write_blocked_on_a_thread_fails_with_broken_pipe_when_the_peer_shuts_its_read_half() {
    // std, for reference.
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let writer = std::thread::spawn(move || (&a).write_all(&vec![0u8; BIG]).map_err(|e| e.kind()));
    std::thread::sleep(Duration::from_millis(200));
    b.shutdown(Shutdown::Read).unwrap();
    assert_eq!(bounded("std writer", move || writer.join().unwrap()), Err(ErrorKind::BrokenPipe));

    let (a, b) = UnixStream::pair().unwrap();
    a.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let writer = std::thread::spawn(move || (&a).write_all(&vec![0u8; BIG]).map_err(|e| (e.kind(), e.to_string())));
    std::thread::sleep(Duration::from_millis(200));
    b.shutdown(Shutdown::Read).unwrap();
    let got = bounded("weft writer on a thread", move || writer.join().unwrap());
    assert_eq!(got.map_err(|e| e.0), Err(ErrorKind::BrokenPipe), "weft's write did not end with the peer's shutdown");
}

/// The same in a coroutine, with the write half shut by another coroutine
/// through a clone (how a server ends a writer stuck on a slow client):
/// std's blocked write fails with `BrokenPipe` at once; weft's coroutine
/// stays parked (no epoll event reports the shutdown) until its write
/// timeout.
#[test]
fn unix_write_parked_in_a_coroutine_fails_with_broken_pipe_when_its_write_half_is_shut() {
    // std, for reference.
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let a2 = a.try_clone().unwrap();
    let writer = std::thread::spawn(move || (&a).write_all(&vec![0u8; BIG]).map_err(|e| e.kind()));
    std::thread::sleep(Duration::from_millis(200));
    a2.shutdown(Shutdown::Write).unwrap();
    assert_eq!(bounded("std writer", move || writer.join().unwrap()), Err(ErrorKind::BrokenPipe));

    let got = in_coroutine("weft writer in a coroutine", || {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let a2 = a.try_clone().unwrap();
        let writer = weft::spawn(move || (&a).write_all(&vec![0u8; BIG]).map_err(|e| (e.kind(), e.to_string())));
        weft::sleep(Duration::from_millis(200));
        a2.shutdown(Shutdown::Write).unwrap();
        let got = writer.join().expect("the writer");
        drop(b);
        got
    });
    assert_eq!(got.map_err(|e| e.0), Err(ErrorKind::BrokenPipe), "weft's write did not end with the shutdown");
}

/// Fills `stream`'s send buffer (the peer reads nothing) in non-blocking
/// mode, then puts it back in blocking mode.
fn fill(stream: &UnixStream) {
    stream.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut sent = 0usize;
    loop {
        match (&*stream).write(&chunk) {
            Ok(n) => sent += n,
            Err(err) if err.kind() == ErrorKind::WouldBlock => break,
            Err(err) => panic!("filling the send buffer: {err}"),
        }
        assert!(sent < 256 << 20, "wrote {sent} bytes without WouldBlock");
    }
    stream.set_nonblocking(false).unwrap();
}

/// The other side of the fix above (a waiting Unix write retries in
/// slices): the write timeout still ends the wait, never early, with
/// std's kind and weft's message; non-blocking mode still fails at once;
/// and a write whose peer makes room still goes on, on a thread and in a
/// coroutine.
#[test]
fn unix_write_waiting_in_slices_keeps_its_timeout_and_wakes_when_room_is_made() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    fn check() {
        let (a, b) = UnixStream::pair().unwrap();
        fill(&a);
        a.set_nonblocking(true).unwrap();
        let start = std::time::Instant::now();
        assert_eq!((&a).write(b"x").unwrap_err().kind(), ErrorKind::WouldBlock);
        assert!(start.elapsed() < Duration::from_secs(1), "a non-blocking write waited {:?}", start.elapsed());
        a.set_nonblocking(false).unwrap();

        a.set_write_timeout(Some(TIMEOUT)).unwrap();
        let start = std::time::Instant::now();
        let err = (&a).write(b"x").unwrap_err();
        let elapsed = start.elapsed();
        assert_eq!(
            (err.kind(), err.to_string().as_str()),
            (ErrorKind::WouldBlock, "write timed out (set_write_timeout)")
        );
        assert!(elapsed >= TIMEOUT, "the write timed out after {elapsed:?}, before {TIMEOUT:?}");
        assert!(elapsed < TIMEOUT + Duration::from_secs(2), "the write timed out after {elapsed:?}");

        // A reader that drains the peer after a while lets the write go on.
        a.set_write_timeout(None).unwrap();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut b = b;
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while let Ok(n) = b.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got += n;
            }
            got
        });
        (&a).write_all(&vec![1u8; 1 << 20]).unwrap();
        drop(a);
        assert!(reader.join().unwrap() >= 1 << 20);
    }
    bounded("on a thread", check);
    in_coroutine("in a coroutine", check);
}

/// std's `UnixStream::connect("")` passes the kernel an address of the
/// family alone, which it rejects (`EINVAL`, `InvalidInput`). weft's
/// `connect_unix` always adds a terminating NUL, so "" becomes the abstract
/// address with an empty name and the error is a different one
/// (`ConnectionRefused`).
#[test]
fn unix_connect_to_an_empty_path_fails_like_std() {
    let std_kind = std::os::unix::net::UnixStream::connect("").unwrap_err().kind();
    assert_eq!(std_kind, ErrorKind::InvalidInput);
    let weft =
        bounded("weft connect(\"\")", || UnixStream::connect("").map(drop).map_err(|e| (e.kind(), e.to_string())));
    assert_eq!(weft.map_err(|e| e.0), Err(std_kind));
}

fn cloexec(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on a descriptor we hold; no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert!(flags >= 0, "F_GETFD: {}", std::io::Error::last_os_error());
    flags & libc::FD_CLOEXEC != 0
}

/// Coverage, not a bug (passes today): edges no other test reaches. A
/// connect path of the longest length a `sockaddr_un` holds (107 bytes)
/// works and one byte more or a NUL byte is `InvalidInput`, as std; every
/// descriptor weft makes (connect, accept, pair, try_clone, UDP) is
/// close-on-exec; the local end of a connected stream is unnamed and its
/// peer named; `bind` over an existing path is `AddrInUse`; zero timeouts
/// are refused on Unix and UDP sockets; UDP delivers a zero-length datagram,
/// truncates to the buffer (`peek_from` too, leaving it queued), and a
/// connected socket gets the refusal of an earlier send from its next call
/// and ignores datagrams from other senders.
#[test]
fn unix_and_udp_edges_behave_like_std() {
    in_coroutine("edges", || {
        let dir = std::path::PathBuf::from(format!("/tmp/wr{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = dir.as_os_str().len() + 1;
        let longest = dir.join("s".repeat(107 - prefix));
        assert_eq!(longest.as_os_str().len(), 107);
        let listener = weft::net::UnixListener::bind(&longest).unwrap();
        assert_eq!(
            weft::net::UnixListener::bind(&longest).unwrap_err().kind(),
            std::os::unix::net::UnixListener::bind(&longest).unwrap_err().kind()
        );
        let client = UnixStream::connect(&longest).unwrap();
        let (server, from) = listener.accept().unwrap();
        assert!(from.is_unnamed() && client.local_addr().unwrap().is_unnamed());
        assert_eq!(client.peer_addr().unwrap().as_pathname(), Some(longest.as_path()));
        let too_long = dir.join("s".repeat(108 - prefix));
        assert_eq!(UnixStream::connect(&too_long).unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(UnixStream::connect("/tmp/a\0b").unwrap_err().kind(), ErrorKind::InvalidInput);
        let (p, q) = UnixStream::pair().unwrap();
        let clone = client.try_clone().unwrap();
        let udp = weft::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for fd in [listener.as_raw_fd(), client.as_raw_fd(), server.as_raw_fd(), p.as_raw_fd(), q.as_raw_fd()] {
            assert!(cloexec(fd), "descriptor {fd} is not close-on-exec");
        }
        assert!(cloexec(clone.as_raw_fd()) && cloexec(udp.as_raw_fd()));
        assert_eq!(p.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(udp.set_write_timeout(Some(Duration::ZERO)).unwrap_err().kind(), ErrorKind::InvalidInput);

        let other = weft::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = udp.local_addr().unwrap();
        other.send_to(b"", to).unwrap();
        other.send_to(b"truncated", to).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(udp.recv_from(&mut buf).unwrap(), (0, other.local_addr().unwrap()));
        assert_eq!(udp.peek_from(&mut buf).unwrap().0, 4);
        assert_eq!(udp.recv_from(&mut buf).unwrap().0, 4);
        assert_eq!(&buf, b"trun");

        // A connected socket: a datagram to a closed port is refused on the
        // next call; datagrams from anyone but the peer are not delivered.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        udp.connect(closed_addr).unwrap();
        udp.send(b"x").unwrap();
        weft::sleep(Duration::from_millis(50));
        udp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        assert_eq!(udp.recv(&mut buf).unwrap_err().kind(), ErrorKind::ConnectionRefused);
        other.send_to(b"stranger", to).unwrap();
        assert_eq!(udp.recv(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        let _ = std::fs::remove_dir_all(&dir);
    });
}
