"""The template language of BENCHMARKS.md.in: named figures, expressions
over them, and the generated blocks. render.py's docstring is its manual.

A figure is looked up only when a placeholder uses it; one that is not in
the results raises `Missing`, and the placeholder prints "n/a" (a goal,
"not measured"). A mistake in the template itself (an unknown name, a unit
mismatch, an unknown function) raises `TemplateError` and stops the render.
"""

import ast
import json
import os
import re
import shlex

from plots import PLOTS_BY_NAME, PLOTS_DIR
from results import scaling_series
from tables import (PLACEMENT_FILES, TABLES, about, crosscheck_summary, go_summary, machine_paragraph,
                    notes_versus_threads, placement_cpu_shares, placement_pooled)
from units import Q, fmt_pct, plain


class Missing(Exception):
    """A figure that is not in the results."""


class TemplateError(Exception):
    """A mistake in the template (an unknown name, a bad expression)."""


# ---------------------------------------------------------------------------
# Sources: the `let NAME = SOURCE ARG...` figures
# ---------------------------------------------------------------------------


def need(value, what):
    if value is None:
        raise Missing(what)
    return value


def source_crit(results, label, full_id):
    entry = need(results.crit_entry(label, full_id), f"criterion {label} {full_id}")
    return Q(entry["median_ns"], "time")


def source_versus(results, key, side):
    unit = need(results.unit_of(key), f"the unit of {key}")
    entry = need(results.versus_entry(key, side), f"criterion versus/{key}/{side}")
    point = need(results.per_op(entry, unit), f"throughput of versus/{key}/{side}")[0]
    return Q.of(point, unit)


def source_vt(results, key, side):
    row = need(results.vt_row(key), f"versus_threads row {key}")
    if side == "ratio":
        return Q(need(row.get("ratio"), f"{key} ratio"), "ratio")
    return Q.of(need(row.get(side), f"versus_threads {key} {side}"), row["unit"])


def source_vtmeta(results, field):
    return Q(need((results.vt or {}).get(field), f"versus_threads {field}"), "count")


def source_go(results, procs, key):
    row = need(results.go_row(int(procs), key), f"go GOMAXPROCS={procs} {key}")
    return Q.of(row["value"], row["unit"])


def source_cg(results, build, who):
    entry = need(((results.callgrind or {}).get("switch") or {}).get(build, {}).get(who), f"callgrind {build} {who}")
    return Q(entry["per_unit"], "instr")


def source_cgrt(results, what):
    entry = need(((results.callgrind or {}).get("runtime") or {}).get(what), f"callgrind runtime {what}")
    return Q(entry["per_unit"], "instr")


def source_cgb(results, build, who):
    switch = (results.callgrind_before or {}).get("switch") or {}
    entry = need(switch.get(build, {}).get(who), f"callgrind before/ {build} {who}")
    return Q(entry["per_unit"], "instr")


def source_cgrtb(results, what):
    entry = need(((results.callgrind_before or {}).get("runtime") or {}).get(what), f"callgrind before/ {what}")
    return Q(entry["per_unit"], "instr")


def source_rss(results, path):
    value = results.rss
    for part in path.split("."):
        value = need((value or {}).get(part), f"rss {path}")
    name = path.rsplit(".", 1)[-1]
    if name.endswith("_kib"):
        return Q(value, "size")
    if name.endswith("_mib"):
        return Q(value * 1024, "size")
    if name.endswith("_ms"):
        return Q(value * 1e6, "time")
    if name.endswith("_share"):
        return Q(value, "ratio")
    return Q(value, "count")


def source_skynet(results, workers, field):
    summary = need(((results.skynet or {}).get("median") or {}).get(str(workers)), f"skynet --workers {workers}")
    if field == "ms":
        return Q(need(summary.get("ms"), "skynet ms") * 1e6, "time")
    if field == "per_leaf":
        return Q.of(need(summary.get("ms"), "skynet ms") * 1e3 / summary["leaves"], "µs/leaf")
    if field == "peak_rss_kib":
        return Q(need(summary.get("peak_rss_kib"), "skynet peak RSS (no /usr/bin/time)"), "size")
    if field in ("leaves", "runs"):
        return Q(summary[field], "count")
    raise TemplateError(f"skynet: unknown field {field!r}")


def source_scale(results, key, side, count):
    series, units = scaling_series(results)
    value = need(series.get(key, {}).get(side, {}).get(int(count)), f"scaling {key} {side} at {count}")
    return Q.of(value, units[key])


def source_obs(results, what, *args):
    obs = results.observability or {}
    if what == "time":
        workload, variant = args
        entry = need(((obs.get("timing") or {}).get(workload) or {}).get(variant), f"observability {workload} {variant}")
        return Q(entry["median_ns"], "time")
    if what == "spread":
        workload, variant = args
        entry = need(((obs.get("timing") or {}).get(workload) or {}).get(variant), f"observability {workload} {variant}")
        runs = sorted(entry["runs_ns"])
        lower, upper = runs[len(runs) // 4], runs[(3 * len(runs)) // 4]
        return Q((upper - lower) / entry["median_ns"], "ratio")
    if what == "instr":
        workload, variant = args
        entry = need(((obs.get("callgrind") or {}).get(workload) or {}).get(variant),
                     f"observability callgrind {workload} {variant}")
        return Q(entry["per_unit"], "instr")
    if what == "dump":
        size, field = args
        entry = need((obs.get("dump") or {}).get(str(size)), f"observability dump of {size}")
        if field in ("median_ms", "print_first_ms", "print_again_ms"):
            return Q(need(entry.get(field), f"observability dump of {size}: {field}") * 1e6, "time")
        if field == "per_coroutine_us":
            return Q(need(entry.get(field), f"observability dump of {size}: {field}") * 1e3, "time")
        if field in ("workers", "coroutines", "runs", "backtraces"):
            return Q(need(entry.get(field), f"observability dump of {size}: {field}"), "count")
        raise TemplateError(f"obs dump: unknown field {field!r}")
    if what == "idle":
        entry = need(obs.get("idle"), "observability idle")
        return Q(entry["core_percent"] / 100, "ratio")
    if what == "maps":
        return Q(need((results.observability_machine or {}).get("vm_max_map_count"),
                      "observability machine's vm.max_map_count"), "count")
    if what == "base":
        return str(need(obs.get("base_commit"), "observability base commit"))
    raise TemplateError(f"obs: unknown figure {what!r}: expected time, spread, instr, dump, idle, maps or base")


def source_bmachine(results, field):
    value = need((results.before_machine or {}).get(field), f"before/ machine {field}")
    return Q(value, "count") if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def source_rmw(results, path):
    """`rmw PATH`: atomic read-modify-writes per operation of a
    callgrind-diff entry of callgrind.json (`rmw runtime.handoff`,
    `rmw channel.rendezvous.default`)."""
    value = results.callgrind
    for part in path.split("."):
        value = need((value or {}).get(part), f"callgrind {path}")
    return Q(need(value.get("atomic_rmw_per_unit"), f"atomic read-modify-writes of callgrind {path}"), "num")


def source_probe(results, field):
    """`probe FIELD`: the host probe's cost of one operation (machine.json's
    host_probe: atomic_rmw_ns, compare_exchange_ns, clock_read_ns,
    spin_hint_ns)."""
    probe = need((results.machine or {}).get("host_probe"), "machine host_probe")
    return Q(need(probe.get(field), f"host_probe {field}"), "time")


def source_machine(results, field):
    value = need((results.machine or {}).get(field), f"machine {field}")
    return Q(value, "count") if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


SOURCES = {"crit": (source_crit, 2), "versus": (source_versus, 2), "vt": (source_vt, 2), "vtmeta": (source_vtmeta, 1),
           "go": (source_go, 2), "cg": (source_cg, 2), "cgrt": (source_cgrt, 1), "cgb": (source_cgb, 2),
           "cgrtb": (source_cgrtb, 1), "rss": (source_rss, 1), "rmw": (source_rmw, 1), "probe": (source_probe, 1),
           "skynet": (source_skynet, 2), "machine": (source_machine, 1), "bmachine": (source_bmachine, 1), "scale": (source_scale, 3),
           "obs": (source_obs, None)}


def source_in(results, subdir, source, *args):
    """`in SUBDIR SOURCE ARG...`: SOURCE read from the collection in
    SUBDIR (`in channel crit default ID`, `in channel go 1 KEY`)."""
    if source not in SOURCES or source == "in":
        raise TemplateError(f"in {subdir}: unknown source {source!r}")
    function, arity = SOURCES[source]
    if arity is not None and len(args) != arity:
        raise TemplateError(f"in {subdir} {source}: takes {arity} arguments, got {list(args)}")
    return function(results.sub(subdir), *args)


def source_perop(results, label, full_id, unit):
    """`perop LABEL FULL_ID UNIT`: a criterion median per element of its
    throughput, in UNIT ("ns/hand-off", "ns/select", "M items/s"), so that it
    compares with a Go row of that unit."""
    entry = need(results.crit_entry(label, full_id), f"criterion {label} {full_id}")
    point = need(results.per_op(entry, unit), f"throughput of {full_id}")[0]
    return Q.of(point, unit)


def source_cgch(results, what, build):
    """`cgch WHAT BUILD`: channel.sh's callgrind instructions per rendezvous
    hand-off (rendezvous) or per completed select (select)."""
    entry = need(((results.callgrind or {}).get("channel") or {}).get(what, {}).get(build),
                 f"callgrind channel {what} {build}")
    return Q(entry["per_unit"], "instr")


def source_placed(results, what, field):
    """`placed WHAT FIELD`: channel.sh's placements.json, the batches of WHAT
    (as the bench names them: "pc 4p4c weft", "unbounded weft"): `one_worker`
    (the share of batches whose coroutines all ran on one worker), `spread_ms`
    and `one_worker_ms` (the median batch time of the others, and of those;
    "none" when there is no such batch)."""
    placements = read_placements(results)
    splits = need(placements.get(what), f"placements of {what}")
    one, spread = [], []
    for split in splits:
        (one if sum(1 for n in split["split"] if n) == 1 else spread).extend(split["batches_ms"])
    if field == "one_worker":
        return Q(len(one) / (len(one) + len(spread)), "ratio")
    if field in ("spread_ms", "one_worker_ms"):
        times = sorted(spread if field == "spread_ms" else one)
        if not times:
            return "none"
        return Q(times[len(times) // 2] * 1e6, "time")
    raise TemplateError(f"placed: unknown field {field!r}")


def read_placements(results):
    try:
        with open(os.path.join(results.dir, "placements.json"), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def source_ab(results, what, build):
    """`ab WHAT BUILD`: channel.sh --before's ab.json, the median CPU time
    per hand-off (WHAT rendezvous) or per select (select) of BUILD (before
    or after), from runs in turns; BUILD `step`: the resolution of those
    figures (/usr/bin/time's 10 ms over the operations of a run)."""
    path = os.path.join(results.dir, "ab.json")
    try:
        with open(path, encoding="utf-8") as f:
            ab = json.load(f)
    except FileNotFoundError:
        ab = {}
    if build == "step":
        # /usr/bin/time -f %U prints hundredths of a second: the smallest
        # difference in CPU time per operation that a run can show.
        entry = need((ab.get(what) or {}).get("after") or (ab.get(what) or {}).get("before"), f"ab.json {what}")
        return Q(0.01e9 / entry["n"], "time")
    entry = need((ab.get(what) or {}).get(build), f"ab.json {what} {build}")
    return Q(entry["cpu_ns_per_unit"], "time")


def source_plc(results, key, side):
    """`plc KEY SIDE`: placement.sh's collection (use with `in placement`),
    the median of every run of every turn, as its table shows it: row KEY
    (contended_mutex, pc_condvar, pc_semaphore, readers_writers) of SIDE
    (default, same_worker, threads, go2, go1), in the row's unit; or
    `plc cpu PROCS`, the median over the turns of the Go peer's CPUs busy
    (CPU seconds over wall seconds) at GOMAXPROCS=PROCS."""
    import statistics
    if key == "cpu":
        shares = placement_cpu_shares(results.dir, int(side))
        return Q(statistics.median(need(shares or None, f"placement Go CPU at GOMAXPROCS={side}")), "num")
    if side not in PLACEMENT_FILES:
        raise TemplateError(f"plc: unknown side {side!r}: expected one of {sorted(PLACEMENT_FILES)}")
    pattern, field = PLACEMENT_FILES[side]
    runs, row = placement_pooled(results.dir, pattern, key, field)
    need(row, f"placement row {key}")
    return Q.of(statistics.median(need(runs or None, f"placement {key} {side}")), row["unit"])


SOURCES.update({"in": (source_in, None), "perop": (source_perop, 3), "cgch": (source_cgch, 2),
                "placed": (source_placed, 2), "ab": (source_ab, 2), "plc": (source_plc, 2)})


# ---------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------


def unit_literal(scale, dim):
    return lambda x: Q(float(x) * scale, dim)


def to_q(x):
    if isinstance(x, Q):
        return x
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TemplateError(f"not a number: {x!r}")
    return Q(x, "num")


def arith(op, a, b):
    a, b = to_q(a), to_q(b)
    if isinstance(op, ast.Div):
        if a.dim == b.dim and not plain(a.dim):
            return Q(a.value / b.value, "ratio")
        if plain(b.dim):
            return Q(a.value / b.value, a.dim if not plain(a.dim) or a.dim == "ratio" else "num", a.unit)
        raise TemplateError(f"cannot divide {a.dim} by {b.dim}")
    if isinstance(op, ast.Mult):
        if plain(b.dim):
            return Q(a.value * b.value, a.dim, a.unit)
        if plain(a.dim):
            return Q(a.value * b.value, b.dim, b.unit)
        raise TemplateError(f"cannot multiply {a.dim} by {b.dim}")
    if isinstance(op, (ast.Add, ast.Sub)):
        if a.dim != b.dim and not (plain(a.dim) and plain(b.dim)):
            raise TemplateError(f"cannot add or subtract {a.dim} and {b.dim}")
        value = a.value + b.value if isinstance(op, ast.Add) else a.value - b.value
        return Q(value, a.dim, a.unit)
    raise TemplateError(f"unsupported operator {type(op).__name__}")


def compare(op, a, b):
    a, b = to_q(a), to_q(b)
    if a.dim != b.dim and not (plain(a.dim) and plain(b.dim)):
        raise TemplateError(f"cannot compare {a.dim} with {b.dim}")
    x, y = a.value, b.value
    return {ast.Lt: x < y, ast.LtE: x <= y, ast.Gt: x > y, ast.GtE: x >= y, ast.Eq: x == y, ast.NotEq: x != y}[type(op)]


class Figures:
    """The named figures of a template, evaluated on demand."""

    def __init__(self, results):
        self.results = results
        self.defs = {}
        self.cache = {}

    def define(self, line):
        match = re.fullmatch(r"let\s+([A-Za-z_]\w*)\s*=\s*(.+)", line.strip())
        if not match:
            raise TemplateError(f"not a `let NAME = ...` line: {line!r}")
        name, rest = match.groups()
        if name in self.defs:
            raise TemplateError(f"{name} is defined twice")
        first = rest.split(None, 1)[0]
        if first in SOURCES:
            words = shlex.split(rest)
            function, arity = SOURCES[first]
            if arity is not None and len(words) - 1 != arity:
                raise TemplateError(f"let {name}: {first} takes {arity} arguments, got {words[1:]}")
            self.defs[name] = ("source", function, words[1:])
        else:
            self.defs[name] = ("expr", parse_expression(rest), None)

    def get(self, name):
        if name not in self.defs:
            raise TemplateError(f"unknown figure {name!r}")
        if name not in self.cache:
            kind, what, args = self.defs[name]
            try:
                self.cache[name] = what(self.results, *args) if kind == "source" else self.eval(what)
            except Missing as missing:
                self.cache[name] = missing
        value = self.cache[name]
        if isinstance(value, Missing):
            raise value
        return value

    def eval(self, node):
        if isinstance(node, ast.Expression):
            return self.eval(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return node.value
        if isinstance(node, ast.Name):
            return self.get(node.id)
        if isinstance(node, ast.BinOp):
            return arith(node.op, self.eval(node.left), self.eval(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            q = to_q(self.eval(node.operand))
            return Q(-q.value, q.dim, q.unit)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not self.eval(node.operand)
        if isinstance(node, ast.BoolOp):
            values = (self.eval(v) for v in node.values)
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.Compare):
            left = self.eval(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = self.eval(right_node)
                if not compare(op, left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            return self.call(node.func.id, node.args)
        raise TemplateError(f"unsupported expression: {ast.dump(node)}")

    def call(self, name, arg_nodes):
        if name == "goal":
            try:
                return "met" if self.eval(arg_nodes[0]) else "missed"
            except Missing:
                return "not measured"
        args = [self.eval(a) for a in arg_nodes]
        literals = {"ns": (1.0, "time"), "us": (1e3, "time"), "ms": (1e6, "time"), "kib": (1.0, "size"), "instr": (1.0, "instr")}
        if name in literals:
            return unit_literal(*literals[name])(args[0])
        if name == "unit":
            # A figure literal in any unit the results use: unit(0.339, "µs/task").
            if len(args) != 2 or not isinstance(args[1], str):
                raise TemplateError("unit(x, UNIT) takes a number and a unit string")
            return Q.of(float(to_q(args[0]).value), args[1])
        if name in ("min", "max"):
            qs = [to_q(a) for a in args]
            if len({q.dim for q in qs}) > 1:
                raise TemplateError(f"{name} of different units")
            return (min if name == "min" else max)(qs, key=lambda q: q.value)
        if name == "pct":
            return fmt_pct(abs(to_q(args[0]).value - 1))
        if name == "percent":
            return fmt_pct(to_q(args[0]).value)
        if name == "bold":
            return f"**{render_value(args[0])}**"
        raise TemplateError(f"unknown function {name}()")


def parse_expression(text):
    try:
        return ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise TemplateError(f"bad expression {text!r}: {error}") from None


def render_value(value):
    if isinstance(value, bool):
        raise TemplateError("a condition printed as a figure: use goal(...) or X if C else Y")
    return str(value)


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

BLOCKS = ("machine", "about", "table", "plot", "notes", "go_summary", "crosscheck_summary", "in")


class Renderer:
    def __init__(self, results):
        self.results = results
        self.figures = Figures(results)
        self.plots = {}
        self.missing = []

    def block(self, words):
        name, args = words[0], words[1:]
        if name == "in":
            # {{in SUBDIR BLOCK ARG...}}: a block of the collection in SUBDIR.
            return Renderer(self.results.sub(args[0])).block(args[1:])
        if name == "machine":
            return machine_paragraph(self.results)
        if name == "about":
            return about(self.results, *args)
        if name == "table":
            if args[0] not in TABLES:
                raise TemplateError(f"unknown table {args[0]!r}")
            return TABLES[args[0]](self.results)
        if name == "plot":
            function, alt = PLOTS_BY_NAME[args[0]]
            svg = function(self.results)
            if svg is None:
                return ""  # the section's {{about}} says what was not collected
            self.plots[f"{args[0]}.svg"] = svg
            return f"![{alt}]({PLOTS_DIR}/{args[0]}.svg)"
        if name == "notes":
            return notes_versus_threads(self.results)
        if name == "go_summary":
            return go_summary(self.results)
        if name == "crosscheck_summary":
            return crosscheck_summary(self.results)
        return None

    def placeholder(self, match):
        # A placeholder may wrap across lines: whitespace runs are one space.
        inner = " ".join(match.group(1).split())
        words = inner.split()
        if words and words[0] in BLOCKS and re.fullmatch(r"[\w\- ./:]+", inner):
            text = self.block(words)
            if text is not None:
                return text
        tree = parse_expression(inner)
        try:
            return render_value(self.figures.eval(tree))
        except Missing as missing:
            self.missing.append(f"{inner}: {missing}")
            return "n/a"

    def render(self, template):
        def definitions(match):
            for line in match.group(1).splitlines():
                if line.strip():
                    self.figures.define(line)
            return ""

        text = re.sub(r"<!-- figures\n(.*?)-->\n?", definitions, template, flags=re.S)
        text = re.sub(r"<!--#.*?-->\n?", "", text, flags=re.S)
        text = re.sub(r"\{\{(.+?)\}\}", self.placeholder, text, flags=re.S)
        text = re.sub(r"\n{3,}", "\n\n", text)
        return text.rstrip("\n") + "\n"
