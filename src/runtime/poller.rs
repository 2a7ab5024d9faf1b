//! The per-worker I/O poller: how a coroutine waits for a socket.
//!
//! # Registrations
//!
//! Each worker has its own epoll instance (a [`Poller`], created the first
//! time one of its coroutines waits for a socket). A started coroutine never
//! moves, so it waits on its own worker's epoll, and the readiness event
//! arrives on the thread that will run it. A socket is registered once per
//! worker that waits for it (not once per wait), edge-triggered, for reading
//! and writing together; the registration is an [`IoEntry`] on the heap,
//! whose address is the event's data word.
//!
//! ```text
//!  socket (weft::net)                       worker W's Poller
//!  +------------------------------+         +-----------------------------+
//!  | IoRegistration               |         | epoll fd   <- ADD(fd, entry)|
//!  |   first ---------> IoEntry{readiness, poller: W} (the common case)    |
//!  |   others: [IoEntry on W2, ..]|         | eventfd (wakes epoll_wait)  |
//!  +------------------------------+         | graveyard: entries removed  |
//!                                           |   by other threads          |
//!                                           +-----------------------------+
//! ```
//!
//! # The readiness word (one per entry)
//!
//! Edge-triggered epoll reports a change once, so an edge that comes while
//! nobody waits must not be lost. Each entry caches it, Go's `pollDesc`
//! way: a bit per direction that says "an event came since a waiter last
//! looked", and a bit per direction that says "someone is parked on it".
//!
//! ```text
//!  bit            set by                         cleared by
//!  -------------  -----------------------------  -------------------------------
//!  READ_READY     the poller, on EPOLLIN, RDHUP,  a reader, after a read returned
//!                 HUP or ERR                      WouldBlock (`take`): it retries
//!  WRITE_READY    the poller, on EPOLLOUT, HUP    a writer, likewise
//!                 or ERR
//!  READ_WAITER    a reader's park, in `validate`  the poller, when it sets
//!                 (bucket locked), when           READ_READY: it then wakes every
//!                 READ_READY is clear             reader parked on the entry
//!  WRITE_WAITER   likewise for writers            likewise
//! ```
//!
//! An operation always tries its system call first; only a `WouldBlock`
//! brings it here:
//!
//! 1. `take(dir)` clears the direction's READY bit and says whether it was
//!    set. If it was, an event came after the last look (it may have come
//!    between the `WouldBlock` and now): retry the call.
//! 2. Otherwise park on the entry's key for that direction, with a
//!    validation (run under the parking lot's bucket lock) that sets the
//!    WAITER bit only if READY is still clear, in one compare-and-swap; if
//!    READY was set meanwhile, do not park: retry.
//! 3. The poller sets READY with one read-modify-write, clearing the WAITER
//!    bit it found, and wakes every waiter of that key (`unpark_all`, which
//!    takes the same bucket lock).
//!
//! So an edge is never lost: it lands before step 1 (take sees it), between
//! 1 and 2 (validate sees it), or after 2 (the waiter is queued and the
//! poller saw its WAITER bit). A READY bit left over from an event the
//! caller's own successful call already consumed costs one extra
//! `WouldBlock` later, never a missed wake. Clearing READY at step 1
//! without retrying would lose an edge that came after the `WouldBlock`:
//! the loom model below checks the protocol and that negative control.
//!
//! Today only the entry's own worker thread touches its waiters and runs
//! its poller, so the races above are those with an event that epoll
//! reported before the call (stale), but the protocol is written, and
//! modelled, for any interleaving.
//!
//! # Deregistration and freeing
//!
//! A socket's drop removes each entry from its epoll (`EPOLL_CTL_DEL`)
//! before the descriptor is closed, so no readiness ever reaches a later
//! socket with the same number. The entry's memory may still be named by an
//! event that its worker fetched before the removal and has not processed
//! yet, so:
//!
//! - on the entry's own worker thread (the usual case: the coroutine that
//!   owned the socket drops it) it is freed at once: a worker processes each
//!   batch of events completely before it runs a coroutine again;
//! - on any other thread it goes to the poller's *graveyard*, which the
//!   worker empties only between batches: an event fetched before the
//!   removal was processed by then, and no later `epoll_wait` returns it;
//! - once the worker has stopped, entries are freed at once.
//!
//! An entry holds its poller (`Arc`), so the epoll descriptor it was added
//! to stays open until the entry is gone, even after its runtime is dropped.
//!
//! # Sleeping in the poller
//!
//! A worker with live registrations sleeps in `epoll_wait` (its next timer
//! as the timeout) instead of on its futex word, after publishing POLLING
//! instead of SLEEPING (see `worker`); a thread that has work for it CASes
//! POLLING to NOTIFIED and writes to the poller's eventfd, which sits in the
//! epoll set, edge-triggered (never read: each write is an edge; mio's
//! waker does the same). An eventfd is the usual choice (tokio/mio, Go's
//! netpollBreak): one descriptor, one write, no signal handlers or pipes.
//! A worker with no registrations keeps its futex sleep: one system call
//! to sleep and one to wake, against two more for an epoll round trip.
//! A busy worker polls without blocking in its fairness rounds and when
//! its run queue empties, so I/O is served while coroutines keep yielding.

use super::worker::with_current_worker;
use crate::loom::{AtomicUsize, Ordering};
use crate::park::lot::{self, ParkResult};
use crate::park::{self, ParkedOn};
use crate::sys::epoll::{self, Epoll, EventFd};
use crate::sys::futex::Deadline;
use crate::sys::net::{POLL_IN, POLL_OUT, poll_one};
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const READ_READY: usize = 1;
const WRITE_READY: usize = 2;
const READ_WAITER: usize = 4;
const WRITE_WAITER: usize = 8;

/// The interest every registration asks for (edge-triggered, both ways).
const INTEREST: u32 = epoll::READABLE | epoll::WRITABLE | epoll::READ_CLOSED | epoll::PRIORITY | epoll::EDGE_TRIGGERED;

/// Which half of a socket an operation waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

impl Direction {
    fn ready_bit(self) -> usize {
        match self {
            Direction::Read => READ_READY,
            Direction::Write => WRITE_READY,
        }
    }

    fn waiter_bit(self) -> usize {
        match self {
            Direction::Read => READ_WAITER,
            Direction::Write => WRITE_WAITER,
        }
    }
}

/// The readiness word of one registration; see the module docs.
///
/// Every access is Relaxed: the word guards no memory of ours (the data is
/// in the kernel, which orders its own side), and what matters — that a
/// take, a validation and an event never miss each other — holds in the
/// word's own modification order; the waiter and the poller meet in the
/// parking lot's bucket lock for everything else.
#[derive(Debug)]
pub(crate) struct Readiness(AtomicUsize);

impl Readiness {
    pub(crate) fn new() -> Readiness {
        Readiness(AtomicUsize::new(0))
    }

    /// Step 1: clears `dir`'s READY bit; whether it was set.
    pub(crate) fn take(&self, dir: Direction) -> bool {
        self.0.fetch_and(!dir.ready_bit(), Ordering::Relaxed) & dir.ready_bit() != 0
    }

    /// Step 2's validation: sets `dir`'s WAITER bit and returns true (park)
    /// if READY is clear; returns false (retry) if it is set.
    pub(crate) fn register_waiter(&self, dir: Direction) -> bool {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            if current & dir.ready_bit() != 0 {
                return false;
            }
            match self.0.compare_exchange_weak(
                current,
                current | dir.waiter_bit(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Step 3: marks the directions in `ready` (READ_READY and/or
    /// WRITE_READY) ready; returns the WAITER bits it cleared (whom to
    /// wake).
    pub(crate) fn set(&self, ready: usize) -> usize {
        let waiters = ready << 2; // READ_READY -> READ_WAITER, WRITE_READY -> WRITE_WAITER
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let new = (current | ready) & !waiters;
            match self.0.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return current & waiters,
                Err(actual) => current = actual,
            }
        }
    }
}

/// One socket registered with one worker's epoll.
pub(crate) struct IoEntry {
    readiness: Readiness,
    poller: Arc<Poller>,
    fd: RawFd,
}

impl IoEntry {
    /// The parking-lot key of `dir`'s waiters: the readiness word's address
    /// (+1 for writers, still inside the word, so no other primitive uses it).
    fn key(&self, dir: Direction) -> usize {
        let base = &self.readiness as *const Readiness as usize;
        match dir {
            Direction::Read => base,
            Direction::Write => base + 1,
        }
    }
}

/// What a worker's graveyard holds; see the module docs.
struct Graveyard {
    // Boxed: an entry's address is its epoll data word, so it must not
    // move when the vector grows.
    #[allow(clippy::vec_box)]
    entries: Vec<Box<IoEntry>>,
    /// Set when the worker stops: entries are freed at once from then on.
    worker_gone: bool,
}

/// A worker's epoll instance, its eventfd and its graveyard.
pub(crate) struct Poller {
    epoll: Epoll,
    waker: EventFd,
    /// Registrations not yet removed: the worker sleeps in `epoll_wait`
    /// only while some are live.
    live: crate::loom::process::AtomicUsize,
    graveyard: Mutex<Graveyard>,
}

/// The event word of the eventfd (entries are never at address 0).
const WAKER_DATA: u64 = 0;

impl Poller {
    /// A new poller with its eventfd in the set.
    pub(crate) fn new() -> io::Result<Poller> {
        let epoll = Epoll::new()?;
        let waker = EventFd::new()?;
        epoll.add(waker.raw(), epoll::READABLE | epoll::EDGE_TRIGGERED, WAKER_DATA)?;
        Ok(Poller {
            epoll,
            waker,
            live: crate::loom::process::AtomicUsize::new(0),
            graveyard: Mutex::new(Graveyard { entries: Vec::new(), worker_gone: false }),
        })
    }

    /// Whether any socket is registered here.
    pub(crate) fn has_registrations(&self) -> bool {
        self.live.load(crate::loom::process::Ordering::Relaxed) != 0
    }

    /// Wakes the worker if it sleeps in `epoll_wait` (or makes its next
    /// `epoll_wait` return at once).
    pub(crate) fn wake(&self) {
        self.waker.signal();
    }

    /// Collects the ready events (waiting at most `timeout`; `None`: until
    /// one comes or the worker is woken) and wakes the coroutines waiting
    /// on them. Returns how many socket events it handled. Called only by
    /// the worker that owns the poller, on its thread.
    pub(crate) fn poll(&self, events: &mut [epoll::Event], timeout: Option<Duration>) -> usize {
        self.empty_graveyard();
        let n = match self.epoll.wait(events, timeout) {
            Ok(n) => n,
            Err(err) => {
                // Only EBADF/EFAULT/EINVAL are possible, none of which a
                // correct runtime can cause; report once per occurrence
                // rather than spin silently.
                tracing::error!("weft: epoll_wait failed: {err}");
                return 0;
            }
        };
        let mut handled = 0;
        for event in &events[..n] {
            let (bits, data) = epoll::event_parts(event);
            if data == WAKER_DATA {
                continue;
            }
            let mut ready = 0;
            if bits & (epoll::READABLE | epoll::READ_CLOSED | epoll::HUP | epoll::ERROR | epoll::PRIORITY) != 0 {
                ready |= READ_READY;
            }
            if bits & (epoll::WRITABLE | epoll::HUP | epoll::ERROR) != 0 {
                ready |= WRITE_READY;
            }
            // SAFETY: `data` is the address of a live IoEntry: entries are
            // freed only after their removal from this epoll and, when
            // removed by another thread, only by `empty_graveyard` above,
            // before this batch was fetched (module docs).
            let entry = unsafe { &*(data as usize as *const IoEntry) };
            let woken = entry.readiness.set(ready);
            if woken & READ_WAITER != 0 {
                lot::unpark_all(entry.key(Direction::Read), lot::DEFAULT_TOKEN);
            }
            if woken & WRITE_WAITER != 0 {
                lot::unpark_all(entry.key(Direction::Write), lot::DEFAULT_TOKEN);
            }
            handled += 1;
        }
        handled
    }

    fn empty_graveyard(&self) {
        let mut graveyard = self.graveyard.lock().unwrap_or_else(|e| e.into_inner());
        if !graveyard.entries.is_empty() {
            graveyard.entries.clear();
        }
    }

    /// The worker stops: frees the graveyard, and any entry removed from
    /// now on is freed by whoever removes it.
    pub(crate) fn worker_stopped(&self) {
        let mut graveyard = self.graveyard.lock().unwrap_or_else(|e| e.into_inner());
        graveyard.worker_gone = true;
        graveyard.entries.clear();
    }

    /// Removes `entry` from this epoll and frees it (now, or through the
    /// graveyard when another thread's worker may hold an event naming it).
    fn remove(self: &Arc<Poller>, entry: Box<IoEntry>, on_own_worker: bool) {
        // A failure means the descriptor was closed behind our back (the
        // owner used `from_raw_fd` twice, say); the entry is dead all the
        // same.
        let _ = self.epoll.delete(entry.fd);
        self.live.fetch_sub(1, crate::loom::process::Ordering::Relaxed);
        if on_own_worker {
            drop(entry);
            return;
        }
        let mut graveyard = self.graveyard.lock().unwrap_or_else(|e| e.into_inner());
        if graveyard.worker_gone {
            drop(graveyard);
            drop(entry);
        } else {
            graveyard.entries.push(entry);
        }
    }
}

/// A socket's registrations, one per worker that has waited for it; owned
/// by the socket, removed when it drops (before its descriptor closes).
pub(crate) struct IoRegistration {
    fd: RawFd,
    /// The first worker's entry: the common case, found with one load.
    first: crate::loom::process::AtomicPtr<IoEntry>,
    /// Entries on other workers (a socket shared between coroutines on
    /// several workers).
    // Boxed: an entry's address is its epoll data word.
    #[allow(clippy::vec_box)]
    others: Mutex<Vec<Box<IoEntry>>>,
}

// SAFETY: the raw entry pointers are owned boxes (freed only in `drop`);
// an entry is Sync (atomics, an Arc<Poller> whose fields are Sync).
unsafe impl Send for IoRegistration {}
// SAFETY: as above; shared access reads `first` atomically and `others`
// under its mutex.
unsafe impl Sync for IoRegistration {}

impl IoRegistration {
    /// A socket not yet registered anywhere.
    pub(crate) fn new(fd: RawFd) -> IoRegistration {
        IoRegistration {
            fd,
            first: crate::loom::process::AtomicPtr::new(std::ptr::null_mut()),
            others: Mutex::new(Vec::new()),
        }
    }

    /// The descriptor this registers.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// This socket's entry on `poller` (the caller's worker), created and
    /// added to its epoll the first time.
    fn entry_on(&self, poller: &Arc<Poller>) -> io::Result<&IoEntry> {
        // Acquire: pairs with the Release of the CAS that published the
        // entry, so its fields are seen initialised.
        let first = self.first.load(crate::loom::process::Ordering::Acquire);
        // SAFETY: a non-null `first` is a live boxed entry, freed only by
        // `drop` (which has `&mut self`).
        if let Some(entry) = unsafe { first.as_ref() }
            && Arc::ptr_eq(&entry.poller, poller)
        {
            return Ok(entry);
        }
        self.entry_slow(poller, first.is_null())
    }

    #[cold]
    fn entry_slow(&self, poller: &Arc<Poller>, first_free: bool) -> io::Result<&IoEntry> {
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = others.iter().find(|e| Arc::ptr_eq(&e.poller, poller)) {
            let ptr: *const IoEntry = &**entry;
            // SAFETY: boxed entries are never moved or freed before `drop`
            // (which has `&mut self`), so the reference outlives the lock.
            return Ok(unsafe { &*ptr });
        }
        let entry = Box::new(IoEntry { readiness: Readiness::new(), poller: Arc::clone(poller), fd: self.fd });
        poller.epoll.add(self.fd, INTEREST, &*entry as *const IoEntry as u64).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("weft: cannot register socket {} with its worker's epoll: {err}", self.fd),
            )
        })?;
        poller.live.fetch_add(1, crate::loom::process::Ordering::Relaxed);
        let raw = Box::into_raw(entry);
        if first_free {
            // Release: publishes the entry's fields to `entry_on`'s Acquire.
            if self
                .first
                .compare_exchange(
                    std::ptr::null_mut(),
                    raw,
                    crate::loom::process::Ordering::Release,
                    crate::loom::process::Ordering::Relaxed,
                )
                .is_ok()
            {
                // SAFETY: just published; lives until `drop`.
                return Ok(unsafe { &*raw });
            }
            // Otherwise another worker's entry got there first.
        }
        // SAFETY: `raw` came from Box::into_raw just above and was not published.
        others.push(unsafe { Box::from_raw(raw) });
        // SAFETY: as in the lookup above.
        Ok(unsafe { &*raw })
    }

    /// Waits until `dir` may be ready after an operation returned
    /// `WouldBlock`, or until `deadline`; returns `Ok(false)` when the
    /// deadline passed. A coroutine parks on its worker's poller; a plain
    /// OS thread (or a coroutine being unwound at shutdown) blocks in
    /// `poll(2)`. The caller retries its operation after `Ok(true)` (a
    /// wake may be spurious).
    pub(crate) fn wait(&self, dir: Direction, deadline: Option<Deadline>) -> io::Result<bool> {
        match current_poller()? {
            Some(poller) => {
                let entry = self.entry_on(&poller)?;
                Ok(wait_on_entry(entry, dir, deadline))
            }
            None => {
                let events = match dir {
                    Direction::Read => POLL_IN,
                    Direction::Write => POLL_OUT,
                };
                poll_one(self.fd, events, deadline)
            }
        }
    }
}

impl Drop for IoRegistration {
    fn drop(&mut self) {
        let own = with_current_worker(|w| w.and_then(|w| w.poller_if_created()));
        let on_own_worker = |entry: &IoEntry| own.as_ref().is_some_and(|p| Arc::ptr_eq(p, &entry.poller));
        let first = std::mem::replace(self.first.get_mut(), std::ptr::null_mut());
        if !first.is_null() {
            // SAFETY: published by `entry_slow` from Box::into_raw; we have
            // `&mut self`, so nobody else holds a reference.
            let entry = unsafe { Box::from_raw(first) };
            let own = on_own_worker(&entry);
            Arc::clone(&entry.poller).remove(entry, own);
        }
        let others = std::mem::take(self.others.get_mut().unwrap_or_else(|e| e.into_inner()));
        for entry in others {
            let own = on_own_worker(&entry);
            Arc::clone(&entry.poller).remove(entry, own);
        }
    }
}

/// The calling coroutine's worker's poller (created on first use); `None`
/// on a plain OS thread and in a coroutine that its runtime is unwinding
/// at shutdown (it may not park any more).
fn current_poller() -> io::Result<Option<Arc<Poller>>> {
    if !super::in_parkable_coroutine() {
        return Ok(None);
    }
    with_current_worker(|w| match w {
        Some(worker) => worker.poller().map(Some),
        None => Ok(None),
    })
}

fn wait_on_entry(entry: &IoEntry, dir: Direction, deadline: Option<Deadline>) -> bool {
    if entry.readiness.take(dir) {
        return true; // step 1: an event came since the last look
    }
    park::waiting_on(match dir {
        Direction::Read => ParkedOn::Readable(entry.fd),
        Direction::Write => ParkedOn::Writable(entry.fd),
    });
    let result = lot::park(entry.key(dir), || entry.readiness.register_waiter(dir), || {}, |_, _| {}, deadline);
    !matches!(result, ParkResult::TimedOut)
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The readiness protocol (module docs): a "kernel" thread makes data
    //! available and delivers its edge through the poller's `set` + wake; the
    //! reader retries its call until it gets the data. It must always get
    //! there (loom reports a reader parked for ever as a deadlock).
    use super::{Direction, READ_READY, Readiness};
    use crate::loom::{AtomicBool, Ordering, thread};
    use crate::park::lot;
    use std::sync::Arc;

    struct Socket {
        readiness: Readiness,
        /// The kernel's receive buffer: data waiting or not.
        data: AtomicBool,
    }

    fn key(s: &Socket) -> usize {
        &s.readiness as *const Readiness as usize
    }

    fn reader_gets_the_edge(correct: bool) {
        loom::model(move || {
            // std's Arc: loom's panics when dropped while loom unwinds the
            // deadlocked negative control.
            let s = Arc::new(Socket { readiness: Readiness::new(), data: AtomicBool::new(false) });
            let kernel = {
                let s = Arc::clone(&s);
                thread::spawn(move || {
                    s.data.store(true, Ordering::Relaxed); // a segment arrives ...
                    // ... and the poller processes its edge.
                    if s.readiness.set(READ_READY) != 0 {
                        lot::unpark_all(key(&s), lot::DEFAULT_TOKEN);
                    }
                })
            };
            loop {
                // (A compare-and-swap, not `swap(false)`: loom 0.7's
                // AtomicBool::swap returned a stale `false` here.)
                if s.data.compare_exchange(true, false, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                    break; // the read succeeded
                }
                // WouldBlock.
                if correct {
                    if s.readiness.take(Direction::Read) {
                        continue;
                    }
                } else {
                    // The bug: forget what came, without retrying.
                    s.readiness.take(Direction::Read);
                }
                lot::park(key(&s), || s.readiness.register_waiter(Direction::Read), || {}, |_, _| {}, None);
            }
            kernel.join().unwrap();
        });
    }

    #[test]
    fn an_edge_between_would_block_and_park_is_never_lost() {
        reader_gets_the_edge(true);
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_clearing_without_retry_loses_the_edge() {
        reader_gets_the_edge(false);
    }
}
