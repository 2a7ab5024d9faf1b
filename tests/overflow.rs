//! Stack overflow reporting (and running out of address space for stacks),
//! tested in child processes.
//!
//! Each test re-executes this test binary, filtered to that same test, with
//! `WEFT_OVERFLOW_CHILD` naming the scenario. In the child the test body does
//! the dangerous thing (and dies); in the parent it checks how the child died
//! and what it wrote to stderr.

mod common;

use common::recurse;
use std::hint::black_box;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Output};
use weft::coroutine::{Coroutine, CoroutineResult, Yielder};

const CHILD_ENV: &str = "WEFT_OVERFLOW_CHILD";
const SIGSEGV: i32 = 11;
const SIGABRT: i32 = 6;

/// What the parent sees of a child run.
struct Child {
    output: Output,
    stdout: String,
    stderr: String,
}

impl Child {
    /// The signal that killed the child, if one did.
    fn signal(&self) -> Option<i32> {
        self.output.status.signal()
    }

    /// The value the child reported with [`report`] under `key`.
    fn reported(&self, key: &str) -> String {
        let prefix = format!("weft-child {key}=");
        self.stdout
            .lines()
            .find_map(|line| line.find(&prefix).map(|at| &line[at + prefix.len()..]))
            .unwrap_or_else(|| panic!("the child did not report {key}; stdout:\n{}", self.stdout))
            .to_string()
    }

    /// A description for assertion messages.
    fn describe(&self) -> String {
        format!("status: {:?}\nstdout:\n{}\nstderr:\n{}", self.output.status, self.stdout, self.stderr)
    }
}

/// In the parent: runs the test `name` alone in a child process and returns
/// what happened. In the child (for that scenario): runs `body`, which must
/// kill the process; if it returns, the child fails loudly.
fn run_in_child(name: &str, body: impl FnOnce()) -> Option<Child> {
    match std::env::var(CHILD_ENV) {
        Ok(scenario) if scenario == name => {
            body();
            panic!("scenario {name} returned; it should have killed the process");
        }
        // A child started for another scenario: nothing to do here.
        Ok(_) => return None,
        Err(_) => {}
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the test binary can be re-executed");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    Some(Child { output, stdout, stderr })
}

/// Child side: tells the parent a value (on stdout, on a line of its own
/// after the harness's "test ... " prefix, flushed before the process dies).
fn report(key: &str, value: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nweft-child {key}={value}").unwrap();
    out.flush().unwrap();
}

/// Recurses with frames of 64 KiB each: the first frame alone is larger than
/// a 32 KiB stack plus its guard page, so only stack probes touching every
/// page in order can hit the guard rather than jump over it.
#[inline(never)]
fn recurse_big_frames(depth: u64) -> u64 {
    let mut frame = [0u8; 65536];
    frame[(depth % 65536) as usize] = 1;
    let frame = black_box(&mut frame);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse_big_frames(depth + 1).wrapping_add(frame[65535] as u64)
}

/// The report line the overflow handler prints.
fn expected_report(id: &str, name: &str, kib: usize, line: &str) -> String {
    format!("coroutine {id} ('{name}') overflowed its {kib} KiB stack (spawned at tests/overflow.rs:{line})")
}

/// Checks that `child` died by SIGABRT after printing `expected` exactly once.
fn assert_reported_overflow(child: &Child, expected: &str) {
    assert_eq!(child.signal(), Some(SIGABRT), "the child should abort\n{}", child.describe());
    assert_eq!(child.stderr.matches(expected).count(), 1, "expected `{expected}` once\n{}", child.describe());
    assert!(!child.stderr.contains("has overflowed its stack"), "std's thread report fired too\n{}", child.describe());
}

/// Unbounded recursion in a named coroutine on a 64 KiB stack is reported
/// with the coroutine's id, name, stack size and the line of `build`.
#[test]
fn named_coroutine_overflow_is_reported() {
    let Some(child) = run_in_child("named_coroutine_overflow_is_reported", || {
        let builder = Coroutine::<(), (), u64>::builder().name("deep".to_string()).stack_size(64 * 1024);
        let (mut c, line) = (builder.build(|_, ()| recurse(0)).unwrap(), line!());
        report("id", c.id());
        report("line", line);
        c.resume(());
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "deep", 64, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
}

/// A frame larger than the whole stack (64 KiB on a 32 KiB stack) is still
/// caught in the guard page and reported, rather than writing past it.
#[test]
fn frame_larger_than_stack_is_reported() {
    let Some(child) = run_in_child("frame_larger_than_stack_is_reported", || {
        let builder = Coroutine::<(), (), u64>::builder().name("big".to_string()).stack_size(32 * 1024);
        let (mut c, line) = (builder.build(|_, ()| recurse_big_frames(0)).unwrap(), line!());
        report("id", c.id());
        report("line", line);
        c.resume(());
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "big", 32, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
}

/// After 10 000 create/finish cycles through the stack cache, a new
/// coroutine of the same size (on a reused stack) that overflows is still
/// caught, and the report names it, not a previous user of the stack.
#[test]
fn overflow_on_a_reused_stack_is_reported() {
    let Some(child) = run_in_child("overflow_on_a_reused_stack_is_reported", || {
        for i in 0..10_000u64 {
            let mut c = Coroutine::<u64, u64, u64>::builder()
                .name(format!("cycle {i}"))
                .stack_size(64 * 1024)
                .build(|y, x| y.suspend(x + 1) + recurse_a_little(8))
                .unwrap();
            assert_eq!(c.resume(i), CoroutineResult::Yield(i + 1));
            assert!(matches!(c.resume(0), CoroutineResult::Return(_)));
        }
        let builder = Coroutine::<(), (), u64>::builder().name("reused".to_string()).stack_size(64 * 1024);
        let (mut c, line) = (builder.build(|_, ()| recurse(0)).unwrap(), line!());
        report("id", c.id());
        report("line", line);
        c.resume(());
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "reused", 64, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
}

/// The same with the default stack size, whose stacks are reused through the
/// cache's fast slot: the stack's header is written once, when it is mapped,
/// and each coroutine only claims it, so the report must still name the last
/// claimant, not an earlier one.
#[test]
fn overflow_on_a_reused_default_stack_is_reported() {
    let Some(child) = run_in_child("overflow_on_a_reused_default_stack_is_reported", || {
        for i in 0..1_000u64 {
            let mut c = Coroutine::<u64, u64, u64>::builder()
                .name(format!("cycle {i}"))
                .build(|y, x| y.suspend(x + 1) + recurse_a_little(8))
                .unwrap();
            assert_eq!(c.resume(i), CoroutineResult::Yield(i + 1));
            assert!(matches!(c.resume(0), CoroutineResult::Return(_)));
        }
        let builder = Coroutine::<(), (), u64>::builder().name("reused default".to_string());
        let (mut c, line) = (builder.build(|_, ()| recurse(0)).unwrap(), line!());
        report("id", c.id());
        report("line", line);
        c.resume(());
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "reused default", 256, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
}

/// Uses a few frames of stack (so a cached stack has touched pages).
#[inline(never)]
fn recurse_a_little(depth: u64) -> u64 {
    let frame = black_box([depth as u8; 256]);
    if depth == 0 { frame[0] as u64 } else { recurse_a_little(depth - 1) + frame[1] as u64 }
}

/// A coroutine without a name (made with `Coroutine::new`, so the default
/// stack size) is reported as `'<unnamed>'` at the `new` call's line.
#[test]
fn unnamed_coroutine_overflow_is_reported() {
    let Some(child) = run_in_child("unnamed_coroutine_overflow_is_reported", || {
        let (mut c, line) = (Coroutine::<(), (), u64>::new(|_, ()| recurse(0)), line!());
        report("id", c.id());
        report("line", line);
        report("kib", c.stack_size() / 1024);
        c.resume(());
    }) else {
        return;
    };
    let kib: usize = child.reported("kib").parse().unwrap();
    assert_eq!(kib * 1024, weft::coroutine::DEFAULT_STACK_SIZE);
    let expected = expected_report(&child.reported("id"), "<unnamed>", kib, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
}

/// With coroutines nested (outer resumes inner, inner suspends), the
/// overflow of the innermost running coroutine is reported under its own
/// name, not its resumer's.
#[test]
fn nested_inner_overflow_names_the_inner_coroutine() {
    let Some(child) = run_in_child("nested_inner_overflow_names_the_inner_coroutine", || {
        let mut outer = Coroutine::<(), (), ()>::builder()
            .name("outer".to_string())
            .stack_size(64 * 1024)
            .build(|_, ()| {
                let builder = Coroutine::<(), (), u64>::builder().name("inner".to_string()).stack_size(48 * 1024);
                let (mut inner, line) = (builder.build(|_, ()| recurse(0)).unwrap(), line!());
                report("id", inner.id());
                report("line", line);
                inner.resume(());
            })
            .unwrap();
        outer.resume(());
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "inner", 48, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
    assert!(!child.stderr.contains("'outer'"), "{}", child.describe());
}

/// Three deep, on a runtime: a named coroutine of the runtime (a task, with
/// other tasks parked on its worker) resumes a generator, which resumes
/// another that overflows. The innermost one is named, not the generator
/// that resumed it nor the task, although all three stacks (and the parked
/// tasks' stacks) are started on that thread.
#[test]
fn overflow_in_a_generator_driven_by_a_task_names_the_innermost_coroutine() {
    let Some(child) = run_in_child("overflow_in_a_generator_driven_by_a_task_names_the_innermost_coroutine", || {
        let rt = weft::Runtime::builder().workers(1).build().unwrap();
        let parked: Vec<_> = (0..20).map(|_| rt.spawn(|| weft::sleep(std::time::Duration::from_secs(3600)))).collect();
        let task = weft::Builder::new()
            .name("task".to_string())
            .spawn_on(&rt, || {
                let mut middle = Coroutine::<(), (), ()>::builder()
                    .name("middle".to_string())
                    .stack_size(64 * 1024)
                    .build(|_, ()| {
                        let builder =
                            Coroutine::<(), (), u64>::builder().name("innermost".to_string()).stack_size(40 * 1024);
                        let (mut inner, line) = (builder.build(|_, ()| recurse(0)).unwrap(), line!());
                        report("id", inner.id());
                        report("line", line);
                        inner.resume(());
                    })
                    .unwrap();
                middle.resume(());
            })
            .unwrap();
        let _ = task.join();
        drop(parked);
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "innermost", 40, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
    assert!(!child.stderr.contains("'middle'") && !child.stderr.contains("'task'"), "{}", child.describe());
}

/// After an inner coroutine suspends back to its resumer, an overflow in the
/// resumer (itself a coroutine) is reported under the resumer's name: the
/// "current coroutine" is restored when the inner one switches out.
#[test]
fn outer_overflow_after_nested_resume_names_the_outer_coroutine() {
    let Some(child) = run_in_child("outer_overflow_after_nested_resume_names_the_outer_coroutine", || {
        fn outer_body(_: &Yielder<(), ()>, (): ()) -> u64 {
            let mut inner = Coroutine::<(), (), ()>::builder()
                .name("inner".to_string())
                .stack_size(64 * 1024)
                .build(|y, ()| y.suspend(()))
                .unwrap();
            assert_eq!(inner.resume(()), CoroutineResult::Yield(()));
            let result = recurse(0);
            drop(inner);
            result
        }
        let builder = Coroutine::<(), (), u64>::builder().name("outer".to_string()).stack_size(64 * 1024);
        let (mut outer, line) = (builder.build(outer_body).unwrap(), line!());
        report("id", outer.id());
        report("line", line);
        outer.resume(());
    }) else {
        return;
    };
    let expected = expected_report(&child.reported("id"), "outer", 64, &child.reported("line"));
    assert_reported_overflow(&child, &expected);
    assert!(!child.stderr.contains("'inner'"), "{}", child.describe());
}

/// A fault that is not in a guard page (a null write inside a coroutine)
/// is not mistaken for an overflow: it goes on to the previous handler and
/// the process dies by SIGSEGV as it would without weft.
#[test]
fn null_write_in_coroutine_is_a_plain_segfault() {
    let Some(child) = run_in_child("null_write_in_coroutine_is_a_plain_segfault", || {
        let mut c = Coroutine::<(), (), ()>::builder()
            .name("nullwriter".to_string())
            .stack_size(64 * 1024)
            .build(|_, ()| {
                let p = black_box(std::ptr::null_mut::<u64>());
                report("writing", "null");
                // SAFETY: not safe at all: this writes through a null
                // pointer on purpose, to check the process dies by SIGSEGV.
                unsafe { std::ptr::write_volatile(p, 1) };
            })
            .unwrap();
        c.resume(());
    }) else {
        return;
    };
    assert_eq!(child.reported("writing"), "null");
    assert_eq!(child.signal(), Some(SIGSEGV), "the child should die by SIGSEGV\n{}", child.describe());
    assert!(!child.stderr.contains("overflowed"), "{}", child.describe());
}

/// An overflow of an OS thread's own stack (outside any coroutine, after
/// weft's handler was installed on this and that thread) still reaches std's
/// handler, which prints its own report: weft chains to it.
#[test]
fn thread_stack_overflow_still_reaches_std_handler() {
    let Some(child) = run_in_child("thread_stack_overflow_still_reaches_std_handler", || {
        // Taking a coroutine stack installs weft's fault handler.
        let mut c = Coroutine::<(), (), u32>::new(|_, ()| 1);
        assert_eq!(c.resume(()), CoroutineResult::Return(1));
        let handle = std::thread::Builder::new()
            .name("small-thread".to_string())
            .stack_size(128 * 1024)
            .spawn(|| {
                // A coroutine on this thread too, suspended while the thread
                // overflows its own stack.
                let mut here = Coroutine::<(), (), ()>::new(|y, ()| y.suspend(()));
                assert_eq!(here.resume(()), CoroutineResult::Yield(()));
                report("recursing", "yes");
                let result = recurse(0);
                drop(here);
                result
            })
            .unwrap();
        let _ = handle.join();
    }) else {
        return;
    };
    assert_eq!(child.reported("recursing"), "yes");
    assert_eq!(child.signal(), Some(SIGABRT), "std aborts after its report\n{}", child.describe());
    assert!(
        // std prints `thread '<name>' has overflowed its stack`, newer
        // versions with ` (<tid>)` after the name.
        child
            .stderr
            .lines()
            .any(|line| line.starts_with("thread 'small-thread'") && line.ends_with("has overflowed its stack")),
        "std's report is missing\n{}",
        child.describe()
    );
    assert!(!child.stderr.contains("coroutine "), "weft claimed a thread overflow\n{}", child.describe());
}

/// Running out of address space for a stack is an `io::Error` from
/// `try_resume` (never a crash) that says so (and does not blame
/// `vm.max_map_count`): the coroutine stays unstarted, its input is
/// dropped, and it can be retried once space is freed, or dropped (its
/// captures dropped once). Runs in a child because it uses up the
/// process's address space.
#[test]
fn try_resume_reports_address_space_exhaustion() {
    let Some(child) = run_in_child("try_resume_reports_address_space_exhaustion", || {
        use std::cell::Cell;
        use std::rc::Rc;
        struct Counted(Rc<Cell<u32>>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        // Stacks of almost 64 TiB: two of them cannot fit in the 128 TiB of
        // user address space.
        let huge = (1usize << 46) - 2 * 4096;
        let drops = Rc::new(Cell::new(0));
        let mut live = Vec::new();
        let (mut failed, error) = loop {
            let captured = Counted(drops.clone());
            let mut c = Coroutine::<Counted, (), u32>::builder()
                .stack_size(huge)
                .build(move |y, input| {
                    let _captured = captured;
                    drop(input);
                    y.suspend(());
                    7
                })
                .expect("the size is valid");
            match c.try_resume(Counted(drops.clone())) {
                Ok(result) => {
                    assert_eq!(result, CoroutineResult::Yield(()));
                    live.push(c);
                    assert!(live.len() < 4, "four 64 TiB stacks were mapped");
                }
                Err(error) => break (c, error),
            }
        };
        report("started", live.len());
        report("kind", format!("{:?}", error.kind()));
        report("message", &error);
        assert!(!failed.is_started());
        // The failed resume dropped its input; each started coroutine
        // dropped its own.
        let started = live.len() as u32;
        assert_eq!(drops.get(), 1 + started);
        if started > 0 {
            // Free the address space (unwinding each started coroutine drops
            // its captures), then the same coroutine starts.
            drop(live);
            assert_eq!(drops.get(), 1 + 2 * started);
            assert_eq!(failed.resume(Counted(drops.clone())), CoroutineResult::Yield(()));
            report("retried", "ok");
            assert_eq!(failed.resume(Counted(drops.clone())), CoroutineResult::Return(7));
            // Its two inputs and its captures.
            assert_eq!(drops.get(), 1 + 2 * started + 3);
        } else {
            drop(failed);
            assert_eq!(drops.get(), 2, "the unstarted coroutine's captures are dropped once");
            report("retried", "none started");
        }
        report("done", "yes");
        std::process::exit(0);
    }) else {
        return;
    };
    assert!(child.output.status.success(), "{}", child.describe());
    assert_eq!(child.reported("done"), "yes");
    assert_eq!(child.reported("kind"), "OutOfMemory", "{}", child.describe());
    // Address space ran out, not memory maps: the sysctl is not blamed.
    let message = child.reported("message");
    assert!(message.contains("address space"), "{}", child.describe());
    assert!(!message.contains("vm.max_map_count"), "{}", child.describe());
    if child.reported("started") != "0" {
        assert_eq!(child.reported("retried"), "ok");
    }
}
