//! One worker: an OS thread that runs coroutines.
//!
//! # Queues (who may touch what)
//!
//! ```text
//!  queue       holds                         pushed by            popped by
//!  ----------  ----------------------------  -------------------  ------------------------
//!  runnable    started tasks ready to run,   this worker only     this worker only (FIFO)
//!              and unstarted ones spawned
//!              with `Builder::same_worker`
//!  fresh       unstarted tasks spawned here  this worker only     this worker (newest first;
//!              (or stolen by it)                                  the oldest on fairness
//!                                                                 takes); thieves and a
//!                                                                 dump of a busy worker
//!                                                                 (oldest first)
//!  inbox       woken tasks of this worker    any thread           this worker (all at once)
//!  injector    unstarted tasks from outside  any thread           any worker (FIFO)
//!  timers      (deadline, task) of timed      this worker only     this worker
//!              parks (see Timers)
//! ```
//!
//! A started task never leaves its home worker (DESIGN.md decision 3): a
//! wake from another thread goes to the home worker's inbox. Only unstarted
//! tasks move between workers (stealing from `fresh` and the injector); an
//! unstarted task spawned with `Builder::same_worker` waits in its
//! spawner's `runnable`, which no other worker reads, so it starts there
//! (in FIFO order with the tasks that are ready to run). A shutdown fails
//! such a task as unstarted; a dump lists it as unstarted.
//!
//! `fresh` is a Chase-Lev work-stealing deque (crossbeam-deque's LIFO
//! `Worker`, `WorkerLocal::fresh`, and its `Stealer`, `WorkerShared::fresh`):
//!
//! ```text
//!            oldest                                       newest
//!  Stealer -> [ front | ... | ... | ... | ... | ... | back ] <- Worker
//!  steal, steal_batch_and_pop:           push (spawn), pop (newest first):
//!  thieves (CAS on front); the owner     the owner's thread only, no lock;
//!  on a fairness take; the dump of a     a pop fences (SeqCst) and CASes
//!  worker that does not answer           only for the deque's last task
//! ```
//!
//! Tasks sit in it in the order they were queued, oldest at the front: the
//! owner pushes at the back, and a thief steals only when its own deque is
//! empty, so the batch it moves (oldest first, `steal_batch_and_pop`)
//! is all its deque holds. The deque cannot be peeked or iterated: the
//! fairness rule below needs no peek, and the dump empties and refills it
//! (`dump_part`) or steals from it (see `dump`).
//!
//! # Stealing waits 100 µs
//!
//! A thief leaves other workers' unstarted tasks alone until it has found
//! work to steal for `STEAL_AFTER_NANOS` (100 µs) in a row. It times that
//! itself (`WorkerLocal::steal_wait`), so spawns pay nothing for it: the
//! wait runs from the first time it finds work to steal for as long as it
//! keeps finding some. A look that finds none, or a sleep, ends it, and the
//! next work it finds starts a new wait. Once the wait is over it steals as
//! before, batch after batch, for as long as it keeps finding work: its
//! own steals shrink the queues too, so the restarts in the table below,
//! which read a shrinking queue as its owner starting the work, end with
//! the first steal. (They did not, at first: a thief back from a batch
//! within the first millisecond restarted its window and idled 100 µs
//! between batches; the test `a_thief_whose_wait_ran_out_steals_at_each_look`
//! saw gaps of 110 µs between its starts, in every round.)
//!
//! ```text
//!  what the thief sees, look after look      it steals
//!  ----------------------------------------  -------------------------------
//!  the queued tasks grew at some look        100 µs after the wait began
//!  (a spawn tree, a loop of spawns)
//!  they only shrink: the owners start them   100 µs after the last look that
//!  (a burst whose coroutines start, talk     found fewer than the look before,
//!  and wait for each other)                  1 ms after the wait began at most
//!  they stay as they are (the owner is busy  100 µs after the wait began
//!  in a long task)
//! ```
//!
//! A started coroutine never moves (decision 3), so where a task starts is
//! where it stays: coroutines that a coroutine spawns together usually talk
//! to each other (a pipeline's stages, producers and consumers, a pool
//! around one lock), and when they start on the spawner's worker, their
//! hand-offs stay on it, without an inbox push and a futex wake each. A
//! burst whose coroutines park at once (waiting for one another) is started
//! by its own worker, which takes a fresh task whenever its run queue is
//! empty and every 31st round otherwise; the thief sees the queue shrink
//! and waits, up to 1 ms. Work that keeps the deque full longer (a spawn
//! tree, a worker busy in a long task) is stolen as before, 100 µs later,
//! and a long queue of computations that its owner works through one by one
//! 1 ms later. Meanwhile an idle worker that sees such young work spins on
//! it rather than sleeping (its idle loop finds work, the steal declines),
//! for at most that long. While it waits, it looks at the other workers'
//! queues in every 16th round of its idle spin, not in every round
//! (`WorkerLocal::spin`): each look reads the cache lines their owners
//! write at every spawn and every start, and looks in every round made the
//! owner of a burst of short coroutines several times slower than it was
//! with no thief at all.
//!
//! Measured on this machine's `versus_threads` (2 workers, medians of 5
//! runs, three invocations each way, in turns). The first version, a plain
//! 100 µs: producer-consumer with Mutex+2 Condvars 2.9/4.7/4.8 ->
//! 11.1/11.4/11.5 M items/s (Go at GOMAXPROCS=2: 4.7), with Semaphores
//! 2.0/3.9/3.6 -> 2.8/4.2/2.9, spawn+join, skynet, contended Mutex and
//! readers-writers unchanged (their coroutines run long before they block,
//! so the deque stays full and is stolen). Its wait kept running through
//! the thief's sleep when the owner had started the burst first, so the
//! next burst was stolen at once (the channel bench's producer-consumer
//! ran split in 45 % of its batches; every batch on one worker since the
//! sleep ends the wait). And one producer or consumer of the Mutex+Condvar
//! rows was stolen in most runs: its worker, busy with the ones it had
//! started, took the next fresh one only every 31st round, so starting all
//! eight took over 100 µs. With the restarts on shrinking queues (the
//! previous build's runs of the same day against three of this one):
//! Mutex+2 Condvars 9.4-11.7 -> 18.5/19.5/18.7 M items/s, Semaphores
//! 3.1-4.7 -> 4.9/4.8/4.8, skynet 0.083-0.089 µs/leaf and spawn+join
//! 0.14-0.16 µs/task, as before the first version.
//!
//! The price: coroutines that park at once but do not talk to each other
//! start together too, such as connection handlers that an accept loop
//! spawns in a burst and that park on their sockets. `http_hello
//! --workers 2` under `wrk -c100` (4 s, on this 2-CPU machine, wrk on the
//! same CPUs) ran all its connections on one worker in 2 runs of 2; it did
//! so in 1 run of 2 before (the woken worker often came too late to steal
//! anyway), at the same requests per second. A steady flow of new work
//! keeps the deque busy for longer than 100 µs and is shared as before.
//!
//! Running the newest fresh task first makes a spawn tree run depth-first,
//! so the number of started-but-unfinished coroutines (each holding a stack
//! and two memory maps) stays near depth x fan-out instead of growing with
//! the width of the tree (skynet's million leaves run with a few dozen stacks).
//!
//! # One scheduling round
//!
//! 1. Move the inbox into `runnable`; fire expired timers (they wake tasks).
//! 2. Pick a task: every 61st round the injector first, every 31st the
//!    newest fresh task first (so work from outside and unstarted work are
//!    picked up within a bounded number of rounds even while tasks keep
//!    yielding); otherwise `runnable`, then the newest fresh task, then the
//!    injector, then steal a batch of another worker's oldest fresh tasks.
//!    Fresh tasks are taken newest-first by their own worker: taking the
//!    oldest one often turns a spawn tree's depth-first walk breadth-wise
//!    (measured: skynet held ~4 700 stacks instead of ~20 with the oldest
//!    every 31st round, 55 instead of 7 with the oldest every 20 ms).
//!
//!    Newest-first alone lets the oldest fresh task wait without bound,
//!    though: a coroutine that keeps spawning keeps something newer at the
//!    back, and stealing rescues it only when another worker is idle. So
//!    every 32nd fresh-first round (about every thousand rounds) is a
//!    *check*, which runs a fairness clock of the deque:
//!
//!    - a check that finds the deque empty stops the clock (nothing waits;
//!      whatever is queued later has waited less than from now);
//!    - a check that finds it non-empty with no clock running starts one,
//!      noting the deque's length;
//!    - a check at which the clock is due takes the oldest fresh task (the
//!      owner steals from its own deque's front) and restarts the clock.
//!      It is due once it has run
//!      - at least 20 ms if the deque has since grown past twice its length
//!        then, plus 64 (spawns outpace starts: the newest-first walk is
//!        not coming back to the front), or
//!      - at least 250 ms in any case (the deque stays steady, but the back
//!        never runs dry down to the front).
//!
//!    While a task waits, the clock never stops (the deque is not empty),
//!    every due take removes a task queued before it or the task itself,
//!    and a new spawn goes behind it (a thief's stolen batch too: it lands
//!    in an empty deque, no further from its front than it was). So each
//!    fresh task starts within (its place from the front + 1) x (250 ms +
//!    one check interval) of reaching its deque, however much is spawned
//!    after it; and a depth-first walk is
//!    interrupted at most four times a second while the deque does not
//!    grow (each interruption keeps the interrupted path's few stacks alive
//!    until the old task's subtree is done), at most fifty while it does.
//!
//!    The deque cannot be peeked, so unlike a queue that can, the rule does
//!    not wait for one task to stay at the front for the whole period: it
//!    times the front position, not the task in it. When thieves or the
//!    owner's walk keep moving the front, a take may start a task that has
//!    waited only briefly; that costs one early start per period, not
//!    fairness. Stamping each task with its queue time would not avoid it
//!    either: the stamp can only be read after the take.
//! 3. Run it until it yields (back of `runnable`), parks (someone else holds
//!    it) or finishes.
//! 4. With nothing to run, sleep (see below).
//!
//! In the fairness rounds a worker also ends its task-cell cache's epoch
//! when its coarse clock says one is due (`cell_cache`). In the fairness
//! rounds and before going idle, it answers the
//! dump requests in its mailbox (`WorkerShared::dump`; the protocol is in
//! `dump`): between two rounds no task of the worker runs, so it may walk
//! their stacks.
//!
//! A round is on the path of every yield and every hand-off between two
//! coroutines, so its common case stays short: the inbox and timer checks
//! are one load each (the work behind them is out of line), the fairness
//! rule is one countdown rather than two divisions, the run queue is a
//! power-of-two ring of task pointers (`run_queue`), and the reference popped
//! from a queue is lent to the running task (its first park hands it to its
//! waker, who queues it again: no reference-count traffic per hand-off; see
//! `run_task` and `runtime::current_task_for_waker`).
//!
//! # A yield's round, without the worker (the direct switch)
//!
//! Most yields need no more of a round than "queue me, run the front of
//! `runnable`". A yield whose round would be just that makes it on the
//! yielding task's own stack and switches straight to the next task
//! (`yield_direct`; `weft_switch_direct` in the `.S`): one switch instead
//! of two (measured on the yield ping-pong of two coroutines: 19.3 -> 12.5
//! ns per yield, 98 -> 93 instructions). It does so only when the loop's own
//! per-round checks would find nothing to do:
//!
//! ```text
//!  the loop would ...                   so the direct switch requires
//!  -----------------------------------  -----------------------------------
//!  drain the inbox (woken tasks)        the inbox empty (one load)
//!  fire timers                          no timers armed
//!  run a fairness round (injector,      the countdown to it above 1 (it
//!    fresh, clock, I/O, dumps,          counts this round down as the
//!    shutdown flag)                     loop would)
//!  start an unstarted task (its first   the front of `runnable` started
//!    run needs the worker's stack)        (its coroutine suspended)
//!  record a suspend while panicking     the yielder not panicking
//! ```
//!
//! Otherwise the yield goes to the worker as before (`Task::switch_out`).
//! The task switched to takes over the worker's resume: its next switch back
//! to the worker (a park, a yield the worker must see, its end) returns
//! from the `resume` the worker made for another task. So the worker takes
//! the outcome of every resume for the task running *when it returns*
//! (`CURRENT_TASK`, which the direct switch updates with the lent
//! reference, as `run_task` does), and holds no reference to a coroutine
//! across a resume (`CoroutineCore::switch_in_raw`). The yielding task goes to
//! the back of `runnable` first, registered as after any yield; it is
//! continued later by the worker or by another task's direct switch, both
//! of which put its own switch top in r12 as its suspend expects.
//!
//! A park makes the same switch under the same conditions (`park_direct`),
//! once its park word says PARKED: the parking task is not queued (whoever
//! wakes it queues it, on this worker: into `runnable` from this thread, or
//! into the inbox from another, which only this thread drains, after the
//! switch), and what the worker does after a park's switch back (count it;
//! give the registry the reference lent to the resume, if the coroutine
//! did not take it for its waker) is done before the switch instead.
//! Measured on this 2-CPU host (AMD EPYC, AVX-512; criterion, three runs of
//! each build in turns, 2026-12-07): a rendezvous hand-off 26.2-28.7 ->
//! 22.8-24.5 ns, a Mutex+Condvar hand-off 26.5-26.6 -> 23.9-25.3 ns;
//! callgrind 291 -> 281 and 296 -> 290 instructions. (On the host of an
//! earlier collection the same switch made the rendezvous slower, 94 ->
//! 107 ns, before the stacks' colouring and the unpaired suspend.)
//!
//! # Sleeping and waking (DESIGN.md decision 6)
//!
//! Each worker has a futex word: RUNNING, SLEEPING, NOTIFIED or POLLING. An idle
//! worker stores SLEEPING, then (SeqCst) re-checks every queue it could take
//! work from (and its dump mailbox), and only then waits on the word, with
//! the next timer's deadline as timeout. Whoever publishes work pushes it first, then
//! (SeqCst fence) reads the word(s): a SLEEPING worker is CASed to NOTIFIED
//! and woken. (A wake from another thread pushes into the inbox with a
//! SeqCst compare-exchange and reads the word with a SeqCst load, without
//! the fence: `WorkerShared::notify_after_seqcst_push`.) The two SeqCst sides form a Dekker pair: either the sleeper's
//! re-check sees the work, or the publisher sees SLEEPING — a wake is never
//! lost.
//!
//! ```text
//!  publisher (a spawn)                    sleeper
//!  ------------------------------------   ------------------------------------
//!  fresh.push: slot, then back index      sleep word = SLEEPING     (SeqCst)
//!    (Release fence, Relaxed store)       sleepers += 1             (SeqCst)
//!  fence(SeqCst)                          fence(SeqCst)             (any_fresh)
//!  read sleepers, spinning, sleep words   every Stealer::is_empty   (Acquire)
//! ```
//!
//! The fresh deques' indices are not SeqCst, so both sides put a SeqCst
//! fence between their write and their read, and the fences' total order
//! decides: if the publisher's comes first, the sleeper's is_empty reads the
//! new back index (a store before a SeqCst fence is seen by loads after a
//! later SeqCst fence); if the sleeper's comes first, the publisher reads
//! SLEEPING and the sleepers count. The other queues (inbox, injector
//! length) are read with SeqCst loads after the SeqCst store.
//!
//! Work for one worker (its inbox) wakes that worker; stealable work
//! wakes one sleeping worker, if any. Nothing polls: an idle runtime makes
//! no system calls until work or a timer arrives, except that a worker
//! whose task-cell cache holds more than it keeps for good sleeps at most
//! until its cache's epoch ends (`cell_cache`, "How much a thread keeps"):
//! at most two such wakes after a burst of spawns, and the cache is back to
//! its base. That deadline wakes no coroutine, so it does not count as a
//! timer for the monitor (`sleeping_with_timer`).
//!
//! A worker with sockets registered (see `poller`) publishes POLLING instead
//! of SLEEPING and sleeps in its poller's `epoll_wait` (same timeout); a
//! publisher that finds POLLING CASes it to NOTIFIED and writes the poller's
//! eventfd instead of the futex wake. Such a worker first collects ready
//! events without blocking, and does not spin (below): its work is mostly
//! those events.
//!
//! Before sleeping, an idle worker spins for 10 µs (`SPIN_NANOS`, and at
//! least `SPIN_ROUNDS` checks) re-checking the queues (Go's "spinning M"): work that arrives meanwhile
//! costs its publisher no futex wake and the worker no sleep. The spin is
//! timed, not counted: it used to be 128 checks, which lasted as long as
//! the checks took, and when they became cheaper (below) the spin shrank
//! and workers slept more. Readers-writers, 4 coroutines on 2 workers, 30
//! batches of 800 000 operations: about 4 200 sleeps per worker with the
//! counted spin, 5 000 to 8 700 with the cheaper checks, 200 to 280 with
//! 10 µs; median batches 47.8-52.2 ms against 50.1-64.4 ms for the
//! counted spin, run in turns (the sync bench's row: 45.2-48.7 against
//! 45.1-55.0 ms). Publishers of stealable work skip the wake
//! while any worker spins: that worker will find the work, and if it gives up
//! first, its SLEEPING re-check above sees the work. This saves a futex wake
//! per spawn when spawns come in bursts. A spinner takes one task, though:
//! the last spinner to stop, if stealable work is still in sight, wakes a
//! sleeper itself (Go's `resetspinning` -> `wakep`), or a second spawn of
//! the same spin would wait while a worker sleeps.
//!
//! A worker about to sleep looks up its next timer before anything else,
//! because that drops stale timer entries, and the last reference to a
//! finished task may be one of them: the task's result is dropped right
//! there, and its destructor may wake a task of this very worker into its
//! run queue, a local wake that notifies nobody. The checks that follow
//! (`has_work` looks at the run queue too) then see that task.
//!
//! # Timers
//!
//! A coroutine's timed park (`weft::sleep`, and every wait with a timeout,
//! through `park::Unparker::prepare_deadline`) arms a timer on its home
//! worker, and ends by disarming it (`disarm_timer`), however it ended. The
//! worker keeps a binary heap of entries `(deadline, seq, task)`, `seq` a
//! per-worker number that also breaks ties between equal deadlines. Each
//! task names its *current* entry (`Task::timer_entry`) and says whether a
//! timed park is under way (`timer_armed`) and until when
//! (`timer_deadline`). An entry is *armed* while it is its task's current
//! entry and the task's timer is armed; every other entry is *stale*: it
//! will never wake anyone, and `stale_timers` counts them. Everything here
//! is touched only by the home worker's thread (a started task runs only
//! there, and its timers live there), so no atomics are needed.
//!
//! ```text
//!  event                      who                  what happens                            stale_timers
//!  -------------------------  -------------------  --------------------------------------  ------------
//!  arm, the current entry     the task, parking    it is armed again (revived): no heap    -1
//!  is due no later than the                        operation; it moves on when it is due
//!  new deadline
//!  arm, otherwise             the task, parking    a new entry is pushed and becomes the   -
//!                                                  current one (an older one stays stale)
//!  park ends (disarm)         the task             timer_armed = false                     +1 if armed
//!  an entry comes due         worker, fire_timers  popped; if armed: fires (wakes the
//!                                                  task) or, if the task's deadline is
//!                                                  later (revived), is pushed again for     -1 if stale
//!                                                  that deadline
//!  worker goes idle           worker,              stale tops popped, a revived top         -1 each
//!                             next_deadline        moved on: the top is armed and exact     stale
//!  compaction (stale >=       disarm / fire_timers the heap rebuilt without stale entries  0
//!  COMPACT_MIN and > armed)
//! ```
//!
//! So a timed wait that is woken early costs a few flag updates and no
//! heap operation at all when it comes back with the same timeout (its
//! entry is revived, as Go's runtime moves a modified timer lazily), and
//! its entry is moved at most once per timeout that actually elapses. A
//! stale entry leaves when it comes due, when an idle worker finds it at
//! the top (so the worker sleeps until an armed deadline and never wakes
//! for a stale one), or in a compaction once stale entries are at least
//! `COMPACT_MIN` and outnumber the armed ones. So a worker holds at most
//! about `max(armed, COMPACT_MIN - 1)` stale entries (each a reference to a
//! task's cell): memory follows the armed timers, not the number of timed
//! waits. A rebuild costs time linear in the heap, paid for by the disarms
//! that made over half of it stale. A worker whose heap holds only stale
//! entries runs its rounds as one with no timers (`has_timers` counts the
//! armed ones): it neither reads the clock for them nor keeps its yields
//! from switching directly. A stale entry keeps only its task's cell, not
//! the task's result (a result nobody can take is dropped when it exists:
//! `join`).
//!
//! Invariants: `stale_timers` is the number of stale entries (checked in
//! debug builds at every compaction); a task whose timer is armed has a
//! current entry in the heap; the current entry's deadline is never later
//! than the task's `timer_deadline` (a timer never fires late).
//!
//! # Shutdown
//!
//! 1. `Runtime::drop` sets `shutdown` and wakes every worker.
//! 2. Each worker sees the flag when it runs out of work (a sleeping one is
//!    woken for that), at its next fairness round (at most 31 rounds away)
//!    and before it would start a task (which then fails as unstarted
//!    instead), and after it drains its inbox: not at every round, which
//!    would put a load of a shared line on every yield and hand-off. (After
//!    a drain, because another worker's shutdown unwinds its own tasks, and
//!    their destructors and join handles wake coroutines of this one
//!    through its inbox: resumed, a woken joiner would run on past its
//!    join's Shutdown error, where the runtime's contract is that it is
//!    unwound. The inbox's Release/Acquire pair makes the flag, set before
//!    that unwind began, visible here.) It leaves its loop, then unwinds every
//!    task it started that
//!    has not finished (their destructors run on their own thread; their
//!    join handles end with an error), and drops its queues.
//! 3. `Runtime::drop` joins the worker threads, then fails the join handles
//!    of unstarted tasks left in the injector.

use super::dump::{self, CoroutineDump, Mailbox, PartBuilder};
use super::join::Failure;
use super::metrics::{self, WorkerCounters};
use super::monitor::{self, WorkerWatch};
use super::poller::Poller;
use super::run_queue::RunQueue;
use super::task::{NO_HOME, NO_TIMER, NOT_REGISTERED, Switch, Task, TaskCoroutine, TaskRef};
use super::{CURRENT_TASK, CURRENT_TASK_LENT, Shared, cell_cache, clock};
use crate::coroutine::CoroutineResult;
use crate::loom::process::{AtomicPtr, AtomicU32, AtomicUsize, Ordering, fence};
use crate::sys::epoll;
use crate::sys::futex::{self, Deadline};
pub(crate) use crossbeam_deque::Worker as Deque;
use crossbeam_deque::{Steal, Stealer};
use crossbeam_utils::CachePadded;
use std::cell::{Cell, RefCell};
use std::collections::BinaryHeap;
use std::io;
use std::ptr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const RUNNING: u32 = 0;
const SLEEPING: u32 = 1;
const NOTIFIED: u32 = 2;
/// Asleep in its poller's `epoll_wait` instead of on the futex word (see
/// "Sleeping and waking" and `poller`).
const POLLING: u32 = 3;
/// How many events one `epoll_wait` collects.
const EVENTS_PER_POLL: usize = 256;

/// The epoch of a worker's task-cell cache: cells that it held unused for
/// a whole epoch go back to the allocator (`cell_cache`).
const CACHE_EPOCH: Duration = Duration::from_secs(1);
/// How often (in rounds) the injector is checked first.
const INJECTOR_INTERVAL: u32 = 61;
/// How often (in rounds) the newest fresh task is taken first.
const FRESH_INTERVAL: u32 = 31;
/// How often (in fresh-first rounds, so about every 31 x 32 rounds) the
/// fresh deque's fairness clock is checked (see "One scheduling round").
const OLDEST_CHECK_INTERVAL: u32 = 32;
/// How long the fairness clock runs before the oldest unstarted task of a
/// worker is taken ahead of the newest while the worker's fresh deque keeps
/// growing (spawns outpace starts: newest-first would never reach it).
const STARVE_AFTER_GROWING: Duration = Duration::from_millis(20);
/// How long the fairness clock runs before the oldest is taken in any case.
/// Long, because each early start of an old task interrupts a depth-first
/// walk and keeps the interrupted path's stacks alive meanwhile (skynet's
/// million leaves run in about a quarter second with 7 stacks on one worker;
/// an interruption every 20 ms made that 55).
const STARVE_AFTER: Duration = Duration::from_millis(250);
/// The fresh deque "keeps growing" when it is at least this much longer
/// than twice its length when the fairness clock started (a spawn tree's
/// depth-first walk keeps it near depth x fan-out, some tens).
const GROWTH_SLACK: usize = 64;

/// How long an idle worker spins, checking for work, before it sleeps
/// (see "Sleeping and waking" in the module docs).
const SPIN_NANOS: u64 = 10_000;
/// The fewest checks of that spin, however fast the clock runs: under an
/// instruction counter (valgrind runs the code some fifty times slower),
/// 10 µs would be a handful of checks, and the idle worker's trips
/// between its spin and its sleep would fill the counts of the 2-worker
/// benchmarks.
const SPIN_ROUNDS: u32 = 128;
/// The fewest stale timers that make a compaction (when they also outnumber
/// the armed ones): below it, a rebuild would cost more than the few stale
/// entries do (see "Timers" in the module docs).
const COMPACT_MIN: usize = 32;

/// The part of a worker other threads may touch.
pub(crate) struct WorkerShared {
    pub(crate) inbox: Inbox,
    /// The thieves' end of this worker's `fresh` deque (the owner's end,
    /// `WorkerLocal::fresh`, lives on the worker's thread): the oldest
    /// unstarted tasks, for other workers, for the owner's own fairness
    /// take, and for a dump of a worker that does not answer.
    fresh: Stealer<TaskRef>,
    /// RUNNING / SLEEPING / NOTIFIED / POLLING; a futex word.
    sleep: AtomicU32,
    /// The worker's epoll instance, created by the worker the first time
    /// one of its coroutines waits for a socket (see `poller`).
    poller: OnceLock<Arc<Poller>>,
    /// Written only by this worker's thread (see `metrics`); on lines of
    /// their own, away from the inbox that other threads push to.
    pub(crate) counters: CachePadded<WorkerCounters>,
    /// What the monitor needs of this worker (see `monitor`).
    pub(crate) watch: WorkerWatch,
    /// Requests for `Runtime::dump` (see `dump`).
    pub(crate) dump: Mailbox,
    /// How many unstarted tasks spawned with `Builder::same_worker` wait in
    /// this worker's `runnable` (which only the worker reads). Written only
    /// by this worker's thread (`WorkerLocal::push_pinned` and `unpin`),
    /// read by others as a snapshot, like the counters: Relaxed everywhere,
    /// it orders nothing.
    pinned_unstarted: AtomicUsize,
}

impl WorkerShared {
    /// The shared part of a worker whose `fresh` deque `fresh` steals from
    /// (its owner's end goes to `run`).
    pub(crate) fn new(fresh: Stealer<TaskRef>) -> WorkerShared {
        WorkerShared {
            inbox: Inbox::new(),
            fresh,
            sleep: AtomicU32::new(RUNNING),
            poller: OnceLock::new(),
            counters: CachePadded::new(WorkerCounters::default()),
            watch: WorkerWatch::new(),
            dump: Mailbox::new(),
            pinned_unstarted: AtomicUsize::new(0),
        }
    }

    /// Whether the worker is asleep (or about to be: it re-checks for work
    /// after publishing SLEEPING).
    pub(crate) fn is_sleeping(&self, order: Ordering) -> bool {
        matches!(self.sleep.load(order), SLEEPING | POLLING)
    }

    /// How many unstarted tasks wait in its `fresh` deque (a snapshot).
    pub(crate) fn fresh_len(&self) -> usize {
        self.fresh.len()
    }

    /// How many unstarted tasks spawned with `Builder::same_worker` wait in
    /// its run queue (a snapshot).
    pub(crate) fn pinned_unstarted(&self) -> usize {
        self.pinned_unstarted.load(Ordering::Relaxed)
    }

    /// How many unstarted tasks wait on this worker, in either queue (a
    /// snapshot).
    pub(crate) fn unstarted_len(&self) -> usize {
        self.fresh_len() + self.pinned_unstarted()
    }

    /// Takes every unstarted task out of this worker's `fresh` deque, oldest
    /// first, as a thief would (for the dump of a worker that does not
    /// answer: see `dump`; the owner may push and pop meanwhile).
    pub(crate) fn steal_all_fresh(&self) -> Vec<TaskRef> {
        let mut taken = Vec::new();
        loop {
            match self.fresh.steal() {
                Steal::Success(task) => taken.push(task),
                Steal::Empty => return taken,
                Steal::Retry => std::hint::spin_loop(),
            }
        }
    }

    /// Takes the oldest unstarted task of this worker's `fresh` deque (the
    /// owner's fairness take, and thieves' single steals), retrying a race
    /// lost to another thief.
    fn steal_oldest_fresh(&self) -> Option<TaskRef> {
        loop {
            match self.fresh.steal() {
                Steal::Success(task) => return Some(task),
                Steal::Empty => return None,
                Steal::Retry => std::hint::spin_loop(),
            }
        }
    }

    /// Wakes this worker if it sleeps. The caller has published work first.
    pub(crate) fn notify(&self) -> bool {
        // SeqCst: the publisher's half of the Dekker pair (module docs).
        fence(Ordering::SeqCst);
        self.notify_after_seqcst_push()
    }

    /// [`notify`](Self::notify) for a caller whose push was a SeqCst
    /// read-modify-write ([`Inbox::push`]): that push and this SeqCst load
    /// of the sleep word are the publisher's half of the Dekker pair, in
    /// the single total order of SeqCst operations with the sleeper's
    /// SeqCst store of SLEEPING and its SeqCst load of the inbox's head
    /// (`has_own_work`): either the sleeper's load sees the push, or this
    /// load sees SLEEPING (or POLLING). No fence: on x86-64 a `fence(SeqCst)`
    /// is an `mfence`, on top of the push's `lock cmpxchg`, which is a full
    /// barrier already.
    pub(crate) fn notify_after_seqcst_push(&self) -> bool {
        match self.sleep.load(Ordering::SeqCst) {
            SLEEPING
                if self.sleep.compare_exchange(SLEEPING, NOTIFIED, Ordering::SeqCst, Ordering::Relaxed).is_ok() =>
            {
                futex::wake(&self.sleep, 1);
                true
            }
            POLLING if self.sleep.compare_exchange(POLLING, NOTIFIED, Ordering::SeqCst, Ordering::Relaxed).is_ok() => {
                self.wake_poller();
                true
            }
            _ => false,
        }
    }

    /// Writes to the poller's eventfd: the worker sleeps in `epoll_wait`
    /// (it created its poller before it published POLLING).
    #[cold]
    fn wake_poller(&self) {
        if let Some(poller) = self.poller.get() {
            poller.wake();
        }
    }

    /// Wakes this worker unconditionally (shutdown).
    pub(crate) fn force_wake(&self) {
        self.sleep.store(NOTIFIED, Ordering::SeqCst);
        futex::wake(&self.sleep, 1);
        self.wake_poller();
    }
}

/// A multi-producer, single-consumer stack of tasks, linked through
/// `Task::next_in_inbox` (a task is in at most one inbox at a time, once:
/// only the waker that claimed its delivery pushes it, and the next claim
/// waits for `drain_inbox` to end that delivery, after `take_all`).
pub(crate) struct Inbox {
    head: AtomicPtr<Task>,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox { head: AtomicPtr::new(ptr::null_mut()) }
    }

    pub(crate) fn push(&self, task: TaskRef) {
        let node = task.into_raw().cast_mut();
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `node` is ours until the CAS publishes it.
            unsafe { (*node).next_in_inbox.store(head, Ordering::Relaxed) };
            // Release: publishes the link and the task to the popper.
            // SeqCst (which includes it): the push is the publisher's half of
            // the Dekker pair with a sleeping owner, with the SeqCst load in
            // `Worker::notify_after_seqcst_push` that follows it.
            match self.head.compare_exchange_weak(head, node, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return,
                Err(current) => head = current,
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.head.load(Ordering::SeqCst).is_null()
    }

    /// A cheap check for the scheduling loop (a stale answer only delays a
    /// wake by one round; the idle re-check uses the SeqCst one).
    #[inline]
    fn is_empty_relaxed(&self) -> bool {
        self.head.load(Ordering::Relaxed).is_null()
    }

    /// How many parked tasks the inbox holds wakes for (the coroutines
    /// that its next drain makes ready; the others get a token). Only the
    /// owning worker's thread may call this (also from a signal handler that
    /// interrupted it outside `take_all`): nodes leave the
    /// inbox, and may be freed, only in `take_all`, which that thread runs,
    /// and a task's park word is that thread's to read.
    pub(crate) fn parked_on_owner_thread(&self) -> usize {
        // Acquire: pairs with the pushers' Release CASes (a release sequence
        // on `head`), so every link below the head is visible.
        let mut node = self.head.load(Ordering::Acquire);
        let (mut seen, mut parked) = (0, 0);
        while !node.is_null() && seen < 1 << 20 {
            seen += 1;
            // SAFETY: nodes in the inbox are alive (it holds a reference to
            // each) until `take_all`, which cannot run meanwhile.
            let task = unsafe { &*node };
            parked += usize::from(task.park.is_parked());
            node = task.next_in_inbox.load(Ordering::Relaxed);
        }
        parked
    }

    /// Takes everything, oldest first.
    fn take_all(&self) -> Vec<TaskRef> {
        if self.head.load(Ordering::Relaxed).is_null() {
            return Vec::new();
        }
        // Acquire: pairs with the pushers' Release.
        let mut node = self.head.swap(ptr::null_mut(), Ordering::Acquire);
        let mut tasks = Vec::new();
        while !node.is_null() {
            // SAFETY: every node was a TaskRef::into_raw pushed exactly once
            // and is owned by us since the swap.
            let task = unsafe { TaskRef::from_raw(node) };
            // A load, not a swap that clears it: nobody else writes the link
            // until the task is pushed again, which takes a new claim of its
            // delivery, after `drain_inbox` has ended this one (the next
            // push overwrites the link). One atomic read-modify-write less
            // per remote wake.
            node = task.next_in_inbox.load(Ordering::Relaxed);
            tasks.push(task);
        }
        tasks.reverse();
        tasks
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        drop(self.take_all());
    }
}

/// An entry of a worker's timer heap (see "Timers" in the module docs).
struct Timer {
    deadline: Deadline,
    /// Unique per worker; the task's `timer_entry` while this entry is its
    /// current one.
    seq: u64,
    task: TaskRef,
}

impl Timer {
    /// Whether this is its task's current entry. Only the home worker of
    /// `task` calls this and `is_armed` (it holds the heap).
    fn is_current(&self) -> bool {
        self.task.timer_entry.get() == self.seq
    }

    /// Whether this entry may still wake its task (else it is stale).
    fn is_armed(&self) -> bool {
        self.is_current() && self.task.timer_armed.get()
    }

    /// Tells the task that this entry, leaving the heap, is no longer its
    /// current one.
    fn forget(&self) {
        if self.is_current() {
            self.task.timer_entry.set(NO_TIMER);
        }
    }
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    // Reversed: BinaryHeap is a max-heap and we want the earliest deadline.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

/// The worker's own state, touched only by its thread (reached through the
/// thread-local `CURRENT_WORKER`, also from inside its coroutines).
pub(crate) struct WorkerLocal {
    pub(crate) index: usize,
    pub(crate) shared: Arc<Shared>,
    /// `shared` as a `Weak`, for `unpark`'s is-this-the-task's-runtime test:
    /// `Weak::ptr_eq` with the task's `runtime` is one compare.
    pub(crate) shared_weak: std::sync::Weak<Shared>,
    /// The anchor of the coroutines this worker's coroutines spawn
    /// (`task::Anchor`).
    pub(crate) anchor: Arc<super::task::Anchor>,
    /// `&shared.workers[index].counters`, without the indexing on the paths
    /// that bump them.
    counters: *const WorkerCounters,
    /// `&shared.workers[index].inbox`, likewise (for `yield_direct`).
    inbox: *const Inbox,
    /// This worker's wait before stealing, while it keeps finding work to
    /// steal (`steal`); `None` once it found none or went to sleep.
    steal_wait: Cell<Option<StealWait>>,
    runnable: RunQueue,
    /// The owner's end of this worker's `fresh` deque: pushes and pops at
    /// the newest end, touched only by this thread (its `Stealer` is
    /// `WorkerShared::fresh`).
    fresh: Deque<TaskRef>,
    timers: RefCell<BinaryHeap<Timer>>,
    timer_seq: Cell<u64>,
    /// How many entries of `timers` are stale (see "Timers" above).
    stale_timers: Cell<usize>,
    /// Started tasks that have switched out and not finished (to unwind
    /// them at shutdown). A task is registered the first time it switches
    /// out, not when it starts: one that runs to completion in its first
    /// resume (most spawned tasks) never needs it, and at shutdown no task
    /// is running.
    registry: RefCell<Vec<Option<TaskRef>>>,
    free_slots: RefCell<Vec<u32>>,
    /// Whether `timers` holds an armed entry (more entries than stale
    /// ones): the round's check without a RefCell borrow. Stale entries
    /// alone do not set it: a task that left a timed wait early leaves one
    /// behind until its deadline, and the rounds meanwhile would read the
    /// clock for nothing, and yields could not switch directly. (They
    /// leave at the worker's next idle look at its timers, or in a
    /// compaction: at most `COMPACT_MIN` of them wait while none is armed.)
    has_timers: Cell<bool>,
    /// Rounds left until the next *fairness round*, one in which the
    /// injector or the newest fresh task goes first: the one countdown a
    /// round pays (a decrement and a test; no division, and not one
    /// countdown per rule).
    until_fairness: Cell<u32>,
    /// What `until_fairness` was set to at the last fairness round.
    fairness_span: Cell<u32>,
    /// Rounds left, as of the last fairness round, until the injector is
    /// checked first (every INJECTOR_INTERVAL rounds) ...
    until_injector: Cell<u32>,
    /// ... and until the newest fresh task is taken first (every
    /// FRESH_INTERVAL rounds).
    until_fresh: Cell<u32>,
    /// Fresh-first rounds left until the oldest fresh task is checked.
    until_oldest_check: Cell<u32>,
    /// The fairness clock of the `fresh` deque (see "One scheduling round");
    /// `None` while a check found the deque empty.
    oldest_clock: Cell<Option<OldestClock>>,
    /// The buffer `epoll_wait` fills (allocated with the poller).
    events: RefCell<Vec<epoll::Event>>,
    /// When this thread's task-cell cache ends its epoch (coarse clock, ns):
    /// see `cell_cache`, "How much a thread keeps".
    cache_epoch_end: Cell<u64>,
}

/// When a worker next takes its oldest fresh task (see "One scheduling
/// round"): set when a check first finds the deque non-empty, and again at
/// each take.
#[derive(Clone, Copy)]
struct OldestClock {
    /// The deque's length then.
    len: usize,
    /// When the oldest is taken if the deque has grown past twice `len`
    /// plus `GROWTH_SLACK` meanwhile.
    due_if_growing: Deadline,
    /// When the oldest is taken in any case.
    due: Deadline,
}

impl OldestClock {
    /// A clock started now, with the deque `len` long.
    fn start(len: usize) -> OldestClock {
        OldestClock { len, due_if_growing: Deadline::after(STARVE_AFTER_GROWING), due: Deadline::after(STARVE_AFTER) }
    }
}

/// How long a worker looks at other workers' unstarted tasks before it may
/// steal them (module docs, "Stealing waits 100 µs").
const STEAL_AFTER_NANOS: u64 = 100_000;
/// How long, at most, owners that keep starting their unstarted tasks
/// themselves can keep a thief waiting (module docs, "Stealing waits 100 µs").
const STEAL_AFTER_PROGRESS_NANOS: u64 = 1_000_000;

/// A thief's wait before it steals (`WorkerLocal::steal`), all in
/// nanoseconds of the monotonic clock.
#[derive(Clone, Copy)]
struct StealWait {
    /// When it first found work to steal: the wait's start.
    began: u64,
    /// When the current 100 µs window began: the wait's start, or the
    /// latest look that found fewer unstarted tasks than the look before
    /// while their number had not grown since the wait began.
    window: u64,
    /// How many unstarted tasks all the workers held at its latest look.
    queued: usize,
    /// Whether that number grew from one look to the next during the wait
    /// (spawns outpace starts: a spawn tree, a loop of spawns).
    grew: bool,
    /// Whether its window ran out (it went on to steal): then the wait is
    /// over, and each later look steals at once. Its own steals shrink the
    /// queues too, so from then on a shrinking queue no longer says that
    /// the owners are starting their work themselves.
    over: bool,
}

thread_local! {
    static CURRENT_WORKER: Cell<*const WorkerLocal> = const { Cell::new(ptr::null()) };
}

/// A yield of `task`, the running task of this thread, straight to the next
/// task of its worker ([`WorkerLocal::yield_direct`]); false if that is not
/// the yield to make now (then the caller switches out to the worker).
#[inline(always)]
pub(crate) fn yield_direct(task: &Task) -> bool {
    let local = CURRENT_WORKER.with(Cell::get);
    // A running task runs on its worker's thread, inside `run`, which set
    // CURRENT_WORKER for as long as it resumes tasks.
    debug_assert!(!local.is_null(), "task {} runs outside a worker", task.id);
    // SAFETY: as just said (see `with_current_worker`).
    unsafe { (*local).yield_direct(task) }
}

/// A park of `task`, the running task of this thread, straight to the next
/// task of its worker ([`WorkerLocal::park_direct`]); false if the worker
/// must run its round first (then the caller switches out to it).
#[inline(always)]
pub(crate) fn park_direct(task: &Task) -> bool {
    let local = CURRENT_WORKER.with(Cell::get);
    debug_assert!(!local.is_null(), "task {} runs outside a worker", task.id);
    // SAFETY: as in `yield_direct`.
    unsafe { (*local).park_direct(task) }
}

/// The worker running on this thread, if any.
#[inline]
pub(crate) fn with_current_worker<R>(f: impl FnOnce(Option<&WorkerLocal>) -> R) -> R {
    let local = CURRENT_WORKER.with(Cell::get);
    // SAFETY: the pointer is set by `run` for the lifetime of its stack frame,
    // which outlives every coroutine it resumes; null otherwise.
    f(unsafe { local.as_ref() })
}

impl WorkerLocal {
    /// Whether this worker's own queues are empty: no started task waits
    /// in its run queue, no unstarted one in its fresh deque.
    pub(crate) fn has_nothing_queued(&self) -> bool {
        self.runnable.len() == 0 && self.fresh.is_empty()
    }

    /// This worker's counters (written only here; see `metrics`).
    #[inline(always)]
    pub(crate) fn counters(&self) -> &WorkerCounters {
        // SAFETY: points into `self.shared`, which `self` keeps alive.
        unsafe { &*self.counters }
    }

    /// This worker's poller, created on first use (by the worker's own
    /// thread only: a coroutine of this worker asks for it).
    pub(crate) fn poller(&self) -> io::Result<Arc<Poller>> {
        let slot = &self.shared.workers[self.index].poller;
        if let Some(poller) = slot.get() {
            return Ok(Arc::clone(poller));
        }
        let poller = Arc::new(Poller::new().map_err(|err| {
            io::Error::new(err.kind(), format!("weft: worker {} cannot create its epoll instance: {err}", self.index))
        })?);
        self.events.replace(vec![epoll::empty_event(); EVENTS_PER_POLL]);
        // Only this thread sets it, so it was still empty.
        let _ = slot.set(Arc::clone(&poller));
        tracing::debug!(worker = self.index, "worker created its I/O poller");
        Ok(poller)
    }

    /// This worker's poller's address (null before it has one), to compare
    /// with an entry's without touching reference counts.
    #[inline]
    pub(crate) fn poller_ptr(&self) -> *const Poller {
        self.shared.workers[self.index].poller.get().map_or(ptr::null(), Arc::as_ptr)
    }

    /// This worker's poller, if it has one.
    pub(crate) fn poller_if_created(&self) -> Option<Arc<Poller>> {
        self.shared.workers[self.index].poller.get().cloned()
    }

    /// Collects ready I/O events without blocking (when any socket is
    /// registered) and wakes their coroutines; how many events it handled.
    #[inline]
    fn poll_io_now(&self) -> usize {
        match self.shared.workers[self.index].poller.get() {
            Some(poller) if poller.has_registrations() => self.poll_io(poller, Some(Duration::ZERO)),
            _ => 0,
        }
    }

    #[inline(never)]
    fn poll_io(&self, poller: &Poller, timeout: Option<Duration>) -> usize {
        let mut events = self.events.borrow_mut();
        let handled = poller.poll(&mut events, timeout);
        if handled != 0 {
            metrics::add(&self.counters().io_events, handled as u64);
        }
        handled
    }

    /// Makes a started task of this worker ready to run (a local wake).
    #[inline]
    pub(crate) fn push_runnable(&self, task: TaskRef) {
        debug_assert_eq!(task.home(), self.index, "task {} woken off its home worker", task.id);
        self.runnable.push_back(task);
    }

    /// Queues an unstarted task spawned on this worker with
    /// `Builder::same_worker`: behind the ready ones in `runnable`, which
    /// no other worker reads, so only this worker starts it.
    pub(crate) fn push_pinned(&self, task: TaskRef) {
        debug_assert_eq!(task.home(), NO_HOME, "task {} is started already", task.id);
        task.pinned.set(true);
        self.add_pinned(1);
        self.runnable.push_back(task);
    }

    /// Ends `task`'s wait in `runnable` as a same_worker task, if it was
    /// one: it is being started, failed or dropped.
    fn unpin(&self, task: &Task) {
        if task.pinned.replace(false) {
            self.add_pinned(-1);
        }
    }

    /// This thread is the counter's only writer: a load and a store.
    fn add_pinned(&self, delta: isize) {
        let count = &self.shared.workers[self.index].pinned_unstarted;
        count.store(count.load(Ordering::Relaxed).wrapping_add_signed(delta), Ordering::Relaxed);
    }

    /// Queues an unstarted task spawned on this worker.
    #[inline]
    pub(crate) fn push_fresh(&self, task: TaskRef) {
        // The deque's push ends with its store of the back index: the
        // publication that `notify_one_sleeper`'s SeqCst fence orders before
        // its read of the sleepers (see "Sleeping and waking").
        self.fresh.push(task);
        self.shared.notify_one_sleeper();
    }

    /// Arms a timer that wakes `task`, a coroutine running on this worker
    /// (its home), when `deadline` passes, unless [`disarm_timer`]
    /// (Self::disarm_timer) comes first.
    pub(crate) fn add_timer(&self, deadline: Deadline, task: &TaskRef) {
        debug_assert_eq!(task.home(), self.index, "task {} armed a timer off its home worker", task.id);
        if task.timer_armed.get() {
            // An earlier timed park of this task unwound without ending.
            self.disarm_timer(task);
        }
        metrics::bump(&self.counters().timers_armed);
        let revive = task.timer_entry.get() != NO_TIMER && task.timer_deadline.get() <= deadline;
        task.timer_armed.set(true);
        task.timer_deadline.set(deadline);
        if revive {
            // Its current entry is due no later than `deadline` (the
            // invariant, and the test above): armed again, it will move on
            // to `deadline` when it comes due.
            self.stale_timers.set(self.stale_timers.get() - 1);
            self.has_timers.set(true);
            return;
        }
        // A current entry due later (a shorter timeout than last time)
        // stays in the heap, stale (it was counted when it was disarmed).
        self.push_timer(deadline, task.clone());
    }

    /// Pushes a new entry for `task`, which becomes its current one.
    fn push_timer(&self, deadline: Deadline, task: TaskRef) {
        let seq = self.timer_seq.get();
        self.timer_seq.set(seq + 1);
        task.timer_entry.set(seq);
        self.timers.borrow_mut().push(Timer { deadline, seq, task });
        self.has_timers.set(true);
    }

    /// Ends the timed park of `task`, a coroutine running on this worker:
    /// its timer, if it has not fired, becomes stale (it will not wake the
    /// task). Must not be called with a lock held that a task's destructor
    /// could take: a compaction may drop the last reference to a finished
    /// task.
    pub(crate) fn disarm_timer(&self, task: &Task) {
        if !task.timer_armed.replace(false) {
            return; // it fired (or none was armed)
        }
        self.stale_timers.set(self.stale_timers.get() + 1);
        self.compact_timers_if_mostly_stale();
        self.note_armed_timers();
    }

    /// Sets `has_timers` from the heap's size and the stale count.
    #[inline]
    fn note_armed_timers(&self) {
        self.has_timers.set(self.timers.borrow().len() > self.stale_timers.get());
    }

    /// Compacts the timer heap if stale entries are at least `COMPACT_MIN`
    /// and outnumber the armed ones.
    #[inline]
    fn compact_timers_if_mostly_stale(&self) {
        let stale = self.stale_timers.get();
        if stale >= COMPACT_MIN && stale > self.timers.borrow().len() - stale {
            self.compact_timers();
        }
    }

    /// Rebuilds the timer heap with only its armed entries (see "Timers").
    #[cold]
    #[inline(never)]
    fn compact_timers(&self) {
        let stale: Vec<Timer> = {
            let mut timers = self.timers.borrow_mut();
            let (armed, stale): (Vec<Timer>, Vec<Timer>) =
                std::mem::take(&mut *timers).into_vec().into_iter().partition(Timer::is_armed);
            debug_assert_eq!(stale.len(), self.stale_timers.get(), "worker {}: stale timers miscounted", self.index);
            *timers = BinaryHeap::from(armed);
            self.has_timers.set(!timers.is_empty());
            stale
        };
        self.stale_timers.set(0);
        for timer in &stale {
            timer.forget();
        }
        // Outside the borrow: the last reference to a finished task runs
        // its result's destructor, which may use timers itself.
        drop(stale);
    }

    /// Takes every entry out of the timer heap (shutdown), disarming the
    /// tasks' timers.
    fn clear_timers(&self) {
        let timers = std::mem::take(&mut *self.timers.borrow_mut());
        self.stale_timers.set(0);
        self.has_timers.set(false);
        for timer in timers.into_vec() {
            if timer.is_current() {
                timer.task.timer_armed.set(false);
            }
            timer.forget();
        }
    }

    /// Puts a started task of this worker into its registry, if it is not
    /// there yet (shutdown unwinds what the registry holds, and its
    /// reference keeps a suspended task alive).
    #[inline]
    pub(crate) fn register_if_needed(&self, task: &TaskRef) {
        if task.registry_slot.get() == NOT_REGISTERED {
            self.register(task);
        }
    }

    #[cold]
    #[inline(never)]
    fn register(&self, task: &Task) {
        // SAFETY: the caller holds a `TaskRef` to the task (passed as the
        // task it points at, so the hot path keeps a pointer in a register
        // rather than the `TaskRef` in memory for this cold call).
        let registered = || Some(unsafe { TaskRef::clone_from_ptr(task) });
        let mut registry = self.registry.borrow_mut();
        let slot = match self.free_slots.borrow_mut().pop() {
            Some(slot) => {
                registry[slot as usize] = registered();
                slot
            }
            None => {
                registry.push(registered());
                // Each registered task holds at least a 4 KiB stack page:
                // memory runs out long before 2^32 of them.
                u32::try_from(registry.len() - 1)
                    .ok()
                    .filter(|&slot| slot != NOT_REGISTERED)
                    .expect("fewer than 2^32 - 1 suspended coroutines on one worker")
            }
        };
        task.registry_slot.set(slot);
    }

    /// Takes `task` out of the registry, if it is there. Inline: most tasks
    /// finish without ever having parked (never registered), and the check
    /// is one load.
    #[inline]
    fn unregister(&self, task: &Task) {
        let slot = task.registry_slot.replace(NOT_REGISTERED);
        if slot != NOT_REGISTERED {
            self.unregister_slot(slot);
        }
    }

    /// `unregister`'s slow path: frees registry slot `slot`.
    #[inline(never)]
    fn unregister_slot(&self, slot: u32) {
        self.registry.borrow_mut()[slot as usize] = None;
        self.free_slots.borrow_mut().push(slot);
    }

    /// Makes the wakes that came from other threads (the inbox), oldest
    /// first: a parked task goes to the back of `runnable`, any other gets a
    /// token (see `park`'s module docs).
    #[cold]
    #[inline(never)]
    fn drain_inbox(&self, inbox: &Inbox) {
        let mut woken = 0;
        for task in inbox.take_all() {
            // After `take_all` has read its link: from here on another
            // thread may queue the task again.
            task.park.end_delivery();
            if task.park.wake_here() {
                woken += 1;
                self.runnable.push_back(task);
            }
        }
        metrics::add(&self.counters().remote_wakes, woken);
    }

    /// Wakes the tasks whose deadline has passed (dropping the stale
    /// entries among them, and moving revived ones on to their task's
    /// deadline). Only called while `has_timers` is set (out of line: the
    /// yield round skips it).
    #[inline(never)]
    fn fire_timers(&self) {
        let now = Deadline::now();
        clock::set(now.as_nanos());
        let mut fired = false;
        while let Some(timer) = self.pop_timer_if(|top| top.deadline <= now) {
            if !timer.is_armed() {
                timer.forget();
                continue; // stale: dropped here, outside the heap's borrow
            }
            let deadline = timer.task.timer_deadline.get();
            if deadline > now {
                self.push_timer(deadline, timer.task);
            } else {
                timer.forget();
                timer.task.timer_armed.set(false);
                super::unpark(timer.task);
                fired = true;
            }
        }
        if fired && self.stale_timers.get() != 0 {
            // Fewer armed timers now: the stale ones may outnumber them.
            self.compact_timers_if_mostly_stale();
        }
        self.note_armed_timers();
    }

    /// Pops the top of the timer heap if `take(top)` (counting a stale one
    /// off); the heap's borrow ends before the caller drops the entry.
    fn pop_timer_if(&self, take: impl FnOnce(&Timer) -> bool) -> Option<Timer> {
        let mut timers = self.timers.borrow_mut();
        let top = timers.peek()?;
        if !take(top) {
            return None;
        }
        if !top.is_armed() {
            self.stale_timers.set(self.stale_timers.get() - 1);
        }
        timers.pop()
    }

    /// The earliest armed deadline, for an idle worker's sleep. Stale
    /// entries at the top are dropped and a revived top is moved on to its
    /// task's deadline first: the worker must not wake for a timer that no
    /// longer matters (nor hold a finished task through its timers' top).
    fn next_deadline(&self) -> Option<Deadline> {
        let moved_on = |top: &Timer| !top.is_armed() || top.task.timer_deadline.get() != top.deadline;
        while let Some(timer) = self.pop_timer_if(moved_on) {
            if timer.is_armed() {
                self.push_timer(timer.task.timer_deadline.get(), timer.task);
            } else {
                timer.forget();
            }
        }
        let next = self.timers.borrow().peek().map(|t| t.deadline);
        self.has_timers.set(next.is_some());
        next
    }

    /// The number of entries in the timer heap and how many are stale.
    #[cfg(test)]
    pub(crate) fn timer_counts(&self) -> (usize, usize) {
        (self.timers.borrow().len(), self.stale_timers.get())
    }

    #[inline]
    fn next_task(&self) -> Option<TaskRef> {
        // The fairness rule (module docs, step 2): one countdown to the next
        // round in which either of its two rules applies.
        let until_fairness = self.until_fairness.get() - 1;
        self.until_fairness.set(until_fairness);
        if until_fairness == 0 {
            return self.next_task_fairness_round();
        }
        if let Some(task) = self.runnable.pop_front() {
            return Some(task);
        }
        // The newest fresh task, inline: a burst of spawns is run from here,
        // one task per round, where a call would save and restore the
        // loop's registers each time.
        if let Some(task) = self.pop_fresh_newest() {
            return Some(task);
        }
        self.next_task_elsewhere()
    }

    /// A round in which the injector (every INJECTOR_INTERVAL rounds) or the
    /// newest fresh task (every FRESH_INTERVAL rounds) goes before `runnable`.
    #[cold]
    #[inline(never)]
    fn next_task_fairness_round(&self) -> Option<TaskRef> {
        if self.shared.shutdown.load(Ordering::Acquire) {
            return None; // the loop reads the flag again and stops
        }
        clock::refresh_now_and_then();
        self.end_cache_epoch_if_due();
        self.answer_dumps();
        // Serve I/O while coroutines keep this worker busy (decision 8).
        self.poll_io_now();
        // Bring both rules' countdowns up to this round, restart those that
        // ran out (both do together every 61 x 31 rounds), and count down to
        // whichever comes next; all before anything returns.
        let span = self.fairness_span.get();
        let until_injector = self.until_injector.get() - span;
        let until_fresh = self.until_fresh.get() - span;
        let (injector_first, fresh_first) = (until_injector == 0, until_fresh == 0);
        debug_assert!(injector_first || fresh_first, "worker {}: a fairness round with no rule due", self.index);
        let until_injector = if injector_first { INJECTOR_INTERVAL } else { until_injector };
        let until_fresh = if fresh_first { FRESH_INTERVAL } else { until_fresh };
        self.until_injector.set(until_injector);
        self.until_fresh.set(until_fresh);
        let next = until_injector.min(until_fresh);
        self.until_fairness.set(next);
        self.fairness_span.set(next);
        if injector_first && let Some(task) = self.shared.pop_injector() {
            return Some(task);
        }
        if fresh_first {
            let until_check = self.until_oldest_check.get() - 1;
            self.until_oldest_check.set(until_check);
            if until_check == 0 {
                self.until_oldest_check.set(OLDEST_CHECK_INTERVAL);
                if let Some(task) = self.take_oldest_fresh_if_starved() {
                    return Some(task);
                }
            }
            if let Some(task) = self.pop_fresh_newest() {
                return Some(task);
            }
        }
        if let Some(task) = self.runnable.pop_front() {
            return Some(task);
        }
        self.next_task_elsewhere()
    }

    /// `runnable` is empty: the newest fresh task (none, where `next_task`
    /// just looked), then the injector, then stealing.
    #[inline(never)]
    fn next_task_elsewhere(&self) -> Option<TaskRef> {
        if let Some(task) = self.pop_fresh_newest() {
            return Some(task);
        }
        if let Some(task) = self.shared.pop_injector() {
            return Some(task);
        }
        self.steal()
    }

    /// The oldest unstarted task of this worker, if its fairness clock is
    /// due: `STARVE_AFTER` since it started, or `STARVE_AFTER_GROWING` if the
    /// deque has grown past twice its length then (plus `GROWTH_SLACK`)
    /// meanwhile (decision 10's bound: see "One scheduling round"). Starts
    /// the clock if the deque is non-empty and it is not running; stops it
    /// if the deque is empty.
    #[cold]
    #[inline(never)]
    fn take_oldest_fresh_if_starved(&self) -> Option<TaskRef> {
        let len = self.fresh.len();
        if len == 0 {
            // Nothing waits; whatever comes later waits from later.
            self.oldest_clock.set(None);
            return None;
        }
        let Some(clock) = self.oldest_clock.get() else {
            self.oldest_clock.set(Some(OldestClock::start(len)));
            return None;
        };
        let grown = len > clock.len.saturating_mul(2).saturating_add(GROWTH_SLACK);
        let now = Deadline::now();
        if now < clock.due && !(grown && now >= clock.due_if_growing) {
            return None;
        }
        // The owner steals from its own deque: the oldest end is the
        // thieves' end. (A thief may have just taken it: then the next
        // oldest is as good, and None only if all are gone.)
        let task = self.shared.workers[self.index].steal_oldest_fresh();
        self.oldest_clock.set(Some(OldestClock::start(self.fresh.len())));
        tracing::trace!(worker = self.index, grown, "the oldest fresh task is taken first");
        task
    }

    /// The newest unstarted task spawned on this worker (depth-first).
    #[inline]
    fn pop_fresh_newest(&self) -> Option<TaskRef> {
        // crossbeam-deque's `pop` is not inlined: on an empty deque (the
        // usual case in a fairness round) the call costs more than the
        // inlined emptiness test, two loads (callgrind: 100.2 -> 99.8
        // instructions per yield between two coroutines). Only this thread
        // pushes, so a deque that reads empty is empty: no task is missed.
        if self.fresh.is_empty() {
            return None;
        }
        self.fresh.pop()
    }

    /// Once we have found work to steal for 100 µs in a row (module docs,
    /// "Stealing waits 100 µs"), takes a batch of the oldest unstarted
    /// tasks of the first worker that has any, starting after ourselves:
    /// about half of them, at most 32
    /// (crossbeam-deque's batch limit), the oldest of them into our own
    /// `fresh` deque (oldest at its oldest end, so the order of their spawns
    /// is kept), the newest of them to run now. Called only when our own
    /// `fresh` deque is empty.
    ///
    /// Not half of everything, as the locked queue took: from a LIFO deque
    /// a batch is taken one task at a time (a fence and a CAS each), and a
    /// thief that comes back sooner for less measured no slower on the
    /// spawn+join of 100 000 (`WEFT_RSS_PROBE=spawn`, 9 runs: median 30.7 ms
    /// against 38.5 ms with no limit, on a shared 2-core machine) and the
    /// same on skynet.
    fn steal(&self) -> Option<TaskRef> {
        if !self.may_steal() {
            return None;
        }
        let workers = &self.shared.workers;
        let n = workers.len();
        loop {
            let mut lost_a_race = false;
            for offset in 1..n {
                let victim = (self.index + offset) % n;
                match workers[victim].fresh.steal_batch_and_pop(&self.fresh) {
                    Steal::Success(task) => {
                        let count = self.fresh.len() + 1;
                        tracing::trace!(worker = self.index, victim, count, "steal");
                        metrics::add(&self.counters().steals, count as u64);
                        return Some(task);
                    }
                    Steal::Empty => {}
                    Steal::Retry => lost_a_race = true,
                }
            }
            // A lost race means that a victim had work a moment ago: try
            // again rather than go idle with it there.
            if !lost_a_race {
                return None;
            }
            std::hint::spin_loop();
        }
    }

    /// One look of the wait before a steal (module docs, "Stealing waits
    /// 100 µs"): whether other workers hold unstarted tasks and the wait
    /// for them is over, so that [`steal`](Self::steal) may take some.
    ///
    /// The wait is timed by the thief: from when it first found work to
    /// steal, for as long as it keeps finding some. When it finds none, or
    /// sleeps (`sleep` clears the wait), the next work it finds starts a
    /// new wait. It steals once a whole window (100 µs) passes without the
    /// owners starting any of their queued tasks while the queues only
    /// shrink, or once the wait is STEAL_AFTER_PROGRESS_NANOS old; when the
    /// queues grow, 100 µs after the wait began.
    fn may_steal(&self) -> bool {
        let queued: usize = self.shared.workers.iter().map(|w| w.fresh.len()).sum();
        if queued == 0 {
            self.steal_wait.set(None);
            return false;
        }
        let now = clock::now();
        let wait = match self.steal_wait.get() {
            Some(wait) => {
                let grew = wait.grew || queued > wait.queued;
                let owners_progress = !wait.over && !grew && queued < wait.queued;
                let window = if owners_progress && now.saturating_sub(wait.began) < STEAL_AFTER_PROGRESS_NANOS {
                    now
                } else {
                    wait.window
                };
                StealWait { window, queued, grew, ..wait }
            }
            None => StealWait { began: now, window: now, queued, grew: false, over: false },
        };
        let over = wait.over || now.saturating_sub(wait.window) >= STEAL_AFTER_NANOS;
        self.steal_wait.set(Some(StealWait { over, ..wait }));
        over
    }

    /// Whether other workers hold unstarted tasks that this one may steal
    /// now: [`may_steal`](Self::may_steal) after a SeqCst fence, which
    /// makes it the spinner's half of the Dekker pair with
    /// `Shared::notify_one_sleeper` (see [`any_fresh`](Self::any_fresh)).
    fn may_steal_now(&self) -> bool {
        fence(Ordering::SeqCst);
        self.may_steal()
    }

    /// Whether this worker has work of its own, or from outside the
    /// runtime, to take at once: everything [`has_work`](Self::has_work)
    /// looks at except other workers' unstarted tasks.
    fn has_own_work(&self) -> bool {
        let shared = &self.shared;
        let me = &shared.workers[self.index];
        shared.shutdown.load(Ordering::SeqCst)
            || self.runnable.len() != 0
            || !me.inbox.is_empty()
            || shared.injector_len.load(Ordering::SeqCst) > 0
            || !me.fresh.is_empty()
            || me.dump.has_requests()
    }

    /// Whether any queue this worker takes from has work (the sleeper's
    /// re-check; SeqCst loads after its SeqCst store of SLEEPING).
    fn has_work(&self) -> bool {
        self.has_own_work() || self.any_fresh()
    }

    /// Whether any worker's `fresh` deque holds a task. The deques' indices
    /// are read with Acquire, not SeqCst, so the sleeper's half of the
    /// Dekker pair is this fence: SeqCst, it synchronises with the fence of
    /// `Shared::notify_one_sleeper` that follows every push (module docs,
    /// "Sleeping and waking"): either the publisher's fence comes first in
    /// their total order, and the loads below see the pushed back index,
    /// or ours does, and the publisher's read sees our SLEEPING and the
    /// `sleepers` count (both written before this fence).
    fn any_fresh(&self) -> bool {
        fence(Ordering::SeqCst);
        self.shared.workers.iter().any(|w| !w.fresh.is_empty())
    }

    fn sleep(&self) {
        let shared = &self.shared;
        let me = &shared.workers[self.index];
        if me.dump.has_requests_relaxed() {
            self.answer_dumps();
            return;
        }
        // Ready sockets first: their coroutines are work, found without
        // spinning.
        if self.poll_io_now() != 0 {
            return;
        }
        // With sockets registered, sleep in the poller (their events are
        // work); otherwise on the futex word, which costs fewer system calls.
        let poller = me.poller.get().filter(|p| p.has_registrations());
        // The next timer, before anything is published: finding it drops
        // the stale entries at the top of the heap, and a stale entry may
        // hold the last reference to a finished task, whose result's
        // destructor runs here and may wake a task of this worker straight
        // into `runnable` (a local wake notifies nobody). The checks below
        // see it; found after SLEEPING, it would wait for the next wake.
        let timer = self.next_deadline();
        // Spin first: work often arrives within microseconds, and a spinning
        // worker spares publishers a futex wake (they skip it while anyone
        // spins). Safe because a spinner that gives up re-checks every queue
        // after publishing SLEEPING, below. A worker with sockets does not
        // spin: what it waits for is mostly their events, which the spin
        // cannot see (it just polled them), and the spin's yields were about
        // 5 % of an HTTP server's CPU time (perf, benches/report/net.sh).
        if poller.is_none() {
            // Idle while it spins (the monitor does not count it as held).
            me.watch.spinning.store(true, Ordering::Relaxed);
            let found = self.spin(shared);
            me.watch.spinning.store(false, Ordering::Relaxed);
            if found {
                return;
            }
        }
        me.sleep.store(if poller.is_some() { POLLING } else { SLEEPING }, Ordering::SeqCst);
        shared.sleepers.fetch_add(1, Ordering::SeqCst);
        if !self.has_work() {
            // It found no work to steal either: a wait it had begun ends
            // here ("Stealing waits 100 µs"), or the sleep would count
            // towards it, and the next burst would be stolen at once.
            self.steal_wait.set(None);
            // A worker that waits for a timer or for sockets may wake by
            // itself: the monitor does not call its parked coroutines stuck.
            // (The cache's deadline below wakes no coroutine: it does not
            // count.)
            me.watch.sleeping_with_timer.store(timer.is_some() || poller.is_some(), Ordering::Relaxed);
            let deadline = match self.cache_deadline() {
                Some(cache) => Some(timer.map_or(cache, |timer| timer.min(cache))),
                None => timer,
            };
            metrics::bump(&self.counters().sleeps);
            tracing::trace!(worker = self.index, polling = poller.is_some(), "worker sleeps");
            match poller {
                Some(poller) => {
                    let timeout =
                        deadline.map(|d| Duration::from_nanos(d.as_nanos().saturating_sub(Deadline::now().as_nanos())));
                    self.poll_io(poller, timeout);
                }
                None => {
                    futex::wait(&me.sleep, SLEEPING, deadline);
                }
            }
            clock::refresh();
            tracing::trace!(worker = self.index, "worker wakes");
            metrics::bump(&self.counters().wakeups);
            self.end_cache_epoch_if_due();
        }
        shared.sleepers.fetch_sub(1, Ordering::SeqCst);
        me.sleep.store(RUNNING, Ordering::SeqCst);
        shared.monitor.on_worker_running();
    }

    /// Ends the task-cell cache's epoch if it is due by the coarse clock
    /// (`cell_cache`: the cells unused throughout it go back to the
    /// allocator). Called in fairness rounds and after an idle sleep.
    fn end_cache_epoch_if_due(&self) {
        let now = clock::coarse();
        if now >= self.cache_epoch_end.get() {
            cell_cache::end_epoch();
            self.cache_epoch_end.set(now + CACHE_EPOCH.as_nanos() as u64);
        }
    }

    /// Where an idle worker's cache holds cells beyond what it keeps for
    /// good, the end of its epoch: the worker sleeps until then at the
    /// latest, so that an idle runtime gives a burst's cells back within
    /// about two epochs. `None` otherwise (an untimed sleep).
    fn cache_deadline(&self) -> Option<Deadline> {
        if cell_cache::surplus() == 0 {
            return None;
        }
        let left = self.cache_epoch_end.get().saturating_sub(clock::now());
        Some(Deadline::after(Duration::from_nanos(left)))
    }

    /// The idle spin: checks for work for `SPIN_NANOS`, and at least
    /// `SPIN_ROUNDS` times (every 16th check also reads the clock and yields
    /// the CPU), counted in
    /// `shared.spinning` meanwhile. Returns whether it found work.
    ///
    /// Other workers' unstarted tasks are looked at only in every 16th
    /// check, and count as work only once the wait before a steal is over
    /// ([`may_steal`](Self::may_steal)). Each look reads the lines their
    /// owners write at every spawn and start (the deque's ends), and a spin
    /// that left at each sight of them, for a steal that then declined,
    /// wrote the shared spinning and sleeper counts that every spawn reads,
    /// round after round: a thief waiting out its 100 µs slowed down the
    /// owner it waited on. (A probe of back-to-back bursts of 100
    /// spawn+joins on 2 workers: 353 ns per coroutine, against 67.5 on one
    /// worker.)
    ///
    /// Publishers skip their wake while anyone spins, counting on the
    /// spinner to take the work; but a spinner takes one task, and a second
    /// spawn during the same spin would then wait in the injector (or a
    /// fresh queue) while another worker sleeps. So the last spinner to stop
    /// with work in sight that other workers could take wakes a sleeper, as
    /// Go's spinning M does (`resetspinning` -> `wakep`); the sleeper finds
    /// nothing if the spinner's one task was all there was.
    fn spin(&self, shared: &Shared) -> bool {
        shared.spinning.fetch_add(1, Ordering::SeqCst);
        let began = clock::now();
        for round in 1.. {
            if self.has_own_work() {
                break;
            }
            if round % 16 == 0 {
                if self.may_steal_now() || (round >= SPIN_ROUNDS && clock::now().saturating_sub(began) >= SPIN_NANOS) {
                    break;
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // SeqCst, with the loads below: as a sleeper's re-check after it
        // publishes SLEEPING, against the fence of `notify_one_sleeper`: a
        // push whose publisher saw this spinner is seen here.
        let last = shared.spinning.fetch_sub(1, Ordering::SeqCst) == 1;
        if !self.has_own_work() && !self.may_steal_now() {
            return false;
        }
        if last && (shared.injector_len.load(Ordering::SeqCst) > 0 || self.any_fresh()) {
            shared.notify_one_sleeper();
        }
        true
    }

    /// Runs `task` until it switches back to this worker (or finishes). The
    /// common case, a started task (a yield's or a wake's), is the inline
    /// path: one test that its coroutine is suspended, the lend, the switch,
    /// and the switch's outcome; a task's first run goes out of line.
    ///
    /// The task that comes back need not be `task`: a yield may switch
    /// straight to the next runnable task of this worker
    /// ([`yield_direct`](Self::yield_direct)), and that one (or one it
    /// switched to, and so on) is the one that switches back. So nothing
    /// here holds a reference to `task`'s coroutine across the switch, and
    /// the outcome is taken for the task that is running when it returns
    /// (`CURRENT_TASK`, which every switch updates).
    #[inline]
    fn run_task(&self, task: TaskRef) {
        // Our reference to the task is lent to the coroutine for the length
        // of the resume (see `current_task_for_waker`): its first park may
        // hand it to whoever will wake it, after registering the task (if it
        // was not yet), so that the registry keeps it alive meanwhile. A
        // direct switch lends the reference of the task it continues
        // instead, and takes this one back (see `yield_direct`).
        let raw = task.into_raw();
        // SAFETY: alive (our reference, just lent).
        let coroutine = unsafe { (*raw).coroutine_ptr() };
        // SAFETY: this worker owns the task now: it popped it from a queue
        // (unstarted), or it is the task's home worker (started). Read only.
        if !unsafe { (*coroutine).is_suspended() } {
            // SAFETY: `raw` is our reference, handed over.
            return unsafe { self.run_task_first(raw) };
        }
        // SAFETY: as above.
        debug_assert_eq!(unsafe { (*raw).home() }, self.index, "task resumed off its home worker");
        self.lend(raw);
        self.prefetch_next_resumes();
        // A started task always left by the unpaired switch
        // (`Task::switch_out`) or a direct one (`Task::switch_to`): it comes
        // back the same way.
        // SAFETY: suspended, checked just above; no reference to it is held.
        let word = unsafe { TaskCoroutine::switch_in_raw::<false>(coroutine) };
        self.after_switch::<false>(word);
    }

    /// Starts loading what the next three resumes touch first, while this
    /// one runs, in a pipeline: the saved frame of the task after this one
    /// (reading its sp slot), the switch slots of the one after that
    /// (reading its coroutine's top), and the coroutine's top of the third.
    /// Each stage reads only what the one before brought in, a resume
    /// earlier. With many coroutines (a server's connections) their stacks
    /// and cells are cold by the time they run again: without this, a
    /// resume waited for three loads from memory in a row (the top, the sp
    /// slot, the frame) before it could continue.
    #[inline(always)]
    fn prefetch_next_resumes(&self) {
        let next = self.runnable.peek(0);
        if next.is_null() {
            return;
        }
        // A queued task is alive (the queue holds a reference), and a
        // started one in this worker's run queue is suspended with this
        // worker as its home: nobody else resumes or drops its coroutine (its
        // stack stays mapped) while this worker runs another task.
        // SAFETY: as just said, for each of the three.
        unsafe {
            TaskCoroutine::prefetch_resume((*next).coroutine_ptr(), true);
            let second = self.runnable.peek(1);
            if !second.is_null() {
                TaskCoroutine::prefetch_resume((*second).coroutine_ptr(), false);
                let third = self.runnable.peek(2);
                if !third.is_null() {
                    TaskCoroutine::prefetch_top((*third).coroutine_ptr());
                }
            }
        }
    }

    /// A task's first run: it may have been cancelled before it started;
    /// otherwise this worker becomes its home and gives it a stack.
    ///
    /// # Safety
    ///
    /// `raw` is a reference to an unstarted task this worker popped from a
    /// queue (`TaskRef::into_raw`), handed over to this call.
    #[cold]
    #[inline(never)]
    unsafe fn run_task_first(&self, raw: *const Task) {
        // SAFETY: the caller hands its reference over.
        let task = unsafe { TaskRef::from_raw(raw) };
        debug_assert_eq!(task.home(), NO_HOME, "task {} is started but its coroutine is not suspended", task.id);
        self.unpin(&task);
        if self.shared.shutdown.load(Ordering::Acquire) {
            // Nothing starts once the runtime shuts down (the loop stops at
            // its next fairness round, or when it runs out of work).
            super::fail_unstarted(task);
            return;
        }
        if task.cancel_requested() {
            self.drop_cancelled_unstarted(task);
            return;
        }
        task.set_home(self.index);
        // Wakes from other threads may come now (they were dropped before:
        // see `park`'s module docs).
        task.park.end_delivery();
        metrics::bump(&self.counters().started);
        // SAFETY: unstarted, popped by us: ours alone; the task's name
        // outlives its coroutine (`Task::owner`).
        if let Err(error) = unsafe { task.coroutine_mut().prepare_first_resume(task.owner()) } {
            // No stack: the closure never ran. End its join handle with the
            // error (the message names vm.max_map_count if that is the
            // cause) and drop the closure.
            self.shared.report_stack_failure(&task, &error);
            // SAFETY: as above.
            unsafe { super::drop_unstarted_closure(&task) };
            // SAFETY: its closure is gone: it never runs, and nothing else
            // fails it (we own the unstarted task).
            unsafe { task.fail(Failure::NoStack(error)) };
            metrics::bump(&self.counters().finished);
            return;
        }
        let raw = task.into_raw();
        // SAFETY: alive: our reference, lent below.
        let coroutine = unsafe { (*raw).coroutine_ptr() };
        self.lend(raw);
        // SAFETY: suspended on its new stack (`prepare_first_resume`), no
        // reference to it held. The first resume pairs its `call` with the
        // coroutine's first `ret`.
        let word = unsafe { TaskCoroutine::switch_in_raw::<true>(coroutine) };
        self.after_switch::<true>(word);
    }

    /// Makes `raw` the running task of this thread for a resume, lending it
    /// our reference (`CURRENT_TASK_LENT`), and counts the switch.
    #[inline(always)]
    fn lend(&self, raw: *const Task) {
        // Workers do not nest: between two resumes CURRENT_TASK is null on
        // this thread, so it is set and cleared rather than saved and restored.
        debug_assert!(CURRENT_TASK.with(Cell::get).is_null(), "worker {}: a resume inside a resume", self.index);
        CURRENT_TASK.with(|c| c.set(raw));
        CURRENT_TASK_LENT.with(|lent| lent.set(true));
        // The monitor's switch counter (see `monitor`): one store per resume.
        metrics::bump(&self.counters().switches);
    }

    /// What follows a resume that `word` ended: completes it for the task
    /// that switched back (the running one: the task resumed, or the last
    /// one a direct switch continued), takes the reference lent to it back,
    /// and queues, registers or retires that task as its coroutine says.
    /// `FIRST`: the resume was a first one (its finish is read in line).
    #[inline(always)]
    fn after_switch<const FIRST: bool>(&self, word: usize) {
        let raw = CURRENT_TASK.with(|c| c.replace(ptr::null()));
        let still_lent = CURRENT_TASK_LENT.with(|lent| lent.replace(false));
        // An owned reference: ours back if the coroutine did not take it,
        // else a new one. Called at most once below.
        // `raw` is the reference lent for this resume (by `run_task`, or by
        // the last direct switch): still lent only if the coroutine did not
        // take it (then reclaimed once, here); otherwise the task is
        // registered until `unregister` below, which runs after this call.
        // SAFETY: a lent reference reclaimed once, or a live task, as said.
        let owned = || unsafe { reclaim(raw, still_lent) };
        // SAFETY: alive (as just said); it switched back to us, and this is
        // its home worker: its coroutine is ours alone now.
        let result = unsafe { TaskCoroutine::switched_out::<FIRST>((*raw).coroutine_ptr(), word) };
        // SAFETY: alive; its own fields, on its home worker.
        let switched_for = unsafe { (*raw).switched_for.get() };
        match result {
            CoroutineResult::Yield(()) if switched_for == Switch::Yield => {
                let task = owned();
                self.register_if_needed(&task);
                self.push_runnable(task);
            }
            CoroutineResult::Yield(()) => {
                // Whoever wakes it holds a reference (ours, if it took it;
                // it registered the task then). Else the registry takes ours.
                metrics::bump(&self.counters().parks);
                if still_lent {
                    self.register_if_needed(&owned());
                }
            }
            CoroutineResult::Return(()) => {
                let task = owned();
                self.unregister(&task);
                // (Its coroutine is finished and stays in the cell, inert.)
                // A cancel can unwind a timed park before it disarmed its
                // timer: the entry must not keep the task alive until then.
                self.disarm_timer(&task);
                // (`finished` was counted by the coroutine itself, in `spawn_on`.)
            }
        }
    }

    /// The task a direct switch from `from` continues, at the front of
    /// `runnable` (the caller takes it from there), if this round would be
    /// an ordinary one (see "A yield's round, without the worker"), and
    /// then the round is counted towards the next fairness round (the
    /// caller makes it); null otherwise, and nothing counted.
    #[inline(always)]
    fn direct_next(&self, from: &Task) -> *const Task {
        let until_fairness = self.until_fairness.get();
        if until_fairness <= 1 || self.has_timers.get() {
            return ptr::null();
        }
        // SAFETY: points into `self.shared`, which `self` keeps alive.
        if !unsafe { &*self.inbox }.is_empty_relaxed() {
            return ptr::null();
        }
        let next = self.runnable.peek(0);
        if next.is_null() {
            return ptr::null();
        }
        // SAFETY: queued, so alive (the queue's reference); started tasks
        // in `runnable` are this worker's own, and not running.
        let next = unsafe { &*next };
        // SAFETY: as above; read only.
        if !unsafe { (*next.coroutine_ptr()).is_suspended() } || std::thread::panicking() {
            // An unstarted task (`Builder::same_worker`) starts on the worker's
            // stack; a panicking one's suspend is recorded as such.
            return ptr::null();
        }
        debug_assert!(!ptr::eq(next, from), "task {} queued while it runs", from.id);
        debug_assert_eq!(next.home(), self.index, "task {} queued off its home worker", next.id);
        self.until_fairness.set(until_fairness - 1);
        next
    }

    /// A yield's direct switch: if the next task this worker would run is a
    /// started one at the front of `runnable`, and this round would be an
    /// ordinary one (no inbox to drain, no timers, no fairness round due),
    /// queues the running task `from` behind it and switches straight to
    /// it, as if the worker had run a round in between. Returns whether it
    /// did (then `from` has been continued again since); false leaves the
    /// yield to the worker (`Task::switch_out`).
    ///
    /// Two switches become one: the worker's round is done here, on the
    /// yielding task's stack, and the task continued takes over the worker
    /// that `from` ran under (see `weft_switch_direct` in the `.S`). The
    /// checks are the ones the worker's loop makes every round, so whatever
    /// they guard (woken tasks, timers, the fairness rules, I/O and dumps in
    /// the fairness rounds, shutdown) is seen as soon as the loop would.
    #[inline(always)]
    pub(crate) fn yield_direct(&self, from: &Task) -> bool {
        let next = self.direct_next(from);
        if next.is_null() {
            return false;
        }
        // `next`'s reference (taken from the queue below) is lent now; ours
        // comes back (reclaimed, or a new one if we lent it to a waker for a
        // park that did not happen). A load, and a store only when the flag
        // changes: a yield ping-pong keeps it set, and every store here is
        // one more that a following atomic read-modify-write waits for.
        let still_lent = CURRENT_TASK_LENT.with(|lent| {
            let was = lent.get();
            if !was {
                lent.set(true);
            }
            was
        });
        // Before the reclaim, so that no `TaskRef` is live across this cold
        // call (it would be spilled on every yield, for the unwind). `from`
        // is alive: this resume holds its lent reference, or the registry one.
        if from.registry_slot.get() == NOT_REGISTERED {
            self.register(from);
        }
        // SAFETY: `from` is the running task, lent to this resume by `run_task`
        // or by a direct switch; if still lent, reclaimed only here (the
        // lending resume completes for another task); otherwise registered.
        let from_ref = unsafe { reclaim(from, still_lent) };
        debug_assert_eq!(from.home(), self.index, "task {} yields off its home worker", from.id);
        // `next` leaves the front, `from` joins the back.
        let next = self.runnable.rotate(from_ref).expect("the front just read").into_raw();
        CURRENT_TASK.with(|c| c.set(next));
        metrics::bump(&self.counters().switches);
        // `from` runs on this thread, not panicking, queued again; `next` is
        // a started, suspended task of this worker taken from its queue, and
        // the running task from now on; `after_switch` completes the resume
        // for whichever task comes back.
        // SAFETY: `switch_to`'s promises, as just said.
        unsafe { from.switch_to(&*next) };
        true
    }

    /// A park's direct switch: as [`yield_direct`](Self::yield_direct), but
    /// the running task `from` is not queued again: it has marked itself
    /// PARKED, and whoever wakes it queues it. What the worker would do
    /// after its switch back (count the park; if the coroutine kept the
    /// reference lent to this resume, give it to the registry) is done here.
    #[inline(always)]
    pub(crate) fn park_direct(&self, from: &Task) -> bool {
        let next = self.direct_next(from);
        if next.is_null() {
            return false;
        }
        let next = self.runnable.pop_front().expect("the front just read").into_raw();
        if CURRENT_TASK_LENT.with(|lent| lent.replace(true)) {
            // SAFETY: `from`'s lent reference, reclaimed once, here: the
            // registry takes a reference of its own.
            let lent = unsafe { TaskRef::from_raw(from) };
            self.register_if_needed(&lent);
        }
        metrics::bump(&self.counters().parks);
        CURRENT_TASK.with(|c| c.set(next));
        metrics::bump(&self.counters().switches);
        // A server's connections park this way one after another, each
        // continuing the next woken one: keep the pipeline of `run_task`'s
        // prefetches going for the tasks behind `next`, or a chain of direct
        // switches waits on cold stacks. (The yield's direct switch does not:
        // its ping-pong budget has no room, and yielders are rarely cold.)
        self.prefetch_next_resumes();
        // SAFETY: `from` runs on this thread, not panicking, PARKED (its
        // waker queues it: on this worker, and this thread resumes it only
        // after this switch); `next` as in `yield_direct`.
        unsafe { from.switch_to(&*next) };
        true
    }

    /// A task cancelled before it started never starts: its closure is
    /// dropped here, on the worker that took it from a queue, and its join
    /// handle ends as cancelled.
    #[cold]
    fn drop_cancelled_unstarted(&self, task: TaskRef) {
        tracing::debug!(task = task.id, "cancelled before it started");
        // SAFETY: the task is unstarted and we took it from a queue: we own it.
        unsafe { super::drop_unstarted_closure(&task) };
        metrics::bump(&self.counters().finished);
        metrics::bump(&self.counters().dropped_unstarted);
        // SAFETY: its closure is gone: it never runs, and nothing else
        // fails it (we own the unstarted task).
        unsafe { task.fail(Failure::Cancelled) };
    }

    /// Answers the dump requests in this worker's mailbox (see `dump`), if
    /// any; called between rounds, when no task runs: in the fairness
    /// rounds (every few dozen rounds) and when the worker runs out of work.
    #[inline]
    fn answer_dumps(&self) {
        let me = &self.shared.workers[self.index];
        if me.dump.has_requests_relaxed() {
            self.answer_dumps_now();
        }
    }

    #[cold]
    #[inline(never)]
    fn answer_dumps_now(&self) {
        let me = &self.shared.workers[self.index];
        for request in me.dump.take() {
            request.answer(self.index, || self.dump_part(ptr::null()));
        }
    }

    /// This worker's part of a dump: its started, unfinished tasks and its
    /// unstarted ones. Called on this worker's thread, between rounds
    /// (`running` null) or from its running task (`running`), which is
    /// then listed as running and not walked.
    pub(crate) fn dump_part(&self, running: *const Task) -> Vec<CoroutineDump> {
        let me = &self.shared.workers[self.index];
        // Woken tasks show as runnable, as they are.
        if !me.inbox.is_empty_relaxed() {
            self.drain_inbox(&me.inbox);
        }
        let mut part = PartBuilder::new(self.index, running);
        let mut runnable = std::collections::HashSet::new();
        let mut unstarted = Vec::new();
        self.runnable.for_each(&mut |task| {
            // SAFETY: a queued task is alive (the queue holds a reference).
            if unsafe { (*task).home() } == NO_HOME {
                // Spawned with `Builder::same_worker`, not started yet.
                // SAFETY: as above; we add a reference of our own.
                unstarted.push(unsafe { TaskRef::clone_from_ptr(task) });
            } else {
                runnable.insert(task);
            }
        });
        // Our own references: no borrow is held while the stacks are walked.
        let started: Vec<TaskRef> = self.registry.borrow().iter().flatten().cloned().collect();
        for task in &started {
            // SAFETY: the home worker's thread (its registry's tasks are its
            // own); the only task that may be running is `running` (none
            // between rounds; inside a resume, that resume's task).
            unsafe { part.add_started(task, runnable.contains(&task.as_ptr())) };
        }
        // A running task that never switched out is not registered yet.
        if !running.is_null() && !started.iter().any(|t| ptr::eq(t.as_ptr(), running)) {
            // SAFETY: the running task is alive while it runs (see
            // `current_task`); we add a reference of our own.
            let task = unsafe { TaskRef::clone_from_ptr(running) };
            // SAFETY: as above; `task` is `running`, which is not walked.
            unsafe { part.add_started(&task, false) };
        }
        unstarted.iter().for_each(|task| dump::add_fresh(&mut part, task));
        // The unstarted ones: the owner cannot iterate its deque, so it
        // takes them all out (newest first) and puts them back in the same
        // order. Thieves find it empty meanwhile (a few microseconds), so
        // whoever may have gone idle on that is woken afterwards.
        let mut fresh = Vec::new();
        while let Some(task) = self.fresh.pop() {
            fresh.push(task);
        }
        for task in fresh.iter().rev() {
            dump::add_fresh(&mut part, task);
        }
        if !fresh.is_empty() {
            for task in fresh.into_iter().rev() {
                self.fresh.push(task);
            }
            self.shared.notify_one_sleeper();
        }
        part.finish()
    }

    /// Empties `runnable` at shutdown: a started task's reference is only
    /// dropped (the registry unwinds it); an unstarted one (spawned with
    /// `Builder::same_worker`) fails its join handle as unstarted tasks in
    /// the other queues do.
    fn drop_runnable(&self) {
        for task in self.runnable.take_all() {
            if task.home() == NO_HOME {
                self.unpin(&task);
                super::fail_unstarted(task);
            }
        }
    }

    /// Unwinds every started, unfinished task of this worker (shutdown).
    ///
    /// A task inside a `weft::scope` whose scoped coroutines have not all
    /// ended is unwound after them (they may borrow from its stack): it
    /// waits in `deferred` while the rest of this worker's tasks are
    /// unwound and its queues emptied (which ends the scoped ones here), and
    /// while the other workers end theirs; the injector's unstarted tasks
    /// are failed meanwhile. Scopes nest as a tree, so each round ends some
    /// task, here or on another worker, until none is left. A scoped
    /// coroutine that cannot be unwound (one suspended while unwinding a
    /// panic: its stack is leaked) is counted as *stuck* in its scope; a
    /// task whose scoped coroutines left are all stuck is given up on too
    /// (`leak_one`): its stack stays mapped, and it counts as stuck in its
    /// own scope if it is a scoped coroutine itself.
    fn unwind_all(&self) {
        self.drop_runnable();
        self.clear_timers();
        let mut deferred: Vec<TaskRef> = Vec::new();
        loop {
            let mut ended_any = false;
            loop {
                let next = self.registry.borrow_mut().iter_mut().find_map(Option::take);
                let Some(task) = next else { break };
                task.registry_slot.set(NOT_REGISTERED);
                // SAFETY: this is its home worker, and it is suspended.
                if unsafe { super::task_local::scoped_counts(&task) }.0 > 0 {
                    deferred.push(task);
                } else {
                    self.unwind_one(&task);
                    ended_any = true;
                }
            }
            self.empty_queues();
            // Those whose scoped coroutines have all ended now, and those
            // whose scoped coroutines left will never end.
            let mut ready = Vec::new();
            let mut stuck = Vec::new();
            deferred.retain(|task| {
                // SAFETY: as above: each is suspended, on this worker.
                match unsafe { super::task_local::scoped_counts(task) } {
                    (0, _) => ready.push(task.clone()),
                    (running, stuck_ones) if running == stuck_ones => stuck.push(task.clone()),
                    _ => return true,
                }
                false
            });
            for task in &ready {
                self.unwind_one(task);
            }
            for task in &stuck {
                self.leak_one(task);
            }
            if ended_any || !ready.is_empty() || !stuck.is_empty() {
                // Their unwinds may have queued work or ended scopes: round
                // again.
                continue;
            }
            if deferred.is_empty() {
                break;
            }
            // Only tasks whose scoped coroutines are elsewhere: on the other
            // workers, shutting down too, or in the injector.
            self.shared.fail_injected();
            std::thread::sleep(Duration::from_micros(100));
        }
        debug_assert_eq!(self.shared.workers[self.index].pinned_unstarted(), 0, "worker {}", self.index);
    }

    /// At shutdown, gives up on a task whose scoped coroutines left will
    /// never end (see `unwind_all`): its stack stays mapped (they may
    /// borrow from it), its destructors do not run, its join handle fails.
    #[cold]
    fn leak_one(&self, task: &TaskRef) {
        eprintln!(
            "weft: at shutdown, coroutine {} ({}, spawned at {}) waits in a weft::scope for scoped coroutines that \
             cannot be unwound (they parked while unwinding a panic, so their stacks were leaked); its stack is \
             leaked too, rather than unwound, so that nothing they borrow from it goes away, and its destructors do \
             not run",
            task.id,
            task.name.as_deref().unwrap_or("unnamed"),
            task.spawned_at,
        );
        task.unwinding.set(true);
        // SAFETY: this is the task's home worker; it is suspended.
        unsafe { task.coroutine_mut() }.leak();
        // SAFETY: as above; it never runs again.
        unsafe { super::task_local::mark_stuck(task) };
        // SAFETY: its wrapper never reaches its end now, and `unwind_all`
        // takes each task off the registry once.
        unsafe { task.fail(Failure::Shutdown { started: true }) };
    }

    /// Unwinds one started task at shutdown (taken off the registry).
    fn unwind_one(&self, task: &TaskRef) {
        task.unwinding.set(true);
        let previous = CURRENT_TASK.with(|c| c.replace(task.as_ptr()));
        // Unwinds its stack; the wrapper completes the join handle.
        // SAFETY: this is the task's home worker.
        unsafe { task.coroutine_mut() }.end();
        if !task.is_finished() {
            // It could not be unwound: it was suspended while unwinding a
            // panic (a destructor parked), so its stack was leaked and
            // the wrapper never ran to its end. A scope waiting for it
            // counts it as stuck. Its joiner must not wait forever; nobody
            // else can complete it now.
            // SAFETY: this is its home worker; it never runs again.
            unsafe { super::task_local::mark_stuck(task) };
            // SAFETY: as just said: its wrapper never reaches its end,
            // and `unwind_all` takes each task from the registry once.
            unsafe { task.fail(Failure::Shutdown { started: true }) };
        }
        CURRENT_TASK.with(|c| c.set(previous));
    }

    /// At shutdown, after the unwinds: what is left in the queues, until
    /// they stay empty: failing an unstarted task can put work back. Its
    /// join handle's waiter, a coroutine of this worker unwound before, is
    /// woken into `runnable` (its reference is only dropped: it has
    /// finished), and a destructor of its closure may spawn into `fresh`.
    /// A `same_worker` spawn cannot come from here on: no coroutine runs on
    /// this thread now, and `Builder::spawn` refuses it outside one (those
    /// of the unwinds' destructors, which ran as their coroutines, wait in
    /// `runnable`).
    pub(crate) fn empty_queues(&self) {
        loop {
            self.drop_runnable();
            drop(self.shared.workers[self.index].inbox.take_all());
            // Our unstarted tasks (thieves that still run may take some
            // meanwhile: they fail them in `run_task_first`).
            let mut failed_any = false;
            while let Some(task) = self.fresh.pop() {
                failed_any = true;
                super::fail_unstarted(task);
            }
            if !failed_any && self.runnable.len() == 0 {
                break;
            }
        }
    }
}

/// An owned reference to the task at `raw` after a resume: the worker's
/// own (lent to the coroutine, see `current_task_for_waker`) if
/// `still_lent`, else a new one.
///
/// # Safety
///
/// - `raw` came from `TaskRef::into_raw` in `run_task`, and if `still_lent`
///   this is the only call that reclaims it.
/// - Otherwise the task is alive: the coroutine registered it before it
///   took the lent reference, and it is still in its worker's registry.
#[inline(always)]
unsafe fn reclaim(raw: *const Task, still_lent: bool) -> TaskRef {
    if still_lent {
        // SAFETY: the lent reference, reclaimed once.
        unsafe { TaskRef::from_raw(raw) }
    } else {
        // SAFETY: alive, referenced by the registry (the caller's promise).
        unsafe { TaskRef::clone_from_ptr(raw) }
    }
}

/// The body of worker thread `index`.
///
/// `fresh` is the owner's end of the deque whose stealer is
/// `shared.workers[index].fresh`.
pub(crate) fn run(index: usize, shared: Arc<Shared>, fresh: Deque<TaskRef>) {
    let local = WorkerLocal {
        index,
        counters: &*shared.workers[index].counters,
        inbox: &shared.workers[index].inbox,
        steal_wait: Cell::new(None),
        shared_weak: Arc::downgrade(&shared),
        anchor: super::task::Anchor::new(Arc::downgrade(&shared)),
        shared,
        runnable: RunQueue::new(),
        fresh,
        timers: RefCell::new(BinaryHeap::new()),
        timer_seq: Cell::new(0),
        stale_timers: Cell::new(0),
        registry: RefCell::new(Vec::new()),
        free_slots: RefCell::new(Vec::new()),
        has_timers: Cell::new(false),
        until_fairness: Cell::new(INJECTOR_INTERVAL.min(FRESH_INTERVAL)),
        fairness_span: Cell::new(INJECTOR_INTERVAL.min(FRESH_INTERVAL)),
        until_injector: Cell::new(INJECTOR_INTERVAL),
        until_fresh: Cell::new(FRESH_INTERVAL),
        until_oldest_check: Cell::new(OLDEST_CHECK_INTERVAL),
        oldest_clock: Cell::new(None),
        events: RefCell::new(Vec::new()),
        cache_epoch_end: Cell::new(0),
    };
    CURRENT_WORKER.with(|c| c.set(&local));
    local.cache_epoch_end.set(clock::refresh() + CACHE_EPOCH.as_nanos() as u64);
    cell_cache::raise_limit(cell_cache::WORKER_LIMIT_BYTES);
    tracing::debug!(worker = index, "worker started");
    let me = &local.shared.workers[index];
    monitor::watch_this_thread(me, &local.shared.monitor);
    loop {
        if !me.inbox.is_empty_relaxed() {
            local.drain_inbox(&me.inbox);
            // (See "Shutdown" above: wakes from another worker's shutdown
            // unwind come this way.)
            if local.shared.shutdown.load(Ordering::Acquire) {
                break;
            }
        }
        if local.has_timers.get() {
            local.fire_timers();
        }
        match local.next_task() {
            Some(task) => local.run_task(task),
            // Out of work, or a fairness round saw the shutdown flag (see
            // "Shutdown" above: read there and here, not every round).
            None if local.shared.shutdown.load(Ordering::Acquire) => break,
            None => local.sleep(),
        }
    }
    local.unwind_all();
    if let Some(poller) = me.poller.get() {
        poller.worker_stopped();
    }
    monitor::unwatch_this_thread(me);
    CURRENT_WORKER.with(|c| c.set(ptr::null()));
    tracing::debug!(worker = index, "worker stopped");
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::{Runtime, current_task};
    use super::{COMPACT_MIN, with_current_worker};
    use crate::sync::{Condvar, Mutex};
    use std::sync::Arc;
    use std::time::Duration;

    /// `worker_has_nothing_else` (what the parking layer's
    /// `parking_would_idle_worker` asks): false on an OS thread; true for a
    /// coroutine alone on its worker; false while a started task waits in
    /// its run queue or an unstarted one in its fresh deque; true again
    /// once they have run.
    #[test]
    fn nothing_else_to_run_sees_both_queues() {
        use super::super::worker_has_nothing_else;
        assert!(!worker_has_nothing_else(), "an OS thread has no worker");
        let rt = Runtime::builder().workers(1).build().expect("runtime");
        rt.block_on(|| {
            assert!(worker_has_nothing_else(), "alone on its worker");
            // Unstarted, in this worker's fresh deque (one worker: nobody
            // steals it).
            let fresh = crate::spawn(|| ());
            assert!(!worker_has_nothing_else(), "an unstarted task is queued");
            fresh.join().expect("the fresh task");
            assert!(worker_has_nothing_else(), "the fresh task has run");
            // Started, then made runnable again: a yield queues it in the
            // run queue, behind us.
            let started = crate::spawn(crate::yield_now);
            crate::yield_now(); // it starts, yields, and waits in the run queue
            assert!(!worker_has_nothing_else(), "a started task is runnable");
            started.join().expect("the started task");
            assert!(worker_has_nothing_else(), "the started task has finished");
        });
    }

    /// The timer heap of the calling coroutine's worker: (entries, stale).
    fn timer_counts() -> (usize, usize) {
        with_current_worker(|w| w.expect("called from a coroutine").timer_counts())
    }

    /// Two coroutines on one worker hand a turn back and forth 200 000
    /// times, every wait a `wait_timeout` of about an hour
    /// (`timeout(round)`) that is notified within microseconds. Each wait
    /// arms a timer; without cancellation the heap would hold all 200 000
    /// (and their task references) for an hour. A third coroutine keeps a
    /// timer of a minute armed meanwhile, at the top of the heap, so stale
    /// entries cannot leave from the top. Returns the largest heap seen at
    /// any turn, and (entries, stale) once all three are done. No wait may
    /// report a timeout; in debug builds every compaction checks the stale
    /// count against the heap.
    fn hand_off_through_timed_waits(timeout: fn(u64) -> Duration) -> (usize, (usize, usize)) {
        const TURNS: u64 = 200_000;
        let rt = Runtime::builder().workers(1).build().expect("runtime");
        rt.block_on(move || {
            let anchor = Arc::new((Mutex::new(false), Condvar::new()));
            let anchored = {
                let anchor = Arc::clone(&anchor);
                crate::spawn(move || {
                    let (done, cv) = &*anchor;
                    let mut guard = done.lock();
                    while !*guard {
                        let (next, result) = cv.wait_timeout(guard, Duration::from_secs(60));
                        assert!(!result.timed_out(), "a minute-long wait timed out");
                        guard = next;
                    }
                })
            };
            crate::yield_now(); // the anchor waits
            let shared = Arc::new((Mutex::new(0u64), Condvar::new()));
            let players: Vec<_> = (0..2u64)
                .map(|me| {
                    let shared = Arc::clone(&shared);
                    crate::spawn(move || {
                        let (counter, turn) = &*shared;
                        let mut largest = 0;
                        let mut guard = counter.lock();
                        for round in 0..TURNS / 2 {
                            while *guard % 2 != me {
                                let (next, result) = turn.wait_timeout(guard, timeout(round));
                                assert!(!result.timed_out(), "an hour-long wait timed out");
                                guard = next;
                            }
                            *guard += 1;
                            turn.notify_one();
                            largest = largest.max(timer_counts().0);
                        }
                        largest
                    })
                })
                .collect();
            let largest = players.into_iter().map(|p| p.join().expect("a player panicked")).max();
            *anchor.0.lock() = true;
            anchor.1.notify_one();
            anchored.join().expect("the anchor panicked");
            (largest.expect("two players"), timer_counts())
        })
    }

    /// The same timeout every time: each wait finds its previous entry in
    /// the heap (stale, due earlier) and revives it, so the heap holds one
    /// entry per waiter and never grows.
    #[test]
    fn repeated_timed_waits_woken_early_reuse_their_timer() {
        let (largest, (entries, stale)) = hand_off_through_timed_waits(|_| Duration::from_secs(3600));
        assert!(largest <= 3, "the timer heap grew to {largest} entries for 3 waiters");
        assert_eq!(entries, stale, "a finished waiter left an armed timer");
        assert!(entries <= 3, "{entries} timers were left behind after the waiters finished");
    }

    /// A timeout a millisecond shorter at every turn: no entry can be
    /// revived (it is due later than the new deadline), so each wait pushes
    /// a new one and leaves its previous one stale, below the anchor's:
    /// they pile up, and compactions keep them fewer than `COMPACT_MIN` or
    /// the armed ones.
    #[test]
    fn stale_timers_are_compacted() {
        let (largest, (entries, stale)) =
            hand_off_through_timed_waits(|round| Duration::from_secs(3600) - Duration::from_millis(round));
        assert!(largest <= 2 * COMPACT_MIN, "the timer heap grew to {largest} entries for 3 waiters");
        assert!(largest > COMPACT_MIN / 2, "stale timers never piled up under the anchor ({largest}): untested");
        assert_eq!(entries, stale, "a finished waiter left an armed timer");
        assert!(stale < COMPACT_MIN, "{stale} stale timers were left behind after the waiters finished");
    }

    /// The worker lends its reference to a running task to the task's first
    /// park (`current_task_for_waker`): it travels through the wait node and
    /// the run queue and comes back without touching the count. Two
    /// coroutines on one worker hand a turn back and forth (Condvar waits,
    /// some timed, so timers hold references too, and a Mutex whose
    /// `lock` may park); each reads its own task's strong count at every
    /// turn. A leaked or doubly dropped reference would make it drift (or
    /// crash); once every timer has fired it must be back where it started.
    #[test]
    fn lent_task_references_balance_across_parks() {
        let rt = Runtime::builder().workers(1).build().expect("runtime");
        let counts = rt.block_on(|| {
            let shared = Arc::new((Mutex::new(0u64), Condvar::new()));
            let players: Vec<_> = (0..2u64)
                .map(|me| {
                    let shared = Arc::clone(&shared);
                    crate::spawn(move || {
                        let count = || current_task().expect("in a coroutine").ref_count();
                        // A task enters the registry (one reference) the
                        // first time it switches out: count from there.
                        crate::yield_now();
                        let first = count();
                        let (counter, turn) = &*shared;
                        for round in 0..2_000u64 {
                            let mut guard = counter.lock();
                            while *guard % 2 != me {
                                guard = if round % 8 == 0 {
                                    turn.wait_timeout(guard, Duration::from_millis(1)).0
                                } else {
                                    turn.wait(guard)
                                };
                            }
                            *guard += 1;
                            turn.notify_one();
                        }
                        // Let the timers of the timed waits fire (and drop
                        // their references).
                        crate::sleep(Duration::from_millis(20));
                        (first, count())
                    })
                })
                .collect();
            players.into_iter().map(|p| p.join().expect("a player panicked")).collect::<Vec<_>>()
        });
        for (first, last) in counts {
            assert_eq!(first, last, "a task's reference count drifted across parks");
        }
    }

    /// A yield made after the running task gave its lent reference away
    /// without parking: `sleep(Duration::ZERO)` takes it
    /// (`current_task_for_waker`, which registers the task) and holds it
    /// across a plain `yield_now`, so the yield's direct switch finds the
    /// lent flag clear and must queue a new reference (`reclaim` from the
    /// registry), not the one the sleep holds. Three coroutines of one
    /// worker mix such yields with plain ones (direct switches between
    /// them, one re-queue of each kind per turn); each reads its own
    /// task's strong count and the lent flag after every turn: the count
    /// never drifts, the flag is always set again (the reference of the
    /// switch that continued it), and the turns keep queue order.
    #[test]
    fn yields_after_a_reference_was_taken_for_a_waker_balance() {
        use super::super::CURRENT_TASK_LENT;
        use std::sync::Mutex as StdMutex;
        const TASKS: usize = 3;
        const ROUNDS: usize = 3_000;
        let rt = Runtime::builder().workers(1).build().expect("runtime");
        let log = Arc::new(StdMutex::new(Vec::with_capacity(TASKS * ROUNDS)));
        let counts = rt.block_on(|| {
            let start = Arc::new(crate::sync::Barrier::new(TASKS));
            let tasks: Vec<_> = (0..TASKS)
                .map(|index| {
                    let (log, start) = (Arc::clone(&log), Arc::clone(&start));
                    crate::spawn(move || {
                        let count = || current_task().expect("in a coroutine").ref_count();
                        let lent = || CURRENT_TASK_LENT.with(std::cell::Cell::get);
                        start.wait();
                        // Registered from its first switch out on (the last
                        // to reach the barrier did not park in it).
                        crate::yield_now();
                        let first = count();
                        for round in 0..ROUNDS {
                            log.lock().unwrap().push(index);
                            if round % 2 == 0 {
                                crate::sleep(Duration::ZERO);
                            } else {
                                crate::yield_now();
                            }
                            assert!(lent(), "task {index}, round {round}: continued without a lent reference");
                            assert_eq!(count(), first, "task {index}, round {round}: its reference count drifted");
                        }
                        first
                    })
                })
                .collect();
            tasks.into_iter().map(|t| t.join().expect("a yielder panicked")).collect::<Vec<_>>()
        });
        assert!(counts.iter().all(|&c| c >= 2), "counts {counts:?}");
        let log = log.lock().unwrap();
        assert_eq!(log.len(), TASKS * ROUNDS);
        // The first TASKS entries are the barrier's wake order; from then on
        // the run queue is a ring of the three, whichever way each yielded.
        for i in TASKS..log.len() {
            assert_eq!(log[i], log[i - TASKS], "turn {i}: not the task that waited longest");
        }
    }

    /// A worker keeps the task cells of a burst of spawns for the next
    /// burst (far more than an ordinary thread's 1 MiB), and once it has
    /// been idle for about two cache epochs it has given them back.
    #[test]
    fn an_idle_worker_gives_back_the_cells_of_a_burst() {
        use super::super::cell_cache;
        let runtime = Runtime::builder().workers(1).build().expect("a worker thread");
        let after_burst = runtime.block_on(|| {
            let tasks: Vec<_> = (0..20_000).map(|i| super::super::spawn(move || i)).collect();
            let sum: usize = tasks.into_iter().map(|t| t.join().expect("no panic")).sum();
            assert_eq!(sum, 20_000 * 19_999 / 2);
            cell_cache::surplus()
        });
        assert!(after_burst > 0, "the worker kept none of the burst's cells beyond the base");
        // Idle: the worker sleeps until its epoch ends, gives back what lay
        // unused, and sleeps again: 2 epochs of 1 s. Asked every 200 ms
        // (each question is a coroutine, so it does not keep the cells in
        // use), for up to 10 s on a loaded machine.
        let started = std::time::Instant::now();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let now = runtime.block_on(cell_cache::surplus);
            if now == 0 {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "an idle worker still holds {now} bytes of cells beyond the base after {:?}",
                started.elapsed()
            );
        }
    }
}
