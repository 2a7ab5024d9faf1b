//! A WebSocket echo server and checking clients: `tungstenite`, a library
//! written for blocking `std::net` streams, running unchanged over
//! `weft::net::TcpStream` in coroutines.
//!
//! tungstenite takes any `Read + Write`. Handed a `weft::net::TcpStream`,
//! each of its reads and writes that has to wait parks the calling
//! coroutine on its worker's poller; nothing in tungstenite knows. Each
//! accepted connection gets its own coroutine that does the server
//! handshake (`tungstenite::accept`) and echoes every text and binary
//! message; each client is a coroutine that connects, does the client
//! handshake (`tungstenite::client`), sends text and binary messages and
//! checks that each comes back exactly, pings once and checks the pong,
//! and ends with the close handshake.
//!
//! Mounted with `#[path]` by weft-benches' example
//! `benches/examples/websocket.rs` and its test `benches/tests/websocket.rs`
//! (an example and a test cannot share a module otherwise).

#![allow(dead_code)] // each user takes the parts it needs

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tungstenite::{Error, Message, WebSocket};
use weft::net::{TcpListener, TcpStream};
use weft::sync::Mutex;

/// What the server saw, over all its connections. Counters only: each is
/// read after the clients that caused it have finished (a client's close
/// handshake ends only once its connection's server coroutine has counted
/// it and dropped the stream), so Relaxed suffices.
#[derive(Default)]
pub struct ServerStats {
    /// Connections whose handshake succeeded.
    pub upgraded: AtomicUsize,
    /// Text and binary messages echoed.
    pub echoed: AtomicUsize,
    /// Connections that ended with a completed close handshake.
    pub closed_cleanly: AtomicUsize,
    /// The first connection that failed, and why.
    pub first_failure: Mutex<Option<String>>,
}

/// Accepts connections forever, one coroutine each; cancel it to stop.
pub fn serve(listener: TcpListener, stats: Arc<ServerStats>) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let stats = Arc::clone(&stats);
                weft::spawn(move || {
                    if let Err(e) = echo_connection(stream, &stats) {
                        stats.first_failure.lock().get_or_insert_with(|| format!("server side of {peer}: {e}"));
                    }
                });
            }
            Err(e) => {
                // Out of descriptors, or a connection aborted before it was
                // accepted: say so, pause (so connections can close), go on.
                eprintln!("websocket server: accept: {e}");
                weft::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// One server connection: the handshake, then every data message sent
/// back as it came, until the client's close handshake completes.
fn echo_connection(stream: TcpStream, stats: &ServerStats) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| format!("set_nodelay: {e}"))?;
    let mut ws = tungstenite::accept(stream).map_err(|e| format!("handshake: {e}"))?;
    stats.upgraded.fetch_add(1, Ordering::Relaxed);
    loop {
        match ws.read() {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                ws.send(message).map_err(|e| format!("echo: {e}"))?;
                stats.echoed.fetch_add(1, Ordering::Relaxed);
            }
            // tungstenite answers pings and the close frame itself; the
            // next read sends the answer.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_)) => {}
            Err(Error::ConnectionClosed) => {
                // The close handshake is complete: the server closes the
                // TCP connection (RFC 6455, 7.1.1), by dropping `ws`.
                stats.closed_cleanly.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// What one client sent and got back.
#[derive(Default, Debug)]
pub struct ClientReport {
    pub text: usize,
    pub binary: usize,
    pub bytes: usize,
}

/// One client: connects to `addr`, sends `messages` messages (text and
/// binary by turns, random sizes up to `max_size` bytes, random contents,
/// some in pipelined groups of three), checks every echo, pings once, and
/// closes with the close handshake. `Err` says what went wrong.
///
/// A group is written whole before its first echo is read, so three
/// messages of `max_size` must fit in the socket buffers in flight (the
/// callers use 32 KiB).
pub fn client(addr: SocketAddr, id: usize, messages: usize, max_size: usize) -> Result<ClientReport, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("set_nodelay: {e}"))?;
    let (mut ws, response) =
        tungstenite::client(format!("ws://{addr}/echo"), stream).map_err(|e| format!("handshake: {e}"))?;
    if response.status() != 101 {
        return Err(format!("handshake answered {}", response.status()));
    }
    let mut rng = 0x5851_f42d_4c95_7f2du64 ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut report = ClientReport::default();
    let mut sent = 0;
    while sent < messages {
        // Mostly one message, then its echo; every fourth time a group of
        // up to three written before the first echo is read.
        let group = if next_random(&mut rng) % 4 == 0 { 3.min(messages - sent) } else { 1 };
        let batch: Vec<Message> = (0..group)
            .map(|i| {
                let size = next_random(&mut rng) as usize % (max_size + 1);
                if (sent + i) % 2 == 0 {
                    Message::text(random_text(size, &mut rng))
                } else {
                    Message::binary(random_bytes(size, &mut rng))
                }
            })
            .collect();
        for message in &batch {
            ws.write(message.clone()).map_err(|e| format!("write message {sent}: {e}"))?;
        }
        ws.flush().map_err(|e| format!("flush: {e}"))?;
        for message in batch {
            let echoed = read_data(&mut ws).map_err(|e| format!("read the echo of message {sent}: {e}"))?;
            if echoed != message {
                return Err(format!(
                    "message {sent} came back different: sent {} bytes ({}), got {} bytes ({})",
                    message.len(),
                    kind(&message),
                    echoed.len(),
                    kind(&echoed)
                ));
            }
            match message {
                Message::Text(_) => report.text += 1,
                _ => report.binary += 1,
            }
            report.bytes += message.len();
            sent += 1;
        }
    }

    // A ping: the server's tungstenite answers it with a pong that carries
    // the same payload.
    let payload = format!("ping from client {id}");
    ws.send(Message::Ping(payload.clone().into_bytes().into())).map_err(|e| format!("ping: {e}"))?;
    match ws.read() {
        Ok(Message::Pong(echoed)) if echoed[..] == *payload.as_bytes() => {}
        Ok(other) => return Err(format!("expected the pong, got a {} message", kind(&other))),
        Err(e) => return Err(format!("read the pong: {e}")),
    }

    // The close handshake: our close frame, the server's answer, then the
    // server closes the TCP connection; only then does read return
    // ConnectionClosed to a client.
    ws.close(None).map_err(|e| format!("close: {e}"))?;
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => {}
            Ok(other) => return Err(format!("a {} message after our close frame", kind(&other))),
            Err(Error::ConnectionClosed) => return Ok(report),
            Err(e) => return Err(format!("during the close handshake: {e}")),
        }
    }
}

/// The next text or binary message (control frames are tungstenite's).
fn read_data(ws: &mut WebSocket<TcpStream>) -> tungstenite::Result<Message> {
    loop {
        match ws.read()? {
            message @ (Message::Text(_) | Message::Binary(_)) => return Ok(message),
            Message::Close(frame) => {
                return Err(Error::Io(std::io::Error::other(format!("the server closed early: {frame:?}"))));
            }
            _ => {}
        }
    }
}

fn kind(message: &Message) -> &'static str {
    match message {
        Message::Text(_) => "text",
        Message::Binary(_) => "binary",
        Message::Ping(_) => "ping",
        Message::Pong(_) => "pong",
        Message::Close(_) => "close",
        Message::Frame(_) => "raw frame",
    }
}

/// Random text of about `size` bytes, with one-, two-, three- and four-byte
/// characters (a text message must be valid UTF-8, and tungstenite checks
/// it on arrival).
fn random_text(size: usize, rng: &mut u64) -> String {
    const PIECES: [&str; 6] = ["weft", " ", "é", "✓", "🧵", "\n"];
    let mut text = String::with_capacity(size + 4);
    while text.len() < size {
        text.push_str(PIECES[next_random(rng) as usize % PIECES.len()]);
    }
    text
}

/// `size` random bytes.
fn random_bytes(size: usize, rng: &mut u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(size + 8);
    while bytes.len() < size {
        bytes.extend_from_slice(&next_random(rng).to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

/// splitmix64: a seeded, repeatable stream of numbers.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
