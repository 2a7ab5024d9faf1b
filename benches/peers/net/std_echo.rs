//! Peer: an echo server on std threads, one per connection, as weft's
//! `examples/echo.rs` serves.

#[path = "common.rs"]
mod common;

fn main() -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(common::addr())?;
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = stream?;
        stream.set_nodelay(true)?;
        std::thread::spawn(move || common::serve_echo(stream));
    }
    Ok(())
}
