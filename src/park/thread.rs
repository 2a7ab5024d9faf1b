//! The waiter of a plain OS thread: a token parker on a futex word, one per
//! thread, with the same three states as a coroutine's `ParkState` (see the
//! module docs of `park`), but atomic: any thread may wake it, so every
//! transition is a read-modify-write on the word. Plus deadlines.
//!
//! Under `cfg(loom)` it is built on loom's `Mutex` and `Condvar` instead of
//! the futex, so loom explores the primitives' protocols with real blocking,
//! and a deadline means "may give up at any point" (loom has no clock).

use std::sync::Arc;

#[cfg(loom)]
use crate::sys::futex::Deadline;
#[cfg(not(loom))]
use crate::sys::futex::{self, Deadline};

/// One thread's parker.
#[derive(Debug)]
pub(crate) struct ThreadParker {
    #[cfg(not(loom))]
    state: crate::loom::process::AtomicU32,
    #[cfg(loom)]
    notified: crate::loom::Mutex<bool>,
    #[cfg(loom)]
    condvar: crate::loom::Condvar,
}

#[cfg(not(loom))]
const EMPTY: u32 = 0;
#[cfg(not(loom))]
const NOTIFIED: u32 = 1;
#[cfg(not(loom))]
const PARKED: u32 = 2;

#[cfg(not(loom))]
impl ThreadParker {
    fn new() -> ThreadParker {
        ThreadParker { state: crate::loom::process::AtomicU32::new(EMPTY) }
    }

    /// Blocks until [`unpark`](Self::unpark) or the deadline; returns `false`
    /// only if the deadline passed without a token. May return spuriously.
    pub(crate) fn park(&self, deadline: Option<Deadline>) -> bool {
        use crate::loom::process::Ordering;
        // Acquire on taking a token: pairs with unpark's Release.
        if self.state.compare_exchange(NOTIFIED, EMPTY, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return true;
        }
        if self.state.compare_exchange(EMPTY, PARKED, Ordering::Relaxed, Ordering::Acquire).is_err() {
            self.state.store(EMPTY, Ordering::Relaxed); // a token arrived meanwhile
            return true;
        }
        loop {
            let woke = futex::wait(&self.state, PARKED, deadline);
            if self.state.compare_exchange(NOTIFIED, EMPTY, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return true;
            }
            if !woke || deadline.is_some_and(|d| d.has_passed()) {
                // Give up, unless a token lands right now.
                return self.state.swap(EMPTY, Ordering::Acquire) == NOTIFIED;
            }
        }
    }

    /// Leaves a token and wakes the thread if it is parked.
    pub(crate) fn unpark(&self) {
        use crate::loom::process::Ordering;
        // Release: publishes the unparker's writes to the parked thread.
        if self.state.swap(NOTIFIED, Ordering::Release) == PARKED {
            futex::wake(&self.state, 1);
        }
    }
}

#[cfg(loom)]
impl ThreadParker {
    fn new() -> ThreadParker {
        ThreadParker { notified: crate::loom::Mutex::new(false), condvar: crate::loom::Condvar::new() }
    }

    pub(crate) fn park(&self, deadline: Option<Deadline>) -> bool {
        let mut notified = self.notified.lock().unwrap();
        if deadline.is_some() {
            // No clock under loom: a timed park may time out at any moment,
            // which is exactly the race loom should explore.
            if !*notified {
                drop(notified);
                crate::loom::thread::yield_now();
                notified = self.notified.lock().unwrap();
            }
            let had = *notified;
            *notified = false;
            return had;
        }
        while !*notified {
            notified = self.condvar.wait(notified).unwrap();
        }
        *notified = false;
        true
    }

    pub(crate) fn unpark(&self) {
        *self.notified.lock().unwrap() = true;
        self.condvar.notify_one();
    }
}

#[cfg(not(loom))]
std::thread_local! {
    static PARKER: Arc<ThreadParker> = Arc::new(ThreadParker::new());
}
#[cfg(loom)]
loom::thread_local! {
    static PARKER: Arc<ThreadParker> = Arc::new(ThreadParker::new());
}

/// The calling thread's parker.
pub(crate) fn current() -> Arc<ThreadParker> {
    PARKER.with(Arc::clone)
}

/// Parks the calling thread on its own parker; see [`ThreadParker::park`].
pub(crate) fn park_current(deadline: Option<Deadline>) -> bool {
    PARKER.with(|parker| parker.park(deadline))
}
