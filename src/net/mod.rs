//! Sockets that park the coroutine, not the worker: TCP, UDP and Unix
//! sockets with `std::net`'s shapes.
//!
//! Code written for `std::net` moves over by changing the import: the same
//! constructors, the same methods, `Read` and `Write` (also for `&TcpStream`,
//! so one coroutine can read while another writes the same stream), the
//! same errors. The difference is what happens when an operation would
//! block:
//!
//! - **in a coroutine**, only that coroutine waits: it parks on its
//!   worker's poller (an epoll instance per worker thread), and the worker
//!   runs other coroutines until the socket is ready. Ten thousand
//!   connections are ten thousand coroutines and a few threads;
//! - **on a plain OS thread** (no runtime), the same types block the
//!   thread exactly as std's do. One set of types serves both, as weft's
//!   locks do.
//!
//! ```
//! use std::io::{Read, Write};
//! use weft::net::{TcpListener, TcpStream};
//!
//! let runtime = weft::Runtime::builder().workers(2).build()?;
//! let echoed = runtime.block_on(|| -> std::io::Result<Vec<u8>> {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let addr = listener.local_addr()?;
//!     let server = weft::spawn(move || -> std::io::Result<()> {
//!         let (mut stream, _) = listener.accept()?;
//!         let mut buf = [0; 64];
//!         loop {
//!             let n = stream.read(&mut buf)?;
//!             if n == 0 {
//!                 return Ok(()); // the client shut down its half
//!             }
//!             stream.write_all(&buf[..n])?;
//!         }
//!     });
//!     let mut client = TcpStream::connect(addr)?;
//!     client.write_all(b"hello")?;
//!     client.shutdown(std::net::Shutdown::Write)?;
//!     let mut echoed = Vec::new();
//!     client.read_to_end(&mut echoed)?;
//!     server.join().expect("the server coroutine")?;
//!     Ok(echoed)
//! })?;
//! assert_eq!(echoed, b"hello");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Timeouts
//!
//! `set_read_timeout` and `set_write_timeout` bound each read or write
//! that has to wait, as in std: when the time passes the call fails with
//! [`io::ErrorKind::WouldBlock`] (std's kind on Unix).
//! [`TcpStream::connect_timeout`] and the accept timeouts
//! ([`TcpListener::set_accept_timeout`], [`UnixListener::set_accept_timeout`],
//! weft's own) fail with
//! [`io::ErrorKind::TimedOut`]. A timeout never ends a wait early. In a
//! coroutine the timeout is a timer on its worker; a coroutine parked in
//! any of these can also be cancelled ([`JoinHandle::cancel`]): it unwinds
//! out of the call, and its socket closes when its owner drops it.
//!
//! While a coroutine is being unwound for good, by its cancellation or by
//! its runtime's shutdown ([`Runtime`](crate::Runtime)'s drop), its socket
//! operations do not wait: one that would have to fails at once with
//! [`io::ErrorKind::TimedOut`], as if its timeout had run out, and one that
//! can complete at once still does. The destructors of that unwind may
//! write (a `BufWriter` flushes what it holds as it is dropped), and a
//! peer that has stopped reading would otherwise hold the cancel, or the
//! runtime's drop, up for as long as it likes.
//!
//! ```
//! use std::io::{BufWriter, Write};
//! use std::time::Duration;
//! use weft::net::{TcpListener, TcpStream};
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! // A client that connects and never reads.
//! let _client = std::net::TcpStream::connect(addr)?;
//! let (socket, _) = listener.accept()?;
//! let writer = weft::spawn(move || {
//!     let mut out = BufWriter::with_capacity(1 << 20, socket);
//!     // Far more than the socket's buffers hold: the flush in the
//!     // BufWriter's drop would wait for the client.
//!     out.write_all(&vec![b'x'; 8 << 20]).unwrap_or(());
//!     weft::sleep(Duration::from_secs(3600));
//! });
//! weft::sleep(Duration::from_millis(20));
//! writer.cancel();
//! assert!(writer.join().unwrap_err().is_cancelled());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! [`JoinHandle::cancel`]: crate::JoinHandle::cancel
//!
//! # Fairness
//!
//! A socket that is always ready (a peer that sends faster than the
//! coroutine reads, a listener whose backlog keeps filling) never makes its
//! coroutine wait, and scheduling is cooperative. So the operations of a
//! worker's coroutines share a budget: after 128 operations in a row of
//! which none had to wait, the next one first yields the worker to the
//! other coroutines ready there (tokio's cooperative budget does the same).
//! An operation that waits refills the budget.
//!
//! # What still blocks a worker
//!
//! - **Name resolution.** `connect("example.com:80")` resolves the name
//!   with the C library, which blocks the calling thread. Resolve in
//!   [`spawn_blocking`](crate::spawn_blocking) and pass the `SocketAddr`s,
//!   or use addresses.
//! - **Files and stdin.** Regular files are always "ready" for epoll, so
//!   there is nothing to wait for: a `std::fs::File` read in a coroutine
//!   holds its worker for as long as the disk takes. Put blocking file I/O
//!   in [`spawn_blocking`](crate::spawn_blocking).
//! - **std's own sockets.** A blocking `std::net` socket used in a
//!   coroutine blocks its worker; the runtime's monitor reports a worker
//!   held that long, naming the coroutine. Convert it with `from_std`.
//!
//! Dropping a socket closes it and removes it from every poller; no
//! readiness reaches a later socket that gets the same descriptor number.
//!
//! # Back to std
//!
//! A weft socket keeps its descriptor in non-blocking mode; `into_std`
//! hands the std socket back in blocking mode (unless it was set
//! non-blocking), with its timeouts. Clones made by `try_clone` share the
//! descriptor's open file, and the blocking mode belongs to the file, one
//! for all of them: while a clone is alive, the std socket from `into_std`
//! stays non-blocking (its calls fail with `WouldBlock` where they would
//! wait), so that the clones keep parking their coroutines instead of
//! blocking their workers. Drop the clones first for a blocking one.

mod tcp;
mod udp;
mod unix;
mod unix_datagram;

pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixIncoming, UnixListener, UnixStream};
pub use unix_datagram::UnixDatagram;

use crate::loom::process::{AtomicBool, AtomicU64, Ordering};
use crate::runtime::poller::{Direction, IoRegistration};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

/// The most buffers std's vectored calls pass the kernel on Linux (its
/// `IOV_MAX`); the rest of a longer slice is left untouched.
pub(crate) use crate::sys::net::IOV_MAX;

/// The options a socket shares with its clones (`try_clone`), as the
/// kernel's socket options are shared: the timeouts and the user's
/// non-blocking mode. Each is also set on the descriptor itself, so that
/// `into_std` hands over a socket that behaves the same.
#[derive(Debug, Default)]
struct Options {
    /// Nanoseconds; 0 means none.
    read_timeout: AtomicU64,
    write_timeout: AtomicU64,
    /// The user asked for non-blocking mode: operations fail with
    /// `WouldBlock` instead of waiting.
    nonblocking: AtomicBool,
}

/// What every weft socket adds to its std socket: its registrations with
/// the workers' pollers and the shared options. Declared before the std
/// socket in each type, so that it drops (deregisters) before the
/// descriptor closes.
struct IoState {
    registration: IoRegistration,
    options: Arc<Options>,
}

impl std::fmt::Debug for IoState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoState").field("fd", &self.registration.fd()).finish_non_exhaustive()
    }
}

/// The messages of the read and write timeouts.
const READ_TIMED_OUT: &str = "read timed out (set_read_timeout)";
const WRITE_TIMED_OUT: &str = "write timed out (set_write_timeout)";

/// How a wait that ran out of time is reported.
#[derive(Clone, Copy)]
enum OnTimeout {
    /// Read and write timeouts: `WouldBlock`, as std's on Unix.
    WouldBlock(&'static str),
    /// Connect and accept timeouts: `TimedOut`.
    TimedOut(&'static str),
}

impl OnTimeout {
    fn error(self) -> io::Error {
        match self {
            OnTimeout::WouldBlock(what) => io::Error::new(io::ErrorKind::WouldBlock, what),
            OnTimeout::TimedOut(what) => io::Error::new(io::ErrorKind::TimedOut, what),
        }
    }
}

fn nanos_of(timeout: Option<Duration>) -> u64 {
    timeout.map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX).max(1))
}

fn duration_of(nanos: u64) -> Option<Duration> {
    (nanos != 0).then(|| Duration::from_nanos(nanos))
}

/// std's answer to a zero timeout, which it cannot represent.
fn check_timeout(timeout: Option<Duration>) -> io::Result<()> {
    if timeout == Some(Duration::ZERO) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "cannot set a 0 duration timeout"));
    }
    Ok(())
}

impl IoState {
    /// Ends this weft socket's hold on its descriptor for `into_std`:
    /// deregisters it from every poller, then puts the descriptor back in
    /// blocking mode unless the user set it non-blocking (`set_nonblocking`
    /// gets the mode to set). Unless clones made by `try_clone` are still
    /// alive: they share the open file, and its `O_NONBLOCK` flag is one for
    /// all of them, so a blocking file would make the clones' operations
    /// block their worker thread instead of parking their coroutine. Then
    /// the descriptor stays non-blocking.
    fn release(self, set_nonblocking: impl FnOnce(bool) -> io::Result<()>) -> io::Result<()> {
        let nonblocking = self.is_nonblocking();
        let cloned = Arc::strong_count(&self.options) > 1;
        drop(self);
        if cloned { Ok(()) } else { set_nonblocking(nonblocking) }
    }

    fn new(fd: RawFd, options: Arc<Options>) -> IoState {
        IoState { registration: IoRegistration::new(fd), options }
    }

    fn read_timeout(&self) -> Option<Duration> {
        duration_of(self.options.read_timeout.load(Ordering::Relaxed))
    }

    fn write_timeout(&self) -> Option<Duration> {
        duration_of(self.options.write_timeout.load(Ordering::Relaxed))
    }

    fn is_nonblocking(&self) -> bool {
        self.options.nonblocking.load(Ordering::Relaxed)
    }

    /// A read-side operation that never empties the socket knowingly
    /// (accept, peek, a datagram): retried until it does not return
    /// `WouldBlock`, waiting for readability in between, bounded by the read
    /// timeout.
    fn read<R>(&self, op: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        let timeout = self.read_timeout();
        self.run(Direction::Read, timeout, OnTimeout::WouldBlock(READ_TIMED_OUT), op, |_| false)
    }

    /// A read of a TCP stream into buffers of `len` bytes in all: a read
    /// that returns less than that (and not EOF) emptied the receive queue,
    /// so the next one waits for new data before it calls the kernel. (A TCP
    /// read stops short with data still queued only at the urgent mark, and
    /// the poller keeps that apart: its URGENT bit.) A Unix stream's read
    /// has its own rule: `UnixStream::stream_read_vectored`.
    fn read_stream(&self, len: usize, op: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
        let timeout = self.read_timeout();
        self.run(Direction::Read, timeout, OnTimeout::WouldBlock(READ_TIMED_OUT), op, |&n| n > 0 && n < len)
    }

    /// A write-side operation, bounded by the write timeout.
    fn write<R>(&self, op: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        let timeout = self.write_timeout();
        self.run(Direction::Write, timeout, OnTimeout::WouldBlock(WRITE_TIMED_OUT), op, |_| false)
    }

    /// A stream write of `len` bytes: as [`write`](Self::write), except
    /// that a write of nothing never waits for room. The kernel answers it
    /// at once (0, or the socket's error) however full the send buffer is,
    /// and std's blocking write returns so; waiting for writability first
    /// would hold the caller until the peer reads.
    fn write_stream(&self, len: usize, op: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
        let timeout = self.write_timeout();
        let nonblocking = self.is_nonblocking() || len == 0;
        let on_timeout = || OnTimeout::WouldBlock(WRITE_TIMED_OUT).error();
        self.registration.run(Direction::Write, timeout, nonblocking, op, |_| false, on_timeout)
    }

    /// Runs `op` (a call on the non-blocking descriptor) until it does not
    /// fail with `WouldBlock`, waiting until the socket may be ready in
    /// `dir` in between, at most `timeout` in all (counted from the first
    /// wait); in non-blocking mode the first would-be wait is a
    /// `WouldBlock` instead. `drained` as in `IoRegistration::run`.
    fn run<R>(
        &self,
        dir: Direction,
        timeout: Option<Duration>,
        on_timeout: OnTimeout,
        op: impl FnMut() -> io::Result<R>,
        drained: impl Fn(&R) -> bool,
    ) -> io::Result<R> {
        self.registration.run(dir, timeout, self.is_nonblocking(), op, drained, || on_timeout.error())
    }
}

/// Shared by every socket type: the options, set on our copy and on the
/// descriptor.
macro_rules! socket_options {
    ($inner:ident) => {
        /// Sets the read timeout: a read (or receive) that has waited this
        /// long fails with [`std::io::ErrorKind::WouldBlock`], as std's does
        /// on Unix. `None` waits without limit.
        ///
        /// # Errors
        ///
        /// A zero duration is an [`std::io::ErrorKind::InvalidInput`] error,
        /// as in std.
        pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> std::io::Result<()> {
            super::check_timeout(timeout)?;
            self.$inner.set_read_timeout(timeout)?;
            self.state.options.read_timeout.store(super::nanos_of(timeout), crate::loom::process::Ordering::Relaxed);
            Ok(())
        }

        /// Sets the write timeout; see
        /// [`set_read_timeout`](Self::set_read_timeout).
        ///
        /// # Errors
        ///
        /// A zero duration is an [`std::io::ErrorKind::InvalidInput`] error.
        pub fn set_write_timeout(&self, timeout: Option<std::time::Duration>) -> std::io::Result<()> {
            super::check_timeout(timeout)?;
            self.$inner.set_write_timeout(timeout)?;
            self.state.options.write_timeout.store(super::nanos_of(timeout), crate::loom::process::Ordering::Relaxed);
            Ok(())
        }

        /// The read timeout.
        pub fn read_timeout(&self) -> std::io::Result<Option<std::time::Duration>> {
            Ok(self.state.read_timeout())
        }

        /// The write timeout.
        pub fn write_timeout(&self) -> std::io::Result<Option<std::time::Duration>> {
            Ok(self.state.write_timeout())
        }

        /// Moves the socket into or out of non-blocking mode: in it, an
        /// operation that would wait fails with
        /// [`std::io::ErrorKind::WouldBlock`] instead, from a coroutine as
        /// from a thread. (The descriptor itself is always non-blocking
        /// while weft owns it.)
        pub fn set_nonblocking(&self, nonblocking: bool) -> std::io::Result<()> {
            self.state.options.nonblocking.store(nonblocking, crate::loom::process::Ordering::Relaxed);
            Ok(())
        }

        /// Takes the pending error of the socket (`SO_ERROR`), if any.
        pub fn take_error(&self) -> std::io::Result<Option<std::io::Error>> {
            self.$inner.take_error()
        }
    };
}
use socket_options;

/// `Read` and `Write` for a stream type and for a shared reference to it
/// (so one coroutine can read while another writes), through the type's
/// own `stream_read`, `stream_read_vectored`, `stream_write` and
/// `stream_write_vectored` (each type knows when a short read empties its
/// socket and how its writes wait: `TcpStream`'s and `UnixStream`'s say).
macro_rules! stream_read_write {
    ($ty:ident) => {
        impl std::io::Read for &$ty {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                $ty::stream_read(*self, buf)
            }

            fn read_vectored(&mut self, bufs: &mut [std::io::IoSliceMut<'_>]) -> std::io::Result<usize> {
                $ty::stream_read_vectored(*self, bufs)
            }
        }

        impl std::io::Write for &$ty {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                $ty::stream_write(*self, buf)
            }

            fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
                $ty::stream_write_vectored(*self, bufs)
            }

            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        impl std::io::Read for $ty {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                (&*self).read(buf)
            }

            fn read_vectored(&mut self, bufs: &mut [std::io::IoSliceMut<'_>]) -> std::io::Result<usize> {
                (&*self).read_vectored(bufs)
            }
        }

        impl std::io::Write for $ty {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                (&*self).write(buf)
            }

            fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
                (&*self).write_vectored(bufs)
            }

            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
    };
}
use stream_read_write;

/// The options of a socket that comes from std (or a raw descriptor):
/// its timeouts as the kernel has them. Puts the descriptor in
/// non-blocking mode.
fn adopt(
    set_nonblocking: impl FnOnce(bool) -> io::Result<()>,
    read_timeout: io::Result<Option<Duration>>,
    write_timeout: io::Result<Option<Duration>>,
) -> io::Result<Arc<Options>> {
    set_nonblocking(true)?;
    let options = Options::default();
    options.read_timeout.store(nanos_of(read_timeout?), Ordering::Relaxed);
    options.write_timeout.store(nanos_of(write_timeout?), Ordering::Relaxed);
    Ok(Arc::new(options))
}
