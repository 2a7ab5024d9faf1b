"""The report's plots, as SVG written by hand (no plotting library): a
horizontal bar chart (log or linear) and a row of line panels. Every
coordinate is printed with one decimal, so the same results give the same
bytes. Each plot's caption names the machine, the date and its sources.
"""

import math

from results import SCALING_KEYS, SIDE_NAMES, scaling_series, versus_cell
from units import fmt_num, fmt_time, higher_is_better, parse_unit, strip_zeros

# Where the plots go, relative to the repository root (BENCHMARKS.md links them there).
PLOTS_DIR = "benches/results/plots"

COLORS = {"weft": "#2563eb", "weft-alt": "#93c5fd", "threads": "#6b7280", "threads-alt": "#d1d5db",
          "may": "#16a34a", "go": "#0891b2", "go-alt": "#67e8f9", "corosensei": "#ea580c"}


# ---------------------------------------------------------------------------
# SVG plots
# ---------------------------------------------------------------------------


def xml_escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def n(x):
    """A coordinate: one decimal, no "-0.0"."""
    text = f"{x:.1f}"
    return "0.0" if text == "-0.0" else text


class Svg:
    CHAR = 7.2  # a generous average width of a 12 px sans-serif character, for layout

    def __init__(self, width, height):
        self.width, self.height, self.items = width, height, []

    def text(self, x, y, text, size=12, anchor="start", weight=None, fill="#111827"):
        bold = f' font-weight="{weight}"' if weight else ""
        self.items.append(f'<text x="{n(x)}" y="{n(y)}" font-size="{size}" text-anchor="{anchor}" '
                          f'fill="{fill}"{bold}>{xml_escape(text)}</text>')

    def rect(self, x, y, w, h, fill):
        self.items.append(f'<rect x="{n(x)}" y="{n(y)}" width="{n(max(w, 0))}" height="{n(h)}" fill="{fill}"/>')

    def line(self, x1, y1, x2, y2, stroke="#111827", width=1.0, dash=None):
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self.items.append(f'<line x1="{n(x1)}" y1="{n(y1)}" x2="{n(x2)}" y2="{n(y2)}" stroke="{stroke}" '
                          f'stroke-width="{width}"{extra}/>')

    def polyline(self, points, stroke, width=2.0):
        coords = " ".join(f"{n(x)},{n(y)}" for x, y in points)
        self.items.append(f'<polyline points="{coords}" fill="none" stroke="{stroke}" stroke-width="{width}"/>')

    def circle(self, x, y, r, fill):
        self.items.append(f'<circle cx="{n(x)}" cy="{n(y)}" r="{n(r)}" fill="{fill}"/>')

    def render(self, title):
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
                f'viewBox="0 0 {self.width} {self.height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">')
        return "\n".join([head, f"<title>{xml_escape(title)}</title>",
                          f'<rect width="{self.width}" height="{self.height}" fill="#ffffff"/>'] + self.items
                         + ["</svg>"]) + "\n"


def nice_ceiling(x):
    """The smallest 1, 2, 2.5 or 5 x 10^k at or above x."""
    if x <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(x))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= x * (1 - 1e-9):
            return step * power
    return 10 * power


def time_tick(ns):
    return strip_zeros(fmt_time(ns))


def number_tick(x):
    return strip_zeros(fmt_num(x))


def bar_chart(title, subtitle, bars, axis_label, log, caption, tick_format=number_tick):
    """Horizontal bars. bars: (label, value, low, high, color, value text)."""
    label_w = max(len(b[0]) for b in bars) * Svg.CHAR + 24
    plot_w = 420
    value_w = 110
    width = int(label_w + plot_w + value_w)
    top, bar_h = 62, 26
    height = int(top + len(bars) * bar_h + 50 + 18 * len(caption))
    svg = Svg(width, height)
    svg.text(12, 22, title, size=15, weight="bold")
    svg.text(12, 42, subtitle, size=12, fill="#4b5563")
    x0 = label_w
    highs = [b[3] if b[3] is not None else b[1] for b in bars]
    if log:
        lows = [b[2] if b[2] is not None else b[1] for b in bars]
        lo_exp = math.floor(math.log10(min(lows)))
        hi_exp = math.ceil(math.log10(max(highs)))
        if hi_exp == lo_exp:
            hi_exp += 1

        def scale(v):
            return x0 + (math.log10(v) - lo_exp) / (hi_exp - lo_exp) * plot_w
        ticks = [10.0 ** e for e in range(lo_exp, hi_exp + 1)]
        base = x0
    else:
        top_value = nice_ceiling(max(highs) * 1.05)

        def scale(v):
            return x0 + v / top_value * plot_w
        step = nice_ceiling(top_value / 6)
        ticks = [i * step for i in range(int(round(top_value / step)) + 1)]
        base = x0
    plot_bottom = top + len(bars) * bar_h
    for tick in ticks:
        x = scale(tick)
        svg.line(x, top - 4, x, plot_bottom, stroke="#e5e7eb")
        svg.text(x, plot_bottom + 16, tick_format(tick), size=11, anchor="middle", fill="#374151")
    svg.line(x0, plot_bottom, x0 + plot_w, plot_bottom, stroke="#6b7280")
    svg.text(x0 + plot_w / 2, plot_bottom + 34, axis_label, size=12, anchor="middle", fill="#111827")
    for i, (label, value, low, high, color, value_text) in enumerate(bars):
        y = top + i * bar_h
        svg.text(x0 - 8, y + bar_h / 2 + 4, label, size=12, anchor="end")
        svg.rect(base, y + 4, scale(value) - base, bar_h - 8, color)
        if low is not None and high is not None:
            mid = y + bar_h / 2
            svg.line(scale(low), mid, scale(high), mid, width=1.2)
            svg.line(scale(low), mid - 5, scale(low), mid + 5, width=1.2)
            svg.line(scale(high), mid - 5, scale(high), mid + 5, width=1.2)
        end = max(scale(value), scale(high) if high is not None else 0)
        svg.text(end + 6, y + bar_h / 2 + 4, value_text, size=11, fill="#111827")
    for i, line in enumerate(caption):
        svg.text(12, plot_bottom + 56 + 18 * i, line, size=11, fill="#4b5563")
    return svg.render(title)


def crit_bar(results, label, full_id, name, color):
    entry = results.crit_entry(label, full_id)
    if not entry:
        return None
    return (name, entry["median_ns"], entry["median_lo_ns"], entry["median_hi_ns"], color, fmt_time(entry["median_ns"]))


def handoff_bar(results, key, side, name, color):
    """A hand-off in ns: criterion `versus` if there, else versus_threads."""
    cell = versus_cell(results, key, side)
    if cell:
        scale = parse_unit(results.unit_of(key))[1]
        point, low, high = (v * scale for v in cell)
        return (name, point, low, high, color, fmt_time(point))
    row = results.vt_row(key)
    if row and side in ("weft", "threads") and row.get(side):
        scale = parse_unit(row["unit"])[1]
        runs = row.get(f"{side}_runs") or [row[side]]
        return (name, row[side] * scale, min(runs) * scale, max(runs) * scale, color, fmt_time(row[side] * scale))
    return None


def plot_switch_latency(results):
    bars = [
        crit_bar(results, "default", "switch/weft resume+suspend", "weft resume+suspend, default build (round trip)",
                 COLORS["weft"]),
        crit_bar(results, "fp-control", "switch/weft resume+suspend",
                 "weft resume+suspend, fp-control on (round trip)", COLORS["weft-alt"]),
        crit_bar(results, "default", "switch/corosensei resume+suspend", "corosensei resume+suspend (round trip)",
                 COLORS["corosensei"]),
        handoff_bar(results, "handoff_pinned", "weft", "weft yield hand-off, 1 worker", COLORS["weft"]),
        handoff_bar(results, "handoff_pinned", "may", "may yield hand-off, 1 worker", COLORS["may"]),
    ]
    go = results.go_row(1, "handoff_yield")
    if go:
        scale = parse_unit(go["unit"])[1]
        runs = [r for r in go.get("runs") or [] if r is not None] or [go["value"]]
        bars.append(("Go Gosched hand-off, GOMAXPROCS=1", go["value"] * scale, min(runs) * scale, max(runs) * scale,
                     COLORS["go"], fmt_time(go["value"] * scale)))
    bars += [
        handoff_bar(results, "handoff_pinned", "threads", "futex hand-off, 2 threads pinned to 1 core",
                    COLORS["threads"]),
        handoff_bar(results, "handoff_unpinned", "threads", "futex hand-off, 2 threads unpinned",
                    COLORS["threads-alt"]),
    ]
    bars = [b for b in bars if b]
    if len(bars) < 2:
        return None
    sources = ["criterion.json (switch" + (", versus" if results.versus_keys() else "") + ")"]
    if results.vt and not results.versus_keys():
        sources.append("versus_threads.json")
    if go:
        sources.append("go.json")
    caption = [results.caption(),
               "Sources: " + ", ".join(sources) + ". Whiskers: 95 % CI of criterion's median, or the runs' range."]
    return bar_chart("Switch and hand-off latency", "a round trip is two switches (in and out); a hand-off is one "
                     "task giving the CPU to another — log scale, lower is better", bars,
                     "nanoseconds (log scale)", True, caption, tick_format=time_tick)


def plot_producer_consumer(results):
    bars = []

    def vt_bar(key, side, name, color):
        row = results.vt_row(key)
        if row and row.get(side):
            runs = row.get(f"{side}_runs") or [row[side]]
            bars.append((name, row[side], min(runs), max(runs), color, f"{fmt_num(row[side])} M items/s"))

    vt_bar("pc_condvar", "weft", "weft, Mutex+Condvar", COLORS["weft"])
    vt_bar("pc_semaphore", "weft", "weft, Semaphores", COLORS["weft-alt"])
    vt_bar("pc_condvar", "threads", "OS threads, Mutex+Condvar", COLORS["threads"])
    vt_bar("pc_semaphore", "threads", "OS threads, Semaphores", COLORS["threads-alt"])
    for key, name in (("pc_condvar", "may, Mutex+Condvar (criterion)"),
                      ("pc_semaphore", "may, Semaphores (criterion)")):
        cell = versus_cell(results, key, "may")
        if cell:
            bars.append((name, cell[0], cell[1], cell[2], COLORS["may"], f"{fmt_num(cell[0])} M items/s"))
    procs = results.workers()
    for key, name, color in (("pc_condvar", f"Go, Mutex+2 Cond, GOMAXPROCS={procs}", COLORS["go"]),
                             ("pc_channel", f"Go, buffered chan, GOMAXPROCS={procs}", COLORS["go-alt"])):
        row = results.go_row(procs, key)
        if row:
            runs = [r for r in row.get("runs") or [] if r is not None] or [row["value"]]
            bars.append((name, row["value"], min(runs), max(runs), color, f"{fmt_num(row['value'])} M items/s"))
    if not bars:
        return None
    workers = results.workers()
    sources = ["versus_threads.json"] + (["criterion.json (versus)"] if any("may" in b[0] for b in bars) else []) \
        + (["go.json"] if results.go else [])
    caption = [results.caption(),
               "Sources: " + ", ".join(sources) + ". Whiskers: the runs' range (criterion: 95 % CI of the median)."]
    return bar_chart("Producer-consumer throughput",
                     f"versus_threads' producer-consumer rows, weft on {workers} workers — higher is better",
                     bars, "million items per second", False, caption)


def y_axis(values, top, height):
    """(scale, ticks, log) for a panel: linear from 0, or log10 by decades
    when the values span more than 20x (weft and OS threads on skynet)."""
    low, high = min(values), max(values)
    if low > 0 and high / low > 20:
        lo_exp, hi_exp = math.floor(math.log10(low)), math.ceil(math.log10(high))
        if hi_exp == lo_exp:
            hi_exp += 1

        def scale(v):
            return top + height - (math.log10(v) - lo_exp) / (hi_exp - lo_exp) * height
        return scale, [10.0 ** e for e in range(lo_exp, hi_exp + 1)], True
    top_value = nice_ceiling(high * 1.05)

    def scale(v):
        return top + height - v / top_value * height
    step = nice_ceiling(top_value / 5)
    return scale, [i * step for i in range(int(round(top_value / step)) + 1)], False


def plot_scaling(results):
    """One panel per workload: x the worker count (or GOMAXPROCS), y the figure."""
    series, units = scaling_series(results)
    keys = [k for k in SCALING_KEYS if k in series]
    if not keys:
        return None
    ns = sorted({n for sides in series.values() for values in sides.values() for n in values})
    cores = (results.scaling_machine or {}).get("nproc") or 0
    panel_w, panel_h, gap, left = 250, 220, 64, 56
    width = left + len(keys) * panel_w + (len(keys) - 1) * gap + 30
    top = 100
    sources = "Sources: scaling/versus-N.json (versus_threads --workers N)" \
        + (", scaling/go.json (GOMAXPROCS=N)" if results.scaling_go else "") + "."
    if cores and ns[-1] > cores:
        sources += f" *: more than the machine's {cores} CPUs."
    caption = [results.caption("scaling"), sources]
    height = top + panel_h + 60 + 18 * len(caption)
    svg = Svg(width, height)
    svg.text(12, 22, "Scaling with workers", size=15, weight="bold")
    svg.text(12, 42, "x: weft workers (and contended-Mutex tasks), OS threads as versus_threads --workers N runs "
             "them, Go's GOMAXPROCS", size=12, fill="#4b5563")
    legend_x = 12
    for side in ("weft", "threads", "go"):
        if any(side in series[k] for k in keys):
            svg.rect(legend_x, 56, 14, 4, COLORS[side])
            svg.text(legend_x + 20, 62, SIDE_NAMES[side], size=12)
            legend_x += 20 + len(SIDE_NAMES[side]) * Svg.CHAR + 24
    for p, key in enumerate(keys):
        x0 = left + p * (panel_w + gap)
        unit = units[key]
        values = [v for side in series[key].values() for v in side.values() if v > 0]
        sy, ticks, log = y_axis(values, top, panel_h)
        direction = "higher is better" if higher_is_better(unit) else "lower is better"
        svg.text(x0 + panel_w / 2, top - 24, key, size=12, anchor="middle", weight="bold")
        svg.text(x0 + panel_w / 2, top - 9, f"{unit}{', log scale' if log else ''}; {direction}", size=11,
                 anchor="middle", fill="#374151")

        def sx(i):
            return x0 + (i + 0.5) / len(ns) * panel_w
        for tick in ticks:
            y = sy(tick)
            svg.line(x0, y, x0 + panel_w, y, stroke="#e5e7eb")
            svg.text(x0 - 6, y + 4, number_tick(tick), size=10, anchor="end", fill="#374151")
        svg.line(x0, top + panel_h, x0 + panel_w, top + panel_h, stroke="#6b7280")
        svg.line(x0, top, x0, top + panel_h, stroke="#6b7280")
        for i, count in enumerate(ns):
            label = f"{count}*" if cores and count > cores else str(count)
            svg.text(sx(i), top + panel_h + 16, label, size=11, anchor="middle", fill="#374151")
        svg.text(x0 + panel_w / 2, top + panel_h + 34, "workers / GOMAXPROCS", size=11, anchor="middle")
        for side in ("weft", "threads", "go"):
            points = [(sx(i), sy(series[key][side][count])) for i, count in enumerate(ns)
                      if side in series[key] and series[key][side].get(count, 0) > 0]
            if len(points) > 1:
                svg.polyline(points, COLORS[side])
            for x, y in points:
                svg.circle(x, y, 3, COLORS[side])
    for i, line in enumerate(caption):
        svg.text(12, top + panel_h + 60 + 18 * i, line, size=11, fill="#4b5563")
    return svg.render("Scaling with workers")


PLOTS_BY_NAME = {"switch-latency": (plot_switch_latency, "Switch and hand-off latency, log scale"),
                 "producer-consumer": (plot_producer_consumer, "Producer-consumer throughput"),
                 "scaling": (plot_scaling, "Scaling with workers")}
