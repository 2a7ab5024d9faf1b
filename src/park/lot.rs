//! The parking lot: wait on an address, wake the waiters of an address.
//!
//! Every blocking primitive in `sync` is a state word plus this table. A
//! waiter parks on a *key* (the address of the primitive's state word) only
//! if a validation callback, run while the key's bucket is locked, still
//! says it must wait; a waker locks the same bucket to take waiters off.
//! Because both run under the bucket lock, a waker that changes the state
//! word and then calls `unpark_*` can never miss a waiter that validated the
//! old state: either the waiter validated before (and is in the queue when
//! the waker looks) or after (and sees the new state, so does not park).
//!
//! ```text
//!  TABLE: [bucket; N]      bucket = lock + FIFO queue of WaitNodes
//!          key -> hash -> bucket   (several keys may share a bucket)
//!
//!  WaitNode (on the waiter's own stack: coroutine or thread)
//!  +-----------------------------------------------------------+
//!  | key       which address it waits on (requeue may change)  |
//!  | next      queue link                        } bucket lock |
//!  | unparker  who to wake (coroutine / thread)  } guards these |
//!  | token     what the waker hands over         }              |
//!  | removed   set by the waker, Release, before unlocking      |
//!  +-----------------------------------------------------------+
//! ```
//!
//! A waiter is a coroutine (parked through the runtime: its worker runs
//! other coroutines meanwhile) or a plain OS thread (parked on its own futex
//! word, `park::thread`). A waker takes the waiter's `Unparker` out of the
//! node while holding the lock, marks the node `removed`, unlocks, and only
//! then wakes it; it never touches the node after unlocking, so the waiter
//! may return (and its stack frame go) as soon as it sees `removed`. The
//! node holds the waiter's only `Unparker` (for a coroutine, usually the
//! reference its worker lent it: `runtime::current_task_for_waker`); the
//! waiter itself parks through its `WaiterKind`, which needs no handle.
//!
//! Timeouts: a waiter whose deadline passes locks its bucket; if it is still
//! queued it removes itself and reports `TimedOut`, otherwise a waker got
//! there first and it reports `Unparked` with the waker's token. A coroutine's
//! deadline is a timer on its worker, armed before the node is queued and
//! cancelled when the park ends, however it ends, after the bucket is
//! unlocked (`park::disarm_timer`): a wait woken early leaves no timer
//! behind.
//!
//! Shutdown: a runtime that is dropped unwinds its parked coroutines. A
//! guard on the waiter's stack then leaves the queue the way a timeout does
//! (the primitive's `timed_out` undoes its bookkeeping), or, if a waker took
//! the node first, passes on what it handed over (`park_passing_on`: the
//! lock, the permit, the turn to compete), so OS threads and other runtimes
//! waiting on the same primitive carry on.
//!
//! Fairness: queues are FIFO, and `unpark_one` tells the waker how long the
//! woken waiter waited, so a lock can hand itself over directly to a waiter
//! that waited too long (eventual fairness).
//!
//! Park tokens: a waiter may leave a word in its node for wakers to read
//! (`park_with_token`), and `unpark_filter` shows each waiter's word to a
//! filter, oldest first, under the bucket lock, which wakes it or stops
//! there (parking_lot's `ParkToken` and `unpark_filter`). A Semaphore waiter
//! says how many permits it waits for, and a release serves the queue's
//! head only once its permits cover that many; a filter that stops at once
//! learns, under the bucket lock and waking nobody, whether anyone waits.
//!
//! # Fair hand-overs
//!
//! A lock whose woken waiters compete with newcomers (barging) has a waiter
//! park several times in one wait: woken, it finds the lock re-taken and
//! parks again. `park_fair` counts those parks as one wait (a [`FairWait`]
//! the waiter keeps across them, Go's `waitStartTime`):
//!
//! ```text
//!  park of a wait          wait's start (parked_at)        queued at
//!  ----------------------  ------------------------------  -----------------
//!  first (FairWait new)    stamped now, kept in FairWait   the back (FIFO)
//!  re-park (woken, lost)   the first park's, unchanged     the front: it was
//!                                                          the oldest, woken
//!  refused by `validate`   not stamped: no wait yet        (not queued)
//! ```
//!
//! Stamped per park instead, a waiter that kept losing to a holder that
//! re-locks at once never "waited" longer than one critical section and
//! was never handed the lock (Go's TestMutexFairness, tests/fairness.rs:
//! ten locks behind a holder that sleeps 100 µs took 0.03-0.5 s; Go and
//! parking_lot take milliseconds). Re-parking at the front (Go's
//! `queueLifo`) keeps that waiter the next one woken, so it is the one a
//! hand-over reaches when one comes due.
//!
//! `unpark_one_fair(key, interval, ..)` says a hand-over is due
//! (`be_fair`) when the woken waiter's wait began at least `interval` ago
//! *and* the bucket made no fair hand-over in the last `interval` (the
//! bucket's `next_fair`, advanced by each `be_fair` result). The second
//! condition is parking_lot's per-bucket fairness timer: a hand-over keeps
//! the lock held until its new owner runs, which for a coroutine parked on
//! another worker takes a cross-thread wake, so a lock whose every unlock
//! hands over moves at the speed of those wakes. Without the timer that
//! happened as soon as the queue was long enough for every waiter to wait
//! `interval`: 264 coroutines on 4 workers incrementing one Mutex ran 4x
//! slower on a 16-CPU machine. With it, hand-overs take at most one lock
//! turn per `interval` and per bucket. So a waiter behind a holder that
//! re-locks at once is handed the lock about `interval` plus one critical
//! section after its wait began, when no other lock of its bucket took the
//! bucket's hand-over meanwhile; with `n` waiters queued ahead of it, the
//! bucket's hand-overs serve them first, one per `interval`, in queue order
//! (the oldest is the one woken, and re-parks at the front until served).

use super::Unparker;
use super::bucket_lock::{BucketGuard, BucketLock};
use crate::loom::{AtomicBool, AtomicUsize, Ordering, negative_control};
use crate::sys::futex::Deadline;
use std::cell::Cell;
use std::ptr;
use std::time::Duration;
#[cfg(not(loom))]
use std::time::Instant;

/// The token a waker passes when it has nothing special to say.
pub(crate) const DEFAULT_TOKEN: usize = 0;

/// How a [`park`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParkResult {
    /// Woken by a waker, which passed this token.
    Unparked(usize),
    /// `validate` said not to park.
    Invalid,
    /// The deadline passed first.
    TimedOut,
}

/// What an `unpark_*` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct UnparkResult {
    /// How many waiters were woken.
    pub(crate) unparked: usize,
    /// Whether waiters remain on the key.
    pub(crate) have_more: bool,
    /// How long the woken waiter had waited since its wait began (its
    /// `FairWait`'s first park; `unpark_one_fair`, and only for a waiter
    /// that parked with `park_fair`; zero otherwise).
    pub(crate) waited: Duration,
    /// `unpark_one_fair`: the woken waiter is due a hand-over (module docs,
    /// "Fair hand-overs"); always false from the other `unpark_*`.
    pub(crate) be_fair: bool,
    /// `unpark_requeue`: how many waiters were moved to the other key (so a
    /// Condvar's `notify_all` can say how many waiters it reached); zero
    /// from the other `unpark_*`.
    pub(crate) requeued: usize,
}

/// One waiter, linked into a bucket's queue; lives on the waiter's stack.
struct WaitNode {
    key: AtomicUsize,
    /// Queue link; guarded by the bucket lock.
    next: Cell<*const WaitNode>,
    /// Who to wake; guarded by the bucket lock; taken by the waker.
    unparker: Cell<Option<Unparker>>,
    /// The waker's token; written under the bucket lock before `removed`.
    token: Cell<usize>,
    /// Set (Release) by the waker once it has taken the node off the queue.
    removed: AtomicBool,
    /// When its wait began (`FairWait`: the first park of the same wait,
    /// not this one, if it re-parked), for waiters whose waker needs
    /// `UnparkResult::waited` (`park_fair`); `None` spares two clock reads
    /// per hand-off elsewhere.
    parked_at: Option<Stamp>,
    /// What the waiter tells wakers about itself ([`park_with_token`]: a
    /// Semaphore waiter's permit count), read by [`unpark_filter`]'s
    /// filter under the bucket lock; [`DEFAULT_TOKEN`] otherwise.
    park_token: usize,
}

/// When a fair wait began (`WaitNode::parked_at`, `FairWait`).
#[cfg(not(loom))]
type Stamp = Instant;

#[cfg(not(loom))]
fn stamp() -> Stamp {
    Instant::now()
}

#[cfg(not(loom))]
fn waited_since(parked_at: Stamp) -> Duration {
    parked_at.elapsed()
}

/// The time now, without counting as an event (under loom, the tick count).
#[cfg(not(loom))]
fn now() -> Stamp {
    Instant::now()
}

/// `interval` after `from`: the earliest next fair hand-over.
#[cfg(not(loom))]
fn after(from: Stamp, interval: Duration) -> Stamp {
    from + interval
}

/// Under loom, time is logical. A wall clock would make a model's path
/// depend on how fast the host ran it (a waiter that happened to wait over
/// `FAIR_AFTER` takes the Mutex's hand-over path), and loom replays each
/// execution expecting the same program. Instead every first fair park of
/// a wait (a re-park keeps its wait's stamp and takes none) and every
/// report of a fair wait is one tick, and a waiter "waited" one millisecond
/// per tick that happened between its wait's first park and its wake. So a
/// waiter woken before anyone else parked or was woken waited zero; one
/// that saw others come and go waited longer: both of a lock's paths are
/// explored, chosen by the schedule alone.
#[cfg(loom)]
type Stamp = u64;

#[cfg(loom)]
loom::lazy_static! {
    /// Ticks of this execution (lazy statics are reset per execution).
    static ref TICKS: crate::loom::process::AtomicU64 = crate::loom::process::AtomicU64::new(0);
}

#[cfg(loom)]
fn stamp() -> Stamp {
    // Relaxed: a std atomic that loom does not see; loom runs one thread at
    // a time, so the count is exact.
    TICKS.fetch_add(1, crate::loom::process::Ordering::Relaxed) + 1
}

#[cfg(loom)]
fn waited_since(parked_at: Stamp) -> Duration {
    let now = stamp();
    Duration::from_millis(now - parked_at - 1)
}

#[cfg(loom)]
fn now() -> Stamp {
    TICKS.load(crate::loom::process::Ordering::Relaxed)
}

/// Under loom, the next fair hand-over may come once another tick has
/// happened besides the next wake's own report (`waited_since` counts one):
/// so both "due" and "too soon" are reached by some schedule.
#[cfg(loom)]
fn after(from: Stamp, _interval: Duration) -> Stamp {
    from + 2
}

struct Queue {
    head: *const WaitNode,
    tail: *const WaitNode,
    /// The earliest time of the bucket's next fair hand-over
    /// (`unpark_one_fair`); `None` before the first.
    next_fair: Option<Stamp>,
}

// SAFETY: the nodes a Queue points at are only touched with the bucket lock
// held (or by their owner after `removed` says the queue let go of them).
unsafe impl Send for Queue {}

struct Bucket {
    queue: BucketLock<Queue>,
}

impl Bucket {
    #[cfg(not(loom))]
    const fn new() -> Bucket {
        Bucket { queue: BucketLock::new(Queue { head: ptr::null(), tail: ptr::null(), next_fair: None }) }
    }

    #[cfg(loom)]
    fn new() -> Bucket {
        Bucket { queue: BucketLock::new(Queue { head: ptr::null(), tail: ptr::null(), next_fair: None }) }
    }
}

/// Number of buckets: enough that unrelated primitives rarely share one.
#[cfg(not(loom))]
const BUCKETS: usize = 1024;
/// Under loom, two buckets: see the loom `bucket_of` for which keys share one.
#[cfg(loom)]
const BUCKETS: usize = 2;

#[cfg(not(loom))]
static TABLE: [crossbeam_utils::CachePadded<Bucket>; BUCKETS] =
    [const { crossbeam_utils::CachePadded::new(Bucket::new()) }; BUCKETS];

#[cfg(loom)]
loom::lazy_static! {
    static ref TABLE: Vec<Bucket> = (0..BUCKETS).map(|_| Bucket::new()).collect();
}

#[cfg(not(loom))]
fn bucket_of(key: usize) -> &'static Bucket {
    // Fibonacci hashing of the address (the low bits are alignment zeros).
    let hash = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - BUCKETS.trailing_zeros());
    &TABLE[hash % BUCKETS]
}

#[cfg(loom)]
loom::lazy_static! {
    /// Keys in the order this execution first used them.
    static ref SEEN: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
}

/// Under loom the bucket cannot depend on the key's address: addresses
/// change from one execution to the next (tests allocate in parallel), and
/// whether two keys share a bucket changes which locks are taken, so loom
/// would see a different program on replay ("is the model fully
/// deterministic?"). Instead the n-th distinct key of an execution gets
/// bucket n % BUCKETS, which depends only on the schedule: the first two
/// keys (a Condvar and its Mutex) take separate buckets, a third shares.
/// `SEEN` is std's Mutex, not a loom object, so it adds no branch points.
#[cfg(loom)]
fn bucket_of(key: usize) -> &'static Bucket {
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let index = match seen.iter().position(|&k| k == key) {
        Some(index) => index,
        None => {
            seen.push(key);
            seen.len() - 1
        }
    };
    &TABLE[index % BUCKETS]
}

#[inline] // on every park and wake: a call through the GOT from other crates
fn lock(bucket: &'static Bucket) -> BucketGuard<'static, Queue> {
    bucket.queue.lock()
}

/// Locks the bucket of the key `node` currently waits on (which a requeue
/// may change until we hold the right lock).
fn lock_node_bucket(node: &WaitNode) -> BucketGuard<'static, Queue> {
    loop {
        let key = node.key.load(Ordering::Relaxed);
        let guard = lock(bucket_of(key));
        if node.key.load(Ordering::Relaxed) == key {
            return guard;
        }
    }
}

/// Locks the buckets of two keys in a fixed order (no lock-order deadlock).
fn lock_two(a: usize, b: usize) -> (BucketGuard<'static, Queue>, Option<BucketGuard<'static, Queue>>) {
    let (ba, bb) = (bucket_of(a), bucket_of(b));
    if ptr::eq(ba, bb) {
        return (lock(ba), None);
    }
    if (ba as *const Bucket) < (bb as *const Bucket) {
        let ga = lock(ba);
        (ga, Some(lock(bb)))
    } else {
        let gb = lock(bb);
        (lock(ba), Some(gb))
    }
}

/// Appends `node` to the list `head`..`tail` linked through `next`.
/// The list's nodes are alive and the caller holds the bucket lock that
/// guards their links (a queue's, or the one a detached chain was taken
/// under).
fn link_at_tail(head: &mut *const WaitNode, tail: &mut *const WaitNode, node: &WaitNode) {
    node.next.set(ptr::null());
    if tail.is_null() {
        *head = node;
    } else {
        // SAFETY: `tail` is a node of the list: alive, and its link guarded
        // by the lock the caller holds (see above).
        unsafe { (**tail).next.set(node) };
    }
    *tail = node;
}

/// Nodes taken off a queue ([`Queue::detach_where`]), chained through
/// their `next` links in queue order. The bucket lock they were taken under
/// must still be held while the chain is walked: a node may be freed by its
/// owner as soon as it is released (`release_node`), so `pop_front` reads
/// the link before handing the node out.
struct Detached {
    head: *const WaitNode,
    tail: *const WaitNode,
    len: usize,
}

impl Detached {
    fn push(&mut self, node: &WaitNode) {
        // A chained node is unlinked from its queue but still waiting (not
        // released), so alive, and the caller holds the bucket lock it was
        // taken under: `link_at_tail`'s promise.
        link_at_tail(&mut self.head, &mut self.tail, node);
        self.len += 1;
    }

    fn pop_front(&mut self) -> Option<*const WaitNode> {
        if self.head.is_null() {
            return None;
        }
        let node = self.head;
        // SAFETY: as in `push`: a chained node is alive until released, and
        // its link is read before the caller may release it.
        self.head = unsafe { (*node).next.get() };
        if self.head.is_null() {
            self.tail = ptr::null();
        }
        self.len -= 1;
        Some(node)
    }
}

impl Queue {
    /// Links `node` at the head: a fair wait's re-park (`park_fair`), ahead
    /// of every waiter, as the oldest of its key's waiters.
    fn push_front(&mut self, node: &WaitNode) {
        node.next.set(self.head);
        if self.tail.is_null() {
            self.tail = node;
        }
        self.head = node;
    }

    fn push(&mut self, node: &WaitNode) {
        // Queued nodes stay alive (their owners wait until `removed`), and
        // we hold the bucket lock: `link_at_tail`'s promise.
        link_at_tail(&mut self.head, &mut self.tail, node);
    }

    /// Unlinks `node`, whose predecessor in the queue is `prev` (null if it
    /// is the head). The caller holds the bucket lock.
    fn unlink(&mut self, prev: *const WaitNode, node: &WaitNode) {
        let next = node.next.get();
        if prev.is_null() {
            self.head = next;
        } else {
            // SAFETY: `prev` is a queued node: alive, and guarded by the
            // bucket lock the caller holds.
            unsafe { (*prev).next.set(next) };
        }
        if ptr::eq(self.tail, node) {
            self.tail = prev;
        }
    }

    /// Unlinks the nodes for which `take(node)` says so, stopping after
    /// `limit` taken, and chains them, in queue order, through their own
    /// `next` links (no allocation: timeouts and wake-alls take this path).
    fn detach_where(&mut self, limit: usize, mut take: impl FnMut(&WaitNode) -> bool) -> Detached {
        let mut detached = Detached { head: ptr::null(), tail: ptr::null(), len: 0 };
        let mut prev: *const WaitNode = ptr::null();
        let mut current = self.head;
        while !current.is_null() && detached.len < limit {
            // SAFETY: queued nodes are alive and guarded by the lock we hold.
            let node = unsafe { &*current };
            let next = node.next.get();
            if take(node) {
                self.unlink(prev, node);
                detached.push(node);
            } else {
                prev = current;
            }
            current = next;
        }
        detached
    }

    /// Unlinks the oldest node waiting on `key` (no allocation: this is on
    /// every contended unlock).
    fn remove_first(&mut self, key: usize) -> Option<*const WaitNode> {
        let mut prev: *const WaitNode = ptr::null();
        let mut current = self.head;
        while !current.is_null() {
            // SAFETY: queued nodes are alive and guarded by the lock we hold.
            let node = unsafe { &*current };
            let next = node.next.get();
            if node.key.load(Ordering::Relaxed) == key {
                self.unlink(prev, node);
                return Some(current);
            }
            prev = current;
            current = next;
        }
        None
    }

    fn contains_key(&self, key: usize) -> bool {
        let mut current = self.head;
        while !current.is_null() {
            // SAFETY: as in remove_where.
            let node = unsafe { &*current };
            if node.key.load(Ordering::Relaxed) == key {
                return true;
            }
            current = node.next.get();
        }
        false
    }

    #[cfg(all(test, not(loom)))]
    fn count_key(&self, key: usize) -> usize {
        let mut count = 0;
        let mut current = self.head;
        while !current.is_null() {
            // SAFETY: as in remove_where.
            let node = unsafe { &*current };
            count += usize::from(node.key.load(Ordering::Relaxed) == key);
            current = node.next.get();
        }
        count
    }
}

/// How many waiters are queued on `key` now (for tests that must queue
/// waiters in a known order).
#[cfg(all(test, not(loom)))]
pub(crate) fn queued(key: usize) -> usize {
    lock(bucket_of(key)).count_key(key)
}

/// Takes a removed node's unparker and token and marks it removed. Must be
/// called with the node's bucket locked; returns who to wake after unlocking.
///
/// # Safety
///
/// - `node` was just unlinked from a queue whose lock the caller holds.
unsafe fn release_node(node: *const WaitNode, token: usize) -> Unparker {
    // SAFETY: the caller's promise: the node is alive (its owner waits for
    // `removed`) and only we touch it now.
    let node = unsafe { &*node };
    node.token.set(token);
    let unparker = node.unparker.take().expect("a queued node has an unparker");
    // Release: the owner reads `token` after seeing `removed` (Acquire); after
    // this store we never touch the node again.
    node.removed.store(true, Ordering::Release);
    unparker
}

/// Parks the caller on `key` if `validate()` (run with the bucket locked)
/// returns true. `before_sleep` runs after the bucket is unlocked, before
/// sleeping. When the waiter leaves the queue without being woken,
/// `timed_out(key, was_last)` runs with the bucket locked (to undo the
/// waiter's bookkeeping: clear a "has waiters" bit when the last waiter
/// leaves, forget the Mutex a Condvar waits with): on timeout, and when a
/// coroutine's runtime shuts down and unwinds it while it is parked, so a
/// primitive that is never timed still gets the call then.
///
/// Works from a coroutine (parks only it) and from an OS thread.
///
/// For primitives whose wakes carry nothing a waiter must pass on (a
/// Barrier's or WaitGroup's wake-all); others use [`park_passing_on`].
#[inline]
pub(crate) fn park(
    key: usize,
    validate: impl FnOnce() -> bool,
    before_sleep: impl FnOnce(),
    timed_out: impl FnOnce(usize, bool),
    deadline: Option<Deadline>,
) -> ParkResult {
    park_inner(key, DEFAULT_TOKEN, validate, before_sleep, timed_out, |_, _| {}, deadline, None)
}

/// [`park`], for a primitive whose wake may hand the waiter something: a
/// lock, a permit, or the duty to retry on behalf of the others. If the
/// waiting coroutine is unwound by its runtime's shutdown after a waker
/// already took it off the queue, but before it ran again, that would be
/// lost (a free lock with waiters nobody wakes, a permit gone): then
/// `abandoned(key, token)` runs, with the key it was woken on (a requeue may
/// have moved it) and the waker's token, and passes it on (unlocks, releases,
/// wakes another waiter). It runs with no bucket locked, on the unwinding
/// coroutine's worker thread.
#[inline]
pub(crate) fn park_passing_on(
    key: usize,
    validate: impl FnOnce() -> bool,
    before_sleep: impl FnOnce(),
    timed_out: impl FnOnce(usize, bool),
    abandoned: impl FnOnce(usize, usize),
    deadline: Option<Deadline>,
) -> ParkResult {
    park_inner(key, DEFAULT_TOKEN, validate, before_sleep, timed_out, abandoned, deadline, None)
}

/// [`park_passing_on`] for one park of a lock's wait (`wait`, see
/// [`FairWait`]), recording when that wait began, so that `unpark_one`
/// reports how long the waiter has waited (for a lock's eventual
/// fairness). A re-park of a wait that already queued keeps the wait's
/// start and goes to the front of the queue. Costs a clock read at the
/// wait's first park and one per wake, so only primitives that use
/// `UnparkResult::waited` call it.
#[inline]
pub(crate) fn park_fair(
    key: usize,
    wait: &mut FairWait,
    validate: impl FnOnce() -> bool,
    before_sleep: impl FnOnce(),
    timed_out: impl FnOnce(usize, bool),
    abandoned: impl FnOnce(usize, usize),
    deadline: Option<Deadline>,
) -> ParkResult {
    park_inner(key, DEFAULT_TOKEN, validate, before_sleep, timed_out, abandoned, deadline, Some(wait))
}

/// [`park_passing_on`], leaving `park_token` in the queue for wakers to
/// read: [`unpark_filter`] shows each waiter's token to its filter, which
/// decides from it whom to wake (a Semaphore waiter says how many permits
/// it waits for, and a release serves the queue's head only once its
/// permits cover that many).
#[inline]
pub(crate) fn park_with_token(
    key: usize,
    park_token: usize,
    validate: impl FnOnce() -> bool,
    before_sleep: impl FnOnce(),
    timed_out: impl FnOnce(usize, bool),
    abandoned: impl FnOnce(usize, usize),
    deadline: Option<Deadline>,
) -> ParkResult {
    park_inner(key, park_token, validate, before_sleep, timed_out, abandoned, deadline, None)
}

/// One wait of a lock (one `lock()` call), across the parks it takes: a
/// woken waiter that loses the race for the lock parks again, and that
/// re-park is the same wait (Go's `waitStartTime`). Owned by the waiter, on
/// its stack; [`park_fair`] stamps it when the wait's first park queues.
#[derive(Debug, Default)]
pub(crate) struct FairWait {
    /// When the wait's first park queued; `None` until then.
    started: Option<Stamp>,
}

impl FairWait {
    /// A wait that has not parked yet.
    pub(crate) fn new() -> FairWait {
        FairWait::default()
    }
}

// Inline (into `park`/`park_fair`, themselves inline: each instantiation has
// one caller, so this costs no code size): the coroutine's switch then sits
// one frame closer to the caller's loop, one mispredicted return fewer per
// park (see `weft::yield_now`); ~75 -> ~70 ns per Condvar hand-off.
#[inline]
#[allow(clippy::too_many_arguments)]
fn park_inner(
    key: usize,
    park_token: usize,
    validate: impl FnOnce() -> bool,
    before_sleep: impl FnOnce(),
    timed_out: impl FnOnce(usize, bool),
    abandoned: impl FnOnce(usize, usize),
    deadline: Option<Deadline>,
    fair: Option<&mut FairWait>,
) -> ParkResult {
    let unparker = Unparker::current();
    let kind = unparker.kind();
    // A fair wait's start: stamped now (outside the bucket lock) for its
    // first park, kept from the earlier park of the same wait otherwise; a
    // re-park goes to the front of the queue ("Fair hand-overs").
    let (parked_at, reparked) = match &fair {
        Some(wait) => (Some(wait.started.unwrap_or_else(stamp)), wait.started.is_some()),
        None => (None, false),
    };
    // Built under the bucket lock, once `validate` has agreed, with the
    // unparker in it from the start (no `Cell::set` dropping a `None`).
    let node: WaitNode;
    {
        let mut queue = lock(bucket_of(key));
        // (The loom negative control parks without validating: a wake that
        // came after the caller's last look strands it.)
        if !negative_control::broken("lot") && !validate() {
            return ParkResult::Invalid;
        }
        // The timer (a coroutine's deadline) goes in before the node is
        // queued: once it is, a waker may take the unparker at any moment.
        unparker.prepare_deadline(deadline);
        // The node gets our only handle: we park through `kind`.
        node = WaitNode {
            key: AtomicUsize::new(key),
            next: Cell::new(ptr::null()),
            unparker: Cell::new(Some(unparker)),
            token: Cell::new(DEFAULT_TOKEN),
            removed: AtomicBool::new(false),
            parked_at,
            park_token,
        };
        if reparked {
            queue.push_front(&node);
        } else {
            queue.push(&node);
        }
        // The wait began when it first queued (a park that `validate`
        // refused was no wait).
        if let Some(wait) = fair {
            wait.started = parked_at;
        }
    }
    // If this coroutine is unwound while parked (its runtime shuts down and
    // drops it), the node on its stack must leave the queue before the
    // stack goes away; the guard does that during the unwind. Every normal
    // return forgets it (the node is off the queue then), so the common
    // path pays nothing for it.
    let armed_timer = kind.arms_timer(deadline);
    let guard = DequeueOnUnwind { node: &node, left: Some(timed_out), abandoned: Some(abandoned), armed_timer };
    before_sleep();
    let mut expired = false;
    let result = loop {
        // Acquire: pairs with release_node's Release; the token is visible.
        if node.removed.load(Ordering::Acquire) {
            forget_guard(guard);
            break ParkResult::Unparked(node.token.get());
        }
        let timed_out_now = deadline.is_some_and(|d| expired || deadline_passed(d));
        if !timed_out_now {
            expired = !kind.park(deadline);
            continue;
        }
        let timed_out = forget_guard(guard).expect("the guard holds `timed_out` until it is forgotten");
        let mut queue = lock_node_bucket(&node);
        if node.removed.load(Ordering::Acquire) {
            break ParkResult::Unparked(node.token.get());
        }
        let key = node.key.load(Ordering::Relaxed);
        let removed = queue.detach_where(1, |n| ptr::eq(n, &node));
        debug_assert_eq!(removed.len, 1, "park: a waiter that was not woken is missing from its queue");
        node.unparker.take();
        let was_last = !queue.contains_key(key);
        timed_out(key, was_last);
        drop(queue);
        break ParkResult::TimedOut;
    };
    // The bucket is unlocked (the guard of the timed-out path dropped at
    // its `break`): cancel a coroutine's timer if it has not fired, so that
    // a wait woken early leaves nothing behind in its worker's timer heap.
    if armed_timer {
        super::disarm_timer();
    }
    // Every way out of the loop took the unparker out of the node (the
    // waker, or the timed-out path above): there is nothing left to drop,
    // and forgetting the node spares the check of an `Option` known to be
    // `None`.
    debug_assert!(node.unparker.take().is_none(), "park: a node left with its unparker");
    std::mem::forget(node);
    result
}

/// Whether a timed park should give up now. Under loom there is no clock:
/// only the parker decides (it may time out at any moment), which keeps the
/// models deterministic. Primitives whose wait loops check a deadline
/// between parks use this too, for the same reason.
pub(crate) fn deadline_passed(deadline: Deadline) -> bool {
    if cfg!(loom) { false } else { deadline.has_passed() }
}

/// Takes a parked node off its queue if it is still there when the waiter's
/// stack unwinds (see `park`), and tells the primitive (`left`, its
/// `timed_out`) as a timeout would: a Condvar whose state still named the
/// waiter's Mutex would otherwise later dereference that Mutex, gone with
/// the unwound stack. If a waker took the node first, what it handed over is
/// passed on (`abandoned`, see [`park_passing_on`]). Only ever dropped by an
/// unwind: every normal exit from `park` forgets it ([`forget_guard`]).
struct DequeueOnUnwind<'a, F: FnOnce(usize, bool), A: FnOnce(usize, usize)> {
    node: &'a WaitNode,
    left: Option<F>,
    abandoned: Option<A>,
    /// Whether the park armed a coroutine's timer, to end it as a normal
    /// exit would.
    armed_timer: bool,
}

/// Disarms `guard`, giving back the `timed_out` callback it held.
#[inline]
fn forget_guard<F: FnOnce(usize, bool), A: FnOnce(usize, usize)>(mut guard: DequeueOnUnwind<'_, F, A>) -> Option<F> {
    let left = guard.left.take();
    drop(guard.abandoned.take());
    std::mem::forget(guard);
    left
}

impl<F: FnOnce(usize, bool), A: FnOnce(usize, usize)> Drop for DequeueOnUnwind<'_, F, A> {
    #[cold]
    fn drop(&mut self) {
        // Under loom a detected deadlock unwinds every model thread after
        // loom has torn the execution down; touching a loom Mutex then would
        // panic inside this destructor and abort the test binary.
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        let mut queue = lock_node_bucket(self.node);
        if !self.node.removed.load(Ordering::Acquire) {
            queue.detach_where(1, |n| ptr::eq(n, self.node));
            self.node.unparker.take();
            // The key it is queued on now (a requeue may have moved it).
            let key = self.node.key.load(Ordering::Relaxed);
            let was_last = !queue.contains_key(key);
            if let Some(left) = self.left.take() {
                left(key, was_last);
            }
            drop(queue);
        } else {
            // A waker took it first: pass on what it handed us, with no
            // bucket locked (passing on may unpark someone). The Acquire
            // load of `removed` above made the waker's key and token visible.
            let (key, token) = (self.node.key.load(Ordering::Relaxed), self.node.token.get());
            drop(queue);
            if let Some(abandoned) = self.abandoned.take() {
                abandoned(key, token);
            }
        }
        // (At shutdown the worker has already dropped its timers: this
        // then finds none armed.)
        if self.armed_timer {
            super::disarm_timer();
        }
    }
}

/// Wakes the oldest waiter of `key`. `callback` runs with the bucket locked,
/// after the waiter was chosen (or none was), and returns the token to hand
/// over; it can update the primitive's state word knowing exactly who was
/// woken and whether others wait.
pub(crate) fn unpark_one(key: usize, callback: impl FnOnce(UnparkResult) -> usize) -> UnparkResult {
    unpark_one_inner(key, None, callback)
}

/// [`unpark_one`], also saying whether the woken waiter is due a hand-over
/// (`UnparkResult::be_fair`): it parked with `park_fair` and waited at least
/// `fair_after`, and the bucket made no fair hand-over in the last
/// `fair_after`. A `be_fair` result counts as this bucket's hand-over: the
/// caller must make it (module docs, "Fair hand-overs").
pub(crate) fn unpark_one_fair(
    key: usize,
    fair_after: Duration,
    callback: impl FnOnce(UnparkResult) -> usize,
) -> UnparkResult {
    unpark_one_inner(key, Some(fair_after), callback)
}

// Inline into its two callers: the call, its register saves and the
// 48-byte `UnparkResult` written out and read back were about 30 of a
// Mutex+Condvar hand-off's 380 instructions (callgrind,
// `WEFT_SYNC_COUNT=handoff`: 380 -> 348).
#[inline]
fn unpark_one_inner(
    key: usize,
    fair_after: Option<Duration>,
    callback: impl FnOnce(UnparkResult) -> usize,
) -> UnparkResult {
    let mut queue = lock(bucket_of(key));
    let taken = queue.remove_first(key);
    let mut result = UnparkResult { unparked: usize::from(taken.is_some()), ..UnparkResult::default() };
    if let Some(node) = taken {
        result.have_more = queue.contains_key(key);
        // Only a fair unpark reads how long the waiter waited (`unpark_one`
        // reports zero: nothing reads it, and the hand-off path of every
        // Condvar notify skips the test).
        if let Some(fair_after) = fair_after {
            // SAFETY: just unlinked, lock held.
            result.waited = unsafe { (*node).parked_at }.map_or(Duration::ZERO, waited_since);
            if result.waited >= fair_after {
                let now = now();
                if queue.next_fair.is_none_or(|next| now >= next) {
                    queue.next_fair = Some(after(now, fair_after));
                    result.be_fair = true;
                }
            }
        }
    }
    let token = callback(result);
    // SAFETY: just unlinked, lock held.
    let unparker = taken.map(|node| unsafe { release_node(node, token) });
    drop(queue);
    if let Some(unparker) = unparker {
        unparker.unpark();
    }
    result
}

/// Wakes every waiter of `key`, handing each `token`; returns how many.
pub(crate) fn unpark_all(key: usize, token: usize) -> usize {
    let mut queue = lock(bucket_of(key));
    let mut taken = queue.detach_where(usize::MAX, |n| n.key.load(Ordering::Relaxed) == key);
    let count = taken.len;
    // The first few wakes wait in an array on this stack; only a crowd
    // spills into a Vec.
    let mut first: [Option<Unparker>; 8] = Default::default();
    let mut rest = Vec::new();
    let mut index = 0;
    while let Some(node) = taken.pop_front() {
        // SAFETY: just unlinked, lock held; `pop_front` is done with it.
        let unparker = unsafe { release_node(node, token) };
        match first.get_mut(index) {
            Some(slot) => *slot = Some(unparker),
            None => rest.push(unparker),
        }
        index += 1;
    }
    drop(queue);
    first.into_iter().flatten().chain(rest).for_each(Unparker::unpark);
    count
}

/// What [`unpark_filter`]'s filter decides for one waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterOp {
    /// Wake it (it leaves the queue), and look at the next one.
    Unpark,
    /// Leave it and every later waiter queued.
    Stop,
}

/// Wakes waiters of `key` chosen by `filter`, which sees each one's park
/// token ([`park_with_token`]) in queue order, oldest first, with the
/// bucket locked. `callback` then runs, still locked, with how many were
/// chosen and whether others still wait, and returns the token every woken
/// waiter is handed (parking_lot's `unpark_filter`).
pub(crate) fn unpark_filter(
    key: usize,
    mut filter: impl FnMut(usize) -> FilterOp,
    callback: impl FnOnce(UnparkResult) -> usize,
) -> UnparkResult {
    let mut queue = lock(bucket_of(key));
    // The first waiter chosen apart from the rest: a release that serves
    // one waiter (the common case) allocates nothing.
    let mut first: Option<*const WaitNode> = None;
    let mut more = Vec::new();
    let mut prev: *const WaitNode = ptr::null();
    let mut current = queue.head;
    while !current.is_null() {
        // SAFETY: queued nodes are alive and guarded by the lock we hold.
        let node = unsafe { &*current };
        let next = node.next.get();
        if node.key.load(Ordering::Relaxed) == key {
            match filter(node.park_token) {
                FilterOp::Unpark => {
                    queue.unlink(prev, node);
                    if first.is_none() {
                        first = Some(current);
                    } else {
                        more.push(current);
                    }
                    current = next;
                    continue;
                }
                FilterOp::Stop => break,
            }
        }
        prev = current;
        current = next;
    }
    let unparked = usize::from(first.is_some()) + more.len();
    let result = UnparkResult { unparked, have_more: queue.contains_key(key), ..UnparkResult::default() };
    let token = callback(result);
    // SAFETY: each was just unlinked; lock held.
    let first = first.map(|node| unsafe { release_node(node, token) });
    // SAFETY: as above.
    let more: Vec<Unparker> = more.iter().map(|&node| unsafe { release_node(node, token) }).collect();
    drop(queue);
    if let Some(unparker) = first {
        unparker.unpark();
    }
    for unparker in more {
        unparker.unpark();
    }
    result
}

/// What [`unpark_requeue`]'s validation decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequeueOp {
    /// Do nothing.
    Abort,
    /// Wake one waiter of `from` and move the rest to `to`.
    UnparkOneRequeueRest,
    /// Move every waiter of `from` to `to`.
    RequeueAll,
}

/// Moves waiters of `from` to `to` (both buckets locked) after
/// `validate()` says what to do; `callback(op, result)` runs with both
/// locked and returns the token for the woken waiter. Used by Condvar to
/// move waiters onto the mutex instead of waking them all at once.
pub(crate) fn unpark_requeue(
    from: usize,
    to: usize,
    validate: impl FnOnce() -> RequeueOp,
    callback: impl FnOnce(RequeueOp, UnparkResult) -> usize,
) -> UnparkResult {
    let (mut from_queue, mut to_queue) = lock_two(from, to);
    let op = validate();
    if op == RequeueOp::Abort {
        return UnparkResult::default();
    }
    let mut moved = from_queue.detach_where(usize::MAX, |n| n.key.load(Ordering::Relaxed) == from);
    let woken = if op == RequeueOp::UnparkOneRequeueRest { moved.pop_front() } else { None };
    let mut result = UnparkResult {
        unparked: usize::from(woken.is_some()),
        have_more: moved.len != 0,
        requeued: moved.len,
        ..UnparkResult::default()
    };
    if let Some(node) = woken {
        // SAFETY: just unlinked, lock held.
        result.waited = unsafe { (*node).parked_at }.map_or(Duration::ZERO, waited_since);
    }
    while let Some(node) = moved.pop_front() {
        // SAFETY: unlinked from `from`, about to be linked into `to`; both
        // buckets are locked, so nobody else can see it in between.
        let node = unsafe { &*node };
        node.key.store(to, Ordering::Relaxed);
        match to_queue.as_mut() {
            Some(queue) => queue.push(node),
            None => from_queue.push(node),
        }
    }
    let token = callback(op, result);
    // SAFETY: unlinked, locks held.
    let unparker = woken.map(|node| unsafe { release_node(node, token) });
    drop(to_queue);
    drop(from_queue);
    if let Some(unparker) = unparker {
        unparker.unpark();
    }
    result
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The parking lot's races, explored by loom with OS-thread waiters (a
    //! timed park under loom may time out at any moment: see park::thread).
    use super::*;
    use crate::loom::thread;
    use loom::sync::Arc;

    /// A waker that publishes its flag and then unparks can never strand a
    /// waiter that validates the flag under the bucket lock.
    #[test]
    fn wake_before_or_after_park_is_never_lost() {
        loom::model(|| {
            let flag = Arc::new(AtomicBool::new(false));
            let key = Arc::as_ptr(&flag) as usize;
            let waker = {
                let flag = Arc::clone(&flag);
                thread::spawn(move || {
                    flag.store(true, Ordering::Release);
                    unpark_one(key, |_| DEFAULT_TOKEN)
                })
            };
            while !flag.load(Ordering::Acquire) {
                let result = park(key, || !flag.load(Ordering::Acquire), || {}, |_, _| {}, None);
                assert_ne!(result, ParkResult::TimedOut);
            }
            waker.join().unwrap();
        });
    }

    /// Negative control: a park that does not validate under the bucket
    /// lock sleeps through a wake that came after the waiter's last look,
    /// and loom must report the deadlock. std's `Arc`, not loom's: loom's
    /// would panic again when dropped while loom unwinds the deadlocked
    /// model.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_a_park_that_does_not_validate_loses_the_wake() {
        let _broken = crate::loom::negative_control::break_until_dropped("lot");
        loom::model(|| {
            let flag = std::sync::Arc::new(AtomicBool::new(false));
            let key = std::sync::Arc::as_ptr(&flag) as usize;
            let waker = {
                let flag = std::sync::Arc::clone(&flag);
                thread::spawn(move || {
                    flag.store(true, Ordering::Release);
                    unpark_one(key, |_| DEFAULT_TOKEN)
                })
            };
            while !flag.load(Ordering::Acquire) {
                park(key, || !flag.load(Ordering::Acquire), || {}, |_, _| {}, None);
            }
            waker.join().unwrap();
        });
    }

    /// A timeout racing a wake: exactly one side wins. If the waker took the
    /// waiter off the queue, the waiter reports Unparked with the waker's
    /// token; if the waiter timed out first, the waker found nobody.
    #[test]
    fn wake_racing_timeout_has_one_winner() {
        loom::model(|| {
            let word = Arc::new(AtomicUsize::new(0));
            let key = Arc::as_ptr(&word) as usize;
            let waker = {
                let word = Arc::clone(&word);
                thread::spawn(move || {
                    // Wait until the waiter is queued (or gave up), then wake.
                    while word.load(Ordering::Acquire) == 0 {
                        thread::yield_now();
                    }
                    unpark_one(key, |_| 7).unparked
                })
            };
            let result = park(key, || true, || word.store(1, Ordering::Release), |_, _| {}, Some(Deadline::now()));
            let woken = waker.join().unwrap();
            match result {
                ParkResult::Unparked(token) => {
                    assert_eq!(token, 7);
                    assert_eq!(woken, 1);
                }
                ParkResult::TimedOut => assert_eq!(woken, 0, "the waker woke a waiter that timed out"),
                ParkResult::Invalid => unreachable!("validate always allows parking"),
            }
        });
    }

    /// Two waiters, one `unpark_all`: both wake, neither is lost, and its
    /// count is exactly the number of parks it ended (it is the only waker).
    #[test]
    fn unpark_all_wakes_every_waiter() {
        loom::model(|| {
            let released = Arc::new(AtomicBool::new(false));
            let key = Arc::as_ptr(&released) as usize;
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let released = Arc::clone(&released);
                    thread::spawn(move || {
                        let mut unparked = 0;
                        while !released.load(Ordering::Acquire) {
                            let result = park(key, || !released.load(Ordering::Acquire), || {}, |_, _| {}, None);
                            if let ParkResult::Unparked(token) = result {
                                assert_eq!(token, DEFAULT_TOKEN);
                                unparked += 1;
                            }
                        }
                        unparked
                    })
                })
                .collect();
            released.store(true, Ordering::Release);
            let woken = unpark_all(key, DEFAULT_TOKEN);
            let unparked: usize = waiters.into_iter().map(|w| w.join().unwrap()).sum();
            assert_eq!(woken, unparked, "unpark_all's count is not the number of parks it ended");
        });
    }
}
