//! The M:N runtime: coroutines scheduled over a few OS worker threads.
//!
//! # Glossary
//!
//! - **task**: one coroutine plus its scheduling state ([`task`]).
//! - **worker**: an OS thread (`weft-r<R>-w<N>`: worker N of runtime R)
//!   that runs tasks ([`worker`]).
//! - **monitor**: a thread per runtime (`weft-mon-r<R>`) that reports
//!   coroutines holding their worker too long and runtimes whose coroutines
//!   are all parked ([`monitor`]); it reads the per-worker counters of
//!   [`metrics`].
//! - **home worker**: the worker that first ran a task; a started task is
//!   only ever resumed there (DESIGN.md decision 3), so `thread_local!` and
//!   std's thread-bound internals stay sound inside coroutines.
//! - **park / unpark**: a task suspends until someone wakes it; the token
//!   protocol is in [`crate::park`]. A woken task goes to its home worker's
//!   inbox (or straight to its run queue when the waker is that worker).
//!
//! # Life of a spawn
//!
//! `spawn` wraps the closure in a coroutine (no stack yet) inside one heap
//! allocation that also holds the task's header and its join state (see
//! [`task`]), and queues it: on the spawning worker's `fresh` queue when
//! called from one of this runtime's coroutines, else on the runtime's
//! injector; a sleeping worker is woken to help. A worker pops it (or steals it, while unstarted), gives it
//! a stack from its cache at the first resume, and runs it until it yields,
//! parks or returns. The closure's result (or panic payload) goes to the
//! [`JoinHandle`]'s slot; `join` parks a coroutine or blocks an OS thread.
//!
//! The scheduling round, the idle protocol and the shutdown steps are
//! described at the top of [`worker`].

mod blocking;
mod cell_cache;
pub(crate) mod clock;
mod dump;
mod join;
mod metrics;
mod monitor;
mod panic_report;
pub(crate) mod poller;
mod run_queue;
mod scope;
mod task;
mod task_local;
mod worker;

pub use dump::{BusyWorker, CoroutineDump, CoroutineState, Dump, ParkedOn};
pub use join::{JoinError, JoinErrorKind, JoinHandle};
pub use metrics::{RuntimeMetrics, WorkerMetrics};
pub use scope::{Scope, ScopedJoinHandle, scope};
pub(crate) use task::{Task, TaskRef};
pub use task_local::{AccessError, LocalKey};

use crate::coroutine;
use crate::loom::process::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use crate::stack;
use crate::sys::futex::Deadline;
use blocking::BlockingPool;
use join::Failure;
use monitor::MonitorShared;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe, Location};
use std::ptr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use task::{NOT_REGISTERED, Switch};
use worker::{WorkerLocal, WorkerShared, with_current_worker};

thread_local! {
    /// The task running on this thread (set by its worker around a resume).
    pub(crate) static CURRENT_TASK: Cell<*const Task> = const { Cell::new(ptr::null()) };
    /// The `spawn_blocking` job running on this pool thread (its join cell),
    /// so that the job joining its own handle is refused as a coroutine's
    /// is (`JoinHandle::join_until`); null elsewhere.
    pub(crate) static CURRENT_BLOCKING_JOB: Cell<*const Task> = const { Cell::new(ptr::null()) };
    /// Whether CURRENT_TASK is still the worker's own strong reference
    /// (`Arc::into_raw` of the `Arc` it popped from a queue), lent to the
    /// running coroutine for its first park of this resume: see
    /// [`current_task_for_waker`].
    pub(crate) static CURRENT_TASK_LENT: Cell<bool> = const { Cell::new(false) };
    /// The runtime `Runtime::enter` made current on this thread, if any.
    static ENTERED: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

/// What all workers of one runtime share.
///
/// Aligned to two cache lines so that, in its `Arc`, the reference counts
/// have a line pair of their own: every spawn takes a `Weak` (a CAS on the
/// weak count) and every task cell's free drops one, while idle workers
/// write `spinning` and `sleepers` and every push reads them. Sharing one
/// line, they made each spawn wait for that line (perf, spawn+join of
/// 100 000 on 2 workers: `push_fresh` and the thieves' steal went from
/// 10.8 % and 9.2 % of the samples to 4.6 % and 4.8 %).
#[repr(align(128))]
pub(crate) struct Shared {
    /// A small process-unique number (1, 2, ...), in thread names and the
    /// monitor's messages.
    id: usize,
    workers: Vec<WorkerShared>,
    injector: Mutex<VecDeque<TaskRef>>,
    /// Length of `injector`, readable without the lock.
    injector_len: AtomicUsize,
    /// How many workers are (about to be) asleep.
    sleepers: AtomicUsize,
    /// How many idle workers are spinning, looking for work.
    spinning: AtomicUsize,
    shutdown: AtomicBool,
    blocking: Arc<BlockingPool>,
    /// Default usable stack size of this runtime's coroutines.
    stack_size: usize,
    /// Whether a coroutine of this runtime failed to get a stack yet (the
    /// first failure is reported on stderr, the others only to their join
    /// handles).
    stack_failure_reported: AtomicBool,
    /// Coroutines spawned from outside the runtime (the workers count their
    /// own spawns; see `metrics`).
    spawned_outside: AtomicU64,
    /// The anchor of the coroutines spawned from outside the runtime (each
    /// worker has its own for the spawns of its coroutines: `task::Anchor`).
    outside_anchor: Arc<task::Anchor>,
    monitor: MonitorShared,
}

impl Shared {
    /// Queues a task spawned from outside the runtime's workers (an OS
    /// thread, a `spawn_blocking` job, another runtime's coroutine).
    fn push_injector(&self, task: TaskRef) {
        self.push_injector_all(std::iter::once(task));
    }

    /// Queues unstarted tasks taken from a worker's `fresh` deque (by a dump
    /// of a worker that did not answer) on the injector, oldest first.
    fn requeue_unstarted(&self, tasks: Vec<TaskRef>) {
        if !tasks.is_empty() {
            self.push_injector_all(tasks);
        }
    }

    /// Pushes `tasks` onto the injector and wakes a worker for them. If the
    /// runtime shuts down meanwhile, fails them instead: `Runtime::drop`
    /// drains the injector once, after its workers stopped, and a push after
    /// that drain would never be failed (its joiner would wait for ever; a
    /// `spawn_blocking` job can outlive its runtime and spawn). The shutdown
    /// flag is read after the push (its lock) and stored before the drain
    /// (its lock), so either the drain finds the tasks or this sees the flag
    /// (and fails what it finds in the injector itself).
    fn push_injector_all(&self, tasks: impl IntoIterator<Item = TaskRef>) {
        {
            let mut injector = self.injector.lock().unwrap_or_else(|e| e.into_inner());
            injector.extend(tasks);
            self.injector_len.store(injector.len(), Ordering::SeqCst);
        }
        self.notify_one_sleeper();
        if self.shutdown.load(Ordering::SeqCst) {
            self.fail_injected();
        }
    }

    /// Fails the tasks in the injector (shutdown: a worker that waits for
    /// scoped coroutines, some of which may wait there, does it; see
    /// `WorkerLocal::unwind_all`). `Runtime::drop` does it once more after
    /// its workers have stopped.
    fn fail_injected(&self) {
        let left: Vec<_> = {
            let mut injector = self.injector.lock().unwrap_or_else(|e| e.into_inner());
            self.injector_len.store(0, Ordering::SeqCst);
            injector.drain(..).collect()
        };
        for task in left {
            fail_unstarted(task);
        }
    }

    /// How many coroutines wait in this runtime's queues to start (each
    /// will need a stack): the injector, every worker's fresh queue, and
    /// those spawned with [`Builder::same_worker`] in their worker's run
    /// queue.
    fn unstarted(&self) -> usize {
        self.injector_len.load(Ordering::Relaxed) + self.workers.iter().map(WorkerShared::unstarted_len).sum::<usize>()
    }

    /// Reports the first coroutine of this runtime that could not start
    /// because no stack could be mapped (once per runtime: a burst of such
    /// failures near the memory-map limit would otherwise flood stderr; each
    /// failure also ends its own join handle with the error).
    #[cold]
    fn report_stack_failure(&self, task: &Task, error: &io::Error) {
        if self.stack_failure_reported.swap(true, Ordering::Relaxed) {
            tracing::debug!(task = task.id, %error, "coroutine could not start");
            return;
        }
        let who = match &task.name {
            Some(name) => format!("coroutine {} ('{name}')", task.id),
            None => format!("coroutine {}", task.id),
        };
        tracing::warn!(task = task.id, %error, "coroutine could not start");
        eprintln!(
            "weft: {who} of runtime {} could not start: {error}\nweft: its join handle returns this error; further \
             coroutines of this runtime that cannot get a stack are not reported here, only to their join handles",
            self.id
        );
    }

    fn pop_injector(&self) -> Option<TaskRef> {
        if self.injector_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut injector = self.injector.lock().unwrap_or_else(|e| e.into_inner());
        let task = injector.pop_front();
        self.injector_len.store(injector.len(), Ordering::SeqCst);
        task
    }

    /// Wakes one sleeping worker, if any, to take stealable work.
    fn notify_one_sleeper(&self) {
        // SeqCst: the publisher's half of the Dekker pair with a worker going
        // to sleep (see `worker`): the work was pushed before this fence.
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) == 0 || self.spinning.load(Ordering::Relaxed) > 0 {
            return;
        }
        for worker in &self.workers {
            if worker.notify() {
                return;
            }
        }
    }
}

/// A runtime: worker threads that run coroutines.
///
/// ```
/// let runtime = weft::Runtime::builder().workers(2).build().expect("two worker threads");
/// let sum = runtime.block_on(|| {
///     let handles: Vec<_> = (1..=10u64).map(|i| weft::spawn(move || i * i)).collect();
///     handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
/// });
/// assert_eq!(sum, 385);
/// ```
///
/// Dropping the runtime stops its workers: coroutines that have not started
/// never start, and those that have started and not finished are unwound
/// (their destructors run on their own worker); the join handles of both
/// return a [`JoinError`] of kind [`Shutdown`](JoinErrorKind::Shutdown).
/// Each worker unwinds its coroutines one at a time, and an unwinding
/// coroutine can no longer suspend. In a destructor that runs then, a wait
/// on a lock, a condition variable, a semaphore, a barrier, a wait group or
/// a channel blocks the worker thread until it ends; a
/// [`sleep`](crate::sleep) returns at once, a [`JoinHandle::join`]
/// returns at once with an error of kind `Shutdown`, and a socket
/// operation that would have to wait fails at once with an error of kind
/// [`TimedOut`](std::io::ErrorKind::TimedOut) (a peer that stopped reading
/// cannot hold up the drop: a `BufWriter` flushing as it is dropped, say;
/// see [`crate::net`]). So a destructor must
/// not wait for something only another unfinished coroutine of the same
/// runtime would provide (a lock that coroutine holds, say): that coroutine
/// may be unwound only after it, and the drop would hang. Waits that other
/// threads end, and locks that nobody holds, are fine. The runtime's
/// monitor keeps watching until the workers have stopped, so a coroutine
/// that holds its worker during the shutdown is reported on stderr like any
/// stall (see [`RuntimeBuilder::stall_threshold`]).
///
/// A coroutine that is suspended in the middle of unwinding a panic (a
/// destructor that parked during the unwind) cannot be unwound a second
/// time: its stack is leaked, the destructors still on it never run, and
/// its join handle returns an error of kind `Shutdown`.
///
/// The drop does not wait for [`spawn_blocking`](crate::spawn_blocking)
/// jobs: those running finish on their own threads, and those queued still
/// run.
///
/// # Panics
///
/// Dropping a runtime from inside one of its own coroutines panics (the
/// drop would wait for the worker that runs it).
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    monitor: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Configures a [`Runtime`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RuntimeBuilder {
    workers: Option<usize>,
    stack_size: usize,
    stall_threshold: Option<Duration>,
    dump_signal: Option<i32>,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            workers: None,
            stack_size: stack::DEFAULT_STACK_SIZE,
            stall_threshold: Some(monitor::DEFAULT_STALL_THRESHOLD),
            dump_signal: None,
        }
    }
}

/// The most worker threads one runtime may have (said in
/// [`RuntimeBuilder::workers`]'s docs).
const MAX_WORKERS: usize = 4096;

/// The environment variable that, when [`RuntimeBuilder::dump_on_signal`]
/// is not called, names the signal (a number, or a name such as `SIGUSR1`
/// or `USR1`) on which every runtime prints its dump.
const DUMP_SIGNAL_ENV: &str = "WEFT_DUMP_SIGNAL";

impl RuntimeBuilder {
    /// The number of worker threads (default: `available_parallelism()`),
    /// from 1 to 4096; [`build`](Self::build) rejects others.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// The default usable stack size of coroutines spawned on this runtime
    /// (default [`crate::coroutine::DEFAULT_STACK_SIZE`], 256 KiB; rounded up
    /// to a page multiple and at least 32 KiB).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// How long a coroutine may hold its worker without yielding or parking
    /// before the runtime's monitor reports it on stderr (and as a
    /// `tracing` warning): once per stall, naming the coroutine, where it
    /// was spawned, how many coroutines wait for that worker, and the
    /// worker thread's backtrace; a second line when it lets go. Default
    /// 100 ms. A worker held as long between coroutines (by a destructor
    /// it runs there, say) is reported too. The monitor also prints a hint,
    /// once, when every coroutine of the runtime is parked and nothing
    /// inside the runtime can wake them.
    ///
    /// To name the coroutine, the monitor asks the stalled worker's own
    /// thread, with one `SIGURG` per stall (its handler restarts what it
    /// interrupts). A few blocking calls fail with
    /// [`io::ErrorKind::Interrupted`] when a signal arrives, restart or
    /// not (a socket read with a timeout, `poll`, `epoll_wait`: see
    /// signal(7)); a stalled coroutine blocked in one of them sees that
    /// error once. Blocking calls belong in
    /// [`spawn_blocking`](crate::spawn_blocking), where no probe goes.
    ///
    /// `None` turns the monitor off: no monitor thread is started, and
    /// neither report is printed. The counters of
    /// [`Runtime::metrics`] are kept either way. See the [crate docs](crate),
    /// "A started coroutine never moves to another thread", for what holds
    /// a worker.
    ///
    /// ```
    /// use std::time::Duration;
    /// let quiet = weft::Runtime::builder().workers(1).stall_threshold(None).build().expect("a worker");
    /// let patient = weft::Runtime::builder()
    ///     .workers(1)
    ///     .stall_threshold(Some(Duration::from_secs(1)))
    ///     .build()
    ///     .expect("a worker");
    /// # drop((quiet, patient));
    /// ```
    pub fn stall_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.stall_threshold = threshold;
        self
    }

    /// Prints the runtime's [`dump`](Runtime::dump) on stderr each time the
    /// process receives `signal` (for example `SIGUSR1`, from the `libc` crate), as Go prints its
    /// goroutines on SIGQUIT. The signal's previous handler is replaced.
    /// Without this call, the environment variable `WEFT_DUMP_SIGNAL` (a
    /// number, or a name such as `SIGUSR1`) does the same; an invalid value
    /// there is reported on stderr and ignored.
    ///
    /// The handler only writes a byte to a pipe; a thread named
    /// `weft-dump-signal` collects and prints the dump.
    pub fn dump_on_signal(mut self, signal: i32) -> Self {
        self.dump_signal = Some(signal);
        self
    }

    /// Starts the worker threads (and the monitor thread, unless
    /// [`stall_threshold`](Self::stall_threshold) is `None`).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for zero workers or more than
    /// 4096, an invalid stack size, or a signal
    /// [`dump_on_signal`](Self::dump_on_signal) cannot use (not a signal,
    /// one of SIGSEGV, SIGBUS, SIGURG, SIGKILL and SIGSTOP, or one that
    /// glibc keeps for itself: 32 up to SIGRTMIN); the OS error if a worker
    /// thread, the monitor thread or the dump-signal thread cannot be
    /// started.
    pub fn build(self) -> io::Result<Runtime> {
        let workers = match self.workers {
            Some(0) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "a runtime needs at least one worker thread"));
            }
            Some(n) if n > MAX_WORKERS => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a runtime of {n} worker threads is more than weft supports ({MAX_WORKERS}); ask for fewer"
                    ),
                ));
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_WORKERS),
        };
        let stack_size = stack::round_stack_size(self.stack_size)?;
        panic_report::install();
        static NEXT_RUNTIME_ID: AtomicUsize = AtomicUsize::new(1);
        let id = NEXT_RUNTIME_ID.fetch_add(1, Ordering::Relaxed);
        let dump_signal = match self.dump_signal {
            Some(signal) => {
                crate::sys::signal::check_dump_signal(signal)?;
                Some(signal)
            }
            None => dump_signal_from_env(),
        };
        // Each worker's `fresh` deque: the owner's end goes to its thread,
        // the thieves' end into its shared part.
        let deques: Vec<worker::Deque<TaskRef>> = (0..workers).map(|_| worker::Deque::new_lifo()).collect();
        let shared = Arc::new_cyclic(|weak| Shared {
            id,
            workers: deques.iter().map(|deque| WorkerShared::new(deque.stealer())).collect(),
            injector: Mutex::new(VecDeque::new()),
            injector_len: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            spinning: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            blocking: Arc::new(BlockingPool::default()),
            stack_size,
            stack_failure_reported: AtomicBool::new(false),
            spawned_outside: AtomicU64::new(0),
            outside_anchor: task::Anchor::new(weak.clone()),
            monitor: MonitorShared::new(),
        });
        let runtime = Runtime {
            shared: Arc::clone(&shared),
            threads: Mutex::new(Vec::with_capacity(workers)),
            monitor: Mutex::new(None),
        };
        for (index, deque) in deques.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let thread = std::thread::Builder::new()
                .name(format!("weft-r{id}-w{index}"))
                .spawn(move || worker::run(index, shared, deque))
                .map_err(|e| {
                    thread_start_error(e, &format!("worker thread {index} of {workers} (weft-r{id}-w{index})"))
                })?;
            runtime.threads.lock().unwrap_or_else(|e| e.into_inner()).push(thread);
        }
        if let Some(threshold) = self.stall_threshold {
            let thread = monitor::start(&shared, threshold)
                .map_err(|e| thread_start_error(e, &format!("the monitor thread (weft-mon-r{id})")))?;
            *runtime.monitor.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        }
        if let Some(signal) = dump_signal {
            dump::dump_on_signal(signal, &shared)?;
        }
        tracing::debug!(runtime = id, workers, stack_size, "runtime started");
        Ok(runtime)
    }
}

/// A thread of the runtime's own that could not start: the error says
/// which, and what limits the number of threads.
fn thread_start_error(error: io::Error, which: &str) -> io::Error {
    io::Error::new(
        error.kind(),
        format!(
            "cannot start {which}: {error}; the process may be at its limit of threads (ulimit -u, \
             kernel.threads-max, a cgroup's pids.max) or out of memory"
        ),
    )
}

/// The signal `WEFT_DUMP_SIGNAL` names, if it is set and valid (an invalid
/// one is reported on stderr, once per runtime built).
fn dump_signal_from_env() -> Option<i32> {
    let value = std::env::var(DUMP_SIGNAL_ENV).ok()?;
    match crate::sys::signal::parse_signal(&value).and_then(|s| crate::sys::signal::check_dump_signal(s).map(|()| s)) {
        Ok(signal) => Some(signal),
        Err(e) => {
            eprintln!("weft: ignoring {DUMP_SIGNAL_ENV}={value:?}: {e}");
            None
        }
    }
}

impl Runtime {
    /// A runtime with one worker per available CPU.
    ///
    /// ```
    /// let runtime = weft::Runtime::new().expect("worker threads");
    /// assert_eq!(runtime.block_on(|| "hi"), "hi");
    /// ```
    ///
    /// # Errors
    ///
    /// The OS error if a worker thread, the monitor thread or (with
    /// `WEFT_DUMP_SIGNAL` set) the dump-signal thread cannot be started.
    pub fn new() -> io::Result<Runtime> {
        RuntimeBuilder::default().build()
    }

    /// A [`RuntimeBuilder`] to choose the number of workers or the stack size.
    ///
    /// ```
    /// let runtime = weft::Runtime::builder().workers(2).stack_size(64 * 1024).build().unwrap();
    /// assert_eq!(runtime.workers(), 2);
    /// ```
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// This runtime's number: small, unique in the process, and part of its
    /// threads' names (`weft-r<N>-w<i>` for worker `i`) and of the monitor's
    /// messages, so that two runtimes can be told apart in a debugger.
    pub fn id(&self) -> usize {
        self.shared.id
    }

    /// The runtime's counters, per worker and in total (see
    /// [`RuntimeMetrics`] for an example). Reading them costs a few loads
    /// per worker and takes the `spawn_blocking` pool's lock briefly; the
    /// workers keep them at the cost of a store or two on their paths.
    pub fn metrics(&self) -> RuntimeMetrics {
        let shared = &self.shared;
        let mut metrics =
            RuntimeMetrics::from_workers(shared.workers.iter().map(|worker| worker.counters.read()).collect());
        metrics.runtime_id = shared.id;
        metrics.spawned_from_outside = shared.spawned_outside.load(Ordering::Relaxed);
        let blocking = shared.blocking.stats();
        metrics.blocking_threads = blocking.threads;
        metrics.blocking_jobs_running = blocking.running;
        metrics.blocking_jobs_queued = blocking.queued;
        metrics.stacks_mapped = stack::live_stacks();
        metrics.stack_maps = metrics.stacks_mapped as u64 * stack::MAPS_PER_STACK;
        static MAX_MAP_COUNT: OnceLock<Option<u64>> = OnceLock::new();
        metrics.max_map_count = *MAX_MAP_COUNT.get_or_init(crate::sys::mem::max_map_count);
        metrics
    }

    /// Runs `f` as a coroutine on this runtime and blocks the calling OS
    /// thread until it returns; a panic in `f` continues in the caller. `f`
    /// may borrow from the caller's stack.
    ///
    /// ```
    /// let runtime = weft::Runtime::builder().workers(2).build().unwrap();
    /// let words = vec!["straight", "line", "code"];
    /// let total = runtime.block_on(|| words.iter().map(|w| w.len()).sum::<usize>());
    /// assert_eq!(total, 16);
    /// ```
    ///
    /// # Panics
    ///
    /// When called from inside a coroutine: blocking would stall the worker
    /// thread that runs it (and could deadlock the runtime). Use
    /// [`Runtime::spawn`] and [`JoinHandle::join`] there instead.
    ///
    /// If `f`'s coroutine cannot get a stack (the process is at
    /// `vm.max_map_count`, or out of memory); the message says why.
    #[track_caller]
    pub fn block_on<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        if !CURRENT_TASK.with(Cell::get).is_null() {
            panic!(
                "Runtime::block_on was called from inside a coroutine; it would block the worker thread \
                 running it and can deadlock the runtime. Use `spawn(..)` and `join()` instead"
            );
        }
        /// Runs the caller's closure from a type-erased pointer.
        ///
        /// # Safety
        ///
        /// `f` points at an `Option<F>` and `out` at an
        /// `Option<std::thread::Result<T>>`, both alive and untouched by
        /// anyone else until the coroutine has finished.
        unsafe fn run_erased<F: FnOnce() -> T, T>(f: *mut (), out: *mut ()) {
            // SAFETY: the caller's promise.
            let f = unsafe { (*f.cast::<Option<F>>()).take() }.expect("block_on runs its closure once");
            let result = panic::catch_unwind(AssertUnwindSafe(f));
            // SAFETY: the caller's promise.
            unsafe { *out.cast::<Option<std::thread::Result<T>>>() = Some(result) };
        }
        struct Erased(unsafe fn(*mut (), *mut ()), *mut (), *mut ());
        // SAFETY: the pointers are only used by the coroutine, while
        // block_on waits for it below (see the SAFETY of the call).
        unsafe impl Send for Erased {}
        let mut f = Some(f);
        let mut out: Option<std::thread::Result<T>> = None;
        let erased = Erased(run_erased::<F, T>, (&raw mut f).cast(), (&raw mut out).cast());
        let handle =
            spawn_on(&self.shared, None, self.shared.stack_size, Location::caller(), Placement::Anywhere, move || {
                let erased = erased;
                // SAFETY: `f` and `out` live on block_on's stack, which does not
                // return before this coroutine has finished: it joins it below,
                // and the runtime cannot shut down meanwhile (block_on borrows it).
                unsafe { (erased.0)(erased.1, erased.2) }
            });
        match handle.join() {
            Ok(()) => match out.take().expect("the coroutine stored its result") {
                Ok(value) => value,
                Err(payload) => panic::resume_unwind(payload),
            },
            // It never ran (no stack): report why.
            Err(error) => panic!("Runtime::block_on: {error}"),
        }
    }

    /// Every live coroutine of this runtime: its id, name, spawn site, home
    /// worker, state (running, runnable, parked — on what — or unstarted),
    /// for how long, and, for a suspended one, the backtrace of where it
    /// waits. `{}` prints it all, `{:#}` one line per coroutine, and
    /// [`Dump::coroutines`] gives the same as data.
    ///
    /// ```
    /// use weft::{CoroutineState, ParkedOn};
    /// use std::time::Duration;
    ///
    /// let runtime = weft::Runtime::builder().workers(1).build().unwrap();
    /// let sleeper = runtime.spawn(|| weft::sleep(Duration::from_millis(200)));
    /// std::thread::sleep(Duration::from_millis(50)); // let it start sleeping
    /// let dump = runtime.dump();
    /// let entry = dump.coroutine(sleeper.id()).expect("it is alive");
    /// assert!(matches!(entry.state(), CoroutineState::Parked { on: ParkedOn::Sleep, .. }));
    /// println!("{dump}"); // its backtrace goes through `weft::sleep`
    /// sleeper.join().unwrap();
    /// ```
    ///
    /// Each worker lists its own coroutines, between two of its scheduling
    /// rounds, walking each suspended stack where it lies (so the dump
    /// holds every worker for about as long as its walks take; identical
    /// stacks are symbolised once, when the dump is printed). A worker that
    /// does not answer within half a second is busy running one coroutine
    /// without switching: [`Dump::busy_workers`] names it and that
    /// coroutine, and its other started coroutines are missing. Called from
    /// one of the runtime's own coroutines, it works too: that coroutine
    /// lists itself as running.
    pub fn dump(&self) -> Dump {
        dump::collect(&self.shared)
    }

    /// Spawns a coroutine on this runtime.
    ///
    /// ```
    /// let runtime = weft::Runtime::builder().workers(1).build().unwrap();
    /// let handle = runtime.spawn(|| 2 + 2);
    /// assert_eq!(handle.join().unwrap(), 4);
    /// ```
    #[track_caller]
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        spawn_on(&self.shared, None, self.shared.stack_size, Location::caller(), Placement::Anywhere, f)
    }

    /// Makes this runtime the one that bare [`weft::spawn`](crate::spawn),
    /// [`spawn_blocking`](crate::spawn_blocking) and
    /// [`Builder::spawn`] use on this OS thread, until the guard is dropped
    /// (without it, they start a default runtime of their own on first use
    /// outside a coroutine). Guards nest: dropping one restores what was
    /// entered before it.
    ///
    /// ```
    /// let runtime = weft::Runtime::builder().workers(1).build().unwrap();
    /// let _entered = runtime.enter();
    /// let handle = weft::spawn(|| std::thread::current().name().map(str::to_owned));
    /// let worker = handle.join().unwrap().expect("workers are named");
    /// assert_eq!(worker, format!("weft-r{}-w0", runtime.id()));
    /// ```
    ///
    /// # Panics
    ///
    /// Inside a coroutine, where spawns already go to the coroutine's own
    /// runtime (entering another one there would make every coroutine of
    /// the worker thread see it).
    ///
    /// When a guard is dropped before a guard entered after it on the same
    /// thread (guards must be dropped in the reverse order of `enter`).
    #[track_caller]
    pub fn enter(&self) -> EnterGuard<'_> {
        if !CURRENT_TASK.with(Cell::get).is_null() {
            panic!(
                "Runtime::enter was called from inside a coroutine; spawns there already use the coroutine's own \
                 runtime (use Runtime::spawn or Builder::spawn_on to reach another one)"
            );
        }
        let previous = ENTERED.with(|entered| entered.replace(Some(Arc::clone(&self.shared))));
        EnterGuard { previous, entered: Arc::as_ptr(&self.shared), _runtime: PhantomData }
    }
}

/// Keeps a runtime current on this OS thread; see [`Runtime::enter`].
#[must_use = "the runtime is current only while the guard lives"]
pub struct EnterGuard<'a> {
    previous: Option<Arc<Shared>>,
    entered: *const Shared,
    /// Borrows the runtime (it cannot shut down while entered) and is
    /// `!Send` (it restores this thread's state).
    _runtime: PhantomData<(&'a Runtime, *const ())>,
}

impl Drop for EnterGuard<'_> {
    fn drop(&mut self) {
        let current = ENTERED.with(|entered| entered.replace(self.previous.take()));
        let in_order = current.as_ref().is_some_and(|current| ptr::eq(Arc::as_ptr(current), self.entered));
        if !in_order && !std::thread::panicking() {
            panic!("weft::EnterGuard values were dropped out of order: drop the latest `Runtime::enter` guard first");
        }
    }
}

impl fmt::Debug for EnterGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnterGuard").finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let inside = with_current_worker(|w| w.is_some_and(|w| Arc::ptr_eq(&w.shared, &self.shared)));
        if inside {
            // Joining our own worker would never return.
            panic!("a weft Runtime was dropped from inside one of its own coroutines; drop it from outside");
        }
        tracing::debug!(runtime = self.shared.id, "runtime shutting down");
        // The monitor keeps watching while the workers unwind their
        // coroutines and exit: a coroutine that holds its worker there holds
        // up this drop, and is reported as any stall is. (A worker thread
        // unwatches itself before it exits, after any probe in flight, so
        // no probe signals a thread that is gone: `monitor`.)
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for worker in &self.shared.workers {
            worker.force_wake();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        // A worker thread never panics (a coroutine's panic is caught at its
        // entry): one that did hit a bug of weft's own. Its message is on
        // stderr already; its payload goes on to the dropper, after the
        // rest of the shutdown, unless the dropper is panicking already.
        let mut worker_panic = None;
        for thread in threads {
            if let Err(payload) = thread.join() {
                worker_panic.get_or_insert(payload);
            }
        }
        let monitor = self.monitor.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(monitor) = monitor {
            self.shared.monitor.stop();
            let _ = monitor.join();
        }
        self.shared.fail_injected();
        self.shared.blocking.shutdown();
        if let Some(payload) = worker_panic
            && !std::thread::panicking()
        {
            panic::resume_unwind(payload);
        }
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("id", &self.shared.id)
            .field("workers", &self.shared.workers.len())
            .finish_non_exhaustive()
    }
}

/// Ends the join handle of a task that will never start, and drops its closure.
fn fail_unstarted(task: TaskRef) {
    // SAFETY: the task is unstarted and we took it from a queue: we own it.
    unsafe { drop_unstarted_closure(&task) };
    // SAFETY: its closure is gone: it never runs, and nothing else fails it
    // (we own the unstarted task).
    unsafe { task.fail(Failure::Shutdown { started: false }) };
}

/// Drops the closure of a task that will never start (cancelled, refused a
/// stack, or left at shutdown), on the worker (or dropping) thread that took
/// it. A captured value whose destructor panics must not unwind that
/// thread: the panic is caught here, after the panic hook reported it, and
/// the task's join handle still ends.
///
/// # Safety
///
/// The task is unstarted and the caller took it from a queue: it owns the
/// task's coroutine.
pub(crate) unsafe fn drop_unstarted_closure(task: &Task) {
    // SAFETY: the caller's promise.
    let coroutine = unsafe { task.coroutine_mut() };
    // `end` marks the coroutine finished before it drops the closure, so a
    // panic out of that drop leaves it consistent.
    if panic::catch_unwind(AssertUnwindSafe(|| coroutine.end())).is_err() {
        tracing::warn!(task = task.id, "the closure of a coroutine that never started panicked when dropped");
    }
}

/// Which workers may start a new coroutine.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Its spawner's worker first (newest first), or whichever worker takes
    /// it from there or from the injector.
    Anywhere,
    /// Only the spawner's worker, which is the current thread's (checked by
    /// the caller): the task waits in that worker's run queue, which no
    /// other worker touches ([`Builder::same_worker`]).
    SameWorker,
}

/// Creates the task for `f` and queues it on `shared`.
#[track_caller]
fn spawn_on<F, T>(
    shared: &Arc<Shared>,
    name: Option<String>,
    stack_size: usize,
    spawned_at: &'static Location<'static>,
    placement: Placement,
    f: F,
) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let body = move |yielder: &coroutine::Yielder<(), ()>, ()| {
        let task_ptr = CURRENT_TASK.with(Cell::get);
        // SAFETY: the worker sets CURRENT_TASK to this task around every
        // resume, and the task is alive while it runs (its lent reference or
        // its worker's registry).
        let task = unsafe { &*task_ptr };
        task.set_yielder(yielder);
        let outcome = match panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(value) => Ok(value),
            // Our own unwind (a cancel, or the runtime's shutdown) ends
            // here: the coroutine returns normally, which also ends a
            // shutdown's unwind (the coroutine has finished either way).
            Err(payload) if coroutine::is_forced_unwind(&*payload) => {
                Err(if task.cancel_begun.get() { Failure::Cancelled } else { Failure::Shutdown { started: true } })
            }
            Err(payload) => Err(Failure::panic(payload)),
        };
        // Its task-locals go while it still runs on its own stack and worker.
        task_local::drop_all(task);
        // Counted before the result is handed over, so that whoever joins
        // sees it in `Runtime::metrics`. A task runs on its worker's thread,
        // the counter's one writer.
        with_current_worker(|w| metrics::bump(&w.expect("a coroutine runs on a worker").counters().finished));
        // SAFETY: this body runs in the task `new_task::<_, T>` made for it
        // below (result type T); `task_ptr` is that cell's own pointer, and
        // the cell outlives this body, which runs inside it.
        let result_slot = unsafe { task::join_state_of::<T>(task_ptr) };
        // SAFETY: the coroutine's body runs once, and this is its end: the
        // task's one finisher (a task that runs never `fail`s).
        unsafe { result_slot.complete(outcome) };
        // A detached result was dropped in `complete`, and its destructor
        // may have set task-locals: they go too (nothing to do, usually).
        task_local::drop_all(task);
        // Last: the panic report no longer looks for this task's stack.
        task.clear_yielder();
    };
    let spawned = with_current_worker(|w| match w {
        Some(w) if Arc::ptr_eq(&w.shared, shared) => {
            // The worker's own anchor: its count is (mostly) this worker's
            // alone (`task::Anchor`).
            let (task, joined) = task::new_task::<_, T>(name, stack_size, spawned_at, body, Arc::clone(&w.anchor));
            tracing::trace!(task = task.id, "spawn");
            metrics::bump(&w.counters().spawned);
            match placement {
                Placement::Anywhere => w.push_fresh(task),
                // Only this worker pops its run queue: nobody can take it.
                Placement::SameWorker => w.push_pinned(task),
            }
            Ok(joined)
        }
        _ => Err((name, body)),
    });
    let joined = match spawned {
        Ok(joined) => joined,
        Err((name, body)) => {
            debug_assert!(placement == Placement::Anywhere, "a same_worker spawn off a worker of its runtime");
            spawn_outside::<_, T>(shared, name, stack_size, spawned_at, body)
        }
    };
    // SAFETY: `joined` is the second reference new_task::<_, T> returned.
    unsafe { JoinHandle::from_task(joined) }
}

/// `spawn_on`'s path off the runtime's workers (an OS thread, or another
/// runtime's worker): the task goes to the injector. Out of line, so that
/// the spawn from a coroutine, the common one, holds one copy of `new_task`.
#[cold]
#[inline(never)]
fn spawn_outside<B, T>(
    shared: &Arc<Shared>,
    name: Option<String>,
    stack_size: usize,
    spawned_at: &'static Location<'static>,
    body: B,
) -> TaskRef
where
    B: FnOnce(&coroutine::Yielder<(), ()>, ()) + Send + 'static,
    T: Send + 'static,
{
    let (task, joined) = task::new_task::<_, T>(name, stack_size, spawned_at, body, Arc::clone(&shared.outside_anchor));
    tracing::trace!(task = task.id, "spawn");
    shared.spawned_outside.fetch_add(1, Ordering::Relaxed);
    shared.push_injector(task);
    joined
}

/// The task running on this thread.
pub(crate) fn current_task() -> Option<TaskRef> {
    let task = CURRENT_TASK.with(Cell::get);
    if task.is_null() {
        return None;
    }
    // A running task is alive: the worker's reference is lent to it for
    // this resume, or, once a park took that one (`current_task_for_waker`),
    // its worker's registry holds one until its coroutine has returned.
    // SAFETY: alive, as just said; we add a reference of our own.
    Some(unsafe { TaskRef::clone_from_ptr(task) })
}

/// The address of the task running on this thread, if any: an identity
/// unique among the tasks alive (a task keeps its address while it runs),
/// without a reference taken.
pub(crate) fn current_task_addr() -> Option<usize> {
    let task = CURRENT_TASK.with(Cell::get);
    (!task.is_null()).then_some(task as usize)
}

/// The task running on this thread, as the reference a waker will hold
/// while it waits: the first call of a resume takes the worker's own
/// reference (`CURRENT_TASK_LENT`), so a park and the wake that follows move
/// one reference from run queue to wait node and back without touching its
/// count; later calls add a reference, like [`current_task`].
///
/// The worker can lend its reference because it does not need it to keep
/// the task alive: before handing it over, this puts the task into its home
/// worker's registry (the first time it parks; the registry holds a
/// reference of its own until the coroutine has returned), and the worker
/// takes a new reference after the resume wherever it needs an owned one
/// (`WorkerLocal::run_task`).
#[inline] // on every park
pub(crate) fn current_task_for_waker() -> Option<TaskRef> {
    let task = CURRENT_TASK.with(Cell::get);
    if task.is_null() {
        return None;
    }
    if CURRENT_TASK_LENT.with(|lent| lent.replace(false)) {
        // SAFETY: CURRENT_TASK came from `TaskRef::into_raw` in run_task,
        // which set the flag that we just cleared: that reference is handed
        // over exactly once, here, and run_task does not use it afterwards.
        let lent = unsafe { TaskRef::from_raw(task) };
        if lent.registry_slot.get() == NOT_REGISTERED {
            with_current_worker(|w| w.expect("a lent task reference is set by a worker").register_if_needed(&lent));
        }
        return Some(lent);
    }
    // Not `current_task()`: that would read the thread-local and test it
    // for null again, and so would the caller's match on the result.
    // SAFETY: as in `current_task`.
    Some(unsafe { TaskRef::clone_from_ptr(task) })
}

/// Names what the running coroutine is about to park on, for the dump
/// (two stores into its task); does nothing on an OS thread. A park that
/// does not name itself shows the latest wait named.
#[inline]
pub(crate) fn note_wait(on: ParkedOn) {
    let task = CURRENT_TASK.with(Cell::get);
    if !task.is_null() {
        // SAFETY: as in `current_task`; `waiting_on` is only touched on the
        // task's home worker thread, which this is (it runs the task).
        unsafe { (*task).waiting_on.set(on) };
    }
}

/// Whether the caller is a coroutine whose worker has nothing else to run
/// right now: no started task in its run queue and no unstarted one in its
/// fresh deque (its inbox and the other workers' queues are not looked at).
/// `false` on an OS thread.
pub(crate) fn worker_has_nothing_else() -> bool {
    with_current_worker(|w| w.is_some_and(WorkerLocal::has_nothing_queued))
}

/// For a coroutine that its runtime is unwinding at shutdown and that
/// waits for coroutines it spawned meanwhile (which will never run; a
/// spawn from a coroutine goes to its own worker's queue): fails the
/// unstarted tasks in its worker's queues, as the shutdown would after it.
pub(crate) fn fail_unstarted_here_at_shutdown() {
    with_current_worker(|w| {
        if let Some(w) = w {
            w.empty_queues();
        }
    });
}

/// Whether this is a worker thread running no coroutine: a destructor the
/// worker runs between coroutines (of an unstarted closure, of a detached
/// result), where waiting would hold the worker.
pub(crate) fn on_worker_between_coroutines() -> bool {
    CURRENT_TASK.with(Cell::get).is_null() && with_current_worker(|w| w.is_some())
}

/// Whether the caller is a coroutine that its runtime is unwinding at
/// shutdown.
pub(crate) fn in_shutdown_unwind() -> bool {
    let task = CURRENT_TASK.with(Cell::get);
    // SAFETY: as in `current_task`: non-null while its coroutine runs.
    !task.is_null() && unsafe { (*task).unwinding.get() }
}

/// Whether the caller is a coroutine that may park (not one its runtime is
/// unwinding at shutdown, which waits like an OS thread: see
/// `park::Unparker::current`).
pub(crate) fn in_parkable_coroutine() -> bool {
    let task = CURRENT_TASK.with(Cell::get);
    // SAFETY: as in `current_task`: non-null while its coroutine runs.
    !task.is_null() && !unsafe { (*task).unwinding.get() }
}

/// Parks the running coroutine until [`unpark`] (may return spuriously).
///
/// # Panics
///
/// Outside a coroutine.
///
/// Always inline, with the cancel's part out of line: the switch inside
/// goes to the parker's frame (see `yield_now`), and every frame between a
/// lock's or channel's caller and the suspend costs mispredicted returns
/// when the coroutine is resumed (BENCHMARKS.md, "What the hand-off costs").
#[inline(always)]
pub(crate) fn park_current_task() {
    park_current_task_with::<true>();
}

/// As [`park_current_task`], but a requested cancel does not begin its
/// unwind here: for a wait that must end before its frame may unwind
/// (`weft::scope`'s wait for its scoped coroutines). A cancel's wake is a
/// spurious one for it.
pub(crate) fn park_current_task_uncancellable() {
    park_current_task_with::<false>();
}

#[inline(always)]
fn park_current_task_with<const CANCELLABLE: bool>() {
    let task = CURRENT_TASK.with(Cell::get);
    assert!(!task.is_null(), "park_current_task called outside a coroutine");
    // SAFETY: as in `current_task`.
    let task = unsafe { &*task };
    if task.unwinding.get() {
        // Its worker is unwinding it at shutdown and a destructor parks:
        // suspending now would be answered with a second unwind inside that
        // destructor, which aborts. Return as a spurious wake instead.
        return;
    }
    if CANCELLABLE && task.cancel_requested() && park_cancelled(task) {
        return;
    }
    if !task.park.prepare_park() {
        return; // a token was waiting: a (possibly spurious) wake
    }
    // For the dump: one load of a thread-local and one store (no clock
    // read). A yield is not stamped: the yield path is the shortest there
    // is, and a runnable task's wait is a queue's.
    task.since.set(clock::coarse());
    // Straight to the next task of this worker when the worker's round
    // would do nothing else (see `WorkerLocal::park_direct`).
    if !worker::park_direct(task) {
        // SAFETY: we are the running coroutine of `task`.
        unsafe { task.switch_out(Switch::Park) };
    }
    task.park.after_wake();
}

/// The part of [`park_current_task`] for a task whose cancel was requested:
/// begins the cancel's unwind if it is due and can begin (then it does not
/// return). Returns whether the park is over (it parked for a while
/// instead, see below); false lets the caller park as usual.
#[cold]
#[inline(never)]
fn park_cancelled(task: &Task) -> bool {
    if !task.cancel_due() {
        return false;
    }
    // Cancelled while it ran: the wake that `cancel` sent may be the token
    // this park would consume, so nobody would wake it again.
    begin_cancel_unwind(task);
    if task.cancel_begun.get() {
        return false;
    }
    // Still here, not unwinding: the cancel waits until the thread is not
    // unwinding a panic (`begin_cancel_unwind`), which may be another
    // coroutine's, parked mid-unwind. The cancel's wake is spent, so a plain
    // park could sleep for good: look again soon.
    park_deferring_cancel(task);
    true
}

/// How long a coroutine whose cancel is deferred (see
/// [`begin_cancel_unwind`]) parks before it looks again.
const DEFERRED_CANCEL_RETRY: Duration = Duration::from_millis(1);

/// `park_current_task` for a task whose cancel could not begin: parks for
/// at most [`DEFERRED_CANCEL_RETRY`] (or until woken), then returns as a
/// spurious wake, so that its caller looks again and its next park retries
/// the cancel. The thread stops panicking when the unwind that defers it
/// ends: for another coroutine's, when that one is resumed and finishes.
#[cold]
#[inline(never)]
fn park_deferring_cancel(task: &Task) {
    let Some(task_ref) = current_task_for_waker() else { return };
    wake_at(Deadline::after(DEFERRED_CANCEL_RETRY), &task_ref);
    if task.park.prepare_park() {
        task.since.set(clock::coarse());
        // SAFETY: we are the running coroutine of `task`.
        unsafe { task.switch_out(Switch::Park) };
        task.park.after_wake();
    }
    disarm_timer();
}

/// Wakes `task` (the coroutine running on this thread) when `deadline`
/// passes, unless its timed park ends first and calls [`disarm_timer`].
/// The wake may still arrive after the task stopped waiting (the deadline
/// passed while it was already woken, before it ran): it is then a spurious
/// token, which parkers tolerate.
pub(crate) fn wake_at(deadline: Deadline, task: &TaskRef) {
    with_current_worker(|w| w.expect("a running coroutine has a worker").add_timer(deadline, task));
}

/// Ends the running coroutine's timed park, however it ended: a timer that
/// has not fired is cancelled, so it neither wakes the coroutine later nor
/// keeps its task alive (see "Timers" in `worker`). Does nothing outside a
/// coroutine or when no timer is armed. Call it with no parking-lot bucket
/// or other lock held: it may drop the last reference to another, finished
/// task (running its result's destructor).
#[inline]
pub(crate) fn disarm_timer() {
    let task = CURRENT_TASK.with(Cell::get);
    if task.is_null() {
        return;
    }
    // SAFETY: as in `current_task`.
    let task = unsafe { &*task };
    if task.timer_armed.get() {
        with_current_worker(|w| w.expect("a running coroutine has a worker").disarm_timer(task));
    }
}

/// Where the panic report should look first for the running coroutine: the
/// stack of the task running on this thread, if any (see
/// `Task::stack_hint`).
pub(crate) fn current_stack_hint() -> Option<std::ptr::NonNull<u8>> {
    let task = CURRENT_TASK.with(Cell::get);
    // SAFETY: as in `current_task`; CURRENT_TASK is set only on the task's
    // home worker thread, which this is.
    (!task.is_null()).then(|| unsafe { (*task).stack_hint() }).flatten()
}

/// Whether the calling coroutine is being unwound by its runtime's shutdown
/// (its destructors are running; waiting would never end).
pub(crate) fn current_task_is_unwinding() -> bool {
    let task = CURRENT_TASK.with(Cell::get);
    // SAFETY: as in `current_task`.
    !task.is_null() && unsafe { (*task).unwinding.get() }
}

/// Whether the calling coroutine is being unwound for good: by its
/// cancellation (once that unwind has begun) or by its runtime's shutdown.
/// A socket operation then does not wait (`poller`): its peer could hold
/// the unwind up for as long as it likes.
pub(crate) fn current_task_is_ending() -> bool {
    let task = CURRENT_TASK.with(Cell::get);
    // SAFETY: as in `current_task`.
    !task.is_null() && unsafe { (*task).cancel_begun.get() || (*task).unwinding.get() }
}

/// Starts the cancellation unwind of `task`, the running coroutine, unless
/// it has begun already (a destructor of that unwind parks) or its runtime
/// is unwinding it at shutdown. Called where it is about to park, and where
/// it is resumed from a park or yield.
#[cold]
#[inline(never)]
pub(crate) fn begin_cancel_unwind(task: &Task) {
    if task.cancel_begun.get() || task.unwinding.get() {
        return;
    }
    // Held while it waits at the end of a `weft::scope` (its frame must not
    // unwind before its scoped coroutines end); the request stays.
    if task_local::cancel_held(task) {
        return;
    }
    // Its result is handed over: the cancel came too late (a detached
    // result's destructor may be what parks now; see `Task::cancel_due`).
    if !task.cancel_due() {
        return;
    }
    // A destructor that parks while a panic unwinds the coroutine: a second
    // unwind from inside it would abort the process (as `Coroutine`'s own
    // drop knows, which leaks such a stack rather than unwind it). The
    // request stays, and the next park or yield looks again (a park does
    // so every millisecond: `park_deferring_cancel`). std counts panics per
    // thread, so while any coroutine of this worker is suspended mid-panic,
    // cancels of the others wait for that to end too.
    if std::thread::panicking() {
        return;
    }
    task.cancel_begun.set(true);
    tracing::debug!(task = task.id, "cancelled: unwinding");
    coroutine::start_forced_unwind()
}

/// `JoinHandle::cancel`: marks the task and wakes it if it is parked, so
/// that it unwinds (see `begin_cancel_unwind`); an unstarted task is
/// dropped by the worker that takes it (`WorkerLocal::run_task_first`).
///
/// The flag is written (Release) before the wake. A parked task is resumed
/// by its worker after that wake reaches it (run queue, or inbox), so the
/// check on its way back sees the flag. A running task gets a token
/// instead, made on its home thread after the flag was seen there: its next
/// park finds the token, returns, and the park it retries sees the flag
/// before it suspends. A wake that finds the task unstarted is dropped:
/// the start's swap of its park word (`ParkState::end_delivery`) makes the
/// flag visible to the task, which looks at its first park or yield.
pub(crate) fn cancel(task: &TaskRef) {
    if task.is_finished() || !task.request_cancel() {
        return;
    }
    tracing::debug!(task = task.id, "cancel requested");
    unpark(task.clone());
}

/// Whether the calling coroutine was cancelled with
/// [`JoinHandle::cancel`]; in a [`spawn_blocking`] job, whether the job's
/// handle was; `false` elsewhere (a plain OS thread).
///
/// A cancelled coroutine unwinds at its next park or yield; one that
/// computes for long without either can poll this to stop early. A
/// blocking job that has started is never interrupted (its thread runs it
/// to the end): polling this is how it stops early.
///
/// ```
/// let worker = weft::spawn(|| {
///     let mut rounds = 0u64;
///     while !weft::is_cancelled() {
///         rounds += 1; // a long computation, in slices
///         if rounds % 1024 == 0 {
///             weft::yield_now(); // a cancel would unwind here too
///         }
///     }
///     rounds
/// });
/// worker.cancel();
/// // Cancelled at a yield, or it saw the flag and returned its count.
/// match worker.join() {
///     Ok(rounds) => println!("stopped after {rounds} rounds"),
///     Err(error) => assert!(error.is_cancelled()),
/// }
/// ```
pub fn is_cancelled() -> bool {
    let mut task = CURRENT_TASK.with(Cell::get);
    if task.is_null() {
        task = CURRENT_BLOCKING_JOB.with(Cell::get);
    }
    // SAFETY: as in `current_task` for a coroutine's task; a blocking job's
    // cell is kept alive by the job itself (its `finisher`) while it runs,
    // which is while CURRENT_BLOCKING_JOB points at it.
    !task.is_null() && unsafe { (*task).cancel_requested() }
}

/// Wakes a parked task (or leaves it a token); schedules it on its home
/// worker. On that worker's own thread the wake is made here, with plain
/// loads and stores; from any other thread it goes through the worker's
/// inbox (see `park`'s module docs).
// Always inline: on every hand-off (`park::Unparker::unpark`), where a call
// costs its register saves and restores (~9 of a Condvar hand-off's
// instructions); the wake from another thread is the cold, out-of-line part.
#[inline(always)]
pub(crate) fn unpark(task: TaskRef) {
    // (No trace event here or in park_current_task: they sit on every
    // hand-off between coroutines; spawn, steal and sleep are traced.)
    let home = task.home();
    let task = with_current_worker(|w| match w {
        Some(w) if w.index == home && std::sync::Weak::ptr_eq(&w.shared_weak, &task.runtime.shared) => {
            // This thread is the task's home: its park word is ours to touch.
            if task.park.wake_here() {
                metrics::bump(&w.counters().local_wakes);
                w.push_runnable(task);
            }
            None
        }
        _ => Some(task),
    });
    if let Some(task) = task {
        unpark_remote(task);
    }
}

/// `unpark` from another thread than the task's home worker's: into that
/// worker's inbox, waking it if it sleeps, unless a wake is on its way
/// there already, the task has not started, or its runtime is gone.
#[cold]
#[inline(never)]
fn unpark_remote(task: TaskRef) {
    if !task.park.claim_delivery() {
        return;
    }
    // Read after the claim: a started task's home is set before its start
    // ends its first delivery (`ParkState::end_delivery`, whose Release the
    // claim's Acquire reads).
    let home = task.home();
    debug_assert_ne!(home, task::NO_HOME, "task {}: a delivery claimed before its start", task.id);
    if let Some(shared) = task.runtime.shared.upgrade() {
        let worker = &shared.workers[home];
        worker.inbox.push(task);
        worker.notify_after_seqcst_push();
    }
}

/// The runtime whose worker runs on this thread. A coroutine only ever
/// runs on a worker of its own runtime, so this also answers "the runtime of
/// the running coroutine".
fn current_shared() -> Option<Arc<Shared>> {
    with_current_worker(|w| w.map(|w| Arc::clone(&w.shared)))
}

/// The runtime `weft::spawn` uses outside any runtime: started on first use
/// with one worker per CPU, and never shut down.
pub(crate) fn default_shared() -> Arc<Shared> {
    static DEFAULT: OnceLock<Runtime> = OnceLock::new();
    let runtime = DEFAULT.get_or_init(|| Runtime::new().expect("weft: cannot start the default runtime's workers"));
    Arc::clone(&runtime.shared)
}

/// The runtime a bare spawn uses on a plain thread: the one
/// [`Runtime::enter`] made current there, or the default one.
fn entered_or_default() -> Arc<Shared> {
    ENTERED.with(|entered| entered.borrow().clone()).unwrap_or_else(default_shared)
}

/// The caller's own runtime (a coroutine), else the one entered on this
/// thread, if any: where a `weft::scope` made here spawns (the default
/// runtime when `None`).
pub(crate) fn current_or_entered() -> Option<Arc<Shared>> {
    current_shared().or_else(|| ENTERED.with(|entered| entered.borrow().clone()))
}

/// The runtime a bare spawn uses: the caller's own (a coroutine), else as
/// [`entered_or_default`].
fn current_or_default() -> Arc<Shared> {
    current_shared().unwrap_or_else(entered_or_default)
}

/// Spawns a coroutine on the current runtime; outside any runtime and any
/// [`Runtime::enter`], on a default runtime (one worker per CPU) that the
/// first such spawn starts and that runs until the process exits.
///
/// The current runtime is the calling coroutine's own; in a
/// [`spawn_blocking`] job, the runtime of that job; on another OS thread,
/// the one entered there with [`Runtime::enter`].
///
/// ```
/// let handle = weft::spawn(|| 6 * 7);
/// assert_eq!(handle.join().unwrap(), 42);
/// ```
///
/// # Panics
///
/// If the default runtime must be started and its threads cannot be (use
/// [`Runtime::builder`] and [`Runtime::spawn`] to handle that error).
#[track_caller]
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let spawned_at = Location::caller();
    // Borrow the worker's runtime rather than clone its Arc: two fewer
    // atomic operations per spawn on a line every worker touches.
    with_current_worker(|w| match w {
        Some(w) => spawn_on(&w.shared, None, w.shared.stack_size, spawned_at, Placement::Anywhere, f),
        None => {
            let shared = entered_or_default();
            spawn_on(&shared, None, shared.stack_size, spawned_at, Placement::Anywhere, f)
        }
    })
}

/// Configures a coroutine before spawning it, like [`std::thread::Builder`].
///
/// ```
/// let handle = weft::Builder::new()
///     .name("worker".to_string())
///     .stack_size(64 * 1024)
///     .spawn(|| weft::current().name().map(str::to_owned))
///     .expect("valid stack size");
/// assert_eq!(handle.join().unwrap().as_deref(), Some("worker"));
/// ```
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until `spawn` is called"]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
    same_worker: bool,
}

impl Builder {
    /// A builder with no name and the runtime's default stack size.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the coroutine ([`GreenThread::name`], the overflow report).
    pub fn name(mut self, name: String) -> Builder {
        self.name = Some(name);
        self
    }

    /// The usable stack size in bytes (rounded up to a page multiple, at
    /// least 32 KiB).
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Starts the coroutine on the worker thread of the coroutine that
    /// spawns it: no other worker may take it before it starts (and, like
    /// every coroutine, it never moves once started). Off by default, where
    /// an idle worker takes unstarted coroutines from a busy one.
    ///
    /// This is for a few coroutines that mostly wait on each other: the
    /// users of one contended lock, a producer and its consumer. On one
    /// worker they take turns on one CPU, and every lock, unlock and wake
    /// between them stays in that CPU's cache and run queue; spread over
    /// two workers they pass the lock's cache line between CPUs on every
    /// operation and wake each other across threads, which can cost more
    /// than the second CPU brings. What it gives up is parallelism: the
    /// coroutines spawned this way share their spawner's CPU however long
    /// they run. A coroutine spawned this way starts after those already
    /// ready to run on that worker (first in, first out), so a spawn tree
    /// built with it starts breadth-first; plain spawns (newest first) keep
    /// a tree's live stacks few.
    ///
    /// Only that worker may start it, so it starts only when the coroutines
    /// there let the worker go: a spawner that joins it, parks, sleeps or
    /// yields lets it run; one that spins, or blocks the thread in a
    /// `std::sync` lock or a blocking call, holds it back (the runtime's
    /// stall report names such a coroutine).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use weft::sync::Mutex;
    ///
    /// let runtime = weft::Runtime::builder().workers(2).build().expect("worker threads");
    /// let total = runtime.block_on(|| {
    ///     let counter = Arc::new(Mutex::new(0u64));
    ///     let here = std::thread::current().id();
    ///     let tasks: Vec<_> = (0..4)
    ///         .map(|_| {
    ///             let counter = Arc::clone(&counter);
    ///             weft::Builder::new()
    ///                 .same_worker(true)
    ///                 .spawn(move || {
    ///                     for _ in 0..1000 {
    ///                         *counter.lock() += 1;
    ///                     }
    ///                     std::thread::current().id()
    ///                 })
    ///                 .expect("spawned from a coroutine of this runtime")
    ///         })
    ///         .collect();
    ///     for task in tasks {
    ///         assert_eq!(task.join().unwrap(), here, "every one ran on the spawner's worker");
    ///     }
    ///     *counter.lock()
    /// });
    /// assert_eq!(total, 4000);
    /// ```
    pub fn same_worker(mut self, yes: bool) -> Builder {
        self.same_worker = yes;
        self
    }

    /// Spawns on the current runtime, as [`weft::spawn`](crate::spawn)
    /// chooses it (the calling coroutine's, a `spawn_blocking` job's, or the
    /// one [`Runtime::enter`] made current), or on the default one outside
    /// all of those.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a stack size of 0 or one too large
    /// to map, and for [`same_worker`](Self::same_worker) when the caller is
    /// not a coroutine of the runtime it spawns on (there is no worker to
    /// stay on); [`io::ErrorKind::OutOfMemory`] when the process is so close
    /// to `vm.max_map_count` that the coroutine could not get a stack (the
    /// message says how to raise the limit). The check counts the stacks
    /// mapped now plus one for every coroutine of the runtime that is
    /// spawned but not started yet, since each will need one: a burst of
    /// spawns is refused here, where the caller can handle it, rather than
    /// failing at start. (`weft::spawn` and `Runtime::spawn` do not check:
    /// a coroutine that cannot get a stack when it starts ends its join
    /// handle with the error, and the runtime reports the first such failure
    /// on stderr.)
    ///
    /// # Panics
    ///
    /// As [`weft::spawn`](crate::spawn): if the default runtime must be
    /// started and its threads cannot be.
    #[track_caller]
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let shared = current_or_default();
        self.spawn_shared(&shared, Location::caller(), f)
    }

    /// Spawns on `runtime`; errors as for [`Builder::spawn`].
    ///
    /// ```
    /// let runtime = weft::Runtime::builder().workers(1).build().unwrap();
    /// let handle = weft::Builder::new()
    ///     .name("on-purpose".to_string())
    ///     .spawn_on(&runtime, || std::thread::current().name().map(str::to_owned))
    ///     .expect("a valid stack size");
    /// let worker = handle.join().unwrap().expect("workers are named");
    /// assert_eq!(worker, format!("weft-r{}-w0", runtime.id()));
    /// ```
    #[track_caller]
    pub fn spawn_on<F, T>(self, runtime: &Runtime, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn_shared(&runtime.shared, Location::caller(), f)
    }

    #[track_caller]
    fn spawn_shared<F, T>(
        self,
        shared: &Arc<Shared>,
        spawned_at: &'static Location<'static>,
        f: F,
    ) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let stack_size = match self.stack_size {
            Some(bytes) => stack::round_stack_size(bytes)?,
            None => shared.stack_size,
        };
        // A coroutine, not only its worker's thread: between two resumes
        // (at shutdown, say) the worker runs no coroutine to stay beside.
        let in_a_coroutine_of_shared = || {
            !CURRENT_TASK.with(Cell::get).is_null()
                && with_current_worker(|w| w.is_some_and(|w| Arc::ptr_eq(&w.shared, shared)))
        };
        if self.same_worker && !in_a_coroutine_of_shared() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "weft::Builder::same_worker(true): the spawning thread is not a coroutine of the runtime it \
                 spawns on, so there is no worker to stay on; spawn from one of its coroutines, or leave the \
                 option off",
            ));
        }
        stack::check_map_headroom(shared.unstarted())?;
        let placement = if self.same_worker { Placement::SameWorker } else { Placement::Anywhere };
        Ok(spawn_on(shared, self.name, stack_size, spawned_at, placement, f))
    }
}

/// A handle on a running coroutine, like [`std::thread::Thread`].
#[derive(Clone)]
pub struct GreenThread {
    task: TaskRef,
}

impl GreenThread {
    /// A process-unique id (the same as [`JoinHandle::id`]).
    pub fn id(&self) -> u64 {
        self.task.id
    }

    /// The name given with [`Builder::name`].
    pub fn name(&self) -> Option<&str> {
        self.task.name.as_deref()
    }
}

impl GreenThread {
    /// Makes the coroutine's token available, like
    /// [`std::thread::Thread::unpark`]: if it is parked in [`park`] or
    /// [`park_timeout`], it is woken; otherwise its next call to either
    /// returns, consuming the token. Tokens do not add up: several
    /// `unpark`s before a `park` let one `park` through. Callable from any
    /// coroutine or OS thread; after the coroutine has finished (or its
    /// runtime is gone) it has no effect.
    ///
    /// From a coroutine of the same worker the token is there at once. From
    /// any other thread it travels to the coroutine's worker first, which
    /// takes it in at its next round: a `park` that begins before then
    /// suspends and is woken by it, so what the unparker wrote before
    /// `unpark` is visible after `park` either way.
    ///
    /// The token is the one its runtime's own waits use too (locks,
    /// channels, joins), so a `park` may also return spuriously: call it in
    /// a loop that checks the condition it waits for, as with std's.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    ///
    /// let ready = Arc::new(AtomicBool::new(false));
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let flag = Arc::clone(&ready);
    /// let waiter = weft::spawn(move || {
    ///     tx.send(weft::current()).unwrap(); // the handle to unpark it by
    ///     while !flag.load(Ordering::Acquire) {
    ///         weft::park(); // parks this coroutine only
    ///     }
    ///     "ready"
    /// });
    /// let handle = rx.recv().unwrap();
    /// ready.store(true, Ordering::Release); // the condition first,
    /// handle.unpark(); // then the wake
    /// assert_eq!(waiter.join().unwrap(), "ready");
    /// ```
    pub fn unpark(&self) {
        unpark(self.task.clone());
    }
}

impl fmt::Debug for GreenThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GreenThread").field("id", &self.id()).field("name", &self.name()).finish()
    }
}

/// The coroutine that calls it, like [`std::thread::current`].
///
/// ```
/// let handle = weft::Builder::new()
///     .name("fetcher".to_string())
///     .spawn(|| {
///         let me = weft::current();
///         (me.id(), me.name().map(str::to_owned))
///     })
///     .unwrap();
/// let id = handle.id();
/// assert_eq!(handle.join().unwrap(), (id, Some("fetcher".to_string())));
/// ```
///
/// # Panics
///
/// Outside a coroutine (use [`try_current`] to ask).
pub fn current() -> GreenThread {
    try_current().expect("weft::current() was called outside a coroutine; use weft::try_current() to check")
}

/// The coroutine that calls it, or `None` on a plain OS thread.
///
/// ```
/// assert!(weft::try_current().is_none(), "main is an OS thread");
/// assert!(weft::spawn(|| weft::try_current().is_some()).join().unwrap());
/// ```
pub fn try_current() -> Option<GreenThread> {
    current_task().map(|task| GreenThread { task })
}

/// Lets the other coroutines of this worker run, then continues; on a plain
/// OS thread, [`std::thread::yield_now`].
///
/// The coroutines that are ready take turns in the order they became ready:
/// a yield goes behind them all. Usually it switches straight to the one
/// that has waited longest, in one context switch; now and then (to serve
/// woken coroutines, timers, sockets and newly spawned work) it passes
/// through the worker first.
///
/// A coroutine that computes for long should yield now and then: until it
/// does, the other coroutines of its worker wait (and the runtime's monitor
/// reports it after 100 ms, see [`RuntimeBuilder::stall_threshold`]).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
///
/// let runtime = weft::Runtime::builder().workers(1).build().unwrap();
/// let turns = Arc::new(AtomicU32::new(0));
/// let (a, b) = (Arc::clone(&turns), Arc::clone(&turns));
/// let first = runtime.spawn(move || {
///     for _ in 0..3 {
///         a.fetch_add(1, Ordering::SeqCst);
///         weft::yield_now(); // the other coroutine runs in between
///     }
/// });
/// let second = runtime.spawn(move || {
///     for _ in 0..3 {
///         b.fetch_add(1, Ordering::SeqCst);
///         weft::yield_now();
///     }
/// });
/// first.join().unwrap();
/// second.join().unwrap();
/// assert_eq!(turns.load(Ordering::SeqCst), 6);
/// ```
// Always inline, so that the switch sits in the caller's own code: no call
// and return around it, and the registers the switch clobbers are saved once
// per call of the caller rather than once per yield. (Out of line, when the
// task switch still returned to the worker with a `ret` paired with its
// `call`, the yield ping-pong took ~30 ns per yield against ~16 ns inline;
// with the direct switch, which the compiler then left out of line, 19.5 ns
// against 12.5 ns; callgrind: 108 against 93 instructions.)
#[inline(always)]
pub fn yield_now() {
    let task = CURRENT_TASK.with(Cell::get);
    if task.is_null() {
        std::thread::yield_now();
        return;
    }
    // SAFETY: we are the running coroutine of `task`, which its worker's
    // registry (or the reference lent to this resume) keeps alive.
    let task = unsafe { &*task };
    if task.unwinding.get() {
        return; // being unwound at shutdown: see park_current_task
    }
    // Straight to the next task of this worker when it is an ordinary
    // round's (one switch instead of two: see `WorkerLocal::yield_direct`).
    if worker::yield_direct(task) {
        return;
    }
    // SAFETY: as above.
    unsafe { task.switch_out(Switch::Yield) };
}

/// Parks the calling coroutine until its token is made available by
/// [`GreenThread::unpark`], like [`std::thread::park`]; the worker runs
/// other coroutines meanwhile. If the token is available already, consumes
/// it and returns at once. On a plain OS thread, [`std::thread::park`].
///
/// It may return spuriously, without a token (the token is shared with the
/// runtime's own waits), so call it in a loop that checks your condition:
/// see [`GreenThread::unpark`] for an example. A coroutine parked here shows
/// as parked on [`ParkedOn::Park`] in a [`Runtime::dump`];
/// [`JoinHandle::cancel`] unwinds it, and a runtime that shuts down unwinds
/// it as it does every parked coroutine. In a destructor that runs while
/// the runtime shuts down and unwinds the coroutine, it returns at once.
pub fn park() {
    let task = CURRENT_TASK.with(Cell::get);
    if task.is_null() {
        std::thread::park();
        return;
    }
    note_wait(ParkedOn::Park);
    park_current_task();
}

/// As [`park`], but parks for at most `timeout`, like
/// [`std::thread::park_timeout`]: returns when the token is made available
/// (consuming it), when `timeout` has passed, or spuriously. Which one it
/// was is not reported (as in std): check your condition, and the clock if
/// the time matters.
///
/// ```
/// use std::time::{Duration, Instant};
///
/// let waited = weft::spawn(|| {
///     let start = Instant::now();
///     let timeout = Duration::from_millis(20);
///     // Nobody unparks us: loop until the time is up.
///     while start.elapsed() < timeout {
///         weft::park_timeout(timeout.saturating_sub(start.elapsed()));
///     }
///     start.elapsed()
/// });
/// assert!(waited.join().unwrap() >= Duration::from_millis(20));
/// ```
pub fn park_timeout(timeout: Duration) {
    let Some(task) = current_task_for_waker() else {
        std::thread::park_timeout(timeout);
        return;
    };
    if task.unwinding.get() {
        return; // as `park_current_task` does, at shutdown
    }
    task.waiting_on.set(ParkedOn::Park);
    wake_at(Deadline::after(timeout), &task);
    park_current_task();
    disarm_timer();
}

/// Suspends the calling coroutine until `deadline` (the worker runs others
/// meanwhile); on a plain OS thread, blocks the thread until then. Never
/// returns before `deadline`; a deadline already past only yields. As
/// [`sleep`], for loops that keep a fixed period without drifting.
///
/// ```
/// use std::time::{Duration, Instant};
///
/// let ticks = weft::spawn(|| {
///     let start = Instant::now();
///     let mut next = start;
///     for _ in 0..3 {
///         next += Duration::from_millis(5);
///         weft::sleep_until(next); // no drift: each deadline from the last
///     }
///     start.elapsed()
/// });
/// assert!(ticks.join().unwrap() >= Duration::from_millis(15));
/// ```
pub fn sleep_until(deadline: std::time::Instant) {
    // `sleep` reads the clock again for its own deadline, after this
    // subtraction: it cannot end before `deadline`.
    sleep(deadline.saturating_duration_since(std::time::Instant::now()));
}

/// Suspends the calling coroutine for at least `duration` (the worker runs
/// others meanwhile); on a plain OS thread, [`std::thread::sleep`]. Never
/// returns early (the deadline is on `CLOCK_MONOTONIC`), except in a
/// destructor that runs while the runtime shuts down and unwinds the
/// coroutine, where it returns at once.
///
/// ```
/// use std::time::{Duration, Instant};
///
/// let slept = weft::spawn(|| {
///     let start = Instant::now();
///     weft::sleep(Duration::from_millis(20)); // parks this coroutine only
///     start.elapsed()
/// });
/// assert!(slept.join().unwrap() >= Duration::from_millis(20));
/// ```
pub fn sleep(duration: Duration) {
    let Some(task) = current_task_for_waker() else {
        std::thread::sleep(duration);
        return;
    };
    if duration.is_zero() {
        yield_now();
        return;
    }
    let deadline = Deadline::after(duration);
    task.waiting_on.set(ParkedOn::Sleep);
    wake_at(deadline, &task);
    while !deadline.has_passed() && !current_task_is_unwinding() {
        park_current_task();
    }
    // Usually the timer fired and this does nothing; but a stale token may
    // have woken us just after the deadline, before the timer's turn.
    disarm_timer();
}

/// Runs `f` on a pool of OS threads, so blocking work does not stall a
/// worker; joining the handle from a coroutine parks only that coroutine.
///
/// ```
/// let handle = weft::spawn(|| {
///     let io = weft::spawn_blocking(|| std::fs::read_to_string("/proc/self/stat").is_ok());
///     io.join().unwrap()
/// });
/// assert!(handle.join().unwrap());
/// ```
///
/// The pool starts a thread for a job when none is idle, up to 512 at
/// once (an idle one exits after 10 s); beyond that, jobs wait in a queue
/// for a thread to come free, so a job that waits for one queued behind it
/// never finishes.
///
/// The pool belongs to the runtime the call is made in (the calling
/// coroutine's, the one [`Runtime::enter`] made current, or the default
/// one), and while `f` runs that runtime is current on its thread: a
/// [`spawn`](crate::spawn) or `spawn_blocking` inside `f` goes to it.
/// Dropping that runtime does not wait for its jobs: a running job
/// finishes on its own thread and a queued one still runs, with the
/// runtime current as before. A coroutine that a job spawns on the dropped
/// runtime never starts, and its join returns an error of kind
/// [`Shutdown`](crate::JoinErrorKind::Shutdown).
///
/// ```
/// let runtime = weft::Runtime::builder().workers(1).build().unwrap();
/// let worker = runtime
///     .spawn(|| {
///         let inner = weft::spawn_blocking(|| weft::spawn(|| std::thread::current().name().map(str::to_owned)));
///         inner.join().unwrap().join().unwrap()
///     })
///     .join()
///     .unwrap();
/// assert_eq!(worker.as_deref(), Some(format!("weft-r{}-w0", runtime.id()).as_str()));
/// ```
pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let shared = current_or_default();
    // The job keeps its runtime's shared part (not the runtime: its drop
    // does not wait for jobs) until it has run; queued jobs always run.
    let runtime = Arc::clone(&shared);
    let (finisher, joined) = task::new_join_only::<T>();
    shared.blocking.submit(Box::new(move || {
        // SAFETY: new_join_only::<T> made the cell, so its result type is T.
        let result_slot = unsafe { task::join_state_of::<T>(finisher.as_ptr()) };
        if finisher.cancel_requested() {
            // Cancelled before it started: it never runs. A captured value
            // whose destructor panics must not take the pool thread, and
            // this join, with it (the panic hook has reported it).
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(f)));
            // SAFETY: this job (an FnOnce, run once) is the cell's one
            // finisher, and it returns right after.
            unsafe { result_slot.complete(Err(Failure::Cancelled)) };
            return;
        }
        let outcome = {
            let _entered = EnteredByPool::enter(Some(runtime));
            let previous = CURRENT_BLOCKING_JOB.with(|job| job.replace(finisher.as_ptr()));
            let outcome = panic::catch_unwind(AssertUnwindSafe(f));
            CURRENT_BLOCKING_JOB.with(|job| job.set(previous));
            outcome
        };
        // SAFETY: as above: the job's one completion.
        unsafe { result_slot.complete(outcome.map_err(Failure::panic)) };
    }));
    // SAFETY: `joined` is the second reference new_join_only::<T> returned.
    unsafe { JoinHandle::from_task(joined) }
}

/// Makes a `spawn_blocking` job's runtime current on its pool thread while
/// the job runs (as [`Runtime::enter`] would, without borrowing a
/// `Runtime`), and puts back what was current before.
struct EnteredByPool {
    previous: Option<Arc<Shared>>,
}

impl EnteredByPool {
    fn enter(shared: Option<Arc<Shared>>) -> EnteredByPool {
        EnteredByPool { previous: ENTERED.with(|entered| entered.replace(shared)) }
    }
}

impl Drop for EnteredByPool {
    fn drop(&mut self) {
        // The job's runtime is dropped outside the cell's borrow (it may be
        // the last reference, if the runtime was dropped meanwhile).
        let job_runtime = ENTERED.with(|entered| entered.replace(self.previous.take()));
        drop(job_runtime);
    }
}

// DESIGN.md: `Runtime: Send + Sync` (a runtime can be shared, e.g. in a
// static or an Arc, and used from any thread); join handles move freely.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Runtime>();
    assert_send_sync::<JoinHandle<u8>>();
    // An error that crosses threads (into `io::Error`, `anyhow`, a channel).
    assert_send_sync::<JoinError>();
};
