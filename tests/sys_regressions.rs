//! Regressions found in a review of `src/sys` (2026-12-06), tested in child processes (each test re-executes
//! this binary filtered to itself, with `WEFT_SYS_CHILD` naming the scenario).

mod common;

use common::recurse;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Output};
use weft::coroutine::Coroutine;

const CHILD_ENV: &str = "WEFT_SYS_CHILD";

/// Runs `body` in a child process; returns the child's output in the parent.
fn run_in_child(name: &str, body: impl FnOnce()) -> Option<Output> {
    match std::env::var(CHILD_ENV) {
        Ok(scenario) if scenario == name => {
            body();
            std::process::exit(0);
        }
        Ok(_) => return None,
        Err(_) => {}
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    Some(
        Command::new(exe)
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, name)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("the test binary can be re-executed"),
    )
}

fn describe(output: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Makes weft install its SIGSEGV/SIGBUS handler (building a coroutine
/// prepares the thread's overflow reporting).
fn install_weft_fault_handler() {
    let mut c = Coroutine::<(), (), u64>::builder().stack_size(64 * 1024).build(|_, ()| 1).unwrap();
    let _ = c.resume(());
}

/// With SIGSEGV at SIG_DFL before weft, a SIGSEGV sent with kill(2) must
/// still kill the process (the default action). weft's chaining handler
/// put SIG_DFL back and returned, which for a sent (not faulted) signal
/// swallows it: the process lived on.
#[test]
fn sent_sigsegv_with_default_previous_action_still_kills() {
    let Some(out) = run_in_child("sent_sigsegv_with_default_previous_action_still_kills", || {
        // SAFETY: setting a signal's disposition to the default.
        unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) };
        install_weft_fault_handler();
        // SAFETY: plain syscalls.
        unsafe { libc::kill(libc::getpid(), libc::SIGSEGV) };
        std::thread::sleep(std::time::Duration::from_millis(500));
        println!("\nweft-child survived");
    }) else {
        return;
    };
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "the child should die by SIGSEGV\n{}", describe(&out));
}

/// With SIGSEGV at SIG_IGN before weft, a SIGSEGV sent with kill(2) is
/// ignored, and must not uninstall weft's handler: a later coroutine
/// overflow is still reported. weft put SIG_IGN back for good, so the
/// overflow died by a bare SIGSEGV without a report.
#[test]
fn sent_sigsegv_with_ignored_previous_action_keeps_overflow_report() {
    let Some(out) = run_in_child("sent_sigsegv_with_ignored_previous_action_keeps_overflow_report", || {
        // SAFETY: ignoring a signal.
        unsafe { libc::signal(libc::SIGSEGV, libc::SIG_IGN) };
        install_weft_fault_handler();
        // SAFETY: plain syscalls.
        unsafe { libc::kill(libc::getpid(), libc::SIGSEGV) };
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut c = Coroutine::<(), (), u64>::builder()
            .name("deep".to_string())
            .stack_size(64 * 1024)
            .build(|_, ()| recurse(0))
            .unwrap();
        let _ = c.resume(());
        println!("\nweft-child overflow returned");
    }) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "the overflow should be reported\n{}", describe(&out));
    assert!(stderr.contains("('deep') overflowed its 64 KiB stack"), "no overflow report\n{}", describe(&out));
}
