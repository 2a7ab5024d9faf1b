//! Several coroutines of one worker waiting on the same half of one socket.
//!
//! A socket's registration with a worker holds one waiter per direction in
//! a slot of its own; a second waiter of the same direction on the same
//! worker waits in the parking lot instead, and every later event of that
//! direction wakes both. These tests put several readers (and writers) of
//! one stream on a one-worker runtime, give some of them timeouts, cancel
//! some, and check that every byte reaches exactly one reader, that nobody
//! waits for an event that already came, and that the runtime's drop
//! unwinds readers parked both ways.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::net::UnixStream;

/// Long enough for the spawned readers to have started and parked on this
/// loaded machine (the tests pass without it, but would then test less).
const SETTLE: Duration = Duration::from_millis(100);

fn one_worker() -> weft::Runtime {
    weft::Runtime::builder().workers(1).build().expect("a one-worker runtime")
}

/// Reads exactly one byte; the byte.
fn read_one(stream: &UnixStream) -> u8 {
    let mut byte = [0u8];
    let mut stream = stream;
    stream.read_exact(&mut byte).expect("a reader's read failed");
    byte[0]
}

#[test]
fn five_readers_of_one_stream_each_get_one_byte() {
    let rt = one_worker();
    let (a, mut b) = UnixStream::pair().expect("a socket pair");
    let a = Arc::new(a);
    let readers: Vec<_> = (0..5)
        .map(|_| {
            let a = Arc::clone(&a);
            rt.spawn(move || read_one(&a))
        })
        .collect();
    std::thread::sleep(SETTLE);
    // One byte per write, apart: each write is its own event, which must
    // reach a reader whichever way it waits (the slot or the lot).
    for byte in 1..=5u8 {
        b.write_all(&[byte]).expect("a write to the readers");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut got: Vec<u8> = readers
        .into_iter()
        .map(|mut reader| {
            reader
                .join_timeout(Duration::from_secs(30))
                .expect("a reader still waits for a byte that was written")
                .expect("a reader panicked")
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3, 4, 5], "each byte reaches exactly one reader");
}

#[test]
fn a_byte_written_at_once_to_two_parked_readers_reaches_one_and_the_next_the_other() {
    let rt = one_worker();
    let (a, mut b) = UnixStream::pair().expect("a socket pair");
    let a = Arc::new(a);
    let mut readers: Vec<_> = (0..2)
        .map(|_| {
            let a = Arc::clone(&a);
            rt.spawn(move || read_one(&a))
        })
        .collect();
    std::thread::sleep(SETTLE);
    b.write_all(&[7]).expect("the first write");
    // Exactly one reader gets it; the other parks again (its read found
    // nothing) and must be woken by the second write's event.
    std::thread::sleep(SETTLE);
    b.write_all(&[8]).expect("the second write");
    let mut got: Vec<u8> = readers
        .iter_mut()
        .map(|reader| {
            reader
                .join_timeout(Duration::from_secs(30))
                .expect("a reader missed the second write's event")
                .expect("a reader panicked")
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, [7, 8]);
}

#[test]
fn a_timed_out_reader_leaves_its_place_to_the_next() {
    let rt = one_worker();
    let (a, mut b) = UnixStream::pair().expect("a socket pair");
    let a = Arc::new(a);
    let timeout = Duration::from_millis(50);
    a.set_read_timeout(Some(timeout)).expect("set_read_timeout");
    let timed = {
        let a = Arc::clone(&a);
        rt.spawn(move || {
            let started = Instant::now();
            let mut byte = [0u8];
            let err = (&*a).read(&mut byte).expect_err("nothing was written: the read must time out");
            (err.kind(), started.elapsed())
        })
    };
    let (kind, waited) = timed.join().expect("the timed reader panicked");
    assert!(matches!(kind, ErrorKind::WouldBlock | ErrorKind::TimedOut), "a timed-out read fails with {kind:?}");
    assert!(waited >= timeout, "the read gave up after {waited:?}, before its {timeout:?} timeout");
    // Its place is free again: the next readers (one in the slot, one in
    // the lot), without a timeout, get what is written.
    a.set_read_timeout(None).expect("set_read_timeout");
    let mut readers: Vec<_> = (0..2)
        .map(|_| {
            let a = Arc::clone(&a);
            rt.spawn(move || read_one(&a))
        })
        .collect();
    std::thread::sleep(SETTLE);
    b.write_all(&[1]).expect("a write");
    std::thread::sleep(Duration::from_millis(10));
    b.write_all(&[2]).expect("a write");
    let mut got: Vec<u8> = readers
        .iter_mut()
        .map(|r| r.join_timeout(Duration::from_secs(30)).expect("a reader was never woken").expect("panicked"))
        .collect();
    got.sort_unstable();
    assert_eq!(got, [1, 2]);
}

#[test]
fn cancelling_the_first_reader_neither_strands_the_second_nor_loses_a_byte() {
    let rt = one_worker();
    let (a, mut b) = UnixStream::pair().expect("a socket pair");
    let a = Arc::new(a);
    // The first reader takes the slot, the second waits in the lot.
    let first = {
        let a = Arc::clone(&a);
        rt.spawn(move || read_one(&a))
    };
    std::thread::sleep(SETTLE);
    let mut second = {
        let a = Arc::clone(&a);
        rt.spawn(move || read_one(&a))
    };
    std::thread::sleep(SETTLE);
    first.cancel();
    let result = first.join();
    assert!(result.as_ref().is_err_and(|e| e.is_cancelled()), "the first reader was not cancelled: {result:?}");
    b.write_all(&[9]).expect("a write");
    let got = second
        .join_timeout(Duration::from_secs(30))
        .expect("the second reader was stranded by the first one's cancel")
        .expect("the second reader panicked");
    assert_eq!(got, 9);
    // The slot is free for a new reader too.
    let third = {
        let a = Arc::clone(&a);
        rt.spawn(move || read_one(&a))
    };
    std::thread::sleep(SETTLE);
    b.write_all(&[10]).expect("a write");
    assert_eq!(third.join().expect("the third reader panicked"), 10);
}

#[test]
fn readers_and_writers_of_one_stream_share_a_worker() {
    // Two readers and two writers on each end of one pair, one worker:
    // the writers fill the socket's buffer and park (write slot and lot),
    // the readers drain it; every byte arrives once, per-writer order kept
    // within each writer's own stream of values.
    const PER_WRITER: u32 = 20_000;
    let rt = one_worker();
    let (a, b) = UnixStream::pair().expect("a socket pair");
    let (a, b) = (Arc::new(a), Arc::new(b));
    let writers: Vec<_> = (0..2u32)
        .map(|w| {
            let a = Arc::clone(&a);
            rt.spawn(move || {
                for i in 0..PER_WRITER {
                    // One 4-byte value per write: a Unix stream socket
                    // never splits a write this small.
                    (&*a).write_all(&((w << 24) | i).to_le_bytes()).expect("a write");
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let b = Arc::clone(&b);
            rt.spawn(move || {
                let mut values = Vec::new();
                let mut buf = [0u8; 4];
                loop {
                    match (&*b).read_exact(&mut buf) {
                        Ok(()) => values.push(u32::from_le_bytes(buf)),
                        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return values,
                        Err(e) => panic!("a reader's read failed: {e}"),
                    }
                }
            })
        })
        .collect();
    for mut writer in writers {
        writer.join_timeout(Duration::from_secs(60)).expect("a writer is stuck").expect("a writer panicked");
    }
    a.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut all: Vec<u32> = Vec::new();
    for mut reader in readers {
        let values =
            reader.join_timeout(Duration::from_secs(60)).expect("a reader is stuck").expect("a reader panicked");
        all.extend(values);
    }
    all.sort_unstable();
    let expected: Vec<u32> = (0..2u32).flat_map(|w| (0..PER_WRITER).map(move |i| (w << 24) | i)).collect();
    assert_eq!(all.len(), expected.len(), "values lost or doubled");
    assert!(all == expected, "the values read are not the values written");
}

#[test]
fn dropping_the_runtime_unwinds_readers_parked_in_the_slot_and_in_the_lot() {
    let rt = one_worker();
    let (a, b) = UnixStream::pair().expect("a socket pair");
    let a = Arc::new(a);
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let a = Arc::clone(&a);
            rt.spawn(move || read_one(&a))
        })
        .collect();
    std::thread::sleep(SETTLE);
    let started = Instant::now();
    drop(rt);
    assert!(started.elapsed() < Duration::from_secs(30), "the runtime's drop hung on readers parked in I/O");
    for reader in readers {
        assert!(reader.join().is_err(), "a reader unwound at shutdown must not report a byte");
    }
    // Every reader let go of the stream: the pair is whole again.
    let a = Arc::try_unwrap(a).expect("an unwound reader still holds the stream");
    drop((a, b));
}
