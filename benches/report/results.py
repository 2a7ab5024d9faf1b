"""The results that benches/report/collect.sh wrote, as render.py reads them.

One `Results` per results directory; a file that is missing is None (or
empty), and every lookup returns None when its figure is not there, so a
report can say what was not collected instead of failing.
"""

import json
import os
import re

from units import higher_is_better, median, parse_unit

# The versus_threads rows' units, for criterion `versus` keys when
# versus_threads.json is missing, and for keys it does not have.
DEFAULT_UNITS = {
    "handoff_pinned": "ns/hand-off", "handoff_unpinned": "ns/hand-off", "yield_handoff": "ns/hand-off",
    "channel_handoff": "ns/hand-off", "condvar_handoff": "ns/hand-off", "spawn_join": "µs/task",
    "parked_memory": "KiB/task", "contended_mutex": "ns/increment", "pc_condvar": "M items/s",
    "pc_semaphore": "M items/s", "readers_writers": "M ops/s", "skynet": "µs/leaf",
}
# Rows that weft (and may, in the may-1-worker run) measure on one worker:
# Go's figure to compare with is its GOMAXPROCS=1 one.
ONE_WORKER_KEYS = {"handoff_pinned", "handoff_unpinned", "yield_handoff", "channel_handoff", "condvar_handoff"}
# may rows that come from the may-1-worker run.
MAY_ONE_WORKER_KEYS = {"handoff_pinned", "handoff_unpinned", "condvar_handoff", "channel_handoff"}
# The Go peer's row for a versus_threads key, where the names differ.
GO_KEY_FOR = {"handoff_pinned": "handoff_yield", "handoff_unpinned": "handoff_yield"}
SCALING_KEYS = ["skynet", "pc_condvar", "contended_mutex"]


# The default of Results.go_settings and go_row: the main go.json (not scaling/go.json).
MAIN = object()


# ---------------------------------------------------------------------------
# The results
# ---------------------------------------------------------------------------


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


class Results:
    """Everything collect.sh wrote into one directory; a missing file is None."""

    def __init__(self, directory):
        self.dir = directory
        self.machine = read_json(os.path.join(directory, "machine.json"))
        self.vt = read_json(os.path.join(directory, "versus_threads.json"))
        self.crit = read_json(os.path.join(directory, "criterion.json")) or []
        self.callgrind = read_json(os.path.join(directory, "callgrind.json"))
        self.rss = read_json(os.path.join(directory, "rss.json"))
        self.skynet = read_json(os.path.join(directory, "skynet.json"))
        self.go = read_json(os.path.join(directory, "go.json"))
        self.scaling = {}
        scaling_dir = os.path.join(directory, "scaling")
        if os.path.isdir(scaling_dir):
            for name in os.listdir(scaling_dir):
                match = re.fullmatch(r"versus-([0-9]+)\.json", name)
                if match:
                    self.scaling[int(match.group(1))] = read_json(os.path.join(scaling_dir, name))
        self.scaling_go = read_json(os.path.join(scaling_dir, "go.json"))
        # scaling/ is its own collection (scaling.sh), usually on a machine
        # with more CPUs; without its machine.json (older layouts), the main
        # one describes it.
        self.scaling_machine = read_json(os.path.join(scaling_dir, "machine.json")) or self.machine
        # observability/ is its own collection too (observability.sh).
        obs_dir = os.path.join(directory, "observability")
        self.observability = read_json(os.path.join(obs_dir, "observability.json"))
        self.observability_machine = read_json(os.path.join(obs_dir, "machine.json"))
        # before/ is a callgrind collection of an earlier commit (collect.sh
        # --tree DIR --only callgrind --out before), for before/after tables.
        before_dir = os.path.join(directory, "before")
        self.callgrind_before = read_json(os.path.join(before_dir, "callgrind.json"))
        self.before_machine = read_json(os.path.join(before_dir, "machine.json"))
        if self.rss and "parked" in self.rss:
            derive_stack_residency(self.rss["parked"])
        normalise_fp_labels(self.crit, self.callgrind)
        normalise_fp_labels([], self.callgrind_before)
        remedian_vt_rows(self.vt)

    # -- criterion ----------------------------------------------------------

    def crit_entry(self, label, full_id):
        for entry in self.crit:
            if entry["label"] == label and entry["full_id"] == full_id:
                return entry
        return None

    def crit_group(self, group, label):
        entries = [e for e in self.crit if e["group"] == group and e["label"] == label]
        return sorted(entries, key=lambda e: (e.get("order", 0), e["full_id"]))

    def versus_entry(self, key, side):
        label = "may-1-worker" if side.startswith("may") and key in MAY_ONE_WORKER_KEYS else "default"
        for entry in self.crit:
            if entry["group"] == "versus" and entry["label"] == label and entry["id"] == f"{key}/{side}":
                return entry
        return None

    def versus_keys(self):
        keys = {e["id"].split("/", 1)[0] for e in self.crit if e["group"] == "versus" and "/" in e["id"]}
        order = [row["key"] for row in self.vt_rows()]
        return [k for k in order if k in keys] + sorted(keys - set(order))

    def versus_sides(self, key):
        sides = {e["id"].split("/", 1)[1] for e in self.crit
                 if e["group"] == "versus" and e["id"].startswith(key + "/")}
        first = [s for s in ("weft", "threads", "may") if s in sides]
        return first + sorted(sides - set(first))

    def per_op(self, entry, unit):
        """(point, low, high) of a criterion entry per operation, in `unit`."""
        throughput = entry.get("throughput") or {}
        n = throughput.get("Elements")
        if not n:
            return None
        dim, scale = parse_unit(unit)
        times = (entry["median_ns"], entry["median_hi_ns"], entry["median_lo_ns"])
        if dim.startswith("time"):
            point, high, low = (t / n / scale for t in times)
        elif higher_is_better(unit):
            # A rate: N operations / median seconds, in millions per second.
            point, low, high = (n / (t * 1e-9) / 1e6 for t in times)
        else:
            return None
        return point, low, high

    # -- versus_threads and Go ---------------------------------------------

    def vt_rows(self):
        return (self.vt or {}).get("rows", [])

    def vt_row(self, key):
        for row in self.vt_rows():
            if row["key"] == key:
                return row
        return None

    def unit_of(self, key):
        row = self.vt_row(key)
        return row["unit"] if row else DEFAULT_UNITS.get(key)

    def workers(self):
        if self.vt and self.vt.get("workers"):
            return int(self.vt["workers"])
        return int((self.machine or {}).get("nproc") or 2)

    def go_settings(self, go=MAIN):
        go = self.go if go is MAIN else go
        return sorted((go or {}).get("settings", []), key=lambda s: s["gomaxprocs"])

    def go_row(self, procs, key, go=MAIN):
        for setting in self.go_settings(go):
            if setting["gomaxprocs"] == procs:
                for row in setting.get("rows", []):
                    if row["key"] == key and row.get("value") is not None:
                        return row
        return None

    # -- the machine and the steps -------------------------------------------

    def machine_of(self, source):
        """machine.json of the collection that made SOURCE."""
        if source == "scaling":
            return self.scaling_machine
        if source == "observability":
            return self.observability_machine
        if source == "before":
            return self.before_machine
        return self.machine

    def steps_for(self, source, group=None):
        found = []
        for entry in (self.machine_of(source) or {}).get("steps", []):
            if source == "scaling":
                if not entry["source"].startswith("scaling/"):
                    continue
            elif entry["source"] != ("callgrind" if source == "before" else source) + ".json":
                continue
            if group and not re.search(rf"--bench {re.escape(group)}(\s|$)", entry["command"]):
                continue
            found.append(entry)
        return found

    def machine_line(self, source=None):
        m = self.machine_of(source)
        if not m:
            return "on an unknown machine (no machine.json)"
        commit = f"commit `{m.get('commit')}`" + (" with uncommitted changes" if m.get("dirty") else "")
        built = f" (built elsewhere with {m.get('rustc')})" if m.get("prebuilt") else ""
        return f"{m.get('cpu')}, {m.get('nproc')} CPUs, Linux {m.get('kernel')}, {commit}{built}, {collected(m)}"

    def sub(self, name):
        """The collection in the subdirectory `name` (`channel/`, written by
        channel.sh): a results directory of its own, with its own
        machine.json; read once."""
        subs = self.__dict__.setdefault("_subs", {})
        if name not in subs:
            subs[name] = Results(os.path.join(self.dir, name))
        return subs[name]

    def caption(self, source=None):
        m = self.machine_of(source) or {}
        dirty = "+" if m.get("dirty") else ""
        return (f"{m.get('cpu', 'unknown CPU')}, {m.get('nproc', '?')} CPUs, Linux {m.get('kernel', '?')}"
                f" · {collected(m)} · commit {m.get('commit', '?')}{dirty}"
                + (" · QUICK MODE" if m.get("mode") == "quick" else ""))


def collected(machine):
    """ "collected 2026-11-22 14:59–15:05 UTC" from machine.json's times."""
    start = re.match(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d)", machine.get("date_utc", ""))
    end = re.match(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d)", machine.get("end_utc", ""))
    if not start:
        return "collected at an unknown date"
    if not end:
        return f"collected {start.group(1)} {start.group(2)} UTC"
    if end.group(1) == start.group(1):
        return f"collected {start.group(1)} {start.group(2)}–{end.group(2)} UTC"
    return f"collected {start.group(1)} {start.group(2)} UTC to {end.group(1)} {end.group(2)} UTC"


def normalise_fp_labels(crit, callgrind):
    """Collections made while `fp-control` was a default feature label the
    switch's two builds `default` (the FP check on) and `no-fp-control`;
    since the feature is opt-in they are `default` (off) and `fp-control`
    (on). The old labels are renamed as they are read, so that one template
    reads both kinds of collection (machine.json keeps the commands that
    ran: `--no-default-features` then, `--features fp-control` now)."""
    switch_cg = (callgrind or {}).get("switch") or {}
    legacy = "no-fp-control" in switch_cg or any(e["label"] == "no-fp-control" for e in crit)
    if not legacy:
        return
    rename = {"default": "fp-control", "no-fp-control": "default"}
    for entry in crit:
        if entry["group"] == "switch" and entry["label"] in rename:
            entry["label"] = rename[entry["label"]]
    if switch_cg:
        callgrind["switch"] = {rename.get(build, build): v for build, v in switch_cg.items()}


def remedian_vt_rows(vt):
    """Each versus_threads row's figures as the median of its pooled runs.
    record.py's vt_merge stores the upper median (of 10 pooled runs, the
    6th), which for a bimodal side is one mode's edge, not the middle; the
    runs are in the file, so the median is recomputed here, and the ratio
    from the two medians. A row whose sides have an odd number of runs is
    unchanged (its upper median is its median)."""
    for row in (vt or {}).get("rows", []):
        for side in ("weft", "threads"):
            if row.get(f"{side}_runs"):
                row[side] = median(row[f"{side}_runs"])
        if row.get("weft") and row.get("threads"):
            better, worse = (row["weft"], row["threads"]) if row.get("higher_is_better") \
                else (row["threads"], row["weft"])
            row["ratio"] = better / worse


def derive_stack_residency(parked):
    """From the probe's histogram: the most common resident size of a stack
    mapping, and the share of mappings that have it."""
    histogram = parked.get("stack_histogram") or []
    total = sum(bucket["mappings"] for bucket in histogram)
    if total:
        top = max(histogram, key=lambda bucket: (bucket["mappings"], -bucket["rss_kib"]))
        parked["stack_resident_kib"] = top["rss_kib"]
        parked["stack_resident_share"] = top["mappings"] / total
        parked["stack_mappings"] = total


def versus_cell(results, key, side):
    unit = results.unit_of(key)
    entry = results.versus_entry(key, side)
    if not entry or not unit:
        return None
    return results.per_op(entry, unit)


def go_procs_for(results, key):
    return 1 if key in ONE_WORKER_KEYS else results.workers()


def scaling_series(results):
    """{key: {side: {n: value}}}, with the unit of each key."""
    series, units = {}, {}
    for n, vt in sorted(results.scaling.items()):
        for row in (vt or {}).get("rows", []):
            if row["key"] not in SCALING_KEYS:
                continue
            units[row["key"]] = row["unit"]
            for side in ("weft", "threads"):
                if row.get(side) is not None:
                    series.setdefault(row["key"], {}).setdefault(side, {})[n] = row[side]
    for setting in results.go_settings(results.scaling_go):
        for row in setting.get("rows", []):
            if row["key"] in SCALING_KEYS and row.get("value") is not None:
                series.setdefault(row["key"], {}).setdefault("go", {})[setting["gomaxprocs"]] = row["value"]
                units.setdefault(row["key"], row["unit"])
    return series, units


SIDE_NAMES = {"weft": "weft", "threads": "OS threads", "go": "Go"}
