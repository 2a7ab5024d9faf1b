//! The minimal HTTP/1.1 server every peer of the HTTP benchmark is also
//! written as: one coroutine per connection, keep-alive, pipelining, and one
//! fixed answer.
//!
//! ```text
//! cargo run --release --example http_hello -- --addr 127.0.0.1:8080 --workers 2   # serves until killed
//! cargo run --release --example http_hello -- --quick                              # CI: server + checking client, bounded
//! ```
//!
//! Every request, whatever its method and path, gets the same 13-byte body:
//!
//! ```text
//! HTTP/1.1 200 OK\r\nServer: weft\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!
//! ```
//!
//! There is no `Date` header, on purpose: formatting the time (or caching a
//! formatted time and refreshing it every second) is work a peer might do
//! differently, and the benchmark compares the servers' I/O paths, so none
//! of the peers sends one.
//!
//! How a connection is served (the loop in [`serve`]): read into a
//! per-connection buffer; parse every complete request in it with
//! `httparse`; append one answer per request, in order, to a per-connection
//! output buffer; write all the answers of that read with one `write_all`;
//! keep any partial request at the front of the buffer for the next read.
//! So a client that pipelines gets its answers in as few writes as it sent
//! requests in, and a request split over several packets is still answered
//! once. Both buffers are allocated once per connection and reused: a
//! request costs no allocation. The connection closes on EOF, on a request
//! that does not parse (without an answer), on `Connection: close` (after
//! its answer), on an HTTP/1.0 request without `Connection: keep-alive`,
//! on a request body this server does not read (`Transfer-Encoding`), and
//! on a request whose head and body together are larger than 64 KiB. A
//! request body with `Content-Length` is read and skipped. An HTTP/1.0
//! request with `Connection: keep-alive` gets that header back in its
//! answer (a 1.0 client keeps the connection only then).
//!
//! Accepted connections get `TCP_NODELAY`, as in most benchmarked servers:
//! each batch of answers goes out in one write, so Nagle's algorithm would
//! only delay the next batch behind the client's delayed ACK.
//!
//! With `--addr` it prints `listening on ADDR` (the bound address, so
//! `--addr 127.0.0.1:0` tells which port it got) on one line as soon as it
//! listens, and serves until killed. `--quick` starts the same server on
//! `127.0.0.1:0` in this process, runs a bounded client of its own against
//! it (coroutines with keep-alive connections sending pipelined and single
//! requests, requests split across writes, a `Connection: close`, and a
//! request that does not parse), checks every byte of every answer, prints
//! what it did and exits.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weft::net::{TcpListener, TcpStream};

/// The one answer, byte for byte.
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: weft\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

/// The answer to an HTTP/1.0 request that asked to keep the connection: a
/// 1.0 client keeps it only if the answer says so too.
const RESPONSE_KEEP_ALIVE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: weft\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nHello, World!";

/// The size a connection's read buffer starts at; it grows (doubling) only
/// for a request head that does not fit, up to [`MAX_HEAD`].
const READ_BUFFER: usize = 4096;

/// The most a request (its head and its skipped body together) may take in
/// a connection's buffer; a larger one closes the connection.
const MAX_HEAD: usize = 64 * 1024;

/// How many headers a request may have; a request with more does not parse.
const MAX_HEADERS: usize = 32;

const USAGE: &str = concat!(
    "usage: http_hello [--addr HOST:PORT] [--workers N] [--quick]\n",
    "  --addr HOST:PORT  serve there until killed (default 127.0.0.1:8080; port 0 picks one);\n",
    "                    prints `listening on ADDR` once it listens\n",
    "  --workers N       worker threads (default: one per core)\n",
    "  --quick           CI's short mode: the server on 127.0.0.1:0 and a checking client, in this process",
);

struct Options {
    addr: String,
    workers: Option<usize>,
    quick: bool,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options { addr: "127.0.0.1:8080".to_string(), workers: None, quick: false };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                "--quick" => options.quick = true,
                "--addr" => match args.next() {
                    Some(addr) => options.addr = addr,
                    None => usage("--addr needs HOST:PORT"),
                },
                "--workers" => match args.next().and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) if n > 0 => options.workers = Some(n),
                    _ => usage("--workers needs a worker count of at least 1"),
                },
                other => usage(&format!("unknown argument {other:?}")),
            }
        }
        options
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("http_hello: {problem}\n{USAGE}");
    std::process::exit(2);
}

fn main() {
    let options = Options::parse();
    let workers = options.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = weft::Runtime::builder().workers(workers).build().expect("cannot start the runtime");
    if options.quick {
        runtime.block_on(quick);
        return;
    }
    // Bound on this thread, before the runtime runs anything: a host name
    // resolves in the C library, which would block a worker.
    let listener = TcpListener::bind(&options.addr).unwrap_or_else(|e| {
        eprintln!("http_hello: cannot listen on {}: {e}", options.addr);
        std::process::exit(1);
    });
    let addr = listener.local_addr().expect("a bound listener has an address");
    println!("listening on {addr}");
    let _ = io::stdout().flush();
    runtime.block_on(move || accept_loop(listener));
}

/// Accepts connections forever, one coroutine each.
fn accept_loop(listener: TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => {
                weft::spawn(move || {
                    // A reset or a broken pipe is the client's business.
                    let _ = serve(stream);
                });
            }
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection aborted before
                // it was accepted: say so and go on, after a pause that lets
                // connections close when descriptors ran out.
                eprintln!("http_hello: accept: {e}");
                weft::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// What the parse of one buffer's requests ended with.
enum Next {
    /// Read more: the buffer ends with a partial request (or nothing).
    Read,
    /// Write the answers so far, then close.
    Close,
}

/// Serves one connection until the client closes it or the server must.
fn serve(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut input = vec![0u8; READ_BUFFER];
    let mut filled = 0; // input[..filled] holds bytes read and not yet consumed
    let mut output = Vec::with_capacity(RESPONSE.len() * 16);
    loop {
        if filled == input.len() {
            if input.len() >= MAX_HEAD {
                return Ok(()); // a head (or body) too large for a hello server
            }
            input.resize(input.len() * 2, 0);
        }
        let n = stream.read(&mut input[filled..])?;
        if n == 0 {
            return Ok(()); // EOF; a partial request left behind is dropped
        }
        filled += n;
        let (consumed, next) = answer_all(&input[..filled], &mut output);
        if !output.is_empty() {
            stream.write_all(&output)?;
            output.clear();
        }
        if let Next::Close = next {
            return Ok(());
        }
        input.copy_within(consumed..filled, 0);
        filled -= consumed;
    }
}

/// Parses every complete request at the front of `input` and appends one
/// answer per request to `output`; returns how many bytes of `input` those
/// requests took, and whether to read on or close.
fn answer_all(input: &[u8], output: &mut Vec<u8>) -> (usize, Next) {
    let mut consumed = 0;
    while consumed < input.len() {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let head = match request.parse(&input[consumed..]) {
            Ok(httparse::Status::Complete(head)) => head,
            Ok(httparse::Status::Partial) => break,
            Err(_) => return (consumed, Next::Close),
        };
        let (mut close, mut keep_alive) = (false, false);
        let mut body = 0usize;
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("connection") {
                for option in header.value.split(|&b| b == b',') {
                    let option = option.trim_ascii();
                    close |= option.eq_ignore_ascii_case(b"close");
                    keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if header.name.eq_ignore_ascii_case("content-length") {
                match std::str::from_utf8(header.value).ok().and_then(|v| v.trim().parse::<usize>().ok()) {
                    Some(length) => body = length,
                    None => return (consumed, Next::Close),
                }
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                return (consumed, Next::Close); // a chunked body: not for a hello server
            }
        }
        if head.saturating_add(body) > MAX_HEAD {
            return (consumed, Next::Close); // more than the buffer may hold
        }
        if input.len() - consumed - head < body {
            break; // the body has not all arrived: answer once it has
        }
        consumed += head + body;
        // HTTP/1.1 keeps the connection unless told to close; HTTP/1.0
        // closes it unless told to keep it, and says so in the answer.
        let http10 = request.version == Some(0);
        output.extend_from_slice(if http10 && keep_alive && !close { RESPONSE_KEEP_ALIVE } else { RESPONSE });
        if close || (http10 && !keep_alive) {
            return (consumed, Next::Close);
        }
    }
    (consumed, Next::Read)
}

// ---------------------------------------------------------------------------
// --quick: the server and a checking client in one process
// ---------------------------------------------------------------------------

/// Client coroutines, each with its own keep-alive connection.
const QUICK_CLIENTS: usize = 8;
/// Rounds per client; each round sends one pipelined batch and one single
/// request, and every fourth round one request split in two writes.
const QUICK_ROUNDS: usize = 200;
/// The largest pipelined batch.
const QUICK_MAX_BATCH: usize = 16;

const GET: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\nUser-Agent: weft-quick\r\nAccept: */*\r\n\r\n";
const POST: &[u8] = b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello";

/// Runs the server on `127.0.0.1:0` and the checks against it.
fn quick() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot listen on 127.0.0.1:0");
    let addr = listener.local_addr().expect("a bound listener has an address");
    println!("listening on {addr}");
    let server = weft::spawn(move || accept_loop(listener));
    let started = Instant::now();

    let clients: Vec<_> =
        (0..QUICK_CLIENTS).map(|client| weft::spawn(move || keep_alive_client(addr, client))).collect();
    let mut requests = 0;
    let mut writes = 0;
    for client in clients {
        let (r, w) = client.join().expect("a client coroutine panicked").expect("a client's I/O failed");
        requests += r;
        writes += w;
    }
    let elapsed = started.elapsed();
    println!(
        "{QUICK_CLIENTS} keep-alive connections: {requests} requests in {writes} writes (pipelined batches of up to \
         {QUICK_MAX_BATCH}, single requests, requests split across writes, GETs and POSTs with a body), every answer \
         checked byte for byte, in {:.0} ms",
        elapsed.as_secs_f64() * 1e3
    );

    edge_cases(addr).expect("the edge-case checks' I/O failed");

    // The accept loop never returns: cancel it (it unwinds out of accept).
    server.cancel();
    assert!(server.join().expect_err("the accept loop was cancelled").is_cancelled());
    println!("check: ok");
}

/// One keep-alive connection: rounds of a pipelined batch, a single
/// request, and now and then a request split across two writes. Returns
/// the requests sent and the writes they took.
fn keep_alive_client(addr: SocketAddr, client: usize) -> io::Result<(usize, usize)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (client as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut batch = Vec::new();
    let mut answers = vec![0u8; RESPONSE.len() * QUICK_MAX_BATCH];
    let (mut requests, mut writes) = (0, 0);
    for round in 0..QUICK_ROUNDS {
        // A pipelined batch of GETs and POSTs, in one write.
        let size = 1 + (next_random(&mut rng) as usize % QUICK_MAX_BATCH);
        batch.clear();
        for _ in 0..size {
            batch.extend_from_slice(if next_random(&mut rng) % 4 == 0 { POST } else { GET });
        }
        stream.write_all(&batch)?;
        expect_answers(&mut stream, &mut answers, size)?;
        requests += size;
        writes += 1;

        // One request on its own.
        stream.write_all(GET)?;
        expect_answers(&mut stream, &mut answers, 1)?;
        requests += 1;
        writes += 1;

        // One request in two writes, split at a random byte: the server
        // must keep the first part and answer once.
        if round % 4 == 0 {
            let cut = 1 + next_random(&mut rng) as usize % (GET.len() - 1);
            stream.write_all(&GET[..cut])?;
            weft::sleep(Duration::from_millis(1)); // so the server reads the part alone
            stream.write_all(&GET[cut..])?;
            expect_answers(&mut stream, &mut answers, 1)?;
            requests += 1;
            writes += 2;
        }
    }
    // Nothing more may come: shut our side; the server closes on EOF.
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    assert!(rest.is_empty(), "client {client}: {} unexpected bytes after the last answer", rest.len());
    Ok((requests, writes))
}

/// Reads exactly `count` answers and checks each byte.
fn expect_answers(stream: &mut TcpStream, buf: &mut [u8], count: usize) -> io::Result<()> {
    let buf = &mut buf[..RESPONSE.len() * count];
    stream.read_exact(buf)?;
    for (i, answer) in buf.chunks(RESPONSE.len()).enumerate() {
        assert_eq!(answer, RESPONSE, "answer {i} of {count} differs: {:?}", String::from_utf8_lossy(answer));
    }
    Ok(())
}

/// The ways a connection ends: `Connection: close` (answered, then
/// closed), a pipelined batch cut short by one, an HTTP/1.0 request (with
/// and without keep-alive, which its answer repeats), a request that does
/// not parse (closed without an answer), and a large body skipped before
/// the next request.
fn edge_cases(addr: SocketAddr) -> io::Result<()> {
    let big_body = [&b"POST / HTTP/1.1\r\nContent-Length: 60000\r\n\r\n"[..], &[b'x'; 60_000]].concat();
    let cases: [(&str, Vec<u8>, Vec<u8>); 6] = [
        ("Connection: close", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec(), RESPONSE.to_vec()),
        (
            "a pipelined batch with Connection: close in the middle",
            [GET, GET, b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n", GET].concat(),
            RESPONSE.repeat(3),
        ),
        ("HTTP/1.0 without keep-alive", b"GET / HTTP/1.0\r\n\r\n".to_vec(), RESPONSE.to_vec()),
        (
            "HTTP/1.0 with keep-alive, then one without",
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET / HTTP/1.0\r\n\r\n".to_vec(),
            [RESPONSE_KEEP_ALIVE, RESPONSE].concat(),
        ),
        ("a request that does not parse, after a good one", [GET, b"NOT HTTP\r\n\r\n"].concat(), RESPONSE.to_vec()),
        (
            "a 60 000-byte body, skipped, then Connection: close",
            [&big_body[..], b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"].concat(),
            RESPONSE.repeat(2),
        ),
    ];
    for (what, request, expected) in cases {
        let mut stream = TcpStream::connect(addr)?;
        stream.write_all(&request)?;
        // The server closes its side: read everything until EOF, without
        // shutting ours.
        let mut got = Vec::new();
        stream.read_to_end(&mut got)?;
        assert_eq!(got, expected, "{what}: wrong answers {:?}", String::from_utf8_lossy(&got));
        println!("{what}: {} byte(s) of answers, then the server closed", got.len());
    }
    Ok(())
}

/// splitmix64: a seeded, repeatable stream of numbers for the client.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
