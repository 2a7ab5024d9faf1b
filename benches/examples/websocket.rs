//! tungstenite, a WebSocket library written for blocking `std::net`
//! streams, running unchanged over `weft::net::TcpStream` in coroutines: an
//! echo server (one coroutine per connection, each handed to
//! `tungstenite::accept`) and client coroutines (`tungstenite::client`)
//! that send text and binary messages, check every echo, ping, and close
//! with the close handshake. The code is in `benches/common/websocket.rs`,
//! shared with the test `benches/tests/websocket.rs`.
//!
//! ```text
//! cargo run --release -p weft-benches --example websocket                  # 200 clients x 200 messages
//! cargo run --release -p weft-benches --example websocket -- --quick       # CI's short mode: 20 x 20
//! cargo run --release -p weft-benches --example websocket -- --workers 4 1000 50
//! ```
//!
//! It lives in the benches package (weft-benches) because tungstenite
//! brings a dozen crates that weft's own package keeps out of its build.

#[path = "../../examples/common/args.rs"]
mod args;
#[path = "../common/websocket.rs"]
mod websocket;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use weft::net::TcpListener;

static ARGS: args::Spec = args::Spec { name: "websocket", counts: &["clients", "messages"], workers: true };

/// The largest message: see `websocket::client` (a group of three in
/// flight must fit in the socket buffers).
const MAX_SIZE: usize = 32 * 1024;

fn main() {
    let args = args::Args::parse(&ARGS);
    let (clients, messages) = if args.quick { (20, 20) } else { (args.count(0, 200), args.count(1, 200)) };
    let (clients, messages) = (clients as usize, messages as usize);
    if clients == 0 || messages == 0 {
        args.fail("clients and messages must be at least 1");
    }
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = weft::Runtime::builder().workers(workers).build().expect("cannot start the runtime");

    let stats = Arc::new(websocket::ServerStats::default());
    let server_stats = Arc::clone(&stats);
    let (totals, mut failures, elapsed) = runtime.block_on(move || {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot listen on 127.0.0.1:0");
        let addr = listener.local_addr().expect("a bound listener has an address");
        println!("WebSocket echo server on ws://{addr}/echo, {workers} workers");
        let server = weft::spawn(move || websocket::serve(listener, server_stats));
        let started = Instant::now();
        let handles: Vec<_> =
            (0..clients).map(|id| weft::spawn(move || websocket::client(addr, id, messages, MAX_SIZE))).collect();
        let mut totals = websocket::ClientReport::default();
        let mut failures = Vec::new();
        for (id, handle) in handles.into_iter().enumerate() {
            match handle.join() {
                Ok(Ok(report)) => {
                    totals.text += report.text;
                    totals.binary += report.binary;
                    totals.bytes += report.bytes;
                }
                Ok(Err(problem)) => failures.push(format!("client {id}: {problem}")),
                Err(e) => failures.push(format!("client {id}'s coroutine: {e}")),
            }
        }
        let elapsed = started.elapsed();
        server.cancel();
        assert!(server.join().expect_err("the accept loop was cancelled").is_cancelled());
        (totals, failures, elapsed)
    });

    println!(
        "{clients} client coroutines x {messages} messages: {} text and {} binary messages ({:.1} MB) echoed and \
         compared, one ping each, then the close handshake, in {:.0} ms ({:.0} messages/s)",
        totals.text,
        totals.binary,
        totals.bytes as f64 / 1e6,
        elapsed.as_secs_f64() * 1e3,
        (totals.text + totals.binary) as f64 / elapsed.as_secs_f64()
    );
    println!(
        "server: {} connections upgraded, {} messages echoed, {} closed with the close handshake",
        stats.upgraded.load(Ordering::Relaxed),
        stats.echoed.load(Ordering::Relaxed),
        stats.closed_cleanly.load(Ordering::Relaxed)
    );
    if let Some(failure) = stats.first_failure.lock().as_ref() {
        failures.push(failure.clone());
    }
    let expected = clients * messages;
    if !failures.is_empty()
        || totals.text + totals.binary != expected
        || stats.echoed.load(Ordering::Relaxed) != expected
        || stats.closed_cleanly.load(Ordering::Relaxed) != clients
    {
        for failure in &failures {
            eprintln!("websocket: {failure}");
        }
        println!("check: FAILED");
        std::process::exit(1);
    }
    println!("check: ok");
}
