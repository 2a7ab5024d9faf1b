//! Panic reports that name the coroutine.
//!
//! std's panic hook names the OS thread (`thread 'weft-r1-w0' panicked`),
//! which says nothing about which of the thousands of coroutines on that
//! worker failed. When the first runtime is built, weft chains a hook in
//! front of whatever hook is installed then:
//!
//! ```text
//!  panic happens ...              previous hook is std's default    previous hook is the user's
//!  -----------------------------  --------------------------------  -------------------------------
//!  outside any coroutine          the previous hook, untouched      the previous hook, untouched
//!  inside a coroutine             weft's report in std's format,    one line naming the coroutine,
//!                                 naming the coroutine instead of   then the user's hook
//!                                 the thread (and backtrace as
//!                                 RUST_BACKTRACE asks)
//! ```
//!
//! Whether the previous hook is std's default is read off when the hook is
//! chained: `take_hook` hands out the installed hook and leaves the default
//! in its place, so a second `take_hook` returns the default itself, and the
//! two are the same hook exactly when no other hook was installed. (If that
//! comparison ever fails to see the default, the report falls back to the
//! right-hand column: one naming line, then std's own report. Nothing is
//! lost either way.) A hook the user installs *after* the first runtime
//! replaces weft's, as `set_hook` always does.
//!
//! # Where reports go
//!
//! Every report weft writes on its own (these, and the monitor's stall and
//! deadlock reports) goes through [`to_stderr`]: straight to the process's
//! stderr, in one write, ignoring a failed write as std's own report does.
//! Not through `eprint!`, although that is what a test harness's output
//! capture (libtest's) would hold:
//!
//! - `eprint!` panics when the write fails (a full disk, a non-blocking
//!   stderr whose pipe is full, a reader gone), and a panic inside the
//!   panic hook aborts the process (on the monitor's thread, it ended the
//!   monitor);
//! - a captured report is shown only when its test *ends*: the monitor's
//!   deadlock report matters most in a test that hangs, and would be lost
//!   with it when the test is killed.
//!
//! The price: under `cargo test`, a passing test whose coroutine panics on
//! purpose prints that coroutine's report (tests/report_capture.rs pins
//! all three behaviours).

use crate::coroutine::{self, Running};
use crate::loom::process::{AtomicBool, Ordering};
use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::io::Write as _;
use std::panic::{self, PanicHookInfo};
use std::sync::Once;

/// Chains weft's hook in front of the installed one (once per process).
pub(crate) fn install() {
    static CHAINED: Once = Once::new();
    // `take_hook` panics while the thread panics (a first runtime built in
    // a destructor during unwinding): chain at the next build instead.
    if std::thread::panicking() {
        return;
    }
    CHAINED.call_once(|| {
        let previous = panic::take_hook();
        let default = panic::take_hook();
        // Both boxes hold the same zero-sized function when `previous` is
        // the default: equal (dangling) data pointers and the same vtable.
        let previous_is_default = std::ptr::eq(&*previous, &*default);
        drop(default);
        panic::set_hook(Box::new(move |info| {
            let hint = super::current_stack_hint();
            // SAFETY: the hint is the running task's stack, which its body
            // stops naming before the stack can go (`Task::stack_hint`).
            unsafe {
                coroutine::with_running(hint, |running| match running {
                    None => previous(info),
                    Some(running) if previous_is_default => report(&running, info),
                    Some(running) => {
                        to_stderr(&format!("{} panicked:\n", describe(&running)));
                        previous(info);
                    }
                })
            };
        }));
    });
}

/// `coroutine 7 ('updater')`, or `coroutine 7` without a name.
fn describe(running: &Running<'_>) -> String {
    match running.name {
        Some(name) => format!("coroutine {} ('{name}')", running.id),
        None => format!("coroutine {}", running.id),
    }
}

/// The text of a panic's payload, as std's hook shows it.
fn payload_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "Box<dyn Any>"
    }
}

/// std's default report, with the coroutine in place of the thread.
fn report(running: &Running<'_>, info: &PanicHookInfo<'_>) {
    static NOTE_SHOWN: AtomicBool = AtomicBool::new(false);
    let location = info.location().map_or_else(|| "<unknown>".to_string(), ToString::to_string);
    let backtrace = Backtrace::capture();
    let mut text = format!(
        "{} panicked at {location}:\n{}\nnote: the coroutine was spawned at {}\n",
        describe(running),
        payload_text(info.payload()),
        running.spawned_at,
    );
    match backtrace.status() {
        BacktraceStatus::Captured => text.push_str(&format!("stack backtrace:\n{backtrace}\n")),
        // As std: the hint once per process.
        BacktraceStatus::Disabled if !NOTE_SHOWN.swap(true, Ordering::Relaxed) => {
            text.push_str("note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n");
        }
        _ => {}
    }
    // One write, so that reports of panics on two workers do not interleave.
    to_stderr(&text);
}

/// Writes one of weft's reports to stderr, in one write, so that reports
/// from two threads do not interleave; a failed write is ignored (see
/// "Where reports go").
pub(crate) fn to_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
