#!/usr/bin/env python3
"""Renders BENCHMARKS.md, and the plots it shows, from the results that
benches/report/collect.sh wrote. Python 3 standard library only.

    python3 benches/report/render.py                       # BENCHMARKS.md + benches/results/plots/*.svg
    python3 benches/report/render.py --results DIR         # from another results directory
    python3 benches/report/render.py --output-dir /tmp/r   # /tmp/r/BENCHMARKS.md, /tmp/r/benches/results/plots/
    python3 benches/report/render.py --check               # exit 1, with a diff, if a written file would change
                                                           # (or a plot in benches/results/plots/ is stale)

The prose is hand-written, in the template benches/report/BENCHMARKS.md.in;
every figure in it is computed here from the results. Rendering is
deterministic: the same results give the same bytes (no clock is read, every
float goes through one formatter, every listing is sorted or in the order of
the results).

The files: render.py (this: the command line, --check), template.py (the
template language), results.py (reading the results), units.py (figures,
units, number formatting), tables.py (tables and provenance), plots.py (SVG).

An example, from BENCHMARKS.md.in:

    <!-- figures
    let rt = crit default "switch/weft resume+suspend"
    let coro = crit default "switch/corosensei resume+suspend"
    -->
    weft's round trip is {{rt / coro}} corosensei's ({{rt}} against
    {{coro}}; goal: within 1.5x: {{goal(rt / coro <= 1.5)}}).

renders as "weft's round trip is 1.43x corosensei's (3.09 ns against 2.16 ns;
goal: within 1.5x: met)".

Template syntax
===============

    <!-- figures                  a block of named figures, dropped from the output; one per line:
    let NAME = SOURCE ARG...      a measured figure (the ARGs are split like shell words)
    let NAME = EXPRESSION         a figure computed from other names
    -->
    <!--# ... -->                 a template comment, dropped from the output
    {{EXPRESSION}}                a figure, formatted with its unit
    {{BLOCK ARG...}}              a generated block

SOURCEs (a figure that is not in the results makes its placeholder "n/a"):

    crit LABEL FULL_ID      criterion median of FULL_ID in the run LABEL (default, fp-control, may-1-worker)
    versus KEY SIDE         criterion group `versus`, benchmark KEY/SIDE, per operation (median / throughput
                            elements), in the unit of versus_threads' row KEY
    vt KEY SIDE             versus_threads row KEY: SIDE weft or threads (in the row's unit), or ratio
    vtmeta FIELD            versus_threads' runs, costly_runs or workers
    go PROCS KEY            go.json row KEY at GOMAXPROCS=PROCS, in its unit
    cg BUILD WHO            callgrind instructions per switch round trip (BUILD default or fp-control,
                            WHO weft or corosensei)
    cgrt WHAT               callgrind instructions per yield (yield), per spawned+joined coroutine (spawn: a first
                            burst; spawn_warm: a burst after a burst), per
                            skynet leaf (skynet) or per one-way Mutex+Condvar hand-off (handoff)
    cgb BUILD WHO           as `cg`, from before/ (a callgrind collection of an earlier commit)
    cgrtb WHAT              as `cgrt`, from before/
    rmw PATH                atomic read-modify-writes per operation of the callgrind.json entry at the dotted
                            PATH (runtime.handoff, channel.rendezvous.default), from --dump-instr=yes runs
    probe FIELD             machine.json's host probe: the cost of one operation (atomic_rmw_ns, ...)
    rss PATH                rss.json field by dotted path (parked.per_task_kib, peak_skynet.peak_rss_mib, or
                            the derived parked.stack_resident_kib and parked.stack_resident_share); the unit
                            comes from the name's suffix (_kib, _mib, _ms, _share; else a count)
    skynet WORKERS FIELD    skynet.json, median of the runs: ms, per_leaf (µs/leaf), peak_rss_kib, leaves or runs
    scale KEY SIDE N        scaling/: row KEY (skynet, pc_condvar, contended_mutex) of SIDE (weft, threads, go)
                            with N workers (GOMAXPROCS=N for go), in the row's unit
    machine FIELD           machine.json field (text, or a count)
    bmachine FIELD          before/machine.json field (text, or a count)
    in SUBDIR SOURCE ARG... SOURCE read from the collection in SUBDIR of the results (`in channel crit default
                            ID`: channel.sh's collection, benches/results/channel/, with its own machine.json)
    perop LABEL FULL_ID UNIT  criterion median of FULL_ID per element of its throughput, in UNIT (ns/hand-off,
                            M items/s, ...), comparable with a Go row of that unit
    cgch WHAT BUILD         callgrind instructions per rendezvous hand-off (WHAT rendezvous) or per completed
                            select (select), BUILD no-fp-control or fp-control (channel.sh; use with `in channel`)
    ab WHAT BUILD           channel.sh --before's ab.json (use with `in channel`): median process CPU time per
                            hand-off (rendezvous) or select (select) of BUILD (before or after), runs in turns;
                            BUILD step: the figures' resolution (/usr/bin/time's 10 ms over a run's operations)
    plc KEY SIDE            placement.sh's collection (use with `in placement`): the median of every run of row
                            KEY (contended_mutex, pc_condvar, pc_semaphore, readers_writers) of SIDE (default,
                            same_worker, threads, go2, go1), as its table shows it; `plc cpu PROCS`: the Go
                            peer's CPUs busy at GOMAXPROCS=PROCS (median over the turns)
    placed WHAT FIELD       channel.sh's placements.json (use with `in channel`): the weft batches WHAT ("pc 4p4c
                            weft", "unbounded weft"); FIELD one_worker (share of batches all on one worker),
                            one_worker_ms or spread_ms (median batch time of those, or of the others; "none")
    obs WHAT ARG...         observability/ (observability.sh): `obs time WORKLOAD BUILD` (ns per yield or
                            handoff of the base, monitor-on or monitor-off build), `obs spread WORKLOAD BUILD`
                            (the runs' interquartile range over their median), `obs instr WORKLOAD BUILD`
                            (callgrind instructions per operation), `obs dump N FIELD` (Runtime::dump with N
                            parked coroutines: median_ms, per_coroutine_us, print_first_ms, print_again_ms,
                            workers, runs, backtraces), `obs maps` (vm.max_map_count then), `obs idle`
                            (share of one core an idle runtime uses), `obs base` (the base build's commit)

EXPRESSIONs are Python expressions over those names, numbers and strings:

    a / b           two figures of one unit give a ratio, printed "4.41x"; a figure / a number keeps its unit
    a + b, a - b    figures of one unit; a * n
    a <= b ...      comparisons: figures of one unit, or a ratio and a number
    X if C else Y   and `and`, `or`, `not`: statements whose truth depends on the figures
    ns(x) us(x) ms(x) kib(x) instr(x)   a figure literal in that unit, for goals: `goal(yield_rt <= ns(20))`
    unit(x, "UNIT") a figure literal in any unit of the results ("µs/task", "M items/s"), for a dated figure
                    of an earlier collection set against this one's
    min(...) max(...)
    goal(CONDITION) "met" or "missed" ("not measured" if a figure is missing)
    pct(r)          how far a ratio is from 1, as a percentage: pct(1.14) and pct(0.86) give "14 %"
    percent(r)      a ratio as a percentage: percent(0.5) gives "50 %"
    bold(x)         **x**

BLOCKs:

    {{machine}}                  the machine paragraph (with a warning when the results are --quick ones)
    {{about SOURCE...}}          the commands that produced each SOURCE (versus_threads, criterion:GROUP, observability,
                                 callgrind, rss, skynet, go, scaling), the machine and the date; for a SOURCE
                                 that was not collected, a sentence saying so and why
    {{table NAME}}               versus_threads, versus, crosscheck, switch, runtime, sync, go, scaling
                                 (a table or plot whose source is missing is left out: put an {{about}}
                                 in its section, which says what was not collected)
    {{plot NAME}}                switch-latency, producer-consumer, scaling: writes the SVG and embeds it
    {{notes versus_threads}}     what each versus_threads row runs (the rows' notes)
    {{crosscheck_summary}}       how many rows of the cross-check table agree, and which do not
    {{go_summary}}               where weft is ahead of, level with and behind Go, at matching parallelism
    {{in SUBDIR BLOCK ARG...}}   BLOCK of the collection in SUBDIR (`{{in channel about criterion:channel go}}`)
"""

import argparse
import difflib
import os
import sys

# The modules beside this file; no __pycache__ in the source tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from plots import PLOTS_DIR  # noqa: E402
from results import Results  # noqa: E402
from template import Renderer, TemplateError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TEMPLATE = os.path.join(HERE, "BENCHMARKS.md.in")


HEADER = ("<!-- Generated by benches/report/render.py from benches/report/BENCHMARKS.md.in and the results in "
          "{results}; edit those, not this file. -->\n\n")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=os.path.join(ROOT, "benches", "results"),
                        help="the directory collect.sh wrote (default: benches/results)")
    parser.add_argument("--output-dir", default=ROOT,
                        help="where BENCHMARKS.md and benches/results/plots/ go (default: the repository root)")
    parser.add_argument("--template", default=TEMPLATE)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 with a diff if a file would change")
    args = parser.parse_args(argv[1:])

    results = Results(args.results)
    renderer = Renderer(results)
    with open(args.template, encoding="utf-8") as f:
        template = f.read()
    try:
        body = renderer.render(template)
    except TemplateError as error:
        print(f"render: template error: {error}", file=sys.stderr)
        return 2
    shown_results = os.path.relpath(os.path.abspath(args.results), ROOT)
    if shown_results.startswith(".."):
        shown_results = args.results
    files = {"BENCHMARKS.md": HEADER.format(results=shown_results) + body}
    for name, svg in sorted(renderer.plots.items()):
        files[f"{PLOTS_DIR}/{name}"] = svg
    for problem in renderer.missing:
        print(f"render: n/a: {problem}", file=sys.stderr)

    plots_dir = os.path.join(args.output_dir, PLOTS_DIR)
    stale = sorted(name for name in (os.listdir(plots_dir) if os.path.isdir(plots_dir) else [])
                   if name.endswith(".svg") and f"{PLOTS_DIR}/{name}" not in files)
    if args.check:
        differ = False
        for path, text in files.items():
            full = os.path.join(args.output_dir, path)
            try:
                with open(full, encoding="utf-8") as f:
                    current = f.read()
            except FileNotFoundError:
                current = None
            if current != text:
                differ = True
                sys.stdout.writelines(difflib.unified_diff(
                    (current or "").splitlines(keepends=True), text.splitlines(keepends=True),
                    fromfile=f"{path} (committed)" if current is not None else "/dev/null",
                    tofile=f"{path} (rendered)"))
        for name in stale:
            differ = True
            print(f"{PLOTS_DIR}/{name}: no longer rendered (its sources are gone); delete it")
        if differ:
            print("render: out of date: run python3 benches/report/render.py", file=sys.stderr)
            return 1
        return 0
    for path, text in files.items():
        full = os.path.join(args.output_dir, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as f:
            f.write(text)
    for name in stale:
        os.remove(os.path.join(plots_dir, name))
    print(f"render: wrote {', '.join(os.path.join(args.output_dir, p) for p in files)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
