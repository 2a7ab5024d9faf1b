//! Edges found in a review of `weft::net` and the poller: vectored writes to
//! a gone peer (an error, never SIGPIPE, as plain writes).

mod common;

use common::net::set_linger_zero;
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::sync::Mutex;
use std::time::Duration;
use weft::net::{TcpListener, TcpStream, UnixStream};

/// Serialises the tests that run a child process (see `common`).
static CHILD: Mutex<()> = Mutex::new(());

/// A vectored write (`write_vectored`, what `write_all_vectored` and many
/// HTTP libraries call) to a TCP peer that reset the connection, and to a
/// Unix peer that is gone, fails with an error, in a coroutine and on a
/// thread, with SIGPIPE at its default action (a child process): as a
/// plain `write` does (a `send` with MSG_NOSIGNAL), never by killing the
/// process with SIGPIPE, which a `writev` without the flag does.
#[test]
fn vectored_writes_to_a_gone_peer_are_errors_not_signals() {
    let Some(stderr) = common::in_child_process(
        &CHILD,
        "vectored_writes_to_a_gone_peer_are_errors_not_signals",
        &[],
        Duration::from_secs(30),
        || {
            // SAFETY: SIG_DFL is a valid disposition for SIGPIPE.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            let rt = weft::Runtime::builder().workers(1).build().unwrap();
            for on_thread in [false, true] {
                // TCP: the peer closes with a RST (linger 0) once it has
                // read what came; every later write is an error.
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                let (mut server, _) = listener.accept().unwrap();
                set_linger_zero(&server);
                client.write_all(b"x").unwrap();
                let mut byte = [0u8; 1];
                server.read_exact(&mut byte).unwrap();
                drop(server); // RST
                let (mut unix, peer) = UnixStream::pair().unwrap();
                drop(peer);
                let write = move || {
                    let bufs = [IoSlice::new(b"hello"), IoSlice::new(b" world")];
                    // The first write after a RST may still be taken (the
                    // RST not yet in); the kernel reports the reset by the
                    // second at the latest, then EPIPE for good.
                    let mut tcp_err = None;
                    for _ in 0..100 {
                        match client.write_vectored(&bufs) {
                            Ok(n) => {
                                assert!(n > 0, "a vectored write of 11 bytes took none");
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            Err(err) => {
                                tcp_err = Some(err);
                                break;
                            }
                        }
                    }
                    let tcp_err = tcp_err.expect("vectored writes to a reset connection kept succeeding");
                    assert!(
                        matches!(tcp_err.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
                        "on a thread: {on_thread}: {tcp_err:?}"
                    );
                    let err = client.write_vectored(&bufs).expect_err("a vectored write after the reset succeeded");
                    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "on a thread: {on_thread}: {err:?}");
                    let err = unix.write_vectored(&bufs).expect_err("a vectored write to a gone peer succeeded");
                    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "on a thread: {on_thread}: {err:?}");
                };
                if on_thread {
                    std::thread::spawn(write).join().unwrap();
                } else {
                    rt.spawn(write).join().unwrap();
                }
            }
        },
    ) else {
        return; // the child's run
    };
    assert!(!stderr.contains("panicked"), "the child reported a panic:\n{stderr}");
}
