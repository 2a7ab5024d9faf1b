//! The edges of a TCP stream: writes that the kernel takes only in part
//! (small socket buffers), a peer that resets the connection while we
//! write or read, half-close, refused connects, and `connect_timeout`
//! against a listener that never answers (its backlog is full).

mod common;

use common::net::{FullBacklog, Pattern, set_linger_zero, set_small_buffers};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use weft::net::{TcpListener, TcpStream};

/// Serialises the tests that run a child process (see `common`).
static CHILD: Mutex<()> = Mutex::new(());

const TRANSFER: usize = 4 << 20;
/// SO_SNDBUF/SO_RCVBUF asked for (the kernel doubles it: 8 KiB).
const SMALL_BUFFER: libc::c_int = 4096;

fn runtime(workers: usize) -> weft::Runtime {
    weft::Runtime::builder().workers(workers).build().unwrap()
}

/// Writes `TRANSFER` bytes of pattern `seed` with plain `write` calls of up
/// to 256 KiB; returns how many of them the kernel took only in part.
fn write_in_parts(mut stream: &TcpStream, seed: u64) -> usize {
    let mut data = vec![0u8; TRANSFER];
    Pattern::new(seed).fill(&mut data);
    let mut partial = 0;
    let mut at = 0;
    while at < data.len() {
        let end = (at + 256 * 1024).min(data.len());
        let n = stream.write(&data[at..end]).expect("write");
        assert!(n > 0 && n <= end - at, "write returned {n} of {}", end - at);
        if n < end - at {
            partial += 1;
        }
        at += n;
    }
    stream.shutdown(Shutdown::Write).expect("half-close after the transfer");
    partial
}

/// Reads to EOF in reads of at most 1000 bytes, checking pattern `seed`.
fn read_and_check(mut stream: &TcpStream, seed: u64) -> u64 {
    let mut expected = Pattern::new(seed);
    let mut buf = [0u8; 1000];
    loop {
        let n = stream.read(&mut buf).expect("read");
        if n == 0 {
            return expected.position();
        }
        expected.check(&buf[..n], "the 4 MiB transfer");
    }
}

#[test]
fn partial_writes_with_small_buffers_transfer_exactly() {
    let rt = runtime(2);
    for writer_on_thread in [false, true] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // Accepted sockets inherit the listener's buffer sizes.
        set_small_buffers(&listener, SMALL_BUFFER);
        let addr = listener.local_addr().unwrap();
        let reader = rt.spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            read_and_check(&stream, 7)
        });
        let write = move || {
            let stream = TcpStream::connect(addr).unwrap();
            set_small_buffers(&stream, SMALL_BUFFER);
            write_in_parts(&stream, 7)
        };
        let partial =
            if writer_on_thread { std::thread::spawn(write).join().unwrap() } else { rt.spawn(write).join().unwrap() };
        assert_eq!(reader.join().unwrap(), TRANSFER as u64, "bytes received (writer on a thread: {writer_on_thread})");
        // 8 KiB buffers against 256 KiB writes: the kernel cannot take them whole.
        assert!(partial > 0, "no write was partial (writer on a thread: {writer_on_thread})");
    }
}

/// A peer that closes with SO_LINGER {on, 0} resets the connection. The
/// writer, parked on a full send buffer, must get ConnectionReset or
/// BrokenPipe — not die of SIGPIPE: this runs in a child process with
/// SIGPIPE at its default action (Rust programs ignore it from `main`, which
/// would hide a `write` without MSG_NOSIGNAL). A reader parked on the
/// connection gets ConnectionReset or EOF.
#[test]
fn peer_reset_mid_write_and_mid_read_is_an_error_not_a_signal() {
    let Some(stderr) = common::in_child_process(
        &CHILD,
        "peer_reset_mid_write_and_mid_read_is_an_error_not_a_signal",
        &[],
        Duration::from_secs(30),
        || {
            // SAFETY: SIG_DFL is a valid disposition for SIGPIPE.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            let rt = runtime(2);
            for writer_on_thread in [false, true] {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let resetter = rt.spawn(move || {
                    let (mut stream, _) = listener.accept().unwrap();
                    set_linger_zero(&stream);
                    let mut some = [0u8; 4096];
                    stream.read_exact(&mut some).unwrap();
                    // Let the writer fill the buffers and park.
                    weft::sleep(Duration::from_millis(50));
                    drop(stream); // RST
                });
                let write = move || {
                    let mut stream = TcpStream::connect(addr).unwrap();
                    set_small_buffers(&stream, SMALL_BUFFER);
                    let chunk = vec![0x5a; 64 * 1024];
                    let err = loop {
                        if let Err(err) = stream.write_all(&chunk) {
                            break err;
                        }
                    };
                    assert!(
                        matches!(err.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
                        "a write to a reset connection failed with {err:?}"
                    );
                    // The error sticks: a second write fails too.
                    assert!(stream.write(&chunk).is_err(), "a write after the reset succeeded");
                };
                if writer_on_thread {
                    std::thread::spawn(write).join().unwrap();
                } else {
                    rt.spawn(write).join().unwrap();
                }
                resetter.join().unwrap();
            }
            for reader_on_thread in [false, true] {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let resetter = rt.spawn(move || {
                    let (stream, _) = listener.accept().unwrap();
                    set_linger_zero(&stream);
                    weft::sleep(Duration::from_millis(50)); // the reader parks
                    drop(stream);
                });
                let read = move || {
                    let mut stream = TcpStream::connect(addr).unwrap();
                    match stream.read(&mut [0u8; 64]) {
                        Ok(0) => {}
                        Err(err) if err.kind() == ErrorKind::ConnectionReset => {}
                        other => panic!("a read of a reset connection returned {other:?}"),
                    }
                };
                if reader_on_thread {
                    std::thread::spawn(read).join().unwrap();
                } else {
                    rt.spawn(read).join().unwrap();
                }
                resetter.join().unwrap();
            }
        },
    ) else {
        return; // the child's run
    };
    assert!(!stderr.contains("panicked"), "the child reported a panic:\n{stderr}");
}

#[test]
fn half_close_then_the_other_side_reads_to_eof_and_still_writes_back() {
    let rt = runtime(2);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // One connection from a client coroutine, one from a client thread.
    let server = rt.spawn(move || {
        for _ in 0..2 {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            stream.read_to_end(&mut request).unwrap(); // ends at the client's FIN
            assert_eq!(request, b"the whole request");
            // Our half is still open: answer, in several writes.
            for part in [&b"the "[..], b"whole ", b"answer"] {
                stream.write_all(part).unwrap();
                weft::sleep(Duration::from_millis(5));
            }
        }
    });
    let client = move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"the whole request").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let err = stream.write(b"more").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe, "a write after shutdown(Write): {err:?}");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "the whole answer");
    };
    rt.spawn(client).join().unwrap();
    std::thread::spawn(client).join().unwrap();
    server.join().unwrap();
}

/// A loopback port nobody listens on (bound, then closed).
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    let rt = runtime(1);
    let addr = closed_port();
    let check = move || {
        let err = TcpStream::connect(addr).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "connect: {err:?}");
        let err = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "connect_timeout: {err:?}");
    };
    rt.spawn(check).join().unwrap();
    std::thread::spawn(check).join().unwrap();
}

/// `connect_timeout` to a listener whose SYNs go unanswered fails with
/// TimedOut, never before the timeout; meanwhile the worker runs other
/// coroutines (the connect parks, it does not block the thread).
#[test]
fn connect_timeout_to_a_full_backlog_times_out_never_early() {
    let Some(full) = FullBacklog::new() else { return };
    let addr = full.addr;
    const TIMEOUT: Duration = Duration::from_millis(300);
    let rt = runtime(1);
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let connect = {
        let ticks = std::sync::Arc::clone(&ticks);
        move || {
            let before = ticks.load(std::sync::atomic::Ordering::Relaxed);
            let start = Instant::now();
            let result = TcpStream::connect_timeout(&addr, TIMEOUT);
            // Ticks the (only) worker ran while this connect waited.
            (result.map(drop), start.elapsed(), ticks.load(std::sync::atomic::Ordering::Relaxed) - before)
        }
    };
    let ticker = {
        let ticks = std::sync::Arc::clone(&ticks);
        rt.spawn(move || {
            for _ in 0..10 {
                weft::sleep(Duration::from_millis(10));
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    for (on_thread, (result, elapsed, ticked)) in
        [(false, rt.spawn(connect.clone()).join().unwrap()), (true, std::thread::spawn(connect).join().unwrap())]
    {
        match result {
            Err(err) => {
                // The ticker sleeps 10 ms a tick on the same single worker: a
                // connect that parks lets it tick during its 300 ms; one that
                // blocks the worker lets it tick not once.
                assert!(on_thread || ticked > 0, "the worker ran no tick while the connect waited {elapsed:?}");
                assert_eq!(err.kind(), ErrorKind::TimedOut, "on a thread: {on_thread}: {err:?}");
                assert!(elapsed >= TIMEOUT, "connect_timeout returned after {elapsed:?}, before its {TIMEOUT:?}");
                assert!(elapsed < TIMEOUT + Duration::from_secs(5), "connect_timeout took {elapsed:?}");
            }
            Ok(()) => {
                eprintln!("note: the kernel completed a connect to a full backlog after {elapsed:?}; skipped");
                return;
            }
        }
    }
    ticker.join().unwrap();
    assert_eq!(
        ticks.load(std::sync::atomic::Ordering::Relaxed),
        10,
        "the worker did not run the ticker while a connect waited"
    );
    drop(full);
}

/// A Unix stream written after its peer is gone fails with BrokenPipe, in a
/// coroutine and on a thread, with SIGPIPE at its default action (a child
/// process): the write is a `send` with MSG_NOSIGNAL, as std's is (a
/// write without the flag would kill the child).
#[test]
fn unix_write_to_a_gone_peer_is_an_error_not_a_signal() {
    let Some(stderr) = common::in_child_process(
        &CHILD,
        "unix_write_to_a_gone_peer_is_an_error_not_a_signal",
        &[],
        Duration::from_secs(30),
        || {
            // SAFETY: SIG_DFL is a valid disposition for SIGPIPE.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            let rt = runtime(1);
            for on_thread in [false, true] {
                let (mut a, b) = weft::net::UnixStream::pair().unwrap();
                drop(b);
                let write = move || {
                    let err = a.write(b"hello").expect_err("a write to a gone peer succeeded");
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
