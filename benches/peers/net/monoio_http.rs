//! Peer: the minimal HTTP/1.1 server on monoio's io_uring driver (one
//! thread, one task per connection), answering as weft's http_hello does.
//! It is here to measure what submitting reads and writes through
//! io_uring, instead of one system call each, gains on this workload: the
//! design the network section names as the way past the kernel's share.

#[path = "common.rs"]
mod common;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

fn main() -> std::io::Result<()> {
    let mut runtime = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build()?;
    runtime.block_on(async {
        let listener = monoio::net::TcpListener::bind(common::addr())?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (mut stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            monoio::spawn(async move {
                let mut buf = Vec::with_capacity(4096);
                let mut out = Vec::with_capacity(4096);
                // A read fills `chunk` from its start (monoio's owned
                // buffers): what it read is copied onto `buf`, as the
                // tokio peer does.
                let mut chunk = Vec::with_capacity(4096);
                loop {
                    let (read, back) = stream.read(chunk).await;
                    chunk = back;
                    let n = match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let keep = common::answer(&mut buf, &mut out);
                    if !out.is_empty() {
                        let (written, back) = stream.write_all(out).await;
                        out = back;
                        if written.is_err() {
                            return;
                        }
                    }
                    out.clear();
                    if !keep {
                        return;
                    }
                }
            });
        }
    })
}
