//! A TCP echo server and a client that checks every byte: one coroutine per
//! connection on both sides.
//!
//! ```text
//! cargo run --release --example echo -- --addr 127.0.0.1:7000 --workers 2      # serves until killed
//! cargo run --release --example echo -- --connect 127.0.0.1:7000 --conns 100 --messages 1000 --size 64
//! cargo run --release --example echo                                            # both, in one process
//! cargo run --release --example echo -- --quick                                 # both, in one process, bounded
//! ```
//!
//! The server reads into a per-connection buffer and writes back everything
//! it read, until the client closes its side. With `--addr` it prints
//! `listening on ADDR` (the bound address: `--addr 127.0.0.1:0` picks a
//! port) once it listens.
//!
//! The client (`--connect`) opens `--conns` connections, each in its own
//! coroutine, and sends `--messages` messages of `--size` bytes of random
//! contents on each, one at a time: write the message, read exactly as
//! many bytes back, compare them with what was sent. It prints the round
//! trips per second of all connections together, and exits with status 1 if
//! any byte differs. A message is written whole before its echo is read,
//! so a message must fit in the socket buffers in flight: `--size` is at
//! most 64 KiB.
//!
//! Without `--addr` or `--connect` it runs both in one process: the
//! server on `127.0.0.1:0` and the client (with the same `--conns`,
//! `--messages` and `--size`) against it. `--quick` does the same, bounded:
//! 50 connections × 200 messages of random sizes from 1 byte to 16 KiB,
//! every byte checked.
//!
//! Both sides set `TCP_NODELAY`: an echo written in several pieces would
//! otherwise wait, piece after piece, for the peer's delayed ACK.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};
use weft::net::{TcpListener, TcpStream};

/// The server's per-connection buffer.
const SERVER_BUFFER: usize = 16 * 1024;

/// The largest `--size`: a message is written whole before its echo is
/// read, so both directions' socket buffers must hold it.
const MAX_SIZE: usize = 64 * 1024;

const USAGE: &str = concat!(
    "usage: echo [--addr HOST:PORT | --connect HOST:PORT] [--conns N] [--messages M] [--size S] [--workers N] [--quick]\n",
    "  (neither --addr nor --connect: the server and the client in this process)\n",
    "  --addr HOST:PORT     serve there until killed (port 0 picks one); prints `listening on ADDR`\n",
    "  --connect HOST:PORT  be the client: N connections (default 100), each sending M messages\n",
    "                       (default 1000) of S bytes (default 64, at most 65536), every echo checked\n",
    "  --workers N          worker threads (default: one per core)\n",
    "  --quick              CI's short mode: server and client in this process, 50 x 200 messages\n",
    "                       of random sizes up to 16 KiB",
);

/// What to be.
enum Mode {
    Serve(String),
    Connect(String),
    /// The server and the client in this process.
    Both,
    Quick,
}

struct Options {
    mode: Mode,
    workers: Option<usize>,
    conns: usize,
    messages: usize,
    size: usize,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options { mode: Mode::Quick, workers: None, conns: 100, messages: 1000, size: 64 };
        let (mut addr, mut connect, mut quick) = (None, None, false);
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut count = |what: &str, min: usize, max: usize| match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if (min..=max).contains(&n) => n,
                _ => usage(&format!("{what} needs a whole number from {min} to {max}")),
            };
            match arg.as_str() {
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                "--quick" => quick = true,
                "--workers" => options.workers = Some(count("--workers", 1, 4096)),
                "--conns" => options.conns = count("--conns", 1, 1_000_000),
                "--messages" => options.messages = count("--messages", 1, usize::MAX),
                "--size" => options.size = count("--size", 1, MAX_SIZE),
                "--addr" => addr = Some(args.next().unwrap_or_else(|| usage("--addr needs HOST:PORT"))),
                "--connect" => connect = Some(args.next().unwrap_or_else(|| usage("--connect needs HOST:PORT"))),
                other => usage(&format!("unknown argument {other:?}")),
            }
        }
        options.mode = match (quick, addr, connect) {
            (true, _, _) => Mode::Quick,
            (false, Some(addr), None) => Mode::Serve(addr),
            (false, None, Some(addr)) => Mode::Connect(addr),
            (false, None, None) => Mode::Both,
            (false, Some(_), Some(_)) => usage("--addr and --connect exclude each other (--quick runs both)"),
        };
        options
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("echo: {problem}\n{USAGE}");
    std::process::exit(2);
}

fn main() {
    let options = Options::parse();
    let workers = options.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = weft::Runtime::builder().workers(workers).build().expect("cannot start the runtime");
    match &options.mode {
        Mode::Serve(addr) => {
            // Bound on this thread: a host name resolves in the C library,
            // which would block a worker.
            let listener = TcpListener::bind(addr).unwrap_or_else(|e| {
                eprintln!("echo: cannot listen on {addr}: {e}");
                std::process::exit(1);
            });
            println!("listening on {}", listener.local_addr().expect("a bound listener has an address"));
            let _ = io::stdout().flush();
            runtime.block_on(move || accept_loop(listener));
        }
        Mode::Connect(addr) => {
            let addr = resolve(addr);
            let load = Load { conns: options.conns, messages: options.messages, sizes: Sizes::Fixed(options.size) };
            let report = runtime.block_on(move || run_clients(addr, load));
            println!("{}", report.summary(workers));
            if let Err(problem) = report.outcome {
                eprintln!("echo: {problem}");
                std::process::exit(1);
            }
            println!("check: ok");
        }
        Mode::Both | Mode::Quick => {
            let load = match options.mode {
                Mode::Quick => Load { conns: 50, messages: 200, sizes: Sizes::UpTo(16 * 1024) },
                _ => Load { conns: options.conns, messages: options.messages, sizes: Sizes::Fixed(options.size) },
            };
            let report = runtime.block_on(move || in_process(load));
            println!("{}", report.summary(workers));
            if let Err(problem) = report.outcome {
                eprintln!("echo: {problem}");
                std::process::exit(1);
            }
            println!("check: ok");
        }
    }
}

/// The first address `addr` resolves to, resolved on this (not a worker)
/// thread.
fn resolve(addr: &str) -> SocketAddr {
    match addr.to_socket_addrs().map(|mut addrs| addrs.next()) {
        Ok(Some(addr)) => addr,
        Ok(None) => usage(&format!("{addr:?} resolves to no address")),
        Err(e) => usage(&format!("cannot resolve {addr:?}: {e}")),
    }
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// Accepts connections forever, one coroutine each.
fn accept_loop(listener: TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => {
                weft::spawn(move || {
                    // A reset or a broken pipe is the client's business.
                    let _ = echo(stream);
                });
            }
            Err(e) => {
                // Out of descriptors, or a connection aborted before it was
                // accepted: say so, pause (so connections can close), go on.
                eprintln!("echo: accept: {e}");
                weft::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Writes back everything it reads, until EOF.
fn echo(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; SERVER_BUFFER];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/// How large each message is.
#[derive(Clone, Copy)]
enum Sizes {
    Fixed(usize),
    /// Random, from 1 byte to this many.
    UpTo(usize),
}

/// What the clients send.
#[derive(Clone, Copy)]
struct Load {
    conns: usize,
    messages: usize,
    sizes: Sizes,
}

/// What the clients did.
struct Report {
    load: Load,
    round_trips: usize,
    bytes: u64,
    elapsed: Duration,
    /// `Err` names the first connection that failed and why.
    outcome: Result<(), String>,
}

impl Report {
    fn summary(&self, workers: usize) -> String {
        let secs = self.elapsed.as_secs_f64();
        let sizes = match self.load.sizes {
            Sizes::Fixed(size) => format!("{size} bytes"),
            Sizes::UpTo(max) => format!("random sizes from 1 to {max} bytes"),
        };
        format!(
            "{} connections x {} messages of {sizes} on {workers} workers: {} round trips, {:.1} MB each way, in \
             {:.0} ms: {:.0} round trips/s, {:.1} MB/s each way; every echoed byte compared",
            self.load.conns,
            self.load.messages,
            self.round_trips,
            self.bytes as f64 / 1e6,
            secs * 1e3,
            self.round_trips as f64 / secs,
            self.bytes as f64 / 1e6 / secs
        )
    }
}

/// Runs `load.conns` client coroutines against `addr` and waits for all.
fn run_clients(addr: SocketAddr, load: Load) -> Report {
    let started = Instant::now();
    let clients: Vec<_> =
        (0..load.conns).map(|conn| weft::spawn(move || client(addr, conn, load.messages, load.sizes))).collect();
    let (mut round_trips, mut bytes, mut outcome) = (0, 0, Ok(()));
    for (conn, handle) in clients.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(sent)) => {
                round_trips += load.messages;
                bytes += sent;
            }
            Ok(Err(e)) => {
                if outcome.is_ok() {
                    outcome = Err(format!("connection {conn}: {e}"));
                }
            }
            Err(e) => {
                if outcome.is_ok() {
                    outcome = Err(format!("connection {conn}'s coroutine: {e}"));
                }
            }
        }
    }
    Report { load, round_trips, bytes, elapsed: started.elapsed(), outcome }
}

/// One connection: `messages` round trips, each checked; returns the
/// bytes sent (as many came back).
fn client(addr: SocketAddr, conn: usize, messages: usize, sizes: Sizes) -> io::Result<u64> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let largest = match sizes {
        Sizes::Fixed(size) | Sizes::UpTo(size) => size,
    };
    let (mut sent, mut echoed) = (vec![0u8; largest], vec![0u8; largest]);
    let mut rng = 0x2545_f491_4f6c_dd1du64 ^ (conn as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut bytes = 0u64;
    for message in 0..messages {
        let size = match sizes {
            Sizes::Fixed(size) => size,
            Sizes::UpTo(max) => 1 + next_random(&mut rng) as usize % max,
        };
        let (sent, echoed) = (&mut sent[..size], &mut echoed[..size]);
        fill_random(sent, &mut rng);
        stream.write_all(sent)?;
        stream.read_exact(echoed)?;
        if sent != echoed {
            let at = sent.iter().zip(echoed.iter()).position(|(a, b)| a != b).unwrap_or(0);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message {message} ({size} bytes) came back different from byte {at} on"),
            ));
        }
        bytes += size as u64;
    }
    // The server closes when we do: nothing more may come back.
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{} bytes after the last echo", rest.len())));
    }
    Ok(bytes)
}

/// The server on `127.0.0.1:0` and the client against it.
fn in_process(load: Load) -> Report {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot listen on 127.0.0.1:0");
    let addr = listener.local_addr().expect("a bound listener has an address");
    println!("listening on {addr}");
    let server = weft::spawn(move || accept_loop(listener));
    let report = run_clients(addr, load);
    // The accept loop never returns: cancel it (it unwinds out of accept).
    server.cancel();
    assert!(server.join().expect_err("the accept loop was cancelled").is_cancelled());
    report
}

/// Fills `buf` with bytes of the stream `state` seeds.
fn fill_random(buf: &mut [u8], state: &mut u64) {
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&next_random(state).to_le_bytes());
    }
    let tail = chunks.into_remainder();
    let last = next_random(state).to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
}

/// splitmix64: a seeded, repeatable stream of numbers.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
