//! The timer flavours of a [`Receiver`](super::Receiver): [`after`](super::after),
//! [`at`](super::at) and [`tick`](super::tick) (and [`never`](super::never),
//! which needs no state at all).
//!
//! # Protocol
//!
//! A timer channel has no sender, no buffer and no wait queue: its one
//! message is *made* when a receiver takes it, from a schedule in one
//! atomic word. The word holds the next delivery as nanoseconds after the
//! timer's `start` (an `Instant`), or DONE once nothing is left to deliver:
//!
//! ```text
//!  flavour        start              word at creation   a receiver that takes it writes
//!  -------------  -----------------  -----------------  -----------------------------------
//!  at(when)       when               0                  DONE
//!  after(d)       now + d            0                  DONE
//!  tick(p)        now                p                  the first k x p after the receiver's
//!                                                       now (k whole): missed ticks are
//!                                                       dropped, deliveries stay on the grid
//!  (any)          instant overflow   DONE               -
//! ```
//!
//! Taking (`try_take`): load the word; DONE means never again; if
//! `start + word` is still ahead, the channel is empty until then;
//! otherwise compare-and-swap the word to its successor. The CAS is the
//! one decision between receivers: of all the receivers (clones, on any
//! threads, in selects or not) that saw the same due delivery, exactly one
//! takes it, and the others look again. The message is the instant the
//! delivery was due, `start + word` (as crossbeam-channel's timers send).
//!
//! Waiting: a receiver that found the channel empty sleeps until the due
//! instant (or for ever, after DONE: a timer channel is never
//! disconnected) with an ordinary waiter that nobody else wakes, then takes
//! again. A `Select` folds its timer cases' due instants into its own
//! deadline (`select.rs`), so a select over channels and timers sleeps once,
//! until whichever comes first.
//!
//! Giving back: a `Select` that took a delivery into a case whose
//! operation is then dropped unreceived puts it back, by a CAS from the
//! word it wrote to the word it found (`hand_back`): for `after` and `at`
//! nothing else can move DONE, so the one message is never lost; for a
//! tick, a later delivery taken meanwhile wins, and the given-back one is
//! dropped as a missed tick. A give-back wakes nobody: a receive that
//! started after it takes the message at once, but one already waiting
//! on the spent timer (a clone's, with no deadline of its own that ends
//! sooner) goes on waiting. Waking those would take a wait queue per
//! timer, for an edge that only a dropped `SelectedOperation` makes
//! (crossbeam-channel panics there instead); the public docs say so.
//!
//! Orderings: the word is the whole shared state (the message is computed
//! from it, nothing is published through it), so every access is Relaxed;
//! the CAS's atomicity alone gives "exactly one taker".

use crate::loom::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Nothing left to deliver.
const DONE: u64 = u64::MAX;

/// The shared schedule of a timer channel (its clones share one).
pub(super) struct Timer {
    start: Instant,
    /// Nanoseconds between deliveries; 0 for a one-shot (`after`, `at`).
    period: u64,
    /// The next delivery, in nanoseconds after `start`, or DONE.
    next: AtomicU64,
}

/// A delivery taken by [`Timer::try_take`]: the message, and what to give
/// back if it goes unreceived.
#[derive(Clone, Copy, Debug)]
pub(super) struct Taken {
    /// When it was due (the message).
    pub(super) due: Instant,
    /// The word before the take, and the word it wrote.
    from: u64,
    to: u64,
}

impl Timer {
    /// One delivery at `when`.
    pub(super) fn once(when: Instant) -> Timer {
        Timer { start: when, period: 0, next: AtomicU64::new(0) }
    }

    /// One delivery `delay` from now (never, if that instant cannot be
    /// represented).
    pub(super) fn once_after(delay: Duration) -> Timer {
        match Instant::now().checked_add(delay) {
            Some(when) => Timer::once(when),
            None => Timer { start: Instant::now(), period: 0, next: AtomicU64::new(DONE) },
        }
    }

    /// A delivery every `period`, the first `period` from now.
    ///
    /// # Panics
    ///
    /// If `period` is zero (at the caller of [`tick`](super::tick)).
    #[track_caller]
    pub(super) fn every(period: Duration) -> Timer {
        assert!(
            !period.is_zero(),
            "weft::sync::channel::tick: the period is zero; a ticker needs a period greater than zero \
             (for a message at once, use `after(Duration::ZERO)`)"
        );
        // A period beyond u64 nanoseconds (584 years) never comes.
        let period = u64::try_from(period.as_nanos()).unwrap_or(DONE);
        Timer { start: Instant::now(), period, next: AtomicU64::new(period) }
    }

    /// The instant `nanos` after `start`; `None` if it cannot be
    /// represented (so it never comes).
    fn instant(&self, nanos: u64) -> Option<Instant> {
        if nanos == DONE { None } else { self.start.checked_add(Duration::from_nanos(nanos)) }
    }

    /// When the next delivery is due; `None` if there will be none.
    pub(super) fn due(&self) -> Option<Instant> {
        self.instant(self.next.load(Ordering::Relaxed))
    }

    /// Takes the delivery that is due, if one is; `Err(due)` otherwise,
    /// with when the next one will be (`None`: never).
    pub(super) fn try_take(&self) -> Result<Taken, Option<Instant>> {
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            let Some(due) = self.instant(next) else {
                return Err(None);
            };
            let now = Instant::now();
            if now < due {
                return Err(Some(due));
            }
            let following = self.following(now);
            match self.next.compare_exchange(next, following, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(Taken { due, from: next, to: following }),
                // Another receiver took it (or gave one back): look again.
                Err(actual) => next = actual,
            }
        }
    }

    /// The word after a delivery taken at `now`: DONE for a one-shot; for
    /// a ticker, the first whole multiple of the period after `now`.
    fn following(&self, now: Instant) -> u64 {
        if self.period == 0 || self.period == DONE {
            return DONE;
        }
        let elapsed = u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(DONE);
        (elapsed / self.period).checked_add(1).and_then(|k| k.checked_mul(self.period)).unwrap_or(DONE)
    }

    /// Puts back a delivery that was taken but not received, unless a
    /// later one was taken since (module docs, "Giving back").
    pub(super) fn hand_back(&self, taken: Taken) {
        let _ = self.next.compare_exchange(taken.to, taken.from, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// How many messages wait: 1 if a delivery is due now, else 0.
    pub(super) fn len(&self) -> usize {
        usize::from(self.due().is_some_and(|due| Instant::now() >= due))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_one_shot_delivers_once_at_its_instant() {
        // Far enough ahead that a descheduled test thread still looks
        // before it is due.
        let when = Instant::now() + Duration::from_millis(300);
        let timer = Timer::once(when);
        assert_eq!(timer.try_take().unwrap_err(), Some(when));
        assert_eq!(timer.len(), 0);
        std::thread::sleep(Duration::from_millis(310));
        assert_eq!(timer.len(), 1);
        let taken = timer.try_take().unwrap();
        assert_eq!(taken.due, when);
        assert_eq!(timer.try_take().unwrap_err(), None);
        timer.hand_back(taken);
        assert_eq!(timer.try_take().unwrap().due, when, "a given-back delivery comes again");
    }

    #[test]
    fn a_ticker_stays_on_its_grid_and_drops_missed_ticks() {
        let period = Duration::from_millis(10);
        let timer = Timer::every(period);
        let start = timer.start;
        std::thread::sleep(Duration::from_millis(35));
        // Three ticks were missed; the oldest due one is delivered, and the
        // next is the first grid point after the take.
        let first = timer.try_take().unwrap();
        assert_eq!(first.due, start + period);
        let next = timer.due().unwrap();
        assert!(next > Instant::now() - period, "next {next:?} is a missed tick");
        assert_eq!((next - start).as_nanos() % period.as_nanos(), 0, "off the grid");
        // A delivery given back after a later one was taken is dropped.
        std::thread::sleep(next.saturating_duration_since(Instant::now()) + Duration::from_millis(1));
        let second = timer.try_take().unwrap();
        assert_eq!(second.due, next);
        timer.hand_back(first);
        assert!(timer.due().unwrap() > next);
    }

    #[test]
    fn instants_past_the_clock_never_come() {
        let never = Timer::once_after(Duration::MAX);
        assert_eq!(never.try_take().unwrap_err(), None);
        let slow = Timer::every(Duration::MAX);
        assert_eq!(slow.try_take().unwrap_err(), None);
        assert_eq!(slow.len(), 0);
    }

    #[test]
    #[should_panic(expected = "the period is zero")]
    fn a_zero_period_is_refused() {
        Timer::every(Duration::ZERO);
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! Receivers racing for one delivery.
    use super::*;
    use crate::loom::thread;
    use std::sync::Arc;

    /// Three receivers take a due one-shot at once, one of them giving it
    /// back: it is taken exactly once more than it is given back.
    #[test]
    fn a_due_delivery_is_taken_exactly_once() {
        loom::model(|| {
            let timer = Arc::new(Timer::once(Instant::now()));
            let takers: Vec<_> = (0..2)
                .map(|_| {
                    let timer = Arc::clone(&timer);
                    thread::spawn(move || timer.try_take().is_ok())
                })
                .collect();
            let mine = timer.try_take();
            if let Ok(taken) = mine {
                timer.hand_back(taken);
            }
            let taken: usize = takers.into_iter().map(|t| usize::from(t.join().unwrap())).sum();
            let left = usize::from(timer.try_take().is_ok());
            assert_eq!(taken + left, 1, "one delivery, taken {taken} times by others, {left} left");
        });
    }
}
