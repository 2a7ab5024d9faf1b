//! Peer: the minimal HTTP/1.1 server on tokio's current-thread runtime (one
//! task per connection), answering as weft's http_hello does.

#[path = "common.rs"]
mod common;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(common::addr()).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (mut stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(4096);
                let mut out = Vec::with_capacity(4096);
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let keep = common::answer(&mut buf, &mut out);
                    if !out.is_empty() && stream.write_all(&out).await.is_err() {
                        return;
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
