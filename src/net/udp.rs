//! UDP: `UdpSocket`, `std::net`'s shape over a non-blocking descriptor.

use super::tcp::fd_traits;
use super::{IoState, adopt, socket_options};
use std::fmt;
use std::io;
use std::net::{self, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, RawFd};
use std::sync::Arc;

/// A UDP socket: [`std::net::UdpSocket`] whose receives and sends park the
/// calling coroutine instead of its worker.
///
/// ```
/// use weft::net::UdpSocket;
///
/// let runtime = weft::Runtime::builder().workers(1).build()?;
/// runtime.block_on(|| -> std::io::Result<()> {
///     let server = UdpSocket::bind("127.0.0.1:0")?;
///     let addr = server.local_addr()?;
///     let client = UdpSocket::bind("127.0.0.1:0")?;
///     client.send_to(b"ping", addr)?;
///     let mut buf = [0; 16];
///     let (n, from) = server.recv_from(&mut buf)?;
///     assert_eq!(&buf[..n], b"ping");
///     assert_eq!(from, client.local_addr()?);
///     Ok(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct UdpSocket {
    // Declared first: deregisters before `inner` closes the descriptor.
    state: IoState,
    inner: net::UdpSocket,
}

impl UdpSocket {
    /// Creates a socket bound to `addr` (the first address it resolves to
    /// that works).
    ///
    /// # Errors
    ///
    /// As [`std::net::UdpSocket::bind`].
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        UdpSocket::from_std(net::UdpSocket::bind(addr)?)
    }

    /// Receives one datagram, waiting for one; returns its length and its
    /// sender. A datagram longer than `buf` is truncated (the rest is lost),
    /// as with std.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.state.read(|| self.inner.recv_from(buf))
    }

    /// [`recv_from`](Self::recv_from) that leaves the datagram queued.
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.state.read(|| self.inner.peek_from(buf))
    }

    /// Sends `buf` as one datagram to `addr` (the first address it
    /// resolves to), waiting for room in the send buffer.
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no addresses to send data to"))?;
        self.state.write(|| self.inner.send_to(buf, addr))
    }

    /// Sets the peer that [`send`](Self::send) sends to and the only one
    /// [`recv`](Self::recv) receives from.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        self.inner.connect(addr)
    }

    /// Sends one datagram to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.state.write(|| self.inner.send(buf))
    }

    /// Receives one datagram from the connected peer, waiting for one.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.state.read(|| self.inner.recv(buf))
    }

    /// [`recv`](Self::recv) that leaves the datagram queued.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.state.read(|| self.inner.peek(buf))
    }

    /// The address this socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    socket_options!(inner);

    /// Sets `SO_BROADCAST`.
    pub fn set_broadcast(&self, broadcast: bool) -> io::Result<()> {
        self.inner.set_broadcast(broadcast)
    }

    /// Whether `SO_BROADCAST` is set.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.inner.broadcast()
    }

    /// Sets the IP time-to-live (`IP_TTL`).
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_ttl(ttl)
    }

    /// The IP time-to-live.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.ttl()
    }

    /// Joins an IPv4 multicast group (`IP_ADD_MEMBERSHIP`).
    pub fn join_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.inner.join_multicast_v4(multiaddr, interface)
    }

    /// Leaves an IPv4 multicast group.
    pub fn leave_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.inner.leave_multicast_v4(multiaddr, interface)
    }

    /// Joins an IPv6 multicast group.
    pub fn join_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.inner.join_multicast_v6(multiaddr, interface)
    }

    /// Leaves an IPv6 multicast group.
    pub fn leave_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.inner.leave_multicast_v6(multiaddr, interface)
    }

    /// Sets `IP_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v4(&self, on: bool) -> io::Result<()> {
        self.inner.set_multicast_loop_v4(on)
    }

    /// Whether `IP_MULTICAST_LOOP` is set.
    pub fn multicast_loop_v4(&self) -> io::Result<bool> {
        self.inner.multicast_loop_v4()
    }

    /// Sets `IP_MULTICAST_TTL`.
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        self.inner.set_multicast_ttl_v4(ttl)
    }

    /// The `IP_MULTICAST_TTL` setting.
    pub fn multicast_ttl_v4(&self) -> io::Result<u32> {
        self.inner.multicast_ttl_v4()
    }

    /// Sets `IPV6_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v6(&self, on: bool) -> io::Result<()> {
        self.inner.set_multicast_loop_v6(on)
    }

    /// Whether `IPV6_MULTICAST_LOOP` is set.
    pub fn multicast_loop_v6(&self) -> io::Result<bool> {
        self.inner.multicast_loop_v6()
    }

    /// Another handle to the same socket; it shares the timeouts and the
    /// non-blocking mode.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        let inner = self.inner.try_clone()?;
        Ok(UdpSocket { state: IoState::new(inner.as_raw_fd(), Arc::clone(&self.state.options)), inner })
    }

    /// Wraps a std socket, putting its descriptor in non-blocking mode and
    /// keeping its timeouts.
    pub fn from_std(socket: net::UdpSocket) -> io::Result<UdpSocket> {
        let options = adopt(|b| socket.set_nonblocking(b), socket.read_timeout(), socket.write_timeout())?;
        Ok(UdpSocket { state: IoState::new(socket.as_raw_fd(), options), inner: socket })
    }

    /// The std socket, deregistered, back in blocking mode unless this one
    /// was set non-blocking.
    ///
    /// Stays non-blocking while clones of it are alive: see ["Back to
    /// std"](crate::net#back-to-std).
    pub fn into_std(self) -> io::Result<net::UdpSocket> {
        let UdpSocket { state, inner } = self;
        state.release(|nonblocking| inner.set_nonblocking(nonblocking))?;
        Ok(inner)
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket").field("addr", &self.inner.local_addr().ok()).field("fd", &self.as_raw_fd()).finish()
    }
}

fd_traits!(UdpSocket, net::UdpSocket);
