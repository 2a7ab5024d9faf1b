//! Unix domain stream sockets: `UnixListener` and `UnixStream`,
//! `std::os::unix::net`'s shapes over a non-blocking descriptor.
//!
//! # Where a Unix stream differs from TCP
//!
//! The readiness protocol (the poller's module docs) trusts two things the
//! kernel does for TCP and does not quite do for a Unix stream:
//!
//! 1. **A short read empties the socket.** A Unix stream read also stops
//!    after a message that carried descriptors (`SCM_RIGHTS`), and, under
//!    `SO_PASSCRED`, between the messages of two writers
//!    (`unix_stream_read_generic`), with data still queued behind it and no
//!    new edge to come. So `UnixStream` reads with `recvmsg` and no control
//!    buffer (as std's `read` does, the kernel closes the descriptors),
//!    and the kernel then sets `MSG_CTRUNC` exactly when it had control
//!    data for the read. A short read counts as emptying the socket only
//!    when that flag is clear; with it set, the next read calls the kernel
//!    again. (Under `SO_PASSCRED` every read has credentials, so the flag
//!    is always set and a short read never clears READ_READY: the next read
//!    costs one `WouldBlock`, never a lost wake. A read stopped at
//!    out-of-band data, `MSG_OOB`, comes with EPOLLPRI, which the poller
//!    keeps apart as for TCP's urgent mark.)
//! 2. **A shut sending side is reported.** `unix_poll` reports neither
//!    POLLOUT nor POLLHUP for a stream that is shut for sending only (the
//!    peer shut its read half, or this socket or a clone shut its write
//!    half), where std's blocked write fails with `BrokenPipe` (EPIPE) at
//!    once. So a write that has to wait (send buffer full) waits in slices,
//!    1 ms, then twice as long each time up to 64 ms (the schedule of
//!    `connect`'s retries), and makes its call again after each: the call
//!    after a shutdown fails with EPIPE within a slice. The write timeout
//!    counts the slices that ran out (a slice never ends early, so the
//!    sum never ends the wait early), and non-blocking mode still makes
//!    one call. A write that does not wait costs nothing more.

use super::tcp::fd_traits;
use super::{IOV_MAX, IoState, OnTimeout, Options, READ_TIMED_OUT, WRITE_TIMED_OUT, adopt, socket_options};
use crate::runtime::poller::Direction;
use crate::sys::net::{Connect, UnixName, connect_unix, recv_vectored_no_control};
use std::cell::Cell;
use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{self, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A Unix domain socket server: [`std::os::unix::net::UnixListener`] whose
/// `accept` parks the calling coroutine instead of its worker.
///
/// ```
/// use std::io::{Read, Write};
/// use weft::net::{UnixListener, UnixStream};
///
/// let dir = std::env::temp_dir().join(format!("weft-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("unix-listener.sock");
/// let _ = std::fs::remove_file(&path);
/// let runtime = weft::Runtime::builder().workers(1).build()?;
/// runtime.block_on(|| -> std::io::Result<()> {
///     let listener = UnixListener::bind(&path)?;
///     let client_path = path.clone();
///     let client = weft::spawn(move || -> std::io::Result<()> {
///         UnixStream::connect(&client_path)?.write_all(b"hi")
///     });
///     let (mut stream, _) = listener.accept()?;
///     let mut got = String::new();
///     stream.read_to_string(&mut got)?;
///     assert_eq!(got, "hi");
///     client.join().expect("the client")
/// })?;
/// std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct UnixListener {
    // Declared first: deregisters before `inner` closes the descriptor.
    state: IoState,
    inner: net::UnixListener,
    /// Nanoseconds; 0 means none (see `set_accept_timeout`).
    accept_timeout: crate::loom::process::AtomicU64,
}

impl UnixListener {
    /// Creates a listener bound to `path` (which must not exist yet).
    ///
    /// # Errors
    ///
    /// As [`std::os::unix::net::UnixListener::bind`].
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        UnixListener::from_std(net::UnixListener::bind(path)?)
    }

    /// Creates a listener bound to `addr`: an address with a path, or
    /// (Linux) one in the abstract namespace (no file, gone with the last
    /// socket), made with
    /// [`SocketAddrExt::from_abstract_name`](std::os::linux::net::SocketAddrExt::from_abstract_name).
    /// See [`UnixStream::connect_addr`] for an example.
    ///
    /// # Errors
    ///
    /// As [`std::os::unix::net::UnixListener::bind_addr`] (an abstract
    /// name already bound: [`io::ErrorKind::AddrInUse`]).
    pub fn bind_addr(addr: &SocketAddr) -> io::Result<UnixListener> {
        UnixListener::from_std(net::UnixListener::bind_addr(addr)?)
    }

    /// Accepts a connection, waiting for one. The new stream waits in its
    /// operations (blocking mode) with no timeouts.
    ///
    /// # Errors
    ///
    /// As std's `accept`, and a timeout set by
    /// [`set_accept_timeout`](Self::set_accept_timeout)
    /// ([`io::ErrorKind::TimedOut`]).
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let timeout = super::duration_of(self.accept_timeout.load(crate::loom::process::Ordering::Relaxed));
        let on_timeout = OnTimeout::TimedOut("accept timed out");
        let (stream, addr) = self.state.run(Direction::Read, timeout, on_timeout, || self.inner.accept(), |_| false)?;
        stream.set_nonblocking(true)?;
        let state = IoState::new(stream.as_raw_fd(), Arc::new(Options::default()));
        Ok((UnixStream { state, inner: stream }, addr))
    }

    /// Sets how long [`accept`](Self::accept) waits before it fails with
    /// [`io::ErrorKind::TimedOut`]; `None` (the default) waits without
    /// limit. (std's listener has no such setting; this is weft's, as on
    /// [`TcpListener`](super::TcpListener).)
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
        Ok(super::duration_of(self.accept_timeout.load(crate::loom::process::Ordering::Relaxed)))
    }

    /// An iterator over incoming connections (`accept` in a loop); it
    /// never returns `None`.
    pub fn incoming(&self) -> UnixIncoming<'_> {
        UnixIncoming { listener: self }
    }

    /// The address this listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Moves the listener into or out of non-blocking mode (`accept` fails
    /// with [`io::ErrorKind::WouldBlock`] instead of waiting).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.state.options.nonblocking.store(nonblocking, crate::loom::process::Ordering::Relaxed);
        Ok(())
    }

    /// Takes the pending error of the socket (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.inner.take_error()
    }

    /// Another handle to the same listener; it shares the non-blocking
    /// mode and starts with this one's accept timeout.
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        let inner = self.inner.try_clone()?;
        let state = IoState::new(inner.as_raw_fd(), Arc::clone(&self.state.options));
        let timeout = self.accept_timeout.load(crate::loom::process::Ordering::Relaxed);
        Ok(UnixListener { state, inner, accept_timeout: crate::loom::process::AtomicU64::new(timeout) })
    }

    /// Wraps a std listener, putting its descriptor in non-blocking mode.
    pub fn from_std(listener: net::UnixListener) -> io::Result<UnixListener> {
        listener.set_nonblocking(true)?;
        let state = IoState::new(listener.as_raw_fd(), Arc::new(Options::default()));
        Ok(UnixListener { state, inner: listener, accept_timeout: crate::loom::process::AtomicU64::new(0) })
    }

    /// The std listener, deregistered, back in blocking mode unless this
    /// one was set non-blocking.
    ///
    /// Stays non-blocking while clones of it are alive: see ["Back to
    /// std"](crate::net#back-to-std).
    pub fn into_std(self) -> io::Result<net::UnixListener> {
        let UnixListener { state, inner, .. } = self;
        state.release(|nonblocking| inner.set_nonblocking(nonblocking))?;
        Ok(inner)
    }
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("addr", &self.inner.local_addr().ok())
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

/// The iterator [`UnixListener::incoming`] returns.
#[derive(Debug)]
pub struct UnixIncoming<'a> {
    listener: &'a UnixListener,
}

impl Iterator for UnixIncoming<'_> {
    type Item = io::Result<UnixStream>;

    fn next(&mut self) -> Option<io::Result<UnixStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

/// A Unix domain stream socket: [`std::os::unix::net::UnixStream`] whose
/// reads and writes park the calling coroutine instead of its worker.
/// `Read` and `Write` are implemented for `&UnixStream` too.
///
/// ```
/// use std::io::{Read, Write};
/// use weft::net::UnixStream;
///
/// let runtime = weft::Runtime::builder().workers(1).build()?;
/// runtime.block_on(|| -> std::io::Result<()> {
///     let (mut a, mut b) = UnixStream::pair()?;
///     let writer = weft::spawn(move || a.write_all(b"over the pair"));
///     let mut got = String::new();
///     b.read_to_string(&mut got)?; // EOF once `a` drops
///     writer.join().expect("the writer")?;
///     assert_eq!(got, "over the pair");
///     Ok(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct UnixStream {
    // Declared first: deregisters before `inner` closes the descriptor.
    state: IoState,
    inner: net::UnixStream,
}

/// Rule 2: runs the write `op` of the socket whose state is `state`,
/// waiting in slices of `RETRY_FIRST` doubling to `RETRY_MAX` and calling
/// it again after each, so that a shut sending side (which the kernel
/// reports no readiness for) ends the wait with EPIPE; bounded by the
/// write timeout, counted as the sum of the slices that ran out. Also a
/// datagram socket's send, for a full receiver that no edge reports
/// (`unix_datagram`). `may_wait` false makes one call and never waits: a
/// stream write of nothing, which the kernel answers at once however full
/// the buffer is, as std's blocking write returns.
pub(super) fn write_in_slices<R>(
    state: &IoState,
    may_wait: bool,
    mut op: impl FnMut() -> io::Result<R>,
) -> io::Result<R> {
    let registration = &state.registration;
    let timeout = state.write_timeout();
    let nonblocking = state.is_nonblocking() || !may_wait;
    let timed_out = || OnTimeout::WouldBlock(WRITE_TIMED_OUT).error();
    let mut waited = Duration::ZERO;
    let mut slice = RETRY_FIRST;
    loop {
        // The last slice ends where the timeout does (`waited` is below it).
        let this_slice = timeout.map_or(slice, |t| slice.min(t - waited));
        let slice_ran_out = Cell::new(false);
        let slice_end = || {
            slice_ran_out.set(true);
            io::Error::from(io::ErrorKind::WouldBlock)
        };
        // The first round is the plain write: one call when there is room.
        let result = registration.run(Direction::Write, Some(this_slice), nonblocking, &mut op, |_| false, slice_end);
        if !slice_ran_out.get() {
            return result;
        }
        waited += this_slice;
        if timeout.is_some_and(|t| waited >= t) {
            return Err(timed_out());
        }
        slice = (slice * 2).min(RETRY_MAX);
        // The call the slice was for. In a coroutine the readiness word
        // still says "full" (no event came), and a waiting `run` would
        // park again without a call: one made in non-blocking mode is
        // made whatever the word says, and says `WouldBlock` (its own,
        // never the kernel's, which it takes as "full") if it would wait.
        match registration.run(Direction::Write, None, true, &mut op, |_| false, timed_out) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            result => return result,
        }
    }
}

/// The name `addr` holds, for a connect.
fn unix_name(addr: &SocketAddr) -> io::Result<UnixName<'_>> {
    use std::os::linux::net::SocketAddrExt;
    if let Some(path) = addr.as_pathname() {
        Ok(UnixName::Path(path))
    } else if let Some(name) = addr.as_abstract_name() {
        Ok(UnixName::Abstract(name))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an unnamed Unix socket address (an unbound socket's) cannot be connected to",
        ))
    }
}

/// The first and the longest pause between tries where Linux offers
/// nothing to wait on: a Unix connect whose listener's backlog is full
/// (Linux fails a non-blocking Unix connect with EAGAIN then), and a write
/// whose sending side may have been shut meanwhile (it reports no readiness
/// for that: see the module docs).
const RETRY_FIRST: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(64);

impl UnixStream {
    /// Connects to the socket at `path`. If the listener's backlog is full
    /// it retries, pausing 1 ms, then twice as long each time up to 64 ms,
    /// until the listener makes room (a blocking std connect waits the same
    /// way, in the kernel). In a coroutine being cancelled or unwound by its
    /// runtime's drop it does not retry: it fails with
    /// [`io::ErrorKind::TimedOut`], as any socket wait does then.
    ///
    /// # Errors
    ///
    /// As std's `connect`: no such socket, connection refused, a path too
    /// long for a Unix socket address.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        UnixStream::connect_name(UnixName::Path(path.as_ref()))
    }

    /// Connects to the socket at `addr`, as [`connect`](Self::connect):
    /// an address with a path, or (Linux) one in the abstract namespace,
    /// made with [`SocketAddrExt::from_abstract_name`], as std's
    /// `connect_addr`.
    ///
    /// ```
    /// use std::os::linux::net::SocketAddrExt;
    /// use std::os::unix::net::SocketAddr;
    /// use std::io::{Read, Write};
    ///
    /// let name = format!("weft-doc-{}", std::process::id());
    /// let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    /// let listener = weft::net::UnixListener::bind_addr(&addr).unwrap();
    /// let server = weft::spawn(move || {
    ///     let (mut stream, _) = listener.accept().unwrap();
    ///     stream.write_all(b"no file in the way").unwrap();
    /// });
    /// let mut client = weft::net::UnixStream::connect_addr(&addr).unwrap();
    /// let mut text = String::new();
    /// client.read_to_string(&mut text).unwrap();
    /// assert_eq!(text, "no file in the way");
    /// server.join().unwrap();
    /// ```
    ///
    /// [`SocketAddrExt::from_abstract_name`]: std::os::linux::net::SocketAddrExt::from_abstract_name
    ///
    /// # Errors
    ///
    /// As std's `connect_addr`; an unnamed address (an unbound socket's) is
    /// an [`io::ErrorKind::InvalidInput`] error.
    pub fn connect_addr(addr: &SocketAddr) -> io::Result<UnixStream> {
        UnixStream::connect_name(unix_name(addr)?)
    }

    fn connect_name(name: UnixName<'_>) -> io::Result<UnixStream> {
        let mut pause = RETRY_FIRST;
        loop {
            match connect_unix(name) {
                Ok(Connect::Done(fd)) => return Ok(UnixStream::from_owned(fd)),
                Ok(Connect::InProgress(fd)) => {
                    let stream = UnixStream::from_owned(fd);
                    let handshake = || match stream.inner.take_error()? {
                        Some(err) => Err(err),
                        None => match stream.inner.peer_addr() {
                            Ok(_) => Ok(()),
                            Err(err) if err.kind() == io::ErrorKind::NotConnected => {
                                Err(io::ErrorKind::WouldBlock.into())
                            }
                            Err(err) => Err(err),
                        },
                    };
                    let on_timeout = OnTimeout::TimedOut("connect timed out");
                    stream.state.run(Direction::Write, None, on_timeout, handshake, |_| false)?;
                    return Ok(stream);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    // A coroutine being unwound for good (cancelled, or by
                    // its runtime's drop) does not wait, here as in every
                    // other socket operation (`weft::net`, "Timeouts"): a
                    // listener that never makes room would hold the cancel
                    // or the drop up for good.
                    if crate::runtime::current_task_is_ending() {
                        return Err(crate::runtime::poller::ending_error());
                    }
                    if crate::runtime::in_parkable_coroutine() {
                        crate::sleep(pause);
                    } else {
                        std::thread::sleep(pause);
                    }
                    pause = (pause * 2).min(RETRY_MAX);
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// A connected pair of streams (`socketpair`).
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = net::UnixStream::pair()?;
        Ok((UnixStream::from_std(a)?, UnixStream::from_std(b)?))
    }

    fn from_owned(fd: OwnedFd) -> UnixStream {
        let inner = net::UnixStream::from(fd);
        UnixStream { state: IoState::new(inner.as_raw_fd(), Arc::new(Options::default())), inner }
    }

    /// The address of the local end.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The address of the remote end.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// Shuts down the read half, the write half or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    socket_options!(inner);

    /// Another handle to the same stream; it shares the timeouts and the
    /// non-blocking mode.
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        let inner = self.inner.try_clone()?;
        Ok(UnixStream { state: IoState::new(inner.as_raw_fd(), Arc::clone(&self.state.options)), inner })
    }

    /// Wraps a std stream, putting its descriptor in non-blocking mode and
    /// keeping its timeouts.
    pub fn from_std(stream: net::UnixStream) -> io::Result<UnixStream> {
        let options = adopt(|b| stream.set_nonblocking(b), stream.read_timeout(), stream.write_timeout())?;
        Ok(UnixStream { state: IoState::new(stream.as_raw_fd(), options), inner: stream })
    }

    /// The std stream, deregistered, back in blocking mode unless this one
    /// was set non-blocking.
    ///
    /// Stays non-blocking while clones of it are alive: see ["Back to
    /// std"](crate::net#back-to-std).
    pub fn into_std(self) -> io::Result<net::UnixStream> {
        let UnixStream { state, inner } = self;
        state.release(|nonblocking| inner.set_nonblocking(nonblocking))?;
        Ok(inner)
    }
}

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream").field("fd", &self.as_raw_fd()).finish()
    }
}

/// The calls behind `Read` and `Write` (`stream_read_write!`), with the
/// two rules of the module docs.
impl UnixStream {
    fn stream_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream_read_vectored(&mut [io::IoSliceMut::new(buf)])
    }

    /// Rule 1: a short read empties the socket only if the kernel had no
    /// control data for it (`MSG_CTRUNC` clear); after passed descriptors
    /// (or between two writers' credentials) more data may be queued.
    fn stream_read_vectored(&self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        // The kernel takes at most IOV_MAX buffers: a call that fills those
        // leaves the rest queued, and is not short.
        let len = bufs.iter().take(IOV_MAX).map(|b| b.len()).sum::<usize>();
        let fd = self.inner.as_fd();
        let emptied = |&(n, control_truncated): &(usize, bool)| n > 0 && n < len && !control_truncated;
        let timeout = self.state.read_timeout();
        let on_timeout = OnTimeout::WouldBlock(READ_TIMED_OUT);
        let (n, _) =
            self.state.run(Direction::Read, timeout, on_timeout, || recv_vectored_no_control(fd, bufs), emptied)?;
        Ok(n)
    }

    fn stream_write(&self, buf: &[u8]) -> io::Result<usize> {
        // `send` with MSG_NOSIGNAL, as std's write is (a gone peer gives
        // EPIPE, not SIGPIPE), without glibc's wrapper (`sys::net`).
        write_in_slices(&self.state, !buf.is_empty(), || crate::sys::net::send(self.inner.as_fd(), buf))
    }

    fn stream_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let len: usize = bufs.iter().take(IOV_MAX).map(|b| b.len()).sum();
        // (`sendmsg` with MSG_NOSIGNAL, as `stream_write`'s `send`: std's
        // `writev` would raise SIGPIPE.)
        write_in_slices(&self.state, len != 0, || crate::sys::net::send_vectored(self.inner.as_fd(), bufs))
    }
}

super::stream_read_write!(UnixStream);

fd_traits!(UnixStream, net::UnixStream);
fd_traits!(UnixListener, net::UnixListener);
