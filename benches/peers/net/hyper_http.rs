//! Peer: the minimal HTTP/1.1 server through hyper 1.x (its HTTP/1 server
//! connection, one tokio task per connection, tokio's current-thread
//! runtime), answering as weft's http_hello does. hyper parses the requests
//! itself (httparse underneath) and handles keep-alive and pipelining; the
//! builder keeps hyper's defaults except the Date header, which is off so
//! that the answer is the same as every other server's: the same bytes but
//! for the header names, which hyper writes in lower case (hyper adds
//! Content-Length from the body's size).

#[path = "common.rs"]
mod common;

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue, SERVER};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const BODY: &[u8] = b"Hello, World!";

async fn hello(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    let headers = response.headers_mut();
    headers.insert(SERVER, HeaderValue::from_static("weft"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

fn main() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(common::addr()).await?;
        println!("listening on {}", listener.local_addr()?);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.auto_date_header(false);
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let connection = builder.serve_connection(TokioIo::new(stream), hyper::service::service_fn(hello));
            tokio::spawn(async move {
                // A connection ends with an error when the client resets it
                // (wrk at the end of its run): nothing to report.
                let _ = connection.await;
            });
        }
    })
}
