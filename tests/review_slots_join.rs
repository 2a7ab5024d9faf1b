//! Review of two changes: the poller's per-entry waiter slots (with the
//! parking lot as the "crowd" for a second waiter of one direction), and
//! the join state's DETACHED (a result nobody can take is dropped when it
//! exists, or when its handle goes).
//!
//! Poller: EOF / hang-up / errors reach slot and crowd, readers on two
//! workers through `try_clone`, timeouts and cancels racing events (byte
//! conservation), shutdown with timed waiters of both directions, UDP,
//! accept crowds, connect timeouts. Join: exact drop counts of detached
//! results, where they are dropped, panicking destructors, cancels,
//! `spawn_blocking`, shutdown.

mod common;

use common::net::set_small_buffers;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft::net::{TcpListener, TcpStream, UdpSocket, UnixStream};

const SETTLE: Duration = Duration::from_millis(100);
const LIVE: Duration = Duration::from_secs(30);

fn workers(n: usize) -> weft::Runtime {
    weft::Runtime::builder().workers(n).build().expect("a runtime")
}

fn join_live<T>(mut h: weft::JoinHandle<T>, what: &str) -> Result<T, weft::JoinError> {
    h.join_timeout(LIVE).unwrap_or_else(|| panic!("{what}: still waiting after {LIVE:?} (lost wakeup?)"))
}

/// Waits (bounded) until `f()` holds.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < LIVE, "{what}: not reached within {LIVE:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Counts its drops; optionally notes the thread name that dropped it.
struct Counted {
    drops: Arc<AtomicUsize>,
    where_: Option<Arc<Mutex<Vec<String>>>>,
    panic_on_drop: bool,
}

impl Counted {
    fn new(drops: &Arc<AtomicUsize>) -> Counted {
        Counted { drops: Arc::clone(drops), where_: None, panic_on_drop: false }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if let Some(w) = &self.where_ {
            w.lock().unwrap().push(std::thread::current().name().unwrap_or("<unnamed>").to_owned());
        }
        if self.panic_on_drop {
            panic!("review: a result whose drop panics");
        }
    }
}

fn read_byte(s: &UnixStream) -> std::io::Result<u8> {
    let mut b = [0u8];
    let n = (&*s).read(&mut b)?;
    if n == 0 { Err(ErrorKind::UnexpectedEof.into()) } else { Ok(b[0]) }
}

// ---------------------------------------------------------------- poller

#[test]
fn eof_reaches_the_slot_and_the_crowd() {
    let rt = workers(1);
    let (a, b) = UnixStream::pair().unwrap();
    let a = Arc::new(a);
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let a = Arc::clone(&a);
            rt.spawn(move || {
                let mut buf = [0u8; 8];
                (&*a).read(&mut buf)
            })
        })
        .collect();
    std::thread::sleep(SETTLE);
    drop(b);
    for r in readers {
        let n = join_live(r, "a reader parked before EOF").unwrap().expect("read");
        assert_eq!(n, 0, "EOF reads 0");
    }
}

#[test]
fn shutdown_write_reaches_the_slot_and_the_crowd_then_data_after() {
    // A half-close (RDHUP only): every parked reader sees EOF.
    let rt = workers(1);
    let (a, b) = UnixStream::pair().unwrap();
    let a = Arc::new(a);
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let a = Arc::clone(&a);
            rt.spawn(move || {
                let mut buf = [0u8; 8];
                (&*a).read(&mut buf)
            })
        })
        .collect();
    std::thread::sleep(SETTLE);
    b.shutdown(Shutdown::Write).unwrap();
    for r in readers {
        assert_eq!(join_live(r, "reader after shutdown(Write)").unwrap().unwrap(), 0);
    }
}

#[test]
fn hangup_reaches_writers_in_the_slot_and_the_crowd() {
    let rt = workers(1);
    let (a, b) = UnixStream::pair().unwrap();
    set_small_buffers(&a, 4096);
    set_small_buffers(&b, 4096);
    let a = Arc::new(a);
    let writers: Vec<_> = (0..3)
        .map(|_| {
            let a = Arc::clone(&a);
            rt.spawn(move || {
                let chunk = [0u8; 4096];
                loop {
                    if let Err(e) = (&*a).write(&chunk) {
                        return e.kind();
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(SETTLE);
    drop(b);
    for w in writers {
        let kind = join_live(w, "a writer parked on a full socket whose peer closed").unwrap();
        assert!(matches!(kind, ErrorKind::BrokenPipe | ErrorKind::ConnectionReset), "{kind:?}");
    }
}

#[test]
fn readers_on_two_workers_through_clones_each_get_one_byte() {
    for round in 0..20 {
        let rt = workers(2);
        let (a, mut b) = UnixStream::pair().unwrap();
        let a = Arc::new(a);
        const N: usize = 8;
        let readers: Vec<_> = (0..N)
            .map(|i| {
                let sock = if i % 2 == 0 { Arc::clone(&a) } else { Arc::new(a.try_clone().unwrap()) };
                rt.spawn(move || read_byte(&sock).expect("read"))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30));
        for byte in 0..N as u8 {
            b.write_all(&[byte]).unwrap();
            if round % 2 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let mut got: Vec<u8> = readers.into_iter().map(|r| join_live(r, "clone reader").unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, (0..N as u8).collect::<Vec<_>>(), "round {round}");
    }
}

#[test]
fn timed_readers_lose_no_byte_while_their_timeouts_race_events() {
    const BYTES: usize = 3000;
    let rt = workers(1);
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let a = Arc::new(a);
    let total = Arc::new(AtomicUsize::new(0));
    let timeouts = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (a, total, timeouts) = (Arc::clone(&a), Arc::clone(&total), Arc::clone(&timeouts));
            rt.spawn(move || {
                let mut mine = 0usize;
                let mut buf = [0u8; 7];
                loop {
                    match (&*a).read(&mut buf) {
                        Ok(0) => return mine,
                        Ok(n) => {
                            mine += n;
                            total.fetch_add(n, Ordering::SeqCst);
                        }
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                            timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("read: {e}"),
                    }
                }
            })
        })
        .collect();
    let mut rng = 12345u64;
    for _ in 0..BYTES {
        b.write_all(&[1]).unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        match rng % 8 {
            0 => std::thread::sleep(Duration::from_micros(900 + rng % 300)),
            1 => std::thread::yield_now(),
            _ => {}
        }
    }
    eventually("every byte read", || total.load(Ordering::SeqCst) == BYTES);
    drop(b);
    let sum: usize = readers.into_iter().map(|r| join_live(r, "timed reader").unwrap()).sum();
    assert_eq!(sum, BYTES);
    assert!(timeouts.load(Ordering::Relaxed) > 0, "the test should exercise timeouts");
}

#[test]
fn cancel_racing_an_event_loses_no_byte() {
    // A reader parked in the slot is cancelled while its byte arrives: it
    // either returns the byte or is cancelled, and then the byte is still in
    // the socket for the next reader. Debug builds check the park states.
    let rt = workers(2);
    let (a, mut b) = UnixStream::pair().unwrap();
    let a = Arc::new(a);
    let mut received = 0usize;
    let mut cancelled = 0usize;
    for i in 0..300u32 {
        let r = {
            let a = Arc::clone(&a);
            rt.spawn(move || read_byte(&a).expect("read"))
        };
        if i % 3 != 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        b.write_all(&[(i % 251) as u8]).unwrap();
        r.cancel();
        match join_live(r, "cancelled reader") {
            Ok(byte) => {
                assert_eq!(byte, (i % 251) as u8);
                received += 1;
            }
            Err(e) => {
                assert!(e.is_cancelled(), "{e}");
                cancelled += 1;
                // The byte must still be there.
                let a2 = Arc::clone(&a);
                let got = join_live(rt.spawn(move || read_byte(&a2).expect("read")), "recovery reader").unwrap();
                assert_eq!(got, (i % 251) as u8, "iteration {i}: wrong byte after a cancel");
            }
        }
    }
    assert_eq!(received + cancelled, 300);
}

#[test]
fn timed_waits_in_slot_and_crowd_both_directions_then_runtime_drop() {
    let rt = workers(1);
    let (a, b) = UnixStream::pair().unwrap();
    set_small_buffers(&a, 4096);
    set_small_buffers(&b, 4096);
    a.set_read_timeout(Some(Duration::from_secs(3600))).unwrap();
    a.set_write_timeout(Some(Duration::from_secs(3600))).unwrap();
    let a = Arc::new(a);
    let drops = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..6 {
        let a = Arc::clone(&a);
        let c = Counted::new(&drops);
        handles.push(rt.spawn(move || {
            let _c = c;
            if i < 3 {
                let mut buf = [0u8; 4];
                let _ = (&*a).read(&mut buf);
            } else {
                let chunk = [0u8; 4096];
                loop {
                    if (&*a).write(&chunk).is_err() {
                        return;
                    }
                }
            }
        }));
    }
    std::thread::sleep(SETTLE);
    let start = Instant::now();
    drop(rt);
    assert!(start.elapsed() < LIVE);
    for h in handles {
        assert!(h.join().is_err(), "unwound at shutdown");
    }
    assert_eq!(drops.load(Ordering::SeqCst), 6, "each coroutine's value dropped once");
    let a = Arc::try_unwrap(a).expect("an unwound waiter still holds the socket");
    drop((a, b)); // entries dropped: slots must be empty (debug-asserted)
}

#[test]
fn runtime_dropped_while_waiter_woken_but_not_yet_run() {
    // An event takes the slot's handle and reschedules the coroutine; the
    // runtime's drop comes right after. No double free, no leak.
    for _ in 0..50 {
        let rt = workers(1);
        let (a, mut b) = UnixStream::pair().unwrap();
        let a = Arc::new(a);
        let drops = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let a = Arc::clone(&a);
                let c = Counted::new(&drops);
                rt.spawn(move || {
                    let _c = c;
                    read_byte(&a)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5));
        b.write_all(&[1, 2]).unwrap();
        drop(rt);
        for h in hs {
            let _ = h.join();
        }
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        let a = Arc::try_unwrap(a).expect("socket still held");
        drop((a, b));
    }
}

#[test]
fn udp_two_receivers_slot_and_crowd_and_a_timeout() {
    let rt = workers(1);
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    let addr = sock.local_addr().unwrap();
    let receivers: Vec<_> = (0..3)
        .map(|_| {
            let s = Arc::clone(&sock);
            rt.spawn(move || {
                let mut buf = [0u8; 16];
                let (n, _) = s.recv_from(&mut buf).expect("recv_from");
                buf[..n].to_vec()
            })
        })
        .collect();
    std::thread::sleep(SETTLE);
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..3u8 {
        tx.send_to(&[i], addr).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut got: Vec<u8> = receivers.into_iter().flat_map(|r| join_live(r, "udp receiver").unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2]);
    // A timed receive with nothing to come times out, not early.
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let s = Arc::clone(&sock);
    let (kind, waited) = join_live(
        rt.spawn(move || {
            let t = Instant::now();
            let mut buf = [0u8; 4];
            (s.recv(&mut buf).expect_err("nothing sent").kind(), t.elapsed())
        }),
        "timed udp recv",
    )
    .unwrap();
    assert!(matches!(kind, ErrorKind::WouldBlock | ErrorKind::TimedOut), "{kind:?}");
    assert!(waited >= Duration::from_millis(50));
}

#[test]
fn connected_udp_refused_wakes_the_parked_receiver() {
    let rt = workers(1);
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead: SocketAddr = closed.local_addr().unwrap();
    drop(closed);
    let r = rt.spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(dead).unwrap();
        s.send(&[1]).unwrap();
        let mut buf = [0u8; 4];
        s.recv(&mut buf).map(|_| ()).map_err(|e| e.kind())
    });
    let res = join_live(r, "receiver of a refused datagram").unwrap();
    assert_eq!(res, Err(ErrorKind::ConnectionRefused));
}

#[test]
fn accept_crowd_on_one_listener_each_gets_one_connection() {
    for n_workers in [1, 2] {
        let rt = workers(n_workers);
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        const N: usize = 6;
        let acceptors: Vec<_> = (0..N)
            .map(|_| {
                let l = Arc::clone(&listener);
                rt.spawn(move || {
                    let (mut s, _) = l.accept().expect("accept");
                    let mut b = [0u8];
                    s.read_exact(&mut b).unwrap();
                    b[0]
                })
            })
            .collect();
        std::thread::sleep(SETTLE);
        let mut clients = Vec::new();
        for i in 0..N as u8 {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(&[i]).unwrap();
            clients.push(c);
            std::thread::sleep(Duration::from_millis(3));
        }
        let mut got: Vec<u8> = acceptors.into_iter().map(|a| join_live(a, "acceptor").unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, (0..N as u8).collect::<Vec<_>>(), "{n_workers} workers");
    }
}

#[test]
fn accept_timeout_in_the_crowd_then_a_connection_for_the_rest() {
    let rt = workers(1);
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    listener.set_accept_timeout(Some(Duration::from_millis(60))).unwrap();
    // Two timed acceptors (slot + crowd) time out.
    let timed: Vec<_> = (0..2)
        .map(|_| {
            let l = Arc::clone(&listener);
            rt.spawn(move || {
                let t = Instant::now();
                (l.accept().map(|_| ()).map_err(|e| e.kind()), t.elapsed())
            })
        })
        .collect();
    for h in timed {
        let (res, waited) = join_live(h, "timed acceptor").unwrap();
        assert!(matches!(res, Err(ErrorKind::WouldBlock | ErrorKind::TimedOut)), "{res:?}");
        assert!(waited >= Duration::from_millis(60), "timed out early: {waited:?}");
    }
    listener.set_accept_timeout(None).unwrap();
    let acceptors: Vec<_> = (0..2)
        .map(|_| {
            let l = Arc::clone(&listener);
            rt.spawn(move || l.accept().map(|_| ()).is_ok())
        })
        .collect();
    std::thread::sleep(SETTLE);
    let _c1 = std::net::TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(10));
    let _c2 = std::net::TcpStream::connect(addr).unwrap();
    for a in acceptors {
        assert!(join_live(a, "acceptor after timeouts").unwrap());
    }
}

#[test]
fn connect_timeout_refused_and_ok_from_coroutines() {
    let rt = workers(1);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ok_addr = listener.local_addr().unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let hs: Vec<_> = (0..10)
        .map(|i| {
            rt.spawn(move || {
                let addr = if i % 2 == 0 { ok_addr } else { dead };
                TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map(|_| ()).map_err(|e| e.kind())
            })
        })
        .collect();
    for (i, h) in hs.into_iter().enumerate() {
        let res = join_live(h, "connect_timeout").unwrap();
        if i % 2 == 0 {
            assert_eq!(res, Ok(()));
        } else {
            assert_eq!(res, Err(ErrorKind::ConnectionRefused));
        }
    }
}

#[test]
fn a_clone_converted_into_std_and_dropped_leaves_the_parked_reader_waiting() {
    let rt = workers(1);
    let (a, mut b) = UnixStream::pair().unwrap();
    let a = Arc::new(a);
    let reader = {
        let a = Arc::clone(&a);
        rt.spawn(move || read_byte(&a).expect("read"))
    };
    std::thread::sleep(SETTLE);
    // A clone waited on by another coroutine of the same worker, then
    // given up (its entry removed) and turned into std and back.
    let clone = a.try_clone().unwrap();
    clone.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let clone = join_live(
        rt.spawn(move || {
            let mut buf = [0u8];
            assert!((&clone).read(&mut buf).is_err(), "nothing written yet");
            clone
        }),
        "clone user",
    )
    .unwrap();
    let std_clone = clone.into_std().unwrap();
    let back = UnixStream::from_std(std_clone).unwrap();
    drop(back);
    b.write_all(&[42]).unwrap();
    assert_eq!(join_live(reader, "reader after clone's into_std").unwrap(), 42);
}

#[test]
fn tcp_ping_pong_with_timeouts_on_two_workers() {
    let rt = workers(2);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    const ROUNDS: u32 = 2000;
    let server = rt.spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let mut n = 0u32;
        let mut buf = [0u8; 4];
        let mut have = 0;
        loop {
            match (&s).read(&mut buf[have..]) {
                Ok(0) => return n,
                Ok(k) => {
                    have += k;
                    if have == 4 {
                        have = 0;
                        (&s).write_all(&buf).unwrap();
                        n += 1;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
    });
    let client = rt.spawn(move || {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        for i in 0..ROUNDS {
            (&s).write_all(&i.to_le_bytes()).unwrap();
            let mut buf = [0u8; 4];
            let mut have = 0;
            while have < 4 {
                match (&s).read(&mut buf[have..]) {
                    Ok(0) => panic!("eof"),
                    Ok(k) => have += k,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(u32::from_le_bytes(buf), i);
        }
    });
    join_live(client, "client").unwrap();
    assert_eq!(join_live(server, "server").unwrap(), ROUNDS);
}

// ---------------------------------------------------------------- join

#[test]
fn detached_results_are_dropped_exactly_once() {
    let rt = workers(2);
    let drops = Arc::new(AtomicUsize::new(0));
    const N: usize = 2000;
    let mut kept = Vec::new();
    for i in 0..N {
        let d = Arc::clone(&drops);
        let h = rt.spawn(move || {
            if i % 3 == 0 {
                weft::yield_now();
            }
            if i % 7 == 0 {
                weft::sleep(Duration::from_millis(1));
            }
            Counted::new(&d)
        });
        if i % 2 == 0 {
            drop(h); // often before it finished
        } else {
            kept.push(h);
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    drop(kept); // mostly after they finished
    eventually("every result dropped", || drops.load(Ordering::SeqCst) >= N);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(drops.load(Ordering::SeqCst), N, "a result dropped twice");
    drop(rt);
    assert_eq!(drops.load(Ordering::SeqCst), N);
}

#[test]
fn join_timeout_that_timed_out_then_dropped_drops_the_result_once() {
    let rt = workers(1);
    let drops = Arc::new(AtomicUsize::new(0));
    let d = Arc::clone(&drops);
    let mut h = rt.spawn(move || {
        weft::sleep(Duration::from_millis(50));
        Counted::new(&d)
    });
    assert!(h.join_timeout(Duration::from_millis(1)).is_none());
    drop(h);
    eventually("result dropped", || drops.load(Ordering::SeqCst) == 1);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    // And from a coroutine joiner that timed out, handle dropped there.
    let d = Arc::clone(&drops);
    let joiner = rt.spawn(move || {
        let mut h = weft::spawn(move || {
            weft::sleep(Duration::from_millis(30));
            Counted::new(&d)
        });
        assert!(h.join_timeout(Duration::from_millis(1)).is_none());
    });
    join_live(joiner, "joiner").unwrap();
    eventually("second result dropped", || drops.load(Ordering::SeqCst) == 2);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}

#[test]
fn join_timeout_returned_then_dropped_is_not_dropped_twice() {
    let rt = workers(1);
    let drops = Arc::new(AtomicUsize::new(0));
    let d = Arc::clone(&drops);
    let mut h = rt.spawn(move || Counted::new(&d));
    let v = h.join_timeout(LIVE).expect("finished").expect("ok");
    drop(h);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(v);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn handle_dropped_while_cancelling_drops_captures_and_results_once() {
    let rt = workers(2);
    let captured = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(AtomicUsize::new(0));
    const N: usize = 500;
    for i in 0..N {
        let c = Counted::new(&captured);
        let r = Arc::clone(&results);
        let h = rt.spawn(move || {
            let _c = c;
            if i % 2 == 0 {
                weft::sleep(Duration::from_millis(1));
            } else {
                weft::yield_now();
            }
            Counted::new(&r)
        });
        h.cancel();
        drop(h);
    }
    eventually("captures dropped", || captured.load(Ordering::SeqCst) == N);
    drop(rt);
    assert_eq!(captured.load(Ordering::SeqCst), N);
    // A result exists only when the coroutine finished before the cancel
    // reached a park: it must not be leaked or dropped twice. (Those that
    // were cancelled never made one.) Count them through a second pass
    // in which nobody cancels.
    assert!(results.load(Ordering::SeqCst) <= N);
}

#[test]
fn results_of_finished_then_detached_cancelled_coroutines_drop_once() {
    // Each coroutine produces its result (no park after), a racing cancel
    // does nothing, then the handle is dropped: exactly N drops.
    let rt = workers(2);
    let results = Arc::new(AtomicUsize::new(0));
    const N: usize = 500;
    for _ in 0..N {
        let r = Arc::clone(&results);
        let h = rt.spawn(move || Counted::new(&r));
        std::thread::yield_now();
        h.cancel();
        drop(h);
    }
    // A coroutine cancelled before it started never makes a result; those
    // that started make exactly one. Unknown split, so compare with metrics.
    drop(rt);
    let made = results.load(Ordering::SeqCst);
    assert!(made <= N);
    // Everything made was dropped (a Counted counts at drop only), so check
    // nothing is dropped later either.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(results.load(Ordering::SeqCst), made);
}

#[test]
fn spawn_blocking_detached_results_dropped_once_on_the_right_threads() {
    let rt = workers(1);
    let _g = rt.enter();
    let drops = Arc::new(AtomicUsize::new(0));
    let where_ = Arc::new(Mutex::new(Vec::new()));
    const N: usize = 40;
    let gate = Arc::new(AtomicUsize::new(0));
    let mut done_handles = Vec::new();
    for i in (0..N).filter(|i| i % 2 == 1).chain((0..N).filter(|i| i % 2 == 0)) {
        let (d, w, g) = (Arc::clone(&drops), Arc::clone(&where_), Arc::clone(&gate));
        let h = weft::spawn_blocking(move || {
            if i % 2 == 0 {
                while g.load(Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Counted { drops: d, where_: Some(w), panic_on_drop: false }
        });
        if i % 2 == 0 {
            drop(h); // before it finished: dropped on the pool thread
        } else {
            done_handles.push(h);
        }
    }
    for h in &done_handles {
        eventually("blocking job finished", || h.is_finished());
    }
    let before = drops.load(Ordering::SeqCst);
    assert_eq!(before, 0, "nothing dropped while handles live / gate closed");
    drop(done_handles); // after: dropped here
    assert_eq!(drops.load(Ordering::SeqCst), N / 2);
    gate.store(1, Ordering::SeqCst);
    eventually("gated jobs' results dropped", || drops.load(Ordering::SeqCst) == N);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(drops.load(Ordering::SeqCst), N);
    let me = std::thread::current().name().unwrap_or("<unnamed>").to_owned();
    let w = where_.lock().unwrap();
    assert_eq!(w.iter().filter(|n| **n == me).count(), N / 2, "dropped here: {w:?}");
}

#[test]
fn a_detached_result_whose_drop_panics_is_contained_everywhere() {
    let rt = workers(1);
    let drops = Arc::new(AtomicUsize::new(0));
    // Dropped at the coroutine's end (handle gone first).
    for _ in 0..5 {
        let d = Arc::clone(&drops);
        let h = rt.spawn(move || {
            weft::sleep(Duration::from_millis(5));
            Counted { drops: d, where_: None, panic_on_drop: true }
        });
        drop(h);
    }
    // Dropped by the handle's drop, on this thread, after it finished.
    let d = Arc::clone(&drops);
    let h = rt.spawn(move || Counted { drops: d, where_: None, panic_on_drop: true });
    eventually("finished", || h.is_finished());
    drop(h); // must not panic here
    // A spawn_blocking one.
    let d = Arc::clone(&drops);
    let _g = rt.enter();
    let h = weft::spawn_blocking(move || Counted { drops: d, where_: None, panic_on_drop: true });
    drop(h);
    eventually("all dropped", || drops.load(Ordering::SeqCst) == 7);
    // The worker survived.
    assert_eq!(join_live(rt.spawn(|| 5), "after panicking drops").unwrap(), 5);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(drops.load(Ordering::SeqCst), 7);
}

#[test]
fn a_detached_result_is_dropped_on_its_worker_when_the_handle_went_first() {
    let rt = workers(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let where_ = Arc::new(Mutex::new(Vec::new()));
    let (d, w) = (Arc::clone(&drops), Arc::clone(&where_));
    let h = rt.spawn(move || {
        weft::sleep(Duration::from_millis(30));
        Counted { drops: d, where_: Some(w), panic_on_drop: false }
    });
    drop(h);
    eventually("dropped", || drops.load(Ordering::SeqCst) == 1);
    let w = where_.lock().unwrap();
    assert!(w[0].starts_with(&format!("weft-r{}-w", rt.id())), "dropped on {w:?}");
}

#[test]
fn handle_dropped_by_a_coroutine_while_the_task_finishes_on_another_worker() {
    let rt = workers(2);
    let drops = Arc::new(AtomicUsize::new(0));
    const N: usize = 3000;
    let d = Arc::clone(&drops);
    let driver = rt.spawn(move || {
        for i in 0..N {
            let d = Arc::clone(&d);
            let h = weft::spawn(move || Counted::new(&d));
            for _ in 0..(i % 4) {
                weft::yield_now();
            }
            drop(h);
        }
    });
    join_live(driver, "driver").unwrap();
    eventually("all dropped", || drops.load(Ordering::SeqCst) >= N);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(drops.load(Ordering::SeqCst), N);
}

#[test]
fn runtime_shutdown_with_detached_tasks_drops_each_capture_once() {
    let captured = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(AtomicUsize::new(0));
    let rt = workers(2);
    const N: usize = 200;
    for i in 0..N {
        let c = Counted::new(&captured);
        let r = Arc::clone(&results);
        drop(rt.spawn(move || {
            let _c = c;
            if i % 2 == 0 {
                weft::sleep(Duration::from_secs(3600));
            }
            Counted::new(&r)
        }));
    }
    eventually("the quick half finished", || results.load(Ordering::SeqCst) == N / 2);
    drop(rt);
    assert_eq!(captured.load(Ordering::SeqCst), N);
    assert_eq!(results.load(Ordering::SeqCst), N / 2);
}

#[test]
fn a_detached_result_whose_drop_parks_completes_and_shutdown_unwinds_one_that_waits() {
    struct ParksOnDrop(Arc<AtomicUsize>, Duration);
    impl Drop for ParksOnDrop {
        fn drop(&mut self) {
            weft::sleep(self.1);
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let rt = workers(1);
    let drops = Arc::new(AtomicUsize::new(0));
    let d = Arc::clone(&drops);
    drop(rt.spawn(move || ParksOnDrop(d, Duration::from_millis(5))));
    eventually("the parking drop ended", || drops.load(Ordering::SeqCst) == 1);
    // One that parks for an hour when the runtime goes.
    let d = Arc::clone(&drops);
    drop(rt.spawn(move || ParksOnDrop(d, Duration::from_secs(3600))));
    std::thread::sleep(SETTLE);
    let t = Instant::now();
    drop(rt);
    assert!(t.elapsed() < LIVE, "the runtime's drop hung");
    // Still works afterwards.
    assert_eq!(weft::spawn(|| 1).join().unwrap(), 1);
}

#[test]
fn nested_handles_in_results_are_dropped_in_a_chain() {
    let rt = workers(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let d = Arc::clone(&drops);
    let outer = rt.spawn(move || {
        let d2 = Arc::clone(&d);
        let inner = weft::spawn(move || {
            weft::sleep(Duration::from_millis(10));
            Counted::new(&d2)
        });
        (Counted::new(&d), inner)
    });
    drop(outer);
    eventually("both dropped", || drops.load(Ordering::SeqCst) == 2);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}

#[test]
fn a_joiner_cancelled_while_the_joined_finishes_drops_the_result_once() {
    let rt = workers(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let spawned = Arc::new(AtomicUsize::new(0));
    const N: usize = 300;
    for i in 0..N {
        let (d, sp) = (Arc::clone(&drops), Arc::clone(&spawned));
        let joiner = rt.spawn(move || {
            let h = weft::spawn(move || {
                if i % 2 == 0 {
                    weft::yield_now();
                }
                Counted::new(&d)
            });
            sp.fetch_add(1, Ordering::SeqCst);
            let v = h.join();
            assert!(v.is_ok());
            drop(v);
        });
        std::thread::sleep(Duration::from_micros((i % 5) as u64 * 40));
        joiner.cancel();
        let _ = join_live(joiner, "joiner");
    }
    // Every inner coroutine that was spawned runs to its end (nobody
    // cancels it): one result each, dropped once (by the joiner, or
    // detached at the joiner's unwind).
    let n = spawned.load(Ordering::SeqCst);
    assert!(n > N / 10, "too few joiners started ({n}): the test tests little");
    eventually("every inner result dropped", || drops.load(Ordering::SeqCst) >= n);
    drop(rt);
    assert_eq!(drops.load(Ordering::SeqCst), n);
}

// ------------------------------------------- join: where the drop now runs

/// A value whose destructor waits (a park) before it finishes its work.
struct WaitsThenCounts {
    finished: Arc<AtomicUsize>,
    started: Arc<AtomicUsize>,
}

impl Drop for WaitsThenCounts {
    fn drop(&mut self) {
        self.started.fetch_add(1, Ordering::SeqCst);
        weft::sleep(Duration::from_millis(1));
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_cancel_that_lost_the_race_does_not_cut_short_the_detached_results_drop() {
    // The coroutine returns its value without ever parking, so the cancel
    // has no effect on it ("a coroutine that finishes before it reaches a
    // park or yield joins with its value"). Its handle was dropped first,
    // so the value is dropped at its end, in the coroutine: the cancel must
    // not unwind that destructor halfway.
    let rt = workers(1);
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    const N: usize = 20;
    for _ in 0..N {
        let go = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, f, g, r) = (Arc::clone(&started), Arc::clone(&finished), Arc::clone(&go), Arc::clone(&running));
        let h = rt.spawn(move || {
            r.store(true, Ordering::SeqCst);
            while !g.load(Ordering::SeqCst) {
                std::hint::spin_loop(); // no park, no yield: the cancel cannot land
            }
            WaitsThenCounts { finished: f, started: s }
        });
        while !running.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        h.cancel();
        drop(h);
        go.store(true, Ordering::SeqCst);
    }
    eventually("every result's drop started", || started.load(Ordering::SeqCst) == N);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        finished.load(Ordering::SeqCst),
        N,
        "a detached result's destructor was unwound by a cancel that the coroutine had already outrun \
         (the same value dropped through a kept handle finishes its destructor)"
    );
}

weft::task_local! {
    static LOCAL_COUNTED: std::cell::RefCell<Option<Counted>> = std::cell::RefCell::new(None);
}

/// Puts a counted value in a task-local when dropped.
struct TouchesTaskLocal(Arc<AtomicUsize>);

impl Drop for TouchesTaskLocal {
    fn drop(&mut self) {
        let c = Counted::new(&self.0);
        LOCAL_COUNTED.with(|l| *l.borrow_mut() = Some(c));
    }
}

#[test]
fn a_detached_results_drop_that_sets_a_task_local_does_not_leak_it() {
    let rt = workers(1);
    let drops = Arc::new(AtomicUsize::new(0));
    let d = Arc::clone(&drops);
    let h = rt.spawn(move || {
        weft::sleep(Duration::from_millis(20));
        TouchesTaskLocal(d)
    });
    drop(h); // detached: the result is dropped at the coroutine's end
    std::thread::sleep(Duration::from_millis(200));
    drop(rt);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the task-local value set by the result's drop was leaked");
}

#[test]
fn unix_writers_in_slot_and_crowd_end_when_the_peer_shuts_its_reading_side() {
    let rt = workers(1);
    let (a, b) = UnixStream::pair().unwrap();
    set_small_buffers(&a, 4096);
    set_small_buffers(&b, 4096);
    let a = Arc::new(a);
    let writers: Vec<_> = (0..3)
        .map(|_| {
            let a = Arc::clone(&a);
            rt.spawn(move || {
                let chunk = [0u8; 4096];
                loop {
                    if let Err(e) = (&*a).write(&chunk) {
                        return e.kind();
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(SETTLE);
    b.shutdown(Shutdown::Read).unwrap();
    a.shutdown(Shutdown::Write).unwrap();
    for w in writers {
        let kind = join_live(w, "a writer whose socket was shut").unwrap();
        assert!(matches!(kind, ErrorKind::BrokenPipe | ErrorKind::ConnectionReset), "{kind:?}");
    }
}

#[test]
fn a_coroutine_that_drops_its_own_handle_drops_its_result_once() {
    let rt = workers(2);
    let drops = Arc::new(AtomicUsize::new(0));
    const N: usize = 40;
    for i in 0..N {
        let (tx, rx) = std::sync::mpsc::channel::<weft::JoinHandle<Counted>>();
        let d = Arc::clone(&drops);
        let h = rt.spawn(move || {
            let own = rx.recv().unwrap();
            if i % 2 == 0 {
                // Joining itself panics; the handle goes in that unwind.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || own.join()));
            } else {
                drop(own);
            }
            Counted::new(&d)
        });
        tx.send(h).unwrap();
    }
    eventually("all dropped", || drops.load(Ordering::SeqCst) >= N);
    std::thread::sleep(Duration::from_millis(30));
    drop(rt);
    assert_eq!(drops.load(Ordering::SeqCst), N);
}

#[test]
fn runtime_drop_with_acceptors_and_udp_receivers_in_slot_and_crowd() {
    let rt = workers(2);
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    listener.set_accept_timeout(Some(Duration::from_secs(3600))).unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let mut hs = Vec::new();
    for i in 0..8 {
        let (l, u, c) = (Arc::clone(&listener), Arc::clone(&udp), Counted::new(&drops));
        hs.push(rt.spawn(move || {
            let _c = c;
            if i % 2 == 0 {
                let _ = l.accept();
            } else {
                let mut b = [0u8; 4];
                let _ = u.recv_from(&mut b);
            }
        }));
    }
    std::thread::sleep(SETTLE);
    drop(rt);
    for h in hs {
        assert!(h.join().is_err());
    }
    assert_eq!(drops.load(Ordering::SeqCst), 8);
    let l = Arc::try_unwrap(listener).expect("listener still held");
    let u = Arc::try_unwrap(udp).expect("udp socket still held");
    drop((l, u));
}
