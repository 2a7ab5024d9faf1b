//! Peer: an echo server on may (`may::net`, one worker, one coroutine per
//! connection), as weft's `examples/echo.rs` serves.

#[path = "common.rs"]
mod common;

fn main() -> std::io::Result<()> {
    may::config().set_workers(1);
    let listener = may::net::TcpListener::bind(common::addr())?;
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = stream?;
        stream.set_nodelay(true)?;
        may::go!(move || common::serve_echo(stream));
    }
    Ok(())
}
