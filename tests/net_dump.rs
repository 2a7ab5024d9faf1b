//! `Runtime::dump` names what a coroutine waits for on a socket: a read or
//! an accept shows as `ParkedOn::Readable(fd)`, a write on a full send
//! buffer as `ParkedOn::Writable(fd)`, with the socket's own descriptor.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::net::{TcpListener, TcpStream};
use weft::{CoroutineState, ParkedOn};

/// Waits until coroutine `id` is parked on `on` in the runtime's dump.
fn wait_parked_on(rt: &weft::Runtime, id: u64, on: ParkedOn) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let dump = rt.dump();
        let state = dump.coroutine(id).map(|c| c.state());
        if let Some(CoroutineState::Parked { on: parked, .. }) = state
            && parked == on
        {
            let line = format!("{dump}");
            assert!(line.contains(&format!("{on}")), "the printed dump does not say {on}:\n{line}");
            return;
        }
        assert!(Instant::now() < deadline, "coroutine {id} is {state:?}, not parked on {on:?}\n{dump}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn dump_shows_read_accept_and_write_waits_with_the_socket_fd() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();

    let acceptor = {
        let listener = Arc::clone(&listener);
        rt.spawn(move || listener.accept().map(|(s, _)| s).unwrap())
    };
    wait_parked_on(&rt, acceptor.id(), ParkedOn::Readable(listener.as_raw_fd()));

    let client = Arc::new(TcpStream::connect(addr).unwrap());
    let server = acceptor.join().unwrap();
    let reader = {
        let client = Arc::clone(&client);
        rt.spawn(move || {
            let mut buf = [0u8; 5];
            (&*client).read_exact(&mut buf).unwrap();
            buf
        })
    };
    wait_parked_on(&rt, reader.id(), ParkedOn::Readable(client.as_raw_fd()));
    (&server).write_all(b"hello").unwrap();
    assert_eq!(&reader.join().unwrap(), b"hello");

    // A writer with nobody reading: the buffers fill and it parks. (Not
    // more: with 8 KiB send buffers loopback TCP moves only about 2 MB/s,
    // delayed ACKs included.)
    const WRITE: usize = 512 * 1024;
    common::net::set_small_buffers(&*client, 4096);
    let writer = {
        let client = Arc::clone(&client);
        rt.spawn(move || (&*client).write_all(&vec![1u8; WRITE]).unwrap())
    };
    wait_parked_on(&rt, writer.id(), ParkedOn::Writable(client.as_raw_fd()));
    let mut sink = Vec::new();
    drop(client); // the writer's Arc keeps the stream open
    // Drain until the writer is done and has dropped its handle (EOF).
    (&server).read_to_end(&mut sink).unwrap();
    writer.join().unwrap();
    assert_eq!(sink.len(), WRITE);
}
