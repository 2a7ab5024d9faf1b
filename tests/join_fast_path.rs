//! `JoinHandle::join` takes a finished coroutine's result inline and leaves
//! the wait to an out-of-line path (2026-12-06): the cases where the two
//! must still agree, from a review of that change. A join after
//! `join_timeout` already returned the result panics at the caller's line
//! (the fast path must not take a result that is gone), and a panic's
//! payload, which the join state now keeps behind one more box, comes back
//! whole through the fast path.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Runs `f`, which must panic with a message containing `expected`, and
/// returns where that panic happened (file, line) and its message.
fn panic_site(expected: &'static str, f: impl FnOnce()) -> (String, u32, String) {
    let seen: Arc<Mutex<Option<(String, u32, String)>>> = Arc::default();
    let slot = Arc::clone(&seen);
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        // Other tests of this binary may panic meanwhile: only ours counts.
        if message.contains(expected) {
            let location = info.location().expect("a panic has a location");
            *slot.lock().unwrap() = Some((location.file().to_string(), location.line(), message));
        }
    }));
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    panic::set_hook(previous);
    assert!(outcome.is_err(), "expected a panic with {expected:?}");
    seen.lock().unwrap().take().expect("the panic went through the hook")
}

#[test]
fn join_after_join_timeout_took_the_result_panics_at_the_caller() {
    let runtime = weft::Runtime::builder().workers(1).build().unwrap();
    let mut handle = runtime.spawn(|| 7u32);
    assert_eq!(handle.join_timeout(Duration::from_secs(60)).unwrap().unwrap(), 7);
    assert!(handle.is_finished());
    let line = line!() + 1;
    let (file, at, message) = panic_site("already returned by join_timeout", move || drop(handle.join()));
    assert!(file.ends_with("join_fast_path.rs") && at == line, "panicked at {file}:{at}: {message}");
}

#[test]
fn a_finished_panic_joins_with_its_payload_through_the_fast_path() {
    let runtime = weft::Runtime::builder().workers(1).build().unwrap();
    let handle = runtime.spawn(|| -> u32 { std::panic::panic_any(41u64) });
    while !handle.is_finished() {
        std::thread::yield_now();
    }
    let error = handle.join().unwrap_err();
    assert!(error.is_panic());
    assert_eq!(*error.into_panic().downcast::<u64>().unwrap(), 41);
}
