//! The timer flavours of a [`Receiver`](super::Receiver): [`after`](super::after),
//! [`at`](super::at) and [`tick`](super::tick) (and [`never`](super::never),
//! which needs no state at all).
//!
//! # Protocol
//!
//! A timer channel has no sender and no buffer: its one message is *made*
//! when a receiver takes it, from a schedule in one atomic word. The word
//! holds the next delivery as nanoseconds after the timer's `start` (an
//! `Instant`), or DONE once nothing is left to deliver:
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
//! instant with an ordinary waiter that nobody else wakes, then takes
//! again. A `Select` folds its timer cases' due instants into its own
//! deadline (`select.rs`), so a select over channels and timers sleeps once,
//! until whichever comes first. After DONE a one-shot's receiver waits on
//! its back channel (below), a ticker's for ever (its next tick is past
//! the clock's end); a timer channel is never disconnected.
//!
//! Giving back: a `Select` that took a delivery into a case whose
//! operation is then dropped unreceived gives it back.
//!
//! - A one-shot's (`after`, `at`) goes into the timer's *back channel*, a
//!   rendezvous [`Chan`] of its own that never disconnects; its word stays
//!   DONE. A receiver that finds the word DONE receives from the back
//!   channel instead: a plain receive waits there as on any channel, a
//!   select registers its case there. So a given-back message reaches a
//!   receiver that was already waiting on the spent timer (handed to it
//!   directly and woken, as a channel's give-back is), or waits for the
//!   next receive; the one message is never lost nor received twice.
//! - A ticker's goes back into the word, by a CAS from the word its take
//!   wrote to the word it found (`hand_back`): unless a later tick was
//!   taken meanwhile, which wins (the given-back one is then dropped, as a
//!   missed tick). Receivers already waiting sleep until the tick they
//!   saw next and get the given-back one then: up to a period late, never
//!   lost while no later tick was taken.
//!
//! Orderings: the word is the whole shared state (the message is computed
//! from it, nothing is published through it), so every access is Relaxed;
//! the CAS's atomicity alone gives "exactly one taker".

use super::chan::{Buffer, Chan};
use crate::loom::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Nothing left to deliver.
const DONE: u64 = u64::MAX;

/// The shared schedule of a timer channel (its clones share one).
///
/// Not generic: a `Receiver<T>`'s code instantiates nothing of a
/// `Chan<T>` for it (a back channel of `T` made every `Receiver<u64>`'s
/// `recv` call `Chan<u64>`'s receive from a second place, and the compiler
/// stopped inlining its buffer's pop: 20 instructions more per rendezvous
/// hand-off). The receiver makes its message from the `Instant`.
pub(super) struct Timer {
    start: Instant,
    /// Nanoseconds between deliveries; 0 for a one-shot (`after`, `at`).
    period: u64,
    /// The next delivery, in nanoseconds after `start`, or DONE.
    next: AtomicU64,
    /// A one-shot's back channel (module docs, "Giving back"); `None` for
    /// a ticker. It is made with a sender and a receiver counted, which
    /// are never released: it never disconnects.
    back: Option<Chan<Instant>>,
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
        Timer::one_shot(when, 0)
    }

    /// One delivery `delay` from now (never, if that instant cannot be
    /// represented).
    pub(super) fn once_after(delay: Duration) -> Timer {
        match Instant::now().checked_add(delay) {
            Some(when) => Timer::once(when),
            None => Timer::one_shot(Instant::now(), DONE),
        }
    }

    fn one_shot(start: Instant, next: u64) -> Timer {
        let back = Some(Chan::new(Buffer::Zero));
        Timer { start, period: 0, next: AtomicU64::new(next), back }
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
        Timer { start: Instant::now(), period, next: AtomicU64::new(period), back: None }
    }

    /// A one-shot's back channel, where a taken delivery goes when it is
    /// given back; `None` for a ticker.
    pub(super) fn back(&self) -> Option<&Chan<Instant>> {
        self.back.as_ref()
    }

    /// The instant `nanos` after `start`; `None` if it cannot be
    /// represented (so it never comes).
    fn instant(&self, nanos: u64) -> Option<Instant> {
        if nanos == DONE { None } else { self.start.checked_add(Duration::from_nanos(nanos)) }
    }

    /// A receive that does not wait: the due delivery's instant, or a
    /// given-back one (a one-shot's back channel); otherwise `Err` with
    /// when the next delivery is due (`None`: none will come through the
    /// schedule any more).
    pub(super) fn try_recv(&self) -> Result<Instant, Option<Instant>> {
        match self.try_take() {
            Ok(taken) => Ok(taken.due),
            Err(Some(due)) => Err(Some(due)),
            Err(None) => match self.back.as_ref().map(Chan::try_recv) {
                Some(Ok(message)) => Ok(message),
                _ => Err(None),
            },
        }
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

    /// Puts back a ticker's delivery that was taken but not received,
    /// unless a later one was taken since (module docs, "Giving back"). A
    /// one-shot's goes to its [`back`](Self::back) channel instead.
    pub(super) fn hand_back(&self, taken: Taken) {
        debug_assert!(self.back.is_none(), "a one-shot's delivery goes back through its back channel");
        let _ = self.next.compare_exchange(taken.to, taken.from, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// How many messages wait: 1 if a delivery is due now or one was given
    /// back, else 0.
    pub(super) fn len(&self) -> usize {
        let due = self.due().is_some_and(|due| Instant::now() >= due);
        usize::from(due) + self.back.as_ref().map_or(0, |back| back.len())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::loom::UnsafeCell;

    /// What a dropped selected operation does with a one-shot's message.
    fn give_back(timer: &Timer, taken: Taken) {
        timer.back().expect("a one-shot").hand_back(&UnsafeCell::new(Some(taken.due)));
    }

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
        assert_eq!(timer.try_recv(), Err(None));
        give_back(&timer, taken);
        assert_eq!(timer.len(), 1);
        assert_eq!(timer.try_take().unwrap_err(), None, "the schedule stays spent");
        assert_eq!(timer.try_recv(), Ok(when), "a given-back delivery comes again");
        assert_eq!(timer.try_recv(), Err(None));
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
    use crate::loom::{UnsafeCell, thread};
    use std::sync::Arc;

    /// Three receivers take a due one-shot at once, one of them giving it
    /// back (through the back channel): it is taken exactly once more than
    /// it is given back.
    #[test]
    fn a_due_delivery_is_taken_exactly_once() {
        loom::model(|| {
            let timer = Arc::new(Timer::once(Instant::now()));
            let takers: Vec<_> = (0..2)
                .map(|_| {
                    let timer = Arc::clone(&timer);
                    thread::spawn(move || timer.try_recv().is_ok())
                })
                .collect();
            if let Ok(taken) = timer.try_take() {
                timer.back().unwrap().hand_back(&UnsafeCell::new(Some(taken.due)));
            }
            let taken: usize = takers.into_iter().map(|t| usize::from(t.join().unwrap())).sum();
            let left = usize::from(timer.try_recv().is_ok());
            assert_eq!(taken + left, 1, "one delivery, taken {taken} times by others, {left} left");
        });
    }
}
