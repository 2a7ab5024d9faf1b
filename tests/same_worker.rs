//! `Builder::same_worker`: coroutines that start on their spawner's worker
//! and nowhere else, however idle the other workers are; what a dump, a
//! cancel and a shutdown make of them before they start; and the error
//! when there is no spawner's worker to stay on.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use weft::sync::Mutex;
use weft::{Builder, CoroutineState, JoinErrorKind, Runtime};

fn pinned<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> weft::JoinHandle<T> {
    Builder::new().same_worker(true).spawn(f).expect("spawned from a coroutine of the runtime")
}

/// Many rounds of coroutines spawned with the option while the spawner
/// parks in `join` (its worker then has nothing else to do, and the other
/// three workers are idle and would steal plain spawns): every one runs on
/// the spawner's thread, and none is counted as stolen. A control batch of
/// plain spawns, spawned the same way, is taken by other workers, so the
/// assertion can fail: its spawner holds its worker until one was stolen
/// (30 s at most), so that this does not depend on the idle workers'
/// threads getting a CPU in time on a loaded machine.
#[test]
fn coroutines_spawned_with_same_worker_run_only_on_the_spawners_worker() {
    let runtime = Runtime::builder().workers(4).build().expect("worker threads");
    let (pinned_threads, plain_elsewhere, steals_pinned, steals_plain) = runtime.block_on(|| {
        let steals = || runtime.metrics().total.steals;
        let steals_before = steals();
        let here = std::thread::current().id();
        let mut pinned_threads = HashSet::new();
        for _ in 0..50 {
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    pinned(|| {
                        // Long enough that idle workers would take the rest.
                        std::thread::sleep(Duration::from_micros(200));
                        weft::yield_now();
                        std::thread::current().id()
                    })
                })
                .collect();
            pinned_threads.extend(tasks.into_iter().map(|t| t.join().expect("no panic")));
        }
        let steals_pinned = steals() - steals_before;
        let elsewhere = Arc::new(AtomicUsize::new(0));
        let plain: Vec<_> = (0..64)
            .map(|_| {
                let elsewhere = Arc::clone(&elsewhere);
                weft::spawn(move || {
                    std::thread::sleep(Duration::from_micros(200));
                    if std::thread::current().id() != here {
                        elsewhere.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::current().id()
                })
            })
            .collect();
        // Hold this worker (without switching out, so its queue stays
        // full) until another worker has stolen one and run it (30 s at
        // most): the control batch must not depend on the idle workers'
        // threads getting a CPU within the batch's 13 ms of work.
        let holding = Instant::now();
        while (elsewhere.load(Ordering::SeqCst) == 0 || steals() - steals_before - steals_pinned == 0)
            && holding.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let plain_threads: HashSet<_> = plain.into_iter().map(|t| t.join().expect("no panic")).collect();
        assert_eq!(pinned_threads, HashSet::from([here]), "a same_worker coroutine ran on another worker");
        // (Not "more than one thread": the thieves may take the whole batch.)
        let plain_elsewhere = plain_threads.iter().filter(|thread| **thread != here).count();
        (pinned_threads.len(), plain_elsewhere, steals_pinned, steals() - steals_before - steals_pinned)
    });
    assert_eq!(pinned_threads, 1);
    assert_eq!(steals_pinned, 0, "another worker stole a same_worker coroutine");
    assert!(plain_elsewhere > 0, "the control batch of plain spawns never left the spawner's worker");
    assert!(steals_plain > 0, "the control batch of plain spawns was never stolen");
}

/// The option works with the locks it is meant for: four coroutines on one
/// worker of two increment one Mutex, every hundredth time yielding while
/// they hold it, so that the others find it locked and park on it (on one
/// worker nothing else could contend). Nothing is lost, all ran on the
/// spawner's thread, and the lock was contended.
#[test]
fn a_contended_mutex_on_one_worker_loses_no_increment() {
    let runtime = Runtime::builder().workers(2).build().expect("worker threads");
    let (total, threads, parks) = runtime.block_on(|| {
        let counter = Arc::new(Mutex::new(0u64));
        let parks_before = runtime.metrics().total.parks;
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let counter = Arc::clone(&counter);
                pinned(move || {
                    for i in 0..20_000 {
                        let mut guard = counter.lock();
                        *guard += 1;
                        if i % 100 == 0 {
                            weft::yield_now();
                        }
                    }
                    std::thread::current().id()
                })
            })
            .collect();
        let threads: HashSet<_> = tasks.into_iter().map(|t| t.join().expect("no panic")).collect();
        let parks = runtime.metrics().total.parks - parks_before;
        (*counter.lock(), threads, parks)
    });
    assert_eq!(total, 80_000);
    assert_eq!(threads.len(), 1, "they ran on one worker: {threads:?}");
    // Each yield under the lock lets the other three try it and park: far
    // more parks than the spawner's one join at a time.
    assert!(parks >= 200, "the Mutex was hardly contended: {parks} parks");
}

/// Outside a coroutine, and from a coroutine of another runtime, there is
/// no worker of the target runtime to stay on: a clear error, and nothing
/// is spawned.
#[test]
fn same_worker_needs_a_coroutine_of_the_target_runtime() {
    let runtime = Runtime::builder().workers(1).build().expect("a worker thread");
    let ran = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&ran);
    let error = Builder::new()
        .same_worker(true)
        .spawn_on(&runtime, move || counted.fetch_add(1, Ordering::SeqCst))
        .expect_err("an OS thread has no worker to stay on");
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("same_worker"), "{error}");

    let other = Runtime::builder().workers(1).build().expect("a worker thread");
    let runtime = Arc::new(runtime);
    let target = Arc::clone(&runtime);
    let counted = Arc::clone(&ran);
    let kind = other.block_on(move || {
        Builder::new()
            .same_worker(true)
            .spawn_on(&target, move || counted.fetch_add(1, Ordering::SeqCst))
            .map(drop)
            .expect_err("a coroutine of another runtime has no worker of this one")
            .kind()
    });
    assert_eq!(kind, io::ErrorKind::InvalidInput);
    // Leaving the option off works from both places.
    let counted = Arc::clone(&ran);
    Builder::new().spawn_on(&runtime, move || counted.fetch_add(1, Ordering::SeqCst)).unwrap().join().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 1, "only the spawn without the option ran");
}

/// Before they start, the dump lists them as unstarted on the spawner's
/// worker; a cancel before they start ends them as cancelled without
/// running them.
#[test]
fn unstarted_same_worker_coroutines_are_dumped_and_cancellable() {
    let runtime = Arc::new(Runtime::builder().workers(2).build().expect("worker threads"));
    let dumping = Arc::clone(&runtime);
    let ran = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&ran);
    runtime.block_on(move || {
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let counted = Arc::clone(&counted);
                pinned(move || counted.fetch_add(1, Ordering::SeqCst))
            })
            .collect();
        // Cancelled before this coroutine first switches out (the dump may
        // wait for the other worker's answer, and this worker would then
        // start them).
        tasks[1].cancel();
        // This coroutine has not switched out since it spawned them: none
        // has started.
        let dump = dumping.dump();
        let me = dump.coroutine(weft::current().id()).expect("the dumping coroutine is listed");
        for task in &tasks {
            let listed = dump.coroutine(task.id()).expect("an unstarted same_worker coroutine is listed");
            assert_eq!(listed.state(), CoroutineState::Unstarted, "{dump}");
            assert_eq!(listed.worker(), me.worker(), "listed on the spawner's worker");
        }
        let results: Vec<_> = tasks.into_iter().map(|t| t.join()).collect();
        assert!(results[0].is_ok() && results[2].is_ok());
        let error = results[1].as_ref().expect_err("cancelled before it started");
        assert_eq!(error.kind(), JoinErrorKind::Cancelled);
    });
    assert_eq!(ran.load(Ordering::SeqCst), 2, "the cancelled one never ran");
}

/// A runtime dropped while coroutines spawned with the option wait to
/// start: it does not hang, they never run, and their join handles end
/// with the shutdown error. There are more of them than the worker goes
/// through between two looks at the shutdown flag, so some are failed as
/// the worker takes them and the rest when it empties its run queue on the
/// way out. Joined from another thread with a timeout, so that a handle
/// that is never completed fails the test instead of hanging it.
#[test]
fn shutdown_fails_unstarted_same_worker_coroutines() {
    let runtime = Runtime::builder().workers(2).build().expect("worker threads");
    let ran = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&ran);
    let (handles_tx, handles_rx) = std::sync::mpsc::channel();
    let dropping = Arc::new(AtomicBool::new(false));
    let dropping_seen = Arc::clone(&dropping);
    let spawner = runtime.spawn(move || {
        let tasks: Vec<_> = (0..500)
            .map(|_| {
                let counted = Arc::clone(&counted);
                pinned(move || counted.fetch_add(1, Ordering::SeqCst))
            })
            .collect();
        handles_tx.send(tasks).expect("the test thread waits for the handles");
        // Keep the worker (the only one that may start them) busy until
        // the runtime is shutting down: until the test thread is about to
        // drop it (30 s at most), and then 300 ms more, for `Runtime::drop`
        // to set its shutdown flag (its first store).
        let waiting = Instant::now();
        while !dropping_seen.load(Ordering::SeqCst) && waiting.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(300));
    });
    let tasks = handles_rx.recv().expect("the spawner sends its handles");
    dropping.store(true, Ordering::SeqCst);
    drop(runtime);
    spawner.join().expect("the spawner finished before the workers stopped");
    let joiner = std::thread::spawn(move || {
        tasks
            .into_iter()
            .map(|mut task| match task.join_timeout(Duration::from_secs(30)) {
                Some(result) => result.expect_err("never started").kind(),
                None => panic!("coroutine {} was never failed: its join handle would hang", task.id()),
            })
            .collect::<Vec<_>>()
    });
    let kinds = joiner.join().expect("every join handle ended");
    assert_eq!(kinds.len(), 500);
    assert!(kinds.iter().all(|kind| *kind == JoinErrorKind::Shutdown), "{kinds:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

/// A worker thread between two resumes runs no coroutine to stay beside:
/// a closure dropped there (a coroutine cancelled before it started) that
/// tries a `same_worker` spawn gets the error, as an OS thread would.
#[test]
fn same_worker_is_refused_on_a_worker_thread_outside_any_coroutine() {
    struct SpawnOnDrop(std::sync::mpsc::Sender<io::Result<()>>);
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            let result = Builder::new().same_worker(true).spawn(|| ()).map(drop);
            let _ = self.0.send(result);
        }
    }
    let runtime = Runtime::builder().workers(1).build().expect("a worker thread");
    let (tx, rx) = std::sync::mpsc::channel();
    runtime.block_on(move || {
        let guard = SpawnOnDrop(tx);
        let task = weft::spawn(move || drop(guard));
        task.cancel();
        let error = task.join().expect_err("cancelled before it started");
        assert_eq!(error.kind(), JoinErrorKind::Cancelled);
    });
    let result = rx.recv_timeout(Duration::from_secs(10)).expect("the closure was dropped");
    let error = result.expect_err("no coroutine ran on the worker thread when the closure was dropped");
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
}
