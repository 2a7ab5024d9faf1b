//! What every peer server of the network benchmark shares: the one answer,
//! the request loop over a buffer (httparse, pipelining-safe), and the
//! command line (`--addr 127.0.0.1:PORT`). Each peer answers exactly as
//! weft's `examples/http_hello.rs` does, so the servers differ only in
//! their I/O paths.

#![allow(dead_code)] // each peer uses the parts it needs

/// The one answer, byte for byte (no Date header, as in http_hello).
pub const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: weft\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

/// Parses every complete request at the front of `buf`, appends one answer
/// per request to `out`, and removes what it parsed from `buf`. Returns
/// false when the connection must close (a request that does not parse, a
/// head over 64 KiB, `Connection: close` after its answer).
pub fn answer(buf: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    let mut at = 0;
    let mut keep = true;
    while at < buf.len() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[at..]) {
            Ok(httparse::Status::Complete(len)) => {
                let mut body = 0;
                for h in request.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        body = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                    }
                    if h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close") {
                        keep = false;
                    }
                }
                if buf.len() - at < len + body {
                    break; // the body is still coming
                }
                out.extend_from_slice(RESPONSE);
                at += len + body;
                if !keep {
                    break;
                }
            }
            Ok(httparse::Status::Partial) => break,
            Err(_) => return false,
        }
    }
    buf.drain(..at);
    keep && buf.len() <= 64 * 1024
}

/// `--addr ADDR` from the command line (default 127.0.0.1:8080).
pub fn addr() -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--addr")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "127.0.0.1:8080".into())
}

/// Serves one HTTP connection on a blocking `Read + Write` stream (std's,
/// or may's, whose blocking calls park its coroutine) until it closes.
pub fn serve_http<S: std::io::Read + std::io::Write>(mut stream: S) {
    let mut buf = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let keep = answer(&mut buf, &mut out);
        if !out.is_empty() && stream.write_all(&out).is_err() {
            return;
        }
        out.clear();
        if !keep {
            return;
        }
    }
}

/// Echoes everything read on a blocking `Read + Write` stream until it
/// closes.
pub fn serve_echo<S: std::io::Read + std::io::Write>(mut stream: S) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
