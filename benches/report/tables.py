"""The generated blocks of the report: Markdown tables, the machine
paragraph, and the provenance lines (which commands, which machine, when).
"""

import os
import re

from results import GO_KEY_FOR, MAY_ONE_WORKER_KEYS, ONE_WORKER_KEYS, SCALING_KEYS, SIDE_NAMES, collected, \
    go_procs_for, scaling_series, versus_cell
from units import fmt_int, fmt_num, fmt_pct, fmt_ratio, fmt_time, higher_is_better, parse_unit

# weft's figure for a Go row: (source, key), source vt or versus.
WEFT_FOR_GO = {
    "handoff_yield": ("vt", "handoff_pinned"), "channel_handoff": ("versus", "channel_handoff"),
    "spawn_join": ("vt", "spawn_join"), "parked_memory": ("vt", "parked_memory"),
    "condvar_handoff": ("vt", "condvar_handoff"), "contended_mutex": ("vt", "contended_mutex"),
    "pc_condvar": ("vt", "pc_condvar"), "readers_writers": ("vt", "readers_writers"), "skynet": ("vt", "skynet"),
}
# Names of criterion `versus` keys that versus_threads has no row for.
EXTRA_WORKLOADS = {"channel_handoff": "channel hand-off (may's and std's mpsc; weft's channels: see Channels)",
                   "yield_handoff": "yield hand-off"}
# Within this factor of each other, two figures are "level" in the Go summary.
LEVEL = 1.1


# ---------------------------------------------------------------------------
# Markdown tables
# ---------------------------------------------------------------------------


def md_table(headers, rows, align):
    """align: one of "l" / "r" per column."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        parts = [v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(values, widths, align)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2)) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(headers), rule] + [line(r) for r in cells])


def spread(runs, middle):
    """Half the runs' range as a share of their median: "±3.1 %"."""
    if not runs or not middle:
        return "—"
    return "±" + fmt_pct((max(runs) - min(runs)) / 2 / abs(middle))


def ci_spread(entry):
    return "±" + fmt_pct((entry["median_hi_ns"] - entry["median_lo_ns"]) / 2 / entry["median_ns"])


def better_ratio(weft, other, unit):
    """How many times better weft did than `other` (above 1: weft wins)."""
    if weft is None or other is None or weft == 0 or other == 0:
        return None
    return weft / other if higher_is_better(unit) else other / weft


def ratio_range(weft, other, unit):
    """(low, high) of better_ratio over (low, high) ranges of both sides."""
    (w_lo, w_hi), (o_lo, o_hi) = weft, other
    if higher_is_better(unit):
        return w_lo / o_hi, w_hi / o_lo
    return o_lo / w_hi, o_hi / w_lo


def value_in(unit, x):
    return fmt_num(x) if x is not None else "—"


def table_versus_threads(results):
    rows = []
    for row in results.vt_rows():
        unit = row["unit"]
        rows.append([row["workload"],
                     value_in(unit, row.get("weft")), spread(row.get("weft_runs"), row.get("weft")),
                     value_in(unit, row.get("threads")), spread(row.get("threads_runs"), row.get("threads")),
                     fmt_ratio(row["ratio"]) if row.get("ratio") else "—", unit])
    table = md_table(["workload", "weft", "±", "OS threads", "±", "ratio", "unit"], rows,
                     ["l", "r", "r", "r", "r", "r", "l"])
    return table + f"\n\nLoad average at the example's start: {results.vt.get('load_average_at_start')}."


def table_versus(results):
    """Criterion's `versus` group per operation, a column per side, and Go's
    figure from go.json at the matching GOMAXPROCS."""
    keys = results.versus_keys()
    sides = ["weft", "threads", "may"]
    sides += sorted({side for key in keys for side in results.versus_sides(key)} - set(sides))
    with_go = bool(results.go)
    headers = ["workload"] + [SIDE_NAMES.get(side, side) for side in sides] + (["Go"] if with_go else []) + ["unit"]
    headers += ["vs threads", "vs may"] + (["vs Go"] if with_go else [])
    rows = []
    for key in keys:
        unit = results.unit_of(key) or "?"
        vt_row = results.vt_row(key)
        values = {}
        for side in sides:
            cell = versus_cell(results, key, side)
            values[side] = cell[0] if cell else None
        if with_go:
            go_row = results.go_row(go_procs_for(results, key), GO_KEY_FOR.get(key, key))
            values["go"] = go_row["value"] * parse_unit(go_row["unit"])[1] / parse_unit(unit)[1] if go_row else None
        cells = [vt_row["workload"] if vt_row else EXTRA_WORKLOADS.get(key, key)]
        cells += [value_in(unit, values[side]) for side in sides + (["go"] if with_go else [])]
        cells.append(unit)
        for other in ["threads", "may"] + (["go"] if with_go else []):
            ratio = better_ratio(values["weft"], values[other], unit)
            cells.append(fmt_ratio(ratio) if ratio else "—")
        rows.append(cells)
    unit_column = headers.index("unit")
    align = ["l"] + ["r"] * (unit_column - 1) + ["l"] + ["r"] * (len(headers) - unit_column - 1)
    notes = ["Per operation: each criterion iteration runs one whole workload, and its median is divided by the "
             "operations the workload counts (criterion's throughput elements). The \"vs\" columns say how many "
             "times better weft did (above 1: weft wins).",
             "may's rows " + ", ".join(f"`{key}`" for key in sorted(MAY_ONE_WORKER_KEYS)) + " come from the "
             "`may-1-worker` run (`WEFT_BENCH_MAY_WORKERS=1`), its other rows from the default run."]
    if with_go:
        one_worker = ", ".join(f"`{key}`" for key in sorted(ONE_WORKER_KEYS & set(keys)))
        notes.append(f"Go: go.json at GOMAXPROCS=1 for the rows weft runs on one worker ({one_worker}; the yield "
                     f"hand-offs against Go's Gosched hand-off), at GOMAXPROCS={results.workers()} for the others.")
    return md_table(headers, rows, align) + "\n\n" + " ".join(notes)


def crosscheck_rows(results):
    out = []
    for row in results.vt_rows():
        key, unit = row["key"], row["unit"]
        weft, threads = versus_cell(results, key, "weft"), versus_cell(results, key, "threads")
        if not weft or not threads or not row.get("weft_runs") or not row.get("threads_runs"):
            continue
        vt_range = ratio_range((min(row["weft_runs"]), max(row["weft_runs"])),
                               (min(row["threads_runs"]), max(row["threads_runs"])), unit)
        crit_ratio = better_ratio(weft[0], threads[0], unit)
        crit_range = ratio_range((weft[1], weft[2]), (threads[1], threads[2]), unit)
        agree = max(vt_range[0], crit_range[0]) <= min(vt_range[1], crit_range[1])
        out.append((row, vt_range, crit_ratio, crit_range, agree))
    return out


def table_crosscheck(results):
    rows = []
    for row, vt_range, crit_ratio, crit_range, agree in crosscheck_rows(results):
        rows.append([row["workload"], fmt_ratio(row["ratio"]), f"{fmt_num(vt_range[0])}–{fmt_ratio(vt_range[1])}",
                     fmt_ratio(crit_ratio), f"{fmt_num(crit_range[0])}–{fmt_ratio(crit_range[1])}",
                     fmt_ratio(crit_ratio / row["ratio"]), "yes" if agree else "**no**"])
    if not rows:
        return ("*No cross-check: it needs both versus_threads.json and criterion's `versus` group, with weft "
                "and threads rows.*")
    headers = ["workload", "versus_threads", "range", "criterion", "range", "criterion / versus_threads", "agree"]
    return md_table(headers, rows, ["l", "r", "r", "r", "r", "r", "l"])


def crosscheck_summary(results):
    rows = crosscheck_rows(results)
    if not rows:
        return ""
    disagree = [row["workload"] for row, _vt, _ratio, _crit, agree in rows if not agree]
    if not disagree:
        text = f"All {len(rows)} rows agree."
    else:
        text = f"{len(rows) - len(disagree)} of {len(rows)} rows agree; these do not: {'; '.join(disagree)}."
    # How much the noise differs between rows: the runs' spread of each side.
    spreads = []
    for row in results.vt_rows():
        for side in ("weft", "threads"):
            runs, middle = row.get(f"{side}_runs"), row.get(side)
            if runs and middle:
                spreads.append(((max(runs) - min(runs)) / 2 / abs(middle), f"{row['workload']}, {side}"))
    if spreads:
        low, high = min(spreads), max(spreads)
        text += (f" The runs' spread in versus_threads (half their range over the median) goes from "
                 f"±{fmt_pct(low[0])} ({low[1]}) to ±{fmt_pct(high[0])} ({high[1]}).")
    mode = (results.vt or {}).get("mode")
    if mode and mode != "full":
        text += (f" versus_threads ran in `{mode}` mode, with smaller workloads than the criterion bench (which "
                 f"always runs the full sizes), so the two need not agree here.")
    return text


def crit_rows_table(results, group, labels, headers):
    """One row per benchmark id of `group`, one median and ± column pair per label."""
    ids = []
    for label in labels:
        for entry in results.crit_group(group, label):
            if entry["id"] not in ids:
                ids.append(entry["id"])
    if not ids:
        return None
    rows = []
    for ident in ids:
        cells = [ident.replace("/", ": ", 1)]
        for label in labels:
            entry = results.crit_entry(label, f"{group}/{ident}")
            cells += [fmt_time(entry["median_ns"]), ci_spread(entry)] if entry else ["—", ""]
        rows.append(cells)
    heads = ["bench"]
    for header in headers:
        heads += [header, "±"]
    return md_table(heads, rows, ["l"] + ["r"] * (len(heads) - 1))


def table_switch(results):
    return crit_rows_table(results, "switch", ["default", "fp-control"],
                           ["default (fp-control off)", "fp-control on"]) or ""


def table_group(group):
    def table(results):
        return crit_rows_table(results, group, ["default"], ["median"]) or ""
    return table


def go_weft_value(results, go_key, unit):
    """weft's figure for a Go row, in `unit`, or None."""
    if go_key not in WEFT_FOR_GO:
        return None
    source, key = WEFT_FOR_GO[go_key]
    if source == "vt":
        row = results.vt_row(key)
        if not row or row.get("weft") is None:
            return None
        return row["weft"] * parse_unit(row["unit"])[1] / parse_unit(unit)[1]
    cell = versus_cell(results, key, "weft")
    if not cell:
        return None
    return cell[0] * parse_unit(results.unit_of(key))[1] / parse_unit(unit)[1]


def go_comparisons(results):
    """(go row, weft value, Go value at matching GOMAXPROCS, procs, ratio) per Go row key."""
    settings = results.go_settings()
    if not settings:
        return []
    keys = []
    for setting in settings:
        for row in setting.get("rows", []):
            if row["key"] not in keys:
                keys.append(row["key"])
    out = []
    for key in keys:
        procs = 1 if key in ONE_WORKER_KEYS or key == "handoff_yield" else results.workers()
        go_row = results.go_row(procs, key) or next(
            (results.go_row(s["gomaxprocs"], key) for s in settings if results.go_row(s["gomaxprocs"], key)), None)
        if go_row is None:
            continue
        weft = go_weft_value(results, key, go_row["unit"])
        matched = results.go_row(procs, key)
        ratio = better_ratio(weft, matched["value"], go_row["unit"]) if matched else None
        out.append((go_row, weft, procs, ratio))
    return out


def table_go(results):
    settings = results.go_settings()
    if not settings:
        return ""
    headers = ["workload", "weft"] + [f"Go, GOMAXPROCS={s['gomaxprocs']}" for s in settings] + ["unit", "weft vs Go"]
    rows = []
    for go_row, weft, procs, ratio in go_comparisons(results):
        cells = [go_row["workload"], value_in(go_row["unit"], weft)]
        for setting in settings:
            row = results.go_row(setting["gomaxprocs"], go_row["key"])
            cells.append(value_in(go_row["unit"], row["value"] if row else None))
        cells += [go_row["unit"], f"{fmt_ratio(ratio)} (at {procs})" if ratio else "—"]
        rows.append(cells)
    table = md_table(headers, rows, ["l"] + ["r"] * (len(settings) + 1) + ["l", "r"])
    go = results.go
    first = settings[0]
    return table + (f"\n\n{go.get('go_version')}, mode `{first.get('mode')}`. weft's figures: versus_threads "
                    f"({results.workers()} workers; one worker for the hand-offs); weft's channel figures are in the "
                    f"Channels section. \"weft vs Go\": how many times better weft did than Go at the "
                    f"GOMAXPROCS in brackets (above 1: weft wins).")


def go_summary(results):
    comparisons = [c for c in go_comparisons(results) if c[3]]
    if not comparisons:
        return ""
    ahead = [c for c in comparisons if c[3] > LEVEL]
    behind = [c for c in comparisons if c[3] < 1 / LEVEL]
    level = [c for c in comparisons if 1 / LEVEL <= c[3] <= LEVEL]

    def names(group):
        return "; ".join(f"{c[0]['workload']} ({fmt_ratio(c[3])})" for c in group) or "none"

    margin = fmt_pct(LEVEL - 1)
    return (f"At matching parallelism (the \"weft vs Go\" column), weft is ahead of Go by more than {margin} on: "
            f"{names(ahead)}. Level, within {margin}: {names(level)}. Behind by more than {margin}: {names(behind)}.")


def table_scaling(results):
    series, units = scaling_series(results)
    if not series:
        return ""
    ns = sorted({n for sides in series.values() for values in sides.values() for n in values})
    cores = (results.scaling_machine or {}).get("nproc") or 0
    headers = ["workload", "side", "unit"] + [f"{n}{'*' if cores and n > cores else ''}" for n in ns]
    rows = []
    for key in SCALING_KEYS:
        for side in ("weft", "threads", "go"):
            values = series.get(key, {}).get(side)
            if values:
                rows.append([key, SIDE_NAMES[side], units[key]] + [value_in(units[key], values.get(n)) for n in ns])
    table = md_table(headers, rows, ["l", "l", "l"] + ["r"] * len(ns))
    note = ("Columns: weft workers (and the contended Mutex's task count), OS threads as versus_threads runs them "
            "with `--workers N`, Go's GOMAXPROCS.")
    if cores and any(n > cores for n in ns):
        note += f" \\*: more than the machine's {cores} CPUs (oversubscribed)."
    return table + "\n\n" + note


# ---------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------


def source_present(results, source, group=None):
    if source == "criterion":
        return bool(results.crit_group(group, "default") or results.crit_group(group, "fp-control")) \
            if group else bool(results.crit)
    if source == "scaling":
        return bool(results.scaling)
    return getattr(results, {"versus_threads": "vt", "before": "callgrind_before"}.get(source, source)) is not None


COLLECT_HINT = {
    "go": " (`bash benches/report/collect.sh --go`)",
    "scaling": " (`bash benches/report/scaling.sh --go \"1 2 4 8 16\"` on a machine with that many CPUs)",
    "observability": " (`bash benches/report/observability.sh`)",
}


def not_collected_sentence(results, source, group=None):
    what = f"criterion group `{group}`" if group else f"`{source}`"
    steps = results.steps_for(source, group)
    reasons = sorted({s["status"] for s in steps if s["status"] != "ok"})
    if source == "scaling" and not steps:
        return f"*No scaling figures: no scaling collection was made{COLLECT_HINT['scaling']}.*"
    if reasons:
        return f"*No figures from {what}: {'; '.join(reasons)}.*"
    return f"*No figures from {what}: it was not collected{COLLECT_HINT.get(source, '')}.*"


def about(results, *specs):
    """The commands behind SOURCE[:GROUP]..., the machine and the date; a
    sentence for each source that was not collected."""
    commands, problems, absent = [], [], []
    for spec in specs:
        source, _, group = spec.partition(":")
        group = group or None
        if not source_present(results, source, group):
            absent.append(not_collected_sentence(results, source, group))
            continue
        for entry in results.steps_for(source, group):
            if entry["status"].startswith("skipped"):
                problems.append(f"`{entry['command']}` was {entry['status']}")
                continue
            if entry["command"] not in commands:
                commands.append(entry["command"])
            if entry["status"] != "ok":
                problems.append(f"`{entry['command']}` {entry['status']}; what it finished before that is here")
    parts = []
    if commands:
        parts.append("\n".join(["```sh"] + commands + ["```"]))
    if len(absent) < len(specs):
        # One collection per about line: the scaling one has its own machine.
        text = f"*{results.machine_line(specs[0].partition(':')[0])}.*"
        if problems:
            text += " " + "; ".join(sorted(set(problems))) + "."
        parts.append(text)
    return "\n\n".join(parts + absent)


def short_subject(subject, limit=72):
    subject = subject or ""
    return subject if len(subject) <= limit else subject[:limit - 1].rstrip() + "…"


def machine_paragraph(results):
    m = results.machine
    if not m:
        return "**Machine.** Unknown: the results have no machine.json."
    glibc = re.search(r"(\d+\.\d+)\s*$", m.get("glibc") or "")
    rustc = re.match(r"rustc \S+", m.get("rustc") or "")
    perf = {True: "hardware perf counters available",
            False: "no hardware perf counters (instruction counts come from `valgrind --tool=callgrind`)",
            None: "hardware perf counters unknown"}[m.get("hardware_perf_counters")]
    memory = f", {fmt_num(m['mem_total_kib'] / 1024 / 1024)} GiB" if m.get("mem_total_kib") else ""
    text = (f"**Machine.** {m.get('cpu')}, {m.get('nproc')} CPUs{memory}, Linux {m.get('kernel')}, "
            f"{rustc.group(0) if rustc else m.get('rustc')}, glibc {glibc.group(1) if glibc else m.get('glibc')}, "
            f"`vm.max_map_count` {fmt_int(m['vm_max_map_count']) if m.get('vm_max_map_count') else 'unknown'}; {perf}. "
            f"C{collected(m)[1:]}, at commit `{m.get('commit')}` (\"{short_subject(m.get('commit_subject'))}\")"
            f"{', with uncommitted changes' if m.get('dirty') else ''}; load average {m.get('load_average_before')} "
            f"before the collection, {m.get('load_average_after', 'unknown')} after.")
    probe = m.get("host_probe")
    if probe:
        text += (f" What the host charges for the operations the fast paths are made of "
                 f"(`WEFT_HOST_PROBE=1 cargo bench -p weft-benches --bench sync`, at the start of the collection): "
                 f"an uncontended atomic read-modify-write {fmt_num(probe['atomic_rmw_ns'])} ns, a compare-exchange "
                 f"{fmt_num(probe['compare_exchange_ns'])} ns, a clock read (`Instant::now`) "
                 f"{fmt_num(probe['clock_read_ns'])} ns, a spin-loop hint {fmt_num(probe['spin_hint_ns'])} ns; "
                 f"hosts that print the same CPU name can differ severalfold here, so compare figures across "
                 f"collections only as ratios to the peers measured in the same one.")
    if m.get("mode") == "quick":
        text = ("> **Quick mode.** These figures come from `collect.sh --quick`: short runs and small sizes, to "
                "check the pipeline. Do not compare them with anything.\n\n") + text
    return text


def notes_versus_threads(results):
    rows = results.vt_rows()
    if not rows:
        return not_collected_sentence(results, "versus_threads")
    return "\n".join(f"- **{row['workload']}**: {row['note']}" for row in rows if row.get("note"))


# ---------------------------------------------------------------------------
# By name, for {{table NAME}}
# ---------------------------------------------------------------------------

# A table whose source was not collected is left out: the section's
# {{about}} says so (the cross-check, which has no source of its own, says
# itself what it misses).
def table_net(results):
    """net.sh's collection (benches/results/net/): the HTTP, echo and idle
    connection tables, with the commands, the machine and the date."""
    import json
    path = os.path.join(results.dir, "net.json")
    if not os.path.exists(path):
        return ("*Not collected yet: run `bash benches/report/net.sh` (it installs wrk; about 12 minutes on 2 "
                "cores) to write benches/results/net/.*")
    net = json.load(open(path))
    machine = json.load(open(os.path.join(results.dir, "machine.json")))
    medians = net["medians"]

    def find(kind, server, conns=None):
        for m in medians:
            if m["kind"] == kind and m["server"] == server and m.get("conns") == conns:
                return m
        return None

    def k(x):
        return "—" if x is None else f"{x / 1000:.1f} k"

    parts = []
    order = ["weft", "tokio", "hyper", "monoio", "may", "std-threads", "go-raw", "go-net-http"]

    def failed(m):
        """A median's runs that did not finish, said after its figures."""
        return f" ({m['failed']} of {m['runs'] + m['failed']} failed)" if m.get("failed") else ""
    for conns in (100, 1000):
        tokio = find("http", "tokio", conns)
        rows = []
        for server in order:
            m = find("http", server, conns)
            if not m:
                continue
            if not m["runs"]:
                rows.append([server + failed(m)] + ["—"] * 6)
                continue
            ratio = (f"{m['per_cpu_s'] / tokio['per_cpu_s']:.2f}x"
                     if tokio and m.get("per_cpu_s") and tokio.get("per_cpu_s") else "—")
            errors = [r for r in net["runs"] if r["kind"] == "http" and r["server"] == server and "failed" not in r
                      and r["conns"] == conns and (sum(r["errors"].values()) or r["non_2xx"])]
            rows.append([(f"**{server}**" if server == "weft" else server) + failed(m), k(m.get("rps")),
                         f"{m['p99_ms']:.2f} ms", f"{m.get('server_cpu_s', 0):.2f} s", k(m.get("per_cpu_s")), ratio,
                         f"{len(errors)} of {m['runs']}" if errors else "none"])
        parts.append(f"HTTP/1.1 hello, keep-alive, `wrk -t1 -c{conns}` ({machine['duration_s']} s runs, median of "
                     f"{machine['repetitions']}):\n\n" + md_table(
                         ["server (1 CPU)", "requests/s", "p99", "server CPU", "requests per server-CPU-s",
                          "vs tokio (per CPU-s)", "runs with socket errors"],
                         rows, ["l", "r", "r", "r", "r", "r", "r"]))
    tokio = find("echo", "tokio", 100) or find("echo", "tokio")
    rows = []
    for server in order:
        m = find("echo", server, 100) or find("echo", server)  # collections before 2026-12-05: no conns
        if not m:
            continue
        if not m["runs"]:
            rows.append([server + failed(m)] + ["—"] * 5)
            continue
        ratio = (f"{m['per_cpu_s'] / tokio['per_cpu_s']:.2f}x"
                 if tokio and m.get("per_cpu_s") and tokio.get("per_cpu_s") else "—")
        rows.append([(f"**{server}**" if server == "weft" else server) + failed(m), k(m.get("rps")),
                     f"{m['p50_ms']:.2f} ms" if m.get("p50_ms") is not None else "—", f"{m['p99_ms']:.2f} ms",
                     k(m.get("per_cpu_s")), ratio])
    if rows:
        parts.append("Echo, 100 connections, 64-byte ping-pong (Go load client on the other CPU):\n\n" + md_table(
            ["server (1 CPU)", "round trips/s", "p50", "p99", "round trips per server-CPU-s", "vs tokio (per CPU-s)"],
            rows, ["l", "r", "r", "r", "r", "r"]))
    rows = []
    for server in order:
        m = next((m for m in medians if m["kind"] == "idle" and m["server"] == server), None)
        if m and m.get("kib_per_conn") is not None:
            rows.append([f"**{server}**" if server == "weft" else server, f"{m['conns']}",
                         f"{m['kib_per_conn']:.1f} KiB"])
    if rows:
        parts.append("Idle keep-alive connections (one request each, then held open): server RSS per "
                     "connection:\n\n" + md_table(["server", "connections", "RSS per connection"], rows,
                                                   ["l", "r", "r"]))
    dirty = " (with uncommitted changes)" if machine.get("dirty") else ""
    quick = (" **These are --quick figures (short runs, one repetition): not for comparison.**"
             if machine["duration_s"] < 10 else "")
    for line in machine.get("notes", []):
        parts.append(f"*Note from net.sh: {line}.*")
    # machine.json has every command as run; here each once, the ports and
    # the Go binary's temporary path generic.
    steps = []
    for step in machine["steps"]:
        step = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", step)
        step = re.sub(r"/tmp/tmp\.\w+/weftnetpeers", "$GO_PEER", step)
        if step.startswith("go build"):
            step = "(cd benches/peers/go/net && go build -o $GO_PEER .)"
        if step not in steps:
            steps.append(step)
    parts.append("```sh\n" + "\n".join(steps) + "\n```")
    parts.append(f"*{machine['cpu']}, {machine['cpus']} CPUs, Linux {machine['kernel']}; commit "
                 f"`{machine['commit'][:10]}`{dirty}; {machine['date']}; load average {machine['load_before']} "
                 f"before, {machine['load_after']} after.{quick}*")
    return "\n\n".join(parts)


# placement.sh's files: per turn N, default.N.json and same_worker.N.json
# (versus_threads), go2.N.json and go1.N.json (the Go peer), and
# goP.N.cpu.json (the Go peer's /usr/bin/time).
PLACEMENT_FILES = {"default": ("default.*.json", "weft"), "same_worker": ("same_worker.*.json", "weft"),
                   "threads": ("default.*.json", "threads"), "go2": ("go2.*[0-9].json", "go"),
                   "go1": ("go1.*[0-9].json", "go")}


def placement_pooled(d, pattern, key, side):
    """Every run of row `key` on `side` over placement.sh's turns' files
    matching `pattern` in `d`, and the row."""
    import glob
    import json
    runs, row = [], None
    for path in sorted(glob.glob(os.path.join(d, pattern))):
        for r in json.load(open(path))["rows"]:
            if r["key"] == key:
                row = r
                runs += r[side + "_runs"] if side in ("weft", "threads") else r["runs"]
    return runs, row


def placement_cpu_shares(d, procs):
    """The Go peer's CPU seconds over wall seconds, one per turn, at GOMAXPROCS=procs."""
    import glob
    import json
    return [(t["user_s"] + t["sys_s"]) / t["wall_s"]
            for t in (json.load(open(p)) for p in sorted(glob.glob(os.path.join(d, f"go{procs}.*.cpu.json"))))
            if t["wall_s"] > 0]


def table_placement(results):
    """placement.sh's collection (benches/results/placement/): the lock rows
    on 2 workers with the default placement and with Builder::same_worker,
    beside Go at GOMAXPROCS=2 and =1, with the commands, machine and date."""
    import glob
    import json
    import statistics
    d = results.dir
    if not os.path.exists(os.path.join(d, "machine.json")):
        return "*Not collected yet: run `bash benches/report/placement.sh` (about 2 minutes on 2 cores).*"
    machine = json.load(open(os.path.join(d, "machine.json")))

    def pooled(pattern, key, side):
        return placement_pooled(d, pattern, key, side)

    def cell(runs, unit):
        if not runs:
            return "—", None
        m = statistics.median(runs)
        return f"{fmt_num(m)} {spread(runs, m)}", m

    rows, medians = [], {}
    for key in ("contended_mutex", "pc_condvar", "pc_semaphore", "readers_writers"):
        default_runs, row = pooled("default.*.json", key, "weft")
        if row is None:
            continue
        unit = row["unit"]
        threads_runs, _ = pooled("default.*.json", key, "threads")
        same_runs, _ = pooled("same_worker.*.json", key, "weft")
        go2_runs, _ = pooled("go2.*[0-9].json", key, "go")
        go1_runs, _ = pooled("go1.*[0-9].json", key, "go")
        default, dm = cell(default_runs, unit)
        same, sm = cell(same_runs, unit)
        go2, g2 = cell(go2_runs, unit)
        go1, _ = cell(go1_runs, unit)
        threads, _ = cell(threads_runs, unit)
        vs_go = better_ratio(sm, g2, unit) if sm and g2 else None
        vs_default = better_ratio(sm, dm, unit) if sm and dm else None
        rows.append([row["workload"], default, f"**{same}**", go2, go1, threads, unit,
                     fmt_ratio(vs_default) if vs_default else "—", fmt_ratio(vs_go) if vs_go else "—"])
        medians[key] = {"default": dm, "same": sm, "go2": g2, "go1": cell(go1_runs, unit)[1],
                        "threads": cell(threads_runs, unit)[1], "unit": unit,
                        "runs": {"default": default_runs, "same": same_runs, "go2": go2_runs, "threads": threads_runs}}
    table = md_table(["workload", "weft, default placement", "weft, same_worker", "Go, GOMAXPROCS=2",
                      "Go, GOMAXPROCS=1", "OS threads", "unit", "same_worker vs default", "same_worker vs Go (2)"],
                     rows, ["l", "r", "r", "r", "r", "r", "l", "r", "r"])
    cpu = []
    for procs in (2, 1):
        shares = placement_cpu_shares(d, procs)
        if shares:
            cpu.append(f"{fmt_num(statistics.median(shares))} CPUs at GOMAXPROCS={procs}")
    parts = [table]

    def verdict(key, what, goal):
        """`goal(placement, m)` for each placement of row `key`: "met (…)" or
        "missed (…)". A goal is judged on the medians; where the runs'
        ranges of the two sides overlap the verdict says so."""
        m = medians.get(key)
        if not m or m["go2"] is None:
            return None
        said = []
        for placement, name in (("same", "with same_worker"), ("default", "with the default placement")):
            if m[placement] is None:
                continue
            ok, detail = goal(placement, m)
            said.append(f"{name} {'met' if ok else 'missed'} ({detail})")
        return f"{what}: " + "; ".join(said) if said else None

    def against(placement, other, m, whose):
        """The median ratio of `placement` over side `other` (above 1: weft
        better), said as "1.5x Go's", and where the two sides' runs overlap,
        the ratio's range over them."""
        runs, theirs = m["runs"][placement], m["runs"][other]
        r = better_ratio(m[placement], m[other], m["unit"])
        if r is None or min(runs) <= 0 or min(theirs) <= 0:
            return 0.0, "no usable figure"
        lo, hi = ratio_range((min(runs), max(runs)), (min(theirs), max(theirs)), m["unit"])
        overlap = lo < 1 < hi
        return r, f"{fmt_ratio(r)} {whose}" + (f", {fmt_ratio(lo)} to {fmt_ratio(hi)} over the runs" if overlap else "")

    def vs_go(placement, m):
        r, said = against(placement, "go2", m, "Go's")
        return r >= 1, said

    def pc_goal(placement, m):
        rg, said_go = against(placement, "go2", m, "Go's")
        if m["threads"] is None:
            return False, f"{said_go}; no OS-threads figure"
        rt, said_threads = against(placement, "threads", m, "OS threads'")
        return rg >= 1 and rt >= 5, f"{said_go}, {said_threads}"

    def mutex_goal(placement, m):
        weft = m[placement]
        sides = [(m["go2"], "go2", "Go's at 2 Ps")] + ([(m["threads"], "threads", "std's")] if m["threads"] else [])
        best, side, whose = min(sides)
        r, said = against(placement, side, m, whose)
        detail = f"{fmt_num(weft)} ns against {fmt_num(best)} ns: {said}"
        if m["go1"] is not None and m["go1"] < weft:
            detail += f"; Go on one P, {fmt_num(m['go1'])} ns, is faster still"
        return r >= 1, detail
    verdicts = [v for v in (
        verdict("readers_writers", "Readers-writers, at least Go's throughput at 2 Ps", vs_go),
        verdict("contended_mutex", "Contended Mutex, no slower than Go and std (parking_lot: see the Sync section)",
                mutex_goal),
        verdict("pc_condvar", "Producer-consumer (Mutex+Condvar), at least Go's and 5x OS threads' throughput",
                pc_goal)) if v]
    if verdicts:
        parts.append("Against the 2-CPU goals of the scaling work (computed from the medians above; where the "
                     "two sides' runs overlap, the ratio's range over them follows, and the verdict is the "
                     "medians' only):\n\n" +
                     "\n".join(f"- {v}." for v in verdicts))
    if cpu:
        parts.append("The Go peer's process, running its three rows of this table (CPU seconds over wall seconds, "
                     "median over the turns, `/usr/bin/time`): " + ", ".join(cpu) + ".")
    steps = []
    for step in machine["steps"]:
        if step not in steps:
            steps.append(step)
    dirty = " (with uncommitted changes)" if machine.get("dirty") else ""
    parts.append("```sh\nbash benches/report/placement.sh   # runs, in each of " + str(machine["repetitions"]) +
                 " turns (N), the last four:\n" + "\n".join(steps) + "\n```")
    parts.append(f"*{machine['cpu']}, {machine['cpus']} CPUs, Linux {machine['kernel']}; commit "
                 f"`{machine['commit'][:10]}`{dirty}; {machine['date']}; load average {machine['load_before']} "
                 f"before, {machine['load_after']} after. Each cell: the median of every run of every turn "
                 f"(versus_threads: 5 runs per turn; Go: 5), ± half their range as a share of the median.*")
    return "\n\n".join(parts)


TABLES = {"net": table_net, "placement": table_placement, "versus_threads": lambda r: table_versus_threads(r) if r.vt else "",
          "versus": lambda r: table_versus(r) if r.versus_keys() else "",
          "crosscheck": table_crosscheck, "switch": table_switch, "runtime": table_group("runtime"),
          "sync": table_group("sync"), "go": table_go, "scaling": table_scaling}
