//! `epoll(7)` and `eventfd(2)`: the per-worker I/O poller's system calls.
//!
//! Thin wrappers; the protocol that uses them (edge-triggered interest
//! registered once per socket and worker, a readiness word per
//! registration, an eventfd to wake a worker that sleeps in `epoll_wait`)
//! is described in `runtime::io`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Readable (`EPOLLIN`).
pub(crate) const READABLE: u32 = libc::EPOLLIN as u32;
/// Writable (`EPOLLOUT`).
pub(crate) const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// The peer shut down its writing half (`EPOLLRDHUP`).
pub(crate) const READ_CLOSED: u32 = libc::EPOLLRDHUP as u32;
/// Both halves are shut down (`EPOLLHUP`).
pub(crate) const HUP: u32 = libc::EPOLLHUP as u32;
/// An error is pending on the socket (`EPOLLERR`).
pub(crate) const ERROR: u32 = libc::EPOLLERR as u32;
/// Report changes only (`EPOLLET`).
pub(crate) const EDGE_TRIGGERED: u32 = libc::EPOLLET as u32;
/// Priority data (`EPOLLPRI`).
pub(crate) const PRIORITY: u32 = libc::EPOLLPRI as u32;

/// One event as `epoll_wait` returns it: the readiness bits and the word
/// given at registration.
pub(crate) type Event = libc::epoll_event;

/// An empty event, to size the buffer `wait` fills.
pub(crate) fn empty_event() -> Event {
    libc::epoll_event { events: 0, u64: 0 }
}

/// The readiness bits and registration word of an event.
pub(crate) fn event_parts(event: &Event) -> (u32, u64) {
    // Copies out of the packed struct (no reference into it).
    let (events, data) = (event.events, event.u64);
    (events, data)
}

/// An epoll instance.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// A new epoll instance (close-on-exec).
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers; the kernel returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned to us and is owned by nobody else.
        Ok(Epoll { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Adds `fd` with interest `events` (the caller ORs in `EPOLLET` if it
    /// wants edges); `data` comes back with each of its events.
    pub(crate) fn add(&self, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, data)
    }

    /// Removes `fd`. Once this returns, no later `wait` reports it.
    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: data };
        // SAFETY: `event` is a valid epoll_event for the call (DEL ignores it);
        // a bad `fd` is an error return, never undefined behaviour.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Waits for events, at most `timeout` (`None`: without limit; zero:
    /// only collects what is ready), filling `events` from the front.
    /// Returns how many it filled; 0 on timeout or on `EINTR` (the caller
    /// loops on its own conditions).
    pub(crate) fn wait(&self, events: &mut [Event], timeout: Option<Duration>) -> io::Result<usize> {
        let timeout_ms = match timeout {
            None => -1,
            // Rounded up, so a wait for a timer never ends before it is due.
            Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
        };
        let max = events.len().min(i32::MAX as usize) as libc::c_int;
        // (`syscall(2)`, not glibc's `epoll_wait`, a cancellation point:
        // see `sys::net`'s module docs.)
        let (fd, buffer) = (self.fd.as_raw_fd(), events.as_mut_ptr());
        // SAFETY: `events` is a writable buffer of `max` epoll_events.
        let n = unsafe { libc::syscall(libc::SYS_epoll_wait, fd, buffer, max, timeout_ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                return Ok(0);
            }
            return Err(err);
        }
        Ok(n as usize)
    }
}

/// An eventfd counter (non-blocking, close-on-exec): other threads write to
/// it to wake a worker that sleeps in `epoll_wait` with it in its set.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: no pointers; returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned to us and is owned by nobody else.
        Ok(EventFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Adds one to the counter: an edge for every epoll that watches it.
    /// If the counter is full (after 2^64 - 2 writes with no read) it is
    /// read back to zero first.
    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        loop {
            // SAFETY: writes 8 bytes from `one`, which lives across the call.
            let rc = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            if rc == 8 {
                return;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => self.drain(),
                // Cannot fail otherwise on a valid eventfd; a wake lost here
                // would hang a worker, so say so loudly.
                _ => panic!("weft: writing to a worker's eventfd failed: {}", io::Error::last_os_error()),
            }
        }
    }

    /// Reads the counter back to zero.
    pub(crate) fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into `value`; EAGAIN (already zero)
        // is fine.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    }
}
