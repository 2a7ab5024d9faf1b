//! weft::net's basic paths: echo between coroutines on two workers, an OS
//! thread client against a coroutine server, timeouts, refused connects.

use std::io::{Read, Write};
use std::time::{Duration, Instant};
use weft::net::{TcpListener, TcpStream, UdpSocket};

#[test]
fn echo_between_coroutines_and_from_threads() {
    let runtime = weft::Runtime::builder().workers(2).build().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = runtime.spawn(move || {
        for _ in 0..40 {
            let (mut stream, _) = listener.accept().unwrap();
            weft::spawn(move || {
                let mut buf = vec![0; 4096];
                loop {
                    let n = stream.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    stream.write_all(&buf[..n]).unwrap();
                }
            });
        }
    });
    let client = move |i: usize| {
        let mut stream = TcpStream::connect(addr).unwrap();
        let message: Vec<u8> = (0..10_000).map(|b| (b * 7 + i) as u8).collect();
        let mut reader = stream.try_clone().unwrap();
        let expected = message.clone();
        let writer = std::thread::spawn(move || {
            stream.write_all(&message).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        reader.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert_eq!(back, expected);
    };
    // 20 clients in coroutines, 20 on OS threads.
    let coroutines: Vec<_> = (0..20).map(|i| runtime.spawn(move || client(i))).collect();
    let threads: Vec<_> = (20..40).map(|i| std::thread::spawn(move || client(i))).collect();
    for c in coroutines {
        c.join().unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    server.join().unwrap();
}

#[test]
fn read_timeout_is_never_early() {
    let runtime = weft::Runtime::builder().workers(1).build().unwrap();
    runtime.block_on(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _peer = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let start = Instant::now();
        let err = (&stream).read(&mut [0; 8]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        assert!(start.elapsed() >= Duration::from_millis(50), "early: {:?}", start.elapsed());
    });
}

#[test]
fn refused_connect_is_an_error() {
    let runtime = weft::Runtime::builder().workers(1).build().unwrap();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = runtime.block_on(move || TcpStream::connect(addr).unwrap_err());
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn udp_round_trip() {
    let runtime = weft::Runtime::builder().workers(2).build().unwrap();
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let s = runtime.spawn(move || {
        let mut buf = [0; 64];
        for _ in 0..100 {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(&buf[..n], from).unwrap();
        }
    });
    runtime.block_on(move || {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(addr).unwrap();
        for i in 0..100u32 {
            client.send(&i.to_le_bytes()).unwrap();
            let mut buf = [0; 4];
            assert_eq!(client.recv(&mut buf).unwrap(), 4);
            assert_eq!(u32::from_le_bytes(buf), i);
        }
    });
    s.join().unwrap();
}
