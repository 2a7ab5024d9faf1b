//! `spawn_blocking`: a pool of OS threads for work that would stall a worker
//! (blocking system calls, long computations, `std::thread::sleep`).
//!
//! The caller gets a [`JoinHandle`](super::JoinHandle); joining it from a
//! coroutine parks only that coroutine, so the worker keeps running others
//! (DESIGN.md decision 7). The pool starts empty, starts a thread when a job
//! arrives and no thread is idle (up to [`MAX_THREADS`]; beyond that jobs
//! queue), and an idle thread exits after [`KEEP_ALIVE`]. The pool's threads
//! are plain OS threads: the job runs outside any coroutine.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The most threads one pool runs at once.
pub(crate) const MAX_THREADS: usize = 512;
/// How long an idle pool thread waits for a job before it exits.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    shutdown: bool,
    /// Whether a thread that could not start was reported on stderr (once
    /// per pool, that is per runtime).
    start_failure_reported: bool,
}

/// What [`BlockingPool::stats`] returns.
pub(crate) struct BlockingStats {
    pub(crate) threads: usize,
    pub(crate) running: usize,
    pub(crate) queued: usize,
}

/// A pool of threads for blocking jobs.
#[derive(Default)]
pub(crate) struct BlockingPool {
    state: Mutex<State>,
    job_ready: Condvar,
}

impl BlockingPool {
    /// Queues `job`; wakes an idle thread for it, or starts one if every
    /// idle thread is already spoken for and the cap allows.
    pub(crate) fn submit(self: &Arc<Self>, job: Job) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.jobs.push_back(job);
        // `idle` counts threads waiting on `job_ready`, including ones
        // already notified that have not taken the lock yet; each takes one
        // job when it does. So a wake suffices only while there are at least
        // as many idle threads as queued jobs: with one idle thread, a second
        // job submitted before it woke would otherwise wait until the first
        // job finished (forever, if the first waits for the second).
        if state.idle >= state.jobs.len() || state.threads >= MAX_THREADS {
            drop(state);
            self.job_ready.notify_one();
            return;
        }
        {
            state.threads += 1;
            let id = state.threads;
            drop(state);
            let pool = Arc::clone(self);
            let started =
                std::thread::Builder::new().name(format!("weft-blocking-{id}")).spawn(move || pool.thread_main());
            if let Err(e) = started {
                // The job stays queued for a thread that exists, if any.
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.threads -= 1;
                tracing::warn!(error = %e, "cannot start a blocking-pool thread");
                if !std::mem::replace(&mut state.start_failure_reported, true) {
                    eprintln!(
                        "weft: cannot start a spawn_blocking thread: {e}; the process may be at its limit of \
                         threads (ulimit -u, kernel.threads-max, a cgroup's pids.max). Jobs wait for one of the \
                         pool's {} thread{} to come free (or run on the calling thread when the pool has none); \
                         each later job tries to start a thread again. (Reported once.)",
                        state.threads,
                        if state.threads == 1 { "" } else { "s" },
                    );
                }
                if state.threads == 0 {
                    let job = state.jobs.pop_back();
                    drop(state);
                    // Nobody can run it: run it here rather than lose it.
                    if let Some(job) = job {
                        job();
                    }
                }
            }
        }
    }

    fn thread_main(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                // A job catches its closure's panic, and a destructor's that
                // panics as it frees the job's cell; should anything else
                // unwind out of it, the thread must still give its place in
                // `threads` back below, or the pool would count a thread that
                // is gone (after `MAX_THREADS` of them, every later job would
                // wait for ever). The panic hook has reported it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            if state.shutdown {
                break;
            }
            state.idle += 1;
            let (next, timeout) = self.job_ready.wait_timeout(state, KEEP_ALIVE).unwrap_or_else(|e| e.into_inner());
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.jobs.is_empty() {
                break;
            }
        }
        state.threads -= 1;
    }

    /// Threads, running jobs and queued jobs, now (for metrics and the
    /// monitor's deadlock hint).
    pub(crate) fn stats(&self) -> BlockingStats {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        BlockingStats {
            threads: state.threads,
            running: state.threads.saturating_sub(state.idle),
            queued: state.jobs.len(),
        }
    }

    /// Lets idle threads exit; running jobs finish on their own.
    pub(crate) fn shutdown(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).shutdown = true;
        self.job_ready.notify_all();
    }
}
