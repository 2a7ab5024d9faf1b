"""Figures with units, and how they are printed (for benches/report/render.py).

One formatter for every number in the report, so that the same results
always give the same text: three significant figures; integers of five or
more digits grouped by three with a space ("23 500"); times scaled to ns,
µs, ms or s; ratios as "4.41x".
"""

import math
import re


def group_thousands(digits):
    sign = "-" if digits.startswith("-") else ""
    digits = digits.lstrip("-")
    if len(digits) <= 4:
        return sign + digits
    parts = []
    while digits:
        parts.insert(0, digits[-3:])
        digits = digits[:-3]
    return sign + " ".join(parts)


def fmt_num(x, sig=3):
    """x to `sig` significant figures; integers of 5+ digits grouped by 3."""
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return "n/a"
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    decimals = sig - 1 - magnitude
    rounded = round(x, decimals)
    if rounded != 0 and math.floor(math.log10(abs(rounded))) > magnitude:
        decimals -= 1
        rounded = round(x, decimals)
    if decimals > 0:
        return f"{rounded:.{decimals}f}"
    return group_thousands(str(int(round(rounded))))


def fmt_int(x):
    return group_thousands(str(int(round(x))))


def fmt_ratio(x):
    return fmt_num(x) + "x"


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(ns) >= scale:
            return f"{fmt_num(ns / scale)} {unit}"
    return f"{fmt_num(ns)} ns"


def fmt_size(kib):
    if abs(kib) >= 1024 * 1024:
        return f"{fmt_num(kib / 1024 / 1024)} GiB"
    if abs(kib) >= 1024:
        return f"{fmt_num(kib / 1024)} MiB"
    return f"{fmt_num(kib)} KiB"


def fmt_pct(x):
    """A share (0.031) as a percentage to 2 significant figures ("3.1 %")."""
    return f"{fmt_num(x * 100, 2)} %"


def median(values):
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


# ---------------------------------------------------------------------------
# Figures with units
# ---------------------------------------------------------------------------

TIME_SCALE = {"ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
SIZE_SCALE = {"KiB": 1.0, "MiB": 1024.0, "GiB": 1024.0 * 1024.0}


def parse_unit(unit):
    """A unit's dimension and its factor to the dimension's base unit (ns, KiB):
    "µs/task" is ("time/task", 1000); "M items/s" is itself, factor 1."""
    head, slash, per = unit.partition("/")
    if head in TIME_SCALE:
        return "time" + slash + per, TIME_SCALE[head]
    if head in SIZE_SCALE:
        return "size" + slash + per, SIZE_SCALE[head]
    return unit, 1.0


def higher_is_better(unit):
    return unit.endswith("/s")


class Q:
    """A figure: a value in its dimension's base unit (ns, KiB), its dimension
    ("time", "time/task", "size", "M items/s", "ratio", "num", "count",
    "instr") and the unit to print it in (None: choose by size)."""

    __slots__ = ("value", "dim", "unit")

    def __init__(self, value, dim, unit=None):
        self.value, self.dim, self.unit = float(value), dim, unit

    @classmethod
    def of(cls, x, unit):
        dim, scale = parse_unit(unit)
        return cls(x * scale, dim, unit)

    def __str__(self):
        return strip_zeros(self.format())

    def format(self):
        if self.dim == "instr":
            return fmt_int(self.value) if abs(self.value) >= 10 else fmt_num(self.value)
        if self.dim == "ratio":
            return fmt_ratio(self.value)
        if self.dim == "count":
            return fmt_int(self.value)
        if self.dim == "num":
            return fmt_num(self.value)
        if self.unit:
            return f"{fmt_num(self.value / parse_unit(self.unit)[1])} {self.unit}"
        if self.dim == "time":
            return fmt_time(self.value)
        if self.dim == "size":
            return fmt_size(self.value)
        return f"{fmt_num(self.value)} {self.dim}"


def strip_zeros(text):
    """ "4.00 KiB" -> "4 KiB", "0.430" -> "0.43": for prose, where a figure
    stands alone (tables keep their significant figures)."""
    return re.sub(r"(\d)\.(\d*?)0+(?!\d)", lambda m: m.group(1) + ("." + m.group(2) if m.group(2) else ""), text)


def plain(dim):
    return dim in ("num", "ratio", "count")
