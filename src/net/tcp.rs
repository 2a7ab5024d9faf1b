//! TCP: `TcpListener` and `TcpStream`, `std::net`'s shapes over a
//! non-blocking descriptor (see the module docs of `net` for how waits
//! work).

use super::{IoState, OnTimeout, Options, adopt, socket_options};
use crate::runtime::poller::Direction;
use crate::sys::net::{Connect, connect_tcp};
use std::fmt;
use std::io::{self, Read};
use std::net::{self, Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// A TCP socket server, listening for connections: [`std::net::TcpListener`]
/// whose `accept` parks the calling coroutine instead of its worker.
///
/// ```
/// use weft::net::TcpListener;
///
/// let runtime = weft::Runtime::builder().workers(1).build()?;
/// runtime.block_on(|| -> std::io::Result<()> {
///     let listener = TcpListener::bind("127.0.0.1:0")?;
///     let addr = listener.local_addr()?;
///     let client = weft::spawn(move || weft::net::TcpStream::connect(addr).map(drop));
///     let (_stream, peer) = listener.accept()?;
///     assert!(peer.ip().is_loopback());
///     client.join().expect("the client coroutine")?;
///     Ok(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct TcpListener {
    // Declared first: deregisters before `inner` closes the descriptor.
    state: IoState,
    inner: net::TcpListener,
    /// Nanoseconds; 0 means none (see `set_accept_timeout`).
    accept_timeout: crate::loom::process::AtomicU64,
}

impl TcpListener {
    /// Creates a listener bound to `addr` (with `SO_REUSEADDR`, as std
    /// does), trying each address `addr` resolves to until one works.
    ///
    /// # Errors
    ///
    /// As [`std::net::TcpListener::bind`]: the address is in use, not
    /// local, or could not be resolved.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        TcpListener::from_std(net::TcpListener::bind(addr)?)
    }

    /// Accepts a connection, waiting for one; returns the stream and the
    /// peer's address. The new stream is in blocking mode (its operations
    /// wait) with no timeouts, whatever this listener's settings.
    ///
    /// # Errors
    ///
    /// As std's `accept`, and a timeout set by
    /// [`set_accept_timeout`](Self::set_accept_timeout)
    /// ([`io::ErrorKind::TimedOut`]). Running out of descriptors
    /// (`EMFILE`) is an error the caller sees at once, never a busy loop.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let timeout = duration_of_nanos(self.accept_timeout.load(crate::loom::process::Ordering::Relaxed));
        self.accept_within(timeout)
    }

    fn accept_within(&self, timeout: Option<Duration>) -> io::Result<(TcpStream, SocketAddr)> {
        let on_timeout = OnTimeout::TimedOut("accept timed out");
        let (stream, peer) = self.state.run(Direction::Read, timeout, on_timeout, || self.inner.accept(), |_| false)?;
        Ok((TcpStream::from_accepted(stream)?, peer))
    }

    /// Sets how long [`accept`](Self::accept) waits before it fails with
    /// [`io::ErrorKind::TimedOut`]; `None` (the default) waits without
    /// limit. (std's listener has no such setting; this is weft's.)
    ///
    /// # Errors
    ///
    /// A zero duration is an [`io::ErrorKind::InvalidInput`] error.
    pub fn set_accept_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        super::check_timeout(timeout)?;
        self.accept_timeout.store(super::nanos_of(timeout), crate::loom::process::Ordering::Relaxed);
        Ok(())
    }

    /// How long [`accept`](Self::accept) waits; `None`: without limit.
    pub fn accept_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(duration_of_nanos(self.accept_timeout.load(crate::loom::process::Ordering::Relaxed)))
    }

    /// An iterator over incoming connections: `accept` in a loop, without
    /// the peer addresses. It never returns `None`.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The address this listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Sets the IP time-to-live of the sockets it accepts (`IP_TTL`).
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_ttl(ttl)
    }

    /// The IP time-to-live (`IP_TTL`).
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.ttl()
    }

    /// Moves the listener into or out of non-blocking mode: in it,
    /// `accept` fails with [`io::ErrorKind::WouldBlock`] when no
    /// connection is waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.state.options.nonblocking.store(nonblocking, crate::loom::process::Ordering::Relaxed);
        Ok(())
    }

    /// Takes the pending error of the socket (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }

    /// Another handle to the same listener (a duplicated descriptor); it
    /// shares the non-blocking mode.
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        let inner = self.inner.try_clone()?;
        let state = IoState::new(inner.as_raw_fd(), Arc::clone(&self.state.options));
        let timeout = self.accept_timeout.load(crate::loom::process::Ordering::Relaxed);
        Ok(TcpListener { state, inner, accept_timeout: crate::loom::process::AtomicU64::new(timeout) })
    }

    /// Wraps a std listener, putting its descriptor in non-blocking mode
    /// (the weft listener's `accept` still waits, unless
    /// [`set_nonblocking`](Self::set_nonblocking) says otherwise).
    pub fn from_std(listener: net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        let state = IoState::new(listener.as_raw_fd(), Arc::new(Options::default()));
        Ok(TcpListener { state, inner: listener, accept_timeout: crate::loom::process::AtomicU64::new(0) })
    }

    /// The std listener, deregistered from every poller, back in blocking
    /// mode unless this one was set non-blocking.
    ///
    /// Stays non-blocking while clones of it are alive: see ["Back to
    /// std"](crate::net#back-to-std).
    pub fn into_std(self) -> io::Result<net::TcpListener> {
        let TcpListener { state, inner, .. } = self;
        state.release(|nonblocking| inner.set_nonblocking(nonblocking))?;
        Ok(inner)
    }
}

fn duration_of_nanos(nanos: u64) -> Option<Duration> {
    super::duration_of(nanos)
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("addr", &self.inner.local_addr().ok())
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

/// The iterator [`TcpListener::incoming`] returns.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

/// A TCP connection: [`std::net::TcpStream`] whose reads, writes and
/// connects park the calling coroutine instead of its worker.
///
/// `Read` and `Write` are implemented for `TcpStream` and for
/// `&TcpStream`, so that one coroutine can read while another writes the
/// same stream, on the same worker or on different ones.
///
/// ```
/// use std::io::{Read, Write};
/// use weft::net::{TcpListener, TcpStream};
///
/// let runtime = weft::Runtime::builder().workers(2).build()?;
/// runtime.block_on(|| -> std::io::Result<()> {
///     let listener = TcpListener::bind("127.0.0.1:0")?;
///     let addr = listener.local_addr()?;
///     let client = weft::spawn(move || -> std::io::Result<String> {
///         let stream = TcpStream::connect(addr)?;
///         // A writer and a reader on one stream, through `&TcpStream`.
///         std::thread::scope(|_| ());
///         let mut reply = String::new();
///         (&stream).write_all(b"ping")?;
///         stream.shutdown(std::net::Shutdown::Write)?;
///         (&stream).read_to_string(&mut reply)?;
///         Ok(reply)
///     });
///     let (mut server, _) = listener.accept()?;
///     let mut request = [0; 4];
///     server.read_exact(&mut request)?;
///     assert_eq!(&request, b"ping");
///     server.write_all(b"pong")?;
///     drop(server);
///     assert_eq!(client.join().expect("the client")?, "pong");
///     Ok(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct TcpStream {
    // Declared first: deregisters before `inner` closes the descriptor.
    state: IoState,
    inner: net::TcpStream,
}

impl TcpStream {
    /// Opens a connection to `addr`, trying each address it resolves to
    /// in turn until one connects (as std does); waits for the handshake.
    ///
    /// Resolving a host name blocks the calling thread in the C library:
    /// see the module docs.
    ///
    /// # Errors
    ///
    /// The last address's error (connection refused, unreachable, ...), or
    /// [`io::ErrorKind::InvalidInput`] when `addr` resolves to nothing.
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match TcpStream::connect_addr(&addr, None) {
                Ok(stream) => return Ok(stream),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "could not resolve to any addresses")))
    }

    /// Opens a connection to `addr`, waiting at most `timeout` for the
    /// handshake: then it fails with [`io::ErrorKind::TimedOut`] (never
    /// earlier).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); a zero `timeout` is an
    /// [`io::ErrorKind::InvalidInput`] error, as in std.
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout == Duration::ZERO {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "cannot set a 0 duration timeout"));
        }
        TcpStream::connect_addr(addr, Some(timeout))
    }

    fn connect_addr(addr: &SocketAddr, timeout: Option<Duration>) -> io::Result<TcpStream> {
        match connect_tcp(addr)? {
            Connect::Done(fd) => Ok(TcpStream::from_owned(fd)),
            Connect::InProgress(fd) => {
                let stream = TcpStream::from_owned(fd);
                // Writable once the handshake is over, one way or the other.
                let handshake = || {
                    if let Some(err) = stream.inner.take_error()? {
                        return Err(err);
                    }
                    match stream.inner.peer_addr() {
                        Ok(_) => Ok(()),
                        // Still under way.
                        Err(err) if err.kind() == io::ErrorKind::NotConnected => Err(io::ErrorKind::WouldBlock.into()),
                        Err(err) => Err(err),
                    }
                };
                let on_timeout = OnTimeout::TimedOut("connect timed out");
                stream.state.run(Direction::Write, timeout, on_timeout, handshake, |_| false)?;
                Ok(stream)
            }
        }
    }

    /// A stream on a non-blocking descriptor that is ours.
    fn from_owned(fd: OwnedFd) -> TcpStream {
        let inner = net::TcpStream::from(fd);
        TcpStream { state: IoState::new(inner.as_raw_fd(), Arc::new(Options::default())), inner }
    }

    /// A stream `accept` returned: blocking on Linux (accept does not pass
    /// O_NONBLOCK on), without timeouts of ours (so no `getsockopt`s).
    fn from_accepted(stream: net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        Ok(TcpStream { state: IoState::new(stream.as_raw_fd(), Arc::new(Options::default())), inner: stream })
    }

    /// The address of the remote end.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// The address of the local end.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Shuts down the read half, the write half or both (as std's). A
    /// coroutine parked in a read on this stream wakes and reads EOF.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    /// Receives data without removing it from the queue, waiting for some.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.state.read(|| self.inner.peek(buf))
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.nodelay()
    }

    /// Sets the IP time-to-live (`IP_TTL`).
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_ttl(ttl)
    }

    /// The IP time-to-live (`IP_TTL`).
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.ttl()
    }

    socket_options!(inner);

    /// Another handle to the same stream (a duplicated descriptor). It
    /// shares the timeouts and the non-blocking mode, as std's clones share
    /// socket options; each handle may be used from any coroutine or thread.
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        let inner = self.inner.try_clone()?;
        Ok(TcpStream { state: IoState::new(inner.as_raw_fd(), Arc::clone(&self.state.options)), inner })
    }

    /// Wraps a std stream, putting its descriptor in non-blocking mode and
    /// keeping its timeouts (the weft stream's operations wait, unless
    /// [`set_nonblocking`](Self::set_nonblocking) says otherwise).
    pub fn from_std(stream: net::TcpStream) -> io::Result<TcpStream> {
        let options = adopt(|b| stream.set_nonblocking(b), stream.read_timeout(), stream.write_timeout())?;
        Ok(TcpStream { state: IoState::new(stream.as_raw_fd(), options), inner: stream })
    }

    /// The std stream, deregistered from every poller, back in blocking
    /// mode unless this one was set non-blocking; the timeouts stay.
    ///
    /// Stays non-blocking while clones of it are alive: see ["Back to
    /// std"](crate::net#back-to-std).
    pub fn into_std(self) -> io::Result<net::TcpStream> {
        let TcpStream { state, inner } = self;
        state.release(|nonblocking| inner.set_nonblocking(nonblocking))?;
        Ok(inner)
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("addr", &self.inner.local_addr().ok())
            .field("peer", &self.inner.peer_addr().ok())
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

/// The calls behind `Read` and `Write` (`stream_read_write!`): a read that
/// returns less than asked emptied the receive queue (`read_stream`).
impl TcpStream {
    fn stream_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // (std's `read` is this `recv`, through glibc's wrapper.)
        self.state.read_stream(buf.len(), || crate::sys::net::recv(self.inner.as_fd(), buf))
    }

    fn stream_read_vectored(&self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        // std passes the kernel at most IOV_MAX (1024) buffers: a call that
        // fills those leaves the rest queued, and is not short.
        let len = bufs.iter().take(super::IOV_MAX).map(|b| b.len()).sum();
        self.state.read_stream(len, || (&self.inner).read_vectored(bufs))
    }

    fn stream_write(&self, buf: &[u8]) -> io::Result<usize> {
        // (std's `write` is this `send`, through glibc's wrapper.)
        self.state.write_stream(buf.len(), || crate::sys::net::send(self.inner.as_fd(), buf))
    }

    fn stream_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let len = bufs.iter().take(super::IOV_MAX).map(|b| b.len()).sum();
        // (`sendmsg` with MSG_NOSIGNAL: std's `writev` would raise SIGPIPE
        // where `write` gives EPIPE.)
        self.state.write_stream(len, || crate::sys::net::send_vectored(self.inner.as_fd(), bufs))
    }
}

super::stream_read_write!(TcpStream);

macro_rules! fd_traits {
    ($ty:ident, $std:ty) => {
        impl AsFd for $ty {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.inner.as_fd()
            }
        }

        impl AsRawFd for $ty {
            fn as_raw_fd(&self) -> RawFd {
                self.inner.as_raw_fd()
            }
        }

        impl IntoRawFd for $ty {
            /// The descriptor, deregistered from every poller and left in
            /// non-blocking mode.
            fn into_raw_fd(self) -> RawFd {
                let $ty { state, inner, .. } = self;
                drop(state);
                inner.into_raw_fd()
            }
        }

        impl FromRawFd for $ty {
            /// # Safety
            ///
            /// `fd` is an open socket of the right kind that the caller owns
            /// and gives up (as for std's `from_raw_fd`).
            unsafe fn from_raw_fd(fd: RawFd) -> $ty {
                // SAFETY: the caller's promise, passed on.
                let std = unsafe { <$std>::from_raw_fd(fd) };
                $ty::from_std(std).unwrap_or_else(|err| {
                    panic!("weft: cannot make descriptor {fd} non-blocking ({err}); is it an open socket?")
                })
            }
        }
    };
}
pub(super) use fd_traits;

fd_traits!(TcpStream, net::TcpStream);
fd_traits!(TcpListener, net::TcpListener);
