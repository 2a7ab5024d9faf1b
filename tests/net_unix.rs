//! Unix domain stream sockets: a UnixListener echo server of coroutines
//! serving clients that are coroutines and OS threads, and UnixStream::pair
//! between a coroutine and a thread and between two coroutines.

mod common;

use common::net::{Pattern, TempDir};
use std::io::{Read, Write};
use std::net::Shutdown;
use weft::net::{UnixListener, UnixStream};

/// Sends `bytes` of pattern `seed` (from a second handle, so that writing
/// and reading overlap), half-closes, and checks the echo to EOF.
fn echo_client(stream: UnixStream, seed: u64, bytes: usize) {
    let mut writer_half = stream.try_clone().unwrap();
    let write = move || {
        let mut pattern = Pattern::new(seed);
        let mut buf = vec![0u8; 10_000];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len());
            pattern.fill(&mut buf[..n]);
            writer_half.write_all(&buf[..n]).unwrap();
            left -= n;
        }
        writer_half.shutdown(Shutdown::Write).unwrap();
    };
    // In a coroutine the writer is a second coroutine, on a thread a thread.
    let writer: Box<dyn FnOnce()> = if weft::try_current().is_some() {
        let handle = weft::spawn(write);
        Box::new(move || handle.join().unwrap())
    } else {
        let handle = std::thread::spawn(write);
        Box::new(move || handle.join().unwrap())
    };
    let mut expected = Pattern::new(seed);
    let mut buf = vec![0u8; 7_000];
    let mut reader = &stream;
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        expected.check(&buf[..n], "the Unix echo");
    }
    writer();
    assert_eq!(expected.position(), bytes as u64);
}

#[test]
fn unix_echo_between_coroutines_and_from_threads() {
    const COROUTINE_CLIENTS: usize = 50;
    const THREAD_CLIENTS: usize = 8;
    const BYTES: usize = 256 * 1024;
    let dir = TempDir::new("echo");
    let path = dir.0.join("echo.sock");
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let listener = UnixListener::bind(&path).unwrap();
    let server = rt.spawn(move || {
        let mut sessions = Vec::new();
        for stream in listener.incoming().take(COROUTINE_CLIENTS + THREAD_CLIENTS) {
            let mut stream = stream.unwrap();
            sessions.push(weft::spawn(move || {
                let mut buf = vec![0u8; 8192];
                let mut echoed = 0;
                loop {
                    let n = stream.read(&mut buf).unwrap();
                    if n == 0 {
                        return echoed;
                    }
                    stream.write_all(&buf[..n]).unwrap();
                    echoed += n;
                }
            }));
        }
        sessions.into_iter().map(|s| s.join().unwrap()).sum::<usize>()
    });
    let coroutines: Vec<_> = (0..COROUTINE_CLIENTS)
        .map(|c| {
            let path = path.clone();
            rt.spawn(move || echo_client(UnixStream::connect(&path).unwrap(), c as u64, BYTES))
        })
        .collect();
    let threads: Vec<_> = (0..THREAD_CLIENTS)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || echo_client(UnixStream::connect(&path).unwrap(), 1000 + t as u64, BYTES))
        })
        .collect();
    for c in coroutines {
        c.join().unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.join().unwrap(), (COROUTINE_CLIENTS + THREAD_CLIENTS) * BYTES);
}

#[test]
fn unix_pair_between_a_coroutine_and_a_thread_and_two_coroutines() {
    const BYTES: usize = 1 << 20;
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    // A coroutine echoes what a thread sends through the pair.
    let (near, far) = UnixStream::pair().unwrap();
    let echo = rt.spawn(move || {
        let mut far = far;
        let mut buf = [0u8; 4096];
        loop {
            let n = far.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            far.write_all(&buf[..n]).unwrap();
        }
    });
    std::thread::spawn(move || echo_client(near, 7, BYTES)).join().unwrap();
    echo.join().unwrap();

    // Two coroutines: one writes, the other reads and checks.
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let writer = rt.spawn(move || {
        let mut pattern = Pattern::new(8);
        let mut buf = vec![0u8; 50_000];
        while pattern.position() < BYTES as u64 {
            let n = (BYTES - pattern.position() as usize).min(buf.len());
            pattern.fill(&mut buf[..n]);
            a.write_all(&buf[..n]).unwrap();
        }
    });
    let reader = rt.spawn(move || {
        let mut all = Vec::new();
        b.read_to_end(&mut all).unwrap(); // EOF once the writer drops `a`
        Pattern::new(8).check(&all, "the pair");
        all.len()
    });
    writer.join().unwrap();
    assert_eq!(reader.join().unwrap(), BYTES);
}

#[test]
fn unix_connect_to_a_missing_path_fails() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("nobody.sock");
    let rt = weft::Runtime::builder().workers(1).build().unwrap();
    let p = path.clone();
    let err = rt.block_on(move || UnixStream::connect(&p).unwrap_err());
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(UnixStream::connect(&path).unwrap_err().kind(), std::io::ErrorKind::NotFound);
}

/// `UnixListener::set_accept_timeout`, as on `TcpListener`: an accept with
/// nobody connecting fails with `TimedOut`, never early, from a coroutine
/// and from a thread; a connection within the timeout is accepted; a clone
/// starts with the timeout; zero is refused.
#[test]
fn unix_accept_timeout_is_timed_out_never_early() {
    use std::io::ErrorKind;
    use std::time::{Duration, Instant};
    let dir = TempDir::new("accept-timeout");
    let listener = UnixListener::bind(dir.0.join("listener")).expect("bind");
    assert_eq!(listener.accept_timeout().unwrap(), None);
    assert_eq!(listener.set_accept_timeout(Some(Duration::ZERO)).unwrap_err().kind(), ErrorKind::InvalidInput);
    let timeout = Duration::from_millis(30);
    listener.set_accept_timeout(Some(timeout)).unwrap();
    assert_eq!(listener.accept_timeout().unwrap(), Some(timeout));
    let clone = listener.try_clone().expect("a clone");
    assert_eq!(clone.accept_timeout().unwrap(), Some(timeout), "the clone starts with the timeout");

    let started = Instant::now();
    let error = listener.accept().expect_err("nobody connects (thread)");
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    assert!(started.elapsed() >= timeout, "a thread's accept timed out early: {:?}", started.elapsed());

    let rt = weft::Runtime::builder().workers(1).build().expect("a runtime");
    let listener = std::sync::Arc::new(listener);
    let in_coroutine = {
        let listener = std::sync::Arc::clone(&listener);
        rt.spawn(move || {
            let started = Instant::now();
            let error = listener.accept().expect_err("nobody connects (coroutine)");
            (error.kind(), started.elapsed())
        })
    };
    let (kind, waited) = in_coroutine.join().expect("the coroutine");
    assert_eq!(kind, ErrorKind::TimedOut);
    assert!(waited >= timeout, "a coroutine's accept timed out early: {waited:?}");

    listener.set_accept_timeout(Some(Duration::from_secs(30))).unwrap();
    let path = dir.0.join("listener");
    let accepting = {
        let listener = std::sync::Arc::clone(&listener);
        rt.spawn(move || {
            listener.accept().map(|(mut stream, _)| {
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).map(|()| byte[0])
            })
        })
    };
    let mut client = UnixStream::connect(&path).expect("connect");
    client.write_all(&[7]).unwrap();
    assert_eq!(accepting.join().unwrap().expect("accepted within the timeout").expect("a byte"), 7);
}
