//! `Barrier`: `n` participants wait until all `n` have arrived, then all go
//! on together; the barrier then serves the next round (generation).
//!
//! # State word
//!
//! One `usize`, so arriving and opening are single CASes:
//!
//! ```text
//!  bits          field        meaning
//!  -----------   ----------   ---------------------------------------------
//!  high half     generation   how many times the barrier has opened (wraps)
//!  low half      arrived      participants of this generation that arrived
//!
//!  transition                          who
//!  ----------------------------------  --------------------------------------
//!  (g, a)   -> (g, a + 1)              an arrival that is not the last
//!  (g, n-1) -> (g + 1, 0)              the last arrival: the leader; it then
//!                                      wakes every waiter of the key
//!  (g, a)   -> (g, a - 1)              a waiter of generation g whose time
//!                                      ran out, or that is unwound while
//!                                      parked (a cancel, a shutdown),
//!                                      withdraws its arrival
//! ```
//!
//! # Timeouts
//!
//! A waiter whose deadline passes leaves the parking lot's queue (nothing of
//! the barrier's is kept under the bucket lock, so there is nothing to undo
//! there) and then withdraws its arrival with a CAS that requires the
//! generation to still be `g`. That CAS and the leader's are ordered on the
//! word: if the withdrawal comes first, the arrival that would have been
//! the last finds one arrival short and waits, so the barrier still opens
//! only for `n` participants, exactly as if the timed-out one had never
//! come; if the leader's comes first, the barrier opened and the waiter
//! returns as released (it never reports a timeout for a generation that
//! included it). A withdrawal never moves the generation, so the argument
//! below still holds.
//!
//! A waiter that arrived in generation `g` parks on the barrier's address,
//! validating (under the bucket lock) that the generation is still `g`.
//! The leader moves to `g + 1` *before* it takes the bucket lock to wake
//! them, so a waiter either validated first (it is queued, and woken) or
//! validates after (it sees `g + 1` and does not park): no lost wakeup.
//! Wakeups from the parking lot may be spurious, so a woken waiter re-reads
//! the generation and parks again if it has not moved.
//!
//! While a participant waits in generation `g`, the generation can move at
//! most once: `g + 1` cannot complete without that participant. So the
//! wrapping generation can never come back to `g` under a waiter, and the
//! high half is far more than needed. Waiters do not spin before parking: a
//! spinning coroutine holds its worker, which may be the very worker the
//! participants it waits for need.
//!
//! Orderings: every arrival CAS is AcqRel, so the leader's CAS (which reads
//! the chain of arrivals) acquires everything each participant wrote before
//! `wait`, and its Release publishes all of it to the waiters, whose Acquire
//! load of the new generation pairs with it.

use crate::loom::{AtomicUsize, Ordering};
use crate::park::lot::{self, DEFAULT_TOKEN, ParkResult};
use crate::sys::futex::Deadline;
use std::fmt;
use std::time::Duration;

/// Bits of the state word that count arrivals; the rest count generations.
const ARRIVED_BITS: u32 = usize::BITS / 2;
/// The arrival count's mask (and the most participants a barrier can have).
const ARRIVED_MASK: usize = (1 << ARRIVED_BITS) - 1;
/// One generation, in state-word units.
const ONE_GENERATION: usize = 1 << ARRIVED_BITS;

fn arrived(state: usize) -> usize {
    state & ARRIVED_MASK
}

fn generation(state: usize) -> usize {
    state >> ARRIVED_BITS
}

/// A reusable barrier for coroutines and OS threads, like
/// [`std::sync::Barrier`]: `wait` blocks until `n` participants have called
/// it, then releases them all together, and exactly one of them is told it
/// is the leader. The barrier then starts over for the next round.
///
/// A coroutine that waits parks (its worker runs other coroutines); an OS
/// thread blocks on a futex; both can take part in the same barrier.
///
/// ```
/// use std::sync::Arc;
/// use weft::sync::Barrier;
///
/// let barrier = Arc::new(Barrier::new(4));
/// let handles: Vec<_> = (0..4)
///     .map(|_| {
///         let barrier = Arc::clone(&barrier);
///         weft::spawn(move || barrier.wait().is_leader())
///     })
///     .collect();
/// let leaders = handles.into_iter().map(|h| h.join().unwrap()).filter(|&leader| leader).count();
/// assert_eq!(leaders, 1);
/// ```
pub struct Barrier {
    /// Generation and arrivals; see the module docs.
    state: AtomicUsize,
    /// Participants per generation (at least 1).
    n: usize,
}

/// What [`Barrier::wait`] returns: whether this participant is the leader
/// (exactly one per generation: the last to arrive).
///
/// ```
/// use weft::sync::{Barrier, BarrierWaitResult};
///
/// let result: BarrierWaitResult = Barrier::new(1).wait();
/// assert!(result.is_leader());
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BarrierWaitResult(bool);

impl BarrierWaitResult {
    /// `true` for exactly one participant of each generation.
    ///
    /// ```
    /// use weft::sync::Barrier;
    ///
    /// let barrier = Barrier::new(2);
    /// std::thread::scope(|s| {
    ///     let other = s.spawn(|| barrier.wait().is_leader());
    ///     let me = barrier.wait().is_leader();
    ///     assert_ne!(me, other.join().unwrap());
    /// });
    /// ```
    pub fn is_leader(&self) -> bool {
        self.0
    }
}

impl fmt::Debug for BarrierWaitResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierWaitResult").field("is_leader", &self.0).finish()
    }
}

impl Barrier {
    /// A barrier for `n` participants. As with std, `new(0)` behaves like
    /// `new(1)`: every `wait` returns at once, as the leader.
    ///
    /// # Panics
    ///
    /// If `n` exceeds 2³² − 1 (half the state word counts arrivals).
    ///
    /// ```
    /// use weft::sync::Barrier;
    ///
    /// static START: Barrier = Barrier::new(1);
    /// assert!(START.wait().is_leader(), "one participant: always the leader");
    /// assert!(Barrier::new(0).wait().is_leader(), "like new(1)");
    /// ```
    #[cfg(not(loom))]
    pub const fn new(n: usize) -> Barrier {
        assert!(n <= ARRIVED_MASK, "Barrier::new: more participants than the barrier can count (2^32 - 1)");
        Barrier { state: AtomicUsize::new(0), n: if n == 0 { 1 } else { n } }
    }

    /// A barrier for `n` participants (see the non-loom build's docs).
    #[cfg(loom)]
    pub fn new(n: usize) -> Barrier {
        assert!(n <= ARRIVED_MASK, "Barrier::new: more participants than the barrier can count (2^32 - 1)");
        Barrier { state: AtomicUsize::new(0), n: n.max(1) }
    }

    /// The parking-lot key of the barrier.
    fn key(&self) -> usize {
        &self.state as *const AtomicUsize as usize
    }

    /// Arrives and waits until all `n` participants of this generation have
    /// arrived. The last to arrive is the leader; it returns without
    /// waiting and releases the others.
    ///
    /// Everything a participant did before `wait` is visible to every
    /// participant after its `wait` returns.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use weft::sync::Barrier;
    ///
    /// // Two rounds of work; no one starts round 2 before all finished round 1.
    /// let barrier = Arc::new(Barrier::new(3));
    /// let done = Arc::new(AtomicUsize::new(0));
    /// std::thread::scope(|s| {
    ///     for _ in 0..3 {
    ///         s.spawn(|| {
    ///             done.fetch_add(1, Ordering::Relaxed);
    ///             barrier.wait();
    ///             assert_eq!(done.load(Ordering::Relaxed), 3);
    ///             barrier.wait();
    ///         });
    ///     }
    /// });
    /// ```
    pub fn wait(&self) -> BarrierWaitResult {
        let result = self.wait_deadline(None);
        result.expect("Barrier: an untimed wait gave up")
    }

    /// Like [`wait`](Self::wait), but gives up once `timeout` has passed
    /// (measured on `CLOCK_MONOTONIC`, never early): `None` then, and this
    /// participant's arrival is withdrawn, so the barrier still waits for
    /// `n` others, exactly as if this one had never come (it may call
    /// `wait` again, as a new arrival). `Some` if the barrier opened in
    /// time, possibly right at the deadline; a participant whose arrival
    /// opens the barrier is its leader and never times out.
    ///
    /// An `Option` rather than a `Result`: like
    /// [`Semaphore::acquire_timeout`](super::Semaphore::acquire_timeout),
    /// the only failure is the timeout, and there is nothing to hand back.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::{Duration, Instant};
    /// use weft::sync::Barrier;
    ///
    /// let barrier = Arc::new(Barrier::new(2));
    /// let start = Instant::now();
    /// // Nobody else comes: it times out and withdraws.
    /// assert!(barrier.wait_timeout(Duration::from_millis(10)).is_none());
    /// assert!(start.elapsed() >= Duration::from_millis(10));
    ///
    /// // The barrier still needs two participants.
    /// let b = Arc::clone(&barrier);
    /// let other = weft::spawn(move || b.wait().is_leader());
    /// let me = barrier.wait_timeout(Duration::from_secs(60)).expect("both came");
    /// assert!(me.is_leader() != other.join().unwrap(), "exactly one leader");
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Option<BarrierWaitResult> {
        self.wait_deadline(Some(Deadline::after(timeout)))
    }

    /// Arrives and waits for the generation to open, until `deadline`;
    /// `None` once its arrival was withdrawn.
    fn wait_deadline(&self, deadline: Option<Deadline>) -> Option<BarrierWaitResult> {
        if self.n == 1 {
            return Some(BarrierWaitResult(true));
        }
        // Relaxed: the CAS below is what orders; this only seeds it.
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            let last = arrived(state) + 1 == self.n;
            debug_assert!(arrived(state) < self.n, "Barrier: {} arrivals of {}", arrived(state), self.n);
            let next = if last { (state & !ARRIVED_MASK).wrapping_add(ONE_GENERATION) } else { state + 1 };
            // AcqRel: Release publishes what we did before `wait` along the
            // chain of arrivals; Acquire (the leader's) takes it all in.
            match self.state.compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) if last => {
                    self.release_waiters();
                    return Some(BarrierWaitResult(true));
                }
                Ok(_) => {
                    let opened = self.wait_for_generation_after(generation(state), deadline);
                    return opened.then_some(BarrierWaitResult(false));
                }
                Err(actual) => state = actual,
            }
        }
    }

    #[cold]
    fn release_waiters(&self) {
        lot::unpark_all(self.key(), DEFAULT_TOKEN);
    }

    /// Parks until the generation is no longer `arrived_in` (`true`), or
    /// until `deadline`: then withdraws our arrival and returns `false`,
    /// unless the barrier opened first (module docs, "Timeouts").
    #[cold]
    fn wait_for_generation_after(&self, arrived_in: usize, deadline: Option<Deadline>) -> bool {
        // A coroutine cancelled (or unwound at its runtime's shutdown) while
        // parked here leaves by unwinding out of `park`: it withdraws its
        // arrival then too, as a timed-out wait does, so the barrier still
        // waits for a full count. Every normal return disarms the guard.
        let guard = WithdrawOnUnwind { barrier: self, arrived_in };
        let released = self.wait_or_time_out(arrived_in, deadline);
        std::mem::forget(guard);
        released
    }

    /// The loop of [`wait_for_generation_after`](Self::wait_for_generation_after).
    fn wait_or_time_out(&self, arrived_in: usize, deadline: Option<Deadline>) -> bool {
        loop {
            crate::park::waiting_on(crate::park::ParkedOn::Barrier(self.key()));
            let result = lot::park(
                self.key(),
                || generation(self.state.load(Ordering::Relaxed)) == arrived_in,
                || {},
                // Nothing of ours is kept under the bucket lock: the
                // withdrawal below is a CAS on the word.
                |_, _| {},
                deadline,
            );
            // Acquire: pairs with the leader's Release CAS that opened the
            // barrier, so we see everything every participant did before.
            if generation(self.state.load(Ordering::Acquire)) != arrived_in {
                return true;
            }
            if result == ParkResult::TimedOut || deadline.is_some_and(lot::deadline_passed) {
                return !self.withdraw_arrival(arrived_in);
            }
        }
    }

    /// Takes back our arrival in generation `arrived_in`; `false` if the
    /// barrier opened first (we were released after all).
    fn withdraw_arrival(&self, arrived_in: usize) -> bool {
        // Acquire (here and on failure): if we find the barrier open, we
        // return as released and must see what the participants did, as
        // after the Acquire load in `wait_for_generation_after`.
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if generation(state) != arrived_in {
                return false;
            }
            debug_assert!(arrived(state) > 0, "Barrier: withdrawing from a generation nobody arrived in");
            // Relaxed on success: a withdrawal publishes nothing.
            match self.state.compare_exchange_weak(state, state - 1, Ordering::Relaxed, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }
}

/// Withdraws a parked participant's arrival if its wait unwinds (a cancel,
/// or its runtime's shutdown); see `wait_for_generation_after`.
struct WithdrawOnUnwind<'a> {
    barrier: &'a Barrier,
    arrived_in: usize,
}

impl Drop for WithdrawOnUnwind<'_> {
    #[cold]
    fn drop(&mut self) {
        // Under loom a detected deadlock unwinds every model thread after
        // loom has torn the execution down (as in the parking lot's guard).
        if cfg!(loom) && std::thread::panicking() {
            return;
        }
        // If the barrier opened first, this arrival counted and stays.
        self.barrier.withdraw_arrival(self.arrived_in);
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.load(Ordering::Relaxed);
        f.debug_struct("Barrier").field("n", &self.n).field("arrived", &arrived(state)).finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::runtime::Runtime;
    use std::sync::Arc;
    use std::sync::Mutex as StdMutex;
    use std::thread;

    const GENERATIONS: usize = 3;

    /// Each participant records, per generation, whether it led; the other
    /// participants' pre-barrier writes must be visible after `wait`.
    fn participant(barrier: &Barrier, n: usize, log: &StdMutex<Vec<usize>>, arrivals: &[AtomicUsize]) {
        for (generation, arrivals) in arrivals.iter().enumerate() {
            arrivals.fetch_add(1, Ordering::Relaxed);
            let result = barrier.wait();
            assert_eq!(arrivals.load(Ordering::Relaxed), n, "left generation {generation} before all arrived");
            if result.is_leader() {
                log.lock().unwrap().push(generation);
            }
        }
    }

    #[test]
    fn reuse_across_generations_mixed() {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let n = 8;
        let barrier = Arc::new(Barrier::new(n));
        let log = Arc::new(StdMutex::new(Vec::new()));
        let arrivals: Arc<Vec<AtomicUsize>> = Arc::new((0..GENERATIONS).map(|_| AtomicUsize::new(0)).collect());
        let mut threads = Vec::new();
        let mut coroutines = Vec::new();
        for i in 0..n {
            let (barrier, log, arrivals) = (Arc::clone(&barrier), Arc::clone(&log), Arc::clone(&arrivals));
            let body = move || participant(&barrier, n, &log, &arrivals);
            if i % 2 == 0 {
                threads.push(thread::spawn(body));
            } else {
                coroutines.push(rt.spawn(body));
            }
        }
        for t in threads {
            t.join().unwrap();
        }
        for c in coroutines {
            c.join().unwrap();
        }
        let mut leaders = log.lock().unwrap().clone();
        leaders.sort_unstable();
        assert_eq!(leaders, (0..GENERATIONS).collect::<Vec<_>>(), "not exactly one leader per generation");
        assert_eq!(arrived(barrier.state.load(Ordering::Relaxed)), 0);
        assert_eq!(generation(barrier.state.load(Ordering::Relaxed)), GENERATIONS);
    }

    /// Many coroutines on two workers, many rounds: nobody hangs.
    #[test]
    fn coroutines_many_rounds() {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let n = 64;
        let barrier = Arc::new(Barrier::new(n));
        let leaders = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (barrier, leaders) = (Arc::clone(&barrier), Arc::clone(&leaders));
                rt.spawn(move || {
                    for _ in 0..100 {
                        if barrier.wait().is_leader() {
                            leaders.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(leaders.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn zero_and_one_participants_always_lead() {
        for n in [0, 1] {
            let barrier = Barrier::new(n);
            for _ in 0..3 {
                assert!(barrier.wait().is_leader());
            }
        }
    }

    #[test]
    #[should_panic(expected = "more participants than the barrier can count")]
    fn too_many_participants_panics() {
        let _ = Barrier::new(usize::MAX);
    }

    #[test]
    fn debug_send_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Barrier>();
        send_sync::<BarrierWaitResult>();
        let barrier = Barrier::new(2);
        assert_eq!(format!("{barrier:?}"), "Barrier { n: 2, arrived: 0, .. }");
        assert_eq!(format!("{:?}", BarrierWaitResult(true)), "BarrierWaitResult { is_leader: true }");
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The barrier's open/park race under loom. Two generations with two
    //! participants, so a fast participant arriving in generation 2 races a
    //! slow one still leaving generation 1; three participants for one
    //! generation (three over two generations is 1.3 million interleavings
    //! at two preemptions: minutes, not seconds).
    use super::*;
    use crate::loom::{AtomicUsize, thread};
    use loom::sync::Arc;
    use std::time::Duration;

    fn model(n: usize, generations: usize) {
        loom::model(move || {
            let barrier = Arc::new(Barrier::new(n));
            let leaders = Arc::new((0..generations).map(|_| AtomicUsize::new(0)).collect::<Vec<_>>());
            let data = Arc::new(AtomicUsize::new(0));
            let body = {
                let (barrier, leaders, data) = (barrier.clone(), leaders.clone(), data.clone());
                move || {
                    for (generation, leader_count) in leaders.iter().enumerate() {
                        data.fetch_add(1, Ordering::Relaxed);
                        let result = barrier.wait();
                        // Everyone's increment of this generation happens
                        // before anyone leaves it.
                        assert!(data.load(Ordering::Relaxed) >= n * (generation + 1), "left a generation early");
                        if result.is_leader() {
                            leader_count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            };
            let others: Vec<_> = (1..n).map(|_| thread::spawn(body.clone())).collect();
            body();
            for t in others {
                t.join().unwrap();
            }
            for leader_count in leaders.iter() {
                assert_eq!(leader_count.load(Ordering::Relaxed), 1, "not exactly one leader per generation");
            }
        });
    }

    #[test]
    fn two_participants_two_generations() {
        model(2, 2);
    }

    #[test]
    fn three_participants_one_generation() {
        model(3, 1);
    }

    /// A timed participant that may give up at any moment (then it withdraws
    /// and arrives again, untimed) and an untimed one: the barrier opens
    /// once, for both, with exactly one leader, and after both have really
    /// arrived; the word ends at generation 1 with nobody arrived.
    #[test]
    fn timed_wait_withdraws_cleanly() {
        loom::model(|| {
            let barrier = Arc::new(Barrier::new(2));
            let data = Arc::new(AtomicUsize::new(0));
            let other = {
                let (barrier, data) = (barrier.clone(), data.clone());
                thread::spawn(move || {
                    data.fetch_add(1, Ordering::Relaxed);
                    let leader = barrier.wait().is_leader();
                    assert_eq!(data.load(Ordering::Relaxed), 2, "left before both arrived");
                    leader
                })
            };
            data.fetch_add(1, Ordering::Relaxed);
            let result = match barrier.wait_timeout(Duration::from_secs(3600)) {
                Some(result) => result,
                None => barrier.wait(),
            };
            assert_eq!(data.load(Ordering::Relaxed), 2, "left before both arrived");
            let leaders = usize::from(result.is_leader()) + usize::from(other.join().unwrap());
            assert_eq!(leaders, 1, "not exactly one leader");
            let state = barrier.state.load(Ordering::Relaxed);
            assert_eq!((generation(state), arrived(state)), (1, 0));
        });
    }

    /// Negative control: a barrier whose leader wakes the waiters *before*
    /// it opens the next generation loses a wakeup (a waiter validating
    /// between the two parks forever): loom must report the deadlock.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn negative_control_wake_before_open() {
        loom::model(|| {
            // std's Arc: loom's panics when dropped while loom unwinds the
            // deadlocked model, which aborts the test binary.
            let barrier = std::sync::Arc::new(Barrier::new(2));
            let other = {
                let barrier = barrier.clone();
                thread::spawn(move || broken_wait(&barrier))
            };
            broken_wait(&barrier);
            other.join().unwrap();
        });
    }

    /// `Barrier::wait` with the leader's two steps swapped.
    fn broken_wait(barrier: &Barrier) {
        let state = barrier.state.fetch_add(1, Ordering::AcqRel);
        if arrived(state) + 1 == barrier.n {
            barrier.release_waiters();
            barrier.state.store((state & !ARRIVED_MASK).wrapping_add(ONE_GENERATION), Ordering::Release);
        } else {
            barrier.wait_for_generation_after(generation(state), None);
        }
    }
}
