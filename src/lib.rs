//! Stackful coroutines ("green threads") for Linux x86-64, scheduled M:N
//! over a few OS worker threads, with locks that work from coroutines and
//! from OS threads alike.
//!
//! You write plain blocking-style code — lock, wait, sleep, join, read a
//! socket — and each of those waits parks only the coroutine: its worker
//! thread switches to another one at about the cost of a function call,
//! where an OS thread pays a trip through the kernel. Names follow
//! [`std::thread`], [`std::sync`] and [`std::net`], so code moves over by
//! changing an import.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use weft::sync::Mutex;
//!
//! let runtime = weft::Runtime::builder().workers(2).build().expect("two worker threads");
//! let total = Arc::new(Mutex::new(0u64));
//! runtime.block_on(|| {
//!     let children: Vec<_> = (1..=100)
//!         .map(|i| {
//!             let total = Arc::clone(&total);
//!             weft::spawn(move || {
//!                 weft::sleep(Duration::from_millis(1)); // parks this coroutine only
//!                 *total.lock() += i; // lock() returns the guard: no poisoning
//!             })
//!         })
//!         .collect();
//!     for child in children {
//!         child.join().expect("the coroutine did not panic");
//!     }
//! });
//! assert_eq!(*total.lock(), 5050);
//! ```
//!
//! # The layers
//!
//! - **[`coroutine`]**: one stackful coroutine, [`Coroutine`](coroutine::Coroutine):
//!   a closure on its own guarded stack that can suspend from any depth of
//!   calls and be resumed later, on the thread that created it. The context
//!   switch is weft's own, in assembly. Usable on its own, as a generator.
//! - **The runtime**: [`Runtime`] runs coroutines on its worker threads;
//!   [`spawn`], [`JoinHandle::join`], [`yield_now`], [`sleep`], [`sleep_until`],
//!   [`spawn_blocking`], [`current`], [`park`] and
//!   [`GreenThread::unpark`] mirror their `std::thread` namesakes; [`scope`]
//!   spawns coroutines that borrow from the caller's stack, as
//!   `std::thread::scope` does threads; [`JoinHandle::cancel`] unwinds a coroutine at its next park
//!   or yield, and [`task_local!`] gives each coroutine a value of its own.
//!   A bare [`spawn`] uses the calling coroutine's runtime, or on a plain
//!   thread the one entered there with [`Runtime::enter`]; outside both it
//!   starts a default runtime (one worker per CPU) on first use. Each
//!   worker has its own run queue, timers and I/O poller; an idle worker
//!   sleeps (on a futex, or in its poller while it has sockets to watch)
//!   and costs no CPU.
//! - **[`sync`]**: [`Mutex`](sync::Mutex), [`RwLock`](sync::RwLock),
//!   [`Condvar`](sync::Condvar), [`Semaphore`](sync::Semaphore),
//!   [`Barrier`](sync::Barrier) and [`WaitGroup`](sync::WaitGroup), each a
//!   state word with a one-atomic fast path, where only a caller that must
//!   wait takes the slow path; a [`SpinLock`](sync::SpinLock) that spins
//!   instead of parking; [`OnceLock`](sync::OnceLock) and
//!   [`LazyLock`](sync::LazyLock), whose initialiser may park while others
//!   wait for it; and [`channel`](sync::channel)s (bounded, rendezvous
//!   and unbounded, many senders and receivers, with
//!   [`Select`](sync::channel::Select) and timer receivers such as
//!   [`after`](sync::channel::after) and [`tick`](sync::channel::tick))
//!   whose send hands a value straight to a waiting receiver.
//! - **[`net`]**: [`TcpListener`](net::TcpListener),
//!   [`TcpStream`](net::TcpStream), [`UdpSocket`](net::UdpSocket),
//!   [`UnixListener`](net::UnixListener), [`UnixStream`](net::UnixStream)
//!   and [`UnixDatagram`](net::UnixDatagram)
//!   with `std::net`'s shapes. A coroutine whose read, write, accept or
//!   connect would block parks on its worker's epoll instance and the
//!   worker runs others until the socket is ready, so a server is one
//!   straight-line coroutine per connection; on a plain OS thread the same
//!   types block like std's. Libraries written against `Read + Write`
//!   (WebSocket, TLS, HTTP) run over them unchanged.
//! - **Parking**, underneath `sync` and `join`: every wait goes through one
//!   layer, "wait on this address / wake the waiters of this address". A
//!   waiter that is a coroutine suspends and its worker runs others; a
//!   waiter that is a plain OS thread blocks in the kernel. So every
//!   primitive works from both, and a coroutine and an OS thread can wait
//!   on the same lock.
//!
//! # A started coroutine never moves to another thread
//!
//! A coroutine that has started always resumes on the worker thread that
//! first ran it. The reason is `thread_local!`: the compiler (LLVM) may
//! compute the address of a thread-local once and keep it across a call, and
//! a suspension looks like an ordinary call to it. A coroutine that
//! suspended on one thread and resumed on another could go on using the
//! first thread's thread-local — a data race in safe code, which has broken
//! other Rust runtimes that move coroutines. Because weft's never move,
//! `thread_local!`, `println!`, [`std::thread::current`] and std's own
//! internals are sound inside coroutines. A `thread_local!` is still one
//! value per worker thread, shared by every coroutine that runs there: for
//! one value per coroutine, use [`task_local!`]. Load balancing still
//! happens: an idle worker steals coroutines that have not started yet.
//! Coroutines that mostly wait on each other (the users of one busy lock, a
//! producer and its consumer) run faster together on one worker than spread
//! over two, where every lock operation crosses between CPUs; since they
//! cannot be moved together later, [`Builder::same_worker`] keeps them on
//! their spawner's worker from the start.
//!
//! The price is that scheduling is cooperative and per worker. A coroutine
//! keeps its worker until it yields, parks or returns; nothing preempts it,
//! and the other coroutines that live on that worker wait meanwhile,
//! however idle the other workers are. So inside a coroutine use
//! [`sleep`] rather than [`std::thread::sleep`], [`sync`]'s locks rather
//! than `std::sync`'s (a `std::sync` lock blocks the whole worker), move
//! blocking system calls, file I/O and long computations to
//! [`spawn_blocking`], use [`net`]'s sockets rather than `std::net`'s, and
//! call [`yield_now`] now and then in long loops. Each runtime's monitor
//! thread reports on stderr a coroutine that holds its worker for more than
//! 100 ms ([`RuntimeBuilder::stall_threshold`]), naming it and where it was
//! spawned; [`Runtime::dump`] lists every coroutine with its state and the
//! backtrace of each suspended one. A panic in a coroutine is reported
//! naming the coroutine instead of its worker thread. These reports go
//! straight to the process's stderr, not into `cargo test`'s output
//! capture: a test that hangs still shows the monitor's report of what
//! every coroutine waits on, and a passing test whose coroutine panics on
//! purpose shows that panic's report.
//!
//! # How the names relate to std
//!
//! - `weft::spawn`, `JoinHandle`, `Builder`, `yield_now`, `sleep`,
//!   `current`, `park`, `park_timeout`, `GreenThread::unpark` and `scope`
//!   (with `Scope` and `ScopedJoinHandle`) have `std::thread`'s shapes. [`JoinHandle::join`] works from
//!   a coroutine (it parks) and from an OS thread (it blocks); its error is
//!   a [`JoinError`] (tokio's shape rather than std's bare panic payload):
//!   the coroutine panicked ([`into_panic`](JoinError::into_panic) gives the
//!   payload back), was cancelled, or never started because no stack could
//!   be mapped.
//! - The locks have `std::sync`'s names and methods with parking_lot's
//!   shapes: they do not poison (a panic while a guard is held releases the
//!   lock during unwinding), so [`Mutex::lock`](sync::Mutex::lock),
//!   `RwLock::read` and `write`, `get_mut`, `into_inner` and
//!   [`Condvar::wait`](sync::Condvar::wait) return their value itself, not
//!   a `LockResult` (`*m.lock() += 1`, no `.unwrap()`), and the `try_`
//!   forms return an `Option`. Guards are `!Send`.
//! - [`Semaphore`](sync::Semaphore), [`WaitGroup`](sync::WaitGroup) and
//!   [`SpinLock`](sync::SpinLock) have no std counterpart; the channels have
//!   crossbeam-channel's names and errors (`std::sync::mpsc`'s are a subset,
//!   for one receiver).
//!
//! # Costs and limits
//!
//! - **Stacks.** Each coroutine that has started and not finished holds one
//!   stack: [`DEFAULT_STACK_SIZE`](coroutine::DEFAULT_STACK_SIZE) (256 KiB)
//!   of address space unless [`Builder::stack_size`] or
//!   [`RuntimeBuilder::stack_size`] says otherwise, at least
//!   [`MIN_STACK_SIZE`](coroutine::MIN_STACK_SIZE) (32 KiB). The kernel
//!   commits pages only when touched, so a parked coroutine that used a few
//!   KiB costs a few KiB of memory. A spawned coroutine takes its stack when
//!   it first runs, and a finished one hands it back to a per-thread cache
//!   for reuse.
//! - **Task memory.** Each spawned coroutine also takes a few hundred bytes
//!   (its bookkeeping, its closure and its result) until it has finished
//!   and its [`JoinHandle`] is gone, carved from blocks of 256 KiB that weft
//!   maps itself rather than taken from the global allocator. A worker
//!   thread keeps the memory of the coroutines whose last handle went on it
//!   (up to 64 MiB) for its next spawns, so a burst of spawns after a burst
//!   takes no new memory; what it has not reused for about a second (longer
//!   on a worker whose coroutines run for milliseconds between switches)
//!   goes back to its block, whose pages go back to the kernel once nothing
//!   on them is in use, and a runtime that goes idle gives back all but
//!   about 1 MiB per thread within about two seconds.
//! - **Guard pages.** Below each stack lies an inaccessible guard page. A
//!   coroutine that overflows its stack hits it, and weft prints which
//!   coroutine overflowed (id, name, spawn site, stack size) and aborts the
//!   process; there is no silent corruption, and no recovery.
//! - **Memory maps.** Each stack costs two memory maps (the stack and its
//!   guard page), and Linux allows 65 530 maps per process by default
//!   (`vm.max_map_count`). weft leaves 1 024 of them to the rest of the
//!   process, so about 32 000 coroutines can be started and alive at once.
//!   Past that, [`Builder::spawn`] returns an [`std::io::Error`] of kind
//!   `OutOfMemory` that names the limit and how to raise it (`sudo sysctl
//!   -w vm.max_map_count=262144`); [`spawn`] and [`Runtime::spawn`] do not
//!   check, and a coroutine of theirs that cannot get a stack when it starts
//!   ends its [`JoinHandle`] with a [`JoinError`] of kind
//!   [`NoStack`](JoinErrorKind::NoStack) (the first such failure of a
//!   runtime is also reported on stderr). It never crashes.
//! - **Switches.** A coroutine switch saves and restores only what the
//!   calling convention requires of integer registers, a few nanoseconds.
//!   The floating-point control state (rounding mode, exception masks) is
//!   kept per coroutine only with the cargo feature `fp-control`, off by
//!   default: Rust code cannot change that state soundly, and reading it
//!   costs about 10 ns per round trip on some CPUs. Programs whose C code
//!   changes rounding modes across a switch turn the feature on.
//! - **Panics** inside a coroutine are caught where it starts and reach
//!   whoever joins or resumes it; they never unwind across a switch.
//!   Cancelling a coroutine, shutting its runtime down or dropping a
//!   suspended [`Coroutine`](coroutine::Coroutine) unwinds its stack with a
//!   payload of weft's own; code that catches panics inside a coroutine
//!   must resume that one ([`is_forced_unwind`] tells it apart).
//!   [`std::thread::panicking`] counts per OS thread: while one coroutine
//!   is suspended in the middle of unwinding (a destructor that waits),
//!   others on its worker see `true`.
//! - **Dropping a [`Runtime`]** unwinds the stacks of its unfinished
//!   coroutines, so their destructors run, and never twice. A coroutine
//!   suspended in the middle of unwinding a panic (a destructor that waited)
//!   cannot be unwound again: its stack is leaked and its remaining
//!   destructors never run (see [`Runtime`]).
//! - **Platform**: Linux on x86-64 only.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod arch;
pub mod coroutine;
mod loom;
pub mod net;
mod park;
mod runtime;
mod stack;
pub mod sync;
mod sys;
#[cfg(all(test, not(loom)))]
mod test_rng;

pub use coroutine::is_forced_unwind;
pub use runtime::{
    AccessError, Builder, BusyWorker, CoroutineDump, CoroutineState, Dump, EnterGuard, GreenThread, JoinError,
    JoinErrorKind, JoinHandle, LocalKey, ParkedOn, Runtime, RuntimeBuilder, RuntimeMetrics, Scope, ScopedJoinHandle,
    WorkerMetrics, current, is_cancelled, park, park_timeout, scope, sleep, sleep_until, spawn, spawn_blocking,
    try_current, yield_now,
};

/// The README's code blocks, compiled and run as doctests (the crate docs
/// above are the reference; the README is the front page of the repository).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
