//! One stream, two coroutines on different workers: one reads while the
//! other writes through `&TcpStream` (an `Arc<TcpStream>`), both ends of
//! the connection doing the same, both directions at full speed; every
//! byte arrives, in order. The stream is registered with both workers'
//! pollers (a reader's wait on one, a writer's on the other).

mod common;

use common::net::{Pattern, worker_name};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use weft::JoinHandle;
use weft::net::{TcpListener, TcpStream};

const BYTES: u64 = 32 << 20;

/// A coroutine's handle; it returns its value and the name of its worker.
type OnWorker<T> = JoinHandle<(T, String)>;

/// Spawns `first` and `second` so that they run on different workers of
/// the 2-worker `rt`: `first` starts, spawns `second`, and spins (holding
/// its worker) until `second` has started, which only the other worker can
/// do (a started coroutine never moves). Returns both handles and their
/// worker names.
fn on_two_workers<A, B>(
    rt: &weft::Runtime,
    first: impl FnOnce() -> A + Send + 'static,
    second: impl FnOnce() -> B + Send + 'static,
) -> (OnWorker<A>, OnWorker<B>)
where
    A: Send + 'static,
    B: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = rt.spawn(move || {
        let started = Arc::new(AtomicBool::new(false));
        let second = {
            let started = Arc::clone(&started);
            weft::spawn(move || {
                started.store(true, Ordering::Release);
                (second(), worker_name())
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !started.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the other worker never started the second coroutine");
            std::hint::spin_loop();
        }
        tx.send(second).unwrap();
        (first(), worker_name())
    });
    (handle, rx.recv().unwrap())
}

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
