//! Peer: the minimal HTTP/1.1 server on std threads, one per connection,
//! answering as weft's http_hello does.

#[path = "common.rs"]
mod common;

use std::io::{Read, Write};

fn main() -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(common::addr())?;
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let mut stream = stream?;
        stream.set_nodelay(true)?;
        std::thread::spawn(move || {
            let mut buf = Vec::with_capacity(4096);
            let mut out = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            loop {
                let n = match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let keep = common::answer(&mut buf, &mut out);
                if !out.is_empty() && stream.write_all(&out).is_err() {
                    return;
                }
                out.clear();
                if !keep {
                    return;
                }
            }
        });
    }
    Ok(())
}
