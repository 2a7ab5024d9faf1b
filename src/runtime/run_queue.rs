//! A worker's run queue: its started tasks that are ready to run, oldest
//! first.
//!
//! # Who touches it
//!
//! Only the worker's own thread: the worker loop, and the coroutines it
//! runs (a local wake in `unpark`, a yield's re-queue after the switch back).
//! No method calls out to other code while it works on the queue — a task's
//! destructor never runs inside one (`clear` hands the tasks back first) — so
//! no call can re-enter another, and the queue needs no borrow flag: it is
//! `!Sync` (its `Cell`s), and its owner keeps it on one thread.
//!
//! # Layout
//!
//! ```text
//!  slots: capacity (a power of two) raw task pointers
//!  +-----+-----+-----+-----+-----+-----+-----+-----+
//!  |     |  A  |  B  |  C  |     |     |     |     |   capacity 8
//!  +-----+-----+-----+-----+-----+-----+-----+-----+
//!           ^ head = 9 (9 & 7 = 1)   ^ tail = 12 (12 & 7 = 4)
//! ```
//!
//! `head` and `tail` count positions and only grow (wrapping at
//! `usize::MAX`, which no worker reaches); position `p` lives in slot
//! `p & (capacity - 1)`, and `tail - head` tasks are queued. A push onto a
//! full ring doubles it (out of line). Each queued slot holds one reference
//! given up with `TaskRef::into_raw`; a pop takes it back. So a push and a
//! pop are a few loads and stores each, without the bounds checks, the
//! non-power-of-two wrap and the `RefCell` flag of the `RefCell<VecDeque>`
//! this replaced (about 25 instructions of a yield's 157).

use super::task::{Task, TaskRef};
use std::cell::Cell;
use std::ptr::{self, NonNull};

/// Slots of a new queue (grown by doubling when a push finds it full).
const INITIAL_CAPACITY: usize = 64;

pub(crate) struct RunQueue {
    /// The ring: `mask + 1` slots from `Box<[*const Task]>::into_raw`.
    slots: Cell<NonNull<*const Task>>,
    /// The ring's capacity (a power of two) minus one.
    mask: Cell<usize>,
    /// The position of the oldest queued task.
    head: Cell<usize>,
    /// One past the position of the newest queued task.
    tail: Cell<usize>,
}

impl RunQueue {
    pub(crate) fn new() -> RunQueue {
        const { assert!(INITIAL_CAPACITY.is_power_of_two()) };
        RunQueue {
            slots: Cell::new(allocate(INITIAL_CAPACITY)),
            mask: Cell::new(INITIAL_CAPACITY - 1),
            head: Cell::new(0),
            tail: Cell::new(0),
        }
    }

    /// How many tasks are queued.
    pub(crate) fn len(&self) -> usize {
        self.tail.get().wrapping_sub(self.head.get())
    }

    /// Queues `task` behind the others.
    #[inline(always)]
    pub(crate) fn push_back(&self, task: TaskRef) {
        // Raw first: a `TaskRef` held across `grow` would be spilled to the
        // stack on every push, for the unwind out of a growth that fails
        // (which would leak this one reference instead).
        let task = task.into_raw();
        let tail = self.tail.get();
        if self.len() > self.mask.get() {
            self.grow();
        }
        let slot = tail & self.mask.get();
        // SAFETY: `slot` < capacity, inside the ring's allocation; it holds
        // no queued task (fewer than `capacity` are queued now).
        unsafe { self.slots.get().add(slot).write(task) };
        self.tail.set(tail.wrapping_add(1));
    }

    /// The task at position `i` from the front (0: the oldest), left in
    /// the queue; null if fewer are queued.
    #[inline(always)]
    pub(crate) fn peek(&self, i: usize) -> *const Task {
        let head = self.head.get();
        if i >= self.tail.get().wrapping_sub(head) {
            return std::ptr::null();
        }
        // SAFETY: as in `pop_front`: position `head + i` is queued; the
        // pointer is read, not taken.
        unsafe { self.slots.get().add(head.wrapping_add(i) & self.mask.get()).read() }
    }

    /// Takes the oldest queued task.
    #[inline]
    pub(crate) fn pop_front(&self) -> Option<TaskRef> {
        let head = self.head.get();
        if head == self.tail.get() {
            return None;
        }
        let slot = head & self.mask.get();
        // SAFETY: `slot` < capacity, and position `head` is queued (head !=
        // tail), so the slot holds a pointer from `into_raw`.
        let task = unsafe { self.slots.get().add(slot).read() };
        self.head.set(head.wrapping_add(1));
        // SAFETY: the queue's own reference, given up in `push_back`, taken
        // back once: the position is no longer queued.
        Some(unsafe { TaskRef::from_raw(task) })
    }

    /// Takes the oldest queued task and queues `task` behind the others (a
    /// yield's re-queue, `pop_front` then `push_back` in one): the pop makes
    /// room, so it never grows the ring; and when the front was the only
    /// task queued, `task` simply takes its slot (one store instead of
    /// three: a yield's stores are what a following atomic read-modify-write
    /// waits for). `None`, and `task` queued, if the queue was empty.
    #[inline(always)]
    pub(crate) fn rotate(&self, task: TaskRef) -> Option<TaskRef> {
        let head = self.head.get();
        let tail = self.tail.get();
        let task = task.into_raw();
        if head == tail {
            // SAFETY: `into_raw`'s reference, taken back once.
            self.push_back(unsafe { TaskRef::from_raw(task) });
            return None;
        }
        let mask = self.mask.get();
        // SAFETY: position `head` is queued (head != tail), so its slot,
        // inside the ring, holds a pointer from `into_raw`.
        let front = unsafe { self.slots.get().add(head & mask).read() };
        if tail.wrapping_sub(head) == 1 {
            // SAFETY: the front's slot, whose task was just read out of it:
            // `task` is now the only one queued, at the same position.
            unsafe { self.slots.get().add(head & mask).write(task) };
        } else {
            // SAFETY: position `tail` is not queued (fewer than capacity are
            // queued: the ring held at most capacity, and `head` leaves).
            unsafe { self.slots.get().add(tail & mask).write(task) };
            self.head.set(head.wrapping_add(1));
            self.tail.set(tail.wrapping_add(1));
        }
        // SAFETY: the front's reference, given up in `push_back`, taken back
        // once: its position is no longer queued (or holds `task` now).
        Some(unsafe { TaskRef::from_raw(front) })
    }

    /// Calls `f` with each queued task, oldest first, without taking it.
    pub(crate) fn for_each(&self, f: &mut dyn FnMut(*const Task)) {
        let mask = self.mask.get();
        let mut position = self.head.get();
        while position != self.tail.get() {
            // SAFETY: a queued position's slot, inside the ring.
            f(unsafe { self.slots.get().add(position & mask).read() });
            position = position.wrapping_add(1);
        }
    }

    /// Takes every queued task, oldest first (the caller drops them, out of
    /// the queue's reach).
    pub(crate) fn take_all(&self) -> Vec<TaskRef> {
        let mut tasks = Vec::with_capacity(self.len());
        while let Some(task) = self.pop_front() {
            tasks.push(task);
        }
        tasks
    }

    /// Doubles the ring, keeping the queued tasks' positions.
    #[cold]
    #[inline(never)]
    fn grow(&self) {
        let (old, old_capacity) = (self.slots.get(), self.mask.get() + 1);
        let capacity = old_capacity.checked_mul(2).expect("a run queue of more than usize::MAX / 2 tasks");
        let new = allocate(capacity);
        let mut position = self.head.get();
        while position != self.tail.get() {
            // SAFETY: both indices are masked into their rings; the old slot
            // holds a queued task, moved (as a raw pointer) to its new slot.
            unsafe {
                let task = old.add(position & (old_capacity - 1)).read();
                new.add(position & (capacity - 1)).write(task);
            }
            position = position.wrapping_add(1);
        }
        self.slots.set(new);
        self.mask.set(capacity - 1);
        // SAFETY: the old ring, allocated by `allocate(old_capacity)`; its
        // pointers were copied, so freeing it drops nothing.
        unsafe { free(old, old_capacity) };
    }
}

impl Drop for RunQueue {
    fn drop(&mut self) {
        drop(self.take_all());
        // SAFETY: the ring, allocated by `allocate(mask + 1)`, now empty.
        unsafe { free(self.slots.get(), self.mask.get() + 1) };
    }
}

/// A ring of `capacity` null slots.
fn allocate(capacity: usize) -> NonNull<*const Task> {
    let slots: Box<[*const Task]> = vec![ptr::null(); capacity].into_boxed_slice();
    // SAFETY: Box::into_raw never returns null.
    unsafe { NonNull::new_unchecked(Box::into_raw(slots).cast::<*const Task>()) }
}

/// Frees a ring from [`allocate`].
///
/// # Safety
///
/// `slots` came from `allocate(capacity)` and is not used afterwards.
unsafe fn free(slots: NonNull<*const Task>, capacity: usize) {
    // SAFETY: the caller's promise: this is the boxed slice `allocate` made.
    drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(slots.as_ptr(), capacity)) });
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::runtime::task;

    /// FIFO through several growths and wraps, and every queued reference
    /// handed back exactly once (the cells' counts balance).
    #[test]
    fn fifo_through_growth_and_wrap_keeps_every_reference() {
        let queue = RunQueue::new();
        let cells: Vec<TaskRef> = (0..300).map(|_| task::new_join_only::<()>().0).collect();
        let mut expected = std::collections::VecDeque::new();
        let mut next = 0;
        for round in 0..2_000usize {
            // Push 0..3 and pop 0..2 per round, so the queue grows, wraps and
            // drains repeatedly.
            for _ in 0..round % 4 {
                let cell = &cells[next % cells.len()];
                next += 1;
                queue.push_back(cell.clone());
                expected.push_back(cell.as_ptr());
            }
            for _ in 0..round % 3 {
                assert_eq!(queue.pop_front().map(|t| t.as_ptr()), expected.pop_front());
            }
            assert_eq!(queue.len(), expected.len());
        }
        let mut seen = Vec::new();
        queue.for_each(&mut |task| seen.push(task));
        assert_eq!(seen, expected.iter().copied().collect::<Vec<_>>());
        drop(queue);
        for cell in &cells {
            assert_eq!(cell.ref_count(), 1, "a queued reference leaked or was dropped twice");
        }
    }

    /// `rotate` is `pop_front` then `push_back` at every length: empty (it
    /// only queues), one (the slot is reused in place), several, a full
    /// ring (no growth needed), and across wraps; every reference handed
    /// back exactly once.
    #[test]
    fn rotate_is_a_pop_then_a_push_at_every_length() {
        let queue = RunQueue::new();
        let cells: Vec<TaskRef> = (0..200).map(|_| task::new_join_only::<()>().0).collect();
        let mut expected = std::collections::VecDeque::new();
        let mut next = 0;
        let mut fresh = || {
            next += 1;
            cells[next % cells.len()].clone()
        };
        assert!(queue.rotate(fresh()).is_none(), "an empty queue has no front to give back");
        expected.push_back(queue.peek(0));
        for target in [1, 1, 2, 5, INITIAL_CAPACITY, 3, 1, 0, 1] {
            while expected.len() < target {
                let cell = fresh();
                expected.push_back(cell.as_ptr());
                queue.push_back(cell);
            }
            while expected.len() > target {
                assert_eq!(queue.pop_front().map(|t| t.as_ptr()), expected.pop_front());
            }
            // Enough rotations to wrap the positions past the ring's end.
            for _ in 0..INITIAL_CAPACITY + 7 {
                let cell = fresh();
                let front = queue.rotate(cell.clone()).map(|t| t.as_ptr());
                if expected.is_empty() {
                    assert_eq!(front, None);
                } else {
                    assert_eq!(front, expected.pop_front());
                }
                expected.push_back(cell.as_ptr());
                assert_eq!(queue.len(), expected.len());
            }
            let mut seen = Vec::new();
            queue.for_each(&mut |task| seen.push(task));
            assert_eq!(seen, expected.iter().copied().collect::<Vec<_>>());
        }
        drop(queue.take_all());
        drop(queue);
        for cell in &cells {
            assert_eq!(cell.ref_count(), 1, "a queued reference leaked or was dropped twice");
        }
    }
}
