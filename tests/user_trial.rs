//! Programs a new user would write on weft, run as tests: a line-based chat
//! server, a pipeline with fan-out/fan-in and cancellation, a worker pool
//! mixing spawn_blocking/Semaphore/WaitGroup and a runtime dropped under
//! parked coroutines, and OS threads sharing locks and channels with
//! coroutines.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use weft::net::{TcpListener, TcpStream};
use weft::sync::channel::{self, Select};
use weft::sync::{Barrier, Condvar, Mutex, Semaphore, WaitGroup};

/// How long a test waits for something that must happen (a liveness
/// bound): far longer than any stall of a loaded machine, so that a test
/// fails only when the runtime never does it.
const LIVENESS: Duration = Duration::from_secs(30);

/// Polls `cond` from an OS thread (not a coroutine: it sleeps the thread)
/// until it holds; panics with `what` after [`LIVENESS`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIVENESS;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {LIVENESS:?}: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------
// (a) chat server
// ---------------------------------------------------------------------------

#[derive(Debug)]
enum Event {
    Join(u32, TcpStream),
    Line(u32, String),
    Leave(u32, Result<usize, ErrorKind>),
}

/// Sets SO_LINGER to 0 so that close() sends a RST.
fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid fd and a properly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

fn serve_client(id: u32, stream: TcpStream, hub: channel::Sender<Event>) {
    hub.send(Event::Join(id, stream.try_clone().unwrap())).unwrap();
    let mut reader = BufReader::new(stream);
    let mut lines = 0;
    let outcome = loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => break Ok(lines),
            Ok(_) if !line.ends_with('\n') => break Ok(lines), // partial line at EOF: dropped
            Ok(_) => {
                lines += 1;
                hub.send(Event::Line(id, line.trim_end().to_string())).unwrap();
            }
            Err(e) => break Err(e.kind()),
        }
    };
    hub.send(Event::Leave(id, outcome)).unwrap();
}

fn run_hub(rx: channel::Receiver<Event>) -> Vec<String> {
    let mut clients: BTreeMap<u32, TcpStream> = BTreeMap::new();
    let mut log = Vec::new();
    for event in rx {
        match event {
            Event::Join(id, mut stream) => {
                writeln!(stream, "welcome {id}").unwrap();
                clients.insert(id, stream);
                log.push(format!("join {id}"));
            }
            Event::Line(id, text) => {
                for (&other, stream) in clients.iter_mut() {
                    if other != id {
                        // A client may have gone; ignore its errors.
                        let _ = writeln!(stream, "{id}: {text}");
                    }
                }
                log.push(format!("line {id} {text}"));
            }
            Event::Leave(id, outcome) => {
                clients.remove(&id);
                log.push(format!("leave {id} {outcome:?}"));
            }
        }
    }
    log
}

fn read_line_timeout(reader: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    Ok(line)
}

#[test]
fn chat_server() {
    let runtime = weft::Runtime::builder().workers(2).build().unwrap();
    let log = runtime.block_on(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (hub_tx, hub_rx) = channel::unbounded();
        let hub = weft::spawn(move || run_hub(hub_rx));

        let acceptor_hub = hub_tx.clone();
        let acceptor = weft::spawn(move || {
            let mut next = 0u32;
            let mut sessions = Vec::new();
            loop {
                let (stream, _) = listener.accept().unwrap();
                let hub = acceptor_hub.clone();
                let id = next;
                next += 1;
                sessions.push(weft::spawn(move || serve_client(id, stream, hub)));
            }
            #[allow(unreachable_code)]
            sessions
        });
        drop(hub_tx);

        // Phase 1: four well-behaved clients.
        const N: usize = 4;
        let barrier = Arc::new(Barrier::new(N));
        let clients: Vec<_> = (0..N)
            .map(|c| {
                let barrier = Arc::clone(&barrier);
                weft::spawn(move || {
                    let stream = TcpStream::connect(addr).unwrap();
                    stream.set_read_timeout(Some(LIVENESS)).unwrap();
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    let welcome = read_line_timeout(&mut reader).unwrap();
                    assert!(welcome.starts_with("welcome "), "{welcome:?}");
                    let my_id: u32 = welcome.trim_end()["welcome ".len()..].parse().unwrap();
                    barrier.wait();
                    writeln!(writer, "hello from client {c}").unwrap();
                    let mut got = BTreeSet::new();
                    for _ in 0..N - 1 {
                        got.insert(read_line_timeout(&mut reader).unwrap());
                    }
                    // Nothing more: our own line is not echoed back.
                    reader.get_ref().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    let err = read_line_timeout(&mut reader).unwrap_err();
                    assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err:?}");
                    // Wait for the others to have read before leaving, or a
                    // broadcast to us may race with our close.
                    barrier.wait();
                    (my_id, got.len())
                })
            })
            .collect();
        let mut ids = BTreeSet::new();
        for c in clients {
            let (id, n) = c.join().unwrap();
            assert_eq!(n, N - 1);
            ids.insert(id);
        }
        assert_eq!(ids.len(), N);

        // Phase 2: a rude client that resets mid-line.
        let rude = TcpStream::connect(addr).unwrap();
        rude.set_read_timeout(Some(LIVENESS)).unwrap();
        let mut rude_reader = BufReader::new(rude.try_clone().unwrap());
        let welcome = read_line_timeout(&mut rude_reader).unwrap();
        assert_eq!(welcome, format!("welcome {N}\n"));
        (&rude).write_all(b"partial line without newl").unwrap();
        weft::sleep(Duration::from_millis(20));
        set_linger_zero(&rude);
        drop(rude_reader);
        drop(rude);

        // Phase 3: a last client talks; nobody else is there.
        let mut last = TcpStream::connect(addr).unwrap();
        last.set_read_timeout(Some(LIVENESS)).unwrap();
        let mut last_reader = BufReader::new(last.try_clone().unwrap());
        assert_eq!(read_line_timeout(&mut last_reader).unwrap(), format!("welcome {}\n", N + 1));
        writeln!(last, "anyone?").unwrap();
        last.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_line_timeout(&mut last_reader).unwrap(), "", "the server closes once it has seen our EOF");
        drop(last_reader);
        drop(last);

        // Shut down: cancel the acceptor (parked in accept); the hub ends
        // when every session's sender is gone.
        weft::sleep(Duration::from_millis(50));
        acceptor.cancel();
        let err = acceptor.join().unwrap_err();
        assert!(err.is_cancelled(), "{err}");
        hub.join_timeout_or_panic()
    });
    let joins = log.iter().filter(|l| l.starts_with("join ")).count();
    assert_eq!(joins, 6, "{log:#?}");
    let lines: Vec<_> = log.iter().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(lines.len(), 5, "{log:#?}");
    assert!(!lines.iter().any(|l| l.contains("partial")), "{log:#?}");
    // The reset is reported to whichever call on that socket sees it first:
    // the session's read, or the hub's broadcast of the next line (then the
    // read sees EOF). Both are the kernel's semantics, as with std.
    assert!(log.iter().any(|l| l == "leave 4 Err(ConnectionReset)" || l == "leave 4 Ok(0)"), "{log:#?}");
    assert!(log.iter().any(|l| l == "leave 5 Ok(1)"), "{log:#?}");
}

trait JoinOrPanic<T> {
    fn join_timeout_or_panic(self) -> T;
}
impl<T> JoinOrPanic<T> for weft::JoinHandle<T> {
    fn join_timeout_or_panic(mut self) -> T {
        match self.join_timeout(LIVENESS) {
            Some(r) => r.unwrap(),
            None => panic!("join timed out"),
        }
    }
}

// ---------------------------------------------------------------------------
// (b) pipeline
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Ledger {
    delivered: Mutex<Vec<u64>>,
    dropped: Mutex<Vec<u64>>,
}

struct Item {
    id: u64,
    value: u64,
    delivered: bool,
    ledger: Arc<Ledger>,
}

impl Drop for Item {
    fn drop(&mut self) {
        if self.delivered {
            self.ledger.delivered.lock().push(self.id);
        } else {
            self.ledger.dropped.lock().push(self.id);
        }
    }
}

#[test]
fn pipeline_fan_out_fan_in_with_cancel() {
    const N: u64 = 2000;
    let runtime = weft::Runtime::builder().workers(2).build().unwrap();
    let ledger = Arc::new(Ledger::default());
    let ledger2 = Arc::clone(&ledger);
    let (ticks, sum) = runtime.block_on(move || {
        let ledger = ledger2;
        let (src_tx, src_rx) = channel::bounded::<Item>(4);
        let (out_tx, out_rx) = channel::bounded::<Item>(4);
        let (stop_tx, stop_rx) = channel::bounded::<()>(0);
        // The producer stops half-way until the cancel is issued, so that it
        // lands mid-stream however late this coroutine runs.
        let (half_tx, half_rx) = channel::bounded::<()>(0);
        let (cancelled_tx, cancelled_rx) = channel::bounded::<()>(0);

        let producer = {
            let ledger = Arc::clone(&ledger);
            weft::spawn(move || {
                for id in 0..N {
                    if id == N / 2 {
                        half_tx.send(()).unwrap();
                        cancelled_rx.recv_timeout(LIVENESS).expect("the cancel was issued");
                    }
                    src_tx.send(Item { id, value: id, delivered: false, ledger: Arc::clone(&ledger) }).unwrap();
                    if id % 100 == 0 {
                        weft::sleep(Duration::from_millis(1));
                    }
                }
            })
        };
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let rx = src_rx.clone();
                let tx = out_tx.clone();
                weft::Builder::new()
                    .name(format!("square-{w}"))
                    .spawn(move || {
                        let mut n = 0;
                        for mut item in rx.iter() {
                            item.value *= item.value;
                            tx.send(item).unwrap();
                            n += 1;
                        }
                        n
                    })
                    .unwrap()
            })
            .collect();
        drop(src_rx);
        drop(out_tx);

        let collector = weft::spawn(move || {
            let mut sum = 0u64;
            let mut ticks = 0;
            let mut stopping = false;
            loop {
                let mut sel = Select::new();
                let i_out = sel.recv(&out_rx);
                let i_stop = sel.recv(&stop_rx);
                match sel.select_timeout(Duration::from_millis(20)) {
                    Ok(op) if op.index() == i_out => match op.recv(&out_rx) {
                        Ok(mut item) => {
                            assert_eq!(item.value, item.id * item.id);
                            sum += item.value;
                            item.delivered = true;
                        }
                        Err(_) => break,
                    },
                    Ok(op) if op.index() == i_stop => {
                        let _ = op.recv(&stop_rx);
                        stopping = true;
                    }
                    Ok(_) => unreachable!(),
                    Err(_) => ticks += 1,
                }
                let _ = stopping;
            }
            (ticks, sum)
        });

        // Cancel one worker mid-stream.
        half_rx.recv_timeout(LIVENESS).expect("the producer reached half-way");
        workers[1].cancel();
        cancelled_tx.send(()).unwrap();
        producer.join().unwrap();
        let mut total = 0;
        let mut cancelled = 0;
        for w in workers {
            match w.join() {
                Ok(n) => total += n,
                Err(e) => {
                    assert!(e.is_cancelled(), "{e}");
                    cancelled += 1
                }
            }
        }
        assert_eq!(cancelled, 1);
        let _ = total;
        drop(stop_tx);
        collector.join().unwrap()
    });
    let mut delivered = ledger.delivered.lock().clone();
    let dropped = ledger.dropped.lock().clone();
    delivered.sort_unstable();
    let set: BTreeSet<_> = delivered.iter().copied().collect();
    assert_eq!(set.len(), delivered.len(), "duplicates delivered");
    assert!(dropped.len() <= 1, "cancel dropped more than the item in hand: {dropped:?}");
    let mut all: Vec<_> = delivered.iter().chain(dropped.iter()).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<_>>());
    let expect: u64 = delivered.iter().map(|i| i * i).sum();
    assert_eq!(sum, expect);
    let _ = ticks;
}

// ---------------------------------------------------------------------------
// (c) worker pool, and a runtime dropped under parked coroutines
// ---------------------------------------------------------------------------

weft::task_local! {
    static JOB: std::cell::Cell<usize> = std::cell::Cell::new(usize::MAX);
}

struct Counted(Arc<AtomicUsize>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn worker_pool_and_runtime_drop() {
    let runtime = weft::Runtime::builder().workers(2).build().unwrap();
    let sem = Arc::new(Semaphore::new(2));
    let inflight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let wg = WaitGroup::new();
    let results = Arc::new(Mutex::new(HashMap::new()));
    for job in 0..6usize {
        let (sem, inflight, peak, wg, results) =
            (Arc::clone(&sem), Arc::clone(&inflight), Arc::clone(&peak), wg.clone(), Arc::clone(&results));
        runtime.spawn(move || {
            JOB.with(|j| j.set(job));
            let _permit = sem.acquire();
            let now = inflight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let len = weft::spawn_blocking(move || {
                std::thread::sleep(Duration::from_millis(10));
                std::fs::read("/proc/self/stat").unwrap().len()
            })
            .join()
            .unwrap();
            assert_eq!(JOB.with(|j| j.get()), job);
            inflight.fetch_sub(1, Ordering::SeqCst);
            results.lock().insert(job, len > 0);
            drop(wg);
        });
    }
    let t0 = Instant::now();
    assert!(wg.wait_timeout(LIVENESS));
    assert!(t0.elapsed() >= Duration::from_millis(30), "6 jobs, 2 at a time, 10 ms each");
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(results.lock().len(), 6);
    assert!(results.lock().values().all(|&ok| ok));

    // join_timeout then cancel a coroutine parked on the semaphore.
    let held = sem.acquire_many(2);
    let mut starved = {
        let sem = Arc::clone(&sem);
        runtime.spawn(move || {
            let _p = sem.acquire();
            1
        })
    };
    assert!(starved.join_timeout(Duration::from_millis(20)).is_none());
    starved.cancel();
    let err = starved.join_timeout(LIVENESS).expect("cancel ends it").unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    drop(held);
    assert_eq!(sem.available_permits(), 2);

    // Drop the runtime while coroutines are parked in a socket read and a
    // channel receive: their destructors run, their joins say Shutdown.
    let drops = Arc::new(AtomicUsize::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = channel::bounded::<u8>(0);
    let reader = {
        let guard = Counted(Arc::clone(&drops));
        runtime.spawn(move || {
            let _guard = guard;
            let mut s = TcpStream::connect(addr).unwrap();
            let mut buf = [0u8; 8];
            s.read(&mut buf)
        })
    };
    let receiver = {
        let guard = Counted(Arc::clone(&drops));
        runtime.spawn(move || {
            let _guard = guard;
            rx.recv()
        })
    };
    let (_peer, _) = listener.accept().unwrap();
    // Until both are parked where this part means them to be (and the
    // earlier jobs' coroutines, which may still be ending, are gone).
    let parked_on = |dump: &weft::Dump, id: u64| dump.coroutine(id).map(|c| c.state());
    wait_until("the reader and the receiver park, alone on the runtime", || {
        let dump = runtime.dump();
        dump.coroutines().len() == 2
            && matches!(
                parked_on(&dump, reader.id()),
                Some(weft::CoroutineState::Parked { on: weft::ParkedOn::Readable(_), .. })
            )
            && matches!(
                parked_on(&dump, receiver.id()),
                Some(weft::CoroutineState::Parked { on: weft::ParkedOn::ChannelRecv(_), .. })
            )
    });
    let dump = runtime.dump();
    assert_eq!(dump.coroutines().len(), 2, "{dump}");
    let t0 = Instant::now();
    drop(runtime);
    assert!(t0.elapsed() < LIVENESS);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    assert_eq!(reader.join().unwrap_err().kind(), weft::JoinErrorKind::Shutdown);
    assert_eq!(receiver.join().unwrap_err().kind(), weft::JoinErrorKind::Shutdown);
    // The channel is disconnected now that the receiver is gone.
    assert!(tx.send(1).is_err());
}

// ---------------------------------------------------------------------------
// (d) OS threads and coroutines on the same Mutex/Condvar/channel
// ---------------------------------------------------------------------------

struct Queue {
    items: Mutex<std::collections::VecDeque<u64>>,
    not_empty: Condvar,
    not_full: Condvar,
    cap: usize,
}

impl Queue {
    fn push(&self, v: u64) {
        let mut q = self.items.lock();
        q = self.not_full.wait_while(q, |q| q.len() >= self.cap);
        q.push_back(v);
        drop(q);
        self.not_empty.notify_one();
    }
    fn pop(&self) -> Option<u64> {
        let mut q = self.items.lock();
        q = self.not_empty.wait_while(q, |q| q.is_empty());
        let v = q.pop_front().unwrap();
        drop(q);
        self.not_full.notify_one();
        if v == u64::MAX { None } else { Some(v) }
    }
}

#[test]
fn threads_and_coroutines_share_locks_and_channels() {
    let runtime = weft::Runtime::builder().workers(2).build().unwrap();
    let queue = Arc::new(Queue {
        items: Mutex::new(Default::default()),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
        cap: 3,
    });
    const PER: u64 = 500;
    // Producers: 2 OS threads, 2 coroutines. Consumers: 1 OS thread, 2 coroutines.
    let mut producers_t = Vec::new();
    for p in 0..2u64 {
        let q = Arc::clone(&queue);
        producers_t.push(std::thread::spawn(move || (0..PER).for_each(|i| q.push(p * PER + i))));
    }
    let mut producers_c = Vec::new();
    for p in 2..4u64 {
        let q = Arc::clone(&queue);
        producers_c.push(runtime.spawn(move || (0..PER).for_each(|i| q.push(p * PER + i))));
    }
    let (res_tx, res_rx) = channel::bounded::<Vec<u64>>(0);
    let consumer_t = {
        let q = Arc::clone(&queue);
        let tx = res_tx.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(v) = q.pop() {
                got.push(v);
            }
            tx.send(got).unwrap();
        })
    };
    let consumers_c: Vec<_> = (0..2)
        .map(|_| {
            let q = Arc::clone(&queue);
            let tx = res_tx.clone();
            runtime.spawn(move || {
                let mut got = Vec::new();
                while let Some(v) = q.pop() {
                    got.push(v);
                }
                tx.send(got).unwrap();
            })
        })
        .collect();
    drop(res_tx);
    for p in producers_t {
        p.join().unwrap();
    }
    for p in producers_c {
        p.join().unwrap();
    }
    for _ in 0..3 {
        queue.push(u64::MAX);
    }
    // Collected on a coroutine (rendezvous from threads and coroutines).
    let mut all: Vec<u64> = runtime.block_on(move || res_rx.iter().flatten().collect());
    consumer_t.join().unwrap();
    for c in consumers_c {
        c.join().unwrap();
    }
    all.sort_unstable();
    assert_eq!(all, (0..4 * PER).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------
// Probes: edges a user hits, compared with std / crossbeam
// ---------------------------------------------------------------------------

fn rt1() -> weft::Runtime {
    weft::Runtime::builder().workers(1).build().unwrap()
}

/// std: `set_read_timeout(Some(Duration::ZERO))` is an InvalidInput error.
#[test]
fn probe_zero_read_timeout_is_invalid_input_like_std() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let err = s.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = s.set_write_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

/// std reports a read timeout as WouldBlock (EAGAIN) on Linux.
#[test]
fn probe_read_timeout_kind_matches_std_in_coroutine() {
    let rt = rt1();
    let kind = rt.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let _peer = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let t0 = Instant::now();
        let e = s.read(&mut [0u8; 4]).unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(10));
        e.kind()
    });
    assert_eq!(kind, ErrorKind::WouldBlock);
}

/// cancel() of coroutines parked in a socket read, a channel recv, a
/// channel send, an accept and a Condvar wait.
#[test]
fn probe_cancel_parked_in_io_and_channels() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let client = std::net::TcpStream::connect(addr).unwrap();
    let (server, _) = l.accept().unwrap();
    let (tx, rx) = channel::bounded::<u8>(0);
    let (tx2, rx2) = channel::bounded::<u8>(0);
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let pair2 = Arc::clone(&pair);
    let handles = vec![
        rt.spawn(move || {
            let mut s = server;
            s.read(&mut [0u8; 1]).map(|_| ()).map_err(|e| e.to_string())
        }),
        rt.spawn(move || rx.recv().map(|_| ()).map_err(|e| e.to_string())),
        rt.spawn(move || tx2.send(7).map_err(|e| e.to_string())),
        rt.spawn(move || l.accept().map(|_| ()).map_err(|e| e.to_string())),
        rt.spawn(move || {
            let (m, c) = &*pair2;
            let g = c.wait_while(m.lock(), |done| !*done);
            drop(g);
            Ok(())
        }),
    ];
    std::thread::sleep(Duration::from_millis(30));
    for h in &handles {
        assert!(!h.is_finished());
        h.cancel();
    }
    for (i, mut h) in handles.into_iter().enumerate() {
        let r = h.join_timeout(LIVENESS).unwrap_or_else(|| panic!("handle {i}: cancel did not end it"));
        assert!(r.unwrap_err().is_cancelled(), "handle {i}");
    }
    drop((client, tx, rx2, pair));
}

/// weft::sleep from a plain OS thread (no runtime): does it sleep?
#[test]
fn probe_sleep_on_os_thread() {
    let t0 = Instant::now();
    weft::sleep(Duration::from_millis(20));
    assert!(t0.elapsed() >= Duration::from_millis(20));
}

/// Select with a disconnected receiver: ready at once, recv gives Err.
#[test]
fn probe_select_timeout_on_all_disconnected() {
    let (tx, rx) = channel::bounded::<u8>(1);
    drop(tx);
    let mut sel = Select::new();
    let i = sel.recv(&rx);
    let op = sel.select_timeout(LIVENESS).expect("disconnected is ready");
    assert_eq!(op.index(), i);
    assert!(op.recv(&rx).is_err());
}

/// select! macro, as crossbeam's.
#[test]
fn probe_select_macro() {
    let rt = rt1();
    let got = rt.block_on(|| {
        let (tx, rx) = channel::bounded::<u32>(1);
        let (_tx2, rx2) = channel::bounded::<u32>(1);
        tx.send(5).unwrap();
        weft::select! {
            recv(rx) -> v => v.unwrap(),
            recv(rx2) -> v => v.unwrap() + 100,
            default(Duration::from_millis(50)) => 0,
        }
    });
    assert_eq!(got, 5);
}

/// A UDP round trip with a read timeout inside coroutines.
#[test]
fn probe_udp_round_trip() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    rt.block_on(|| {
        let a = weft::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = weft::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let baddr = b.local_addr().unwrap();
        let aaddr = a.local_addr().unwrap();
        let echo = weft::spawn(move || {
            let mut buf = [0u8; 64];
            let (n, from) = b.recv_from(&mut buf).unwrap();
            b.send_to(&buf[..n], from).unwrap();
        });
        a.set_read_timeout(Some(LIVENESS)).unwrap();
        a.send_to(b"ping", baddr).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from, baddr);
        echo.join().unwrap();
        let _ = aaddr;
        a.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        assert_eq!(a.recv_from(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
    });
}

/// Unix stream pair, both ends in coroutines.
#[test]
fn probe_unix_pair() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    rt.block_on(|| {
        let (mut a, mut b) = weft::net::UnixStream::pair().unwrap();
        let h = weft::spawn(move || {
            let mut s = String::new();
            b.read_to_string(&mut s).unwrap();
            s
        });
        a.write_all(b"over the pair").unwrap();
        drop(a);
        assert_eq!(h.join().unwrap(), "over the pair");
    });
}

/// Semaphore::acquire_many(n) with n > the permits that exist.
#[test]
fn probe_semaphore_edges() {
    let s = Semaphore::new(0);
    assert!(s.try_acquire_many(0).is_some());
    assert!(s.acquire_many_timeout(1, Duration::from_millis(10)).is_none());
    s.add_permits(3);
    let p = s.acquire_many(3);
    assert_eq!(p.num_permits(), 3);
    assert_eq!(s.available_permits(), 0);
    drop(p);
    assert_eq!(s.available_permits(), 3);
}

/// Barrier of 1 and 0, WaitGroup without clones.
#[test]
fn probe_barrier_and_waitgroup_edges() {
    assert!(Barrier::new(1).wait().is_leader());
    let _ = Barrier::new(0).wait();
    WaitGroup::new().wait();
    assert!(WaitGroup::new().wait_timeout(Duration::from_millis(1)));
}

/// The runtime's dump names what a coroutine waits on for socket I/O.
#[test]
fn probe_dump_names_socket_wait() {
    let rt = rt1();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = rt.spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.read(&mut [0u8; 1]).map(|_| ())
    });
    let (_peer, _) = l.accept().unwrap();
    // Until it has parked in the read (not still in the connect's wait for
    // writability, nor yet to run).
    let state = || rt.dump().coroutine(h.id()).expect("alive").state();
    wait_until(
        "the coroutine parks in its read",
        || matches!(state(), weft::CoroutineState::Parked { on, .. } if !matches!(on, weft::ParkedOn::Writable(_))),
    );
    let dump = rt.dump();
    let entry = dump.coroutine(h.id()).expect("alive");
    let state = entry.state();
    assert!(matches!(state, weft::CoroutineState::Parked { on: weft::ParkedOn::Readable(_), .. }), "{state:?}");
    println!("{dump:#}");
    h.cancel();
    let _ = h.join();
}

/// Huge timeouts (a user's "practically forever"): std and crossbeam accept
/// `Duration::MAX` and treat it as no deadline.
#[test]
fn probe_duration_max_timeouts() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    rt.block_on(|| {
        let (tx, rx) = channel::bounded::<u8>(1);
        let sender = weft::spawn(move || {
            weft::sleep(Duration::from_millis(5));
            tx.send(1).unwrap();
        });
        assert_eq!(rx.recv_timeout(Duration::MAX), Ok(1));
        let mut sender = sender;
        assert!(sender.join_timeout(Duration::MAX).unwrap().is_ok());
        let m = Mutex::new(0);
        assert!(m.try_lock_for(Duration::MAX).is_some());
        let s = Semaphore::new(1);
        assert!(s.acquire_timeout(Duration::MAX).is_some());
        let c = Condvar::new();
        let g = m.lock();
        let c2 = &c;
        let _ = c2;
        drop(g);
        let (tx, rx) = channel::bounded::<u8>(1);
        tx.send(3).unwrap();
        let mut sel = Select::new();
        sel.recv(&rx);
        let op = sel.select_timeout(Duration::MAX).unwrap();
        assert_eq!(op.recv(&rx), Ok(3));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::MAX)).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        peer.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        (&s).read_exact(&mut b).unwrap();
        let h = weft::spawn(|| weft::sleep(Duration::MAX));
        weft::sleep(Duration::from_millis(5));
        h.cancel();
        assert!(h.join().unwrap_err().is_cancelled());
        let wg = WaitGroup::new();
        assert!(wg.wait_timeout(Duration::MAX));
        let (tx, _rx) = channel::bounded::<u8>(1);
        tx.send_timeout(1, Duration::MAX).unwrap();
    });
}

#[test]
fn probe_duration_max_condvar_and_barrier() {
    let rt = rt1();
    rt.block_on(|| {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let p2 = Arc::clone(&pair);
        let h = weft::spawn(move || {
            *p2.0.lock() = true;
            p2.1.notify_all();
        });
        let (m, c) = &*pair;
        let (g, result) = c.wait_timeout_while(m.lock(), Duration::MAX, |v| !*v);
        assert!(*g && !result.timed_out());
        drop(g);
        h.join().unwrap();
        assert!(Barrier::new(1).wait_timeout(Duration::MAX).is_some());
    });
}

#[test]
fn probe_duration_max_on_os_thread() {
    let (tx, rx) = channel::bounded::<u8>(1);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        tx.send(1).unwrap();
    });
    assert_eq!(rx.recv_timeout(Duration::MAX), Ok(1));
    t.join().unwrap();
    let m = Mutex::new(0);
    assert!(m.try_lock_for(Duration::MAX).is_some());
    let mut h = weft::spawn(|| 1);
    assert_eq!(h.join_timeout(Duration::MAX).unwrap().unwrap(), 1);
}

#[test]
fn probe_messages_outside_coroutines() {
    let e = std::panic::catch_unwind(|| JOB.with(|j| j.get())).unwrap_err();
    println!(
        "task_local outside: {:?}",
        e.downcast_ref::<String>().map(String::as_str).or(e.downcast_ref::<&str>().copied())
    );
    assert!(JOB.try_with(|j| j.get()).is_err());
    let c = std::panic::catch_unwind(weft::current);
    println!(
        "current outside: {:?}",
        c.as_ref().map(|g| (g.id(), g.name().map(str::to_owned))).map_err(|e| e.downcast_ref::<String>().cloned())
    );
    assert!(weft::try_current().is_none());
    let r = weft::Runtime::builder().workers(0).build();
    println!("workers(0): {:?}", r.as_ref().map(|r| r.workers()).map_err(|e| e.to_string()));
}

#[test]
fn probe_two_readers_one_socket() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    rt.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let mut s = s.try_clone().unwrap();
                weft::spawn(move || {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 1];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => break got,
                            Ok(_) => got.push(buf[0]),
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        weft::sleep(Duration::from_millis(10));
        for i in 0..100u8 {
            peer.write_all(&[i]).unwrap();
            if i % 10 == 0 {
                weft::sleep(Duration::from_millis(1));
            }
        }
        drop(peer);
        let mut all: Vec<u8> = Vec::new();
        for mut r in readers {
            all.extend(r.join_timeout(LIVENESS).expect("reader hung on EOF").unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (0..100u8).collect::<Vec<_>>());
    });
}

#[test]
fn probe_connect_refused_and_broken_pipe() {
    let rt = rt1();
    rt.block_on(|| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert_eq!(TcpStream::connect(addr).unwrap_err().kind(), ErrorKind::ConnectionRefused);
        let e = TcpStream::connect_timeout(&addr, LIVENESS).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused);

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (peer, _) = l.accept().unwrap();
        drop(peer);
        weft::sleep(Duration::from_millis(5));
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = s.write_all(&[0u8; 65536]) {
                err = Some(e);
                break;
            }
        }
        let kind = err.expect("writes to a closed peer fail").kind();
        assert!(matches!(kind, ErrorKind::BrokenPipe | ErrorKind::ConnectionReset), "{kind:?}");
    });
}

#[test]
fn probe_accept_timeout() {
    let rt = rt1();
    rt.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_accept_timeout(Some(Duration::from_millis(10))).unwrap();
        let t0 = Instant::now();
        let e = l.accept().unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(10));
        println!("accept timeout kind: {:?} / {e}", e.kind());
        assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
        // incoming() over a timeout: yields the error, then goes on.
        let mut inc = l.incoming();
        assert!(inc.next().unwrap().is_err());
    });
}

#[test]
fn probe_panic_while_locked_releases() {
    let rt = rt1();
    let m = Arc::new(Mutex::new(1));
    let m2 = Arc::clone(&m);
    let h = rt.spawn(move || {
        let _g = m2.lock();
        weft::sleep(Duration::from_millis(1));
        panic!("boom (expected)");
    });
    assert!(h.join().unwrap_err().is_panic());
    assert_eq!(*m.try_lock().expect("released"), 1);
}

/// A stream made in one runtime's coroutine, used in another runtime after
/// the first is dropped; and a stream made on an OS thread, then moved into
/// a coroutine of a one-worker runtime: its read must park the coroutine,
/// not block the worker (a ticker on the same worker must keep running).
#[test]
fn probe_stream_moves_between_runtimes_and_threads() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let a = rt1();
    let s = a.block_on(|| TcpStream::connect(addr).unwrap());
    let (mut peer, _) = l.accept().unwrap();
    drop(a);
    let b = rt1();
    let ticks = Arc::new(AtomicUsize::new(0));
    let t2 = Arc::clone(&ticks);
    let ticker = b.spawn(move || {
        for _ in 0..20 {
            weft::sleep(Duration::from_millis(2));
            t2.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut reader = b.spawn(move || {
        let mut s = s;
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).map(|_| buf)
    });
    // The ticker goes on while the read waits (it cannot end: no data yet).
    let deadline = Instant::now() + LIVENESS;
    while ticks.load(Ordering::SeqCst) < 10 {
        assert!(!reader.is_finished(), "the read ended without data");
        assert!(Instant::now() < deadline, "the worker was blocked by the read: {}", ticks.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_millis(1));
    }
    peer.write_all(b"abc").unwrap();
    assert_eq!(&reader.join_timeout(LIVENESS).expect("read hangs").unwrap().unwrap(), b"abc");
    ticker.join().unwrap();

    // Made on an OS thread.
    let s = TcpStream::connect(addr).unwrap();
    let (mut peer, _) = l.accept().unwrap();
    let ticks = Arc::new(AtomicUsize::new(0));
    let t2 = Arc::clone(&ticks);
    let ticker = b.spawn(move || {
        for _ in 0..20 {
            weft::sleep(Duration::from_millis(2));
            t2.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut reader = b.spawn(move || {
        let mut s = s;
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).map(|_| buf)
    });
    // The ticker goes on while the read waits (it cannot end: no data yet).
    let deadline = Instant::now() + LIVENESS;
    while ticks.load(Ordering::SeqCst) < 10 {
        assert!(!reader.is_finished(), "the read ended without data");
        assert!(Instant::now() < deadline, "the worker was blocked by the read: {}", ticks.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_millis(1));
    }
    peer.write_all(b"xyz").unwrap();
    assert_eq!(&reader.join_timeout(LIVENESS).expect("read hangs").unwrap().unwrap(), b"xyz");
    ticker.join().unwrap();
}

/// A coroutine of runtime A joins, and receives from, coroutines of
/// runtime B; B is dropped meanwhile.
#[test]
fn probe_cross_runtime_join_and_channel() {
    let a = rt1();
    let b = rt1();
    let (tx, rx) = channel::bounded::<u32>(0);
    let sleeper = b.spawn(|| weft::sleep(Duration::from_secs(3600)));
    let sender = b.spawn(move || {
        weft::sleep(Duration::from_millis(5));
        tx.send(9).unwrap();
    });
    let (got_tx, got_rx) = std::sync::mpsc::channel();
    let mut waiter = a.spawn(move || {
        let v = rx.recv().unwrap();
        sender.join().unwrap();
        got_tx.send(()).unwrap();
        (v, sleeper.join().unwrap_err().kind())
    });
    // B is dropped once the value has come over (and its sender ended),
    // while A's coroutine waits for B's sleeper.
    got_rx.recv_timeout(LIVENESS).expect("the value came over from B");
    drop(b);
    let (v, kind) = waiter.join_timeout(LIVENESS).expect("hang").unwrap();
    assert_eq!(v, 9);
    assert_eq!(kind, weft::JoinErrorKind::Shutdown);
}

struct DropLog(&'static str, Arc<Mutex<Vec<String>>>);
impl Drop for DropLog {
    fn drop(&mut self) {
        self.1.lock().push(self.0.to_string());
    }
}

weft::task_local! {
    static SESSION: std::cell::RefCell<Option<DropLog>> = std::cell::RefCell::new(None);
    static OTHER: std::cell::Cell<u32> = std::cell::Cell::new(7);
}

/// A destructor of a task-local that reads another task-local, and a
/// task-local set by a coroutine that is cancelled or whose runtime drops.
#[test]
fn probe_task_local_destructors() {
    struct ReadsOther(Arc<Mutex<Vec<String>>>);
    impl Drop for ReadsOther {
        fn drop(&mut self) {
            let v = OTHER.try_with(|o| o.get());
            self.0.lock().push(format!("other in dtor: {v:?}"));
        }
    }
    weft::task_local! {
        static READS: std::cell::RefCell<Option<ReadsOther>> = std::cell::RefCell::new(None);
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let l2 = Arc::clone(&log);
    rt.spawn(move || {
        OTHER.with(|o| o.set(42));
        READS.with(|r| *r.borrow_mut() = Some(ReadsOther(l2)));
    })
    .join()
    .unwrap();
    let (set_tx, set_rx) = std::sync::mpsc::channel();
    let l2 = Arc::clone(&log);
    let set = set_tx.clone();
    let h = rt.spawn(move || {
        SESSION.with(|s| *s.borrow_mut() = Some(DropLog("cancelled", l2)));
        set.send(()).unwrap();
        weft::sleep(Duration::from_secs(3600));
    });
    set_rx.recv_timeout(LIVENESS).expect("the coroutine set its task-local");
    h.cancel();
    assert!(h.join().unwrap_err().is_cancelled());
    let l2 = Arc::clone(&log);
    let _h = rt.spawn(move || {
        SESSION.with(|s| *s.borrow_mut() = Some(DropLog("shutdown", l2)));
        set_tx.send(()).unwrap();
        weft::sleep(Duration::from_secs(3600));
    });
    set_rx.recv_timeout(LIVENESS).expect("the coroutine set its task-local");
    drop(rt);
    let log = log.lock().clone();
    println!("{log:?}");
    assert!(log.contains(&"cancelled".to_string()), "{log:?}");
    assert!(log.contains(&"shutdown".to_string()), "{log:?}");
    assert!(log.iter().any(|l| l.starts_with("other in dtor")), "{log:?}");
}

/// cancel() of a spawn_blocking job that is running: it runs to the end;
/// what does join say?
#[test]
fn probe_cancel_running_blocking_job() {
    let rt = rt1();
    let _e = rt.enter();
    let started = Arc::new(AtomicUsize::new(0));
    let s2 = Arc::clone(&started);
    let h = weft::spawn_blocking(move || {
        s2.store(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        5
    });
    while started.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    h.cancel();
    let r = h.join();
    println!("cancel of a running job joins with: {:?}", r.as_ref().map_err(|e| e.to_string()));
}

/// Metrics and dump from a user's point of view.
#[test]
fn probe_metrics_display() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let hs: Vec<_> = (0..10).map(|_| rt.spawn(|| weft::sleep(Duration::from_millis(20)))).collect();
    std::thread::sleep(Duration::from_millis(5));
    let m = rt.metrics();
    println!("{m}");
    for h in hs {
        h.join().unwrap();
    }
    let m = rt.metrics();
    println!("{m}");
}

/// "Timed forms never return early": from a coroutine and from a thread.
#[test]
fn probe_timeouts_never_early() {
    fn check_all(tag: &str) {
        let m = Mutex::new(0);
        let c = Condvar::new();
        let s = Semaphore::new(0);
        let (_tx, rx) = channel::bounded::<u8>(0);
        let (txf, _rxf) = channel::bounded::<u8>(0);
        let held = Mutex::new(());
        let _g = held.lock();
        for i in 0..30u64 {
            let d = Duration::from_micros(100 + i * 37);
            let t = Instant::now();
            assert!(rx.recv_timeout(d).is_err());
            assert!(t.elapsed() >= d, "{tag} recv_timeout {d:?}: {:?}", t.elapsed());
            let t = Instant::now();
            assert!(txf.send_timeout(1, d).is_err());
            assert!(t.elapsed() >= d, "{tag} send_timeout");
            let t = Instant::now();
            assert!(s.acquire_timeout(d).is_none());
            assert!(t.elapsed() >= d, "{tag} acquire_timeout");
            let t = Instant::now();
            let (g, r) = c.wait_timeout(m.lock(), d);
            assert!(r.timed_out());
            drop(g);
            assert!(t.elapsed() >= d, "{tag} condvar wait_timeout {d:?}: {:?}", t.elapsed());
            let t = Instant::now();
            let mut sel = Select::new();
            sel.recv(&rx);
            assert!(sel.select_timeout(d).is_err());
            assert!(t.elapsed() >= d, "{tag} select_timeout");
            let t = Instant::now();
            weft::sleep(d);
            assert!(t.elapsed() >= d, "{tag} sleep");
        }
        let _ = std::thread::scope(|sc| {
            sc.spawn(|| {
                let t = Instant::now();
                let d = Duration::from_millis(2);
                assert!(held.try_lock_for(d).is_none());
                assert!(t.elapsed() >= d);
            })
            .join()
        });
    }
    check_all("thread");
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    rt.block_on(|| check_all("coroutine"));
}

/// Destructors that run during a runtime's shutdown and use the runtime.
#[test]
fn probe_shutdown_destructors_use_runtime() {
    struct OnDrop(Option<Box<dyn FnOnce() + Send>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            (self.0.take().unwrap())()
        }
    }
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let (report_tx, report_rx) = channel::unbounded::<String>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    for k in 0..4 {
        let report = report_tx.clone();
        let ready = ready_tx.clone();
        rt.spawn(move || {
            let stream = if k == 3 { Some(TcpStream::connect(addr).unwrap()) } else { None };
            let _d = OnDrop(Some(Box::new(move || {
                let what = match k {
                    0 => format!("spawn+join: {:?}", weft::spawn(|| 1).join().map_err(|e| e.kind())),
                    1 => {
                        // Longer than LIVENESS: were it not cut short, the
                        // drop below would take 60 s and fail its bound.
                        let t = Instant::now();
                        weft::sleep(Duration::from_secs(60));
                        format!("sleep returned early: {}", t.elapsed() < LIVENESS)
                    }
                    2 => {
                        let m = Mutex::new(5);
                        format!("lock: {}", *m.lock())
                    }
                    _ => {
                        let mut s = stream.unwrap();
                        format!("write: {:?}", s.write_all(b"bye").map_err(|e| e.kind()))
                    }
                };
                report.send(what).unwrap();
            })));
            ready.send(()).unwrap();
            weft::sleep(Duration::from_secs(3600));
        });
    }
    drop(report_tx);
    let (mut peer, _) = l.accept().unwrap();
    // Every coroutine holds its destructor before the runtime goes.
    for _ in 0..4 {
        ready_rx.recv_timeout(LIVENESS).expect("a coroutine started");
    }
    let t0 = Instant::now();
    drop(rt);
    assert!(t0.elapsed() < LIVENESS);
    let mut got: Vec<String> = report_rx.iter().collect();
    got.sort();
    println!("{got:?}");
    let mut buf = [0u8; 3];
    peer.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"bye");
    assert_eq!(got, ["lock: 5", "sleep returned early: true", "spawn+join: Err(Shutdown)", "write: Ok(())"]);
}

/// A chat-like broadcast with more clients than workers, each sending many
/// lines; everyone reads everything.
#[test]
fn probe_broadcast_many_clients() {
    const C: usize = 24;
    const LINES: usize = 20;
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    rt.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (hub_tx, hub_rx) = channel::unbounded::<Event>();
        let hub = weft::spawn(move || run_hub(hub_rx));
        let acceptor = {
            let hub_tx = hub_tx.clone();
            weft::spawn(move || {
                for id in 0..C as u32 {
                    let (s, _) = l.accept().unwrap();
                    let hub = hub_tx.clone();
                    weft::spawn(move || serve_client(id, s, hub));
                }
            })
        };
        drop(hub_tx);
        let barrier = Arc::new(Barrier::new(C));
        let clients: Vec<_> = (0..C)
            .map(|c| {
                let barrier = Arc::clone(&barrier);
                weft::spawn(move || {
                    let s = TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(LIVENESS)).unwrap();
                    let mut r = BufReader::new(&s);
                    let mut w = &s;
                    assert!(read_line_timeout_ref(&mut r).starts_with("welcome"));
                    barrier.wait();
                    let writer = {
                        let s2 = s.try_clone().unwrap();
                        weft::spawn(move || {
                            let mut w = &s2;
                            for i in 0..LINES {
                                writeln!(w, "c{c} l{i}").unwrap();
                            }
                        })
                    };
                    let mut n = 0;
                    while n < (C - 1) * LINES {
                        let line = read_line_timeout_ref(&mut r);
                        assert!(line.ends_with('\n'), "{line:?} after {n}");
                        n += 1;
                    }
                    writer.join().unwrap();
                    barrier.wait();
                    let _ = &mut w;
                    n
                })
            })
            .collect();
        for c in clients {
            assert_eq!(c.join().unwrap(), (C - 1) * LINES);
        }
        acceptor.join().unwrap();
        let log = hub.join().unwrap();
        assert_eq!(log.iter().filter(|l| l.starts_with("line")).count(), C * LINES);
    });
}

fn read_line_timeout_ref(r: &mut BufReader<&TcpStream>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).unwrap();
    s
}

/// A coroutine cancelled while in Condvar::wait must not unlock a mutex
/// that somebody else holds now; one cancelled while waiting for a lock
/// must not end up owning it.
#[test]
fn probe_cancel_in_condvar_wait_keeps_others_lock() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
    let p2 = Arc::clone(&pair);
    let waiter = rt.spawn(move || {
        let (m, c) = &*p2;
        let mut g = m.lock();
        loop {
            g = c.wait(g);
            *g += 1;
        }
    });
    std::thread::sleep(Duration::from_millis(20));
    let (m, c) = &*pair;
    let g = m.lock(); // an OS thread holds it now
    waiter.cancel();
    std::thread::sleep(Duration::from_millis(20));
    assert!(m.is_locked());
    let other = std::thread::scope(|s| s.spawn(|| m.try_lock().is_some()).join().unwrap());
    assert!(!other, "the cancelled waiter unlocked a mutex held by another thread");
    drop(g);
    assert!(waiter.join().unwrap_err().is_cancelled());
    assert!(!m.is_locked());
    assert_eq!(*m.lock(), 0);
    assert_eq!(c.notify_all(), 0);

    // Cancelled while waiting for the lock.
    let m = Arc::new(Mutex::new(()));
    let g = m.lock();
    let m2 = Arc::clone(&m);
    let locker = rt.spawn(move || {
        let _g = m2.lock();
        weft::sleep(Duration::from_secs(3600));
    });
    std::thread::sleep(Duration::from_millis(10));
    locker.cancel();
    std::thread::sleep(Duration::from_millis(10));
    drop(g);
    assert!(locker.join().unwrap_err().is_cancelled());
    assert!(m.try_lock().is_some());
}

/// RwLock shared by threads and coroutines, with upgradable reads.
#[test]
fn probe_rwlock_mixed() {
    use weft::sync::RwLock;
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let lock = Arc::new(RwLock::new(Vec::<u32>::new()));
    let mut ths = Vec::new();
    for t in 0..2u32 {
        let lock = Arc::clone(&lock);
        ths.push(std::thread::spawn(move || {
            for i in 0..200 {
                let up = lock.upgradable_read();
                if !up.contains(&(t * 1000 + i)) {
                    let mut w = weft::sync::RwLockUpgradableReadGuard::upgrade(up);
                    w.push(t * 1000 + i);
                }
            }
        }));
    }
    let cs: Vec<_> = (2..4u32)
        .map(|t| {
            let lock = Arc::clone(&lock);
            rt.spawn(move || {
                for i in 0..200 {
                    {
                        let r = lock.read();
                        let _ = r.len();
                    }
                    lock.write().push(t * 1000 + i);
                    if i % 16 == 0 {
                        weft::yield_now();
                    }
                }
            })
        })
        .collect();
    ths.into_iter().for_each(|t| t.join().unwrap());
    cs.into_iter().for_each(|c| c.join().unwrap());
    let mut v = lock.read().clone();
    v.sort_unstable();
    let expect: Vec<u32> = (0..4).flat_map(|t| (0..200).map(move |i| t * 1000 + i)).collect();
    assert_eq!(v, expect);
}

/// Dropping a SelectedOperation of a receive "gives the value back to its
/// channel": where does it go on a full bounded channel and a rendezvous?
#[test]
fn probe_selected_operation_hand_back() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    rt.block_on(|| {
        // Order on a buffered channel.
        let (tx, rx) = channel::bounded::<u32>(2);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        let tx2 = tx.clone();
        let late = weft::spawn(move || tx2.send(3).unwrap());
        weft::sleep(Duration::from_millis(5));
        {
            let mut sel = Select::new();
            sel.recv(&rx);
            drop(sel.select());
        }
        late.join().unwrap();
        let got: Vec<u32> = rx.try_iter().collect();
        println!("bounded(2) after hand-back: {got:?} (len reported before: n/a)");
        assert_eq!(got, [1, 2, 3], "hand-back reorders");

        // Rendezvous.
        let (tx, rx) = channel::bounded::<u32>(0);
        let sender = weft::spawn(move || tx.send(7));
        weft::sleep(Duration::from_millis(5));
        {
            let mut sel = Select::new();
            sel.recv(&rx);
            drop(sel.select());
        }
        let r = sender.join().unwrap();
        println!("rendezvous sender saw {r:?}; then try_recv: {:?}", rx.try_recv());
    });
}

/// oneshot between an OS thread and a coroutine, and in a select.
#[test]
fn probe_oneshot_mixed() {
    let rt = rt1();
    let (tx, rx) = channel::oneshot::<String>();
    let h = rt.spawn(move || rx.recv());
    std::thread::sleep(Duration::from_millis(5));
    tx.send("hi".into()).unwrap();
    assert_eq!(h.join().unwrap().unwrap(), "hi");
    let (tx, rx) = channel::oneshot::<u8>();
    let h = rt.spawn(move || rx.recv());
    std::thread::sleep(Duration::from_millis(5));
    drop(tx);
    assert!(h.join().unwrap().is_err());
}

/// A coroutine that spins with yield_now (never idle worker) while another
/// on the same worker waits for a timer, a socket and a wake from a thread.
#[test]
fn probe_yield_spinner_starves_nothing() {
    use std::sync::atomic::AtomicBool;
    let rt = rt1();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let spinner = rt.spawn(move || {
        let mut n = 0u64;
        while !s2.load(Ordering::SeqCst) {
            weft::yield_now();
            n += 1;
        }
        n
    });
    let mut sleeper = rt.spawn(|| {
        let t = Instant::now();
        weft::sleep(Duration::from_millis(5));
        t.elapsed()
    });
    let mut reader = rt.spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map(|_| b[0])
    });
    let (tx, rx) = channel::bounded::<u8>(0);
    let mut receiver = rt.spawn(move || rx.recv());
    let (mut peer, _) = l.accept().unwrap();
    std::thread::sleep(Duration::from_millis(5));
    peer.write_all(&[9]).unwrap();
    tx.send(4).unwrap();
    let slept = sleeper.join_timeout(LIVENESS).expect("timer starved").unwrap();
    assert!(slept < Duration::from_secs(10), "timer late: {slept:?}");
    assert_eq!(reader.join_timeout(LIVENESS).expect("socket starved").unwrap().unwrap(), 9);
    assert_eq!(receiver.join_timeout(LIVENESS).expect("remote wake starved").unwrap().unwrap(), 4);
    stop.store(true, Ordering::SeqCst);
    spinner.join().unwrap();
}

/// Many sleepers with different deadlines wake in deadline order, none early.
#[test]
fn probe_many_timers() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let hs: Vec<_> = (0..2000u64)
        .map(|i| {
            let order = Arc::clone(&order);
            let ms = (i * 7919) % 50; // scrambled deadlines
            rt.spawn(move || {
                weft::sleep(Duration::from_millis(ms));
                let e = t0.elapsed();
                assert!(e >= Duration::from_millis(ms));
                order.lock().push((ms, e));
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let order = order.lock();
    // Generous for a loaded machine; a lost timer hangs or is far later.
    let late = order.iter().filter(|(ms, e)| *e > Duration::from_millis(ms + 10_000)).count();
    assert_eq!(late, 0, "timers more than 10 s late");
}

/// notify_one racing the cancel of the waiter it picks: the notification
/// must not be lost (another waiter must get it), as parking_lot's condvar
/// never loses one to a waiter that times out at the same moment.
#[test]
fn probe_condvar_notify_one_racing_cancel() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let mut lost = 0;
    for round in 0..200 {
        let state = Arc::new((Mutex::new(0u32), Condvar::new()));
        let spawn_waiter = |state: Arc<(Mutex<u32>, Condvar)>| {
            rt.spawn(move || {
                let (m, c) = &*state;
                let mut g = m.lock();
                loop {
                    g = c.wait_while(g, |tokens| *tokens == 0);
                    *g -= 1;
                }
            })
        };
        let w1 = spawn_waiter(Arc::clone(&state));
        let (m, c) = &*state;
        // Make sure w1 is queued before w2.
        while !m.is_locked() && c.notify_all() == 0 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(1));
        let w2 = spawn_waiter(Arc::clone(&state));
        std::thread::sleep(Duration::from_millis(2));
        {
            let mut g = m.lock();
            *g += 1;
            w1.cancel();
            c.notify_one();
        }
        let t0 = Instant::now();
        while *m.lock() != 0 && t0.elapsed() < LIVENESS {
            std::thread::sleep(Duration::from_millis(1));
        }
        let lost_here = *m.lock() != 0;
        if lost_here {
            lost += 1;
            eprintln!("round {round}: the notification went to the cancelled waiter and w2 sleeps on");
        }
        w2.cancel();
        let _ = w1.join();
        let _ = w2.join();
        if lost_here {
            break; // one is enough to fail (each loss costs LIVENESS)
        }
    }
    assert_eq!(lost, 0, "notifications lost in {lost} of 200 rounds");
}

#[test]
fn probe_join_error_messages() {
    let rt = rt1();
    let p =
        weft::Builder::new().name("parser".into()).spawn_on(&rt, || -> u8 { panic!("bad token (expected)") }).unwrap();
    let e = p.join().unwrap_err();
    println!("panic Display: {e}\npanic Debug: {e:?}");
    let c = rt.spawn(|| weft::sleep(Duration::from_secs(10)));
    c.cancel();
    let e = c.join().unwrap_err();
    println!("cancel Display: {e}\ncancel Debug: {e:?}");
    let s = rt.spawn(|| weft::sleep(Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(5));
    drop(rt);
    let e = s.join().unwrap_err();
    println!("shutdown Display: {e}\nshutdown Debug: {e:?}");
}

/// weft sockets on plain OS threads "block like std's": timeouts, big
/// writes against a slow reader, accept timeout, into_std.
#[test]
fn probe_sockets_on_os_threads() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_accept_timeout(Some(Duration::from_millis(10))).unwrap();
    assert_eq!(l.accept().unwrap_err().kind(), ErrorKind::TimedOut);
    l.set_accept_timeout(None).unwrap();
    let writer = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let data = vec![7u8; 4 << 20];
        s.write_all(&data).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = String::new();
        s.read_to_string(&mut back).unwrap();
        back
    });
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(LIVENESS)).unwrap();
    std::thread::sleep(Duration::from_millis(20)); // the writer fills the buffers
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == 7));
        total += n;
    }
    assert_eq!(total, 4 << 20);
    s.write_all(b"got it").unwrap();
    drop(s);
    assert_eq!(writer.join().unwrap(), "got it");

    // A read timeout on a thread.
    let c = TcpStream::connect(addr).unwrap();
    let (_s, _) = l.accept().unwrap();
    c.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let t0 = Instant::now();
    assert_eq!((&c).read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert!(t0.elapsed() >= Duration::from_millis(10));
    // into_std gives a blocking std socket with the timeout.
    let std_c = c.into_std().unwrap();
    // (The kernel rounds SO_RCVTIMEO up to its tick, as for std's sockets.)
    assert!(std_c.read_timeout().unwrap().is_some_and(|t| t >= Duration::from_millis(10)));
    let t0 = Instant::now();
    assert_eq!((&std_c).read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert!(t0.elapsed() >= Duration::from_millis(9));
}

/// A runtime dropped while a coroutine waits for a running spawn_blocking
/// job; the job finishes afterwards and spawns on the dead runtime.
#[test]
fn probe_runtime_drop_during_blocking_job() {
    let rt = weft::Runtime::builder().workers(1).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel::<()>();
    let h = rt.spawn(move || {
        weft::spawn_blocking(move || {
            started_tx.send(()).unwrap();
            // Runs until the runtime is gone: a drop that waited for the
            // job would end only after this timed out.
            let saw_drop = dropped_rx.recv_timeout(LIVENESS).is_ok();
            let inner = weft::spawn(|| 1);
            tx.send((saw_drop, inner.join().map_err(|e| e.kind()))).unwrap();
            weft::sleep(Duration::from_millis(5));
            "job done"
        })
        .join()
    });
    started_rx.recv_timeout(LIVENESS).expect("the job started");
    drop(rt);
    let _ = dropped_tx.send(()); // fails only if the job has given up already
    assert_eq!(h.join().unwrap_err().kind(), weft::JoinErrorKind::Shutdown);
    let (saw_drop, inner) = rx.recv_timeout(LIVENESS).expect("the job ran on");
    assert!(saw_drop, "the drop waited for the job");
    assert_eq!(inner, Err(weft::JoinErrorKind::Shutdown));
}

/// A task-local's destructor reads a sibling task-local that has not been
/// dropped yet: with std's `thread_local!` it sees the sibling's current
/// value. (Keys local to this test, so that their indexes, given at first
/// use, are in the order touched here: FLUSH first, REQUEST_ID second.)
#[test]
fn task_local_destructor_sees_live_sibling() {
    struct Flush(Arc<Mutex<Vec<u64>>>);
    impl Drop for Flush {
        fn drop(&mut self) {
            // A request-scoped logger flushing under the request's id.
            let id = REQUEST_ID.try_with(|id| id.get()).unwrap_or(u64::MAX);
            self.0.lock().push(id);
        }
    }
    weft::task_local! {
        static FLUSH: std::cell::RefCell<Option<Flush>> = const { std::cell::RefCell::new(None) };
        static REQUEST_ID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rt = rt1();
    let s2 = Arc::clone(&seen);
    rt.spawn(move || {
        FLUSH.with(|f| *f.borrow_mut() = Some(Flush(s2)));
        REQUEST_ID.with(|id| id.set(42));
    })
    .join()
    .unwrap();
    assert_eq!(*seen.lock(), [42], "the destructor saw a fresh sibling, not the coroutine's value");
}

/// A select that sends and receives on the same rendezvous channel must not
/// pair with itself (Go's and crossbeam's rule).
#[test]
fn probe_select_does_not_pair_with_itself() {
    let rt = rt1();
    rt.block_on(|| {
        let (tx, rx) = channel::bounded::<u8>(0);
        let mut sel = Select::new();
        sel.send(&tx, 1);
        sel.recv(&rx);
        assert!(sel.select_timeout(Duration::from_millis(20)).is_err(), "paired with itself");
        // Two coroutines each selecting both ways do pair with each other.
        let (tx2, rx2) = (tx.clone(), rx.clone());
        let other = weft::spawn(move || {
            let mut sel = Select::new();
            let s = sel.send(&tx2, 2);
            let r = sel.recv(&rx2);
            let op = sel.select_timeout(LIVENESS).expect("a partner");
            let i = op.index();
            if i == s {
                op.send(&tx2).unwrap();
                None
            } else {
                assert_eq!(i, r);
                Some(op.recv(&rx2).unwrap())
            }
        });
        let mut sel = Select::new();
        let s = sel.send(&tx, 1);
        let op = sel.select_timeout(LIVENESS);
        let mine: Option<u8> = match op {
            Ok(op) if op.index() == s => {
                op.send(&tx).unwrap();
                None
            }
            _ => panic!("no partner"),
        };
        assert_eq!((mine, other.join().unwrap()), (None, Some(1)));
    });
}

/// A write of nothing returns `Ok(0)` at once with std's blocking socket,
/// however full its send buffer (the kernel answers a 0-byte send at once).
/// In a coroutine weft's waited for room first: until the write timeout,
/// or without one until the peer read. (A read into an empty buffer, by
/// contrast, waits for data with std too: Linux's 0-byte recv waits like
/// any other, and weft's matches that.)
#[test]
fn zero_length_write_does_not_wait_for_room() {
    let rt = rt1();
    rt.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (peer, _) = l.accept().unwrap();
        // Fill the send buffer (the peer reads nothing), then write nothing.
        // Long: an empty write that waited for room would take all of it.
        s.set_write_timeout(Some(LIVENESS)).unwrap();
        s.set_nonblocking(true).unwrap();
        let big = vec![0u8; 1 << 16];
        while s.write(&big).is_ok() {}
        s.set_nonblocking(false).unwrap();
        let t0 = Instant::now();
        let w = s.write(&[]);
        assert!(t0.elapsed() < Duration::from_secs(10), "empty write waited {:?}: {w:?}", t0.elapsed());
        assert_eq!(w.unwrap(), 0);
        let t0 = Instant::now();
        let w = s.write_vectored(&[std::io::IoSlice::new(&[])]);
        assert!(t0.elapsed() < Duration::from_secs(10), "empty vectored write waited {:?}: {w:?}", t0.elapsed());
        assert_eq!(w.unwrap(), 0);
        // Still full: a real write waits, and times out.
        s.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
        assert_eq!(s.write(&[1]).unwrap_err().kind(), ErrorKind::WouldBlock);
        drop(peer);
    });
}

/// The usual way to kick a reader parked on a connection: another coroutine
/// (or thread) calls `shutdown(Both)` on a clone; the reader gets EOF, and a
/// writer parked on a full buffer gets an error.
#[test]
fn probe_shutdown_from_elsewhere_wakes_parked_reader_and_writer() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (s, peer) = rt.block_on(|| {
        let s = TcpStream::connect(addr).unwrap();
        let (peer, _) = l.accept().unwrap();
        (s, peer)
    });
    let reader_side = s.try_clone().unwrap();
    let mut reader = rt.spawn(move || {
        let mut r = reader_side;
        r.read(&mut [0u8; 8]).map_err(|e| e.kind())
    });
    let writer_side = s.try_clone().unwrap();
    let mut writer = rt.spawn(move || {
        let mut w = writer_side;
        let big = vec![0u8; 1 << 20];
        loop {
            if let Err(e) = w.write(&big) {
                return e.kind();
            }
        }
    });
    std::thread::sleep(Duration::from_millis(30));
    assert!(!reader.is_finished() && !writer.is_finished());
    // From a coroutine on the runtime.
    rt.block_on(|| s.shutdown(std::net::Shutdown::Both).unwrap());
    let r = reader.join_timeout(LIVENESS).expect("reader still parked after shutdown").unwrap();
    assert_eq!(r, Ok(0));
    let w = writer.join_timeout(LIVENESS).expect("writer still parked after shutdown").unwrap();
    assert_eq!(w, ErrorKind::BrokenPipe);
    drop(peer);
}

/// The same with a Unix stream pair (Unix sockets report no writability
/// after a shutdown of the sending side; weft's docs say it retries).
#[test]
fn probe_unix_shutdown_wakes_parked_reader_and_writer() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let (a, b) = weft::net::UnixStream::pair().unwrap();
    let ra = a.try_clone().unwrap();
    let mut reader = rt.spawn(move || {
        let mut r = ra;
        r.read(&mut [0u8; 8]).map_err(|e| e.kind())
    });
    let wa = a.try_clone().unwrap();
    let mut writer = rt.spawn(move || {
        let mut w = wa;
        let big = vec![0u8; 1 << 20];
        loop {
            if let Err(e) = w.write(&big) {
                return e.kind();
            }
        }
    });
    std::thread::sleep(Duration::from_millis(30));
    assert!(!reader.is_finished() && !writer.is_finished());
    a.shutdown(std::net::Shutdown::Both).unwrap();
    let t0 = Instant::now();
    let r = reader.join_timeout(LIVENESS).expect("reader still parked after shutdown").unwrap();
    assert_eq!(r, Ok(0));
    let w = writer.join_timeout(LIVENESS).expect("writer still parked after shutdown").unwrap();
    assert_eq!(w, ErrorKind::BrokenPipe);
    println!("unix shutdown woke both within {:?}", t0.elapsed());
    drop(b);
}

/// Absurd stack sizes are errors, not panics or aborts.
#[test]
fn probe_absurd_stack_sizes() {
    let rt = rt1();
    let r = weft::Builder::new().stack_size(usize::MAX).spawn_on(&rt, || 1);
    println!("Builder::stack_size(usize::MAX): {:?}", r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    assert!(r.is_err());
    let r = weft::Builder::new().stack_size(1 << 40).spawn_on(&rt, || 1);
    match r {
        Ok(h) => println!("1 TiB stack: join -> {:?}", h.join().map_err(|e| e.to_string())),
        Err(e) => println!("1 TiB stack: {e}"),
    }
    let r = weft::Runtime::builder().stack_size(usize::MAX).build();
    println!("RuntimeBuilder::stack_size(usize::MAX): {:?}", r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    assert!(r.is_err());
    // std's Builder takes 0 (its minimum then); weft's refuses it, as its
    // `Builder::spawn` docs say, though any other small size is rounded up.
    assert_eq!(weft::Builder::new().stack_size(0).spawn_on(&rt, || 7).unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(weft::Builder::new().stack_size(1).spawn_on(&rt, || 7).unwrap().join().unwrap(), 7);
}

/// add_permits racing the cancel of the waiter it would serve: the permit
/// must reach the other waiter, not vanish with the cancelled one.
#[test]
fn probe_semaphore_permit_racing_cancel() {
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    for round in 0..200 {
        let sem = Arc::new(Semaphore::new(0));
        let waiter = |sem: Arc<Semaphore>| rt.spawn(move || sem.acquire().forget());
        let w1 = waiter(Arc::clone(&sem));
        std::thread::sleep(Duration::from_micros(300));
        let mut w2 = waiter(Arc::clone(&sem));
        std::thread::sleep(Duration::from_micros(300));
        w1.cancel();
        sem.add_permits(1);
        let w1 = w1.join();
        if w1.is_ok() {
            // w1 took it before the cancel landed: w2 still waits.
            sem.add_permits(1);
        }
        assert!(
            w2.join_timeout(LIVENESS).is_some(),
            "round {round}: the permit went to the cancelled waiter and was lost"
        );
        assert_eq!(sem.available_permits(), 0);
    }
}

/// Cancelling a coroutine parked in Barrier::wait withdraws its arrival;
/// cancelling a writer queued behind readers lets new readers in again.
#[test]
fn probe_cancel_in_barrier_and_rwlock_write() {
    use weft::sync::RwLock;
    let rt = weft::Runtime::builder().workers(2).build().unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let b1 = Arc::clone(&barrier);
    let w1 = rt.spawn(move || b1.wait().is_leader());
    std::thread::sleep(Duration::from_millis(10));
    w1.cancel();
    assert!(w1.join().unwrap_err().is_cancelled());
    let b2 = Arc::clone(&barrier);
    let mut w2 = rt.spawn(move || b2.wait().is_leader());
    std::thread::sleep(Duration::from_millis(10));
    assert!(!w2.is_finished(), "the cancelled arrival still counted: w2 passed alone");
    let me = barrier.wait_timeout(LIVENESS).expect("w2 and I open it");
    let other = w2.join_timeout(LIVENESS).expect("w2 released").unwrap();
    assert!(me.is_leader() != other);

    let lock = Arc::new(RwLock::new(0));
    let reader = lock.read(); // an OS thread reads
    let l2 = Arc::clone(&lock);
    let writer = rt.spawn(move || *l2.write() += 1);
    std::thread::sleep(Duration::from_millis(10));
    writer.cancel();
    assert!(writer.join().unwrap_err().is_cancelled());
    // A new reader, from a coroutine, while the first still reads.
    let l3 = Arc::clone(&lock);
    let mut r2 = rt.spawn(move || *l3.read());
    assert_eq!(r2.join_timeout(LIVENESS).expect("new readers blocked by a cancelled writer").unwrap(), 0);
    drop(reader);
    assert!(lock.try_write().is_some());
}

/// A Unix stream's write of nothing, send buffer full: std returns at once;
/// weft's waits one retry slice (about 1 ms) before it asks the kernel.
#[test]
fn unix_zero_length_write_does_not_wait_for_room() {
    let rt = Arc::new(rt1());
    let parks = {
        let rt = Arc::clone(&rt);
        move || rt.metrics().total.parks
    };
    rt.block_on(move || {
        let (mut a, _b) = weft::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let big = vec![0u8; 1 << 16];
        while a.write(&big).is_ok() {}
        a.set_nonblocking(false).unwrap();
        let before = parks();
        assert_eq!(a.write(&[]).unwrap(), 0, "a write of nothing on a full Unix stream");
        assert_eq!(a.write_vectored(&[io::IoSlice::new(&[])]).unwrap(), 0, "likewise, vectored");
        assert_eq!(parks(), before, "a write of nothing waited for room (parked)");
    });
}
