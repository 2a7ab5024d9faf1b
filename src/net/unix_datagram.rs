//! Unix datagram sockets: `UnixDatagram`, `std::os::unix::net`'s shape over
//! a non-blocking descriptor.
//!
//! # Where a Unix datagram differs from UDP
//!
//! A send fails with `WouldBlock` when the *receiver's* queue is full (its
//! `max_dgram_qlen`), not this socket's send buffer. For a connected
//! socket the kernel reports writability again when the peer's queue has
//! room (`unix_dgram_peer_wake_me`), so the wait ends on an edge as usual.
//! For `send_to` on an unconnected socket it cannot: `unix_dgram_poll`
//! knows no peer and reports this socket writable all along, so no edge
//! ever comes. A send that has to wait therefore waits as a Unix stream's
//! write does (`unix.rs`, rule 2: in slices, 1 ms doubling to 64 ms, and
//! calls the kernel again after each), bounded by the write timeout.
//!
//! And a receive on a socket whose read half is shut down: a blocking one
//! returns 0 (std's), a non-blocking one `WouldBlock`, while poll reports
//! the socket readable for good. A receive that gets `WouldBlock` asks
//! (`poll` without waiting) whether the read half is shut, and returns 0 if
//! so, as std's would.

use super::tcp::fd_traits;
use super::unix::write_in_slices;
use super::{IoState, adopt, socket_options};
use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::{self, SocketAddr};
use std::path::Path;
use std::sync::Arc;

/// A Unix datagram socket: [`std::os::unix::net::UnixDatagram`] whose
/// receives and sends park the calling coroutine instead of its worker.
///
/// ```
/// use weft::net::UnixDatagram;
///
/// let runtime = weft::Runtime::builder().workers(1).build()?;
/// runtime.block_on(|| -> std::io::Result<()> {
///     let (left, right) = UnixDatagram::pair()?;
///     let echo = weft::spawn(move || -> std::io::Result<()> {
///         let mut buf = [0; 16];
///         let n = right.recv(&mut buf)?; // parks this coroutine only
///         right.send(&buf[..n])?;
///         Ok(())
///     });
///     left.send(b"ping")?;
///     let mut buf = [0; 16];
///     let n = left.recv(&mut buf)?;
///     assert_eq!(&buf[..n], b"ping");
///     echo.join().expect("the echo")
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct UnixDatagram {
    // Declared first: deregisters before `inner` closes the descriptor.
    state: IoState,
    inner: net::UnixDatagram,
}

impl UnixDatagram {
    /// Creates a socket bound to `path` (which must not exist yet).
    ///
    /// # Errors
    ///
    /// As [`std::os::unix::net::UnixDatagram::bind`].
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixDatagram> {
        UnixDatagram::from_std(net::UnixDatagram::bind(path)?)
    }

    /// Creates a socket bound to `addr`: an address with a path, or (Linux)
    /// one in the abstract namespace, made with
    /// [`SocketAddrExt::from_abstract_name`](std::os::linux::net::SocketAddrExt::from_abstract_name).
    ///
    /// # Errors
    ///
    /// As [`std::os::unix::net::UnixDatagram::bind_addr`].
    pub fn bind_addr(addr: &SocketAddr) -> io::Result<UnixDatagram> {
        UnixDatagram::from_std(net::UnixDatagram::bind_addr(addr)?)
    }

    /// Creates a socket bound to no address (it can send, and receive
    /// what is sent to it once connected, or through a pair).
    pub fn unbound() -> io::Result<UnixDatagram> {
        UnixDatagram::from_std(net::UnixDatagram::unbound()?)
    }

    /// Two connected sockets.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = net::UnixDatagram::pair()?;
        Ok((UnixDatagram::from_std(a)?, UnixDatagram::from_std(b)?))
    }

    /// Sets the peer that [`send`](Self::send) sends to and the only one
    /// [`recv`](Self::recv) receives from. Never waits (a datagram
    /// socket's connect only records the address).
    pub fn connect<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        self.inner.connect(path)
    }

    /// As [`connect`](Self::connect), to the socket at `addr` (a path, or an
    /// abstract name), as std's `connect_addr`.
    pub fn connect_addr(&self, addr: &SocketAddr) -> io::Result<()> {
        self.inner.connect_addr(addr)
    }

    /// Receives one datagram, waiting for one; returns its length and its
    /// sender's address. A datagram longer than `buf` is truncated (the
    /// rest is lost), as with std.
    ///
    /// Once the read half is shut down ([`shutdown`](Self::shutdown)) and
    /// nothing is queued, returns `Ok(0)` at once, as std's does.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.state.read(|| match self.inner.recv_from(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.read_is_shut()? => {
                // As std's blocking receive: nothing, from no address (an
                // unbound socket's own address is the unnamed one).
                Ok((0, net::UnixDatagram::unbound()?.local_addr()?))
            }
            result => result,
        })
    }

    /// Receives one datagram, waiting for one. Once the read half is shut
    /// down and nothing is queued, returns `Ok(0)` at once, as std's does.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.state.read(|| match self.inner.recv(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.read_is_shut()? => Ok(0),
            result => result,
        })
    }

    /// Whether the read half is shut down. In non-blocking mode the
    /// kernel answers a receive on it with `WouldBlock` (a blocking one
    /// returns 0), and its poll reports it readable for good: without this
    /// check a receive would wait forever, or spin.
    fn read_is_shut(&self) -> io::Result<bool> {
        crate::sys::net::read_is_shut(self.inner.as_raw_fd())
    }

    /// Sends `buf` as one datagram to the socket bound at `path`, waiting
    /// while the receiver's queue is full (see the module docs).
    pub fn send_to<P: AsRef<Path>>(&self, buf: &[u8], path: P) -> io::Result<usize> {
        let path = path.as_ref();
        write_in_slices(&self.state, true, || self.inner.send_to(buf, path))
    }

    /// As [`send_to`](Self::send_to), to the socket at `addr` (a path, or an
    /// abstract name), as std's `send_to_addr`.
    pub fn send_to_addr(&self, buf: &[u8], addr: &SocketAddr) -> io::Result<usize> {
        write_in_slices(&self.state, true, || self.inner.send_to_addr(buf, addr))
    }

    /// Sends one datagram to the connected peer, waiting while its queue is
    /// full.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        write_in_slices(&self.state, true, || self.inner.send(buf))
    }

    /// The address this socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// Shuts the reading, writing or both halves down. A receive waiting on
    /// this socket (or a clone) when its read half is shut returns `Ok(0)`,
    /// as std's does.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    socket_options!(inner);

    /// Another handle to the same socket; it shares the timeouts and the
    /// non-blocking mode.
    pub fn try_clone(&self) -> io::Result<UnixDatagram> {
        let inner = self.inner.try_clone()?;
        Ok(UnixDatagram { state: IoState::new(inner.as_raw_fd(), Arc::clone(&self.state.options)), inner })
    }

    /// Wraps a std socket, putting its descriptor in non-blocking mode and
    /// keeping its timeouts.
    pub fn from_std(socket: net::UnixDatagram) -> io::Result<UnixDatagram> {
        let options = adopt(|b| socket.set_nonblocking(b), socket.read_timeout(), socket.write_timeout())?;
        Ok(UnixDatagram { state: IoState::new(socket.as_raw_fd(), options), inner: socket })
    }

    /// The std socket, deregistered, back in blocking mode unless this one
    /// was set non-blocking.
    ///
    /// Stays non-blocking while clones of it are alive: see ["Back to
    /// std"](crate::net#back-to-std).
    pub fn into_std(self) -> io::Result<net::UnixDatagram> {
        let UnixDatagram { state, inner } = self;
        state.release(|nonblocking| inner.set_nonblocking(nonblocking))?;
        Ok(inner)
    }
}

impl fmt::Debug for UnixDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixDatagram")
            .field("addr", &self.inner.local_addr().ok())
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

fd_traits!(UnixDatagram, net::UnixDatagram);
