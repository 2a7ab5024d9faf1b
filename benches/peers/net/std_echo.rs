//! Peer: an echo server on std threads, one per connection, as weft's
//! `examples/echo.rs` serves.

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
        });
    }
    Ok(())
}
