//! weft's own reports (a coroutine's panic, the monitor's stall report) go
//! where `eprint!` goes: under `cargo test` into the output capture of the
//! test that built the runtime, so that a passing test whose coroutine
//! panics on purpose prints nothing, and a failing test shows them with the
//! rest of its output.
//!
//! Each case re-runs this test binary on the scenario test below *without*
//! `--nocapture`, as `cargo test` runs it, and reads what reached the
//! child's stdout and stderr.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the child: the scenario runs, and fails at its end when the value
/// is `fail`.
const SCENARIO_ENV: &str = "WEFT_REPORT_CAPTURE_SCENARIO";
const PANIC_MARKER: &str = "the-capture-test-coroutine-failed";
const COROUTINE_NAME: &str = "capture-probe";

/// The scenario: a named coroutine panics (its join says so), and another
/// holds its worker for 400 ms, four times the monitor's threshold, so that
/// the monitor reports a stall and its end. Does nothing unless run as the
/// child of one of the tests below.
#[test]
fn scenario_reports_from_a_runtime() {
    let Ok(mode) = std::env::var(SCENARIO_ENV) else { return };
    if mode == "stderr-gone" {
        // Let the parent close its end of the stderr pipe first.
        std::thread::sleep(Duration::from_millis(200));
    }
    let rt = weft::Runtime::builder()
        .workers(2)
        .stall_threshold(Some(Duration::from_millis(100)))
        .build()
        .expect("a runtime");
    let handle = weft::Builder::new()
        .name(COROUTINE_NAME.to_string())
        .spawn_on(&rt, || panic!("{PANIC_MARKER}"))
        .expect("spawned");
    assert!(handle.join().is_err(), "the coroutine panicked");
    rt.spawn(|| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(400) {
            std::hint::spin_loop();
        }
    })
    .join()
    .expect("the spinner");
    // The stall's end is reported by the monitor's next round.
    std::thread::sleep(Duration::from_millis(300));
    drop(rt);
    assert_ne!(mode, "fail", "the scenario fails on purpose, so that its captured output is shown");
}

/// Runs the scenario in a child, as `cargo test` would (output captured),
/// and returns (whether it passed, its stdout and stderr together).
fn run_scenario(mode: &str) -> (bool, String) {
    let output = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args(["scenario_reports_from_a_runtime", "--exact", "--test-threads=1"])
        .env(SCENARIO_ENV, mode)
        .env_remove("RUST_TEST_NOCAPTURE")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the test binary can be re-executed");
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A passing test's coroutine panic and stall reports stay in its capture.
#[test]
fn a_passing_tests_reports_are_captured() {
    let (passed, text) = run_scenario("pass");
    assert!(passed, "the scenario passes:\n{text}");
    assert!(text.contains("1 passed"), "the scenario ran:\n{text}");
    assert!(!text.contains(PANIC_MARKER), "a passing test printed its coroutine's panic report:\n{text}");
    assert!(!text.contains(COROUTINE_NAME), "a passing test printed a report naming its coroutine:\n{text}");
    assert!(!text.contains("without yielding"), "a passing test printed the monitor's stall report:\n{text}");
}

/// A failing test shows them with its output: the reports were captured,
/// not lost. (libtest installs a panic hook of its own, so weft's report
/// here is the one line naming the coroutine before that hook's report.)
#[test]
fn a_failing_tests_reports_are_shown() {
    let (passed, text) = run_scenario("fail");
    assert!(!passed, "the scenario fails on purpose:\n{text}");
    let captured = text.split("---- scenario_reports_from_a_runtime stdout ----").nth(1).unwrap_or_else(|| {
        panic!("libtest shows no captured output for the failed scenario:\n{text}");
    });
    assert!(
        captured.contains(&format!("('{COROUTINE_NAME}') panicked")),
        "the coroutine's panic report is not in the failed test's output:\n{text}"
    );
    assert!(captured.contains(PANIC_MARKER), "the panic's payload is missing:\n{text}");
    assert!(captured.contains("without yielding"), "the monitor's stall report is missing:\n{text}");
}

/// With stderr a pipe whose reader has gone (`prog 2>&1 | head` after
/// `head` exits), a coroutine's panic and a stall are not reported, and the
/// program goes on: the write is not attempted (`eprint!` would panic on
/// its `EPIPE`, and a panic inside the panic hook aborts the process).
#[test]
fn reports_to_a_stderr_whose_reader_is_gone_are_dropped_not_fatal() {
    let mut child = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args(["scenario_reports_from_a_runtime", "--exact", "--test-threads=1", "--nocapture"])
        .env(SCENARIO_ENV, "stderr-gone")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test binary can be re-executed");
    drop(child.stderr.take());
    let mut stdout = String::new();
    child.stdout.take().expect("piped stdout").read_to_string(&mut stdout).expect("the child's stdout");
    let status = child.wait().expect("the child ends");
    assert!(status.success(), "the child did not survive its reports to a closed stderr ({status}):\n{stdout}");
    assert!(stdout.contains("1 passed"), "the scenario did not run to its end:\n{stdout}");
}
