//! `Runtime::enter`: bare spawns from a plain thread go to the entered
//! runtime, and no default runtime is started beside it.
//!
//! One test in its own binary: any bare spawn elsewhere in the same process
//! would start the default runtime and spoil the "no second runtime" check.

use std::time::Duration;
use weft::Runtime;

/// The names of this process's threads (`/proc/self/task/*/comm`).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

#[test]
fn bare_spawns_use_the_entered_runtime() {
    let rt = Runtime::builder().workers(1).build().expect("a one-worker runtime");
    let worker = format!("weft-r{}-w0", rt.id());
    {
        let _entered = rt.enter();
        let on = weft::spawn(|| std::thread::current().name().map(str::to_owned)).join().expect("ran");
        assert_eq!(on.as_deref(), Some(worker.as_str()), "weft::spawn ran on the entered runtime");
        let built = weft::Builder::new().spawn(|| std::thread::current().name().map(str::to_owned)).expect("spawned");
        assert_eq!(built.join().expect("ran").as_deref(), Some(worker.as_str()), "so did Builder::spawn");
        // spawn_blocking uses the entered runtime's pool.
        let blocking = weft::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1)));
        blocking.join().expect("ran");
        assert_eq!(rt.metrics().blocking_threads, 1, "the entered runtime's pool ran the blocking job");

        // Nested guards restore the outer one.
        let other = Runtime::builder().workers(1).build().expect("another runtime");
        let other_worker = format!("weft-r{}-w0", other.id());
        {
            let _inner = other.enter();
            let on = weft::spawn(|| std::thread::current().name().map(str::to_owned)).join().expect("ran");
            assert_eq!(on.as_deref(), Some(other_worker.as_str()), "the inner guard wins while held");
        }
        let on = weft::spawn(|| std::thread::current().name().map(str::to_owned)).join().expect("ran");
        assert_eq!(on.as_deref(), Some(worker.as_str()), "dropping the inner guard restores the outer");

        // From inside a coroutine, enter is refused with a message.
        let caught = rt
            .spawn(move || {
                let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(other.enter())));
                let payload = refused.expect_err("enter inside a coroutine panics");
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            })
            .join()
            .expect("ran");
        assert!(caught.is_some_and(|m| m.contains("inside a coroutine")), "the message says why");
    }
    let names = thread_names();
    let workers: Vec<_> = names.iter().filter(|n| n.starts_with("weft-r") && n.contains("-w")).collect();
    assert_eq!(workers, [&worker], "only the entered runtime's worker exists (no default runtime): {names:?}");
}
