//! Peer: the minimal HTTP/1.1 server on may (`may::net`, one worker, one
//! coroutine per connection), answering as weft's http_hello does.

#[path = "common.rs"]
mod common;

fn main() -> std::io::Result<()> {
    may::config().set_workers(1);
    let listener = may::net::TcpListener::bind(common::addr())?;
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = stream?;
        stream.set_nodelay(true)?;
        may::go!(move || common::serve_http(stream));
    }
    Ok(())
}
