//! Edges of stacks, overflow reporting and the coroutine (generator) API.
//!
//! Tests whose scenario kills the process (an overflow aborts) re-execute
//! this test binary, filtered to the same test, with `WEFT_STACK_EDGES_CHILD`
//! naming the scenario, as tests/overflow.rs does.

mod common;

use common::recurse;
use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, Output};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use weft::coroutine::{Coroutine, CoroutineResult, MIN_STACK_SIZE, Yielder};

const CHILD_ENV: &str = "WEFT_STACK_EDGES_CHILD";
const SIGSEGV: i32 = 11;
const SIGABRT: i32 = 6;

struct Child {
    output: Output,
    stdout: String,
    stderr: String,
}

impl Child {
    fn signal(&self) -> Option<i32> {
        self.output.status.signal()
    }
    fn reported(&self, key: &str) -> String {
        let prefix = format!("weft-child {key}=");
        self.stdout
            .lines()
            .find_map(|line| line.find(&prefix).map(|at| &line[at + prefix.len()..]))
            .unwrap_or_else(|| panic!("the child did not report {key}\n{}", self.describe()))
            .to_string()
    }
    fn describe(&self) -> String {
        format!("status: {:?}\nstdout:\n{}\nstderr:\n{}", self.output.status, self.stdout, self.stderr)
    }
}

/// Parent: runs test `name` alone in a child and returns what happened.
/// Child: runs `body`; if it returns, exits 0 after printing "done".
fn run_in_child(name: &str, body: impl FnOnce()) -> Option<Child> {
    match std::env::var(CHILD_ENV) {
        Ok(scenario) if scenario == name => {
            body();
            report("done", "yes");
            std::process::exit(0);
        }
        Ok(_) => return None,
        Err(_) => {}
    }
    let exe = std::env::current_exe().unwrap();
    let output = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    Some(Child { output, stdout, stderr })
}

fn report(key: &str, value: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nweft-child {key}={value}").unwrap();
    out.flush().unwrap();
}

fn expected_report(id: &str, name: &str, kib: usize, line: &str) -> String {
    format!("coroutine {id} ('{name}') overflowed its {kib} KiB stack (spawned at tests/stack_edges.rs:{line})")
}

fn assert_reported_overflow(child: &Child, expected: &str) {
    assert_eq!(child.signal(), Some(SIGABRT), "the child should abort\n{}", child.describe());
    assert_eq!(child.stderr.matches(expected).count(), 1, "expected `{expected}` once\n{}", child.describe());
    assert!(!child.stderr.contains("has overflowed its stack"), "std's report fired too\n{}", child.describe());
}

/// Counts its drops.
struct Counted(Rc<Cell<u32>>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// Counts its drops (Send).
struct ACounted(Arc<AtomicUsize>);
impl Drop for ACounted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------- overflow

#[test]
fn overflow_in_generator_on_a_plain_spawned_thread_is_reported() {
    let Some(child) = run_in_child("overflow_in_generator_on_a_plain_spawned_thread_is_reported", || {
        std::thread::spawn(|| {
            let builder = Coroutine::<(), (), u64>::builder().name("on-thread".into()).stack_size(64 * 1024);
            let (mut c, line) = (builder.build(|_, ()| recurse(0)).unwrap(), line!());
            report("id", c.id());
            report("line", line);
            c.resume(());
        })
        .join()
        .unwrap();
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "on-thread", 64, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
}

#[test]
fn overflow_in_a_runtime_coroutine_names_the_task() {
    let Some(child) = run_in_child("overflow_in_a_runtime_coroutine_names_the_task", || {
        let rt = weft::Runtime::builder().workers(1).build().unwrap();
        let (task, line) = (
            weft::Builder::new().name("rt-task".into()).stack_size(48 * 1024).spawn_on(&rt, || {
                report("id", weft::current().id());
                recurse(0)
            }),
            line!(),
        );
        report("line", line - 1);
        let _ = task.unwrap().join();
    }) else {
        return;
    };
    let id = child.reported("id");
    let line = child.reported("line");
    // The spawn site is the `spawn_on` call (the line after `let (task, line) = (`).
    let prefix = format!("coroutine {id} ('rt-task') overflowed its 48 KiB stack (spawned at tests/stack_edges.rs:");
    assert_eq!(child.signal(), Some(SIGABRT), "{}", child.describe());
    assert_eq!(child.stderr.matches(&prefix).count(), 1, "expected `{prefix}` (line {line})\n{}", child.describe());
}

/// Odd sizes are rounded up to a page multiple: the report names the rounded size.
#[test]
fn overflow_with_an_odd_stack_size_reports_the_rounded_size() {
    let Some(child) = run_in_child("overflow_with_an_odd_stack_size_reports_the_rounded_size", || {
        let builder = Coroutine::<(), (), u64>::builder().name("odd".into()).stack_size(40 * 1024 + 1);
        let (mut c, line) = (builder.build(|_, ()| recurse(0)).unwrap(), line!());
        assert_eq!(c.stack_size(), 44 * 1024);
        report("id", c.id());
        report("line", line);
        c.resume(());
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "odd", 44, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
}

/// A size below the minimum becomes the minimum, and its overflow is reported.
#[test]
fn overflow_with_a_tiny_stack_size_is_reported_at_the_minimum() {
    let Some(child) = run_in_child("overflow_with_a_tiny_stack_size_is_reported_at_the_minimum", || {
        let builder = Coroutine::<(), (), u64>::builder().name("tiny".into()).stack_size(1);
        let (mut c, line) = (builder.build(|_, ()| recurse(0)).unwrap(), line!());
        assert_eq!(c.stack_size(), MIN_STACK_SIZE);
        report("id", c.id());
        report("line", line);
        c.resume(());
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "tiny", MIN_STACK_SIZE / 1024, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
}

extern "C" fn recursing_handler(_: libc::c_int) {
    recurse(0);
}

/// A signal handler that runs on the coroutine's stack (installed without
/// SA_ONSTACK) and overflows it: SIGSEGV arrives while the thread is
/// handling SIGUSR1, goes to the alternate stack, and names the coroutine.
#[test]
fn overflow_inside_a_signal_handler_on_a_coroutine_stack_is_reported() {
    let Some(child) = run_in_child("overflow_inside_a_signal_handler_on_a_coroutine_stack_is_reported", || {
        // SAFETY: a plain handler for SIGUSR1, no SA_ONSTACK.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = recursing_handler as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()), 0);
        }
        let builder = Coroutine::<(), (), ()>::builder().name("signalled".into()).stack_size(64 * 1024);
        let (mut c, line) = (
            builder
                .build(|_, ()| {
                    // SAFETY: raising a signal whose handler we installed.
                    unsafe { libc::raise(libc::SIGUSR1) };
                })
                .unwrap(),
            line!(),
        );
        report("id", c.id());
        report("line", line - 5);
        c.resume(());
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "signalled", 64, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
}

/// A thread that never created a coroutine (another thread did, so weft's
/// handler is installed) overflows its own stack: std's report, not weft's.
#[test]
fn thread_without_coroutines_gets_std_overflow_report() {
    let Some(child) = run_in_child("thread_without_coroutines_gets_std_overflow_report", || {
        let mut c = Coroutine::<(), (), u32>::new(|_, ()| 1);
        assert_eq!(c.resume(()), CoroutineResult::Return(1));
        let mut parked = Coroutine::<(), (), ()>::new(|y, ()| y.suspend(()));
        parked.resume(());
        let handle = std::thread::Builder::new()
            .name("plain-thread".into())
            .stack_size(128 * 1024)
            .spawn(|| {
                report("recursing", "yes");
                recurse(0)
            })
            .unwrap();
        let _ = handle.join();
    }) else {
        return;
    };
    assert_eq!(child.reported("recursing"), "yes");
    assert_eq!(child.signal(), Some(SIGABRT), "{}", child.describe());
    assert!(
        child.stderr.lines().any(|l| l.starts_with("thread 'plain-thread'") && l.ends_with("has overflowed its stack")),
        "{}",
        child.describe()
    );
    assert!(!child.stderr.contains("coroutine "), "{}", child.describe());
}

/// A thread whose coroutine stacks were all returned and then unmapped
/// (cache capacity 0) overflows its own stack: std's report (no stale entry
/// in the thread's list of stacks claims it).
#[test]
fn thread_overflow_after_all_stacks_were_unmapped_gets_std_report() {
    let Some(child) = run_in_child("thread_overflow_after_all_stacks_were_unmapped_gets_std_report", || {
        let handle = std::thread::Builder::new()
            .name("emptied".into())
            .stack_size(128 * 1024)
            .spawn(|| {
                let mut cs: Vec<_> = (0..10)
                    .map(|i| {
                        Coroutine::<(), (), ()>::builder()
                            .stack_size(32 * 1024 + i * 4096)
                            .build(|y, ()| y.suspend(()))
                            .unwrap()
                    })
                    .collect();
                for c in &mut cs {
                    c.resume(());
                }
                drop(cs);
                weft::coroutine::set_thread_stack_cache_capacity(0);
                report("recursing", "yes");
                recurse(0)
            })
            .unwrap();
        let _ = handle.join();
    }) else {
        return;
    };
    assert_eq!(child.reported("recursing"), "yes");
    assert_eq!(child.signal(), Some(SIGABRT), "{}", child.describe());
    assert!(child.stderr.contains("thread 'emptied'"), "{}", child.describe());
    assert!(!child.stderr.contains("coroutine "), "{}", child.describe());
}

/// After stacks were unmapped (capacity 0), a fresh coroutine that overflows
/// is named (its stack is new; no stale header is found first).
#[test]
fn overflow_after_cache_flush_names_the_new_coroutine() {
    let Some(child) = run_in_child("overflow_after_cache_flush_names_the_new_coroutine", || {
        for i in 0..50u32 {
            let mut c = Coroutine::<(), (), ()>::builder()
                .name(format!("old {i}"))
                .stack_size(64 * 1024)
                .build(|y, ()| y.suspend(()))
                .unwrap();
            c.resume(());
            c.resume(());
        }
        weft::coroutine::set_thread_stack_cache_capacity(0);
        weft::coroutine::set_thread_stack_cache_capacity(8);
        let builder = Coroutine::<(), (), u64>::builder().name("fresh".into()).stack_size(64 * 1024);
        let (mut c, line) = (builder.build(|_, ()| recurse(0)).unwrap(), line!());
        report("id", c.id());
        report("line", line);
        c.resume(());
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "fresh", 64, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
    assert!(!child.stderr.contains("'old "), "{}", child.describe());
}

/// A destructor that overflows while a dropped generator is force-unwound
/// is reported under the generator's name.
#[test]
fn overflow_during_forced_unwind_names_the_generator() {
    let Some(child) = run_in_child("overflow_during_forced_unwind_names_the_generator", || {
        struct Deep;
        impl Drop for Deep {
            fn drop(&mut self) {
                black_box(recurse(0));
            }
        }
        let builder = Coroutine::<(), (), ()>::builder().name("unwinding".into()).stack_size(64 * 1024);
        let (mut c, line) = (
            builder
                .build(|y, ()| {
                    let _deep = Deep;
                    y.suspend(());
                })
                .unwrap(),
            line!(),
        );
        report("id", c.id());
        report("line", line - 5);
        c.resume(());
        drop(c);
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "unwinding", 64, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
}

/// A suspended generator kept in a `thread_local!` is force-unwound when the
/// thread exits (its TLS destructors run). A destructor on its stack that
/// overflows then should still be reported as a coroutine overflow.
#[test]
fn overflow_while_unwinding_a_generator_in_a_tls_destructor_is_reported() {
    let Some(child) = run_in_child("overflow_while_unwinding_a_generator_in_a_tls_destructor_is_reported", || {
        struct Deep;
        impl Drop for Deep {
            fn drop(&mut self) {
                report("deep-drop", "start");
                // SAFETY: stack_t is plain data; all zeroes is a valid value.
                let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
                // SAFETY: a query of this thread's alternate signal stack
                // (a null new stack); `old` is valid to write.
                unsafe { libc::sigaltstack(std::ptr::null(), &mut old) };
                report("altstack-disabled", old.ss_flags & libc::SS_DISABLE != 0);
                black_box(recurse(0));
            }
        }
        thread_local! {
            static KEPT: RefCell<Option<Coroutine<(), (), ()>>> = const { RefCell::new(None) };
        }
        std::thread::spawn(|| {
            let builder = Coroutine::<(), (), ()>::builder().name("in-tls".into()).stack_size(64 * 1024);
            let (mut c, line) = (
                builder
                    .build(|y, ()| {
                        let _deep = Deep;
                        y.suspend(());
                    })
                    .unwrap(),
                line!(),
            );
            report("id", c.id());
            report("line", line - 5);
            c.resume(());
            KEPT.with(|k| *k.borrow_mut() = Some(c));
        })
        .join()
        .unwrap();
    }) else {
        return;
    };
    assert_eq!(child.reported("deep-drop"), "start");
    let expected = expected_report(&child.reported("id"), "in-tls", 64, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
}

// ------------------------------------------------------------ stack sizes

#[test]
fn builder_rejects_zero_and_huge_sizes_with_clear_errors() {
    let zero = Coroutine::<(), (), ()>::builder().stack_size(0).build(|_, ()| {}).unwrap_err();
    assert_eq!(zero.kind(), std::io::ErrorKind::InvalidInput);
    assert!(zero.to_string().contains("0 bytes"), "{zero}");
    for huge in [usize::MAX, usize::MAX - 4095, 1usize << 46, (1usize << 46) - 1] {
        let e = Coroutine::<(), (), ()>::builder().stack_size(huge).build(|_, ()| {}).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{huge}: {e}");
        assert!(e.to_string().contains("too large"), "{huge}: {e}");
    }
    for (asked, got) in [(1, MIN_STACK_SIZE), (MIN_STACK_SIZE + 1, MIN_STACK_SIZE + 4096), (100_001, 102_400)] {
        let mut c = Coroutine::<(), (), u8>::builder().stack_size(asked).build(|_, ()| 3).unwrap();
        assert_eq!(c.stack_size(), got, "asked {asked}");
        assert_eq!(c.resume(()), CoroutineResult::Return(3));
    }
}

#[test]
fn runtime_builders_reject_zero_and_huge_sizes() {
    let e = weft::Runtime::builder().workers(1).stack_size(0).build().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    let e = weft::Runtime::builder().workers(1).stack_size(usize::MAX).build().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    let rt = weft::Runtime::builder().workers(1).build().unwrap();
    let e = weft::Builder::new().stack_size(0).spawn_on(&rt, || ()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    let e = weft::Builder::new().stack_size(usize::MAX).spawn_on(&rt, || ()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    // An odd size runs.
    let h = weft::Builder::new().stack_size(33_333).spawn_on(&rt, || 5).unwrap();
    assert_eq!(h.join().unwrap(), 5);
}

/// Under RLIMIT_AS, a stack that cannot be mapped is a clear error from
/// `try_resume`, a clear panic from `resume`, and a `NoStack` join error
/// from a runtime spawn.
#[test]
fn rlimit_as_failures_are_reported_clearly() {
    let Some(child) = run_in_child("rlimit_as_failures_are_reported_clearly", || {
        let rt = weft::Runtime::builder().workers(1).build().unwrap();
        // Warm the worker up.
        rt.spawn(|| ()).join().unwrap();
        let big = 1usize << 30; // 1 GiB stacks
        let mut limit: libc::rlimit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: plain getrlimit/setrlimit on this process.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut limit), 0);
            // Current address space use, from /proc/self/status (VmSize, kB).
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let vm_kb: u64 = status
                .lines()
                .find(|l| l.starts_with("VmSize:"))
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            limit.rlim_cur = vm_kb * 1024 + 256 * 1024 * 1024; // 256 MiB headroom
            assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &limit), 0);
        }
        let mut c = Coroutine::<(), (), u8>::builder().name("big".into()).stack_size(big).build(|_, ()| 1).unwrap();
        let e = c.try_resume(()).unwrap_err();
        report("try-kind", format!("{:?}", e.kind()));
        report("try-message", &e);
        assert!(!c.is_started());
        let payload = panic::catch_unwind(AssertUnwindSafe(|| c.resume(()))).unwrap_err();
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        report("resume-panic", &msg);
        // A small one still works.
        let mut small = Coroutine::<(), (), u8>::new(|_, ()| 2);
        assert_eq!(small.resume(()), CoroutineResult::Return(2));
        // The runtime: a spawn whose stack cannot be mapped ends with NoStack.
        let h = weft::Builder::new().stack_size(big).spawn_on(&rt, || 9);
        match h {
            Err(e) => report("spawn", format!("refused {:?}: {e}", e.kind())),
            Ok(h) => match h.join() {
                Ok(v) => report("spawn", format!("ran {v}")),
                Err(e) => report("spawn", format!("join error {:?}: {e}", e.kind())),
            },
        }
    }) else {
        return;
    };
    assert!(child.output.status.success(), "{}", child.describe());
    assert_eq!(child.reported("try-kind"), "OutOfMemory", "{}", child.describe());
    let message = child.reported("try-message");
    assert!(message.contains("coroutine stack"), "{}", child.describe());
    assert!(!message.contains("vm.max_map_count"), "RLIMIT_AS is not the map limit\n{}", child.describe());
    let panic_message = child.reported("resume-panic");
    assert!(panic_message.contains("cannot start coroutine"), "{}", child.describe());
    let spawn = child.reported("spawn");
    assert!(spawn.contains("NoStack") || spawn.contains("refused"), "{}", child.describe());
}

// ------------------------------------------------------------ stack cache

/// Count of read-write mappings of exactly `len` bytes directly above a
/// PROT_NONE page (a coroutine stack of `len` usable bytes). The kernel
/// merges adjacent mappings of the same kind, so a stack can escape the
/// count (its guard merged with a PROT_NONE reserve mapped right below it,
/// or its read-write part with one mapped right above): a lower bound.
fn guarded_stacks_of(len: usize) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let regions: Vec<(usize, usize, String)> = maps
        .lines()
        .map(|l| {
            let mut parts = l.split_whitespace();
            let range = parts.next().unwrap();
            let perms = parts.next().unwrap().to_string();
            let (a, b) = range.split_once('-').unwrap();
            (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap(), perms)
        })
        .collect();
    regions
        .windows(2)
        .filter(|w| {
            let (g, s) = (&w[0], &w[1]);
            // The guard may have merged with a PROT_NONE mapping that
            // another thread made right below it (a malloc arena's
            // reserve): 4096 bytes or more.
            g.2 == "---p" && g.1 - g.0 >= 4096 && g.1 == s.0 && s.2 == "rw-p" && s.1 - s.0 == len
        })
        .count()
}

/// A line of /proc/self/maps: start, end, permissions.
type Region = (usize, usize, String);

/// The region of /proc/self/maps holding `addr` and the one just below it.
fn region_and_below(addr: usize) -> (Region, Option<Region>) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut below = None;
    for l in maps.lines() {
        let mut parts = l.split_whitespace();
        let (a, b) = parts.next().unwrap().split_once('-').unwrap();
        let r = (
            usize::from_str_radix(a, 16).unwrap(),
            usize::from_str_radix(b, 16).unwrap(),
            parts.next().unwrap().to_string(),
        );
        if (r.0..r.1).contains(&addr) {
            return (r, below);
        }
        below = Some(r);
    }
    panic!("{addr:#x} is not mapped");
}

/// Many threads each keep coroutines of their own: every stack is unmapped
/// when its thread exits (the per-thread cache goes with the thread).
#[test]
fn thread_caches_are_unmapped_at_thread_exit() {
    const SIZE: usize = 212 * 1024; // a size no other test uses
    assert_eq!(guarded_stacks_of(SIZE), 0);
    let dropped = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let dropped = Arc::clone(&dropped);
            std::thread::spawn(move || {
                for round in 0..3 {
                    let mut cs: Vec<_> = (0..10)
                        .map(|_| {
                            let guard = ACounted(Arc::clone(&dropped));
                            Coroutine::<(), (), ()>::builder()
                                .stack_size(SIZE)
                                .build(move |y, ()| {
                                    let _g = guard;
                                    y.suspend(());
                                })
                                .unwrap()
                        })
                        .collect();
                    for c in &mut cs {
                        c.resume(());
                    }
                    if round == 2 {
                        // Leave them suspended: dropped (unwound) below.
                    } else {
                        for c in &mut cs {
                            c.resume(());
                        }
                    }
                    drop(cs);
                }
                // Its own 10 are cached; all but a merged one or two show.
                assert!(guarded_stacks_of(SIZE) >= 5);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(dropped.load(Ordering::SeqCst), 8 * 3 * 10);
    assert_eq!(guarded_stacks_of(SIZE), 0, "stacks of exited threads are still mapped");
}

/// A runtime's task stacks are unmapped when the runtime is dropped, also
/// those of tasks still suspended then (unwound on their own worker).
#[test]
fn runtime_stacks_are_unmapped_at_drop() {
    const SIZE: usize = 196 * 1024;
    let dropped = Arc::new(AtomicUsize::new(0));
    {
        let rt = weft::Runtime::builder().workers(2).stack_size(SIZE).build().unwrap();
        let sleeping = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..40)
            .map(|i| {
                let g = ACounted(Arc::clone(&dropped));
                let sleeping = Arc::clone(&sleeping);
                rt.spawn(move || {
                    let _g = g;
                    if i % 2 == 0 {
                        sleeping.fetch_add(1, Ordering::SeqCst);
                        weft::sleep(std::time::Duration::from_secs(3600));
                    }
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            if i % 2 == 1 {
                h.join().unwrap();
            }
        }
        while sleeping.load(Ordering::SeqCst) < 20 {
            std::thread::yield_now();
        }
        assert!(guarded_stacks_of(SIZE) >= 20);
    }
    assert_eq!(dropped.load(Ordering::SeqCst), 40);
    assert_eq!(guarded_stacks_of(SIZE), 0);
}

/// A reused stack keeps its guard page: the region below the running
/// coroutine's stack is one PROT_NONE page, on first use and after 200
/// reuses, for the default size (fast slot) and another (the list).
#[test]
fn guard_page_is_in_place_after_reuse() {
    for size in [weft::coroutine::DEFAULT_STACK_SIZE, 36 * 1024] {
        for round in 0..200 {
            let mut c = Coroutine::<(), (), usize>::builder()
                .stack_size(size)
                .build(|_, ()| {
                    let here = 0u8;
                    black_box(&here) as *const u8 as usize
                })
                .unwrap();
            let CoroutineResult::Return(addr) = c.resume(()) else { unreachable!() };
            if round == 0 || round == 199 {
                let (region, below) = region_and_below(addr);
                assert_eq!(region.2, "rw-p");
                let below = below.expect("something below the stack");
                assert_eq!((below.1, below.1 - below.0, below.2.as_str()), (region.0, 4096, "---p"), "size {size}");
            }
        }
    }
}

/// A thread-local generator dropped by the thread's TLS destructors is
/// unwound once, both when its slot was registered before the thread's
/// stack cache and after it; a fresh generator started from a TLS
/// destructor runs too.
#[test]
fn generator_in_thread_local_is_unwound_once_at_thread_exit() {
    struct Holder(Option<Coroutine<(), u32, ()>>);
    impl Drop for Holder {
        fn drop(&mut self) {
            // Start one more generator here, after (maybe) the cache is gone.
            let mut late = Coroutine::<u32, u32, u32>::new(|y, x| y.suspend(x) + 1);
            assert_eq!(late.resume(4), CoroutineResult::Yield(4));
            drop(late);
            self.0.take();
        }
    }
    thread_local! {
        static KEPT: RefCell<Holder> = const { RefCell::new(Holder(None)) };
    }
    for register_first in [true, false] {
        let dropped = Arc::new(AtomicUsize::new(0));
        let d = Arc::clone(&dropped);
        std::thread::spawn(move || {
            if register_first {
                KEPT.with(|_| {});
            }
            let g = ACounted(d);
            let mut c = Coroutine::<(), u32, ()>::new(move |y, ()| {
                let _g = g;
                let mut n = 0;
                loop {
                    y.suspend(n);
                    n += 1;
                }
            });
            assert_eq!(c.resume(()), CoroutineResult::Yield(0));
            assert_eq!(c.resume(()), CoroutineResult::Yield(1));
            KEPT.with(|k| k.borrow_mut().0 = Some(c));
        })
        .join()
        .unwrap();
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "register_first={register_first}");
    }
}

// ------------------------------------------------------------ generators

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "<non-string>".into())
}

#[test]
fn resume_after_return_and_after_panic_panics_clearly() {
    let mut c = Coroutine::<(), (), u8>::new(|_, ()| 1);
    assert_eq!(c.resume(()), CoroutineResult::Return(1));
    let p = panic::catch_unwind(AssertUnwindSafe(|| c.resume(()))).unwrap_err();
    let m = panic_message(&*p);
    assert!(m.contains("resumed after it finished") && m.contains(&c.id().to_string()), "{m}");
    let p = panic::catch_unwind(AssertUnwindSafe(|| c.try_resume(()))).unwrap_err();
    assert!(panic_message(&*p).contains("resumed after it finished"));

    let mut bad = Coroutine::<(), (), ()>::new(|_, ()| panic!("boom"));
    let p = panic::catch_unwind(AssertUnwindSafe(|| bad.resume(()))).unwrap_err();
    assert_eq!(panic_message(&*p), "boom");
    assert!(bad.is_finished());
    let p = panic::catch_unwind(AssertUnwindSafe(|| bad.resume(()))).unwrap_err();
    assert!(panic_message(&*p).contains("resumed after it finished"));
}

#[test]
fn panic_payload_is_intact_and_locals_dropped_once() {
    #[derive(Debug, PartialEq)]
    struct Payload(Vec<u32>, &'static str);
    let drops = Rc::new(Cell::new(0));
    let d = Rc::clone(&drops);
    let mut c = Coroutine::<u32, u32, ()>::new(move |y, x| {
        let _a = Counted(Rc::clone(&d));
        let x = y.suspend(x + 1);
        let _b = Counted(d);
        panic::panic_any(Payload(vec![x, 2, 3], "custom"));
    });
    assert_eq!(c.resume(1), CoroutineResult::Yield(2));
    let p = panic::catch_unwind(AssertUnwindSafe(|| c.resume(7))).unwrap_err();
    assert_eq!(p.downcast_ref::<Payload>(), Some(&Payload(vec![7, 2, 3], "custom")));
    assert!(c.is_finished());
    assert_eq!(drops.get(), 2);
    drop(c);
    assert_eq!(drops.get(), 2);
}

/// A panic two generators deep reaches the outermost resumer intact.
#[test]
fn panic_propagates_through_nested_generators() {
    let mut outer = Coroutine::<(), (), ()>::new(|_, ()| {
        let mut inner = Coroutine::<(), (), ()>::new(|_, ()| panic::panic_any(42u64));
        inner.resume(());
    });
    let p = panic::catch_unwind(AssertUnwindSafe(|| outer.resume(()))).unwrap_err();
    assert_eq!(p.downcast_ref::<u64>(), Some(&42));
    assert!(outer.is_finished());
}

#[test]
fn drop_of_suspended_generator_runs_each_destructor_once() {
    let drops = Rc::new(Cell::new(0));
    let d = Rc::clone(&drops);
    #[inline(never)]
    fn nest(y: &Yielder<(), u32>, d: &Rc<Cell<u32>>, depth: u32) {
        let _g = Counted(Rc::clone(d));
        if depth == 0 {
            y.suspend(99);
        } else {
            nest(y, d, depth - 1);
        }
    }
    let mut c = Coroutine::<(), u32, ()>::new(move |y, ()| nest(y, &d, 49));
    assert_eq!(c.resume(()), CoroutineResult::Yield(99));
    assert_eq!(drops.get(), 0);
    drop(c);
    // 50 guards + the closure's captured Rc is not Counted.
    assert_eq!(drops.get(), 50);
}

/// A destructor that suspends during the forced unwind of a drop: the
/// generator is documented to be leaked (its remaining destructors never run).
#[test]
fn destructor_that_suspends_during_forced_unwind_leaks_the_rest() {
    std::thread::spawn(|| {
        let drops = Rc::new(Cell::new(0));
        let yielded_drops = Rc::new(Cell::new(0));
        struct Suspender<'a> {
            y: &'a Yielder<(), Counted>,
            yd: Rc<Cell<u32>>,
            before: Rc<Cell<u32>>,
        }
        impl Drop for Suspender<'_> {
            fn drop(&mut self) {
                self.before.set(self.before.get() + 100);
                self.y.suspend(Counted(Rc::clone(&self.yd)));
                self.before.set(self.before.get() + 1000);
            }
        }
        let (d, yd) = (Rc::clone(&drops), Rc::clone(&yielded_drops));
        let mut c = Coroutine::<(), Counted, ()>::new(move |y, ()| {
            let _outer = Counted(Rc::clone(&d));
            let _s = Suspender { y, yd: Rc::clone(&yd), before: Rc::clone(&d) };
            let _inner = Counted(Rc::clone(&d));
            y.suspend(Counted(yd));
        });
        let CoroutineResult::Yield(v) = c.resume(()) else { unreachable!() };
        drop(v);
        assert_eq!(yielded_drops.get(), 1);
        drop(c);
        // `_inner` dropped (1), the suspender started (100), then leaked.
        assert_eq!(drops.get(), 101);
        assert_eq!(yielded_drops.get(), 2, "the value yielded during the unwind is dropped once");
        // Documented: std's panic count stays raised on this thread.
        assert!(std::thread::panicking());
    })
    .join()
    .unwrap();
}

/// A generator that catches the forced unwind and suspends again is asked
/// again; each destructor runs once, and the value it yielded meanwhile is
/// dropped once.
#[test]
fn generator_that_catches_forced_unwind_is_asked_again() {
    let drops = Rc::new(Cell::new(0));
    let caught = Rc::new(Cell::new(0));
    let (d, k) = (Rc::clone(&drops), Rc::clone(&caught));
    let mut c = Coroutine::<(), Counted, ()>::new(move |y, ()| {
        let _outer = Counted(Rc::clone(&d));
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            let _inner = Counted(Rc::clone(&d));
            y.suspend(Counted(Rc::clone(&d)));
        }));
        let payload = r.unwrap_err();
        assert!(weft::is_forced_unwind(&*payload));
        k.set(k.get() + 1);
        assert!(!std::thread::panicking());
        // Keep running: suspend again (a second unwind request follows).
        y.suspend(Counted(Rc::clone(&d)));
        k.set(k.get() + 100); // never reached
    });
    let CoroutineResult::Yield(v) = c.resume(()) else { unreachable!() };
    drop(v);
    assert_eq!(drops.get(), 1);
    drop(c);
    assert_eq!(caught.get(), 1);
    // _inner, the value yielded after the catch, _outer.
    assert_eq!(drops.get(), 4);
}

/// A generator that catches the forced unwind and returns normally: its
/// return value is dropped once.
#[test]
fn generator_that_catches_forced_unwind_and_returns() {
    let drops = Rc::new(Cell::new(0));
    let d = Rc::clone(&drops);
    let mut c = Coroutine::<(), (), Counted>::new(move |y, ()| {
        let r = panic::catch_unwind(AssertUnwindSafe(|| y.suspend(())));
        assert!(r.is_err());
        Counted(d)
    });
    c.resume(());
    drop(c);
    assert_eq!(drops.get(), 1);
}

/// A destructor that panics during the forced unwind of a drop aborts the
/// process (Rust's rule for a panic during cleanup); it must not corrupt
/// anything first. Observed in a child.
#[test]
fn destructor_that_panics_during_forced_unwind_aborts() {
    let Some(child) = run_in_child("destructor_that_panics_during_forced_unwind_aborts", || {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("bomb in drop");
            }
        }
        let mut c = Coroutine::<(), (), ()>::new(|y, ()| {
            let _b = Bomb;
            y.suspend(());
        });
        c.resume(());
        report("dropping", "yes");
        drop(c);
        report("after-drop", "returned");
    }) else {
        return;
    };
    assert_eq!(child.reported("dropping"), "yes");
    report_child("destructor_that_panics_during_forced_unwind_aborts", &child);
    assert!(child.stderr.contains("bomb in drop"), "{}", child.describe());
    assert_eq!(child.signal(), Some(SIGABRT), "{}", child.describe());
}

fn report_child(name: &str, child: &Child) {
    eprintln!("--- {name}: {}", child.describe());
}

#[test]
fn deep_chain_of_nested_generators_yields_and_drops_exactly_once() {
    const DEPTH: u32 = 150;
    fn make(level: u32, drops: Rc<Cell<u32>>) -> Coroutine<(), u32, ()> {
        Coroutine::<(), u32, ()>::builder()
            .stack_size(MIN_STACK_SIZE)
            .build(move |y, ()| {
                let _g = Counted(Rc::clone(&drops));
                if level == 0 {
                    let mut n = 0;
                    loop {
                        y.suspend(n);
                        n += 1;
                    }
                }
                let mut child = make(level - 1, drops);
                loop {
                    match child.resume(()) {
                        CoroutineResult::Yield(v) => {
                            y.suspend(v + 1);
                        }
                        CoroutineResult::Return(()) => return,
                    }
                }
            })
            .unwrap()
    }
    let drops = Rc::new(Cell::new(0));
    let mut top = make(DEPTH, Rc::clone(&drops));
    for i in 0..5 {
        assert_eq!(top.resume(()), CoroutineResult::Yield(i + DEPTH));
    }
    drop(top);
    assert_eq!(drops.get(), DEPTH + 1);
}

#[test]
fn yielder_used_from_nested_closures() {
    let mut c = Coroutine::<u32, u32, u32>::new(|y, first| {
        let emit = |v: u32| y.suspend(v);
        let twice = |v: u32| emit(emit(v) * 2);
        let mut acc = first;
        for i in 0..3 {
            acc += (0..2).map(|_| twice(i)).sum::<u32>();
        }
        acc
    });
    let mut seen = Vec::new();
    let mut input = 1;
    let result = loop {
        match c.resume(input) {
            CoroutineResult::Yield(v) => {
                seen.push(v);
                input = v + 1;
            }
            CoroutineResult::Return(r) => break r,
        }
    };
    assert_eq!(seen.len(), 12);
    assert_eq!(seen[..4], [0, 2, 0, 2]);
    assert!(result > 1);
}

#[test]
fn thread_locals_in_a_generator_are_the_threads() {
    thread_local! { static N: Cell<u32> = const { Cell::new(0) }; }
    N.with(|n| n.set(5));
    let mut c = Coroutine::<(), u32, ()>::new(|y, ()| {
        for _ in 0..3 {
            N.with(|n| n.set(n.get() + 1));
            y.suspend(N.with(Cell::get));
        }
    });
    assert_eq!(c.resume(()), CoroutineResult::Yield(6));
    N.with(|n| n.set(10));
    assert_eq!(c.resume(()), CoroutineResult::Yield(11));
    assert_eq!(c.resume(()), CoroutineResult::Yield(12));
    assert_eq!(c.resume(()), CoroutineResult::Return(()));
}

/// A generator re-entered through a RefCell while it runs: the borrow fails
/// inside, and the resulting panic reaches the resumer.
#[test]
fn resume_during_own_resume_is_refused() {
    let cell: Rc<RefCell<Option<Coroutine<(), (), ()>>>> = Rc::new(RefCell::new(None));
    let inner_cell = Rc::clone(&cell);
    *cell.borrow_mut() = Some(Coroutine::new(move |_, ()| {
        assert!(inner_cell.try_borrow_mut().is_err());
        let _ = inner_cell.borrow_mut(); // panics: already borrowed
    }));
    let p = panic::catch_unwind(AssertUnwindSafe(|| cell.borrow_mut().as_mut().unwrap().resume(()))).unwrap_err();
    assert!(panic_message(&*p).contains("borrowed"), "{}", panic_message(&*p));
    assert!(cell.borrow().as_ref().unwrap().is_finished());
    // Break the Rc cycle.
    cell.borrow_mut().take();
}

/// An outer generator's yielder passed as an inner generator's input: the
/// inner one suspends the outer from its own stack; dropping the outer then
/// unwinds both stacks, each destructor once.
#[test]
fn outer_suspended_from_inner_stack_unwinds_both_on_drop() {
    let drops = Rc::new(Cell::new(0));
    let d = Rc::clone(&drops);
    let mut outer = Coroutine::<(), u32, ()>::new(move |oy, ()| {
        let _o = Counted(Rc::clone(&d));
        let d2 = Rc::clone(&d);
        let mut inner = Coroutine::<&Yielder<(), u32>, (), ()>::new(move |_iy, oy2| {
            let _i = Counted(d2);
            oy2.suspend(7);
            oy2.suspend(8);
        });
        let _ = inner.resume(oy);
        oy.suspend(9);
    });
    assert_eq!(outer.resume(()), CoroutineResult::Yield(7));
    assert_eq!(outer.resume(()), CoroutineResult::Yield(8));
    assert_eq!(drops.get(), 0);
    drop(outer);
    assert_eq!(drops.get(), 2);
}

// ------------------------------------------------------------ backtraces

#[inline(never)]
fn backtrace_marker_fn() -> String {
    black_box(std::backtrace::Backtrace::force_capture().to_string())
}

#[test]
fn backtrace_inside_a_generator_shows_frames() {
    let mut c = Coroutine::<(), (), String>::new(|_, ()| backtrace_marker_fn());
    let CoroutineResult::Return(bt) = c.resume(()) else { unreachable!() };
    assert!(bt.contains("backtrace_marker_fn"), "{bt}");
    // Also from a suspended-and-resumed generator, twice.
    let mut c = Coroutine::<(), String, String>::new(|y, ()| {
        y.suspend(backtrace_marker_fn());
        backtrace_marker_fn()
    });
    let CoroutineResult::Yield(a) = c.resume(()) else { unreachable!() };
    let CoroutineResult::Return(b) = c.resume(()) else { unreachable!() };
    assert!(a.contains("backtrace_marker_fn") && b.contains("backtrace_marker_fn"));
}

/// A backtrace captured and printed on a minimum-size stack (the docs say
/// 32 KiB is enough for a panic that prints one).
#[test]
fn backtrace_on_a_minimum_stack_does_not_overflow() {
    let Some(child) = run_in_child("backtrace_on_a_minimum_stack_does_not_overflow", || {
        let mut c = Coroutine::<(), (), usize>::builder()
            .stack_size(MIN_STACK_SIZE)
            .name("min-bt".into())
            .build(|_, ()| backtrace_marker_fn().len())
            .unwrap();
        let CoroutineResult::Return(n) = c.resume(()) else { unreachable!() };
        report("len", n);
        // And a panic with RUST_BACKTRACE=1 printing.
        let mut p = Coroutine::<(), (), ()>::builder()
            .stack_size(MIN_STACK_SIZE)
            .name("min-panic".into())
            .build(|_, ()| panic!("printed with a backtrace"))
            .unwrap();
        // SAFETY: single-threaded at this point of the child.
        unsafe { std::env::set_var("RUST_BACKTRACE", "full") };
        let _ = panic::catch_unwind(AssertUnwindSafe(|| p.resume(())));
    }) else {
        return;
    };
    assert!(child.output.status.success(), "{}", child.describe());
    assert!(child.reported("len").parse::<usize>().unwrap() > 0);
}

/// A backtrace in a runtime coroutine (default stack) works.
#[test]
fn backtrace_inside_a_runtime_coroutine_shows_frames() {
    let rt = weft::Runtime::builder().workers(1).build().unwrap();
    let bt = rt.spawn(backtrace_marker_fn).join().unwrap();
    assert!(bt.contains("backtrace_marker_fn"), "{bt}");
}

#[allow(dead_code)]
const _: i32 = SIGSEGV;

// ------------------------------------------------------------ more edges

/// A runtime task parks (sleeps) from inside a generator it drives; the
/// runtime is dropped: both stacks are unwound, each destructor once.
#[test]
fn task_parked_inside_its_generator_is_unwound_once_at_shutdown() {
    let dropped = Arc::new(AtomicUsize::new(0));
    {
        let rt = weft::Runtime::builder().workers(1).build().unwrap();
        let (d1, d2) = (ACounted(Arc::clone(&dropped)), Arc::clone(&dropped));
        let started = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&started);
        let _h = rt.spawn(move || {
            let _task_guard = d1;
            let mut g = Coroutine::<(), (), ()>::new(move |_, ()| {
                let _gen_guard = ACounted(d2);
                s.fetch_add(1, Ordering::SeqCst);
                weft::sleep(std::time::Duration::from_secs(3600));
            });
            g.resume(());
        });
        while started.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
    }
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
}

/// The same, with a cancel: the join reports a cancel, both guards once.
#[test]
fn task_parked_inside_its_generator_is_cancelled_once() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let rt = weft::Runtime::builder().workers(1).build().unwrap();
    let (d1, d2) = (ACounted(Arc::clone(&dropped)), Arc::clone(&dropped));
    let started = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&started);
    let h = rt.spawn(move || {
        let _task_guard = d1;
        let mut g = Coroutine::<(), (), ()>::new(move |_, ()| {
            let _gen_guard = ACounted(d2);
            s.fetch_add(1, Ordering::SeqCst);
            weft::sleep(std::time::Duration::from_secs(3600));
        });
        g.resume(());
    });
    while started.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    h.cancel();
    assert!(h.join().unwrap_err().is_cancelled());
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
}

/// A panic in a generator driven by a runtime task reaches the task's join
/// with its payload intact.
#[test]
fn panic_in_generator_inside_task_reaches_join_intact() {
    let rt = weft::Runtime::builder().workers(1).build().unwrap();
    let h = rt.spawn(|| {
        let mut g = Coroutine::<(), (), ()>::new(|_, ()| panic::panic_any(1234u32));
        g.resume(());
    });
    let e = h.join().unwrap_err();
    assert_eq!(e.into_panic().downcast_ref::<u32>(), Some(&1234));
}

/// A destructor that suspends while the generator unwinds a real panic:
/// the resumer sees the yield, resumes, and then gets the panic with its
/// payload; std's panic count is back to 0 afterwards.
#[test]
fn destructor_suspending_during_a_real_panic_then_resumed() {
    std::thread::spawn(|| {
        let drops = Rc::new(Cell::new(0));
        struct Waits<'a>(&'a Yielder<(), u32>, Rc<Cell<u32>>);
        impl Drop for Waits<'_> {
            fn drop(&mut self) {
                self.0.suspend(5);
                self.1.set(self.1.get() + 1);
            }
        }
        let d = Rc::clone(&drops);
        let mut c = Coroutine::<(), u32, ()>::new(move |y, ()| {
            let _outer = Counted(Rc::clone(&d));
            let _w = Waits(y, d);
            panic!("real panic");
        });
        assert_eq!(c.resume(()), CoroutineResult::Yield(5));
        assert!(std::thread::panicking(), "documented: the count is per thread");
        let p = panic::catch_unwind(AssertUnwindSafe(|| c.resume(()))).unwrap_err();
        assert_eq!(panic_message(&*p), "real panic");
        assert_eq!(drops.get(), 2);
        assert!(c.is_finished());
        assert!(!std::thread::panicking(), "the panic count is restored");
    })
    .join()
    .unwrap();
}

/// A very long name is cut in the overflow report, which still aborts with
/// the report's start.
#[test]
fn overflow_with_a_very_long_name_is_reported() {
    let Some(child) = run_in_child("overflow_with_a_very_long_name_is_reported", || {
        let mut c = Coroutine::<(), (), u64>::builder()
            .name("n".repeat(5000))
            .stack_size(64 * 1024)
            .build(|_, ()| recurse(0))
            .unwrap();
        report("id", c.id());
        c.resume(());
    }) else {
        return;
    };
    assert_eq!(child.signal(), Some(SIGABRT), "{}", child.describe());
    let start = format!("coroutine {} ('nnnn", child.reported("id"));
    assert!(child.stderr.contains(&start), "{}", child.describe());
}

/// A closure larger than the coroutine's stack overflows as it is moved
/// onto the stack at the first resume: reported, naming the coroutine.
#[test]
fn closure_larger_than_the_stack_is_reported_as_overflow() {
    let Some(child) = run_in_child("closure_larger_than_the_stack_is_reported_as_overflow", || {
        let big = [7u8; 128 * 1024];
        let builder = Coroutine::<(), (), u8>::builder().name("fat".into()).stack_size(64 * 1024);
        let (mut c, line) = (builder.build(move |_, ()| black_box(big)[1000]).unwrap(), line!());
        report("id", c.id());
        report("line", line);
        c.resume(());
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "fat", 64, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
}

/// A suspended generator dropped while its resumer unwinds a panic: its
/// destructors run once (the forced unwind nests inside the panic), and the
/// outer panic's payload is intact.
#[test]
fn generator_dropped_during_a_panic_unwinds_once() {
    let drops = Rc::new(Cell::new(0));
    let d = Rc::clone(&drops);
    let p = panic::catch_unwind(AssertUnwindSafe(move || {
        let mut c = Coroutine::<(), (), ()>::new(move |y, ()| {
            let _a = Counted(Rc::clone(&d));
            let _b = Counted(d);
            y.suspend(());
        });
        c.resume(());
        panic::panic_any(77i64);
    }))
    .unwrap_err();
    assert_eq!(p.downcast_ref::<i64>(), Some(&77));
    assert_eq!(drops.get(), 2);
    assert!(!std::thread::panicking());
}

/// A thread made with pthread_create (no alternate signal stack from std):
/// weft gives it one, and a generator overflow there is reported.
#[test]
fn overflow_on_a_pthread_created_thread_is_reported() {
    let Some(child) = run_in_child("overflow_on_a_pthread_created_thread_is_reported", || {
        extern "C" fn body(_: *mut libc::c_void) -> *mut libc::c_void {
            let builder = Coroutine::<(), (), u64>::builder().name("on-pthread".into()).stack_size(64 * 1024);
            let (mut c, line) = (builder.build(|_, ()| recurse(0)).unwrap(), line!());
            report("id", c.id());
            report("line", line);
            c.resume(());
            std::ptr::null_mut()
        }
        // SAFETY: a plain pthread running `body`, joined below.
        unsafe {
            let mut t: libc::pthread_t = std::mem::zeroed();
            assert_eq!(libc::pthread_create(&mut t, std::ptr::null(), body, std::ptr::null_mut()), 0);
            libc::pthread_join(t, std::ptr::null_mut());
        }
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "on-pthread", 64, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
}

/// The same on a pthread, with the generator unwound from a TLS destructor
/// at thread exit (weft's own alternate stack has a TLS destructor too).
#[test]
fn overflow_in_tls_destructor_on_a_pthread_is_reported() {
    let Some(child) = run_in_child("overflow_in_tls_destructor_on_a_pthread_is_reported", || {
        struct Deep;
        impl Drop for Deep {
            fn drop(&mut self) {
                report("deep-drop", "start");
                black_box(recurse(0));
            }
        }
        thread_local! {
            static KEPT: RefCell<Option<Coroutine<(), (), ()>>> = const { RefCell::new(None) };
        }
        extern "C" fn body(_: *mut libc::c_void) -> *mut libc::c_void {
            let builder = Coroutine::<(), (), ()>::builder().name("pthread-tls".into()).stack_size(64 * 1024);
            let mut c = builder
                .build(|y, ()| {
                    let _deep = Deep;
                    y.suspend(());
                })
                .unwrap();
            report("id", c.id());
            c.resume(());
            KEPT.with(|k| *k.borrow_mut() = Some(c));
            std::ptr::null_mut()
        }
        // SAFETY: a plain pthread running `body`, joined below.
        unsafe {
            let mut t: libc::pthread_t = std::mem::zeroed();
            assert_eq!(libc::pthread_create(&mut t, std::ptr::null(), body, std::ptr::null_mut()), 0);
            libc::pthread_join(t, std::ptr::null_mut());
        }
    }) else {
        return;
    };
    assert_eq!(child.reported("deep-drop"), "start", "{}", child.describe());
    assert_eq!(child.signal(), Some(SIGABRT), "{}", child.describe());
    let start = format!("coroutine {} ('pthread-tls') overflowed", child.reported("id"));
    assert!(child.stderr.contains(&start), "{}", child.describe());
}

/// As above, but the thread-local is registered before the thread's first
/// coroutine, so its destructor runs after weft's alternate stack's.
#[test]
fn overflow_in_tls_destructor_on_a_pthread_registered_first_is_reported() {
    let Some(child) = run_in_child("overflow_in_tls_destructor_on_a_pthread_registered_first_is_reported", || {
        struct Deep;
        impl Drop for Deep {
            fn drop(&mut self) {
                report("deep-drop", "start");
                black_box(recurse(0));
            }
        }
        thread_local! {
            static KEPT: RefCell<Option<Coroutine<(), (), ()>>> = const { RefCell::new(None) };
        }
        extern "C" fn body(_: *mut libc::c_void) -> *mut libc::c_void {
            KEPT.with(|_| {});
            let builder = Coroutine::<(), (), ()>::builder().name("pthread-tls".into()).stack_size(64 * 1024);
            let mut c = builder
                .build(|y, ()| {
                    let _deep = Deep;
                    y.suspend(());
                })
                .unwrap();
            report("id", c.id());
            c.resume(());
            KEPT.with(|k| *k.borrow_mut() = Some(c));
            std::ptr::null_mut()
        }
        // SAFETY: a plain pthread running `body`, joined below.
        unsafe {
            let mut t: libc::pthread_t = std::mem::zeroed();
            assert_eq!(libc::pthread_create(&mut t, std::ptr::null(), body, std::ptr::null_mut()), 0);
            libc::pthread_join(t, std::ptr::null_mut());
        }
    }) else {
        return;
    };
    assert_eq!(child.reported("deep-drop"), "start", "{}", child.describe());
    assert_eq!(child.signal(), Some(SIGABRT), "{}", child.describe());
    let start = format!("coroutine {} ('pthread-tls') overflowed", child.reported("id"));
    assert!(child.stderr.contains(&start), "{}", child.describe());
}

/// Near `vm.max_map_count` (the process's maps filled with one-page
/// mappings), a stack whose guard page cannot be split off is an error
/// naming the sysctl, from `try_resume`; after maps are freed, the same
/// coroutine starts.
#[test]
fn map_count_exhaustion_is_a_clear_error() {
    let Some(child) = run_in_child("map_count_exhaustion_is_a_clear_error", || {
        let page = 4096usize;
        let mut maps: Vec<*mut libc::c_void> = Vec::with_capacity(70_000);
        // Warm up: a coroutine on this thread (prepares it), then fill.
        let mut warm = Coroutine::<(), (), u8>::new(|_, ()| 1);
        assert_eq!(warm.resume(()), CoroutineResult::Return(1));
        let mut c = Coroutine::<(), (), u8>::builder().stack_size(40 * 1024).build(|_, ()| 5).unwrap();
        loop {
            // SAFETY: fresh anonymous mappings, unmapped below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    page,
                    if maps.len() % 2 == 0 { libc::PROT_READ } else { libc::PROT_NONE },
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                break;
            }
            maps.push(p);
        }
        report("filled", maps.len());
        // Free one: a stack's mmap then fits, its guard's mprotect split does not.
        // SAFETY: our own mapping.
        unsafe { libc::munmap(maps.pop().unwrap(), page) };
        let result = c.try_resume(());
        match &result {
            Err(e) => report("error", format!("{:?}: {e}", e.kind())),
            Ok(r) => report("error", format!("none: {r:?}")),
        }
        for p in maps.drain(..200) {
            // SAFETY: our own mapping.
            unsafe { libc::munmap(p, page) };
        }
        report("retry", format!("{:?}", c.try_resume(()).map_err(|e| e.to_string())));
    }) else {
        return;
    };
    assert!(child.output.status.success(), "{}", child.describe());
    let error = child.reported("error");
    assert!(error.starts_with("OutOfMemory") && error.contains("vm.max_map_count"), "{}", child.describe());
    assert_eq!(child.reported("retry"), "Ok(Return(5))", "{}", child.describe());
}

/// `set_thread_stack_cache_capacity(1)`: a thread keeps at most one idle
/// stack, whichever order its coroutines finish in (the fast slot counts).
#[test]
fn cache_capacity_one_keeps_one_stack_in_either_order() {
    let Some(child) = run_in_child("cache_capacity_one_keeps_one_stack_in_either_order", || {
        const SMALL: usize = 36 * 1024;
        const DEFAULT: usize = weft::coroutine::DEFAULT_STACK_SIZE;
        for small_first in [false, true] {
            let kept = std::thread::spawn(move || {
                weft::coroutine::set_thread_stack_cache_capacity(1);
                let mut a = Coroutine::<(), (), ()>::new(|y, ()| y.suspend(()));
                let mut b = Coroutine::<(), (), ()>::builder().stack_size(SMALL).build(|y, ()| y.suspend(())).unwrap();
                a.resume(());
                b.resume(());
                if small_first {
                    b.resume(());
                    a.resume(());
                } else {
                    a.resume(());
                    b.resume(());
                }
                guarded_stacks_of(SMALL) + guarded_stacks_of(DEFAULT)
            })
            .join()
            .unwrap();
            report(if small_first { "small-first" } else { "default-first" }, kept);
        }
    }) else {
        return;
    };
    assert!(child.output.status.success(), "{}", child.describe());
    assert_eq!(child.reported("default-first"), "1", "{}", child.describe());
    assert_eq!(child.reported("small-first"), "1", "capacity 1 kept two idle stacks\n{}", child.describe());
}

/// With weft's panic hook installed (a runtime was built) and backtraces
/// on, a panic on a minimum-size stack prints its report without
/// overflowing: in a generator and in a runtime coroutine.
#[test]
fn weft_panic_report_with_backtrace_fits_a_minimum_stack() {
    let Some(child) = run_in_child("weft_panic_report_with_backtrace_fits_a_minimum_stack", || {
        // SAFETY: no other thread reads the environment yet.
        unsafe { std::env::set_var("RUST_BACKTRACE", "1") };
        let rt = weft::Runtime::builder().workers(1).stack_size(MIN_STACK_SIZE).build().unwrap();
        let mut p = Coroutine::<(), (), ()>::builder()
            .stack_size(MIN_STACK_SIZE)
            .name("min-gen".into())
            .build(|_, ()| panic!("generator panic with backtrace"))
            .unwrap();
        let _ = panic::catch_unwind(AssertUnwindSafe(|| p.resume(())));
        report("generator", "survived");
        let e = rt.spawn(|| panic!("task panic with backtrace")).join().unwrap_err();
        report("task", e.is_panic());
    }) else {
        return;
    };
    assert!(child.output.status.success(), "{}", child.describe());
    assert_eq!(child.reported("generator"), "survived");
    assert_eq!(child.reported("task"), "true");
    assert!(child.stderr.contains("('min-gen') panicked at"), "{}", child.describe());
    assert!(child.stderr.contains("stack backtrace:"), "{}", child.describe());
}

/// On a worker whose stacks were used by named tasks, an unnamed task that
/// overflows is reported as unnamed, with its own id.
#[test]
fn runtime_overflow_on_a_reused_stack_names_the_new_task() {
    let Some(child) = run_in_child("runtime_overflow_on_a_reused_stack_names_the_new_task", || {
        let rt = weft::Runtime::builder().workers(1).build().unwrap();
        for i in 0..100 {
            weft::Builder::new().name(format!("old {i}")).spawn_on(&rt, weft::yield_now).unwrap().join().unwrap();
        }
        let _ = rt
            .spawn(|| {
                report("id", weft::current().id());
                recurse(0)
            })
            .join();
    }) else {
        return;
    };
    assert_eq!(child.signal(), Some(SIGABRT), "{}", child.describe());
    let start = format!("coroutine {} ('<unnamed>') overflowed its 256 KiB stack", child.reported("id"));
    assert!(child.stderr.contains(&start), "{}", child.describe());
    assert!(!child.stderr.contains("'old "), "{}", child.describe());
}
