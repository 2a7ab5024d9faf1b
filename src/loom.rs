//! The only module that names atomics, `UnsafeCell` and threads.
//!
//! Under `--cfg loom` the protocol types come from [loom] so its model
//! checker can explore every interleaving; otherwise they are std's. Code
//! that loom does not model (process-wide counters, the futex word handed to
//! the kernel) uses [`process`], which is std in both builds.
//!
//! [loom]: https://docs.rs/loom

#[cfg(loom)]
pub(crate) use loom::{
    cell::UnsafeCell,
    sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    sync::{Condvar, Mutex, MutexGuard},
    thread,
};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Std's atomics and `UnsafeCell` in every build: for process-wide statics
/// (which loom cannot construct in a `static`), for words the kernel reads
/// (futex), for the runtime's scheduler, which loom does not model (its
/// parking protocol, `park::ParkState`, is modelled on its own), and the
/// compiler fence that orders stores against a signal handler of the same
/// thread (`stack::overflow`).
pub(crate) mod process {
    pub(crate) use std::cell::UnsafeCell;
    pub(crate) use std::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, compiler_fence, fence,
    };
}

/// The switch of the loom models' negative controls: a protocol consults
/// [`broken`](negative_control::broken) with its own name at the one step
/// its control breaks (the Mutex's wake on unlock, the Semaphore's
/// hand-over to queued waiters, the WaitGroup's wake of its waiters, the
/// RwLock's pass-on at a write unlock, the parking lot's validation, the
/// SpinLock's Acquire, the channel waiter's re-validation and its giving
/// up under the channel's lock, the join state's swap to DONE and its
/// joiner's registration), and a control model turns it on for that
/// name around its `loom::model` to show that loom finds the lost wakeup
/// (or the race). One name at a time, so that a control of a lock breaks
/// the lock and not the parking lot under it. Loom runs a
/// model's threads on the test's own OS thread, so the thread-local reaches
/// all of them, and no other test. Outside loom, `broken` is a constant
/// `false`.
#[cfg(loom)]
pub(crate) mod negative_control {
    use std::cell::Cell;

    std::thread_local! {
        static BROKEN: Cell<Option<&'static str>> = const { Cell::new(None) };
    }

    /// Whether this test breaks the protocol called `what` on purpose.
    pub(crate) fn broken(what: &'static str) -> bool {
        BROKEN.with(Cell::get) == Some(what)
    }

    /// Breaks the protocol called `what` until the result is dropped.
    #[cfg(test)]
    pub(crate) fn break_until_dropped(what: &'static str) -> impl Drop {
        struct Restore;
        impl Drop for Restore {
            fn drop(&mut self) {
                BROKEN.with(|broken| broken.set(None));
            }
        }
        BROKEN.with(|broken| broken.set(Some(what)));
        Restore
    }
}

#[cfg(not(loom))]
pub(crate) mod negative_control {
    #[inline(always)]
    pub(crate) fn broken(_what: &'static str) -> bool {
        false
    }
}

/// `UnsafeCell` with loom's closure API (`with`, `with_mut`) in both builds,
/// so protocol code is written once.
#[cfg(not(loom))]
#[derive(Debug, Default)]
pub(crate) struct UnsafeCell<T: ?Sized>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    pub(crate) fn into_inner(self) -> T {
        self.0.into_inner()
    }
}

#[cfg(not(loom))]
impl<T: ?Sized> UnsafeCell<T> {
    /// Calls `f` with a shared raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a mutable raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
