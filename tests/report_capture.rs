//! Where weft's own reports go (a coroutine's panic, the monitor's stall and
//! deadlock reports): straight to the process's stderr, whatever that is,
//! and never at the cost of the program.
//!
//! - A test that hangs under `cargo test` (output captured) still shows the
//!   monitor's deadlock report, before it is killed: through libtest's
//!   capture it would be shown only when the test ends.
//! - A stderr that cannot be written (a full disk, a pipe whose reader has
//!   gone, a non-blocking pipe that is full) loses the reports, not the
//!   process: a panic inside the panic hook (what `eprint!` does on a failed
//!   write) would abort it, and on the monitor's thread it ended the
//!   monitor.
//!
//! Each case re-runs this test binary on the scenario test below.

use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Set in the child: which scenario runs.
const SCENARIO_ENV: &str = "WEFT_REPORT_SCENARIO";
/// What a child prints on stdout when its scenario got to its end.
const SURVIVED: &str = "[the scenario survived its reports]";

/// The scenarios. Does nothing unless run as the child of a test below.
#[test]
fn scenario() {
    let Ok(mode) = std::env::var(SCENARIO_ENV) else { return };
    let rt = weft::Runtime::builder()
        .workers(2)
        .stall_threshold(Some(Duration::from_millis(100)))
        .build()
        .expect("a runtime");
    let hold_a_worker = || {
        rt.spawn(|| {
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(400) {
                std::hint::spin_loop();
            }
        })
        .join()
        .expect("the spinner");
        // The stall's end is reported by the monitor's next round.
        thread::sleep(Duration::from_millis(300));
    };
    match mode.as_str() {
        "stderr-gone" => thread::sleep(Duration::from_millis(200)), // the parent closes its end first
        "nonblocking-full" => fill_stderr_without_blocking(),
        _ => {}
    }
    if mode == "hang" {
        // A coroutine waits for a notify that never comes.
        let pair = std::sync::Arc::new((weft::sync::Mutex::new(false), weft::sync::Condvar::new()));
        let waiter = std::sync::Arc::clone(&pair);
        let handle = rt.spawn(move || {
            let mut ready = waiter.0.lock();
            while !*ready {
                ready = waiter.1.wait(ready);
            }
        });
        handle.join().expect("never: the notify never comes");
        unreachable!("the waiter was never notified");
    }
    let panicked = rt.spawn(|| panic!("a coroutine panics on purpose"));
    assert!(panicked.join().is_err(), "the coroutine panicked");
    hold_a_worker();
    // The monitor is still there to report a second stall.
    assert_eq!(monitor_threads(), 1, "the monitor thread is gone after its first report");
    hold_a_worker();
    drop(rt);
    println!("{SURVIVED}");
}

/// How many of this process's threads are a runtime's monitor.
fn monitor_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("weft-mon"))
        .count()
}

/// Makes stderr (a pipe nobody reads yet) non-blocking and fills it, so
/// that every later write fails with `EAGAIN`.
fn fill_stderr_without_blocking() {
    // SAFETY: fcntl and write on descriptor 2 with a valid buffer; only
    // the file status flags change.
    unsafe {
        let flags = libc::fcntl(libc::STDERR_FILENO, libc::F_GETFL);
        assert!(flags >= 0, "F_GETFL on stderr");
        assert_eq!(libc::fcntl(libc::STDERR_FILENO, libc::F_SETFL, flags | libc::O_NONBLOCK), 0);
        let chunk = [b'.'; 4096];
        while libc::write(libc::STDERR_FILENO, chunk.as_ptr().cast(), chunk.len()) > 0 {}
    }
}

/// The child running `mode`, as `cargo test` would run it (output captured
/// unless `nocapture`), with the given stderr.
fn start(mode: &str, nocapture: bool, stderr: Stdio) -> Child {
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command.args(["scenario", "--exact", "--test-threads=1"]);
    if nocapture {
        command.arg("--nocapture");
    }
    command
        .env(SCENARIO_ENV, mode)
        .env_remove("RUST_TEST_NOCAPTURE")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("the test binary can be re-executed")
}

/// Reads a pipe to its end on a thread of its own.
fn read_all(mut pipe: impl std::io::Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Waits for the child for at most a minute (a hang fails the test, it does
/// not hang it), and checks that it ran its scenario to the end.
fn expect_survived(mut child: Child, what: &str) {
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the child did not finish within a minute");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout.join().expect("the stdout reader");
    assert!(status.success() && stdout.contains(SURVIVED), "{what}: the child did not survive ({status}):\n{stdout}");
}

/// stderr on a full disk (`/dev/full`: every write fails with `ENOSPC`).
#[test]
fn reports_to_a_full_disk_are_lost_not_the_program() {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    expect_survived(start("full-disk", true, full.into()), "stderr on /dev/full");
}

/// stderr a pipe whose reader has gone (`prog 2>&1 | head` after `head`
/// exits: `EPIPE`, SIGPIPE being ignored in Rust programs).
#[test]
fn reports_to_a_pipe_whose_reader_is_gone_are_lost_not_the_program() {
    let mut child = start("stderr-gone", true, Stdio::piped());
    drop(child.stderr.take());
    expect_survived(child, "stderr a closed pipe");
}

/// stderr a full non-blocking pipe (`EAGAIN`).
#[test]
fn reports_to_a_full_nonblocking_pipe_are_lost_not_the_program() {
    let mut child = start("nonblocking-full", true, Stdio::piped());
    // Read nothing until the child is done: its pipe stays full.
    let stderr = child.stderr.take().expect("piped stderr");
    expect_survived(child, "stderr a full non-blocking pipe");
    drop(stderr);
}

/// Under `cargo test`'s capture, a test that hangs (it is killed after 5 s)
/// has shown the monitor's deadlock report by then.
#[test]
fn a_hanging_test_shows_the_deadlock_report() {
    let mut child = start("hang", false, Stdio::piped());
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.stderr.take().expect("piped stderr"));
    thread::sleep(Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    let text = format!("stdout:\n{}\nstderr:\n{}", stdout.join().expect("reader"), stderr.join().expect("reader"));
    assert!(
        text.contains("nothing can wake them") && text.contains("parked on Condvar"),
        "the hanging test showed no deadlock report:\n{text}"
    );
}
