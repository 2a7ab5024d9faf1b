//! Edges found in a review of `weft::net` and the poller: vectored writes to
//! a gone peer (an error, never SIGPIPE, as plain writes), and a Unix
//! connect that would wait for a full backlog while its coroutine is being
//! unwound (it fails at once, as every other socket wait does then). And
//! two coroutines on different workers reading one stream at once, through
//! one handle or through a `try_clone`: each byte reaches one of them, and
//! the end of the stream wakes both. And `into_std` after a coroutine
//! waited on the socket: blocking again, timeouts kept, out of the poller.

mod common;

use common::net::{TempDir, on_two_workers, set_backlog, set_linger_zero};
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use weft::net::{TcpListener, TcpStream, UnixStream};

/// Serialises the tests that run a child process (see `common`).
static CHILD: Mutex<()> = Mutex::new(());

/// Waits (at most 30 s) until `flag` is set.
fn wait_for(flag: &AtomicBool, what: &str) {
    let started = Instant::now();
    while !flag.load(Ordering::Acquire) {
        assert!(started.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A vectored write (`write_vectored`, what `write_all_vectored` and many
/// HTTP libraries call) to a TCP peer that reset the connection, and to a
/// Unix peer that is gone, fails with an error, in a coroutine and on a
/// thread, with SIGPIPE at its default action (a child process): as a
/// plain `write` does (a `send` with MSG_NOSIGNAL), never by killing the
/// process with SIGPIPE, which a `writev` without the flag does.
#[test]
fn vectored_writes_to_a_gone_peer_are_errors_not_signals() {
    let Some(stderr) = common::in_child_process(
        &CHILD,
        "vectored_writes_to_a_gone_peer_are_errors_not_signals",
        &[],
        Duration::from_secs(30),
        || {
            // SAFETY: SIG_DFL is a valid disposition for SIGPIPE.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            let rt = weft::Runtime::builder().workers(1).build().unwrap();
            for on_thread in [false, true] {
                // TCP: the peer closes with a RST (linger 0) once it has
                // read what came; every later write is an error.
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                let (mut server, _) = listener.accept().unwrap();
                set_linger_zero(&server);
                client.write_all(b"x").unwrap();
                let mut byte = [0u8; 1];
                server.read_exact(&mut byte).unwrap();
                drop(server); // RST
                let (mut unix, peer) = UnixStream::pair().unwrap();
                drop(peer);
                let write = move || {
                    let bufs = [IoSlice::new(b"hello"), IoSlice::new(b" world")];
                    // The first write after a RST may still be taken (the
                    // RST not yet in); the kernel reports the reset by the
                    // second at the latest, then EPIPE for good.
                    let mut tcp_err = None;
                    for _ in 0..100 {
                        match client.write_vectored(&bufs) {
                            Ok(n) => {
                                assert!(n > 0, "a vectored write of 11 bytes took none");
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            Err(err) => {
                                tcp_err = Some(err);
                                break;
                            }
                        }
                    }
                    let tcp_err = tcp_err.expect("vectored writes to a reset connection kept succeeding");
                    assert!(
                        matches!(tcp_err.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
                        "on a thread: {on_thread}: {tcp_err:?}"
                    );
                    let err = client.write_vectored(&bufs).expect_err("a vectored write after the reset succeeded");
                    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "on a thread: {on_thread}: {err:?}");
                    let err = unix.write_vectored(&bufs).expect_err("a vectored write to a gone peer succeeded");
                    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "on a thread: {on_thread}: {err:?}");
                };
                if on_thread {
                    std::thread::spawn(write).join().unwrap();
                } else {
                    rt.spawn(write).join().unwrap();
                }
            }
        },
    ) else {
        return; // the child's run
    };
    assert!(!stderr.contains("panicked"), "the child reported a panic:\n{stderr}");
}

/// Records the outcome of a Unix connect made by its drop (a destructor
/// that runs while its coroutine is unwound).
struct ConnectOnDrop {
    path: std::path::PathBuf,
    outcome: Arc<Mutex<Option<std::io::Result<()>>>>,
}

impl Drop for ConnectOnDrop {
    fn drop(&mut self) {
        let result = UnixStream::connect(&self.path).map(drop);
        *self.outcome.lock().unwrap() = Some(result);
    }
}

/// Whether a non-blocking connect to `path` fails with EAGAIN now: the
/// listener's backlog is full (Linux fails such a connect rather than queue it).
fn backlog_is_full(path: &std::path::Path) -> bool {
    // SAFETY: no pointers; a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: sockaddr_un is plain data; all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `addr` is a valid sockaddr_un that outlives the call, with its size.
    let rc = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    rc != 0 && err.kind() == ErrorKind::WouldBlock
}

/// A Unix connect to a listener whose backlog is full retries until the
/// listener makes room (as std's blocking connect waits). While its
/// coroutine is being unwound for good (cancelled, or unwound by its
/// runtime's drop), it must not: like every other socket operation that
/// would wait then (the `weft::net` docs, "Timeouts"), it fails at once
/// with `TimedOut`, instead of holding the cancel or the runtime's drop up
/// until the listener accepts, here never.
#[test]
fn a_unix_connect_to_a_full_backlog_does_not_hold_up_a_cancel_or_a_runtime_drop() {
    common::watched(Duration::from_secs(60), || {
        let dir = TempDir::new("review-full-backlog");
        let path = dir.0.join("full.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        set_backlog(&listener, 0);
        // Backlog 0 queues one connection; nobody accepts it.
        let _queued = std::os::unix::net::UnixStream::connect(&path).unwrap();
        assert!(backlog_is_full(&path), "the listener's backlog did not fill up");
        for by_runtime_drop in [false, true] {
            let rt = weft::Runtime::builder().workers(1).build().unwrap();
            let outcome = Arc::new(Mutex::new(None));
            let started = Arc::new(AtomicBool::new(false));
            let handle = rt.spawn({
                let guard = ConnectOnDrop { path: path.clone(), outcome: Arc::clone(&outcome) };
                let started = Arc::clone(&started);
                move || {
                    let _guard = guard;
                    started.store(true, Ordering::Release);
                    weft::sleep(Duration::from_secs(3600));
                }
            });
            wait_for(&started, "the coroutine to start");
            if by_runtime_drop {
                drop(rt);
                drop(handle);
            } else {
                handle.cancel();
                assert!(handle.join().unwrap_err().is_cancelled());
                drop(rt);
            }
            let result = outcome.lock().unwrap().take().expect("the guard's drop ran");
            let err = result.expect_err("a connect to a full backlog succeeded");
            assert_eq!(err.kind(), ErrorKind::TimedOut, "by the runtime's drop: {by_runtime_drop}: {err:?}");
        }
    });
}

/// Reads one byte at a time until the end of the stream, counting each
/// into `total`; returns how many it read.
fn count_bytes(mut stream: &TcpStream, total: &AtomicUsize) -> usize {
    let mut mine = 0;
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte).expect("a read of the shared stream") {
            0 => return mine,
            _ => {
                mine += 1;
                total.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

/// Two coroutines on different workers read one stream at once (through
/// one shared handle, and through a handle and its `try_clone`), each
/// registered with its own worker's epoll. A thread writes one byte at a
/// time, each once the previous one was read (so that both readers keep
/// parking), then shuts its half: every byte reaches exactly one reader,
/// and the end of the stream wakes both, the one whose worker never saw
/// the last byte's edge included.
#[test]
fn two_readers_on_different_workers_share_a_stream_and_both_see_its_end() {
    const BYTES: usize = 200;
    common::watched(Duration::from_secs(60), || {
        let rt = weft::Runtime::builder().workers(2).stall_threshold(None).build().unwrap();
        for cloned in [false, true] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut writer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let stream = Arc::new(TcpStream::from_std(listener.accept().unwrap().0).unwrap());
            let other = if cloned { Arc::new(stream.try_clone().unwrap()) } else { Arc::clone(&stream) };
            let total = Arc::new(AtomicUsize::new(0));
            let (first, second) = on_two_workers(
                &rt,
                {
                    let total = Arc::clone(&total);
                    move || count_bytes(&stream, &total)
                },
                {
                    let total = Arc::clone(&total);
                    move || count_bytes(&other, &total)
                },
            );
            let started = Instant::now();
            for sent in 1..=BYTES {
                writer.write_all(b"x").unwrap();
                while total.load(Ordering::Acquire) < sent {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "byte {sent} was never read (cloned: {cloned})"
                    );
                    std::thread::yield_now();
                }
            }
            writer.shutdown(std::net::Shutdown::Write).unwrap();
            let (a, on_a) = first.join().unwrap();
            let (b, on_b) = second.join().unwrap();
            assert_ne!(on_a, on_b, "the readers ran on the same worker");
            assert_eq!(a + b, BYTES, "bytes read (cloned: {cloned}): {a} + {b}");
        }
    });
}

/// Whether `fd`'s open file is in non-blocking mode.
fn is_nonblocking(fd: &impl std::os::fd::AsRawFd) -> bool {
    // SAFETY: F_GETFL reads the file's flags; no memory is passed.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    assert!(flags >= 0, "F_GETFL: {}", std::io::Error::last_os_error());
    flags & libc::O_NONBLOCK != 0
}

/// `into_std` of sockets that a coroutine has waited on (registered with
/// its worker's epoll) hands back what a std user expects: a blocking
/// socket (the docs: "back in blocking mode unless this one was set
/// non-blocking") with the timeouts set through weft, whose read blocks
/// (until its timeout, then `WouldBlock`) and then reads what comes later.
#[test]
fn into_std_after_a_coroutine_waited_gives_a_blocking_socket_with_its_timeouts() {
    common::watched(Duration::from_secs(60), || {
        let rt = weft::Runtime::builder().workers(1).build().unwrap();
        let (tcp, tcp_peer, listener, udp) = rt
            .spawn(|| {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let connector = weft::spawn(move || TcpStream::connect(addr).unwrap());
                let (stream, _) = listener.accept().unwrap(); // may wait
                let mut peer = connector.join().unwrap();
                let reader = {
                    let stream = Arc::new(stream);
                    let reading = Arc::clone(&stream);
                    let read = weft::spawn(move || {
                        let mut byte = [0u8; 1];
                        (&*reading).read_exact(&mut byte).unwrap(); // waits
                    });
                    weft::sleep(Duration::from_millis(1));
                    peer.write_all(b"1").unwrap();
                    read.join().unwrap();
                    Arc::into_inner(stream).unwrap()
                };
                reader.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                let udp = weft::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                let mut buf = [0u8; 4];
                // Waits in the poller for its timeout.
                assert_eq!(udp.recv(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
                (reader.into_std().unwrap(), peer, listener.into_std().unwrap(), udp.into_std().unwrap())
            })
            .join()
            .unwrap();
        for (what, nonblocking) in
            [("tcp", is_nonblocking(&tcp)), ("listener", is_nonblocking(&listener)), ("udp", is_nonblocking(&udp))]
        {
            assert!(!nonblocking, "{what}: into_std gave a non-blocking socket");
        }
        assert_eq!(tcp.read_timeout().unwrap().map(|t| t >= Duration::from_millis(50)), Some(true));
        let mut tcp = tcp;
        let mut byte = [0u8; 1];
        let started = Instant::now();
        let err = tcp.read(&mut byte).expect_err("a read with nothing sent succeeded");
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err:?}");
        // (The kernel counts SO_RCVTIMEO in jiffies and may end up to one
        // early; a non-blocking socket would answer in microseconds.)
        assert!(started.elapsed() >= Duration::from_millis(25), "the std read did not block: {:?}", started.elapsed());
        let mut peer = tcp_peer;
        peer.write_all(b"2").unwrap();
        tcp.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"2");
        let started = Instant::now();
        let err = udp.recv(&mut byte).expect_err("a receive with nothing sent succeeded");
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(25), "the std receive did not block");
        drop(rt);
    });
}
