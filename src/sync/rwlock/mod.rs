//! `RwLock<T>` and its guards: a phase-fair reader-writer lock for
//! coroutines and OS threads alike (they can wait on the same lock), with
//! parking_lot's timed locks, upgradable reads, downgrades and mapped
//! guards.
//!
//! The protocol (the state word, its table, who wakes whom, upgrades,
//! downgrades and timeouts) is in `raw.rs`; this file holds the data and
//! the guards, which own a lock of `RawRwLock` and give it back on drop.
//!
//! The read guards hold a pointer to the data and the raw lock, not
//! `&RwLock<T>`, so that they are covariant in `T` as std's are (an
//! `UnsafeCell<T>` behind a reference would make them invariant).

mod raw;

use self::raw::RawRwLock;
use crate::loom::UnsafeCell;
use crate::sys::futex::Deadline;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

/// A reader-writer lock for coroutines and OS threads, like
/// [`std::sync::RwLock`] but without poisoning, and phase-fair: neither
/// readers nor writers starve.
///
/// Once a writer waits, new readers queue behind it; when the writer
/// leaves, the readers that were waiting go in together, before the next
/// writer. A waiting coroutine parks (its worker runs others); a waiting OS
/// thread blocks on a futex. Both can wait on the same lock.
///
/// Besides std's API it has parking_lot's: timed locks (`try_read_for`,
/// `try_write_until`, ...), guards mapped to a part of the data
/// ([`RwLockReadGuard::map`]), [`RwLockWriteGuard::downgrade`], and
/// upgradable reads ([`upgradable_read`](Self::upgradable_read)).
///
/// ```
/// use std::sync::Arc;
/// use weft::sync::RwLock;
///
/// let config = Arc::new(RwLock::new(vec![1, 2, 3]));
/// let readers: Vec<_> = (0..4)
///     .map(|_| {
///         let config = Arc::clone(&config);
///         weft::spawn(move || config.read().iter().sum::<i32>())
///     })
///     .collect();
/// config.write().push(4);
/// for r in readers {
///     let sum = r.join().unwrap();
///     assert!(sum == 6 || sum == 10);
/// }
/// assert_eq!(*config.read(), [1, 2, 3, 4]);
/// ```
pub struct RwLock<T: ?Sized> {
    raw: RawRwLock,
    data: UnsafeCell<T>,
}

// SAFETY: a write lock hands `data` to one owner at a time (T: Send moves it
// between threads); read locks share `&T` among threads (T: Sync).
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}

impl<T> RwLock<T> {
    /// A new, unlocked reader-writer lock.
    ///
    /// ```
    /// use weft::sync::RwLock;
    ///
    /// static SETTINGS: RwLock<Vec<&str>> = RwLock::new(Vec::new());
    /// SETTINGS.write().push("verbose");
    /// assert_eq!(*SETTINGS.read(), ["verbose"]);
    /// ```
    #[cfg(not(loom))]
    pub const fn new(value: T) -> RwLock<T> {
        RwLock { raw: RawRwLock::new(), data: UnsafeCell::new(value) }
    }

    /// A new, unlocked reader-writer lock.
    #[cfg(loom)]
    pub fn new(value: T) -> RwLock<T> {
        RwLock { raw: RawRwLock::new(), data: UnsafeCell::new(value) }
    }

    /// Consumes the lock and returns its value.
    ///
    /// ```
    /// use weft::sync::RwLock;
    ///
    /// let lock = RwLock::new(5);
    /// *lock.write() += 1;
    /// assert_eq!(lock.into_inner(), 6);
    /// ```
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// A pointer to the data, for a read guard (which holds a pointer
    /// rather than `&RwLock<T>`, so that it is covariant in `T`). Under
    /// loom the read is recorded here, when the lock has just been taken.
    fn data_ptr(&self) -> NonNull<T> {
        self.data.with(|p| NonNull::new(p.cast_mut()).expect("an UnsafeCell's pointer is never null"))
    }

    /// A read guard for a read lock the caller has just taken.
    fn read_guard(&self) -> RwLockReadGuard<'_, T> {
        RwLockReadGuard { data: self.data_ptr(), raw: &self.raw, _marker: PhantomData }
    }

    fn write_guard(&self) -> RwLockWriteGuard<'_, T> {
        RwLockWriteGuard { lock: self, _not_send: PhantomData }
    }

    /// Locks for reading, waiting (parking the coroutine, or blocking the
    /// thread) while a writer holds the lock or waits for it.
    ///
    /// Taking a second read lock while already holding one can deadlock:
    /// if a writer started waiting in between, the second read queues
    /// behind that writer, which waits for the first read lock to go.
    ///
    /// # Panics
    ///
    /// If more than 2^27 read locks would be held at once.
    ///
    /// ```
    /// use weft::sync::RwLock;
    ///
    /// let lock = RwLock::new(1);
    /// let r1 = lock.read();
    /// let r2 = lock.read(); // readers share the lock
    /// assert_eq!(*r1 + *r2, 2);
    /// ```
    #[inline]
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.raw.read();
        self.read_guard()
    }

    /// Locks for reading if that is possible right now: not write-locked
    /// and no writer waiting (it does not barge past a waiting writer).
    ///
    /// ```
    /// use weft::sync::RwLock;
    ///
    /// let lock = RwLock::new(1);
    /// assert!(lock.try_read().is_some());
    /// let writer = lock.write();
    /// assert!(lock.try_read().is_none());
    /// drop(writer);
    /// ```
    #[inline]
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        // `then`, not `then_some`: an eagerly built guard would be dropped
        // on failure, unlocking a lock we do not hold.
        self.raw.try_read().then(|| self.read_guard())
    }

    /// Locks for reading, waiting at most `timeout`; `None` if it did not
    /// get the lock in time. The time is measured on `CLOCK_MONOTONIC` and
    /// `None` never comes before `timeout` has passed; a reader that gives
    /// up leaves the lock as if it had never waited.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::RwLock;
    ///
    /// let lock = RwLock::new(0);
    /// let writer = lock.write();
    /// let start = Instant::now();
    /// assert!(lock.try_read_for(Duration::from_millis(10)).is_none());
    /// assert!(start.elapsed() >= Duration::from_millis(10));
    /// drop(writer);
    /// assert!(lock.try_read_for(Duration::from_millis(10)).is_some());
    /// ```
    ///
    /// # Panics
    ///
    /// As [`read`](Self::read).
    pub fn try_read_for(&self, timeout: Duration) -> Option<RwLockReadGuard<'_, T>> {
        self.try_read_deadline(Deadline::after(timeout))
    }

    /// Locks for reading, waiting until `deadline` at the latest; `None` if
    /// it did not get the lock by then (never before).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::RwLock;
    ///
    /// let lock = RwLock::new(0);
    /// let deadline = Instant::now() + Duration::from_millis(10);
    /// let writer = lock.write();
    /// assert!(lock.try_read_until(deadline).is_none());
    /// assert!(Instant::now() >= deadline);
    /// drop(writer);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`read`](Self::read).
    pub fn try_read_until(&self, deadline: Instant) -> Option<RwLockReadGuard<'_, T>> {
        self.try_read_deadline(super::deadline_at(deadline))
    }

    fn try_read_deadline(&self, deadline: Deadline) -> Option<RwLockReadGuard<'_, T>> {
        // `then`, not `then_some`: see try_read.
        self.raw.read_until(deadline).then(|| self.read_guard())
    }

    /// Locks for writing, waiting while readers or a writer hold the lock,
    /// or it is their turn.
    ///
    /// ```
    /// use weft::sync::RwLock;
    ///
    /// let lock = RwLock::new(Vec::new());
    /// lock.write().push(1);
    /// assert_eq!(*lock.read(), [1]);
    /// ```
    #[inline]
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.raw.write();
        self.write_guard()
    }

    /// Locks for writing if the lock is free right now and nobody waits. (A
    /// reader that arrived while a writer held or waited for the lock
    /// counts as a reader until it has backed out, a moment later:
    /// `try_write` can fail in that moment.)
    ///
    /// ```
    /// use weft::sync::RwLock;
    ///
    /// let lock = RwLock::new(0);
    /// let reader = lock.read();
    /// assert!(lock.try_write().is_none());
    /// drop(reader);
    /// *lock.try_write().unwrap() = 1;
    /// ```
    #[inline]
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        // `then`, not `then_some`: see try_read.
        self.raw.try_write().then(|| self.write_guard())
    }

    /// Locks for writing, waiting at most `timeout`; `None` if it did not
    /// get the lock in time (never before `timeout` has passed, measured on
    /// `CLOCK_MONOTONIC`). A writer that gives up leaves the lock as if it
    /// had never waited: readers that queued behind it go in.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::RwLock;
    ///
    /// let lock = RwLock::new(0);
    /// let reader = lock.read();
    /// let start = Instant::now();
    /// assert!(lock.try_write_for(Duration::from_millis(10)).is_none());
    /// assert!(start.elapsed() >= Duration::from_millis(10));
    /// // The writer left no trace: readers still get in.
    /// assert!(lock.try_read().is_some());
    /// drop(reader);
    /// ```
    pub fn try_write_for(&self, timeout: Duration) -> Option<RwLockWriteGuard<'_, T>> {
        self.try_write_deadline(Deadline::after(timeout))
    }

    /// Locks for writing, waiting until `deadline` at the latest; `None` if
    /// it did not get the lock by then (never before).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use weft::sync::RwLock;
    ///
    /// let lock = RwLock::new(0);
    /// let deadline = Instant::now() + Duration::from_millis(10);
    /// *lock.try_write_until(deadline).unwrap() += 1; // free: at once
    /// let reader = lock.read();
    /// assert!(lock.try_write_until(deadline).is_none());
    /// assert!(Instant::now() >= deadline);
    /// drop(reader);
    /// ```
    pub fn try_write_until(&self, deadline: Instant) -> Option<RwLockWriteGuard<'_, T>> {
        self.try_write_deadline(super::deadline_at(deadline))
    }

    fn try_write_deadline(&self, deadline: Deadline) -> Option<RwLockWriteGuard<'_, T>> {
        // `then`, not `then_some`: see try_read.
        self.raw.write_until(deadline).then(|| self.write_guard())
    }

    /// Locks for an upgradable read: a read lock that shares the lock with
    /// plain readers, but of which only one exists at a time, and that can
    /// later be turned into the write lock
    /// ([`RwLockUpgradableReadGuard::upgrade`]) without letting a writer in
    /// between. It waits as a reader does (never barging past a waiting
    /// writer), and also while another upgradable read is held.
    ///
    /// Taking it while holding a read lock can deadlock, as a second
    /// [`read`](Self::read) can; and so can two threads that each hold a
    /// read lock and ask for the upgradable one.
    ///
    /// # Panics
    ///
    /// As [`read`](Self::read).
    ///
    /// ```
    /// use weft::sync::{RwLock, RwLockUpgradableReadGuard};
    ///
    /// let cache = RwLock::new(vec![1, 2]);
    /// let entries = cache.upgradable_read();
    /// assert_eq!(cache.read().len(), 2, "plain readers still get in");
    /// if !entries.contains(&3) {
    ///     let mut entries = RwLockUpgradableReadGuard::upgrade(entries);
    ///     entries.push(3);
    /// }
    /// assert_eq!(*cache.read(), [1, 2, 3]);
    /// ```
    pub fn upgradable_read(&self) -> RwLockUpgradableReadGuard<'_, T> {
        self.raw.upgradable_read();
        RwLockUpgradableReadGuard { lock: self, _not_send: PhantomData }
    }

    /// An upgradable read if one can be had right now (no other upgradable
    /// reader, and the lock read-lockable: see [`try_read`](Self::try_read)).
    ///
    /// ```
    /// use weft::sync::RwLock;
    ///
    /// let lock = RwLock::new(0);
    /// let first = lock.try_upgradable_read().expect("free");
    /// assert!(lock.try_upgradable_read().is_none(), "one at a time");
    /// assert!(lock.try_read().is_some(), "plain readers share it");
    /// drop(first);
    /// ```
    pub fn try_upgradable_read(&self) -> Option<RwLockUpgradableReadGuard<'_, T>> {
        // `then`, not `then_some`: see try_read.
        self.raw.try_upgradable_read().then(|| RwLockUpgradableReadGuard { lock: self, _not_send: PhantomData })
    }

    /// Whether the lock is held right now, in any mode (read, upgradable
    /// read or write). A snapshot, for assertions and diagnostics (a
    /// reader arriving while a writer holds or waits for the lock counts
    /// for the moment before it backs out and waits).
    ///
    /// ```
    /// use weft::sync::RwLock;
    ///
    /// let lock = RwLock::new(());
    /// assert!(!lock.is_locked());
    /// let reader = lock.read();
    /// assert!(lock.is_locked());
    /// drop(reader);
    /// assert!(!lock.is_locked());
    /// ```
    pub fn is_locked(&self) -> bool {
        self.raw.is_locked()
    }

    /// Whether the write lock is held right now. A snapshot, for assertions
    /// and diagnostics.
    ///
    /// ```
    /// use weft::sync::RwLock;
    ///
    /// let lock = RwLock::new(());
    /// let reader = lock.read();
    /// assert!(!lock.is_locked_exclusive());
    /// drop(reader);
    /// let writer = lock.write();
    /// assert!(lock.is_locked_exclusive());
    /// drop(writer);
    /// ```
    pub fn is_locked_exclusive(&self) -> bool {
        self.raw.is_locked_exclusive()
    }

    /// The value, through `&mut self` (no locking needed).
    ///
    /// ```
    /// use weft::sync::RwLock;
    ///
    /// let mut lock = RwLock::new(1);
    /// *lock.get_mut() = 2;
    /// assert_eq!(*lock.read(), 2);
    /// ```
    pub fn get_mut(&mut self) -> &mut T {
        // SAFETY: `&mut self` proves no guard and no other reference exists.
        self.data.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> Self {
        RwLock::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_read() {
            Some(guard) => f.debug_struct("RwLock").field("data", &&*guard).finish(),
            None => f.debug_struct("RwLock").field("data", &format_args!("<locked>")).finish(),
        }
    }
}

/// Proof of holding a read lock of a [`RwLock`]; unlocks on drop (also
/// during unwinding). `!Send`: a lock is released by whoever took it.
///
/// Covariant in `T`, as std's: a guard of `RwLock<&'static str>` may be
/// used where one of `RwLock<&'a str>` is expected.
///
/// ```
/// use weft::sync::{RwLock, RwLockReadGuard};
///
/// fn shorten<'a>(guard: RwLockReadGuard<'a, &'static str>) -> RwLockReadGuard<'a, &'a str> {
///     guard
/// }
///
/// let lock = RwLock::new("weft");
/// let guard = shorten(lock.read());
/// assert_eq!(*guard, "weft");
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    /// The data; only read through, while the read lock is held.
    data: NonNull<T>,
    raw: &'a RawRwLock,
    /// Borrows the data for `'a`, covariantly (as `&'a T`); the pointer
    /// makes the guard `!Send`.
    _marker: PhantomData<&'a T>,
}

// SAFETY: sharing a read guard only shares `&T`: T: Sync suffices.
unsafe impl<T: ?Sized + Sync> Sync for RwLockReadGuard<'_, T> {}

impl<'a, T: ?Sized> RwLockReadGuard<'a, T> {
    /// Turns the guard into one for a part of the data, still holding the
    /// read lock (released when the mapped guard drops). An associated
    /// function, so that it does not hide a method of `T`. If `f` panics,
    /// the lock is released as the guard unwinds.
    ///
    /// ```
    /// use weft::sync::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};
    ///
    /// let lock = RwLock::new((String::from("name"), 7));
    /// let name: MappedRwLockReadGuard<'_, str> = RwLockReadGuard::map(lock.read(), |p| p.0.as_str());
    /// assert_eq!(&*name, "name");
    /// assert!(lock.try_write().is_none(), "still read-locked");
    /// ```
    pub fn map<U: ?Sized, F>(guard: Self, f: F) -> MappedRwLockReadGuard<'a, U>
    where
        F: FnOnce(&T) -> &U,
    {
        // SAFETY: the guard holds the read lock and lives until `f` returns.
        let data = NonNull::from(f(unsafe { guard.data.as_ref() }));
        let raw = guard.raw;
        std::mem::forget(guard);
        MappedRwLockReadGuard { data, raw, _marker: PhantomData }
    }

    /// Like [`map`](Self::map), for a part that may be absent: `Err` gives
    /// the original guard back, still holding the lock.
    ///
    /// ```
    /// use weft::sync::{RwLock, RwLockReadGuard};
    ///
    /// let lock = RwLock::new(vec![10, 20]);
    /// let first = RwLockReadGuard::try_map(lock.read(), |v| v.first()).expect("present");
    /// assert_eq!(*first, 10);
    /// drop(first);
    /// assert!(RwLockReadGuard::try_map(lock.read(), |v| v.get(5)).is_err());
    /// ```
    pub fn try_map<U: ?Sized, F>(guard: Self, f: F) -> Result<MappedRwLockReadGuard<'a, U>, Self>
    where
        F: FnOnce(&T) -> Option<&U>,
    {
        // SAFETY: as in `map`.
        match f(unsafe { guard.data.as_ref() }) {
            Some(data) => {
                let data = NonNull::from(data);
                let raw = guard.raw;
                std::mem::forget(guard);
                Ok(MappedRwLockReadGuard { data, raw, _marker: PhantomData })
            }
            None => Err(guard),
        }
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a read lock is held: no writer touches the data until it
        // is released, and readers only read.
        unsafe { self.data.as_ref() }
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard proves we hold a read lock.
        unsafe { self.raw.read_unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// Proof of holding the write lock of a [`RwLock`]; unlocks on drop (also
/// during unwinding). `!Send`: a lock is released by whoever took it.
///
/// ```
/// use weft::sync::{RwLock, RwLockWriteGuard};
///
/// fn append(mut guard: RwLockWriteGuard<'_, String>, s: &str) {
///     guard.push_str(s);
/// }
///
/// let lock = RwLock::new(String::from("a"));
/// append(lock.write(), "b");
/// assert_eq!(*lock.read(), "ab");
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing a write guard only shares `&T`: T: Sync suffices.
unsafe impl<T: ?Sized + Sync> Sync for RwLockWriteGuard<'_, T> {}

impl<'a, T: ?Sized> RwLockWriteGuard<'a, T> {
    /// Turns the write lock into a read lock in one step: no writer can get
    /// in between, and the readers that were waiting go in with it (a
    /// writer that waits stays out until they have all left).
    ///
    /// ```
    /// use weft::sync::{RwLock, RwLockWriteGuard};
    ///
    /// let lock = RwLock::new(0);
    /// let mut writer = lock.write();
    /// *writer = 42;
    /// let reader = RwLockWriteGuard::downgrade(writer);
    /// assert_eq!(*reader, 42);
    /// assert!(lock.try_read().is_some(), "other readers share it now");
    /// assert!(lock.try_write().is_none(), "writers still wait");
    /// ```
    pub fn downgrade(guard: Self) -> RwLockReadGuard<'a, T> {
        let lock = guard.lock;
        std::mem::forget(guard);
        // SAFETY: the guard held the write lock, and is forgotten: the read
        // lock that remains belongs to the guard returned below.
        unsafe { lock.raw.downgrade() };
        lock.read_guard()
    }

    /// Turns the guard into one for a part of the data, still holding the
    /// write lock. An associated function, so that it does not hide a
    /// method of `T`. If `f` panics, the lock is released as the guard
    /// unwinds.
    ///
    /// ```
    /// use weft::sync::{RwLock, RwLockWriteGuard};
    ///
    /// let lock = RwLock::new((0, vec![1]));
    /// let mut list = RwLockWriteGuard::map(lock.write(), |p| &mut p.1);
    /// list.push(2);
    /// drop(list);
    /// assert_eq!(lock.read().1, [1, 2]);
    /// ```
    pub fn map<U: ?Sized, F>(guard: Self, f: F) -> MappedRwLockWriteGuard<'a, U>
    where
        F: FnOnce(&mut T) -> &mut U,
    {
        let lock = guard.lock;
        // SAFETY: the guard holds the write lock and lives until `f`
        // returns: no one else touches the data meanwhile.
        let data = NonNull::from(f(lock.data.with_mut(|p| unsafe { &mut *p })));
        std::mem::forget(guard);
        MappedRwLockWriteGuard { data, raw: &lock.raw, _marker: PhantomData }
    }

    /// Like [`map`](Self::map), for a part that may be absent: `Err` gives
    /// the original guard back, still holding the lock.
    ///
    /// ```
    /// use weft::sync::{RwLock, RwLockWriteGuard};
    ///
    /// let lock = RwLock::new(vec![1]);
    /// *RwLockWriteGuard::try_map(lock.write(), |v| v.last_mut()).expect("present") = 5;
    /// assert_eq!(*lock.read(), [5]);
    /// ```
    pub fn try_map<U: ?Sized, F>(guard: Self, f: F) -> Result<MappedRwLockWriteGuard<'a, U>, Self>
    where
        F: FnOnce(&mut T) -> Option<&mut U>,
    {
        let lock = guard.lock;
        // SAFETY: as in `map`.
        match f(lock.data.with_mut(|p| unsafe { &mut *p })) {
            Some(data) => {
                let data = NonNull::from(data);
                std::mem::forget(guard);
                Ok(MappedRwLockWriteGuard { data, raw: &lock.raw, _marker: PhantomData })
            }
            None => Err(guard),
        }
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the write lock is held: no one else touches the data.
        self.lock.data.with(|p| unsafe { &*p })
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref, and `&mut self` makes this the only reference.
        self.lock.data.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard proves we hold the write lock.
        unsafe { self.lock.raw.write_unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// Proof of holding the upgradable read lock of a [`RwLock`]
/// ([`RwLock::upgradable_read`]): it reads alongside plain readers, only one
/// exists at a time, and it can become the write lock
/// ([`upgrade`](Self::upgrade)) without a writer getting in between.
/// Unlocks on drop (also during unwinding); `!Send`.
///
/// ```
/// use weft::sync::{RwLock, RwLockUpgradableReadGuard};
///
/// let counter = RwLock::new(0);
/// let seen = counter.upgradable_read();
/// if *seen == 0 {
///     // Nobody can have changed it in between: no writer got in.
///     *RwLockUpgradableReadGuard::upgrade(seen) = 1;
/// }
/// assert_eq!(*counter.read(), 1);
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockUpgradableReadGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing the guard only shares `&T`: T: Sync suffices.
unsafe impl<T: ?Sized + Sync> Sync for RwLockUpgradableReadGuard<'_, T> {}

impl<'a, T: ?Sized> RwLockUpgradableReadGuard<'a, T> {
    /// Turns the upgradable read into the write lock, waiting for the other
    /// readers to leave. Meanwhile new readers queue (as behind a waiting
    /// writer), and the writers that wait go after this one; when it leaves
    /// the write lock, the readers that queued meanwhile go in first.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use weft::sync::{RwLock, RwLockUpgradableReadGuard};
    ///
    /// let lock = Arc::new(RwLock::new(0));
    /// let reader = lock.read();
    /// let lock2 = Arc::clone(&lock);
    /// let upgrader = weft::spawn(move || {
    ///     let upgradable = lock2.upgradable_read(); // shares the lock with `reader`
    ///     *RwLockUpgradableReadGuard::upgrade(upgradable) += 1; // waits for `reader` to leave
    /// });
    /// std::thread::sleep(Duration::from_millis(10));
    /// assert_eq!(*reader, 0, "no write while a reader is in");
    /// drop(reader);
    /// upgrader.join().unwrap();
    /// assert_eq!(*lock.read(), 1);
    /// ```
    pub fn upgrade(guard: Self) -> RwLockWriteGuard<'a, T> {
        let lock = guard.lock;
        // SAFETY: the guard holds the upgradable read lock. If this unwinds,
        // we still hold it, and `guard` (still ours) gives it back.
        unsafe { lock.raw.upgrade() };
        std::mem::forget(guard);
        lock.write_guard()
    }

    /// Turns the upgradable read into the write lock if no other reader
    /// holds the lock right now; otherwise gives the guard back in `Err`.
    /// (A reader that arrives while a writer holds or waits for the lock
    /// counts itself in for a moment before it backs out and waits: at that
    /// moment it is a reader here too.)
    ///
    /// ```
    /// use weft::sync::{RwLock, RwLockUpgradableReadGuard};
    ///
    /// let lock = RwLock::new(0);
    /// let reader = lock.read();
    /// let upgradable = lock.upgradable_read();
    /// let upgradable = RwLockUpgradableReadGuard::try_upgrade(upgradable).expect_err("a reader is in");
    /// drop(reader);
    /// let mut writer = RwLockUpgradableReadGuard::try_upgrade(upgradable).expect("alone now");
    /// *writer = 1;
    /// ```
    pub fn try_upgrade(guard: Self) -> Result<RwLockWriteGuard<'a, T>, Self> {
        let lock = guard.lock;
        // SAFETY: the guard holds the upgradable read lock; on success it is
        // forgotten and the write lock belongs to the guard returned.
        if unsafe { lock.raw.try_upgrade() } {
            std::mem::forget(guard);
            Ok(lock.write_guard())
        } else {
            Err(guard)
        }
    }

    /// Gives up the right to upgrade, keeping a plain read lock: another
    /// upgradable reader may then get in.
    ///
    /// ```
    /// use weft::sync::{RwLock, RwLockUpgradableReadGuard};
    ///
    /// let lock = RwLock::new(3);
    /// let reader = RwLockUpgradableReadGuard::downgrade(lock.upgradable_read());
    /// assert!(lock.try_upgradable_read().is_some(), "free for another");
    /// assert_eq!(*reader, 3);
    /// ```
    pub fn downgrade(guard: Self) -> RwLockReadGuard<'a, T> {
        let lock = guard.lock;
        std::mem::forget(guard);
        // SAFETY: the guard held the upgradable read lock and is forgotten;
        // its read lock now belongs to the guard returned below.
        unsafe { lock.raw.upgradable_downgrade() };
        lock.read_guard()
    }
}

impl<T: ?Sized> Deref for RwLockUpgradableReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a read lock is held: no writer touches the data.
        self.lock.data.with(|p| unsafe { &*p })
    }
}

impl<T: ?Sized> Drop for RwLockUpgradableReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard proves we hold the upgradable read lock.
        unsafe { self.lock.raw.upgradable_unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockUpgradableReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for RwLockUpgradableReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// A [`RwLockReadGuard`] mapped to a part of the data
/// ([`RwLockReadGuard::map`]); holds the read lock and releases it on drop.
/// Covariant in `T`, like the read guard; `!Send`.
///
/// ```
/// use weft::sync::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};
///
/// let lock = RwLock::new([1, 2, 3]);
/// let tail: MappedRwLockReadGuard<'_, [i32]> = RwLockReadGuard::map(lock.read(), |a| &a[1..]);
/// assert_eq!(&*tail, [2, 3]);
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MappedRwLockReadGuard<'a, T: ?Sized> {
    data: NonNull<T>,
    raw: &'a RawRwLock,
    _marker: PhantomData<&'a T>,
}

// SAFETY: sharing the guard only shares `&T`: T: Sync suffices.
unsafe impl<T: ?Sized + Sync> Sync for MappedRwLockReadGuard<'_, T> {}

impl<'a, T: ?Sized> MappedRwLockReadGuard<'a, T> {
    /// Maps further, to a part of this part.
    ///
    /// ```
    /// use weft::sync::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};
    ///
    /// let lock = RwLock::new(((1, 2), 3));
    /// let inner = RwLockReadGuard::map(lock.read(), |n| &n.0);
    /// let two = MappedRwLockReadGuard::map(inner, |i| &i.1);
    /// assert_eq!(*two, 2);
    /// ```
    pub fn map<U: ?Sized, F>(guard: Self, f: F) -> MappedRwLockReadGuard<'a, U>
    where
        F: FnOnce(&T) -> &U,
    {
        // SAFETY: the guard holds the read lock and lives until `f` returns.
        let data = NonNull::from(f(unsafe { guard.data.as_ref() }));
        let raw = guard.raw;
        std::mem::forget(guard);
        MappedRwLockReadGuard { data, raw, _marker: PhantomData }
    }

    /// Like [`map`](Self::map), for a part that may be absent; `Err` gives
    /// this guard back.
    ///
    /// ```
    /// use weft::sync::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};
    ///
    /// let lock = RwLock::new((vec![1], 0));
    /// let list = RwLockReadGuard::map(lock.read(), |p| &p.0);
    /// let list = MappedRwLockReadGuard::try_map(list, |l| l.get(3)).expect_err("absent");
    /// assert_eq!(list.len(), 1);
    /// ```
    pub fn try_map<U: ?Sized, F>(guard: Self, f: F) -> Result<MappedRwLockReadGuard<'a, U>, Self>
    where
        F: FnOnce(&T) -> Option<&U>,
    {
        // SAFETY: as in `map`.
        match f(unsafe { guard.data.as_ref() }) {
            Some(data) => {
                let data = NonNull::from(data);
                let raw = guard.raw;
                std::mem::forget(guard);
                Ok(MappedRwLockReadGuard { data, raw, _marker: PhantomData })
            }
            None => Err(guard),
        }
    }
}

impl<T: ?Sized> Deref for MappedRwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the read lock is held, and `data` points into the data.
        unsafe { self.data.as_ref() }
    }
}

impl<T: ?Sized> Drop for MappedRwLockReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard holds a read lock (taken over from a read guard).
        unsafe { self.raw.read_unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MappedRwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MappedRwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// A [`RwLockWriteGuard`] mapped to a part of the data
/// ([`RwLockWriteGuard::map`]); holds the write lock and releases it on
/// drop. `!Send`.
///
/// ```
/// use weft::sync::{MappedRwLockWriteGuard, RwLock, RwLockWriteGuard};
///
/// let lock = RwLock::new((0, String::new()));
/// let mut text: MappedRwLockWriteGuard<'_, String> = RwLockWriteGuard::map(lock.write(), |p| &mut p.1);
/// text.push_str("hi");
/// drop(text);
/// assert_eq!(lock.read().1, "hi");
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MappedRwLockWriteGuard<'a, T: ?Sized> {
    data: NonNull<T>,
    raw: &'a RawRwLock,
    /// Borrows the data mutably for `'a` (invariant in `T`, as `&mut T`).
    _marker: PhantomData<&'a mut T>,
}

// SAFETY: sharing the guard only shares `&T`: T: Sync suffices.
unsafe impl<T: ?Sized + Sync> Sync for MappedRwLockWriteGuard<'_, T> {}

impl<'a, T: ?Sized> MappedRwLockWriteGuard<'a, T> {
    /// Maps further, to a part of this part.
    ///
    /// ```
    /// use weft::sync::{MappedRwLockWriteGuard, RwLock, RwLockWriteGuard};
    ///
    /// let lock = RwLock::new(((1, 2), 3));
    /// let inner = RwLockWriteGuard::map(lock.write(), |n| &mut n.0);
    /// *MappedRwLockWriteGuard::map(inner, |i| &mut i.0) = 10;
    /// assert_eq!(*lock.read(), ((10, 2), 3));
    /// ```
    pub fn map<U: ?Sized, F>(guard: Self, f: F) -> MappedRwLockWriteGuard<'a, U>
    where
        F: FnOnce(&mut T) -> &mut U,
    {
        let mut ptr = guard.data;
        // SAFETY: the guard holds the write lock and lives until `f`
        // returns; the pointer is borrowed mutably only here.
        let data = NonNull::from(f(unsafe { ptr.as_mut() }));
        let raw = guard.raw;
        std::mem::forget(guard);
        MappedRwLockWriteGuard { data, raw, _marker: PhantomData }
    }

    /// Like [`map`](Self::map), for a part that may be absent; `Err` gives
    /// this guard back.
    ///
    /// ```
    /// use weft::sync::{MappedRwLockWriteGuard, RwLock, RwLockWriteGuard};
    ///
    /// let lock = RwLock::new((vec![1, 2], 0));
    /// let list = RwLockWriteGuard::map(lock.write(), |p| &mut p.0);
    /// *MappedRwLockWriteGuard::try_map(list, |l| l.first_mut()).expect("present") = 7;
    /// assert_eq!(lock.read().0, [7, 2]);
    /// ```
    pub fn try_map<U: ?Sized, F>(guard: Self, f: F) -> Result<MappedRwLockWriteGuard<'a, U>, Self>
    where
        F: FnOnce(&mut T) -> Option<&mut U>,
    {
        let mut ptr = guard.data;
        // SAFETY: as in `map`.
        match f(unsafe { ptr.as_mut() }) {
            Some(data) => {
                let data = NonNull::from(data);
                let raw = guard.raw;
                std::mem::forget(guard);
                Ok(MappedRwLockWriteGuard { data, raw, _marker: PhantomData })
            }
            None => Err(guard),
        }
    }
}

impl<T: ?Sized> Deref for MappedRwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the write lock is held, and `data` points into the data.
        unsafe { self.data.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for MappedRwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref, and `&mut self` makes this the only reference.
        unsafe { self.data.as_mut() }
    }
}

impl<T: ?Sized> Drop for MappedRwLockWriteGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard holds the write lock (taken over from a write
        // guard).
        unsafe { self.raw.write_unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MappedRwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MappedRwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::raw::{MAX_READERS, READERS_WAITING, WRITE_LOCKED, WRITERS_WAITING};
    use super::*;
    use crate::loom::Ordering;
    use crate::loom::process::{AtomicBool, AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
    use crate::sync::Mutex;
    use crate::test_rng::{self, TestRng};
    use std::sync::{Arc, mpsc};
    use std::thread;
    use std::time::{Duration, Instant};

    fn state<T>(lock: &RwLock<T>) -> u32 {
        lock.raw.state.load(Ordering::Relaxed)
    }

    /// Polls `cond` until it holds (failing after a generous bound).
    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for: {what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until `bit` is set, then a little longer so the waiter that set
    /// it has validated and is queued.
    fn wait_until_flagged<T>(lock: &RwLock<T>, bit: u32) {
        wait_for("a waiter to flag itself", || state(lock) & bit != 0);
        thread::sleep(Duration::from_millis(30));
    }

    #[test]
    fn try_locks_exclude_as_they_should() {
        let lock = RwLock::new(1);
        let r1 = lock.try_read().expect("free");
        let r2 = lock.try_read().expect("readers share");
        assert!(lock.try_write().is_none());
        assert_eq!(format!("{lock:?}"), "RwLock { data: 1 }");
        drop((r1, r2));
        let mut w = lock.try_write().expect("free again");
        *w += 1;
        assert!(lock.try_read().is_none());
        assert!(lock.try_write().is_none());
        assert_eq!(format!("{lock:?}"), "RwLock { data: <locked> }");
        drop(w);
        assert_eq!(state(&lock), 0);
        assert_eq!(*lock.read(), 2);
    }

    #[test]
    fn get_mut_into_inner_default() {
        let mut lock = RwLock::<String>::default();
        lock.get_mut().push('a');
        lock.write().push('b');
        assert_eq!(state(&lock), 0);
        assert_eq!(lock.into_inner(), "ab");
    }

    #[test]
    fn unlocks_on_panic() {
        let lock = Arc::new(RwLock::new(0));
        for write in [false, true] {
            let l = Arc::clone(&lock);
            let result = thread::spawn(move || {
                let _guard = if write { Err(l.write()) } else { Ok(l.read()) };
                panic!("boom while holding the rwlock");
            })
            .join();
            assert!(result.is_err());
            assert_eq!(state(&lock), 0, "unwinding must release the lock (no poisoning)");
        }
    }

    #[test]
    #[should_panic(expected = "RwLock reader count overflow")]
    fn reader_count_overflow_panics() {
        let lock = RwLock::new(());
        // Pretend MAX_READERS - 1 readers hold it.
        lock.raw.state.store(MAX_READERS - 1, Ordering::Relaxed);
        let _last = lock.read();
        assert_eq!(state(&lock), MAX_READERS);
        assert!(lock.try_read().is_none(), "try_read on a full lock fails instead of overflowing");
        let _one_too_many = lock.read();
    }

    /// Timed waiters that give up leave no bit behind: a writer flagged
    /// before spinning (never queued), a writer queued, a reader queued;
    /// and a reader queued behind a writer that gives up is let in beside
    /// the reader that holds the lock.
    #[test]
    fn timed_out_waiters_leave_no_bits() {
        let lock = Arc::new(RwLock::new(0));
        let reader = lock.read();
        for timeout in [Duration::ZERO, Duration::from_micros(50), Duration::from_millis(20)] {
            assert!(lock.try_write_for(timeout).is_none());
            assert_eq!(state(&lock), 1, "a timed-out writer left a bit ({timeout:?})");
        }
        let l = Arc::clone(&lock);
        let writer = thread::spawn(move || l.try_write_for(Duration::from_millis(300)).is_none());
        wait_until_flagged(&lock, WRITERS_WAITING);
        let l = Arc::clone(&lock);
        let queued_reader = thread::spawn(move || *l.read());
        wait_until_flagged(&lock, READERS_WAITING);
        assert!(writer.join().unwrap());
        assert_eq!(queued_reader.join().unwrap(), 0, "let in beside the first reader");
        assert_eq!(state(&lock), 1, "only the first reader holds it");
        drop(reader);
        let writer = lock.write();
        let l = Arc::clone(&lock);
        let timed_reader = thread::spawn(move || l.try_read_for(Duration::from_millis(50)).is_none());
        assert!(timed_reader.join().unwrap());
        assert_eq!(state(&lock), WRITE_LOCKED, "a timed-out reader left a bit");
        assert_eq!(lock.raw.parked_readers.load(Ordering::Relaxed), 0);
        drop(writer);
        assert_eq!(state(&lock), 0);
    }

    /// A waiting writer stops new readers; they go in after it.
    #[test]
    fn readers_queue_behind_waiting_writer() {
        let lock = Arc::new(RwLock::new(Vec::new()));
        let first_reader = lock.read();
        let l = Arc::clone(&lock);
        let writer = thread::spawn(move || l.write().push("writer"));
        wait_until_flagged(&lock, WRITERS_WAITING);
        assert!(lock.try_read().is_none(), "try_read must not barge past a waiting writer");
        let l = Arc::clone(&lock);
        let late_reader = thread::spawn(move || l.read().clone());
        wait_until_flagged(&lock, READERS_WAITING);
        drop(first_reader);
        writer.join().unwrap();
        assert_eq!(late_reader.join().unwrap(), ["writer"], "the late reader went in after the writer");
        assert_eq!(state(&lock), 0);
    }

    /// Writer W1 holds; readers queue; writer W2 queues behind them. When W1
    /// leaves, all the queued readers hold the lock at the same time, and
    /// W2 goes in only after them.
    #[test]
    fn waiting_readers_go_in_together_before_next_writer() {
        const READERS: usize = 4;
        let rt = crate::Runtime::builder().workers(2).build().unwrap();
        let lock = Arc::new(RwLock::new(Vec::new()));
        let inside = Arc::new(StdAtomicUsize::new(0));
        let w1 = lock.write();
        let mut readers = Vec::new();
        let mut threads = Vec::new();
        for i in 0..READERS {
            let (l, inside) = (Arc::clone(&lock), Arc::clone(&inside));
            let body = move || {
                let guard = l.read();
                inside.fetch_add(1, StdOrdering::SeqCst);
                // Hold the read lock until every queued reader is inside.
                let start = Instant::now();
                while inside.load(StdOrdering::SeqCst) < READERS {
                    assert!(start.elapsed() < Duration::from_secs(10), "the readers did not go in together");
                    crate::yield_now();
                }
                guard.clone()
            };
            if i % 2 == 0 {
                readers.push(rt.spawn(body));
            } else {
                threads.push(thread::spawn(body));
            }
            wait_until_flagged(&lock, READERS_WAITING);
        }
        let l = Arc::clone(&lock);
        let w2 = thread::spawn(move || l.write().push("w2"));
        wait_until_flagged(&lock, WRITERS_WAITING);
        drop(w1);
        for r in readers {
            assert!(r.join().unwrap().is_empty(), "a reader saw w2's write");
        }
        for t in threads {
            assert!(t.join().unwrap().is_empty(), "a reader saw w2's write");
        }
        w2.join().unwrap();
        assert_eq!(*lock.read(), ["w2"]);
        assert_eq!(state(&lock), 0);
        assert_eq!(lock.raw.parked_readers.load(Ordering::Relaxed), 0);
    }

    /// Generous: the machine is small and shared; a starving lock never
    /// gets there at all.
    const STARVED: Duration = Duration::from_secs(20);

    /// Runs `f` `rounds` times on a new thread; the receiver gets `()` when
    /// all are done. A starving test fails on its `recv_timeout` instead of
    /// hanging.
    fn in_rounds(rounds: usize, f: impl Fn() + Send + 'static) -> mpsc::Receiver<()> {
        let (done, receiver) = mpsc::channel();
        thread::spawn(move || {
            for _ in 0..rounds {
                f();
            }
            let _ = done.send(());
        });
        receiver
    }

    /// 8 reader threads keep overlapping read locks (the count never falls
    /// to 0 on its own); a writer still gets in within a generous bound.
    #[test]
    fn writer_not_starved_by_overlapping_readers() {
        const READERS: usize = 8;
        let lock = Arc::new(RwLock::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let max_inside = Arc::new(StdAtomicUsize::new(0));
        let inside = Arc::new(StdAtomicUsize::new(0));
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                let (lock, stop) = (Arc::clone(&lock), Arc::clone(&stop));
                let (inside, max_inside) = (Arc::clone(&inside), Arc::clone(&max_inside));
                thread::spawn(move || {
                    let mut rounds = 0u64;
                    while !stop.load(StdOrdering::Relaxed) {
                        let guard = lock.read();
                        let now = inside.fetch_add(1, StdOrdering::SeqCst) + 1;
                        max_inside.fetch_max(now, StdOrdering::Relaxed);
                        thread::sleep(Duration::from_micros(500));
                        inside.fetch_sub(1, StdOrdering::SeqCst);
                        drop(guard);
                        rounds += 1;
                    }
                    rounds
                })
            })
            .collect();
        wait_for("the readers to overlap", || max_inside.load(StdOrdering::Relaxed) >= 2);
        let l = Arc::clone(&lock);
        let rounds = in_rounds(5, move || *l.write() += 1);
        let result = rounds.recv_timeout(STARVED);
        stop.store(true, StdOrdering::Relaxed);
        assert!(result.is_ok(), "a writer starved: 5 write locks not taken within {STARVED:?}");
        let total: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(total > 0);
        assert_eq!(*lock.read(), 5);
        assert!(max_inside.load(StdOrdering::Relaxed) >= 2, "readers never overlapped: the test proved nothing");
    }

    /// The other side: a steady stream of writers does not starve a reader.
    #[test]
    fn reader_not_starved_by_writers() {
        let lock = Arc::new(RwLock::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(StdAtomicUsize::new(0));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (lock, stop, writes) = (Arc::clone(&lock), Arc::clone(&stop), Arc::clone(&writes));
                thread::spawn(move || {
                    while !stop.load(StdOrdering::Relaxed) {
                        let mut guard = lock.write();
                        *guard += 1;
                        writes.fetch_add(1, StdOrdering::Relaxed);
                        thread::sleep(Duration::from_micros(200));
                    }
                })
            })
            .collect();
        wait_for("the writers to get going", || writes.load(StdOrdering::Relaxed) > 10);
        let l = Arc::clone(&lock);
        let rounds = in_rounds(20, move || drop(l.read()));
        let result = rounds.recv_timeout(STARVED);
        stop.store(true, StdOrdering::Relaxed);
        assert!(result.is_ok(), "a reader starved: 20 read locks not taken within {STARVED:?}");
        for w in writers {
            w.join().unwrap();
        }
    }

    /// Readers and writers, coroutines and threads, on one lock: a pair of
    /// fields only ever changed together is always seen equal.
    #[test]
    fn mixed_stress_sees_whole_states() {
        const ROUNDS: usize = 2_000;
        let rt = crate::Runtime::builder().workers(2).build().unwrap();
        let lock = Arc::new(RwLock::new((0usize, 0usize)));
        let body = |lock: Arc<RwLock<(usize, usize)>>, id: usize| {
            move || {
                for i in 0..ROUNDS {
                    if (i + id) % 4 == 0 {
                        let mut guard = lock.write();
                        guard.0 += 1;
                        if i % 32 == 0 {
                            crate::yield_now();
                        }
                        guard.1 += 1;
                    } else {
                        let guard = lock.read();
                        let (a, b) = *guard;
                        assert_eq!(a, b, "a reader saw half a write");
                        if i % 32 == 0 {
                            crate::yield_now();
                        }
                    }
                }
            }
        };
        let coroutines: Vec<_> = (0..6).map(|id| rt.spawn(body(Arc::clone(&lock), id))).collect();
        let threads: Vec<_> = (6..9).map(|id| thread::spawn(body(Arc::clone(&lock), id))).collect();
        for c in coroutines {
            c.join().unwrap();
        }
        for t in threads {
            t.join().unwrap();
        }
        let (a, b) = *lock.read();
        assert_eq!(a, b);
        assert_eq!(a, 9 * ROUNDS / 4);
        assert_eq!(state(&lock), 0);
        assert_eq!(lock.raw.parked_readers.load(Ordering::Relaxed), 0);
    }

    /// Coroutines only, on one worker: waiting parks the coroutine, so the
    /// holder (on the same worker) can run and unlock.
    #[test]
    fn coroutines_on_one_worker() {
        let rt = crate::Runtime::builder().workers(1).build().unwrap();
        let lock = Arc::new(RwLock::new(Vec::new()));
        let l = Arc::clone(&lock);
        rt.block_on(move || {
            let guard = l.write();
            let l2 = Arc::clone(&l);
            let reader = crate::spawn(move || l2.read().len());
            let l3 = Arc::clone(&l);
            let writer = crate::spawn(move || l3.write().push(2));
            crate::sleep(Duration::from_millis(20));
            drop(guard);
            let seen = reader.join().unwrap();
            writer.join().unwrap();
            assert_eq!(seen, 0, "the reader queued first goes first");
            l.write().push(3);
        });
        assert_eq!(*lock.read(), [2, 3]);
    }

    /// A coroutine and a thread waiting on one lock, each handing over to
    /// the other many times.
    #[test]
    fn coroutine_and_thread_ping_pong() {
        const ROUNDS: usize = 500;
        let rt = crate::Runtime::builder().workers(2).build().unwrap();
        let lock = Arc::new(RwLock::new(0usize));
        let turns = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&lock);
        let coroutine = rt.spawn(move || {
            for _ in 0..ROUNDS {
                *l.write() += 1;
                let _ = *l.read();
            }
        });
        for _ in 0..ROUNDS {
            *lock.write() += 1;
            turns.lock().push(*lock.read());
        }
        coroutine.join().unwrap();
        assert_eq!(*lock.read(), 2 * ROUNDS);
    }

    #[derive(Debug, Clone)]
    enum Op {
        TryRead,
        TryWrite,
        DropRead(usize),
        DropWrite,
    }

    /// Up to 63 operations, weighted 3:2:3:2.
    fn random_ops(rng: &mut TestRng) -> Vec<Op> {
        (0..rng.below(64))
            .map(|_| match rng.weighted(&[3, 2, 3, 2]) {
                0 => Op::TryRead,
                1 => Op::TryWrite,
                2 => Op::DropRead(rng.next_u64() as usize),
                _ => Op::DropWrite,
            })
            .collect()
    }

    /// Single-threaded random operations against a model: each try_*
    /// succeeds exactly when the model says, and the state word matches
    /// (`test_rng::CASES` seeded cases; a failure names its case and ops).
    #[test]
    fn matches_sequential_model() {
        for case in 0..test_rng::CASES {
            let ops = random_ops(&mut TestRng::new(case));
            let lock = RwLock::new(0u32);
            let mut reads = Vec::new();
            let mut write = None;
            for (i, op) in ops.iter().enumerate() {
                let at = || format!("case {case}, op {i} of {ops:?}");
                match *op {
                    Op::TryRead => {
                        let got = lock.try_read();
                        assert_eq!(got.is_some(), write.is_none(), "try_read, {}", at());
                        reads.extend(got);
                    }
                    Op::TryWrite => {
                        let got = lock.try_write();
                        assert_eq!(got.is_some(), write.is_none() && reads.is_empty(), "try_write, {}", at());
                        if let Some(mut guard) = got {
                            *guard += 1;
                            write = Some(guard);
                        }
                    }
                    Op::DropRead(i) if !reads.is_empty() => drop(reads.swap_remove(i % reads.len())),
                    Op::DropWrite => write = None,
                    Op::DropRead(_) => {}
                }
                let expected = if write.is_some() { WRITE_LOCKED } else { reads.len() as u32 };
                assert_eq!(state(&lock), expected, "state word, {}", at());
            }
        }
    }
}
