//! Unix socket addresses as std's `SocketAddr` (`bind_addr`, `connect_addr`,
//! `send_to_addr`), in the abstract namespace (Linux: no file) and with a
//! path: streams between coroutines and OS threads, datagrams, and the
//! edges (a name nobody listens on, one already bound, an unnamed address,
//! the longest name an address holds).

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use weft::net::{UnixDatagram, UnixListener, UnixStream};

/// An abstract name no other test (or process) uses.
fn unique_name(what: &str) -> Vec<u8> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("weft-test-{}-{what}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)).into_bytes()
}

fn abstract_addr(name: &[u8]) -> SocketAddr {
    SocketAddr::from_abstract_name(name).expect("a valid abstract name")
}

#[test]
fn abstract_streams_between_coroutines_and_threads() {
    let name = unique_name("stream");
    let addr = abstract_addr(&name);
    let listener = UnixListener::bind_addr(&addr).expect("bind an abstract name");
    assert_eq!(listener.local_addr().unwrap().as_abstract_name(), Some(&name[..]));
    let runtime = weft::Runtime::builder().workers(2).build().expect("worker threads");
    let server = runtime.spawn(move || {
        // Two clients: a coroutine and an OS thread; each gets its bytes back.
        for _ in 0..2 {
            let (mut stream, _) = listener.accept().expect("accept");
            weft::spawn(move || {
                let mut buf = Vec::new();
                stream.read_to_end(&mut buf).expect("read to EOF");
                stream.write_all(&buf).expect("echo");
            });
        }
    });
    let message: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let round_trip = {
        let (addr, message) = (addr.clone(), message.clone());
        move || {
            let mut stream = UnixStream::connect_addr(&addr).expect("connect to the abstract name");
            assert_eq!(stream.peer_addr().unwrap().as_abstract_name(), addr.as_abstract_name());
            stream.write_all(&message).expect("write");
            stream.shutdown(std::net::Shutdown::Write).expect("half-close");
            let mut back = Vec::new();
            stream.read_to_end(&mut back).expect("read the echo");
            assert!(back == message, "the echo differs");
        }
    };
    let from_coroutine = runtime.spawn(round_trip.clone());
    std::thread::spawn(round_trip).join().expect("the thread's round trip");
    from_coroutine.join().expect("the coroutine's round trip");
    server.join().expect("the server");
}

#[test]
fn a_path_address_connects_as_connect_does() {
    let dir = std::env::temp_dir().join(format!("weft-abstract-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("by-addr.sock");
    let _ = std::fs::remove_file(&path);
    let addr = SocketAddr::from_pathname(&path).unwrap();
    let listener = UnixListener::bind_addr(&addr).expect("bind a path address");
    let client = std::thread::spawn(move || {
        let mut stream = UnixStream::connect_addr(&addr).expect("connect to the path address");
        stream.write_all(b"by path").unwrap();
    });
    let (mut stream, _) = listener.accept().unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert_eq!(text, "by path");
    client.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_of_abstract_and_unnamed_addresses() {
    let runtime = weft::Runtime::builder().workers(1).build().expect("a worker thread");
    runtime.block_on(|| {
        let nobody = abstract_addr(&unique_name("nobody"));
        let error = UnixStream::connect_addr(&nobody).expect_err("nobody listens there");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused, "{error}");

        let taken = abstract_addr(&unique_name("taken"));
        let _first = UnixListener::bind_addr(&taken).expect("the first bind");
        let error = UnixListener::bind_addr(&taken).expect_err("bound already");
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");

        let unnamed = UnixDatagram::unbound().unwrap().local_addr().unwrap();
        assert!(unnamed.is_unnamed());
        let error = UnixStream::connect_addr(&unnamed).expect_err("an unnamed address");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}");

        // 107 bytes fit after the leading NUL of sun_path's 108; std makes
        // the address, and the connect is refused (nobody listens).
        let longest = abstract_addr(&[b'x'; 107]);
        let error = UnixStream::connect_addr(&longest).expect_err("nobody listens there");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused, "{error}");
    });
}

#[test]
fn abstract_datagrams() {
    let runtime = weft::Runtime::builder().workers(2).build().expect("worker threads");
    runtime.block_on(|| {
        let name = unique_name("datagram");
        let addr = abstract_addr(&name);
        let receiver = UnixDatagram::bind_addr(&addr).expect("bind an abstract name");
        let sender = UnixDatagram::unbound().unwrap();
        let sent = weft::spawn(move || {
            for i in 0..100u32 {
                let datagram = i.to_le_bytes();
                assert_eq!(sender.send_to_addr(&datagram, &addr).unwrap(), 4);
            }
            sender
        });
        for i in 0..100u32 {
            let mut buf = [0u8; 16];
            let (n, _) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &i.to_le_bytes(), "datagram {i}");
        }
        let sender = sent.join().unwrap();
        sender.connect_addr(&receiver.local_addr().unwrap()).expect("connect to the abstract name");
        sender.send(b"connected").unwrap();
        let mut buf = [0u8; 16];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"connected");
    });
}
