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

use crate::coroutine::{self, Running};
use crate::loom::process::{AtomicBool, Ordering};
use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
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

/// Writes one of weft's reports to stderr as `eprint!` does (into the
/// output capture of a test harness, if the thread has one: see "Where
/// reports go"), in one piece, so that reports from two threads do not
/// interleave.
///
/// `eprint!` panics when the write fails, and a panic inside the panic hook
/// aborts the process; std's own report ignores such a failure. So a stderr
/// whose reader is gone (a closed pipe: the write would fail with `EPIPE`,
/// SIGPIPE being ignored in Rust programs) gets nothing. Only a reader that
/// goes in the microseconds between that check and the write is left:
/// then the `eprint!` panics (in the hook, an abort).
pub(crate) fn to_stderr(text: &str) {
    if crate::sys::stderr_is_broken() {
        return;
    }
    eprint!("{text}");
}
