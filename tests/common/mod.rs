//! What the integration tests share: running a scenario in a child process
//! (this test binary re-executed) and reading a process's or a thread's CPU
//! use. Mounted by each test file with `mod common;` (a directory module,
//! so Cargo does not build it as a test of its own).

#![allow(dead_code)] // each test file uses the parts it needs

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Names the scenario (the test) a re-executed copy of a test binary runs.
const CHILD_ENV: &str = "WEFT_TEST_CHILD";

/// What a child prints on stdout when its scenario ran to its end; a child
/// that ends with `std::process::exit` prints it itself first (it then
/// prints no test summary).
pub const CHILD_DONE: &str = "[weft-test: child done]";

/// Runs `body` in a child process (this test binary re-executed, filtered to
/// the test `name`, with `env` set) and returns the child's stderr to the
/// parent; in the child, runs `body` and returns `None`. The parent holds
/// `serial` meanwhile (the child's timing must not share the machine with
/// the parent's other tests), reads both pipes as the child writes (a
/// chatty child must not block on a full pipe), and fails if the child
/// fails, takes longer than `limit` (it is killed), or did not reach the
/// end of `body`.
pub fn in_child_process(
    serial: &Mutex<()>,
    name: &str,
    env: &[(&str, &str)],
    limit: Duration,
    body: impl FnOnce(),
) -> Option<String> {
    if std::env::var(CHILD_ENV).is_ok_and(|scenario| scenario == name) {
        body();
        println!("{CHILD_DONE}");
        return None;
    }
    let _serial = serial.lock().unwrap_or_else(|e| e.into_inner());
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env("RUST_BACKTRACE", "0")
        .env_remove("WEFT_DUMP_SIGNAL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("the test binary can be re-executed");
    let mut stdout_pipe = child.stdout.take().expect("piped stdout");
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let stdout = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout_pipe.read_to_string(&mut text);
        text
    });
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break Some(status);
        }
        if started.elapsed() > limit {
            child.kill().expect("killing the child");
            child.wait().expect("reaping the child");
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout.join().expect("the stdout reader");
    let stderr = stderr.join().expect("the stderr reader");
    match status {
        Some(status) if status.success() => assert!(
            stdout.contains(CHILD_DONE),
            "the child ran no test named {name:?} to its end\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ),
        Some(status) => panic!("the child failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"),
        None => {
            panic!("the child did not finish within {limit:?} and was killed\nstdout:\n{stdout}\nstderr:\n{stderr}")
        }
    }
    Some(stderr)
}

/// CPU time (user + system) used so far by the whole process.
pub fn process_cpu_time() -> Duration {
    // SAFETY: `rusage` is plain data, for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF is a valid `who`, and `usage` is a valid, writable
    // rusage that outlives the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed: {}", std::io::Error::last_os_error());
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// (CPU nanoseconds, voluntary + involuntary context switches) of thread `tid`.
pub fn thread_activity(tid: u32) -> (u64, u64) {
    let schedstat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).expect("schedstat");
    let cpu_ns = schedstat.split_whitespace().next().and_then(|f| f.parse().ok()).expect("schedstat field 1");
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).expect("status");
    let switches = status
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    (cpu_ns, switches)
}

/// The kernel's id of the calling thread (`gettid(2)`): a syscall, so no
/// compiler can cache it across a coroutine switch.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}

pub mod net;

/// Recurses until the stack runs out; each frame holds 256 bytes the
/// optimiser cannot remove.
#[inline(never)]
pub fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 256];
    frame[(depth % 256) as usize] = depth as u8;
    let frame = std::hint::black_box(&mut frame);
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(frame[3] as u64)
}

/// Runs `body` on a helper thread and fails the test if it takes longer
/// than `limit` (a hang becomes a failure with a message); a panic in
/// `body` fails the test with its payload.
pub fn watched(limit: Duration, body: impl FnOnce() + Send + 'static) {
    let started = Instant::now();
    let runner = thread::Builder::new().name("test-body".into()).spawn(body).expect("a test-body thread");
    while !runner.is_finished() {
        assert!(started.elapsed() < limit, "the test body did not finish within {limit:?} (hang?)");
        thread::sleep(Duration::from_millis(5));
    }
    if let Err(payload) = runner.join() {
        std::panic::resume_unwind(payload);
    }
}

/// Waits (30 s at most) until coroutine `id` of `rt` is parked in a channel
/// receive or a select, as `rt.dump()` shows it.
#[track_caller]
pub fn wait_parked_in_recv(rt: &weft::Runtime, id: u64) {
    let started = Instant::now();
    loop {
        if let Some(weft::CoroutineState::Parked {
            on: weft::ParkedOn::ChannelRecv(_) | weft::ParkedOn::Select(_),
            ..
        }) = rt.dump().coroutine(id).map(|c| c.state())
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "coroutine {id} never parked in a receive\n{}", rt.dump());
        thread::sleep(Duration::from_millis(2));
    }
}
