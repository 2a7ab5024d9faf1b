//! Unix domain stream sockets: `UnixListener` and `UnixStream`,
//! `std::os::unix::net`'s shapes over a non-blocking descriptor.

use super::tcp::fd_traits;
use super::{IoState, OnTimeout, Options, adopt, socket_options};
use crate::runtime::poller::Direction;
use crate::sys::net::{Connect, connect_unix};
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

    /// Accepts a connection, waiting for one. The new stream waits in its
    /// operations (blocking mode) with no timeouts.
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (stream, addr) = self.state.read(|| self.inner.accept())?;
        stream.set_nonblocking(true)?;
        let state = IoState::new(stream.as_raw_fd(), Arc::new(Options::default()));
        Ok((UnixStream { state, inner: stream }, addr))
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

    /// Another handle to the same listener.
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        let inner = self.inner.try_clone()?;
        Ok(UnixListener { state: IoState::new(inner.as_raw_fd(), Arc::clone(&self.state.options)), inner })
    }

    /// Wraps a std listener, putting its descriptor in non-blocking mode.
    pub fn from_std(listener: net::UnixListener) -> io::Result<UnixListener> {
        listener.set_nonblocking(true)?;
        Ok(UnixListener { state: IoState::new(listener.as_raw_fd(), Arc::new(Options::default())), inner: listener })
    }

    /// The std listener, deregistered, back in blocking mode unless this
    /// one was set non-blocking.
    ///
    /// Stays non-blocking while clones of it are alive: see ["Back to
    /// std"](crate::net#back-to-std).
    pub fn into_std(self) -> io::Result<net::UnixListener> {
        let UnixListener { state, inner } = self;
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

/// The first and the longest pause between tries of a Unix connect whose
/// listener's backlog is full (Linux fails a non-blocking Unix connect
/// with EAGAIN then, and offers nothing to wait on).
const CONNECT_RETRY_FIRST: Duration = Duration::from_millis(1);
const CONNECT_RETRY_MAX: Duration = Duration::from_millis(64);

impl UnixStream {
    /// Connects to the socket at `path`. If the listener's backlog is full
    /// it retries, pausing 1 ms, then twice as long each time up to 64 ms,
    /// until the listener makes room (a blocking std connect waits the same
    /// way, in the kernel).
    ///
    /// # Errors
    ///
    /// As std's `connect`: no such socket, connection refused, a path too
    /// long for a Unix socket address.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        let path = path.as_ref();
        let mut pause = CONNECT_RETRY_FIRST;
        loop {
            match connect_unix(path) {
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
                    if crate::runtime::in_parkable_coroutine() {
                        crate::sleep(pause);
                    } else {
                        std::thread::sleep(pause);
                    }
                    pause = (pause * 2).min(CONNECT_RETRY_MAX);
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

super::stream_read_write!(UnixStream);

fd_traits!(UnixStream, net::UnixStream);
fd_traits!(UnixListener, net::UnixListener);
