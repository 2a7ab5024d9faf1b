//! Per-worker counters and [`RuntimeMetrics`], what `Runtime::metrics`
//! returns.
//!
//! # Protocol: one writer per counter
//!
//! Each worker has a block of counters ([`WorkerCounters`]) in the part of
//! it other threads may read (`WorkerShared`), on cache lines of its own so
//! that its stores never contend with the inbox pushes of other threads.
//! Only the worker's own thread writes them — also from inside the
//! coroutines it runs, which run on that thread — so an increment is a
//! Relaxed load and a Relaxed store ([`bump`]), not a read-modify-write: no
//! `lock` prefix on the paths of every yield and spawn. Readers (the monitor,
//! `Runtime::metrics`) load them Relaxed: each value is one the worker
//! stored, never torn, but two counters read one after the other need not
//! be from the same instant, so derived figures (alive, parked) are
//! clamped at zero and exact only while the runtime is quiet.
//!
//! Spawns from outside the runtime (an OS thread calling `Runtime::spawn`)
//! have no worker to count them: they go to one runtime-wide counter with a
//! Relaxed `fetch_add` (that path already takes the injector's lock).
//!
//! ```text
//!  counter        where                                     hot path?
//!  -------------  ----------------------------------------  -----------------
//!  switches       run_task, before every resume             yes: one store
//!  spawned        spawn_on, spawns from a coroutine here    yes: one store
//!  started        run_task, first resume (home set)         no (cold branch)
//!  finished       spawn_on's wrapper, before the result      once per task
//!                 goes to the join handle; run_task, for a
//!                 coroutine that could not get a stack, and
//!                 one cancelled before it started
//!  dropped_       drop_cancelled_unstarted, with finished   no (cold)
//!   unstarted     (not started: not in `alive`)
//!  parks          run_task, the coroutine parked            hand-offs: one store
//!  local_wakes    unpark from the home worker's thread      hand-offs: one store
//!  remote_wakes   drain_inbox (wakes from other threads)     no (cold)
//!  steals         steal, tasks taken from other workers      no
//!  sleeps/wakeups sleep, around the futex wait               no
//!  timers_armed   add_timer                                  timed waits only
//! ```

use crate::loom::process::{AtomicU64, Ordering};
use std::fmt;

/// One worker's counters; see the module docs. Written only by the worker's
/// own thread.
#[derive(Default)]
pub(crate) struct WorkerCounters {
    pub(crate) switches: AtomicU64,
    pub(crate) spawned: AtomicU64,
    pub(crate) started: AtomicU64,
    pub(crate) finished: AtomicU64,
    /// Of `finished`, those cancelled before they started (never counted
    /// in `started`).
    pub(crate) dropped_unstarted: AtomicU64,
    pub(crate) parks: AtomicU64,
    pub(crate) local_wakes: AtomicU64,
    pub(crate) remote_wakes: AtomicU64,
    pub(crate) steals: AtomicU64,
    pub(crate) sleeps: AtomicU64,
    pub(crate) wakeups: AtomicU64,
    pub(crate) timers_armed: AtomicU64,
    pub(crate) io_events: AtomicU64,
}

/// Adds one to a counter that only the calling thread writes (see the
/// module docs): a load and a store, both Relaxed.
#[inline(always)]
pub(crate) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

/// Adds `n` to a counter that only the calling thread writes.
#[inline(always)]
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl WorkerCounters {
    /// A snapshot, Relaxed (see the module docs).
    pub(crate) fn read(&self) -> WorkerMetrics {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let started = load(&self.started);
        let finished = load(&self.finished);
        let parks = load(&self.parks);
        let local_wakes = load(&self.local_wakes);
        let remote_wakes = load(&self.remote_wakes);
        WorkerMetrics {
            spawned: load(&self.spawned),
            started,
            finished,
            alive: started.saturating_sub(finished.saturating_sub(load(&self.dropped_unstarted))),
            parked: parks.saturating_sub(local_wakes + remote_wakes),
            switches: load(&self.switches),
            parks,
            local_wakes,
            remote_wakes,
            steals: load(&self.steals),
            sleeps: load(&self.sleeps),
            wakeups: load(&self.wakeups),
            timers_armed: load(&self.timers_armed),
            io_events: load(&self.io_events),
        }
    }
}

/// The counters of one worker thread (or, in [`RuntimeMetrics::total`], of
/// all of them), as read by [`Runtime::metrics`](super::Runtime::metrics).
///
/// Counters only grow; `alive` and `parked` are derived from them. Each is
/// read on its own while the runtime runs, so figures of a busy runtime can
/// disagree with each other by a few; they are exact once it is quiet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerMetrics {
    /// Coroutines spawned by coroutines running on this worker (spawns from
    /// outside the runtime are in [`RuntimeMetrics::spawned_from_outside`]).
    pub spawned: u64,
    /// Coroutines that started here (their first run; they stay here).
    pub started: u64,
    /// Coroutines of this worker that ended: returned, panicked, could not
    /// get a stack, or were cancelled before they started (taken from a
    /// queue by this worker and dropped).
    pub finished: u64,
    /// Started and not finished (running, ready to run, or parked):
    /// `started - finished`, not counting in `finished` those cancelled
    /// before they started.
    pub alive: u64,
    /// Coroutines of this worker parked now: `parks - local_wakes -
    /// remote_wakes` (a woken one still in the inbox counts as parked).
    pub parked: u64,
    /// Resumes: how many times the worker switched into a coroutine.
    pub switches: u64,
    /// How many times a coroutine of this worker parked (waited on a lock,
    /// a join, a timer, ...).
    pub parks: u64,
    /// Wakes of this worker's coroutines done on this worker's own thread.
    pub local_wakes: u64,
    /// Wakes of this worker's coroutines that came from other threads
    /// (through its inbox).
    pub remote_wakes: u64,
    /// Unstarted coroutines this worker took from other workers.
    pub steals: u64,
    /// How many times the worker went to sleep (nothing to run).
    pub sleeps: u64,
    /// How many times it woke up again.
    pub wakeups: u64,
    /// Timed waits armed on this worker (`weft::sleep`, waits with a timeout).
    pub timers_armed: u64,
    /// Socket readiness events this worker's poller handled
    /// ([`crate::net`]: each may wake the coroutines waiting on a socket).
    pub io_events: u64,
}

impl WorkerMetrics {
    fn accumulate(&mut self, other: &WorkerMetrics) {
        self.spawned += other.spawned;
        self.started += other.started;
        self.finished += other.finished;
        self.alive += other.alive;
        self.parked += other.parked;
        self.switches += other.switches;
        self.parks += other.parks;
        self.local_wakes += other.local_wakes;
        self.remote_wakes += other.remote_wakes;
        self.steals += other.steals;
        self.sleeps += other.sleeps;
        self.wakeups += other.wakeups;
        self.timers_armed += other.timers_armed;
        self.io_events += other.io_events;
    }
}

/// What [`Runtime::metrics`](super::Runtime::metrics) returns: per-worker
/// counters, their sum, and runtime-wide figures.
///
/// ```
/// let runtime = weft::Runtime::builder().workers(1).build().expect("a worker thread");
/// runtime.block_on(|| {
///     let children: Vec<_> = (0..10).map(|_| weft::spawn(weft::yield_now)).collect();
///     for child in children {
///         child.join().expect("no panic");
///     }
/// });
/// let metrics = runtime.metrics();
/// assert_eq!(metrics.workers.len(), 1);
/// // block_on's own coroutine came from outside; its ten children from it.
/// assert_eq!(metrics.spawned(), 11);
/// assert_eq!(metrics.total.finished, 11);
/// assert!(metrics.total.switches >= 21); // each child ran twice
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeMetrics {
    /// The runtime's number, as in its worker threads' names (`weft-r<N>-w<i>`).
    pub runtime_id: usize,
    /// One entry per worker thread, in order.
    pub workers: Vec<WorkerMetrics>,
    /// The sum over `workers`.
    pub total: WorkerMetrics,
    /// Coroutines spawned on this runtime from outside it (OS threads,
    /// `block_on`, other runtimes).
    pub spawned_from_outside: u64,
    /// Threads in this runtime's `spawn_blocking` pool now.
    pub blocking_threads: usize,
    /// `spawn_blocking` jobs running now (`blocking_threads` minus the idle ones).
    pub blocking_jobs_running: usize,
    /// `spawn_blocking` jobs waiting for a thread.
    pub blocking_jobs_queued: usize,
    /// Coroutine stacks mapped in the whole process now (all runtimes, plus
    /// stacks kept in the per-thread caches for reuse).
    pub stacks_mapped: usize,
    /// Memory maps those stacks use: two each (the stack and its guard
    /// page), against `max_map_count`.
    pub stack_maps: u64,
    /// The kernel's limit on memory maps per process (`vm.max_map_count`),
    /// if it could be read.
    pub max_map_count: Option<u64>,
}

impl RuntimeMetrics {
    /// Every coroutine spawned on this runtime: from its coroutines and from
    /// outside.
    pub fn spawned(&self) -> u64 {
        self.total.spawned + self.spawned_from_outside
    }

    /// Coroutines spawned and not finished: started ones (`total.alive`)
    /// and those still waiting for their first run.
    pub fn alive(&self) -> u64 {
        self.spawned().saturating_sub(self.total.finished)
    }

    pub(crate) fn from_workers(workers: Vec<WorkerMetrics>) -> RuntimeMetrics {
        let mut total = WorkerMetrics::default();
        for worker in &workers {
            total.accumulate(worker);
        }
        RuntimeMetrics { workers, total, ..RuntimeMetrics::default() }
    }
}

/// A table: one row per worker and a total row, then the runtime-wide
/// figures, for a log line or a status page.
///
/// ```
/// let runtime = weft::Runtime::builder().workers(2).build().expect("worker threads");
/// runtime.block_on(|| weft::spawn(weft::yield_now).join().expect("no panic"));
/// let text = runtime.metrics().to_string();
/// assert!(text.starts_with("runtime "));
/// assert_eq!(text.lines().filter(|line| line.starts_with("worker ")).count(), 2);
/// assert!(text.lines().any(|line| line.starts_with("total")));
/// println!("{text}");
/// ```
impl fmt::Display for RuntimeMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "runtime {}: {} spawned ({} from outside), {} alive",
            self.runtime_id,
            self.spawned(),
            self.spawned_from_outside,
            self.alive()
        )?;
        const HEADINGS: [&str; 14] = [
            "spawned",
            "started",
            "finished",
            "alive",
            "parked",
            "switches",
            "parks",
            "local wakes",
            "remote wakes",
            "steals",
            "sleeps",
            "wakeups",
            "timers",
            "io events",
        ];
        let row = |m: &WorkerMetrics| {
            [
                m.spawned,
                m.started,
                m.finished,
                m.alive,
                m.parked,
                m.switches,
                m.parks,
                m.local_wakes,
                m.remote_wakes,
                m.steals,
                m.sleeps,
                m.wakeups,
                m.timers_armed,
                m.io_events,
            ]
        };
        let rows: Vec<(String, [u64; 14])> = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("worker {i}"), row(m)))
            .chain(std::iter::once(("total".to_string(), row(&self.total))))
            .collect();
        // Each column as wide as its heading or its widest number.
        let widths: Vec<usize> = (0..HEADINGS.len())
            .map(|c| rows.iter().map(|(_, r)| r[c].to_string().len()).chain([HEADINGS[c].len()]).max().unwrap_or(0))
            .collect();
        let label = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        write!(f, "{:label$}", "")?;
        for (heading, width) in HEADINGS.iter().zip(&widths) {
            write!(f, "  {heading:>width$}")?;
        }
        writeln!(f)?;
        for (name, values) in &rows {
            write!(f, "{name:label$}")?;
            for (value, width) in values.iter().zip(&widths) {
                write!(f, "  {value:>width$}")?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "spawn_blocking: {} threads, {} jobs running, {} queued",
            self.blocking_threads, self.blocking_jobs_running, self.blocking_jobs_queued
        )?;
        write!(f, "stacks mapped (whole process): {}, using {} memory maps", self.stacks_mapped, self.stack_maps)?;
        match self.max_map_count {
            Some(limit) => write!(f, " of vm.max_map_count {limit}"),
            None => Ok(()),
        }
    }
}
