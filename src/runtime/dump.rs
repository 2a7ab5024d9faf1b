//! `Runtime::dump`: every live coroutine of a runtime, its state, and for a
//! suspended one the backtrace of where it waits.
//!
//! # Who may look at what
//!
//! A started coroutine belongs to its home worker thread for good: its stack,
//! its coroutine and its bookkeeping (what it waits on, its timer) are only
//! ever touched there. So the dump is not read from outside; it is *asked
//! for*, and each worker answers with its own part:
//!
//! ```text
//!  part of a runtime              read by                          how
//!  -----------------------------  -------------------------------  ----------------------------
//!  a worker's started coroutines  that worker, between two rounds  its registry, run queue,
//!  (running, runnable, parked)    (or inline, when the dumper is   timers; backtraces walked on
//!                                 one of its own coroutines)       each coroutine's own stack
//!  a worker's unstarted ones      that worker, with its part;      its `fresh` deque, emptied
//!                                 for one that does not answer,    and refilled in order; from
//!                                 the dumper                       one that does not answer,
//!                                                                  stolen and moved to the
//!                                                                  injector
//!  its unstarted `same_worker`    that worker, with its part;      its run queue; for one that
//!  ones                           counted only, by the dumper,     does not answer, its count
//!                                 for one that does not answer     (`WorkerShared::
//!                                                                  pinned_unstarted`)
//!  the runtime's unstarted ones   the dumper                       the injector, locked
//!  a worker that does not answer  the dumper, through the probe     the id, name and spawn site
//!                                 signal of the stall monitor      of the coroutine it runs
//! ```
//!
//! # The protocol
//!
//! 1. The dumper makes a [`Request`] with one slot per worker, all
//!    `Waiting`. For each worker (but its own, see 3) it pushes the request
//!    into that worker's [`Mailbox`], raises the mailbox's `pending` flag
//!    and wakes the worker if it sleeps (`WorkerShared::notify`: the flag
//!    is one of the things a worker re-checks before it sleeps, so the
//!    wake cannot be lost).
//! 2. A worker checks `pending` in its fairness rounds (every few dozen
//!    scheduling rounds, off the hot path) and before it goes idle. When
//!    set, it moves its inbox
//!    into its run queue (so woken coroutines show as runnable), marks its
//!    slot `Started`, collects its part — for each suspended coroutine, a
//!    walk of its stack, run *on that stack* below its saved frame (see
//!    `CoroutineCore::on_suspended_stack`) — and stores it, `Done`.
//! 3. A dumper that is itself a coroutine of this runtime collects its own
//!    worker's part inline, after posting the others' requests (it is that
//!    worker's running coroutine, so no other coroutine of the worker runs
//!    meanwhile), then waits by sleeping (blocking, if it is panicking)
//!    in short steps, so its worker keeps running and answering; an OS
//!    thread waits on the request's condition variable.
//! 4. The dumper waits up to [`ANSWER_TIMEOUT`] for every slot to leave
//!    `Waiting`, then without limit for the `Started` ones to be `Done` (a
//!    worker that started answering is making progress). A worker still
//!    `Waiting` is busy running one coroutine (a loop without a yield, a
//!    blocking call): the request is closed (it will skip it when it gets
//!    there), and the dump lists what can be read without touching that
//!    worker's coroutines: the coroutine it runs (asked of the worker's own
//!    thread with the stall monitor's probe signal, where that coroutine is
//!    surely alive; see `monitor`) and its unstarted ones. Those sit in
//!    its `fresh` deque, which only its owner could put back into: the
//!    dumper steals them all, lists them as queued on that worker, and
//!    moves them to the runtime's injector (`Shared::requeue_unstarted`),
//!    where the other workers may start them (decision 3 lets unstarted
//!    tasks move; an idle worker would have stolen them anyway).
//!
//! # What it costs
//!
//! On the hot paths: a coroutine that parks stores a coarse timestamp
//! (`runtime::clock`) and names what it waits on (two stores); a resume
//! stores nothing for the dump (an earlier version stored the resumed
//! task's id and a timestamp for the busy-worker case: 7 instructions of a
//! 190-instruction yield, counted with callgrind, `WEFT_RUNTIME_COUNT=
//! yield:..`; the probe signal answers that question only when it is asked).
//! So the running coroutine of a worker has no duration in the dump. A
//! dump holds each worker for the time it
//! takes to walk its suspended coroutines' stacks, about 3.5 µs each
//! (`cargo run --release --example dump -- --workers 1 10000`: 10 000
//! parked coroutines on one worker, 35 ms); identical stacks are symbolised once, later, on the
//! dumper's side, when the dump is printed.

use super::task::{NO_HOME, Task, TaskRef};
use super::{CURRENT_TASK, Shared, clock, with_current_worker};
use crate::coroutine::{self, WalkRefused};
use crate::loom::process::{AtomicBool, Ordering};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::panic::Location;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How long the dumper waits for a worker to start answering.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_millis(500);

/// The longest walk kept per coroutine (frames).
const MAX_FRAMES: usize = 128;

/// What a parked coroutine waits on.
///
/// The addresses are those of the primitive's state word (inside the
/// primitive), useful to tell which coroutines wait on the same one.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParkedOn {
    /// [`crate::sync::Mutex::lock`], at this address.
    Mutex(usize),
    /// [`crate::sync::RwLock::read`], at this address.
    RwLockRead(usize),
    /// [`crate::sync::RwLock::write`], at this address.
    RwLockWrite(usize),
    /// [`crate::sync::Semaphore::acquire`], at this address.
    Semaphore(usize),
    /// [`crate::sync::Condvar::wait`] and its variants, at this address.
    Condvar(usize),
    /// [`crate::sync::Barrier::wait`], at this address.
    Barrier(usize),
    /// [`crate::sync::WaitGroup::wait`], at this address.
    WaitGroup(usize),
    /// [`crate::sync::OnceLock`] (or [`crate::sync::LazyLock`]) at this
    /// address, whose initialiser runs elsewhere (or, in
    /// [`OnceLock::wait`](crate::sync::OnceLock::wait), has not begun).
    OnceLock(usize),
    /// [`JoinHandle::join`](crate::JoinHandle::join) of the coroutine with
    /// this id (or of a `spawn_blocking` job).
    Join(u64),
    /// [`crate::sleep`].
    Sleep,
    /// [`crate::park`] or [`crate::park_timeout`]: until
    /// [`GreenThread::unpark`](crate::GreenThread::unpark).
    Park,
    /// The end of a [`crate::scope`]: until the coroutines spawned in it
    /// have ended.
    Scope,
    /// A blocking `send` on the channel at this address
    /// ([`crate::sync::channel`]): it waits for room or for a receiver.
    ChannelSend(usize),
    /// A blocking `recv` on the channel at this address: it waits for a
    /// value.
    ChannelRecv(usize),
    /// A [`Select`](crate::sync::channel::Select) over this many operations.
    Select(usize),
    /// A read or an accept on the socket with this file descriptor
    /// ([`crate::net`]): it waits until the socket is readable.
    Readable(i32),
    /// A write or a connect on the socket with this file descriptor: it
    /// waits until the socket is writable.
    Writable(i32),
    /// A wait that did not name itself.
    Other,
}

impl fmt::Display for ParkedOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParkedOn::Mutex(at) => write!(f, "Mutex {at:#x}"),
            ParkedOn::RwLockRead(at) => write!(f, "RwLock {at:#x} (read)"),
            ParkedOn::RwLockWrite(at) => write!(f, "RwLock {at:#x} (write)"),
            ParkedOn::Semaphore(at) => write!(f, "Semaphore {at:#x}"),
            ParkedOn::Condvar(at) => write!(f, "Condvar {at:#x}"),
            ParkedOn::Barrier(at) => write!(f, "Barrier {at:#x}"),
            ParkedOn::WaitGroup(at) => write!(f, "WaitGroup {at:#x}"),
            ParkedOn::OnceLock(at) => write!(f, "OnceLock {at:#x} (its initialiser)"),
            ParkedOn::Join(id) => write!(f, "join of coroutine {id}"),
            ParkedOn::Sleep => f.write_str("sleep"),
            ParkedOn::Park => f.write_str("park (until unparked)"),
            ParkedOn::Scope => f.write_str("its scope's coroutines to end"),
            ParkedOn::ChannelSend(at) => write!(f, "channel {at:#x} (send)"),
            ParkedOn::ChannelRecv(at) => write!(f, "channel {at:#x} (recv)"),
            ParkedOn::Select(n) => write!(f, "select over {n} operations"),
            ParkedOn::Readable(fd) => write!(f, "socket {fd} to be readable"),
            ParkedOn::Writable(fd) => write!(f, "socket {fd} to be writable"),
            ParkedOn::Other => f.write_str("an unnamed wait"),
        }
    }
}

/// The state of a coroutine in a [`Dump`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoroutineState {
    /// Spawned, not yet started (no stack yet).
    Unstarted,
    /// Running on its worker (the dumping coroutine itself, or the one a
    /// worker that did not answer is busy with).
    Running,
    /// Ready to run, waiting for its worker (it yielded, or was woken).
    Runnable,
    /// Suspended until something wakes it.
    Parked {
        /// What it waits on.
        on: ParkedOn,
        /// When its timer wakes it (a sleep, a wait with a timeout),
        /// counted from the moment the dump was taken; `None` without one.
        wakes_in: Option<Duration>,
    },
}

impl fmt::Display for CoroutineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoroutineState::Unstarted => f.write_str("unstarted"),
            CoroutineState::Running => f.write_str("running"),
            CoroutineState::Runnable => f.write_str("runnable"),
            CoroutineState::Parked { on: ParkedOn::Sleep, wakes_in: Some(left) } => {
                write!(f, "sleeping, wakes in {}", Millis(*left))
            }
            CoroutineState::Parked { on, wakes_in: None } => write!(f, "parked on {on}"),
            CoroutineState::Parked { on, wakes_in: Some(left) } => {
                write!(f, "parked on {on}, times out in {}", Millis(*left))
            }
        }
    }
}

/// A duration printed in milliseconds, with a decimal below 10 ms.
struct Millis(Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_secs_f64() * 1e3;
        if ms < 10.0 { write!(f, "{ms:.1} ms") } else { write!(f, "{ms:.0} ms") }
    }
}

/// One walked stack, shared by every coroutine suspended at the same place.
struct Trace {
    /// Captured on one of those coroutines' stacks; symbolised on first use.
    captured: Backtrace,
    /// The coroutine's own frames of `captured`, printed.
    text: OnceLock<String>,
    /// The innermost of them outside weft and the standard library.
    site: OnceLock<Option<String>>,
}

impl Trace {
    fn new(captured: Backtrace) -> Trace {
        Trace { captured, text: OnceLock::new(), site: OnceLock::new() }
    }

    fn text(&self) -> &str {
        self.text.get_or_init(|| coroutine_frames(&self.captured.to_string()))
    }

    fn site(&self) -> Option<&str> {
        self.site.get_or_init(|| first_own_frame(self.text())).as_deref()
    }
}

/// In frames printed by [`coroutine_frames`], the innermost frame of the
/// program's own code: the first whose function is not weft's nor the
/// standard library's (`core`, `alloc`, `std`), as `function at
/// file:line:column` (the function alone where the binary has no line
/// tables). `None` if every frame is theirs.
fn first_own_frame(frames: &str) -> Option<String> {
    let mut lines = frames.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((number, function)) = line.trim_start().split_once(": ") else { continue };
        if number.parse::<usize>().is_err() {
            continue;
        }
        let location = lines.next_if(|l| l.trim_start().starts_with("at ")).map(|l| l.trim_start()[3..].to_owned());
        // `<&weft::net::TcpStream as std::io::Write>::write` is weft's: its
        // path is the type's, after the impl's brackets and references.
        let path = function.trim_start_matches(['<', '&']).trim_start_matches("mut ").trim_start_matches("dyn ");
        let theirs = ["weft::", "core::", "alloc::", "std::", "__rust", "rust_begin_unwind"];
        if theirs.iter().any(|prefix| path.starts_with(prefix)) {
            continue;
        }
        return Some(match location {
            Some(at) => format!("{function} at {at}"),
            None => function.to_owned(),
        });
    }
    None
}

/// The frames of a backtrace printed by `std` that belong to the coroutine:
/// those after `weft_call_on_stack` (the walk's start on the coroutine's
/// stack) and before `weft_coroutine_trampoline` (its entry), renumbered.
/// Without those symbols (a stripped binary) the whole text is kept.
fn coroutine_frames(printed: &str) -> String {
    let mut frames: Vec<String> = Vec::new();
    for line in printed.lines() {
        let starts_frame = line.trim_start().split_once(": ").is_some_and(|(n, _)| n.parse::<usize>().is_ok());
        match frames.last_mut() {
            Some(frame) if !starts_frame => {
                frame.push('\n');
                frame.push_str(line);
            }
            _ => frames.push(line.to_string()),
        }
    }
    let names = |frame: &str, symbol: &str| frame.lines().next().is_some_and(|l| l.trim_end().ends_with(symbol));
    let start = frames.iter().position(|f| names(f, "weft_call_on_stack")).map_or(0, |i| i + 1);
    let end =
        frames[start..].iter().position(|f| names(f, "weft_coroutine_trampoline")).map_or(frames.len(), |i| start + i);
    let mut out = String::new();
    for (number, frame) in frames[start..end].iter().enumerate() {
        let body = frame.trim_start().split_once(": ").map_or(frame.as_str(), |(_, rest)| rest);
        out.push_str(&format!("{number:>4}: {body}\n"));
    }
    out
}

/// The backtrace slot of a [`CoroutineDump`].
#[derive(Clone)]
enum TraceSlot {
    /// Not suspended (unstarted, running): nothing to walk.
    NotSuspended,
    /// Suspended, but not walked, for this reason.
    Skipped(String),
    Walked(Arc<Trace>),
}

/// One coroutine in a [`Dump`].
#[derive(Clone)]
pub struct CoroutineDump {
    id: u64,
    name: Option<String>,
    spawned_at: Option<&'static Location<'static>>,
    worker: Option<usize>,
    state: CoroutineState,
    in_state_for: Option<Duration>,
    /// [`JoinHandle::cancel`](crate::JoinHandle::cancel) was called.
    cancel_requested: bool,
    /// Its unwind for good has begun: a cancel's, or its runtime's shutdown's.
    unwinding: bool,
    trace: TraceSlot,
}

impl CoroutineDump {
    /// Its id (as [`crate::GreenThread::id`] and [`crate::JoinHandle::id`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its name, if it was given one ([`crate::Builder::name`]).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Where it was spawned (`None` only for the coroutine a worker that did
    /// not answer is running: its task could not be read).
    pub fn spawned_at(&self) -> Option<&'static Location<'static>> {
        self.spawned_at
    }

    /// Its home worker (the one it runs on once started), or the worker
    /// whose queue holds it if it is unstarted; `None` for an unstarted
    /// coroutine spawned from outside the runtime.
    pub fn worker(&self) -> Option<usize> {
        self.worker
    }

    /// Its state when the dump was taken.
    pub fn state(&self) -> CoroutineState {
        self.state
    }

    /// How long it had been in that state when the dump was taken; `None`
    /// when unknown (always, for a runnable or running one: yields, wakes
    /// and resumes are not timed, to keep them cheap; the stall monitor
    /// reports a coroutine that runs too long). Measured on a coarse clock
    /// (the worker's latest reading when it entered the state), so it can
    /// over-report by the time a worker spent without reading its clock:
    /// microseconds on a worker that switches often, more on one whose
    /// coroutines run long.
    pub fn in_state_for(&self) -> Option<Duration> {
        self.in_state_for
    }

    /// The backtrace of a suspended coroutine, symbolised like
    /// [`std::backtrace::Backtrace`], innermost frame first, from where it
    /// suspended down to the closure it was spawned with. `None` for one
    /// that is not suspended, or whose stack could not be walked (see
    /// [`backtrace_skipped`](Self::backtrace_skipped)). Symbolised on the
    /// first call (for all coroutines suspended at the same place at once).
    pub fn backtrace(&self) -> Option<&str> {
        match &self.trace {
            TraceSlot::Walked(trace) => Some(trace.text()),
            _ => None,
        }
    }

    /// Where in the program's own code a suspended coroutine waits: the
    /// innermost frame of its [`backtrace`](Self::backtrace) that is not in
    /// weft or the standard library, as `function at file:line:column` (the
    /// function alone where the binary has no line tables), such as the
    /// line that called [`Mutex::lock`](crate::sync::Mutex::lock). `None`
    /// where there is no backtrace, or no such frame. (The compiler merges
    /// functions whose machine code is the same, closures included; two
    /// coroutines waiting in such twins are shown at the same line.)
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let runtime = weft::Runtime::builder().workers(1).build()?;
    /// let sleeper = runtime.spawn(|| weft::sleep(Duration::from_secs(3600)));
    /// std::thread::sleep(Duration::from_millis(50));
    /// let dump = runtime.dump();
    /// let coroutine = dump.coroutines().iter().find(|c| c.id() == sleeper.id()).unwrap();
    /// // The closure given to `spawn`, where it called `weft::sleep`.
    /// assert!(coroutine.waits_at().unwrap().contains("{{closure}}"));
    /// sleeper.cancel();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn waits_at(&self) -> Option<&str> {
        match &self.trace {
            TraceSlot::Walked(trace) => trace.site(),
            _ => None,
        }
    }

    /// Whether [`JoinHandle::cancel`](crate::JoinHandle::cancel) was called
    /// for it (it may not have reached a park or yield since, where the
    /// cancel begins: see [`is_unwinding`](Self::is_unwinding)).
    pub fn cancel_requested(&self) -> bool {
        self.cancel_requested
    }

    /// Whether it is being unwound for good, by its cancel or by its
    /// runtime's shutdown: what runs now are its destructors. One that is
    /// parked waits in a destructor (a lock it takes, a channel it sends
    /// on), and its cancel completes only when that wait ends.
    pub fn is_unwinding(&self) -> bool {
        self.unwinding
    }

    /// Why a suspended coroutine has no backtrace (its worker did not
    /// answer, it suspended inside a nested coroutine, or too little of its
    /// stack is left to walk it safely).
    pub fn backtrace_skipped(&self) -> Option<&str> {
        match &self.trace {
            TraceSlot::Skipped(why) => Some(why),
            _ => None,
        }
    }

    /// Its one-line summary, as [`Dump::summary`] prints it (for the
    /// monitor's deadlock hint).
    pub(crate) fn line(&self) -> impl fmt::Display + '_ {
        struct Line<'a>(&'a CoroutineDump);
        impl fmt::Display for Line<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.summary_line(f)
            }
        }
        Line(self)
    }

    /// The one-line summary: id, name, state, for how long, worker, spawn site.
    fn summary_line(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "coroutine {}", self.id)?;
        if let Some(name) = &self.name {
            write!(f, " '{name}'")?;
        }
        write!(f, " [{}", self.state)?;
        if let Some(for_) = self.in_state_for {
            write!(f, ", for {}", Millis(for_))?;
        }
        match (self.unwinding, self.cancel_requested) {
            (true, true) => f.write_str("; cancelled, unwinding")?,
            (true, false) => f.write_str("; unwinding at shutdown")?,
            (false, true) => f.write_str("; cancel requested")?,
            (false, false) => {}
        }
        f.write_str("]")?;
        match self.worker {
            Some(w) if self.state == CoroutineState::Unstarted => write!(f, " queued on worker {w}")?,
            Some(w) => write!(f, " on worker {w}")?,
            None => f.write_str(" in the runtime's queue")?,
        }
        match self.spawned_at {
            Some(at) => write!(f, ", spawned at {at}"),
            None => f.write_str(", spawn site unknown"),
        }
    }
}

impl fmt::Debug for CoroutineDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoroutineDump")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("spawned_at", &self.spawned_at)
            .field("worker", &self.worker)
            .field("state", &self.state)
            .field("in_state_for", &self.in_state_for)
            .field("cancel_requested", &self.cancel_requested)
            .field("unwinding", &self.unwinding)
            .finish_non_exhaustive()
    }
}

/// A worker that did not answer a [`Dump`] request in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusyWorker {
    /// The worker's index.
    pub worker: usize,
    /// The coroutine it runs, as its thread answered the probe signal;
    /// `None` if it did not answer in time (or runs none).
    pub running: Option<u64>,
    /// How many coroutines spawned there with
    /// [`Builder::same_worker`](crate::Builder::same_worker) wait to start:
    /// they wait in its run queue, which only it reads, so they are not
    /// listed. Read when the dump gave up waiting for the worker.
    pub unstarted_not_listed: usize,
}

/// Every live coroutine of a runtime: what [`Runtime::dump`](super::Runtime::dump)
/// returns.
///
/// `Display` prints one block per coroutine (a header line, then its
/// backtrace if it is suspended); the alternate form (`{:#}`) and
/// [`summary`](Dump::summary) print one line per coroutine.
pub struct Dump {
    coroutines: Vec<CoroutineDump>,
    workers: usize,
    busy: Vec<BusyWorker>,
    took: Duration,
}

impl Dump {
    /// The coroutines, by id.
    pub fn coroutines(&self) -> &[CoroutineDump] {
        &self.coroutines
    }

    /// The coroutine with this id, if it was live.
    pub fn coroutine(&self, id: u64) -> Option<&CoroutineDump> {
        self.coroutines.binary_search_by_key(&id, |c| c.id).ok().map(|i| &self.coroutines[i])
    }

    /// The workers that did not answer in time (each busy running one
    /// coroutine): their started coroutines other than that one are
    /// missing, and so are their unstarted `same_worker` ones.
    pub fn busy_workers(&self) -> &[BusyWorker] {
        &self.busy
    }

    /// How long collecting the dump took.
    pub fn took(&self) -> Duration {
        self.took
    }

    /// One line per coroutine (no backtraces), as `{:#}` prints.
    pub fn summary(&self) -> impl fmt::Display + '_ {
        struct Summary<'a>(&'a Dump);
        impl fmt::Display for Summary<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write(f, false)
            }
        }
        Summary(self)
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, backtraces: bool) -> fmt::Result {
        let count = |wanted: fn(&CoroutineState) -> bool| self.coroutines.iter().filter(|c| wanted(&c.state)).count();
        writeln!(
            f,
            "weft runtime dump: {} coroutines on {} workers ({} running, {} runnable, {} parked, {} unstarted), \
             collected in {}",
            self.coroutines.len(),
            self.workers,
            count(|s| *s == CoroutineState::Running),
            count(|s| *s == CoroutineState::Runnable),
            count(|s| matches!(s, CoroutineState::Parked { .. })),
            count(|s| *s == CoroutineState::Unstarted),
            Millis(self.took),
        )?;
        for busy in &self.busy {
            write!(f, "worker {} did not answer within {}: ", busy.worker, Millis(ANSWER_TIMEOUT))?;
            match busy.running {
                Some(id) => write!(f, "busy running coroutine {id}")?,
                None => f.write_str("busy")?,
            }
            f.write_str("; its other started coroutines are not listed")?;
            match busy.unstarted_not_listed {
                0 => writeln!(f)?,
                n => writeln!(f, ", nor the {n} spawned there with same_worker that have not started")?,
            }
        }
        for c in &self.coroutines {
            if backtraces {
                f.write_str("\n")?;
            }
            c.summary_line(f)?;
            f.write_str("\n")?;
            if !backtraces {
                continue;
            }
            match &c.trace {
                TraceSlot::Walked(trace) => f.write_str(trace.text())?,
                TraceSlot::Skipped(why) => writeln!(f, "      (no backtrace: {why})")?,
                TraceSlot::NotSuspended => {}
            }
        }
        Ok(())
    }
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, !f.alternate())
    }
}

impl fmt::Debug for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dump")
            .field("coroutines", &self.coroutines)
            .field("busy", &self.busy)
            .field("took", &self.took)
            .finish()
    }
}

/// A worker's dump mailbox (inside `WorkerShared`): see the module docs.
pub(crate) struct Mailbox {
    /// Whether `requests` may hold something; checked every round.
    pending: AtomicBool,
    requests: Mutex<Vec<Arc<Request>>>,
}

impl Mailbox {
    pub(crate) fn new() -> Mailbox {
        Mailbox { pending: AtomicBool::new(false), requests: Mutex::new(Vec::new()) }
    }

    /// The round's check (a stale `false` delays the answer by a round; the
    /// idle re-check uses [`has_requests`](Self::has_requests)).
    #[inline]
    pub(crate) fn has_requests_relaxed(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
    }

    /// The sleeper's re-check: SeqCst, after its SeqCst store of SLEEPING
    /// (the Dekker pair with `post`'s fence in `WorkerShared::notify`).
    pub(crate) fn has_requests(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// Posts `request`; the caller then wakes the worker (`notify`).
    fn post(&self, request: Arc<Request>) {
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).push(request);
        // Release: pairs with `take`'s Acquire swap (the push above is also
        // ordered by the mutex; this makes a worker that sees the flag find
        // the request). The wake's SeqCst fence follows in `notify`.
        self.pending.store(true, Ordering::Release);
    }

    /// Takes the posted requests (the worker, at the top of a round).
    pub(crate) fn take(&self) -> Vec<Arc<Request>> {
        // Acquire: pairs with `post`'s Release store.
        if !self.pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *self.requests.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One worker's slot in a [`Request`].
enum Part {
    Waiting,
    Started,
    Done(Vec<CoroutineDump>),
}

struct RequestState {
    parts: Vec<Part>,
    /// The dumper gave up waiting: workers that have not started skip it.
    closed: bool,
}

/// One dump being collected: see the module docs.
pub(crate) struct Request {
    state: Mutex<RequestState>,
    answered: Condvar,
}

impl Request {
    /// Answers for worker `index` with what `collect` returns, unless the
    /// dumper gave up on it already.
    pub(crate) fn answer(&self, index: usize, collect: impl FnOnce() -> Vec<CoroutineDump>) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.closed {
                return;
            }
            state.parts[index] = Part::Started;
        }
        /// Ends the slot with an empty part if collecting panics, so that
        /// the dumper, which waits without limit for a started part, is not
        /// left waiting forever.
        struct EmptyIfUnwound<'a>(&'a Request, usize);
        impl Drop for EmptyIfUnwound<'_> {
            fn drop(&mut self) {
                self.0.state.lock().unwrap_or_else(|e| e.into_inner()).parts[self.1] = Part::Done(Vec::new());
                self.0.answered.notify_all();
            }
        }
        let unwound = EmptyIfUnwound(self, index);
        let part = collect();
        std::mem::forget(unwound);
        self.state.lock().unwrap_or_else(|e| e.into_inner()).parts[index] = Part::Done(part);
        self.answered.notify_all();
    }
}

/// What a worker's part is made from: one call per started, unfinished
/// task, on the worker's thread.
pub(crate) struct PartBuilder {
    worker: usize,
    now: u64,
    running: *const Task,
    out: Vec<CoroutineDump>,
    /// Walks by the coroutine's frames' return addresses: one capture and
    /// one symbolisation per distinct stack.
    traces: HashMap<Vec<usize>, Arc<Trace>>,
    bounds: (usize, usize),
}

impl PartBuilder {
    /// For worker `worker`, on its thread; `running` is the task running
    /// there (the dumper itself, when collecting inline), or null.
    pub(crate) fn new(worker: usize, running: *const Task) -> PartBuilder {
        let now = clock::refresh();
        PartBuilder {
            worker,
            now,
            running,
            out: Vec::new(),
            traces: HashMap::new(),
            bounds: coroutine::stack_walk_bounds(),
        }
    }

    fn since(&self, stamp: u64) -> Option<Duration> {
        (stamp != 0).then(|| Duration::from_nanos(self.now.saturating_sub(stamp)))
    }

    /// Adds a started, unfinished task of this worker; `runnable` says
    /// whether it is in the run queue.
    ///
    /// # Safety
    ///
    /// Called on `task`'s home worker thread, while `task` is not running
    /// unless it is the `running` task given to [`new`](Self::new) (whose
    /// coroutine is then not touched).
    pub(crate) unsafe fn add_started(&mut self, task: &TaskRef, runnable: bool) {
        let is_running = ptr_eq(task, self.running);
        let state = if is_running {
            CoroutineState::Running
        } else if runnable {
            CoroutineState::Runnable
        } else {
            let wakes_in = task
                .timer_armed
                .get()
                .then(|| task.timer_deadline.get())
                .map(|deadline| Duration::from_nanos(deadline.as_nanos().saturating_sub(self.now)));
            CoroutineState::Parked { on: task.waiting_on.get(), wakes_in }
        };
        let trace = if is_running {
            TraceSlot::NotSuspended
        } else {
            // SAFETY: the caller's promise: this is the task's home worker
            // and the task is not running, so its coroutine is ours to
            // touch and nobody else holds a reference to it.
            self.walk(unsafe { task.coroutine_mut() })
        };
        // A runnable task's stamp is that of its latest park (yields are
        // not stamped, nor wakes): no duration for it.
        let since = match state {
            // Resumes are not stamped (see "What it costs").
            CoroutineState::Running => 0,
            CoroutineState::Runnable => 0,
            _ => task.since.get(),
        };
        self.out.push(CoroutineDump {
            id: task.id,
            name: task.name.as_deref().map(str::to_owned),
            spawned_at: Some(task.spawned_at),
            worker: Some(self.worker),
            state,
            in_state_for: self.since(since),
            cancel_requested: task.cancel_requested(),
            unwinding: task.cancel_begun.get() || task.unwinding.get(),
            trace,
        });
    }

    /// Walks a suspended coroutine's stack (see the module docs).
    fn walk(&mut self, coroutine: &mut super::task::TaskCoroutine) -> TraceSlot {
        let mut ips = Vec::with_capacity(32);
        let walked = coroutine.on_suspended_stack(&mut || {
            crate::sys::unwind::walk(&mut |ip| {
                ips.push(ip);
                ips.len() < MAX_FRAMES
            })
        });
        if let Err(refused) = walked {
            return TraceSlot::Skipped(refused_reason(refused));
        }
        // Its own frames: after the walk's start, through its entry.
        let (first, last) = self.bounds;
        let start = ips.iter().position(|&ip| ip == first).map_or(0, |i| i + 1);
        let end = ips[start..].iter().position(|&ip| ip == last).map_or(ips.len(), |i| start + i + 1);
        ips.truncate(end);
        ips.drain(..start);
        if let Some(trace) = self.traces.get(&ips) {
            return TraceSlot::Walked(Arc::clone(trace));
        }
        // A new stack: capture it again with std, for its symbols.
        let mut captured = None;
        let walked = coroutine.on_suspended_stack(&mut || captured = Some(Backtrace::force_capture()));
        match (walked, captured) {
            (Ok(()), Some(captured)) => {
                let trace = Arc::new(Trace::new(captured));
                self.traces.insert(ips, Arc::clone(&trace));
                TraceSlot::Walked(trace)
            }
            (Err(refused), _) => TraceSlot::Skipped(refused_reason(refused)),
            (Ok(()), None) => TraceSlot::Skipped("capturing its backtrace failed".to_string()),
        }
    }

    /// Adds an unstarted task held in worker `queued_on`'s `fresh` deque (or
    /// the injector, `None`). Any thread may call this while it holds the
    /// injector's lock or has taken the task out of a `fresh` deque: an
    /// unstarted task's header is not written by anyone while it sits in a
    /// queue or in the hands of whoever took it.
    fn add_unstarted(out: &mut Vec<CoroutineDump>, now: u64, task: &TaskRef, queued_on: Option<usize>) {
        debug_assert_eq!(task.home(), NO_HOME, "a queued fresh task has no home");
        out.push(CoroutineDump {
            id: task.id,
            name: task.name.as_deref().map(str::to_owned),
            spawned_at: Some(task.spawned_at),
            worker: queued_on,
            state: CoroutineState::Unstarted,
            in_state_for: Some(Duration::from_nanos(now.saturating_sub(task.since.get()))),
            // (An unstarted task whose cancel was requested is dropped by
            // the worker that takes it, without starting.)
            cancel_requested: task.cancel_requested(),
            unwinding: false,
            trace: TraceSlot::NotSuspended,
        });
    }

    pub(crate) fn finish(self) -> Vec<CoroutineDump> {
        self.out
    }
}

fn ptr_eq(task: &TaskRef, other: *const Task) -> bool {
    std::ptr::eq(task.as_ptr(), other)
}

fn refused_reason(refused: WalkRefused) -> String {
    format!("not walked: {refused}")
}

/// Collects the dump of `shared`'s runtime (see the module docs).
pub(crate) fn collect(shared: &Arc<Shared>) -> Dump {
    let started = Instant::now();
    let workers = shared.workers.len();
    let request = Arc::new(Request {
        state: Mutex::new(RequestState { parts: (0..workers).map(|_| Part::Waiting).collect(), closed: false }),
        answered: Condvar::new(),
    });
    // A coroutine of this runtime collects its own worker's part inline,
    // after asking the others (so that they work meanwhile, and its own
    // part's time does not eat into their answer time).
    let own = with_current_worker(|w| w.filter(|w| Arc::ptr_eq(&w.shared, shared)).map(|w| w.index));
    for (index, worker) in shared.workers.iter().enumerate() {
        if Some(index) != own {
            worker.dump.post(Arc::clone(&request));
            worker.notify();
        }
    }
    if own.is_some() {
        with_current_worker(|w| {
            let w = w.expect("the dumper runs on its worker");
            let running = CURRENT_TASK.with(Cell::get);
            request.answer(w.index, || w.dump_part(running));
        });
    }
    let now = clock::now();
    let mut coroutines = Vec::new();
    for task in shared.injector.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        PartBuilder::add_unstarted(&mut coroutines, now, task, None);
    }
    // A coroutine waits by sleeping, so that its worker keeps answering;
    // but not while it panics (a dump from a panic hook or a destructor
    // during unwinding): parked mid-panic, it would leave its worker's
    // other coroutines running with `thread::panicking()` true. It blocks
    // the worker thread instead; its own part is already collected.
    let in_coroutine = !CURRENT_TASK.with(Cell::get).is_null() && !std::thread::panicking();
    let answer_deadline = Instant::now() + ANSWER_TIMEOUT;
    // Phase one: every worker starts answering, or the timeout passes;
    // phase two: every worker that started has finished.
    let mut state = request.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if state.parts.iter().any(|p| matches!(p, Part::Started)) {
            state = wait(&request, state, Duration::from_millis(50), in_coroutine);
            continue;
        }
        let left = answer_deadline.saturating_duration_since(Instant::now());
        if !state.parts.iter().any(|p| matches!(p, Part::Waiting)) || left.is_zero() {
            break;
        }
        state = wait(&request, state, left, in_coroutine);
    }
    state.closed = true;
    let parts = std::mem::take(&mut state.parts);
    drop(state);
    let mut busy = Vec::new();
    for (index, part) in parts.into_iter().enumerate() {
        match part {
            Part::Done(part) => coroutines.extend(part),
            Part::Started => unreachable!("the dump waits for every worker that started answering"),
            Part::Waiting => {
                let running = super::monitor::running_on(&shared.workers[index]);
                busy.push(BusyWorker {
                    worker: index,
                    running: running.as_ref().map(|r| r.id),
                    unstarted_not_listed: shared.workers[index].pinned_unstarted(),
                });
                if let Some(running) = running {
                    coroutines.push(CoroutineDump {
                        id: running.id,
                        name: running.name,
                        spawned_at: Some(running.spawned_at),
                        worker: Some(index),
                        state: CoroutineState::Running,
                        in_state_for: None,
                        // Unknown: its task's fields are its worker's to read.
                        cancel_requested: false,
                        unwinding: false,
                        trace: TraceSlot::Skipped(format!("worker {index} did not answer")),
                    });
                }
                // Its unstarted ones: a deque cannot be read in place, so
                // the dumper takes them, as an idle worker would steal them,
                // lists them as queued there, and hands them to the
                // runtime's queue, where any worker may start them (they
                // were stuck behind a busy worker anyway).
                let taken = shared.workers[index].steal_all_fresh();
                for task in &taken {
                    PartBuilder::add_unstarted(&mut coroutines, now, task, Some(index));
                }
                shared.requeue_unstarted(taken);
            }
        }
    }
    coroutines.sort_by_key(|c| c.id);
    coroutines.dedup_by_key(|c| c.id);
    Dump { coroutines, workers, busy, took: started.elapsed() }
}

/// Waits for an answer to `request` for up to `timeout`: a coroutine sleeps
/// in steps of a millisecond (so its worker keeps running, and answering),
/// an OS thread waits on the request's condition variable.
fn wait<'a>(
    request: &'a Request,
    state: std::sync::MutexGuard<'a, RequestState>,
    timeout: Duration,
    in_coroutine: bool,
) -> std::sync::MutexGuard<'a, RequestState> {
    if in_coroutine {
        drop(state);
        super::sleep(timeout.min(Duration::from_millis(1)));
        request.state.lock().unwrap_or_else(|e| e.into_inner())
    } else {
        request.answered.wait_timeout(state, timeout).unwrap_or_else(|e| e.into_inner()).0
    }
}

/// The unstarted tasks of a worker's `fresh` deque each get a line in the
/// dump: the worker's own part lists them (`dump_part`, which empties and
/// refills its deque), or the dumper, for a worker that does not answer.
pub(crate) fn add_fresh(builder: &mut PartBuilder, task: &TaskRef) {
    PartBuilder::add_unstarted(&mut builder.out, builder.now, task, Some(builder.worker));
}

// ---------------------------------------------------------------------------
// Dump on a signal
// ---------------------------------------------------------------------------

/// The runtimes that print their dump on a signal, and which signal.
static ON_SIGNAL: Mutex<Vec<(i32, Weak<Shared>)>> = Mutex::new(Vec::new());

/// Prints `shared`'s dump on stderr whenever the process receives `signal`
/// (already validated). The signal's handler only writes a byte to a pipe;
/// a thread named `weft-dump-signal`, started on first use, reads it and
/// collects the dump.
pub(crate) fn dump_on_signal(signal: i32, shared: &Arc<Shared>) -> std::io::Result<()> {
    // Whether the thread runs. Only success is kept: a failure (out of
    // descriptors for the pipe, or of threads) fails this build, and the
    // next build tries again.
    static THREAD: Mutex<bool> = Mutex::new(false);
    let mut thread = THREAD.lock().unwrap_or_else(|e| e.into_inner());
    let start = || -> std::io::Result<()> {
        let pipe = crate::sys::signal::signal_pipe()?;
        std::thread::Builder::new().name("weft-dump-signal".into()).spawn(move || {
            loop {
                let signal = pipe.wait();
                let runtimes: Vec<Arc<Shared>> = {
                    let mut registered = ON_SIGNAL.lock().unwrap_or_else(|e| e.into_inner());
                    registered.retain(|(_, r)| r.strong_count() > 0);
                    registered.iter().filter(|(s, _)| *s == signal).filter_map(|(_, r)| r.upgrade()).collect()
                };
                // (A runtime dropped while a `spawn_blocking` job still
                // holds its shared part has no workers left to list.)
                for shared in runtimes.iter().filter(|s| !s.shutdown.load(Ordering::Relaxed)) {
                    let dump = collect(shared);
                    eprint!("weft: signal {signal}: {dump}");
                }
            }
        })?;
        Ok(())
    };
    if !*thread {
        if let Err(e) = start() {
            return Err(std::io::Error::new(e.kind(), format!("cannot start the dump-on-signal thread: {e}")));
        }
        *thread = true;
    }
    drop(thread);
    ON_SIGNAL.lock().unwrap_or_else(|e| e.into_inner()).push((signal, Arc::downgrade(shared)));
    crate::sys::signal::forward_to_pipe(signal)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot print dumps on signal {signal}: {e}")))
}
