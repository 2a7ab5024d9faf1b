//! A second user trial: programs shaped like real services. A chat /
//! pub-sub server whose hub fans out through `Select` send cases, clients
//! that reset, drop mid-line or half-close; a worker pool with
//! backpressure; cancellation and runtime drop under coroutines parked in
//! every kind of wait, with every destructor counted; timeouts under load;
//! OS threads and `spawn_blocking` jobs calling into coroutines; misuse of
//! `block_on` and nested runtimes; panics in awkward places; and what the
//! deadlock hint and `Runtime::dump` tell a user about a real deadlock.

mod common;

use common::net::{TempDir, set_linger_zero, set_small_buffers};
use common::watched;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use weft::net::{TcpListener, TcpStream};
use weft::sync::Mutex;
use weft::sync::channel::{self, Select};

/// A generous bound for things that should take milliseconds.
const LIVENESS: Duration = Duration::from_secs(30);

fn runtime(workers: usize) -> weft::Runtime {
    weft::Runtime::builder().workers(workers).build().expect("worker threads")
}

/// Counts its drops.
struct Counted(Arc<AtomicUsize>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

// ---------------------------------------------------------------------------
// 1. Chat / pub-sub server
// ---------------------------------------------------------------------------

enum Event {
    /// A connection registered, with its writer's queue.
    Join(u32, channel::Sender<Arc<str>>),
    /// A complete line from a client.
    Line(u32, String),
    /// The client's end of stream (it half-closed, or closed): it sends
    /// nothing more but may still be listening.
    Done(u32),
    /// Reading failed (a reset): the client is dead.
    Gone(u32, ErrorKind),
}

/// What the hub tells the test: (registered clients, clients still talking).
type Census = (usize, usize);

#[derive(Default, Debug)]
struct HubReport {
    delivered: BTreeMap<u32, usize>,
    gone: Vec<(u32, ErrorKind)>,
    removed_on_dead_writer: BTreeSet<u32>,
    idle_ticks: usize,
}

/// One connection: a reader (this coroutine) and a writer coroutine fed by
/// a bounded queue.
fn serve_connection(id: u32, stream: TcpStream, events: channel::Sender<Event>, partial: Arc<AtomicUsize>) {
    let mut writer_stream = stream.try_clone().expect("try_clone");
    let (queue_tx, queue_rx) = channel::bounded::<Arc<str>>(8);
    if events.send(Event::Join(id, queue_tx)).is_err() {
        return;
    }
    weft::Builder::new()
        .name(format!("writer-{id}"))
        .spawn(move || {
            for line in queue_rx.iter() {
                if writer_stream.write_all(line.as_bytes()).is_err() {
                    return; // dead peer: dropping queue_rx tells the hub
                }
            }
            let _ = writer_stream.shutdown(Shutdown::Write);
        })
        .expect("spawn writer");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let event = match reader.read_line(&mut line) {
            Ok(0) => Event::Done(id),
            Ok(_) if line.ends_with('\n') => {
                let _ = events.send(Event::Line(id, line.trim_end().to_owned()));
                continue;
            }
            Ok(_) => {
                // A line cut by the end of stream: not a message.
                partial.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            Err(e) => Event::Gone(id, e.kind()),
        };
        let _ = events.send(event);
        return;
    }
}

/// The hub: a select over events, census requests and an idle timeout;
/// each line goes to every other client through one `Select` of send
/// cases, so a slow client does not hold up the others.
fn run_hub(events: channel::Receiver<Event>, census: channel::Receiver<channel::OneshotSender<Census>>) -> HubReport {
    struct Client {
        queue: channel::Sender<Arc<str>>,
        talking: bool,
    }
    let mut clients: BTreeMap<u32, Client> = BTreeMap::new();
    let mut report = HubReport::default();
    let mut census_open = true;
    loop {
        let mut select = Select::new();
        let on_event = select.recv(&events);
        let on_census = census_open.then(|| select.recv(&census));
        let operation = match select.select_timeout(Duration::from_millis(20)) {
            Ok(operation) => operation,
            Err(_) => {
                report.idle_ticks += 1;
                continue;
            }
        };
        if Some(operation.index()) == on_census {
            match operation.recv(&census) {
                Ok(reply) => {
                    let talking = clients.values().filter(|c| c.talking).count();
                    let _ = reply.send((clients.len(), talking));
                }
                Err(_) => census_open = false,
            }
            continue;
        }
        assert_eq!(operation.index(), on_event);
        let event = match operation.recv(&events) {
            Ok(event) => event,
            Err(_) => break, // the acceptor and every reader are gone
        };
        match event {
            Event::Join(id, queue) => {
                queue.send(format!("welcome {id}\n").into()).expect("a new writer is alive");
                clients.insert(id, Client { queue, talking: true });
            }
            Event::Done(id) => {
                if let Some(client) = clients.get_mut(&id) {
                    client.talking = false;
                }
            }
            Event::Gone(id, kind) => {
                clients.remove(&id);
                report.gone.push((id, kind));
            }
            Event::Line(from, text) => {
                let message: Arc<str> = format!("{from} {text}\n").into();
                let mut pending: Vec<u32> = clients.keys().copied().filter(|&id| id != from).collect();
                while !pending.is_empty() {
                    let (id, sent) = {
                        let mut fan_out = Select::new();
                        for id in &pending {
                            fan_out.send(&clients[id].queue, Arc::clone(&message));
                        }
                        let operation =
                            fan_out.select_timeout(Duration::from_secs(10)).expect("a writer stuck for 10 s");
                        let id = pending[operation.index()];
                        (id, operation.send(&clients[&id].queue).is_ok())
                    };
                    pending.retain(|&p| p != id);
                    if sent {
                        *report.delivered.entry(id).or_default() += 1;
                    } else {
                        clients.remove(&id);
                        report.removed_on_dead_writer.insert(id);
                    }
                }
            }
        }
    }
    report
}

/// Sends `lines` numbered lines (each written in two pieces), half-closes,
/// and returns every line read until the server's end of stream.
fn chat_client(stream: TcpStream, lines: u32) -> Vec<(u32, u32)> {
    let read_half = stream.try_clone().expect("try_clone");
    let collect = move || {
        let mut got = Vec::new();
        for line in BufReader::new(read_half).lines() {
            let line = line.expect("read a broadcast line");
            let mut words = line.split_whitespace();
            let from: u32 = words.next().unwrap().parse().unwrap();
            assert_eq!(words.next(), Some("msg"), "{line:?}");
            let seq: u32 = words.next().unwrap().parse().unwrap();
            got.push((from, seq));
        }
        got
    };
    let on_coroutine = weft::try_current().is_some();
    let reader = if on_coroutine { Ok(weft::spawn(collect)) } else { Err(std::thread::spawn(collect)) };
    let mut stream = stream;
    for seq in 0..lines {
        let line = format!("msg {seq}\n");
        let (head, tail) = line.split_at(line.len() / 2);
        stream.write_all(head.as_bytes()).unwrap();
        if on_coroutine {
            weft::yield_now();
        }
        stream.write_all(tail.as_bytes()).unwrap();
    }
    stream.shutdown(Shutdown::Write).unwrap();
    match reader {
        Ok(coroutine) => coroutine.join().unwrap(),
        Err(thread) => thread.join().unwrap(),
    }
}

#[test]
fn chat_server_fan_out_resets_half_closes() {
    watched(LIVENESS, || {
        const LINES: u32 = 30;
        let server = runtime(2);
        let clients_rt = runtime(1);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_accept_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let partial = Arc::new(AtomicUsize::new(0));
        let (events_tx, events_rx) = channel::bounded::<Event>(16);
        let (census_tx, census_rx) = channel::unbounded::<channel::OneshotSender<Census>>();
        let hub = server.spawn(move || run_hub(events_rx, census_rx));
        let acceptor = {
            let (stop, partial) = (Arc::clone(&stop), Arc::clone(&partial));
            server.spawn(move || {
                let mut next_id = 0;
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            next_id += 1;
                            let (events, partial) = (events_tx.clone(), Arc::clone(&partial));
                            weft::Builder::new()
                                .name(format!("reader-{next_id}"))
                                .spawn(move || serve_connection(next_id, stream, events, partial))
                                .unwrap();
                        }
                        Err(e) if e.kind() == ErrorKind::TimedOut => {}
                        Err(e) => panic!("accept: {e}"),
                    }
                }
                next_id
            })
        };
        let census = || {
            let (tx, rx) = channel::oneshot();
            census_tx.send(tx).unwrap();
            rx.recv().unwrap()
        };

        // Phase A: seven clients connect, one at a time, and read their welcome.
        let mut streams = Vec::new();
        for expected in 1..=7u32 {
            let stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut welcome = [0u8; 16];
            let want = format!("welcome {expected}\n");
            stream.try_clone().unwrap().read_exact(&mut welcome[..want.len()]).unwrap();
            assert_eq!(&welcome[..want.len()], want.as_bytes());
            stream.set_read_timeout(None).unwrap();
            streams.push(stream);
        }
        assert_eq!(census(), (7, 7));
        std::thread::sleep(Duration::from_millis(60)); // a quiet spell: the hub's select times out

        // Client 6 resets its connection; client 7 dies in the middle of a line.
        let partial_client = streams.pop().unwrap();
        let reset_client = streams.pop().unwrap();
        set_linger_zero(&reset_client);
        drop(reset_client);
        (&partial_client).write_all(b"half a li").unwrap();
        drop(partial_client);
        assert!(eventually(Duration::from_secs(10), || census() == (6, 5)), "census {:?}", census());

        // Phase B: clients 1-4 talk from coroutines, client 5 from an OS thread.
        let thread_client = streams.pop().unwrap();
        let talkers: Vec<_> = streams.into_iter().map(|s| clients_rt.spawn(move || chat_client(s, LINES))).collect();
        let on_thread = std::thread::spawn(move || chat_client(thread_client, LINES));
        assert!(eventually(Duration::from_secs(20), || census().1 == 0), "census {:?}", census());
        stop.store(true, Ordering::SeqCst);
        drop(census_tx);
        let accepted = acceptor.join().unwrap();
        assert_eq!(accepted, 7);
        let report = hub.join().unwrap();

        let mut received: BTreeMap<u32, Vec<(u32, u32)>> = BTreeMap::new();
        for (i, talker) in talkers.into_iter().enumerate() {
            received.insert(i as u32 + 1, talker.join().unwrap());
        }
        received.insert(5, on_thread.join().unwrap());
        for (&me, got) in &received {
            let mut per_sender: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            for &(from, seq) in got {
                per_sender.entry(from).or_default().push(seq);
            }
            let others: BTreeSet<u32> = (1..=5).filter(|&c| c != me).collect();
            assert_eq!(per_sender.keys().copied().collect::<BTreeSet<_>>(), others, "client {me}");
            for (from, seqs) in per_sender {
                assert_eq!(seqs, (0..LINES).collect::<Vec<_>>(), "client {me}: lines of {from}, in order, once");
            }
        }
        for live in 1..=5 {
            assert_eq!(report.delivered[&live], 4 * LINES as usize, "{report:?}");
        }
        assert_eq!(report.delivered.get(&6), None, "nothing for the reset client: {report:?}");
        assert_eq!(report.gone, [(6, ErrorKind::ConnectionReset)]);
        assert_eq!(partial.load(Ordering::SeqCst), 1, "the cut line was not a message");
        assert!(report.removed_on_dead_writer.contains(&7), "{report:?}");
        assert!(report.idle_ticks > 0);
        // No coroutine is left parked: every reader and writer ended.
        assert!(eventually(Duration::from_secs(10), || server.metrics().alive() == 0), "{}", server.dump());
        assert_eq!(clients_rt.metrics().alive(), 0, "{}", clients_rt.dump());
    });
}

// ---------------------------------------------------------------------------
// 2. Worker pool, cancellation of in-flight jobs, runtime drop
// ---------------------------------------------------------------------------

/// A message that counts its drops and knows its number.
#[derive(Debug)]
struct Msg(u32, Arc<AtomicUsize>);
impl Drop for Msg {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn worker_pool_backpressure_every_job_once() {
    watched(LIVENESS, || {
        const JOBS: u32 = 200;
        const CAP: usize = 2;
        const WORKERS: usize = 3;
        let rt = runtime(2);
        let dropped = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(AtomicUsize::new(0));
        let (jobs_tx, jobs_rx) = channel::bounded::<Msg>(CAP);
        let (done_tx, done_rx) = channel::unbounded::<u32>();
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (jobs_rx, done_tx, taken) = (jobs_rx.clone(), done_tx.clone(), Arc::clone(&taken));
                rt.spawn(move || {
                    let mut mine = 0;
                    for job in jobs_rx.iter() {
                        taken.fetch_add(1, Ordering::SeqCst);
                        if job.0 % 7 == w as u32 {
                            weft::sleep(Duration::from_micros(200)); // a slow job
                        } else {
                            weft::yield_now();
                        }
                        done_tx.send(job.0).unwrap();
                        mine += 1;
                    }
                    mine
                })
            })
            .collect();
        drop((jobs_rx, done_tx));
        let producer = {
            let (dropped, sent, taken) = (Arc::clone(&dropped), Arc::clone(&sent), Arc::clone(&taken));
            rt.spawn(move || {
                let (mut backlog_max, mut found_full) = (0, 0);
                for i in 0..JOBS {
                    if jobs_tx.is_full() {
                        found_full += 1; // this send parks: backpressure
                    }
                    jobs_tx.send(Msg(i, Arc::clone(&dropped))).unwrap();
                    let backlog = sent.fetch_add(1, Ordering::SeqCst) + 1 - taken.load(Ordering::SeqCst);
                    backlog_max = backlog_max.max(backlog);
                }
                (backlog_max, found_full)
            })
        };
        let (backlog_max, found_full) = producer.join().unwrap();
        let per_worker: Vec<u32> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        let mut done: Vec<u32> = done_rx.iter().collect();
        done.sort_unstable();
        assert_eq!(done, (0..JOBS).collect::<Vec<_>>(), "every job exactly once");
        assert_eq!(per_worker.iter().sum::<u32>(), JOBS);
        assert!(per_worker.iter().all(|&n| n > 0), "every worker got work: {per_worker:?}");
        assert!(backlog_max <= CAP + WORKERS, "the queue never grew past its bound: {backlog_max}");
        assert!(found_full > 0, "the producer met a full queue at least once");
        assert_eq!(dropped.load(Ordering::SeqCst), JOBS as usize, "every job dropped once");
    });
}

/// The ways a coroutine of `cancel_everywhere_*` and `runtime_drop_*` waits.
struct Parked {
    handles: Vec<(&'static str, weft::JoinHandle<()>)>,
}

impl Parked {
    fn spawn(
        &mut self,
        rt: &weft::Runtime,
        what: &'static str,
        guards: &Arc<AtomicUsize>,
        f: impl FnOnce() + Send + 'static,
    ) {
        let guard = Counted(Arc::clone(guards));
        let handle = weft::Builder::new()
            .name(what.to_owned())
            .spawn_on(rt, move || {
                let _guard = guard;
                f();
            })
            .unwrap();
        self.handles.push((what, handle));
    }

    /// Waits until every one of them is parked (by the dump).
    fn wait_all_parked(&self, rt: &weft::Runtime) {
        let all_parked = || {
            let dump = rt.dump();
            self.handles.iter().all(|(_, h)| {
                dump.coroutine(h.id()).is_some_and(|c| matches!(c.state(), weft::CoroutineState::Parked { .. }))
            })
        };
        assert!(eventually(Duration::from_secs(10), all_parked), "not all parked:\n{}", rt.dump());
    }
}

#[test]
fn cancel_everywhere_drops_once_and_resources_stay_usable() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        let guards = Arc::new(AtomicUsize::new(0));
        let msgs = Arc::new(AtomicUsize::new(0));
        let mut parked = Parked { handles: Vec::new() };

        // A send on a full channel.
        let (full_tx, full_rx) = channel::bounded::<Msg>(1);
        full_tx.send(Msg(1, Arc::clone(&msgs))).unwrap();
        let (tx, m) = (full_tx.clone(), Arc::clone(&msgs));
        parked.spawn(&rt, "send-full", &guards, move || drop(tx.send(Msg(2, m))));
        // A receive on a rendezvous channel nobody sends on.
        let (rv_tx, rv_rx) = channel::bounded::<Msg>(0);
        let rx = rv_rx.clone();
        parked.spawn(&rt, "recv-rendezvous", &guards, move || drop(rx.recv()));
        // A select over two receives and a send.
        let (a_tx, a_rx) = channel::bounded::<Msg>(0);
        let (b_tx, b_rx) = channel::unbounded::<Msg>();
        let (c_tx, c_rx) = channel::bounded::<Msg>(0);
        let (ar, br, ct, m) = (a_rx.clone(), b_rx.clone(), c_tx.clone(), Arc::clone(&msgs));
        parked.spawn(&rt, "select", &guards, move || {
            let mut select = Select::new();
            select.recv(&ar);
            select.recv(&br);
            select.send(&ct, Msg(3, m));
            drop(select.select());
        });
        // A long sleep.
        parked.spawn(&rt, "sleep", &guards, || weft::sleep(Duration::from_secs(3600)));
        // A socket read, on a clone of a stream the test keeps.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let clone = server.try_clone().unwrap();
        parked.spawn(&rt, "tcp-read", &guards, move || {
            let mut clone = clone;
            let _ = clone.read(&mut [0u8; 16]);
        });
        // A UDP receive on a clone.
        let udp = weft::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_clone = udp.try_clone().unwrap();
        parked.spawn(&rt, "udp-recv", &guards, move || {
            let _ = udp_clone.recv_from(&mut [0u8; 16]);
        });
        // A lock an OS thread (this one) holds.
        let lock = Arc::new(Mutex::new(0u32));
        let held = lock.lock();
        let l = Arc::clone(&lock);
        parked.spawn(&rt, "lock", &guards, move || *l.lock() += 100);
        // A oneshot receive and an OnceLock wait.
        let (once_tx, once_rx) = channel::oneshot::<Msg>();
        parked.spawn(&rt, "oneshot", &guards, move || drop(once_rx.recv()));
        let cell = Arc::new(weft::sync::OnceLock::<u32>::new());
        let c = Arc::clone(&cell);
        parked.spawn(&rt, "once-wait", &guards, move || assert_eq!(*c.wait(), 5));
        // A join of a sleeping coroutine, and a join of a blocking job.
        let target = rt.spawn(|| weft::sleep(Duration::from_secs(3600)));
        let target_id = target.id();
        parked.spawn(&rt, "join", &guards, move || drop(target.join()));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let job_results = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&job_results);
        parked.spawn(&rt, "join-blocking", &guards, move || {
            let job = weft::spawn_blocking(move || {
                release_rx.recv().unwrap();
                Counted(r)
            });
            drop(job.join());
        });

        parked.wait_all_parked(&rt);
        let count = parked.handles.len();
        for (_, handle) in &parked.handles {
            handle.cancel();
        }
        for (what, mut handle) in parked.handles {
            let result =
                handle.join_timeout(Duration::from_secs(10)).unwrap_or_else(|| panic!("{what}: cancel did not end it"));
            assert!(result.unwrap_err().is_cancelled(), "{what}");
        }
        assert_eq!(guards.load(Ordering::SeqCst), count, "each coroutine's locals dropped once");

        // The send's message was dropped, not queued; the queued one is intact.
        assert_eq!(msgs.load(Ordering::SeqCst), 2, "Msg 2 (the cancelled send) and Msg 3 (the select's) dropped");
        assert_eq!(full_rx.len(), 1);
        assert_eq!(full_rx.try_recv().unwrap().0, 1);
        // No ghost receivers: nobody waits on the rendezvous channels now.
        assert!(rv_tx.try_send(Msg(10, Arc::clone(&msgs))).unwrap_err().is_full());
        assert!(a_tx.try_send(Msg(11, Arc::clone(&msgs))).unwrap_err().is_full());
        // No ghost sender: the select's send case is gone.
        assert!(c_rx.try_recv().unwrap_err().is_empty());
        b_tx.send(Msg(12, Arc::clone(&msgs))).unwrap();
        assert_eq!(b_rx.try_recv().unwrap().0, 12, "the cancelled select took nothing");
        // The socket the cancelled reader shared still works, in a coroutine.
        (&client).write_all(b"ping").unwrap();
        let read_back = rt.spawn(move || {
            let mut server = server;
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).map(|()| buf)
        });
        assert_eq!(&read_back.join().unwrap().unwrap(), b"ping");
        let udp_addr = udp.local_addr().unwrap();
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"dgram", udp_addr).unwrap();
        let got = rt.spawn(move || {
            let mut buf = [0u8; 16];
            let (n, _) = udp.recv_from(&mut buf).unwrap();
            buf[..n].to_vec()
        });
        assert_eq!(got.join().unwrap(), b"dgram");
        // The lock: the cancelled waiter did not take it or change it.
        drop(held);
        assert!(!lock.is_locked());
        assert_eq!(*lock.try_lock().expect("free"), 0);
        // The oneshot's receiver went with its coroutine; the cell can be set.
        assert_eq!(once_tx.send(Msg(13, Arc::clone(&msgs))).unwrap_err().into_inner().0, 13);
        cell.set(5).unwrap();
        // The joined coroutine still runs; the blocking job still finishes,
        // and its result is dropped once, by nobody in particular.
        assert!(rt.dump().coroutine(target_id).is_some());
        release_tx.send(()).unwrap();
        assert!(eventually(Duration::from_secs(10), || job_results.load(Ordering::SeqCst) == 1));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(job_results.load(Ordering::SeqCst), 1);
        assert_eq!(msgs.load(Ordering::SeqCst), 7, "Msgs 1, 2, 3, 10, 11, 12, 13: each dropped exactly once");
        assert_eq!(guards.load(Ordering::SeqCst), count, "and no guard twice");
    });
}

#[test]
fn runtime_drop_with_coroutines_parked_everywhere_drops_each_once() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        let guards = Arc::new(AtomicUsize::new(0));
        let msgs = Arc::new(AtomicUsize::new(0));
        let made = std::cell::Cell::new(0);
        let msg = |n| {
            made.set(made.get() + 1);
            Msg(n, Arc::clone(&msgs))
        };
        let mut parked = Parked { handles: Vec::new() };

        let (full_tx, full_rx) = channel::bounded::<Msg>(1);
        full_tx.send(msg(1)).unwrap();
        let (tx, m2) = (full_tx.clone(), msg(2));
        parked.spawn(&rt, "send-full", &guards, move || drop(tx.send(m2)));
        let (a_tx, a_rx) = channel::bounded::<Msg>(0);
        let (c_tx, c_rx) = channel::bounded::<Msg>(0);
        let (ar, ct, m3, m4) = (a_rx.clone(), c_tx.clone(), msg(3), msg(4));
        parked.spawn(&rt, "select", &guards, move || {
            let mut select = Select::new();
            select.recv(&ar);
            select.send(&ct, m3);
            select.send(&ct, m4);
            drop(select.select());
        });
        let rx = a_rx.clone();
        parked.spawn(&rt, "recv", &guards, move || drop(rx.recv()));
        // A write into a full socket buffer.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::net::TcpStream::connect(addr).unwrap();
        let (stream, _) = listener.accept().unwrap();
        set_small_buffers(&stream, 4096);
        parked.spawn(&rt, "tcp-write", &guards, move || {
            let mut stream = stream;
            let chunk = vec![7u8; 64 * 1024];
            while stream.write(&chunk).is_ok() {}
        });
        parked.spawn(&rt, "accept", &guards, move || drop(listener.accept()));
        // A Unix stream read.
        let (unix_a, unix_b) = weft::net::UnixStream::pair().unwrap();
        parked.spawn(&rt, "unix-read", &guards, move || {
            let mut unix_a = unix_a;
            let _ = unix_a.read(&mut [0u8; 8]);
        });
        // Waits on each other: a join, a lock held by a parked coroutine, a
        // condvar, a barrier.
        let lock = Arc::new(Mutex::new(()));
        let (l, rx) = (Arc::clone(&lock), a_rx.clone());
        parked.spawn(&rt, "holds-lock", &guards, move || {
            let _held = l.lock();
            drop(rx.recv());
        });
        // The holder first: a "wants-lock" that ran before it took the lock
        // (the other worker) would take it and end, never parked.
        assert!(eventually(Duration::from_secs(10), || lock.is_locked()), "the holder never took the lock");
        let l = Arc::clone(&lock);
        parked.spawn(&rt, "wants-lock", &guards, move || drop(l.lock()));
        let sleeper = rt.spawn(|| weft::sleep(Duration::from_secs(3600)));
        parked.spawn(&rt, "join", &guards, move || drop(sleeper.join()));
        let barrier = Arc::new(weft::sync::Barrier::new(3));
        let b = Arc::clone(&barrier);
        parked.spawn(&rt, "barrier", &guards, move || {
            b.wait();
        });
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let job_results = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&job_results);
        parked.spawn(&rt, "join-blocking", &guards, move || {
            // Ends once the runtime has been dropped (the test then drops
            // `release_tx`): its joiner is parked until the drop.
            let job = weft::spawn_blocking(move || {
                let _ = release_rx.recv_timeout(Duration::from_secs(20));
                Counted(r)
            });
            drop(job.join());
        });
        parked.wait_all_parked(&rt);
        let mut count = parked.handles.len();

        // One that keeps yielding (runnable), and a burst of spawns that
        // may not have started when the drop comes.
        let g = Counted(Arc::clone(&guards));
        let spinner = rt.spawn(move || {
            let _g = g;
            loop {
                weft::yield_now();
            }
        });
        let mut late = Vec::new();
        for i in 0..50 {
            let (g, m) = (Counted(Arc::clone(&guards)), msg(100 + i));
            late.push(rt.spawn(move || {
                let _g = g;
                let _m = m;
                weft::sleep(Duration::from_secs(3600));
            }));
        }
        count += 51;

        let start = Instant::now();
        drop(rt);
        assert!(start.elapsed() < Duration::from_secs(5), "the drop took {:?}", start.elapsed());
        drop(release_tx);
        assert_eq!(guards.load(Ordering::SeqCst), count, "each coroutine's locals (or closure) dropped once");
        for (what, handle) in parked.handles {
            assert_eq!(handle.join().unwrap_err().kind(), weft::JoinErrorKind::Shutdown, "{what}");
        }
        assert_eq!(spinner.join().unwrap_err().kind(), weft::JoinErrorKind::Shutdown);
        for handle in late {
            assert_eq!(handle.join().unwrap_err().kind(), weft::JoinErrorKind::Shutdown);
        }
        // The channels outlive the runtime: their messages are still here,
        // and the dead coroutines' ones were dropped once.
        assert_eq!(msgs.load(Ordering::SeqCst), made.get() - 1, "all but the queued Msg 1");
        assert_eq!(full_rx.try_recv().unwrap().0, 1);
        assert!(c_rx.try_recv().unwrap_err().is_empty(), "no ghost send case");
        assert!(a_tx.try_send(msg(200)).is_err(), "no ghost receiver");
        assert!(!lock.is_locked(), "the unwound holder released the lock");
        assert!(eventually(Duration::from_secs(5), || job_results.load(Ordering::SeqCst) == 1));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(job_results.load(Ordering::SeqCst), 1, "the blocking job's result dropped once");
        assert_eq!(guards.load(Ordering::SeqCst), count, "and nothing twice");
        drop((unix_b, peer, full_tx, a_tx));
        assert_eq!(msgs.load(Ordering::SeqCst), made.get(), "every Msg dropped exactly once");
    });
}

// ---------------------------------------------------------------------------
// 3. Timeouts, never early, under load, from coroutines and threads
// ---------------------------------------------------------------------------

/// One timed wait: its name, the time asked for, and a closure that makes
/// the wait and says whether it ended the way a timeout should.
type TimedWait = (&'static str, Duration, Box<dyn FnOnce(Duration) -> bool + Send>);

/// The timed waits of `timeouts_never_early_under_load`, fresh resources each.
fn timed_waits(on_coroutine: bool) -> Vec<TimedWait> {
    let ms = Duration::from_millis;
    let mut waits: Vec<TimedWait> = Vec::new();
    let (keep, rx) = channel::bounded::<u8>(1);
    waits.push((
        "recv_timeout",
        ms(25),
        Box::new(move |d| {
            let _sender = keep;
            rx.recv_timeout(d).unwrap_err().is_timeout()
        }),
    ));
    let (keep, rx2) = channel::bounded::<u8>(0);
    waits.push((
        "recv_deadline",
        ms(35),
        Box::new(move |d| {
            let _sender = keep;
            rx2.recv_deadline(Instant::now() + d).unwrap_err().is_timeout()
        }),
    ));
    let (tx, keep) = channel::bounded::<u8>(1);
    tx.send(0).unwrap();
    waits.push((
        "send_timeout",
        ms(30),
        Box::new(move |d| {
            let _receiver = keep;
            matches!(tx.send_timeout(9, d), Err(channel::SendTimeoutError::Timeout(9)))
        }),
    ));
    waits.push((
        "select_timeout",
        ms(40),
        Box::new(move |d| {
            let (tx2, _rx2) = channel::bounded::<u8>(0);
            let mut select = Select::new();
            select.send(&tx2, 1);
            select.select_timeout(d).is_err()
        }),
    ));
    let (otx, orx) = channel::oneshot::<u8>();
    waits.push((
        "oneshot recv_timeout",
        ms(20),
        Box::new(move |d| {
            let _sender = otx;
            orx.recv_timeout(d).unwrap_err().is_timeout()
        }),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::net::TcpStream::connect(addr).unwrap();
    let (stream, _) = listener.accept().unwrap();
    let writer = stream.try_clone().unwrap();
    // The peer stays open until both waits on this connection are over:
    // dropped by the write's wait alone, it would reset the connection
    // (it holds unread data) under a read still waiting for its timeout.
    let peer = Arc::new(peer);
    let peer_for_the_read = Arc::clone(&peer);
    waits.push((
        "tcp read timeout",
        ms(30),
        Box::new(move |d| {
            let _peer = peer_for_the_read;
            stream.set_read_timeout(Some(d)).unwrap();
            (&stream).read(&mut [0u8; 8]).unwrap_err().kind() == ErrorKind::WouldBlock
        }),
    ));
    set_small_buffers(&writer, 4096);
    set_small_buffers(&peer, 4096);
    waits.push((
        "tcp write timeout (the failing call)",
        ms(30),
        Box::new(move |d| {
            let _peer = peer; // never reads
            writer.set_write_timeout(Some(d)).unwrap();
            let chunk = vec![1u8; 16 * 1024];
            loop {
                match (&writer).write(&chunk) {
                    Ok(n) => assert!(n > 0),
                    Err(e) => return e.kind() == ErrorKind::WouldBlock,
                }
            }
        }),
    ));
    waits.push((
        "accept timeout",
        ms(25),
        Box::new(move |d| {
            listener.set_accept_timeout(Some(d)).unwrap();
            listener.accept().unwrap_err().kind() == ErrorKind::TimedOut
        }),
    ));
    let udp = weft::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    waits.push((
        "udp read timeout",
        ms(30),
        Box::new(move |d| {
            udp.set_read_timeout(Some(d)).unwrap();
            udp.recv_from(&mut [0u8; 8]).unwrap_err().kind() == ErrorKind::WouldBlock
        }),
    ));
    let (unix, unix_peer) = weft::net::UnixStream::pair().unwrap();
    waits.push((
        "unix read timeout",
        ms(30),
        Box::new(move |d| {
            let _peer = unix_peer;
            unix.set_read_timeout(Some(d)).unwrap();
            (&unix).read(&mut [0u8; 8]).unwrap_err().kind() == ErrorKind::WouldBlock
        }),
    ));
    waits.push((
        "sleep",
        ms(30),
        Box::new(|d| {
            weft::sleep(d);
            true
        }),
    ));
    waits.push((
        "sleep_until",
        ms(45),
        Box::new(|d| {
            weft::sleep_until(Instant::now() + d);
            true
        }),
    ));
    let lock = Arc::new(Mutex::new(()));
    // The thread holds the lock until the wait is over (told so, or its
    // sender dropped; 30 s at most), however late the wait starts.
    let (waited_tx, waited_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let (lock, (held_tx, held_rx)) = (Arc::clone(&lock), std::sync::mpsc::channel());
        let holder = std::thread::spawn(move || {
            let _g = lock.lock();
            held_tx.send(()).unwrap();
            let _ = waited_rx.recv_timeout(LIVENESS);
        });
        held_rx.recv().unwrap();
        holder
    };
    waits.push((
        "try_lock_for (held by a thread)",
        ms(30),
        Box::new(move |d| {
            let timed_out = lock.try_lock_for(d).is_none();
            drop(waited_tx);
            holder.join().unwrap();
            timed_out
        }),
    ));
    let pair = Arc::new((Mutex::new(()), weft::sync::Condvar::new()));
    waits.push((
        "condvar wait_timeout",
        ms(30),
        Box::new(move |d| {
            let (m, c) = &*pair;
            c.wait_timeout(m.lock(), d).1.timed_out()
        }),
    ));
    let sem = weft::sync::Semaphore::new(0);
    waits.push(("semaphore acquire_timeout", ms(20), Box::new(move |d| sem.acquire_timeout(d).is_none())));
    let rw = weft::sync::RwLock::new(0);
    waits.push((
        "rwlock try_write_for (read held)",
        ms(20),
        Box::new(move |d| {
            let _r = rw.read();
            rw.try_write_for(d).is_none()
        }),
    ));
    let barrier = weft::sync::Barrier::new(2);
    waits.push(("barrier wait_timeout", ms(20), Box::new(move |d| barrier.wait_timeout(d).is_none())));
    if on_coroutine {
        waits.push((
            "join_timeout",
            ms(30),
            Box::new(|d| {
                // Far longer than the wait, however late it starts; the
                // cancel below ends it.
                let mut sleeper = weft::spawn(|| weft::sleep(Duration::from_secs(3600)));
                let timed_out = sleeper.join_timeout(d).is_none();
                sleeper.cancel();
                timed_out
            }),
        ));
    }
    waits
}

#[test]
fn timeouts_never_early_under_load() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        let stop = Arc::new(AtomicBool::new(false));
        // Load: a yielding spinner on each worker.
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                weft::Builder::new()
                    .same_worker(false)
                    .spawn_on(&rt, move || {
                        while !stop.load(Ordering::Relaxed) {
                            weft::yield_now();
                        }
                    })
                    .unwrap()
            })
            .collect();
        let measure = |(name, asked, wait): TimedWait| {
            let start = Instant::now();
            let as_expected = wait(asked);
            (name, asked, start.elapsed(), as_expected)
        };
        let in_coroutines: Vec<_> = timed_waits(true).into_iter().map(|w| rt.spawn(move || measure(w))).collect();
        let on_threads: Vec<_> =
            timed_waits(false).into_iter().map(|w| std::thread::spawn(move || measure(w))).collect();
        let mut results: Vec<_> = in_coroutines.into_iter().map(|h| ("coroutine", h.join().unwrap())).collect();
        results.extend(on_threads.into_iter().map(|h| ("thread", h.join().unwrap())));
        stop.store(true, Ordering::Relaxed);
        spinners.into_iter().for_each(|s| s.join().unwrap());
        for (on, (name, asked, took, as_expected)) in results {
            assert!(as_expected, "{name} on a {on}: not a timeout");
            assert!(took >= asked, "{name} on a {on}: returned after {took:?}, before its {asked:?}");
            assert!(took < Duration::from_secs(10), "{name} on a {on}: {took:?}");
        }
    });
}

// ---------------------------------------------------------------------------
// 4. OS threads, spawn_blocking and coroutines together; misuse
// ---------------------------------------------------------------------------

/// A request to the key-value "service" coroutine.
struct Request {
    key: u64,
    reply: channel::OneshotSender<u64>,
}

#[test]
fn blocking_jobs_and_threads_call_a_coroutine_service() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        let (requests_tx, requests_rx) = channel::bounded::<Request>(4);
        let service = rt.spawn(move || {
            let mut served = 0u64;
            for request in requests_rx.iter() {
                if request.key % 3 == 0 {
                    weft::yield_now();
                }
                request.reply.send(request.key * 2).unwrap();
                served += 1;
            }
            served
        });
        let ask = |requests: &channel::Sender<Request>, key| {
            let (reply, answer) = channel::oneshot();
            requests.send(Request { key, reply }).unwrap();
            answer.recv().unwrap()
        };
        // Coroutines that each run a blocking job calling the service from
        // the pool thread, while they call it themselves.
        let callers: Vec<_> = (0..8u64)
            .map(|c| {
                let requests = requests_tx.clone();
                rt.spawn(move || {
                    let requests2 = requests.clone();
                    let job = weft::spawn_blocking(move || (0..20).map(|i| ask(&requests2, c * 1000 + i)).sum::<u64>());
                    let mine: u64 = (100..120).map(|i| ask(&requests, c * 1000 + i)).sum();
                    job.join().unwrap() + mine
                })
            })
            .collect();
        // And plain OS threads.
        let threads: Vec<_> = (8..12u64)
            .map(|c| {
                let requests = requests_tx.clone();
                std::thread::spawn(move || (0..40).map(|i| ask(&requests, c * 1000 + i)).sum::<u64>())
            })
            .collect();
        drop(requests_tx);
        let expected = |c: u64, keys: &mut dyn Iterator<Item = u64>| keys.map(|i| 2 * (c * 1000 + i)).sum::<u64>();
        for (c, caller) in callers.into_iter().enumerate() {
            let c = c as u64;
            assert_eq!(caller.join().unwrap(), expected(c, &mut (0..20).chain(100..120)));
        }
        for (c, thread) in (8..).zip(threads) {
            assert_eq!(thread.join().unwrap(), expected(c, &mut (0..40)));
        }
        assert_eq!(service.join().unwrap(), 8 * 40 + 4 * 40);
    });
}

#[test]
fn one_socket_read_by_a_coroutine_written_by_a_thread() {
    watched(LIVENESS, || {
        const BYTES: usize = 2 << 20;
        let rt = runtime(1);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        // One socket, two users: a coroutine reads `a` while this thread
        // writes to it (a clone); a thread reads `b` while a coroutine
        // writes to it.
        let a_writer = a.try_clone().unwrap();
        let b_reader = b.try_clone().unwrap();
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = {
            let ticks = Arc::clone(&ticks);
            rt.spawn(move || {
                for _ in 0..20 {
                    weft::sleep(Duration::from_millis(1));
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let coroutine_reader = rt.spawn(move || read_pattern(a, 2, 7000, "coroutine (b) to coroutine (a)"));
        let coroutine_writer = rt.spawn(move || write_pattern(b, 2, 5000, BYTES));
        let thread_reader = std::thread::spawn(move || read_pattern(b_reader, 1, 3000, "thread (a) to thread (b)"));
        write_pattern(a_writer, 1, 9000, BYTES);
        assert_eq!(coroutine_reader.join().unwrap(), BYTES);
        coroutine_writer.join().unwrap();
        assert_eq!(thread_reader.join().unwrap(), BYTES);
        ticker.join().unwrap();
        assert_eq!(ticks.load(Ordering::SeqCst), 20);
    });
}

/// Reads `stream` to its end in reads of at most `buf_len` bytes, checking
/// each against the pattern `seed` makes; returns how many bytes came.
fn read_pattern(mut stream: TcpStream, seed: u64, buf_len: usize, what: &str) -> usize {
    let mut pattern = common::net::Pattern::new(seed);
    let mut buf = vec![0u8; buf_len];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            return total;
        }
        pattern.check(&buf[..n], what);
        total += n;
    }
}

/// Writes `bytes` of the pattern `seed` makes to `stream`, in writes of at
/// most `chunk_len` bytes, then shuts its writing half.
fn write_pattern(mut stream: TcpStream, seed: u64, chunk_len: usize, bytes: usize) {
    let mut pattern = common::net::Pattern::new(seed);
    let mut chunk = vec![0u8; chunk_len];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        pattern.fill(&mut chunk[..n]);
        stream.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    stream.shutdown(Shutdown::Write).unwrap();
}

/// The misuses a user makes first, and what they are told.
#[test]
fn misuse_block_on_enter_and_nested_runtimes() {
    watched(LIVENESS, || {
        let rt = Arc::new(runtime(2));
        let other = Arc::new(runtime(1));
        let message = |error: weft::JoinError| {
            let payload = error.into_panic();
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        };
        // block_on from a coroutine: its own runtime, and another one.
        let (r, o) = (Arc::clone(&rt), Arc::clone(&other));
        let own = rt.spawn(move || r.block_on(|| 1)).join().unwrap_err();
        assert!(message(own).contains("block_on was called from inside a coroutine"));
        let foreign = rt.spawn(move || o.block_on(|| 1)).join().unwrap_err();
        assert!(message(foreign).contains("Use `spawn(..)` and `join()` instead"));
        // enter from a coroutine.
        let o = Arc::clone(&other);
        let entered = rt.spawn(move || drop(o.enter())).join().unwrap_err();
        assert!(message(entered).contains("Runtime::enter was called from inside a coroutine"));
        // The right way: spawn on the other runtime and join from here (parks).
        let o = Arc::clone(&other);
        assert!(rt.spawn(move || o.spawn(|| weft::current().id()).join().unwrap() > 0).join().unwrap());
        // A runtime built, used and dropped inside a coroutine.
        let inner = rt.spawn(|| {
            let nested = runtime(1);
            let v = nested.spawn(|| {
                weft::sleep(Duration::from_millis(2));
                7
            });
            let v = v.join().unwrap();
            drop(nested);
            v
        });
        assert_eq!(inner.join().unwrap(), 7);
        // block_on from a spawn_blocking job: a plain thread, allowed.
        let r = Arc::clone(&rt);
        let from_job = rt.spawn(move || weft::spawn_blocking(move || r.block_on(|| 5)).join().unwrap());
        assert_eq!(from_job.join().unwrap(), 5);
        // Both runtimes still work.
        assert_eq!(rt.block_on(|| weft::spawn(|| 1).join().unwrap()), 1);
        assert_eq!(other.block_on(|| 2), 2);
    });
}

// ---------------------------------------------------------------------------
// 5. Panics in awkward places
// ---------------------------------------------------------------------------

#[test]
fn panics_release_locks_and_hand_back_values() {
    watched(LIVENESS, || {
        let rt = runtime(2);
        // A panic while a Mutex is held, with a coroutine parked behind it:
        // no poisoning (parking_lot's shape): the waiter gets the lock and
        // sees the half-done update.
        let state = Arc::new(Mutex::new(Vec::<u32>::new()));
        let (locked_tx, locked_rx) = channel::bounded::<()>(0);
        let s = Arc::clone(&state);
        let panicker = rt.spawn(move || {
            let mut guard = s.lock();
            guard.push(1);
            locked_tx.send(()).unwrap();
            weft::sleep(Duration::from_millis(20)); // the waiter parks meanwhile
            guard.push(2);
            panic!("half-way through an update");
        });
        locked_rx.recv().unwrap();
        let s = Arc::clone(&state);
        let waiter = rt.spawn(move || s.lock().clone());
        let error = panicker.join().unwrap_err();
        assert!(error.is_panic() && error.to_string().contains("half-way"), "{error}");
        assert_eq!(waiter.join().unwrap(), [1, 2]);
        assert!(!state.is_locked());

        // RwLock: a panic under a write guard, and under an upgradable read.
        let table = Arc::new(weft::sync::RwLock::new(0u32));
        let t = Arc::clone(&table);
        assert!(
            rt.spawn(move || {
                let mut w = t.write();
                *w = 1;
                panic!("under a write guard");
            })
            .join()
            .is_err()
        );
        let t = Arc::clone(&table);
        assert!(
            rt.spawn(move || {
                let up = t.upgradable_read();
                let _w = weft::sync::RwLockUpgradableReadGuard::upgrade(up);
                panic!("under an upgraded guard");
            })
            .join()
            .is_err()
        );
        assert_eq!(*table.try_write().expect("free"), 1);

        // A Condvar predicate that panics: the lock is released, the condvar
        // still serves the next waiter.
        let pair = Arc::new((Mutex::new(0u32), weft::sync::Condvar::new()));
        let p = Arc::clone(&pair);
        let bad = rt.spawn(move || {
            let (m, c) = &*p;
            drop(c.wait_while(m.lock(), |v| {
                assert!(*v < 1, "predicate gave up");
                true
            }));
        });
        let p = Arc::clone(&pair);
        let good = rt.spawn(move || {
            let (m, c) = &*p;
            *c.wait_while(m.lock(), |v| *v < 2)
        });
        std::thread::sleep(Duration::from_millis(20));
        for _ in 0..2 {
            *pair.0.lock() += 1;
            pair.1.notify_all();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(bad.join().unwrap_err().is_panic());
        assert_eq!(good.join().unwrap(), 2);
        assert!(!pair.0.is_locked());

        // A panic while holding a selected receive: the value goes back to
        // its channel; a panic after a fan-out select: every unsent clone
        // of the message is dropped.
        let (tx, rx) = channel::bounded::<Arc<str>>(4);
        let message: Arc<str> = "hello".into();
        tx.send(Arc::clone(&message)).unwrap();
        let r = rx.clone();
        let err = rt.spawn(move || {
            let mut select = Select::new();
            select.recv(&r);
            let _operation = select.select();
            panic!("before taking the value");
        });
        assert!(err.join().unwrap_err().is_panic());
        assert_eq!(&*rx.try_recv().expect("handed back"), "hello");
        let queues: Vec<_> = (0..5).map(|_| channel::bounded::<Arc<str>>(0)).collect();
        let senders: Vec<_> = queues.iter().map(|(tx, _)| tx.clone()).collect();
        let (keep_tx, keep_rx) = channel::bounded::<Arc<str>>(1);
        let m = Arc::clone(&message);
        let fan_out = rt.spawn(move || {
            let mut select = Select::new();
            for tx in &senders {
                select.send(tx, Arc::clone(&m));
            }
            select.send(&keep_tx, Arc::clone(&m));
            let operation = select.select();
            operation.send(&keep_tx).unwrap();
            panic!("after the fan-out");
        });
        assert!(fan_out.join().unwrap_err().is_panic());
        assert_eq!(Arc::strong_count(&message), 2, "ours and the one in keep_rx");
        drop(keep_rx);
        assert_eq!(Arc::strong_count(&message), 1);
        drop(queues);
        // The runtime is unhurt.
        assert_eq!(
            rt.block_on(|| (0..100).map(|i| weft::spawn(move || i)).map(|h| h.join().unwrap()).sum::<i32>()),
            4950
        );
    });
}

/// Panics in destructors the runtime runs: a task-local's, a detached
/// result's, a never-started closure's. Each is reported; none takes a
/// worker thread down. (In a child process: a worker that died would
/// hang or abort the test binary.)
#[test]
fn panicking_destructors_the_runtime_runs() {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let stderr = common::in_child_process(&SERIAL, "panicking_destructors_the_runtime_runs", &[], LIVENESS, || {
        struct Bomb(&'static str);
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("bomb {} went off", self.0);
            }
        }
        weft::task_local! {
            static BOMB: std::cell::RefCell<Option<Bomb>> = const { std::cell::RefCell::new(None) };
        }
        let rt = runtime(1);
        // A task-local whose destructor panics: the coroutine still joins Ok.
        let local = rt.spawn(|| {
            BOMB.with(|b| *b.borrow_mut() = Some(Bomb("task-local")));
            42
        });
        println!("task-local: {:?}", local.join().map_err(|e| e.to_string()));
        // A detached coroutine's result whose destructor panics.
        let detached = rt.spawn(|| Bomb("detached result"));
        drop(detached);
        // A result dropped by the joiner: the joiner's panic, in its thread.
        let joined = rt.spawn(|| Bomb("joined result"));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(joined.join())));
        assert!(caught.is_err());
        // A closure cancelled before it started, holding a bomb.
        let (gate_tx, gate_rx) = channel::bounded::<()>(0);
        let blocker = rt.spawn(move || {
            gate_rx.recv().unwrap();
        });
        let bomb = Bomb("unstarted closure");
        let unstarted = rt.spawn(move || drop(bomb));
        unstarted.cancel();
        gate_tx.send(()).unwrap();
        blocker.join().unwrap();
        println!("unstarted: {:?}", unstarted.join().map_err(|e| e.kind()));
        // The one worker still runs coroutines.
        let sum = rt.block_on(|| (0..50).map(|i| weft::spawn(move || i)).map(|h| h.join().unwrap()).sum::<i32>());
        assert_eq!(sum, 1225);
        drop(rt);
    });
    if let Some(stderr) = stderr {
        for what in ["task-local", "detached result", "unstarted closure"] {
            assert!(stderr.contains(&format!("bomb {what} went off")), "{what}: not reported:\n{stderr}");
        }
    }
}

// ---------------------------------------------------------------------------
// 6. Diagnostics of a real deadlock
// ---------------------------------------------------------------------------

/// Two coroutines take two Mutexes in opposite orders; a third waits on a
/// channel whose sender sits, forgotten, in a struct nobody uses. What the
/// monitor's hint and `Runtime::dump` say about it.
#[test]
fn deadlock_hint_and_dump_name_the_culprits() {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let source = include_str!("user_trial2.rs");
    let line_of = |mark: &str| source.lines().position(|l| l.ends_with(mark)).expect("marked line") + 1;
    let (lock_line, recv_line) = (line_of("// lock_line"), line_of("// recv_line"));
    let stderr = common::in_child_process(&SERIAL, "deadlock_hint_and_dump_name_the_culprits", &[], LIVENESS, || {
        let rt = runtime(2);
        let accounts = Arc::new(Mutex::new(0u64));
        let ledger = Arc::new(Mutex::new(0u64));
        let both = Arc::new(weft::sync::Barrier::new(2));
        let transfer = |name: &str, first: &Arc<Mutex<u64>>, second: &Arc<Mutex<u64>>| {
            let (first, second, both) = (Arc::clone(first), Arc::clone(second), Arc::clone(&both));
            weft::Builder::new()
                .name(name.to_owned())
                .spawn_on(&rt, move || {
                    let _a = first.lock();
                    both.wait();
                    let _b = second.lock(); // lock_line
                })
                .unwrap()
        };
        let _left = transfer("transfer-accounts-first", &accounts, &ledger);
        let _right = transfer("transfer-ledger-first", &ledger, &accounts);
        struct Forgotten {
            _reply: channel::Sender<u32>,
        }
        let (reply, replies) = channel::bounded::<u32>(0);
        let _forgotten = Forgotten { _reply: reply };
        let _waiter =
            weft::Builder::new().name("awaiting-reply".to_owned()).spawn_on(&rt, move || replies.recv()).unwrap(); // recv_line
        // The hint comes after ~1 s of quiet; the monitor's thread may be
        // late on a loaded machine.
        std::thread::sleep(Duration::from_secs(5));
        eprintln!("----- Runtime::dump -----\n{}", rt.dump());
        eprintln!("----- Runtime::dump {{:#}} -----\n{:#}", rt.dump());
        drop(rt); // unwinds all three
    });
    if let Some(stderr) = stderr {
        println!("{stderr}");
        let hint = stderr.split("----- Runtime::dump").next().unwrap();
        assert!(hint.contains("are parked and nothing can wake them"), "no deadlock hint:\n{stderr}");
        for name in ["transfer-accounts-first", "transfer-ledger-first", "awaiting-reply"] {
            assert!(hint.contains(name), "the hint does not name {name}:\n{stderr}");
        }
        assert_eq!(hint.matches("parked on Mutex").count(), 2, "{stderr}");
        assert!(hint.contains("(recv)"), "{stderr}");
        // Each names the line of its wait: the second lock of each transfer,
        // the recv of the waiter.
        for line in [lock_line, recv_line] {
            assert!(hint.contains(&format!("user_trial2.rs:{line}:")), "the hint does not name line {line}:\n{stderr}");
        }
        assert_eq!(hint.matches("      waits in ").count(), 3, "{stderr}");
        // The dump's backtraces reach the line of each wait.
        let dump = &stderr[stderr.find("----- Runtime::dump").unwrap()..];
        assert!(dump.contains("user_trial2.rs"), "no user frame in the dump:\n{dump}");
    }
}

// ---------------------------------------------------------------------------
// A log collector over Unix datagrams: senders outrun the collector
// ---------------------------------------------------------------------------

#[test]
fn unix_datagram_log_collector_gets_every_record_once() {
    watched(2 * LIVENESS, || {
        const SENDERS: u32 = 6;
        const RECORDS: u32 = 300;
        let dir = TempDir::new("trial2-logs");
        let path = dir.0.join("collector.sock");
        let rt = runtime(2);
        let collector_socket = weft::net::UnixDatagram::bind(&path).unwrap();
        // The collector starts late: the kernel's queue (max_dgram_qlen,
        // usually 512) fills and the senders wait. It collects until it has
        // as many records as were sent (30 s at most), not until a quiet
        // spell: a duplicate or a lost record shows in the sequences
        // checked below (each sender's records arrive in order, so a
        // duplicate comes before its sender's last record).
        let collector = rt.spawn(move || {
            weft::sleep(Duration::from_millis(50));
            collector_socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let deadline = Instant::now() + LIVENESS;
            let mut seen: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            let mut count = 0;
            let mut buf = [0u8; 64];
            while count < SENDERS * RECORDS && Instant::now() < deadline {
                match collector_socket.recv(&mut buf) {
                    Ok(n) => {
                        let text = std::str::from_utf8(&buf[..n]).unwrap();
                        let (who, seq) = text.split_once(':').unwrap();
                        seen.entry(who.parse().unwrap()).or_default().push(seq.parse().unwrap());
                        count += 1;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("recv: {e}"),
                }
            }
            seen
        });
        let senders: Vec<_> = (0..SENDERS)
            .map(|who| {
                let path = path.clone();
                let send_all = move || {
                    let socket = weft::net::UnixDatagram::unbound().unwrap();
                    for seq in 0..RECORDS {
                        socket.send_to(format!("{who}:{seq}").as_bytes(), &path).unwrap();
                    }
                };
                if who % 2 == 0 { Ok(rt.spawn(send_all)) } else { Err(std::thread::spawn(send_all)) }
            })
            .collect();
        for sender in senders {
            match sender {
                Ok(coroutine) => coroutine.join().unwrap(),
                Err(thread) => thread.join().unwrap(),
            }
        }
        let seen = collector.join().unwrap();
        assert_eq!(seen.len(), SENDERS as usize);
        for (who, seqs) in seen {
            assert_eq!(seqs, (0..RECORDS).collect::<Vec<_>>(), "records of sender {who}: each once, in order");
        }
    });
}

// ---------------------------------------------------------------------------
// Zero and past deadlines: an operation that can complete now completes
// ---------------------------------------------------------------------------

fn zero_deadline_checks() {
    let past = Instant::now() - Duration::from_millis(5);
    let zero = Duration::ZERO;
    let (tx, rx) = channel::bounded::<u8>(1);
    tx.send(1).unwrap();
    assert_eq!(rx.recv_deadline(past), Ok(1), "recv_deadline(past) with a value queued");
    assert!(tx.send_deadline(2, past).is_ok(), "send_deadline(past) with room");
    assert_eq!(rx.recv_timeout(zero), Ok(2), "recv_timeout(0) with a value queued");
    assert!(tx.send_timeout(3, zero).is_ok(), "send_timeout(0) with room");
    {
        let mut select = Select::new();
        select.recv(&rx);
        assert_eq!(select.select_deadline(past).expect("ready case").recv(&rx), Ok(3));
    }
    {
        let mut select = Select::new();
        select.recv(&rx);
        assert!(select.select_timeout(zero).is_err(), "nothing ready");
    }
    let m = Mutex::new(0);
    assert!(m.try_lock_until(past).is_some() && m.try_lock_for(zero).is_some());
    let rw = weft::sync::RwLock::new(0);
    assert!(rw.try_read_for(zero).is_some() && rw.try_write_for(zero).is_some());
    let c = weft::sync::Condvar::new();
    let (guard, result) = c.wait_timeout(m.lock(), zero);
    assert!(result.timed_out());
    drop(guard);
    let sem = weft::sync::Semaphore::new(1);
    assert!(sem.acquire_timeout(zero).is_some());
    let barrier = weft::sync::Barrier::new(1);
    assert!(barrier.wait_timeout(zero).is_some_and(|r| r.is_leader()));
    assert!(weft::sync::WaitGroup::new().wait_timeout(zero));
    let start = Instant::now();
    weft::sleep_until(past);
    weft::sleep(zero);
    assert!(start.elapsed() < Duration::from_secs(1));
    let (otx, orx) = channel::oneshot::<u8>();
    otx.send(4).unwrap();
    assert_eq!(orx.recv_timeout(zero), Ok(4));
}

#[test]
fn zero_and_past_deadlines_complete_what_is_ready() {
    watched(LIVENESS, || {
        zero_deadline_checks();
        let rt = runtime(1);
        rt.spawn(zero_deadline_checks).join().unwrap();
        let mut done = rt.spawn(|| 5);
        while !done.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(done.join_timeout(Duration::ZERO).map(Result::unwrap), Some(5));
        rt.block_on(|| {
            let mut done = weft::spawn(|| 6);
            while !done.is_finished() {
                weft::yield_now();
            }
            assert_eq!(done.join_timeout(Duration::ZERO).map(Result::unwrap), Some(6));
        });
    });
}

// ---------------------------------------------------------------------------
// Found by the trial: a cancelled initialiser, a cancel held up by a peer
// ---------------------------------------------------------------------------

/// A request handler is the first to touch a lazily loaded global; its
/// initialiser parks (a fetch), and the request is cancelled (its deadline
/// passed). `OnceLock::get_or_init` hands the cell to the next caller. A
/// `LazyLock`'s initialiser is an `FnOnce` that the cancelled try used up:
/// every later use panics, and the message says that a cancel (not only a
/// panic) can be why, as `LazyLock`'s docs do. Each initialiser says when
/// it is inside, and its fetch would take an hour: the cancel comes while
/// both are in their initialisers, however slowly they got there.
#[test]
fn a_cancelled_initialiser_hands_a_once_lock_on_and_poisons_a_lazy_lock() {
    static INSIDE: AtomicUsize = AtomicUsize::new(0);
    static CONFIG: weft::sync::LazyLock<String> = weft::sync::LazyLock::new(|| {
        INSIDE.fetch_add(1, Ordering::SeqCst);
        weft::sleep(Duration::from_secs(3600)); // a fetch, ended by the cancel
        "config v1".to_owned()
    });
    static CELL: weft::sync::OnceLock<String> = weft::sync::OnceLock::new();
    watched(2 * LIVENESS, || {
        let rt = runtime(1);
        let first = rt.spawn(|| CONFIG.len());
        let first_cell = rt.spawn(|| {
            CELL.get_or_init(|| {
                INSIDE.fetch_add(1, Ordering::SeqCst);
                weft::sleep(Duration::from_secs(3600));
                "from the first".to_owned()
            })
            .len()
        });
        assert!(
            eventually(LIVENESS, || INSIDE.load(Ordering::SeqCst) == 2),
            "the two initialisers did not both start within {LIVENESS:?}"
        );
        first.cancel();
        first_cell.cancel();
        assert!(first.join().unwrap_err().is_cancelled());
        assert!(first_cell.join().unwrap_err().is_cancelled());
        let second_cell = rt.spawn(|| CELL.get_or_init(|| "from the second".to_owned()).clone()).join();
        assert_eq!(second_cell.map_err(|e| e.to_string()).as_deref(), Ok("from the second"));
        let second = rt.spawn(|| CONFIG.clone()).join().expect_err("the LazyLock's initialiser is gone");
        let message = second.to_string();
        assert!(message.contains("poisoned") && message.contains("cancelled"), "{message}");
    });
}

/// Waits (30 s at most) until the coroutine `id` of `rt` is parked: the
/// writers below park only once their output is buffered and they wait for
/// their next message.
fn wait_until_parked(rt: &weft::Runtime, id: u64) {
    let parked = || rt.dump().coroutine(id).is_some_and(|c| matches!(c.state(), weft::CoroutineState::Parked { .. }));
    assert!(eventually(LIVENESS, parked), "the writer did not park within {LIVENESS:?}:\n{}", rt.dump());
}

/// A connection's writer coroutine keeps a `BufWriter` with output not yet
/// flushed while it waits for its next message; the client has stopped
/// reading (its socket buffers are full), so the server cancels the
/// writer to drop the client. The cancel's unwind drops the `BufWriter`,
/// whose `Drop` flushes: that write used to park until the dead-but-open
/// client read, which it never does, so the cancel never completed. A
/// socket operation no longer waits while its coroutine is being unwound
/// for good.
#[test]
fn cancel_of_a_writer_with_buffered_output_completes() {
    watched(3 * LIVENESS, || {
        let rt = runtime(1);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap(); // never reads
        let (stream, _) = listener.accept().unwrap();
        let (_next_tx, next_rx) = channel::bounded::<Vec<u8>>(0);
        let mut writer = rt.spawn(move || {
            stream.set_nonblocking(true).unwrap();
            while (&stream).write(&[0u8; 65536]).is_ok() {} // the client stopped reading
            stream.set_nonblocking(false).unwrap();
            // More than the socket's buffers could take even after the
            // kernel grows them: the flush has to wait for the client.
            let mut out = std::io::BufWriter::with_capacity(4 << 20, &stream);
            out.write_all(&vec![b'x'; 2 << 20]).unwrap(); // buffered
            for message in next_rx.iter() {
                out.write_all(&message).unwrap();
            }
        });
        wait_until_parked(&rt, writer.id()); // in `next_rx.iter()`, with output buffered
        writer.cancel();
        let ended = writer.join_timeout(LIVENESS);
        let dump = rt.dump();
        assert!(ended.is_some(), "the cancelled writer is still there after {LIVENESS:?}:\n{dump}");
        drop(client);
    });
}

/// The same writer, unwound by its runtime's drop instead of a cancel: the
/// `BufWriter`'s flush used to block the worker thread in `poll(2)` until
/// the client read, and the drop never returned.
#[test]
fn runtime_drop_with_a_writer_whose_client_stopped_reading_completes() {
    watched(3 * LIVENESS, || {
        let rt = runtime(1);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap(); // never reads
        let (stream, _) = listener.accept().unwrap();
        let (flushes_tx, flushes_rx) = std::sync::mpsc::channel();
        /// Flushes a `BufWriter` as it is dropped, and says what the flush returned.
        struct Reporting(Option<std::io::BufWriter<TcpStream>>, std::sync::mpsc::Sender<std::io::ErrorKind>);
        impl Drop for Reporting {
            fn drop(&mut self) {
                let mut out = self.0.take().expect("dropped once");
                let kind = out.flush().map_or_else(|e| e.kind(), |()| std::io::ErrorKind::Other);
                let _ = self.1.send(kind);
                // The BufWriter's own drop tries again: it must not wait either.
            }
        }
        let (_next_tx, next_rx) = channel::bounded::<Vec<u8>>(0);
        let writer = rt.spawn(move || {
            stream.set_nonblocking(true).unwrap();
            while (&stream).write(&[0u8; 65536]).is_ok() {} // the client stopped reading
            stream.set_nonblocking(false).unwrap();
            let mut out = Reporting(Some(std::io::BufWriter::with_capacity(4 << 20, stream)), flushes_tx);
            out.0.as_mut().unwrap().write_all(&vec![b'x'; 2 << 20]).unwrap(); // buffered, as above
            for message in next_rx.iter() {
                out.0.as_mut().unwrap().write_all(&message).unwrap();
            }
        });
        wait_until_parked(&rt, writer.id()); // in `next_rx.iter()`, with output buffered
        drop(rt);
        assert_eq!(flushes_rx.recv_timeout(LIVENESS), Ok(std::io::ErrorKind::TimedOut));
        assert_eq!(writer.join().unwrap_err().kind(), weft::JoinErrorKind::Shutdown);
        drop(client);
    });
}
