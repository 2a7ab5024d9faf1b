//! The monitor: one thread per runtime that notices, and says on stderr,
//! when a coroutine holds its worker too long (a *stall*) and when every
//! coroutine of the runtime is parked with nothing inside the runtime left
//! to wake them (a *deadlock hint*). Go's sysmon and its "all goroutines are
//! asleep" are the models.
//!
//! # Glossary
//!
//! - **switch counter**: `WorkerCounters::switches`, which the worker bumps
//!   before every resume (see `metrics`). While it does not move, the worker
//!   is in one resume, or idle.
//! - **stall**: a worker that is not sleeping and whose switch counter has
//!   not moved for the threshold (`RuntimeBuilder::stall_threshold`,
//!   100 ms by default).
//! - **probe**: the monitor asking a stalled worker's own thread, with a
//!   signal, which coroutine it runs and what its stack looks like.
//!
//! # The monitor's round
//!
//! 1. Every tick (half the threshold, 5-250 ms) read each worker's switch
//!    counter and sleep word (Relaxed: a stale value only delays a report by
//!    a tick). A stall is thus reported between one and one and a half
//!    thresholds after it began (up to a tick later if it began as its
//!    worker woke: the look that first finds a worker awake after a sleep
//!    starts its time there, so the sleep never counts). Each tick costs
//!    the monitor a futex wait that times out: measured 55-70 us of CPU per
//!    tick on the 2-CPU VM of BENCHMARKS.md, so 0.12-0.14 % of a core while
//!    the runtime runs (0.22 % with ticks at a quarter threshold), and
//!    nothing while it is idle (step 3). A moved counter or a sleeping worker ends that worker's
//!    stall, if one was reported ("released" line).
//! 2. A worker whose counter has stood still for the threshold while awake
//!    is probed, once per resume. If the probe answers that a coroutine runs
//!    and that the counter still has the value the monitor saw, the stall is
//!    reported: once, whatever its length.
//! 3. When every worker sleeps, check the deadlock hint (below), then park:
//!    the monitor sleeps on its futex word until a worker leaves its sleep.
//!
//! # Naming the stalled coroutine safely
//!
//! The running task's cell may be freed at any moment from another thread's
//! point of view: a task that finishes is dropped by its worker right after
//! its resume. So the monitor never reads a task. It sends `SIGURG` to the
//! stalled worker's thread instead (`tgkill`), and the handler, running *on
//! that thread*, reads `CURRENT_TASK`: a task is alive for as long as its
//! worker is inside its resume (the worker's lent reference or its
//! registry's), and the worker cannot leave the resume while its own thread
//! runs the handler. The handler copies what the report needs — id, up to
//! 64 bytes of name, the spawn site (a `&'static Location`), the switch
//! counter, the inbox length and the return addresses of the stack — into
//! the worker's `Probe`, and wakes the monitor. Naming the coroutine adds
//! nothing to the path of a resume (the switch counter, one store, is all
//! the monitor asks of it).
//!
//! ```text
//!  probe state   set by                   means
//!  -----------   ----------------------   ------------------------------------
//!  IDLE          monitor (after reading)  no request; the data is the monitor's
//!  REQUESTED     monitor (CAS from IDLE)  a signal is on its way
//!  WRITING       handler (CAS from        the handler owns the data
//!                REQUESTED)
//!  DONE          handler                  the data is filled in; monitor's turn
//! ```
//!
//! The Release store of DONE pairs with the monitor's Acquire load (the
//! handler's writes are visible), and the monitor's Release stores of IDLE
//! and REQUESTED pair with the handler's Acquire CAS (the monitor's reads of
//! the previous answer are done before the handler writes again). A probe
//! that gets no answer within `PROBE_TIMEOUT` is withdrawn (REQUESTED back
//! to IDLE); one that the handler already took is left to finish, and its
//! stale DONE is cleared at the next probe. A `SIGURG` that finds no request
//! on its thread (or reaches a thread that is no worker) goes on to the
//! handler that was installed before ours; `SIGURG`'s default is to be
//! ignored. The handler is installed with `SA_RESTART`, and the signal is
//! sent once per stall, to a worker that is already misbehaving.
//!
//! The backtrace is walked in the handler with libgcc's unwinder (see
//! `sys::unwind` for why that is acceptable there), except while the
//! thread is panicking: the unwinder may be in the middle of its own work
//! then. It crosses the signal frame into the coroutine's frames and, through
//! the switch's CFI, on into the worker's. The monitor prints the raw
//! addresses as `module +offset`, which `addr2line` resolves; weft carries no
//! symboliser of its own.
//!
//! # The deadlock hint
//!
//! When every worker sleeps without a timer armed, no unstarted coroutine
//! is queued, no `spawn_blocking` job runs or waits, and coroutines are
//! parked, nothing inside the runtime can wake them. If that holds, with no
//! counter moving, for `HINT_QUIET`, the monitor lists the parked coroutines
//! and prints the hint once; it prints again only after the counters moved
//! and the runtime fell quiet anew. An OS thread outside the runtime may
//! still wake them (a channel fed by a thread, a lock an OS thread holds),
//! so the message says it is a hint. When the runtime does move after a
//! hint, the hint was wrong (something outside woke it, or spawned work on
//! it), and a program built that way (coroutines fed by an OS thread now
//! and then) would get a hint at every pause: so each refuted hint doubles
//! the quiet time the next one needs, up to `MAX_HINT_QUIET`.
//!
//! The parked coroutines are listed from `Runtime::dump`'s collection
//! (only a worker may read its own coroutines: the dump asks each worker,
//! which answers from its sleep path and sleeps again), one summary line
//! each and where it waits in the program's own code
//! (`CoroutineDump::waits_at`), at most `HINT_LISTED` of them.
//!
//! # Sleeping and waking the monitor
//!
//! The monitor's futex word is TICKING, PARKED or STOPPING. Before parking
//! the monitor stores PARKED (SeqCst), then checks that every worker still
//! sleeps (SeqCst loads); a worker that leaves its sleep stores RUNNING
//! (SeqCst), then loads the word (SeqCst) and, if PARKED, CASes it to
//! TICKING and wakes the monitor. This is the Dekker pair of the workers'
//! own sleep: either the monitor sees the worker awake and does not park,
//! or the worker sees PARKED and wakes it. An idle runtime's monitor thus
//! makes no system calls at all. `Runtime::drop` stores STOPPING and wakes
//! it, then joins it, after the workers have stopped: a coroutine that
//! holds its worker during the shutdown (which waits for it) is reported
//! too. A worker thread that leaves its loop unwatches itself
//! (`unwatch_this_thread`), and counts as idle from then on.
//!
//! A worker that is awake and has not switched for the threshold while it
//! runs *no* coroutine is reported as well (the probe answers that none
//! runs, with the thread's backtrace): code between coroutines holds it,
//! such as the destructor of a detached coroutine's result, which the
//! worker drops after the coroutine's last resume.

use super::metrics::WorkerMetrics;
use super::worker::WorkerShared;
use super::{CURRENT_TASK, Shared};
use crate::loom::process::{AtomicBool, AtomicU32, Ordering, UnsafeCell};
use crate::sys::futex::{self, Deadline};
use crate::sys::{signal, thread as sys_thread, unwind};
use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::fmt::Write as _;
use std::io;
use std::panic::Location;
use std::ptr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The default stall threshold.
pub(crate) const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_millis(100);
/// How many parked coroutines the deadlock hint lists (a runtime with tens
/// of thousands would otherwise print as many lines).
const HINT_LISTED: usize = 32;
/// How long a runtime must stay quiet before the deadlock hint.
const HINT_QUIET: Duration = Duration::from_secs(1);
/// The longest quiet time a hint needs after earlier hints were refuted.
const MAX_HINT_QUIET: Duration = Duration::from_secs(64);
/// How long the monitor waits for a probed worker's handler.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// Return addresses kept from a stalled worker's stack.
const MAX_FRAMES: usize = 48;
/// Bytes of a coroutine's name kept by a probe.
const NAME_BYTES: usize = 64;

const TICKING: u32 = 0;
const PARKED: u32 = 1;
const STOPPING: u32 = 2;

const IDLE: u32 = 0;
const REQUESTED: u32 = 1;
const WRITING: u32 = 2;
const DONE: u32 = 3;

/// The monitor's part of `Shared`: its futex word (see the module docs).
pub(crate) struct MonitorShared {
    word: AtomicU32,
}

impl MonitorShared {
    pub(crate) fn new() -> MonitorShared {
        MonitorShared { word: AtomicU32::new(TICKING) }
    }

    /// Called by a worker right after it stored RUNNING on leaving its
    /// sleep: wakes the monitor if it is parked.
    #[inline]
    pub(crate) fn on_worker_running(&self) {
        // SeqCst: the worker's half of the Dekker pair with `Monitor::park`
        // (module docs): its SeqCst store of RUNNING comes before this load.
        if self.word.load(Ordering::SeqCst) == PARKED {
            self.wake_parked();
        }
    }

    #[cold]
    fn wake_parked(&self) {
        if self.word.compare_exchange(PARKED, TICKING, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
            futex::wake(&self.word, 1);
        }
    }

    /// Tells the monitor thread to return (`Runtime::drop`).
    pub(crate) fn stop(&self) {
        self.word.store(STOPPING, Ordering::SeqCst);
        futex::wake(&self.word, 1);
    }
}

/// The monitor's part of a `WorkerShared`.
pub(crate) struct WorkerWatch {
    /// The worker thread's kernel id (0 until it started), for `tgkill`.
    tid: AtomicU32,
    /// Set by the worker before it sleeps: whether it sleeps until a timer.
    pub(crate) sleeping_with_timer: AtomicBool,
    /// Set by the worker while it spins for work before it sleeps: idle,
    /// although awake (its spin yields the CPU, which on a busy machine can
    /// take as long as a stall threshold).
    pub(crate) spinning: AtomicBool,
    probe: Probe,
}

impl WorkerWatch {
    pub(crate) fn new() -> WorkerWatch {
        WorkerWatch {
            tid: AtomicU32::new(0),
            sleeping_with_timer: AtomicBool::new(false),
            spinning: AtomicBool::new(false),
            probe: Probe { state: AtomicU32::new(IDLE), data: UnsafeCell::new(ProbeData::EMPTY) },
        }
    }
}

/// What a probed worker's handler reports; see the module docs.
#[derive(Clone, Copy)]
struct ProbeData {
    /// False only in the monitor's stand-in for a probe nobody answered.
    answered: bool,
    switches: u64,
    running: bool,
    task_id: u64,
    has_name: bool,
    name: [u8; NAME_BYTES],
    name_len: usize,
    spawned_at: Option<&'static Location<'static>>,
    /// Parked coroutines woken from other threads whose wakes wait in the
    /// worker's inbox.
    inbox: usize,
    /// Whether the stack was walked (not while panicking).
    walked: bool,
    frames: [usize; MAX_FRAMES],
    frame_count: usize,
}

impl ProbeData {
    const EMPTY: ProbeData = ProbeData {
        answered: true,
        switches: 0,
        running: false,
        task_id: 0,
        has_name: false,
        name: [0; NAME_BYTES],
        name_len: 0,
        spawned_at: None,
        inbox: 0,
        walked: false,
        frames: [0; MAX_FRAMES],
        frame_count: 0,
    };
}

/// A request slot for one worker's probe.
struct Probe {
    /// IDLE / REQUESTED / WRITING / DONE (module docs); a futex word.
    state: AtomicU32,
    data: UnsafeCell<ProbeData>,
}

// SAFETY: `data` is written only by the handler while `state` is WRITING
// (it alone moved it there from REQUESTED) and read only by the monitor
// while `state` is DONE; the module docs give the orderings that order the
// two sides.
unsafe impl Sync for Probe {}

thread_local! {
    /// The worker whose thread this is, for the probe handler; null on
    /// other threads. Const-initialised without a destructor, so reading it
    /// in a signal handler is a plain thread-pointer-relative load.
    static WATCHED: Cell<*const WorkerShared> = const { Cell::new(ptr::null()) };
}

/// Called by a worker thread when it starts: makes it probe-able.
///
/// Until then the monitor counts the worker as idle (`is_gone`), and may
/// have parked on that: a worker that starts straight into queued work
/// never leaves a sleep, so it wakes the monitor here, as a worker leaving
/// its sleep does (`MonitorShared::on_worker_running`). SeqCst: the
/// worker's half of the Dekker pair with `Monitor::park`'s re-check.
pub(crate) fn watch_this_thread(worker: &WorkerShared, monitor: &MonitorShared) {
    worker.watch.tid.store(sys_thread::gettid(), Ordering::SeqCst);
    WATCHED.with(|w| w.set(worker));
    monitor.on_worker_running();
}

/// Called by a worker thread before it exits (and its `WorkerShared` may
/// go away): no probe reaches it any more, nor, through a stale thread id,
/// a thread the kernel later gives the same id. Under `REQUESTER`, which a
/// probe holds from its read of the thread id until it is answered or
/// withdrawn: a probe in flight ends first (this thread answers it, if its
/// signal arrives, while it waits here), and every later one reads 0.
pub(crate) fn unwatch_this_thread(worker: &WorkerShared) {
    let _no_probe = REQUESTER.lock().unwrap_or_else(|e| e.into_inner());
    worker.watch.tid.store(0, Ordering::Relaxed);
    WATCHED.with(|w| w.set(ptr::null()));
}

/// Whether `worker`'s thread has exited its loop (or not started yet):
/// nothing there to watch.
fn is_gone(worker: &WorkerShared, order: Ordering) -> bool {
    worker.watch.tid.load(order) == 0
}

/// One requester of a probe at a time, process-wide: the monitor, a dump
/// (through `running_on`) and the dump-on-signal thread may all probe the
/// same worker, and the probe states assume that only the requester moves
/// DONE on (two requesters could read `data` while the other's handler
/// writes it). Also taken by `unwatch_this_thread`. The handler never takes
/// it.
static REQUESTER: Mutex<()> = Mutex::new(());

static PREVIOUS_SIGURG: OnceLock<signal::SigAction> = OnceLock::new();

/// Installs the probe handler for `SIGURG`, once per process.
fn install_probe_handler() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: `on_probe` is async-signal-safe in the sense of the module
        // docs (no allocation, no locks; errno is preserved) and forwards
        // the signals that are not probes.
        match unsafe { signal::install_restarting_handler(signal::SIGURG, on_probe) } {
            Ok(previous) => {
                let _ = PREVIOUS_SIGURG.set(previous);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "weft: cannot install the stall monitor's SIGURG handler");
                false
            }
        }
    })
}

unsafe extern "C" fn on_probe(sig: c_int, info: *mut signal::SigInfo, context: *mut c_void) {
    let _errno = signal::ErrnoGuard::save();
    let worker = WATCHED.try_with(Cell::get).unwrap_or(ptr::null());
    // SAFETY: `watch_this_thread` set it to this thread's worker, whose
    // `Shared` the worker loop keeps alive until `unwatch_this_thread`;
    // `context` is the kernel's.
    let answered = !worker.is_null() && unsafe { answer_probe(&*worker, context) };
    if !answered && let Some(previous) = PREVIOUS_SIGURG.get() {
        // SAFETY: the kernel's arguments, and SIGURG is ignored by default.
        unsafe { signal::forward_ignorable(previous, sig, info, context) };
    }
}

/// The probe handler's work on a worker's thread; false if no probe was
/// requested.
///
/// # Safety
///
/// - Runs in a signal handler on `worker`'s own thread; `context` is the
///   handler's third argument.
unsafe fn answer_probe(worker: &WorkerShared, context: *mut c_void) -> bool {
    let probe = &worker.watch.probe;
    // Acquire: pairs with the monitor's Release of REQUESTED (module docs).
    if probe.state.compare_exchange(REQUESTED, WRITING, Ordering::Acquire, Ordering::Relaxed).is_err() {
        return false;
    }
    // SAFETY: WRITING: the data is ours alone until we store DONE.
    let data = unsafe { &mut *probe.data.get() };
    *data = ProbeData::EMPTY;
    data.switches = worker.counters.switches.load(Ordering::Relaxed);
    let task = CURRENT_TASK.try_with(Cell::get).unwrap_or(ptr::null());
    if !task.is_null() {
        // SAFETY: the task this thread's worker is resuming is alive until
        // the resume ends (see `worker::WorkerLocal::run_task`), and this
        // thread, interrupted by us, cannot end it before we return.
        let task = unsafe { &*task };
        data.running = true;
        data.task_id = task.id;
        data.spawned_at = Some(task.spawned_at);
        if let Some(name) = task.name.as_deref() {
            let mut len = name.len().min(NAME_BYTES);
            while !name.is_char_boundary(len) {
                len -= 1;
            }
            data.has_name = true;
            data.name[..len].copy_from_slice(&name.as_bytes()[..len]);
            data.name_len = len;
        }
        data.inbox = worker.inbox.parked_on_owner_thread();
    }
    // Also between coroutines: a worker that does not switch there is held
    // by a destructor it runs, or by weft itself.
    if !std::thread::panicking() {
        let n = unwind::walk_into(&mut data.frames);
        // SAFETY: our handler's own context.
        let interrupted = unsafe { signal::interrupted_ip(context) };
        // Drop the handler's own frames: start at the interrupted one.
        let first = data.frames[..n].iter().position(|&ip| ip == interrupted).unwrap_or(0);
        data.frames.copy_within(first..n, 0);
        data.frame_count = n - first;
        data.walked = true;
    }
    // Release: publishes the data to the monitor's Acquire load of DONE.
    probe.state.store(DONE, Ordering::Release);
    futex::wake(&probe.state, 1);
    true
}

/// Asks `worker`'s thread what it runs; `None` if it does not answer in
/// time (or a previous probe is still being answered).
fn probe(worker: &WorkerShared) -> Option<ProbeData> {
    // One requester at a time (`REQUESTER`); the thread id is read under it.
    let _one_requester = REQUESTER.lock().unwrap_or_else(|e| e.into_inner());
    let probe = &worker.watch.probe;
    // A DONE left by a probe that timed out while its handler wrote.
    // Release: as for IDLE below.
    let _ = probe.state.compare_exchange(DONE, IDLE, Ordering::Release, Ordering::Relaxed);
    // Release: our reads of the previous answer happen before the handler's
    // next writes (its Acquire CAS).
    if probe.state.compare_exchange(IDLE, REQUESTED, Ordering::Release, Ordering::Relaxed).is_err() {
        return None;
    }
    let tid = worker.watch.tid.load(Ordering::Relaxed);
    if tid == 0 || signal::signal_thread(tid, signal::SIGURG).is_err() {
        probe.state.store(IDLE, Ordering::Relaxed);
        return None;
    }
    let deadline = Deadline::after(PROBE_TIMEOUT);
    loop {
        // Acquire: pairs with the handler's Release of DONE.
        let state = probe.state.load(Ordering::Acquire);
        if state == DONE {
            // SAFETY: DONE: the handler is finished with the data, and only
            // we move the state on.
            let data = unsafe { *probe.data.get() };
            // Release: see above.
            probe.state.store(IDLE, Ordering::Release);
            return Some(data);
        }
        if deadline.has_passed() {
            // Withdraw the request if the handler has not taken it.
            let _ = probe.state.compare_exchange(REQUESTED, IDLE, Ordering::Relaxed, Ordering::Relaxed);
            return None;
        }
        futex::wait(&probe.state, state, Some(deadline));
    }
}

/// The coroutine a worker runs, as its own thread answered the probe.
pub(crate) struct Running {
    pub(crate) id: u64,
    pub(crate) name: Option<String>,
    pub(crate) spawned_at: &'static Location<'static>,
}

/// Which coroutine `worker` runs, asked of its thread with the probe
/// signal (for `Runtime::dump`, about a worker that does not answer its
/// request): `None` if it runs none, does not answer within
/// `PROBE_TIMEOUT`, or the monitor is probing it at the same time.
pub(crate) fn running_on(worker: &WorkerShared) -> Option<Running> {
    if !install_probe_handler() {
        return None;
    }
    let data = probe(worker)?;
    if !data.answered || !data.running {
        return None;
    }
    let name = data.has_name.then(|| String::from_utf8_lossy(&data.name[..data.name_len]).into_owned());
    Some(Running { id: data.task_id, name, spawned_at: data.spawned_at? })
}

/// Appends a probe's backtrace to a report.
fn write_backtrace(text: &mut String, data: &ProbeData) {
    if data.walked {
        let _ = writeln!(
            text,
            "  backtrace of the worker thread (the interrupted instruction, then return addresses; \
             `addr2line -Cfipe MODULE OFFSET` names them):"
        );
        for (i, &ip) in data.frames[..data.frame_count].iter().enumerate() {
            match unwind::module_of(ip) {
                Some((module, base)) => {
                    let _ = writeln!(text, "    {i:2}: {ip:#x} {module} +{:#x}", ip - base);
                }
                None => {
                    let _ = writeln!(text, "    {i:2}: {ip:#x}");
                }
            }
        }
    } else if data.answered {
        let _ = writeln!(text, "  (no backtrace: the worker thread is unwinding a panic)");
    }
}

/// Starts the monitor thread of `shared`.
pub(crate) fn start(shared: &Arc<Shared>, threshold: Duration) -> io::Result<std::thread::JoinHandle<()>> {
    let probes = install_probe_handler();
    let shared = Arc::clone(shared);
    std::thread::Builder::new().name(format!("weft-mon-r{}", shared.id)).spawn(move || {
        let monitor = Monitor {
            watches: (0..shared.workers.len()).map(|_| Watch::default()).collect(),
            shared,
            threshold,
            tick: (threshold / 2).clamp(Duration::from_millis(5), Duration::from_millis(250)),
            probes,
            quiet: None,
            hinted: None,
            hint_quiet: HINT_QUIET,
        };
        monitor.run();
    })
}

/// What the monitor remembers of one worker.
#[derive(Default)]
struct Watch {
    /// The switch counter at the last tick, and since when it has that value
    /// with the worker awake.
    switches: u64,
    since: Option<Instant>,
    /// Whether the worker slept (or spun for work) at the last look: then
    /// the time since is no stall, however long the monitor itself slept in
    /// between.
    slept: bool,
    /// Whether this resume was probed already.
    probed: bool,
    /// The reported stall, if one is under way: who, and since when.
    stall: Option<(String, Instant)>,
}

/// What the monitor waits for after a round.
enum Wait {
    Tick,
    Until(Instant),
    Park,
}

struct Monitor {
    shared: Arc<Shared>,
    threshold: Duration,
    tick: Duration,
    /// Whether the probe handler is installed.
    probes: bool,
    watches: Vec<Watch>,
    /// The counters' signature when the runtime fell quiet, and when.
    quiet: Option<(u64, Instant)>,
    /// The signature the last hint was printed for.
    hinted: Option<u64>,
    /// How long the runtime must be quiet before a hint (module docs).
    hint_quiet: Duration,
}

impl Monitor {
    fn run(mut self) {
        loop {
            if self.shared.monitor.word.load(Ordering::Acquire) == STOPPING {
                return;
            }
            let now = Instant::now();
            let mut all_sleeping = true;
            for index in 0..self.shared.workers.len() {
                all_sleeping &= self.check_worker(index, now);
            }
            let wait = if all_sleeping {
                self.check_quiet(now)
            } else {
                self.quiet = None;
                Wait::Tick
            };
            let word = &self.shared.monitor.word;
            match wait {
                Wait::Tick => {
                    futex::wait(word, TICKING, Some(Deadline::after(self.tick)));
                }
                // Parked, not a plain wait: a worker that wakes meanwhile
                // must end the wait, or a stall that begins during a hint's
                // quiet time (up to `MAX_HINT_QUIET`) would go unseen.
                Wait::Until(at) => self.park(Some(Deadline::after(at.saturating_duration_since(now)))),
                Wait::Park => self.park(None),
            }
        }
    }

    /// Sleeps until a worker wakes up, or `deadline` passes (module docs).
    fn park(&self, deadline: Option<Deadline>) {
        let word = &self.shared.monitor.word;
        // SeqCst: the monitor's half of the Dekker pair with
        // `on_worker_running`: this store comes before the loads below.
        if word.compare_exchange(TICKING, PARKED, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return; // STOPPING
        }
        // A worker not started yet counts as idle; it wakes us when it
        // starts (`watch_this_thread`), hence SeqCst for its thread id too.
        let idle = |w: &WorkerShared| w.is_sleeping(Ordering::SeqCst) || is_gone(w, Ordering::SeqCst);
        if self.shared.workers.iter().all(idle) {
            futex::wait(word, PARKED, deadline);
        }
        let _ = word.compare_exchange(PARKED, TICKING, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// One worker's step 1 and 2 of the round; returns whether it sleeps.
    fn check_worker(&mut self, index: usize, now: Instant) -> bool {
        let worker = &self.shared.workers[index];
        let switches = worker.counters.switches.load(Ordering::Relaxed);
        // A worker whose thread left its loop (at shutdown), or not started
        // yet, is as idle.
        let sleeping = worker.is_sleeping(Ordering::Relaxed) || is_gone(worker, Ordering::Relaxed);
        // One spinning for work before it sleeps is awake (so no deadlock
        // hint yet) but held by nothing: its time starts again too.
        let idle = sleeping || worker.watch.spinning.load(Ordering::Relaxed);
        let watch = &mut self.watches[index];
        if idle || watch.slept || watch.since.is_none() || switches != watch.switches {
            if let Some((who, since)) = watch.stall.take() {
                self.report_stall_end(index, &who, now.duration_since(since));
            }
            let watch = &mut self.watches[index];
            watch.switches = switches;
            watch.since = Some(now);
            watch.slept = idle;
            watch.probed = false;
            return sleeping;
        }
        let since = watch.since.unwrap_or(now);
        let held = now.duration_since(since);
        if watch.probed || held < self.threshold || !self.probes {
            return false;
        }
        watch.probed = true;
        let data = match probe(worker) {
            // The stall just ended.
            Some(data) if data.switches != switches => return false,
            Some(data) => data,
            // No answer (another SIGURG handler replaced ours, say): report
            // what the monitor knows.
            None => ProbeData { answered: false, ..ProbeData::EMPTY },
        };
        let who = self.report_stall(index, &data, held);
        self.watches[index].stall = Some((who, since));
        false
    }

    /// Prints (and traces) a stall report; returns how it named the coroutine.
    #[cold]
    fn report_stall(&self, index: usize, data: &ProbeData, held: Duration) -> String {
        let runtime = self.shared.id;
        let name =
            if data.has_name { Some(String::from_utf8_lossy(&data.name[..data.name_len]).into_owned()) } else { None };
        let who = match &name {
            _ if !data.answered => {
                "a coroutine (its worker thread did not answer the monitor's SIGURG probe)".to_string()
            }
            _ if !data.running => return self.report_busy_between_coroutines(index, data, held),
            Some(name) => format!("coroutine {} ('{name}')", data.task_id),
            None => format!("coroutine {}", data.task_id),
        };
        let site = data.spawned_at.map_or_else(|| "an unknown place".to_string(), |l| l.to_string());
        let spawned = if data.answered { format!(", spawned at {site},") } else { String::new() };
        let (waiting, parked) = self.waiting_on(index, data);
        let mut text = format!(
            "weft: {who}{spawned} has held worker {index} of runtime {runtime} \
             (thread weft-r{runtime}-w{index}) for {} ms without yielding; {waiting} other coroutine{} \
             ready and waiting for that worker, {parked} parked on it.\n  weft schedules cooperatively: a coroutine keeps its worker until it \
             yields, parks or returns. Move blocking calls and long computations to weft::spawn_blocking, use \
             weft::sleep and weft::sync instead of std's, or call weft::yield_now in long loops.\n",
            held.as_millis(),
            if waiting == 1 { " is" } else { "s are" },
        );
        write_backtrace(&mut text, data);
        super::panic_report::to_stderr(&text);
        tracing::warn!(
            runtime,
            worker = index,
            coroutine = data.task_id,
            name = name.as_deref().unwrap_or(""),
            spawned_at = %site,
            held_ms = held.as_millis() as u64,
            waiting,
            "weft: a coroutine holds its worker without yielding"
        );
        who
    }

    /// The report of a worker that has not switched for the threshold
    /// while awake and running no coroutine: something between coroutines
    /// holds it, such as the destructor of a detached coroutine's result
    /// that its worker drops, or weft itself. Returns how the stall end
    /// line names it.
    #[cold]
    fn report_busy_between_coroutines(&self, index: usize, data: &ProbeData, held: Duration) -> String {
        let runtime = self.shared.id;
        let mut text = format!(
            "weft: worker {index} of runtime {runtime} (thread weft-r{runtime}-w{index}) has run no coroutine for {} \
             ms, and is not idle: code between its coroutines holds it, such as a destructor it runs (of a \
             detached coroutine's result, or a value a finished coroutine left behind), or weft's own work \
             (listing many coroutines for a dump).\n",
            held.as_millis(),
        );
        write_backtrace(&mut text, data);
        super::panic_report::to_stderr(&text);
        tracing::warn!(
            runtime,
            worker = index,
            held_ms = held.as_millis() as u64,
            "weft: a worker is held between coroutines"
        );
        "code between coroutines".to_string()
    }

    /// How many coroutines wait to run on a stalled worker: started ones
    /// that are neither parked nor the running one, woken ones still in its
    /// inbox, and unstarted ones spawned there. Its counters do not move
    /// while it is stalled (only it writes them), so this is exact.
    /// Also returns how many are parked there (not counting the woken ones
    /// in its inbox).
    fn waiting_on(&self, index: usize, data: &ProbeData) -> (u64, u64) {
        let worker = &self.shared.workers[index];
        let counters: WorkerMetrics = worker.counters.read();
        let ready = counters.alive.saturating_sub(counters.parked).saturating_sub(1);
        let parked = counters.parked.saturating_sub(data.inbox as u64);
        (ready + data.inbox as u64 + worker.unstarted_len() as u64, parked)
    }

    #[cold]
    fn report_stall_end(&self, index: usize, who: &str, held: Duration) {
        let runtime = self.shared.id;
        let text =
            format!("weft: {who} released worker {index} of runtime {runtime} after about {} ms\n", held.as_millis());
        super::panic_report::to_stderr(&text);
        tracing::info!(runtime, worker = index, held_ms = held.as_millis() as u64, "weft: {who} released its worker");
    }

    /// Step 3 of the round, every worker asleep: the deadlock hint's
    /// conditions and quiet time (module docs).
    fn check_quiet(&mut self, now: Instant) -> Wait {
        let Some(signature) = self.quiet_signature() else {
            self.quiet = None;
            // A running blocking job can end without waking a worker.
            return if self.shared.blocking.stats().running > 0 { Wait::Tick } else { Wait::Park };
        };
        match self.hinted {
            Some(hinted) if hinted == signature => return Wait::Park,
            Some(_) => {
                // The runtime moved after the last hint: it was wrong.
                self.hinted = None;
                self.hint_quiet = (self.hint_quiet * 2).min(MAX_HINT_QUIET);
            }
            None => {}
        }
        let quiet_for = self.hint_quiet;
        match self.quiet {
            Some((quiet, since)) if quiet == signature => {
                if now.duration_since(since) < quiet_for {
                    return Wait::Until(since + quiet_for);
                }
                if self.report_deadlock_hint(signature) {
                    self.hinted = Some(signature);
                    Wait::Park
                } else {
                    self.quiet = None;
                    Wait::Tick
                }
            }
            _ => {
                self.quiet = Some((signature, now));
                Wait::Until(now + quiet_for)
            }
        }
    }

    /// The sum of the counters that move when anything happens, if the
    /// runtime is in the hint's state: no timer, no queued or blocking work,
    /// and coroutines parked.
    fn quiet_signature(&self) -> Option<u64> {
        let shared = &self.shared;
        if shared.injector_len.load(Ordering::Relaxed) != 0 {
            return None;
        }
        let blocking = shared.blocking.stats();
        if blocking.running != 0 || blocking.queued != 0 {
            return None;
        }
        let mut parked = 0;
        let mut signature = shared.spawned_outside.load(Ordering::Relaxed);
        for worker in &shared.workers {
            // `fresh_len`, not `unstarted_len`: a sleeping worker's run
            // queue, where its `same_worker` tasks wait, is empty.
            if worker.watch.sleeping_with_timer.load(Ordering::Relaxed) || worker.fresh_len() != 0 {
                return None;
            }
            let c = worker.counters.read();
            parked += c.parked;
            signature = signature
                .wrapping_add(c.switches)
                .wrapping_add(c.spawned)
                .wrapping_add(c.finished)
                .wrapping_add(c.parks)
                .wrapping_add(c.local_wakes)
                .wrapping_add(c.remote_wakes);
        }
        (parked > 0).then_some(signature)
    }

    /// Lists the parked coroutines and prints the hint, if the runtime is
    /// still in the same quiet state afterwards; returns whether it printed.
    #[cold]
    fn report_deadlock_hint(&self, signature: u64) -> bool {
        // The dump's collection wakes the workers to answer (they go back to
        // sleep after), which moves none of the signature's counters;
        // anything else that happened meanwhile does.
        let dump = super::dump::collect(&self.shared);
        if self.quiet_signature() != Some(signature) {
            return false;
        }
        let runtime = self.shared.id;
        let workers = self.shared.workers.len();
        let counted: u64 = self.shared.workers.iter().map(|w| w.counters.read().parked).sum();
        let mut text = format!(
            "weft: all {counted} coroutines of runtime {runtime} are parked and nothing can wake them from inside \
             the runtime: its {workers} worker{} idle, no timer is armed, no spawn_blocking job runs and nothing is \
             queued. This is a hint, not a verdict: a thread outside the runtime may still wake them; if none \
             will, they are deadlocked (a lock cycle, a std::sync lock held across a park, a lost notify).\n  \
             parked coroutines (Runtime::dump shows their backtraces):\n",
            if workers == 1 { " is" } else { "s are" },
        );
        for coroutine in dump.coroutines().iter().take(HINT_LISTED) {
            let _ = writeln!(text, "    {}", coroutine.line());
            if let Some(site) = coroutine.waits_at() {
                let _ = writeln!(text, "      waits in {site}");
            }
        }
        if let Some(more) = dump.coroutines().len().checked_sub(HINT_LISTED).filter(|&n| n > 0) {
            let _ = writeln!(text, "    ... and {more} more (Runtime::dump lists every coroutine)");
        }
        for busy in dump.busy_workers() {
            let _ = writeln!(text, "    (worker {} did not list its coroutines in time)", busy.worker);
        }
        super::panic_report::to_stderr(&text);
        tracing::warn!(
            runtime,
            parked = counted,
            "weft: all coroutines are parked and nothing inside the runtime can wake them"
        );
        true
    }
}
