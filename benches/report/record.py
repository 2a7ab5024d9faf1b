#!/usr/bin/env python3
"""Turns what one measurement step printed or wrote into a results JSON file.

`collect.sh` runs the measurements; after each step it calls this script to
record the step's output in the results directory. Python 3 standard library
only. One subcommand per kind of source:

    record.py machine-start OUT/machine.json [MODE [BUILD_JSON]]
        The machine and the tree, and the load average before the collection.
        With BUILD_JSON (written by build-info), the commit and the compilers
        come from there: the programs were built elsewhere (scaling.sh
        --prebuilt), and this machine may have neither git nor rustc.
    record.py build-info OUT/build.json WITH_GO
        The commit, whether the tree was dirty, rustc's and (WITH_GO=1) go's
        version, for programs built here to run on another machine.
    record.py step OUT/steps.jsonl SOURCE LABEL STATUS SECONDS COMMAND
        One line per step: what ran, and whether it ran (ok, skipped: why,
        failed: why). machine-finish folds these lines into machine.json.
    record.py machine-finish OUT/machine.json OUT/steps.jsonl
        The load average after the collection, the end time, the steps.
    record.py host-probe OUT/machine.json PROBE_OUT
        The host's cost of a few basic operations (`WEFT_HOST_PROBE=1` of
        the sync bench prints them as one JSON object), as "host_probe".
    record.py vt-merge OUT/versus_threads.json PART.json...
        One versus_threads.json from runs of one row each (`--only KEY`):
        the first part's header (machine, mode, sizes, start time), every
        key's row in order of first appearance, with each part's start time
        and load average. Parts with the same key (a row run before and after
        criterion's benchmarks) are pooled: their runs concatenated, the
        medians (the upper one, as versus_threads takes) and the ratio
        computed again from all of them.
    record.py criterion CRITERION_DIR GROUP LABEL MARKER OUT/criterion.json
        Appends to criterion.json every benchmark of GROUP whose estimates
        were written after MARKER (a file touched before the run), so a run
        that adds rows to a group (may-1-worker) records only its own rows.
    record.py callgrind CALLGRIND_OUT COUNT OUT/callgrind.json KEY...
        The instruction total of one callgrind.out file (its `totals:` or
        `summary:` line) divided by COUNT, stored under KEY... (a path of
        object keys).
    record.py callgrind-diff OUT/callgrind.json SMALL_OUT SMALL_N BIG_OUT BIG_N KEY...
        Instructions per unit from two runs of different sizes:
        (total(BIG) - total(SMALL)) / (BIG_N - SMALL_N), start-up cancelled.
        If both runs were made with `--dump-instr=yes` and objdump exists,
        also the atomic read-modify-writes per unit (the same difference of
        how often `lock`-prefixed instructions and `xchg` with memory ran),
        with the functions they ran in.
    record.py rss PROBE RAW_TEXT OUT/rss.json
        Parses the text `WEFT_RSS_PROBE=PROBE cargo bench -p weft-benches --bench runtime`
        printed (benches/runtime.rs) and stores it, raw text included.
    record.py skynet WORKERS OUT/skynet.json RUN_TEXT [PEAK_RSS_KIB]
        One run of examples/skynet.rs: its output line and, if measured, the
        process's peak RSS from /usr/bin/time -f %M.
    record.py observe-time OUT/observability.json WORKLOAD VARIANT N RUN_TEXT
        One timed run of a count mode (`WEFT_RUNTIME_COUNT=yield:N`,
        `WEFT_SYNC_COUNT=handoff:N`): its "...: X ms" line, appended to
        timing.WORKLOAD.VARIANT.runs_ms.N.
    record.py observe-probe OUT/observability.json KIND RUN_TEXT
        What `examples/dump.rs` (KIND dump) or `WEFT_RUNTIME_PROBE=idle:S`
        of benches/runtime.rs (KIND idle) printed, parsed, raw text included.
    record.py channel-ab OUT/ab.json WHAT BUILD N TIME_FILE
        One run of `WEFT_CHANNEL_COUNT=WHAT:N` of the channel bench of BUILD
        (before or after), timed by /usr/bin/time -f "%e %U %S" into
        TIME_FILE: its wall and CPU (user + system) seconds, appended to
        WHAT.BUILD.runs, and each build's median CPU ns per unit.
    record.py observe-summarize OUT/observability.json BASE_COMMIT
        ns per operation of every timed run, their median, and the commit
        the base build is of.

Every file is written with sorted keys and a trailing newline, so two
collections of the same figures give the same bytes.
"""

import datetime
import json
import os
import platform
import re
import subprocess
import sys

from units import median


def load(path, default):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def save(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def command_output(argv):
    """The first line of a command's output, or None if it cannot run."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_average():
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------------------
# machine.json
# ---------------------------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def mem_total_kib():
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def max_map_count():
    try:
        with open("/proc/sys/vm/max_map_count", encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def hardware_perf_counters():
    """Whether the kernel exposes a CPU PMU (hardware counters) to us."""
    devices = "/sys/bus/event_source/devices"
    if not os.path.isdir(devices):
        return None
    return any(name in ("cpu", "cpu_core", "cpu_atom", "armv8_pmuv3") for name in os.listdir(devices))


def git(*args):
    return command_output(["git", *args])


def tree_info():
    """The commit and whether the code being measured has uncommitted
    changes; the results directory itself is excluded (collect.sh has just
    removed the previous results, and this collection rewrites them), and so
    is the report's prose (BENCHMARKS.md and its template), which is not
    measured."""
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":(exclude)benches/results", ":(exclude)BENCHMARKS.md",
                            ":(exclude)benches/report/BENCHMARKS.md.in"],
                           capture_output=True, text=True).stdout.strip() != ""
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "commit_subject": git("log", "-1", "--format=%s"),
        "dirty": dirty,
        "rustc": command_output(["rustc", "-V"]),
    }


def build_info(path, with_go):
    info = tree_info()
    info["built_utc"] = utc_now()
    info["built_on_cpu"] = cpu_model()
    if with_go == "1":
        info["go"] = command_output(["go", "version"])
    save(path, info)


def machine_start(path, mode, build_json=None):
    if build_json:
        build = load(build_json, None)
        if build is None:
            raise SystemExit(f"record: {build_json} does not exist (scaling.sh --build-only writes it)")
        build["prebuilt"] = True
    else:
        build = tree_info()
    save(path, {
        "tool": "weft-bench-collect",
        "mode": mode,
        "date_utc": utc_now(),
        **build,
        "cpu": cpu_model(),
        "nproc": len(os.sched_getaffinity(0)),  # what `nproc` prints
        "mem_total_kib": mem_total_kib(),
        "kernel": platform.release(),
        "glibc": command_output(["ldd", "--version"]),
        "vm_max_map_count": max_map_count(),
        "hardware_perf_counters": hardware_perf_counters(),
        "valgrind": command_output(["valgrind", "--version"]),
        "load_average_before": load_average(),
    })


def step(path, source, label, status, seconds, command):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"source": source, "label": label, "status": status,
                            "seconds": round(float(seconds)), "command": command},
                           sort_keys=True, ensure_ascii=False) + "\n")


def machine_finish(path, steps_path):
    machine = load(path, {})
    machine["load_average_after"] = load_average()
    machine["end_utc"] = utc_now()
    steps = []
    if os.path.exists(steps_path):
        with open(steps_path, encoding="utf-8") as f:
            steps = [json.loads(line) for line in f if line.strip()]
    machine["steps"] = steps
    save(path, machine)


def host_probe(path, probe_out):
    with open(probe_out, encoding="utf-8") as f:
        lines = [line for line in f if line.strip().startswith("{")]
    if not lines:
        raise SystemExit(f"record: {probe_out} holds no JSON object")
    probe = json.loads(lines[-1])
    expected = {"atomic_rmw_ns", "compare_exchange_ns", "clock_read_ns", "spin_hint_ns"}
    if set(probe) != expected:
        raise SystemExit(f"record: the host probe printed {sorted(probe)}, expected {sorted(expected)}")
    machine = load(path, {})
    machine["host_probe"] = probe
    save(path, machine)


# ---------------------------------------------------------------------------
# versus_threads.json
# ---------------------------------------------------------------------------


def upper_median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def vt_merge(out, *parts):
    merged, rows = None, {}
    for part in parts:
        run = load(part, None)
        if run is None:
            raise SystemExit(f"record: {part} does not exist")
        if merged is None:
            merged = dict(run)
        for key in ("mode", "workers", "runs", "costly_runs"):
            if run.get(key) != merged.get(key):
                raise SystemExit(f"record: {part} has {key} {run.get(key)!r}, the first part {merged.get(key)!r}")
        for row in run["rows"]:
            when = {"unix_time": run.get("unix_time"), "load_average_at_start": run.get("load_average_at_start")}
            if row["key"] not in rows:
                rows[row["key"]] = dict(row, parts=[when])
                continue
            pooled = rows[row["key"]]
            pooled["parts"].append(when)
            for side in ("weft", "threads"):
                pooled[f"{side}_runs"] = pooled[f"{side}_runs"] + row[f"{side}_runs"]
                pooled[side] = upper_median(pooled[f"{side}_runs"])
            better, worse = (pooled["weft"], pooled["threads"]) if pooled["higher_is_better"] \
                else (pooled["threads"], pooled["weft"])
            pooled["ratio"] = better / worse if worse else None
    merged["rows"] = list(rows.values())
    merged["merged_from"] = len(parts)
    save(out, merged)


# ---------------------------------------------------------------------------
# criterion.json
# ---------------------------------------------------------------------------


def criterion(criterion_dir, group, label, marker, out):
    since = os.stat(marker).st_mtime_ns
    group_dir = os.path.join(criterion_dir, group)
    found = []
    for directory, _dirs, files in os.walk(group_dir):
        if os.path.basename(directory) != "new":
            continue
        if "benchmark.json" not in files or "estimates.json" not in files:
            continue
        estimates_path = os.path.join(directory, "estimates.json")
        written = os.stat(estimates_path).st_mtime_ns
        if written <= since:
            continue
        bench = load(os.path.join(directory, "benchmark.json"), None)
        estimates = load(estimates_path, None)
        ident = bench["function_id"] or ""
        if bench.get("value_str"):
            ident = f"{ident}/{bench['value_str']}" if ident else bench["value_str"]
        median = estimates["median"]
        found.append((written, {
            "label": label,
            "group": bench["group_id"],
            "id": ident,
            "full_id": bench["full_id"],
            "median_ns": median["point_estimate"],
            "median_lo_ns": median["confidence_interval"]["lower_bound"],
            "median_hi_ns": median["confidence_interval"]["upper_bound"],
            "mean_ns": estimates["mean"]["point_estimate"],
            "throughput": bench.get("throughput"),
        }))
    # The order criterion ran them in: the order their estimates were written.
    found.sort(key=lambda pair: (pair[0], pair[1]["full_id"]))
    entries = load(out, [])
    for order, (_written, entry) in enumerate(found):
        entry["order"] = order
        entries.append(entry)
    save(out, entries)
    print(f"record: {len(found)} benchmarks of group {group} recorded as {label!r}", file=sys.stderr)
    return 0 if found else 1


# ---------------------------------------------------------------------------
# callgrind.json
# ---------------------------------------------------------------------------


def callgrind_total(path):
    """The event total of a callgrind.out file: its `totals:` line, else `summary:`."""
    summary = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
            if line.startswith("summary:"):
                summary = int(line.split()[1])
    if summary is None:
        raise SystemExit(f"record: no totals: or summary: line in {path}")
    return summary


def put(tree, keys, value):
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


def callgrind(cg_out, count, out, keys):
    total = callgrind_total(cg_out)
    count = int(count)
    results = load(out, {})
    put(results, keys, {"instructions": total, "count": count, "per_unit": total / count})
    save(out, results)


RMW_SITES = {}  # rmw_sites' answers, by object file: each is disassembled once


def rmw_sites(obj):
    """Addresses of the atomic read-modify-writes in an object file, by
    objdump: `lock`-prefixed instructions and `xchg` with a memory operand
    (implicitly locked). {address: (function, instruction)}; None if objdump
    cannot read it."""
    cache = RMW_SITES
    if obj in cache:
        return cache[obj]
    try:
        text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj],
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        cache[obj] = None
        return None
    sites, function = {}, "?"
    for line in text.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:", line)
        if m:
            function = m.group(1)
            continue
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)", line)
        if m and (m.group(2).startswith("lock ") or (m.group(2).startswith("xchg") and "(" in m.group(2))):
            sites[int(m.group(1), 16)] = (function, " ".join(m.group(2).split()))
    cache[obj] = sites
    return sites


def callgrind_rmw_counts(path):
    """How often each atomic read-modify-write ran in a callgrind.out file
    written with --dump-instr=yes: {(object, address): count}. None if the
    file has no instruction positions or an object cannot be disassembled."""
    names = {}  # compressed object names: "(3) /path" the first time, then "(3)", in ob= and cob= alike
    counts = {}
    obj, sites, addr, after_call, have_instr = None, None, 0, False, False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("positions:"):
                have_instr = "instr" in line.split()[1:]
                continue
            if line.startswith(("ob=", "cob=")):
                m = re.match(r"c?ob=(?:\((\d+)\))?\s*(.*)", line.rstrip("\n"))
                ident, name = m.group(1), m.group(2)
                if ident is not None and name:
                    names[ident] = name
                if line.startswith("cob="):
                    continue  # the object of the call that follows, not of the cost lines
                obj = name if name else names.get(ident)
                sites = rmw_sites(obj) if obj and obj.startswith("/") else {}
                if sites is None:
                    return None
                continue
            if line.startswith("calls="):
                after_call = True  # the next cost line is the call's inclusive cost
                continue
            head = line[:1]
            if not (head.isdigit() or head in "+-*"):
                continue
            parts = line.split()
            if parts[0].startswith("0x"):
                addr = int(parts[0], 16)
            elif head in "+-":
                addr += int(parts[0])
            elif head != "*":
                continue
            if after_call:
                after_call = False
                continue
            if sites and addr in sites and len(parts) >= 3:
                key = (obj, addr)
                counts[key] = counts.get(key, 0) + int(parts[-1])
    return counts if have_instr else None


def callgrind_diff(out, small_out, small_n, big_out, big_n, keys):
    small, big = callgrind_total(small_out), callgrind_total(big_out)
    small_n, big_n = int(small_n), int(big_n)
    results = load(out, {})
    entry = {"instructions_small": small, "count_small": small_n,
             "instructions_big": big, "count_big": big_n,
             "per_unit": (big - small) / (big_n - small_n)}
    small_rmw, big_rmw = callgrind_rmw_counts(small_out), callgrind_rmw_counts(big_out)
    if small_rmw is not None and big_rmw is not None:
        per_site = {}
        for key in set(small_rmw) | set(big_rmw):
            per_unit = (big_rmw.get(key, 0) - small_rmw.get(key, 0)) / (big_n - small_n)
            if per_unit >= 0.05:
                obj, addr = key
                function, instruction = rmw_sites(obj)[addr]
                per_site[f"{os.path.basename(obj)}+{addr:#x}"] = {
                    "per_unit": round(per_unit, 3), "function": function, "instruction": instruction}
        entry["atomic_rmw_per_unit"] = round(sum(s["per_unit"] for s in per_site.values()), 2)
        entry["atomic_rmw_sites"] = per_site
    put(results, keys, entry)
    save(out, results)


# ---------------------------------------------------------------------------
# rss.json: the text of benches/runtime.rs's WEFT_RSS_PROBE modes
# ---------------------------------------------------------------------------

NUM = r"([0-9]+(?:\.[0-9]+)?)"

PARKED_PATTERNS = {
    "parked": r"RSS probe: ([0-9]+) coroutines parked",
    "workers": r"parked in weft::sleep, ([0-9]+) workers",
    "all_started_ms": rf"all started after {NUM} ms",
    "joined_ms": rf"released and joined in {NUM} ms",
    "vmrss_before_kib": r"VmRSS before ([0-9]+) KiB",
    "vmrss_after_kib": r"VmRSS before [0-9]+ KiB, after ([0-9]+) KiB",
    "per_task_kib": rf"RSS per parked coroutine: {NUM} KiB",
    "pte_before_kib": r"VmPTE, not in VmRSS\): ([0-9]+) ->",
    "pte_after_kib": r"VmPTE, not in VmRSS\): [0-9]+ -> ([0-9]+) KiB",
    "pte_per_task_kib": rf"KiB, {NUM} KiB per coroutine",
    "maps_before": r"memory maps: ([0-9]+) -> [0-9]+",
    "maps_after": r"memory maps: [0-9]+ -> ([0-9]+)",
    "stack_kib": r"resident KiB per ([0-9]+) KiB stack mapping",
    "malloc_bytes_per_task": r"malloc's bytes in use: [0-9]+ -> [0-9]+, ([0-9]+) bytes per coroutine",
    "cell_bytes_per_task": r"task cell blocks, resident: [0-9]+ -> [0-9]+ KiB, ([0-9]+) bytes per coroutine",
}

PEAK_PATTERNS = {
    "what": r"peak RSS probe: one (.+?) on a fresh",
    "workers": r"on a fresh ([0-9]+)-worker runtime",
    "first_run_ms": rf"runtime, took {NUM} ms",
    "vmrss_before_kib": r"before: VmRSS ([0-9]+) KiB",
    "vmhwm_before_kib": r"before: VmRSS [0-9]+ KiB, VmHWM ([0-9]+) KiB",
    "vmrss_after_kib": r"after:  VmRSS ([0-9]+) KiB",
    "vmhwm_after_kib": r"after:  VmRSS [0-9]+ KiB, VmHWM ([0-9]+) KiB",
    "maps_before": r"memory maps: ([0-9]+) before",
    "maps_max": r"at most ([0-9]+) seen during the run",
    "stacks_max": r"about ([0-9]+) stacks above the start",
    "peak_rss_mib": rf"peak RSS of the process: {NUM} MiB",
    "peak_above_start_mib": rf"MiB \({NUM} MiB above the RSS before the run\)",
    "vmhwm_after_all_runs_mib": rf"VmHWM after all runs: {NUM} MiB",
}


def number(text):
    return float(text) if "." in text else int(text)


def parse_fields(text, patterns):
    fields = {}
    for name, pattern in patterns.items():
        match = re.search(pattern, text)
        if match:
            value = match.group(1)
            fields[name] = value if name == "what" else number(value)
    return fields


def rss(probe, raw_path, out):
    with open(raw_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if probe == "1":
        fields = parse_fields(text, PARKED_PATTERNS)
        fields["stack_histogram"] = [
            {"rss_kib": int(rss_kib), "mappings": int(count)}
            for rss_kib, count in re.findall(r"^\s+([0-9]+) KiB: ([0-9]+)$", text, re.M)
        ]
        name = "parked"
    else:
        fields = parse_fields(text, PEAK_PATTERNS)
        fields["runs"] = [
            {"wall_ms": float(wall), "cpu_ms": float(cpu), "minor_faults": int(faults)}
            for wall, cpu, faults in re.findall(
                rf"run [0-9]+: {NUM} ms wall, {NUM} ms CPU \(all threads\), ([0-9]+) minor page faults", text)
        ]
        name = {"spawn": "peak_spawn", "skynet": "peak_skynet", "skynet1": "peak_skynet_1_worker"}[probe]
    fields["probe"] = f"WEFT_RSS_PROBE={probe}"
    fields["raw"] = text
    results = load(out, {})
    results[name] = fields
    save(out, results)
    if probe == "1" and "per_task_kib" not in fields:
        print("record: the RSS probe printed no 'RSS per parked coroutine' line", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------
# skynet.json: runs of examples/skynet.rs
# ---------------------------------------------------------------------------

SKYNET_LINE = re.compile(
    r"skynet: ([0-9]+) leaves on ([0-9]+) workers: sum ([0-9]+) in ([0-9.]+) ms \(([0-9]+) coroutines\)")


def skynet(workers, out, run_text_path, peak_kib=None):
    with open(run_text_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    match = SKYNET_LINE.search(text)
    if not match or "check: ok" not in text:
        print(f"record: skynet printed no result line and 'check: ok':\n{text}", file=sys.stderr)
        return 1
    leaves, ran_workers, _sum, ms, coroutines = match.groups()
    results = load(out, {"runs": {}})
    runs = results["runs"].setdefault(str(workers), [])
    run = {"ms": float(ms), "leaves": int(leaves), "workers": int(ran_workers), "coroutines": int(coroutines),
           "output": match.group(0)}
    if peak_kib:
        run["peak_rss_kib"] = int(peak_kib)
    runs.append(run)
    results["peak_rss_tool"] = "/usr/bin/time -f %M" if peak_kib else None
    if not peak_kib:
        results["peak_rss_note"] = "no peak RSS: /usr/bin/time was not found"
    summary = results.setdefault("median", {})
    peaks = [r["peak_rss_kib"] for r in runs if "peak_rss_kib" in r]
    summary[str(workers)] = {"ms": median([r["ms"] for r in runs]), "runs": len(runs),
                             "leaves": int(leaves), "peak_rss_kib": median(peaks)}
    save(out, results)
    return 0


# ---------------------------------------------------------------------------
# observability.json: benches/report/observability.sh
# ---------------------------------------------------------------------------

def observe_time(out, workload, variant, n, run_text_path):
    with open(run_text_path, encoding="utf-8") as f:
        text = f.read()
    # "yield x N: X ms" (benches/runtime.rs) or "handoff:N: X ms" (benches/sync.rs)
    match = re.search(rf"(?: x |:){re.escape(str(n))}: {NUM} ms", text)
    if not match:
        raise SystemExit(f"record: no 'WORKLOAD x {n}: X ms' or 'WORKLOAD:{n}: X ms' line in {run_text_path}")
    results = load(out, {})
    entry = results.setdefault("timing", {}).setdefault(workload, {}).setdefault(variant, {"runs_ms": {}})
    entry["runs_ms"].setdefault(str(n), []).append(float(match.group(1)))
    save(out, results)


DUMP_PATTERNS = {
    "coroutines": r"dump probe: ([0-9]+) coroutines parked",
    "workers": r"parked on ([0-9]+) workers",
    "median_ms": rf"took median {NUM} ms",
    "min_ms": rf"\(min {NUM} ms",
    "max_ms": rf"max {NUM} ms",
    "runs": r"([0-9]+) runs\)",
    "lines": r"its text: ([0-9]+) lines",
    "text_kib": rf"lines, {NUM} KiB",
    "backtraces": r"([0-9]+) backtraces",
    "per_coroutine_us": rf"{NUM} us per coroutine",
    "print_first_ms": rf"printing it took {NUM} ms the first time",
    "print_again_ms": rf"{NUM} ms again",
}

IDLE_PATTERNS = {
    "workers": r"idle probe: a ([0-9]+)-worker runtime",
    "seconds": rf"idle for {NUM} s",
    "cpu_ms": rf"s: {NUM} ms of CPU",
    "core_percent": rf"\({NUM} % of one core\)",
}


def observe_probe(out, kind, run_text_path):
    with open(run_text_path, encoding="utf-8") as f:
        text = f.read()
    patterns = {"dump": DUMP_PATTERNS, "idle": IDLE_PATTERNS}[kind]
    fields = parse_fields(text, patterns)
    missing = sorted(set(patterns) - set(fields))
    if missing:
        raise SystemExit(f"record: the {kind} probe's output lacks {', '.join(missing)}:\n{text}")
    fields["raw"] = text
    results = load(out, {})
    if kind == "dump":
        results.setdefault("dump", {})[str(fields["coroutines"])] = fields
    else:
        results["idle"] = fields
    save(out, results)


def observe_summarize(out, base_commit):
    """ns per operation of every timed run, their median, and the commit
    the base build is of."""
    results = load(out, {})
    for workload in (results.get("timing") or {}).values():
        for entry in workload.values():
            per_op = [ms * 1e6 / int(n) for n, runs in sorted(entry["runs_ms"].items()) for ms in runs]
            entry["runs_ns"] = per_op
            entry["median_ns"] = median(per_op)
    results["base_commit"] = base_commit
    save(out, results)


def channel_ab(path, what, build, n, time_file):
    """channel.sh --before: one timed count-mode run of one build."""
    with open(time_file, encoding="utf-8") as f:
        wall, user, system = (float(x) for x in f.read().split()[-3:])
    results = load(path, {})
    entry = results.setdefault(what, {}).setdefault(build, {"n": int(n), "runs": []})
    entry["runs"].append({"wall_s": wall, "cpu_s": round(user + system, 3)})
    entry["cpu_ns_per_unit"] = median(r["cpu_s"] for r in entry["runs"]) * 1e9 / entry["n"]
    save(path, results)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    what, args = argv[1], argv[2:]
    if what == "machine-start":
        machine_start(*args)
    elif what == "build-info":
        build_info(*args)
    elif what == "step":
        step(*args)
    elif what == "machine-finish":
        machine_finish(*args)
    elif what == "host-probe":
        host_probe(*args)
    elif what == "vt-merge":
        vt_merge(*args)
    elif what == "criterion":
        return criterion(*args)
    elif what == "callgrind":
        callgrind(args[0], args[1], args[2], args[3:])
    elif what == "callgrind-diff":
        callgrind_diff(args[0], args[1], args[2], args[3], args[4], args[5:])
    elif what == "rss":
        return rss(*args)
    elif what == "skynet":
        return skynet(*args)
    elif what == "observe-time":
        observe_time(*args)
    elif what == "observe-probe":
        observe_probe(*args)
    elif what == "observe-summarize":
        observe_summarize(*args)
    elif what == "channel-ab":
        channel_ab(*args)
    else:
        print(f"record: unknown subcommand {what!r}\n{__doc__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
