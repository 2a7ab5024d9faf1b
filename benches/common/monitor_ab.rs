//! Monitor on against off, interleaved (mounted by the `runtime` and `sync`
//! benches with `#[path]`): a runtime with the monitor thread
//! (`stall_threshold` 100 ms) and one without, each given the same workload
//! in turn, round after round, so that both see the same load on a shared
//! machine; then the median per operation of each, by wall clock and by
//! the worker thread's CPU clock.
//!
//! Each round builds both runtimes anew, in alternating order: with one
//! pair for the whole run, whichever runtime was built first came out 2-4 %
//! faster or slower, monitor or not (where its threads and memory landed),
//! which drowned the difference this is meant to show.
//! `WEFT_MONITOR_AB_CONTROL=1` builds both without the monitor: an A/A run,
//! which shows the noise floor of the comparison.

use super::clock::Clock;
use std::time::Duration;
use weft::Runtime;

/// Runs `workload(runtime, ops, clock)` `rounds` times per runtime and
/// clock, alternating monitor on and off, and prints the medians.
pub fn monitor_ab(what: &str, rounds: usize, ops: u64, mut workload: impl FnMut(&Runtime, u64, Clock) -> Duration) {
    let control = std::env::var("WEFT_MONITOR_AB_CONTROL").is_ok_and(|v| v == "1");
    let threshold = if control { None } else { Some(Duration::from_millis(100)) };
    let build = |monitor: bool| {
        let threshold = if monitor { threshold } else { None };
        Runtime::builder().workers(1).stall_threshold(threshold).build().expect("one worker thread")
    };
    for (clock, clock_name) in [(Clock::Wall, "wall"), (Clock::ThreadCpu, "worker CPU")] {
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let order = if round % 2 == 0 { [true, false] } else { [false, true] };
            let runtimes = order.map(|monitor| (monitor, build(monitor)));
            for (monitor, rt) in &runtimes {
                // One unmeasured run first: first-touch costs of a new runtime.
                workload(rt, ops / 10, clock);
                let per_op = workload(rt, ops, clock).as_secs_f64() * 1e9 / ops as f64;
                if *monitor { with.push(per_op) } else { without.push(per_op) }
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (m_on, m_off) = (median(&mut with), median(&mut without));
        println!(
            "{what} ({clock_name} clock, {rounds} rounds of {ops}{}): monitor on {m_on:.2} ns, off {m_off:.2} ns, \
             on/off {:+.2} %",
            if control { ", A/A control: both off" } else { "" },
            (m_on / m_off - 1.0) * 100.0
        );
    }
}
