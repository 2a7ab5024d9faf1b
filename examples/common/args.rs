//! The command line the small examples share: `--quick` (CI's short mode),
//! `-h`/`--help`, `--workers N` where the example takes it, and up to a
//! fixed number of positional counts. Anything else is an error that names
//! the argument and prints the usage (exit status 2), so a mistyped option
//! never runs the default workload silently.
//!
//! Mounted by each example with `#[path = "common/args.rs"] mod args;`
//! (`examples/common/` has no `main.rs`, so Cargo does not build it as an
//! example of its own), and from there by `weft-benches`' example
//! `benches/examples/rwlock_threads.rs`.

#![allow(dead_code)] // each example uses the parts it needs

/// What an example accepts.
pub struct Spec {
    /// The example's name, as in `cargo run --example NAME`.
    pub name: &'static str,
    /// The positional counts, in order, for the usage line (`["meals"]`).
    pub counts: &'static [&'static str],
    /// Whether `--workers N` is accepted.
    pub workers: bool,
}

/// The parsed command line.
pub struct Args {
    spec: &'static Spec,
    /// `--quick` was given.
    pub quick: bool,
    /// `--workers N`, if given (always at least 1).
    pub workers: Option<usize>,
    counts: Vec<u64>,
}

impl Args {
    /// Parses `std::env::args()`, or exits with the usage on `--help` (status
    /// 0) or on a bad argument (status 2).
    pub fn parse(spec: &'static Spec) -> Args {
        Args::parse_from(spec, std::env::args().skip(1)).unwrap_or_else(|problem| match problem {
            None => {
                println!("{}", usage(spec));
                std::process::exit(0)
            }
            Some(problem) => fail(spec, &problem),
        })
    }

    /// Parses `args`; `Err(None)` is a request for help, `Err(Some(why))` a
    /// bad argument.
    fn parse_from(spec: &'static Spec, args: impl IntoIterator<Item = String>) -> Result<Args, Option<String>> {
        let mut parsed = Args { spec, quick: false, workers: None, counts: Vec::new() };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => return Err(None),
                "--quick" => parsed.quick = true,
                "--workers" if spec.workers => match args.next().and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) if n > 0 => parsed.workers = Some(n),
                    _ => return Err(Some("--workers needs a worker count of at least 1".into())),
                },
                other if other.starts_with('-') => return Err(Some(format!("unknown option {other:?}"))),
                other => {
                    let Some(what) = spec.counts.get(parsed.counts.len()) else {
                        return Err(Some(format!("unexpected argument {other:?}")));
                    };
                    match other.replace('_', "").parse::<u64>() {
                        Ok(n) => parsed.counts.push(n),
                        Err(_) => return Err(Some(format!("{what}: expected a whole number, got {other:?}"))),
                    }
                }
            }
        }
        Ok(parsed)
    }

    /// The `index`-th positional count, or `default` if it was not given.
    pub fn count(&self, index: usize, default: u64) -> u64 {
        self.counts.get(index).copied().unwrap_or(default)
    }

    /// Exits with `problem` and the usage (status 2).
    pub fn fail(&self, problem: &str) -> ! {
        fail(self.spec, problem)
    }
}

fn usage(spec: &Spec) -> String {
    let mut line = format!("usage: {} [--quick]", spec.name);
    if spec.workers {
        line.push_str(" [--workers N]");
    }
    for count in spec.counts {
        line.push_str(&format!(" [{count}"));
    }
    line.push_str(&"]".repeat(spec.counts.len()));
    line
}

fn fail(spec: &Spec, problem: &str) -> ! {
    eprintln!("{}: {problem}\n{}", spec.name, usage(spec));
    std::process::exit(2)
}
