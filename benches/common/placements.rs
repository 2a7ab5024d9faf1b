//! Where the coroutines of a multi-worker batch ran, and how long the batch
//! took with each split (mounted by the `sync` and `channel` benches with
//! `#[path]`; a bench target cannot share a module otherwise).
//!
//! A started coroutine stays on its first worker, so where the coroutines
//! of a weft batch landed decides how much of it is cross-thread: after the
//! criterion run a bench prints, for each weft batch benchmark, each split
//! of its coroutines over the workers that occurred, how often, and the
//! median batch time with that split (stderr).

#![allow(dead_code)] // each user takes the parts it needs

use std::collections::BTreeMap;
use std::time::Duration;

/// From the earliest start to the latest end of some tasks' `(start, end)`
/// clock readings. Each task reads the clock itself, so a measuring thread
/// that is preempted (on a shared machine) cannot shorten or stretch the
/// figure.
pub fn span(spans: impl IntoIterator<Item = (Duration, Duration)>) -> Duration {
    let (start, end) =
        spans.into_iter().fold((Duration::MAX, Duration::ZERO), |(start, end), (s, e)| (start.min(s), end.max(e)));
    end.saturating_sub(start)
}

/// The index of the weft worker running the caller (from the worker
/// thread's name, `weft-r<R>-w<N>`); a coroutine's first worker is its only
/// one.
pub fn worker_index() -> usize {
    std::thread::current()
        .name()
        .and_then(|name| name.rsplit_once("-w").map(|(_, index)| index))
        .and_then(|index| index.parse().ok())
        .expect("called from a coroutine of a weft runtime")
}

/// For each weft batch benchmark, each split of its coroutines over the
/// workers that occurred, with the time of every batch that had it.
#[derive(Default)]
pub struct Placements(BTreeMap<&'static str, BTreeMap<Vec<usize>, Vec<Duration>>>);

impl Placements {
    /// Runs one batch, which returns its time and the worker of each of its
    /// coroutines; records the split with the time and returns the time.
    pub fn time(&mut self, what: &'static str, batch: impl FnOnce() -> (Duration, Vec<usize>)) -> Duration {
        let (elapsed, workers) = batch();
        let mut per_worker = vec![0; workers.iter().max().map_or(0, |&w| w + 1).max(2)];
        for w in workers {
            per_worker[w] += 1;
        }
        self.0.entry(what).or_default().entry(per_worker).or_default().push(elapsed);
        elapsed
    }

    /// Writes every split and its batch times as JSON to `path`:
    /// `{"WHAT": [{"split": [coroutines on worker 0, ...], "batches_ms": [...]}, ...], ...}`.
    pub fn write_json(&self, path: &str) -> std::io::Result<()> {
        let mut out = String::from("{");
        for (n, (what, splits)) in self.0.iter().enumerate() {
            out += if n == 0 { "\n" } else { ",\n" };
            out += &format!(" {what:?}: [");
            for (m, (split, times)) in splits.iter().enumerate() {
                let times: Vec<String> = times.iter().map(|t| format!("{:.4}", t.as_secs_f64() * 1e3)).collect();
                out += if m == 0 { "\n" } else { ",\n" };
                out += &format!("  {{\"split\": {split:?}, \"batches_ms\": [{}]}}", times.join(", "));
            }
            out += "\n ]";
        }
        out += "\n}\n";
        std::fs::write(path, out)
    }

    pub fn report(&mut self) {
        eprintln!("coroutines per worker [worker 0, worker 1] in every weft batch run (criterion warm-up included):");
        for (what, splits) in &mut self.0 {
            eprintln!("  {what}:");
            for (split, times) in splits {
                times.sort();
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                eprintln!(
                    "    {split:?}: {} batches, median {:.2} ms (min {:.2}, max {:.2})",
                    times.len(),
                    ms(times[times.len() / 2]),
                    ms(times[0]),
                    ms(times[times.len() - 1])
                );
            }
        }
    }
}
