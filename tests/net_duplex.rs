//! One stream, two coroutines on different workers: one reads while the
//! other writes through `&TcpStream` (an `Arc<TcpStream>`), both ends of
//! the connection doing the same, both directions at full speed; every
//! byte arrives, in order. The stream is registered with both workers'
//! pollers (a reader's wait on one, a writer's on the other).

mod common;

use common::net::{Pattern, on_two_workers};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use weft::net::{TcpListener, TcpStream};

const BYTES: u64 = 32 << 20;

fn write_all_of(mut stream: &TcpStream, seed: u64) {
    let mut pattern = Pattern::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    while pattern.position() < BYTES {
        let n = (BYTES - pattern.position()).min(buf.len() as u64) as usize;
        pattern.fill(&mut buf[..n]);
        stream.write_all(&buf[..n]).unwrap();
    }
    stream.shutdown(Shutdown::Write).unwrap();
}

fn read_all_of(mut stream: &TcpStream, seed: u64) -> u64 {
    let mut pattern = Pattern::new(seed);
    let mut buf = vec![0u8; 48 * 1024];
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            return pattern.position();
        }
        pattern.check(&buf[..n], "a duplex stream");
    }
}

#[test]
fn a_reader_and_a_writer_on_different_workers_share_one_stream() {
    let rt = weft::Runtime::builder().workers(2).stall_threshold(None).build().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let a = Arc::new(TcpStream::connect(addr).unwrap());
    let b = Arc::new(listener.accept().unwrap().0);
    let mut handles = Vec::new();
    for (stream, out_seed, in_seed) in [(a, 1, 2), (b, 2, 1)] {
        let writer_stream = Arc::clone(&stream);
        let (writer, reader) =
            on_two_workers(&rt, move || write_all_of(&writer_stream, out_seed), move || read_all_of(&stream, in_seed));
        handles.push((writer, reader));
    }
    for (writer, reader) in handles {
        let ((), writer_on) = writer.join().unwrap();
        let (read, reader_on) = reader.join().unwrap();
        assert_ne!(writer_on, reader_on, "the reader and the writer ran on the same worker");
        assert_eq!(read, BYTES);
    }
}
