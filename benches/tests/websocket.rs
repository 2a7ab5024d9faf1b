//! tungstenite over `weft::net` in coroutines: many clients against one
//! echo server on two workers, every message echoed exactly, every
//! connection ending with a completed close handshake; and the same server
//! from a client on a plain OS thread, where `weft::net::TcpStream` blocks
//! like std's. The server and the clients are in
//! `benches/common/websocket.rs`, shared with the example
//! `benches/examples/websocket.rs`.

#[path = "../common/websocket.rs"]
mod websocket;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use weft::net::TcpListener;

const CLIENTS: usize = 50;
const MESSAGES: usize = 20;
/// See `websocket::client`: three of these in flight fit in the socket
/// buffers.
const MAX_SIZE: usize = 32 * 1024;

#[test]
fn many_clients_on_two_workers_get_every_message_back_and_close_cleanly() {
    let runtime = weft::Runtime::builder().workers(2).build().expect("runtime");
    let stats = Arc::new(websocket::ServerStats::default());
    let server_stats = Arc::clone(&stats);
    let reports = runtime.block_on(move || {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let addr = listener.local_addr().expect("address");
        let server = weft::spawn(move || websocket::serve(listener, server_stats));
        let clients: Vec<_> =
            (0..CLIENTS).map(|id| weft::spawn(move || websocket::client(addr, id, MESSAGES, MAX_SIZE))).collect();
        let reports: Vec<_> = clients.into_iter().map(|c| c.join().expect("a client coroutine panicked")).collect();
        server.cancel();
        assert!(server.join().expect_err("cancelled").is_cancelled());
        reports
    });
    for (id, report) in reports.iter().enumerate() {
        let report = report.as_ref().unwrap_or_else(|problem| panic!("client {id}: {problem}"));
        assert_eq!(report.text + report.binary, MESSAGES, "client {id}");
        assert_eq!(report.text, MESSAGES.div_ceil(2), "client {id}: text and binary by turns");
    }
    assert_eq!(*stats.first_failure.lock(), None);
    assert_eq!(stats.upgraded.load(Ordering::Relaxed), CLIENTS);
    assert_eq!(stats.echoed.load(Ordering::Relaxed), CLIENTS * MESSAGES);
    // A client's close handshake ends (ConnectionClosed) only after the
    // server coroutine counted it and closed the TCP connection.
    assert_eq!(stats.closed_cleanly.load(Ordering::Relaxed), CLIENTS);
}

#[test]
fn a_client_on_an_os_thread_talks_to_the_coroutine_server() {
    let runtime = weft::Runtime::builder().workers(2).build().expect("runtime");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("address");
    let stats = Arc::new(websocket::ServerStats::default());
    let server_stats = Arc::clone(&stats);
    let server = runtime.spawn(move || websocket::serve(listener, server_stats));
    // Outside any runtime: the same client code, on a blocking socket.
    let report = std::thread::spawn(move || websocket::client(addr, 7, MESSAGES, MAX_SIZE))
        .join()
        .expect("the client thread panicked")
        .unwrap_or_else(|problem| panic!("the OS-thread client: {problem}"));
    assert_eq!(report.text + report.binary, MESSAGES);
    server.cancel();
    assert!(server.join().expect_err("cancelled").is_cancelled());
    assert_eq!(*stats.first_failure.lock(), None);
    assert_eq!(stats.closed_cleanly.load(Ordering::Relaxed), 1);
}
