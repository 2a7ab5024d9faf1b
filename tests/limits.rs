//! Resource limits and failing system calls (from a review, 2026-12-06):
//! what weft does when the process runs out of descriptors, threads or
//! address space. Each scenario lowers a limit, so each runs in a child
//! process of its own (this test binary re-executed,
//! `common::in_child_process`), bounded in time.

mod common;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());
const LIMIT: Duration = Duration::from_secs(20);

/// The soft and hard RLIMIT of `resource`.
fn rlimit(resource: libc::__rlimit_resource_t) -> libc::rlimit {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit to write.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0, "getrlimit");
    limit
}

/// Sets the soft limit of `resource`, keeping the hard one.
fn set_soft_limit(resource: libc::__rlimit_resource_t, soft: u64) {
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: rlimit(resource).rlim_max };
    // SAFETY: a valid rlimit; lowering (or raising up to the hard limit) a
    // soft limit needs no privilege.
    let rc = unsafe { libc::setrlimit(resource, &limit) };
    assert_eq!(rc, 0, "setrlimit({resource}, {soft}): {}", io::Error::last_os_error());
}

/// The lowest descriptor number not in use: with RLIMIT_NOFILE set to it,
/// no new descriptor can be opened.
fn lowest_free_fd() -> u64 {
    let file = std::fs::File::open("/dev/null").expect("/dev/null");
    file.as_raw_fd() as u64
}

/// Runs `f` with RLIMIT_NOFILE lowered so that no descriptor can be opened,
/// then puts the limit back.
fn without_descriptors<T>(f: impl FnOnce() -> T) -> T {
    let saved = rlimit(libc::RLIMIT_NOFILE).rlim_cur;
    set_soft_limit(libc::RLIMIT_NOFILE, lowest_free_fd());
    assert_eq!(
        std::fs::File::open("/dev/null").map_err(|e| e.raw_os_error()).err(),
        Some(Some(libc::EMFILE)),
        "the descriptor limit is in force"
    );
    let out = f();
    set_soft_limit(libc::RLIMIT_NOFILE, saved);
    out
}

/// Threads of this process now.
fn thread_count() -> u64 {
    std::fs::read_dir("/proc/self/task").expect("/proc/self/task").count() as u64
}

/// Makes every thread of this process after the next `extra` ones fail to
/// start (`EAGAIN`), for the rest of the process: RLIMIT_NPROC, which the
/// kernel does not apply to root, so the process first becomes `nobody`
/// (irreversible; only for a child process). Returns false (and the
/// scenario is skipped) where that is not possible.
fn allow_only_more_threads(extra: u64) -> bool {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        // A user of this process's own rather than `nobody`: RLIMIT_NPROC
        // counts every thread of the user, and any other process running
        // as nobody at the same time (another copy of this binary, a
        // daemon) would take this process's slots. `nobody` where that id
        // is not mapped (a user namespace).
        let own = 2_000_000_000 + std::process::id();
        // SAFETY: setgid/setuid take plain ids; glibc applies them to every
        // thread of the process.
        let ok = unsafe { libc::setgid(own) == 0 && libc::setuid(own) == 0 }
            // SAFETY: as above.
            || unsafe { libc::setgid(65534) == 0 && libc::setuid(65534) == 0 };
        if !ok {
            eprintln!("note: skipped: cannot become nobody: {}", io::Error::last_os_error());
            return false;
        }
    }
    // The count is per user; ours are all of that user's.
    set_soft_limit(libc::RLIMIT_NPROC, thread_count() + extra);
    let probe = std::thread::Builder::new().spawn(|| {});
    match extra {
        0 if probe.is_ok() => {
            eprintln!("note: skipped: RLIMIT_NPROC is not enforced here");
            probe.unwrap().join().unwrap();
            false
        }
        0 => true,
        _ => {
            // The probe took one of the `extra` slots; give it back.
            if let Ok(p) = probe {
                p.join().unwrap();
                // Its exit is counted down asynchronously; wait for it.
                let start = Instant::now();
                while thread_count() > 2 + extra && start.elapsed() < Duration::from_secs(1) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            true
        }
    }
}

// ---------------------------------------------------------------------------
// The dump-on-signal thread: a failure to start it is cached for ever.
// ---------------------------------------------------------------------------

/// With `WEFT_DUMP_SIGNAL` set (the documented way to turn dumps on), a
/// runtime built while the process is briefly out of descriptors fails (its
/// signal pipe cannot be made): fair. But the failure is kept in a static
/// `OnceLock<io::Result<()>>` (`dump::dump_on_signal`), so every runtime
/// built afterwards fails too, for the life of the process, with the old
/// "Too many open files", although descriptors are free again — the
/// default runtime of `weft::spawn` included.
#[test]
fn a_transient_descriptor_shortage_does_not_break_every_later_runtime() {
    common::in_child_process(
        &SERIAL,
        "a_transient_descriptor_shortage_does_not_break_every_later_runtime",
        &[("WEFT_DUMP_SIGNAL", "SIGUSR2")],
        LIMIT,
        || {
            let first = without_descriptors(|| weft::Runtime::builder().workers(1).build());
            let err = first.expect_err("no descriptor for the signal pipe: the build fails");
            eprintln!("first build (out of descriptors): {err}");
            // Descriptors are free again.
            drop(std::fs::File::open("/dev/null").expect("descriptors are free again"));
            match weft::Runtime::builder().workers(1).build() {
                Ok(rt) => assert_eq!(rt.block_on(|| 2 + 2), 4),
                Err(e) => panic!(
                    "a runtime built after the descriptor shortage ended still fails: {e} (the first failure to \
                     start the dump-on-signal thread is cached for the life of the process)"
                ),
            }
        },
    );
}

// ---------------------------------------------------------------------------
// The spawn_blocking pool: a thread that cannot start.
// ---------------------------------------------------------------------------

/// A `spawn_blocking` job whose thread cannot start (the process is at its
/// thread limit) is queued behind the pool's busy threads, and the failure
/// goes only to `tracing::warn!` — without a subscriber, nowhere. A job
/// that the running one waits for then never runs while it waits (here the
/// running job gives up after 3 s; a `recv()` would hang for ever), and
/// nothing on stderr says why; the monitor's idle hint stays silent too
/// (a job is queued). The runtime reports a stack it cannot map once on
/// stderr; a thread it cannot start deserves the same.
#[test]
fn a_blocking_pool_thread_that_cannot_start_is_reported() {
    let Some(stderr) =
        common::in_child_process(&SERIAL, "a_blocking_pool_thread_that_cannot_start_is_reported", &[], LIMIT, || {
            let rt = weft::Runtime::builder().workers(1).build().unwrap();
            // One more thread: the pool's first; its second cannot start.
            if !allow_only_more_threads(1) {
                return;
            }
            let waited = rt.block_on(|| {
                let (tx, rx) = std::sync::mpsc::channel::<()>();
                let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let started_in_job = started.clone();
                let first = weft::spawn_blocking(move || {
                    started_in_job.store(true, std::sync::atomic::Ordering::SeqCst);
                    let start = Instant::now();
                    let got = rx.recv_timeout(Duration::from_secs(3)).is_ok();
                    (got, start.elapsed())
                });
                while !started.load(std::sync::atomic::Ordering::SeqCst) {
                    weft::sleep(Duration::from_millis(1));
                }
                // The first job runs and waits for the second.
                let second = weft::spawn_blocking(move || tx.send(()).is_ok());
                let (got, waited) = first.join().unwrap();
                let sent = second.join().unwrap();
                eprintln!("first job got the second's message: {got} (sent: {sent}), after {waited:?}");
                waited
            });
            eprintln!("blocking job waited {waited:?}");
        })
    else {
        return;
    };
    if stderr.contains("note: skipped") {
        return;
    }
    assert!(
        stderr.contains("os error 11") || stderr.contains("Resource temporarily unavailable"),
        "a spawn_blocking thread could not start (EAGAIN) and nothing on stderr says so; the job waited \
         behind a busy one\nchild stderr:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Worker threads that cannot start: checked, correct.
// ---------------------------------------------------------------------------

/// A runtime whose third worker cannot start: `build` returns the OS error
/// at once (no hang), the workers that did start are joined (no thread
/// left behind), and a runtime fits again once threads are free.
#[test]
fn a_worker_that_cannot_start_fails_the_build_cleanly() {
    let Some(stderr) =
        common::in_child_process(&SERIAL, "a_worker_that_cannot_start_fails_the_build_cleanly", &[], LIMIT, || {
            let before = thread_count();
            if !allow_only_more_threads(2) {
                return;
            }
            let start = Instant::now();
            let err = weft::Runtime::builder().workers(4).build().expect_err("the third worker cannot start");
            eprintln!("build error: {err}");
            assert!(start.elapsed() < Duration::from_secs(5), "build took {:?}", start.elapsed());
            let settle = Instant::now();
            while thread_count() > before && settle.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(thread_count(), before, "threads of the failed runtime are left behind");
            let rt = weft::Runtime::builder().workers(1).stall_threshold(None).build().expect("one worker fits");
            assert_eq!(rt.block_on(|| 6 * 7), 42);
        })
    else {
        return;
    };
    let _ = stderr;
}

// ---------------------------------------------------------------------------
// Accept and the poller at the descriptor limit: checked, correct.
// ---------------------------------------------------------------------------

/// CPU time used by the whole process over `f`, and `f`'s result.
fn cpu_over<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let before = common::process_cpu_time();
    let out = f();
    (common::process_cpu_time() - before, out)
}

/// A coroutine parked in `accept` when a connection arrives while the
/// process is out of descriptors gets `EMFILE` at once (no busy loop on an
/// edge that never clears, no hang), the connection stays queued, and the
/// next `accept` after descriptors are freed returns it.
#[test]
fn accept_at_the_descriptor_limit_fails_at_once_and_keeps_the_connection() {
    common::in_child_process(
        &SERIAL,
        "accept_at_the_descriptor_limit_fails_at_once_and_keeps_the_connection",
        &[],
        LIMIT,
        || {
            let rt = weft::Runtime::builder().workers(1).build().unwrap();
            let listener = weft::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let (parked_tx, parked_rx) = std::sync::mpsc::channel::<()>();
            let (limited_tx, limited_rx) = weft::sync::channel::bounded::<()>(1);
            let server = rt.spawn(move || {
                // Registers with the worker's poller (its epoll needs
                // descriptors) before the limit goes down.
                listener.set_nonblocking(true).unwrap();
                assert_eq!(listener.accept().err().map(|e| e.kind()), Some(io::ErrorKind::WouldBlock));
                listener.set_nonblocking(false).unwrap();
                parked_tx.send(()).unwrap();
                limited_rx.recv().unwrap();
                // Parks; the connection's edge wakes it, accept fails.
                let start = Instant::now();
                let (cpu, first) = cpu_over(|| listener.accept());
                let first = first.map(|_| ()).map_err(|e| e.raw_os_error());
                (first, start.elapsed(), cpu, listener)
            });
            parked_rx.recv().unwrap();
            // The client's socket first, then no descriptor is left.
            let client = std::net::TcpStream::connect(addr);
            let saved = rlimit(libc::RLIMIT_NOFILE).rlim_cur;
            let client = client.unwrap();
            set_soft_limit(libc::RLIMIT_NOFILE, lowest_free_fd());
            limited_tx.send(()).unwrap();
            let (first, took, cpu, listener) = server.join().unwrap();
            set_soft_limit(libc::RLIMIT_NOFILE, saved);
            assert_eq!(first, Err(Some(libc::EMFILE)), "accept at the limit");
            assert!(took < Duration::from_secs(2), "accept at the limit took {took:?}");
            assert!(cpu < Duration::from_secs(1), "accept at the limit used {cpu:?} of CPU");
            // Descriptors free again: the same connection is accepted.
            let accepted = rt.block_on(move || {
                listener.set_accept_timeout(Some(Duration::from_secs(5))).unwrap();
                listener.accept().map(|(s, _)| s.peer_addr().unwrap())
            });
            assert_eq!(accepted.unwrap(), client.local_addr().unwrap(), "the queued connection was lost");
        },
    );
}

/// A coroutine's first socket wait on a worker that has no poller yet, at
/// the descriptor limit: a clear error that names the worker's epoll (not a
/// panic, not a hang), and the next wait, with descriptors free, creates
/// the poller and works.
#[test]
fn a_poller_that_cannot_be_created_is_an_error_and_is_retried() {
    common::in_child_process(&SERIAL, "a_poller_that_cannot_be_created_is_an_error_and_is_retried", &[], LIMIT, || {
        let rt = weft::Runtime::builder().workers(1).build().unwrap();
        let listener = weft::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = std::sync::Arc::new(listener);
        let l = listener.clone();
        let err = without_descriptors(|| {
            rt.block_on(move || {
                l.set_accept_timeout(Some(Duration::from_secs(5))).unwrap();
                l.accept().map(drop)
            })
        })
        .expect_err("no descriptor for the worker's epoll");
        eprintln!("{err}");
        assert!(err.to_string().contains("epoll"), "the error does not say what failed: {err}");
        let client = std::thread::spawn(move || std::net::TcpStream::connect(addr).unwrap());
        let l = listener.clone();
        rt.block_on(move || {
            l.set_accept_timeout(Some(Duration::from_secs(5))).unwrap();
            l.accept().map(drop)
        })
        .expect("the poller is created once descriptors are free");
        client.join().unwrap();
    });
}

// ---------------------------------------------------------------------------
// Stacks that cannot be mapped (RLIMIT_AS): checked, correct.
// ---------------------------------------------------------------------------

/// Address space capped just above what the process uses: a coroutine with
/// a 64 MiB stack cannot get one. `Builder::spawn` and `Runtime::spawn`
/// hand back a join that says so (`NoStack`, "address space"), the runtime
/// reports the first failure once on stderr naming the coroutine, and a
/// plain `Coroutine` says so from `try_resume`.
#[test]
fn stacks_beyond_the_address_space_limit_are_join_errors() {
    let Some(stderr) =
        common::in_child_process(&SERIAL, "stacks_beyond_the_address_space_limit_are_join_errors", &[], LIMIT, || {
            let rt = weft::Runtime::builder().workers(1).build().unwrap();
            assert_eq!(rt.block_on(|| 1), 1);
            // A thread maps its signal stack when it first runs (std's thread
            // start), and the monitor's may not have run yet on a busy
            // machine: with the address space limited, that mmap fails and
            // the process aborts. Wait until it has named itself (after).
            let monitor = format!("weft-mon-r{}", rt.id());
            let waiting = Instant::now();
            while !std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(Result::ok)
                .any(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == monitor))
            {
                assert!(waiting.elapsed() < Duration::from_secs(10), "the monitor thread did not start");
                std::thread::sleep(Duration::from_millis(1));
            }
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let vm_size_kib: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmSize:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .expect("VmSize");
            let saved = rlimit(libc::RLIMIT_AS).rlim_cur;
            set_soft_limit(libc::RLIMIT_AS, (vm_size_kib + 32 * 1024) * 1024);
            let big = 64 << 20;
            let handles: Vec<_> = (0..3)
                .map(|i| {
                    let _ = &rt;
                    let _enter = rt.enter();
                    weft::Builder::new().name(format!("big-{i}")).stack_size(big).spawn(|| 5).unwrap()
                })
                .collect();
            for h in handles {
                let err = h.join().expect_err("no stack");
                assert_eq!(err.kind(), weft::JoinErrorKind::NoStack, "{err}");
                assert!(err.to_string().contains("address space"), "{err}");
            }
            let mut c = weft::coroutine::Coroutine::<(), (), ()>::builder().stack_size(big).build(|_, ()| {}).unwrap();
            let err = c.try_resume(()).expect_err("no stack");
            assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
            set_soft_limit(libc::RLIMIT_AS, saved);
            let again = weft::Builder::new().stack_size(big).spawn_on(&rt, || 5).unwrap();
            assert_eq!(again.join().unwrap(), 5);
        })
    else {
        return;
    };
    assert_eq!(stderr.matches("could not start").count(), 1, "one report for three failures\n{stderr}");
    assert!(stderr.contains("big-"), "the report names the coroutine\n{stderr}");
}

/// A runtime whose worker or monitor thread cannot start fails its build
/// with std's bare "Resource temporarily unavailable (os error 11)": it
/// does not say that a thread could not start, which one, or which limit
/// to look at — where a stack that cannot be mapped gets a message naming
/// the coroutine, the count and the sysctl. A caller (or the default
/// runtime's `expect`) has only the errno to go on.
#[test]
fn a_thread_that_cannot_start_is_named_in_the_build_error() {
    let Some(stderr) =
        common::in_child_process(&SERIAL, "a_thread_that_cannot_start_is_named_in_the_build_error", &[], LIMIT, || {
            // Room for one worker; the second, or the monitor, cannot start.
            if !allow_only_more_threads(1) {
                return;
            }
            let workers = weft::Runtime::builder().workers(2).stall_threshold(None).build().unwrap_err();
            eprintln!("[workers] {workers}");
            let monitor = weft::Runtime::builder().workers(1).build().unwrap_err();
            eprintln!("[monitor] {monitor}");
        })
    else {
        return;
    };
    if stderr.contains("note: skipped") {
        return;
    }
    let line = |tag: &str| stderr.lines().find_map(|l| l.strip_prefix(tag)).unwrap_or_default().to_owned();
    let (workers, monitor) = (line("[workers]"), line("[monitor]"));
    assert!(
        workers.contains("worker") && monitor.contains("monitor"),
        "the build errors do not say which thread could not start:\n{workers}\n{monitor}"
    );
}

/// A socket that its worker's epoll refuses (here a regular file passed off
/// as a `TcpListener` through safe `OwnedFd` conversions, which epoll refuses
/// with EPERM; `ENOSPC` under `fs.epoll.max_user_watches` and `ENOMEM`
/// take the same path): the operation fails with an error that says so —
/// no panic, no hang — and the worker goes on serving other coroutines.
#[test]
fn a_registration_that_epoll_refuses_is_an_error() {
    let rt = weft::Runtime::builder().workers(1).build().unwrap();
    let result = rt.block_on(|| {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        // (A stream's `from_std` reads its socket timeouts and refuses a
        // non-socket: ENOTSOCK. A listener's does not.)
        let fake = std::net::TcpListener::from(std::os::fd::OwnedFd::from(file));
        let listener = weft::net::TcpListener::from_std(fake).unwrap();
        listener.set_accept_timeout(Some(Duration::from_secs(5))).unwrap();
        listener.accept().map(drop)
    });
    let err = result.expect_err("epoll refuses a regular file");
    assert!(err.to_string().contains("epoll"), "{err}");
    assert_eq!(rt.block_on(|| weft::spawn(|| 3).join().unwrap()), 3);
}
