"""Reading one run's ``metrics.jsonl`` fast and forgivingly.

The writer (``write.py``, :meth:`RunFolder.log`) appends one JSON object per line::

    {"step": int, "epoch": int, "stage": str, "split": "train"|"val"|"test",
     "name": str, "value": float, "time": float}

and may be killed mid-line, so the last line can be truncated (docs/CONTRACTS.md). A report over a
sweep reads thousands of these files, so the common case (a clean file) is parsed with ONE
``json.loads`` call over the whole file wrapped as a JSON array: the C decoder then does all the work
and Python only touches each record once to file it under its ``(split, name)`` series. Only when
that fails do we fall back to line-by-line parsing, to name the exact bad line in a warning.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MetricSeries", "MetricsRead", "read_metrics", "is_lower_better", "downsample"]

# Metrics where smaller is better; everything else (accuracies, agreement) is "higher is better".
# ``lr`` has no "best": it is reported by its last value only.
_LOWER_IS_BETTER = ("loss",)
_NO_BEST = ("lr",)


def is_lower_better(name: str) -> bool | None:
    """Direction of a metric by name: True (loss-like), False (accuracy-like), None (no best, e.g. lr)."""
    if name in _NO_BEST:
        return None
    return any(name == s or name.endswith("_" + s) for s in _LOWER_IS_BETTER)


@dataclass(frozen=True)
class MetricSeries:
    """One ``(split, name)`` series of a run, in file order (shape ``(n,)`` each, ``n >= 1``)."""

    steps: np.ndarray  # int64, the "step" of each logged value
    values: np.ndarray  # float64

    @property
    def last(self) -> float:
        """The value logged last (file order: a resumed run appends after its checkpoint offset)."""
        return float(self.values[-1])

    def best(self, name: str) -> float:
        """Max (accuracy-like) or min (loss-like) over finite values; NaN where there is no best."""
        direction = is_lower_better(name)
        finite = self.values[np.isfinite(self.values)]
        if direction is None or finite.size == 0:
            return math.nan
        return float(finite.min() if direction else finite.max())


@dataclass
class MetricsRead:
    """What a metrics file held: its series by ``(split, name)``, line count and any problems."""

    series: dict[tuple[str, str], MetricSeries] = field(default_factory=dict)
    n_lines: int = 0  # records parsed and kept
    problems: list[str] = field(default_factory=list)  # human-readable, without the file name


def _parse_lines(lines: list[bytes], problems: list[str], first_lineno: int = 1) -> list[object]:
    """Slow path: parse line by line, naming each bad line. Blank lines are ignored silently."""
    records: list[object] = []
    for i, line in enumerate(lines, start=first_lineno):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            why = err.msg if isinstance(err, json.JSONDecodeError) else err.reason
            problems.append(f"line {i} is not valid JSON ({why}); skipped")
    return records


def read_metrics(path: str | Path, *, tail_bytes: int | None = None) -> MetricsRead:
    """Read ``metrics.jsonl`` into per-``(split, name)`` series.

    ``tail_bytes``: read only the file's last ``tail_bytes`` bytes (the latest values of a long log, as
    ``simclr-status`` shows them); the line cut at the start of that window is dropped unseen.

    Tolerates, each with a line in ``problems``: a truncated last line (ignored), a bad line in the
    middle (skipped), records lacking a key, with a non-numeric value or with a step that is not a whole
    number (skipped). A missing file raises ``FileNotFoundError`` (the caller decides whether that is a problem).
    """
    raw = _read_tail(Path(path), tail_bytes) if tail_bytes is not None else Path(path).read_bytes()
    out = MetricsRead()
    if not raw.strip():
        return out
    # A file not ending in "\n" was cut while a line was being written: split that line off and
    # judge it on its own, so a clean body still takes the fast path.
    cut = raw.rfind(b"\n") + 1
    body, tail = (raw, b"") if cut == len(raw) else (raw[:cut], raw[cut:])
    n_body_lines = body.count(b"\n")
    records: list[object]
    try:
        records = json.loads(b"[" + body.rstrip(b"\r\n").replace(b"\n", b",") + b"]") if body.strip() else []
    except (json.JSONDecodeError, UnicodeDecodeError):
        records = _parse_lines(body.split(b"\n"), out.problems)
    if tail.strip():
        try:
            records.append(json.loads(tail))
        except (json.JSONDecodeError, UnicodeDecodeError):
            out.problems.append(f"truncated last line {n_body_lines + 1} ({len(tail)} bytes) ignored")

    fast = _series_fast(records)
    if fast is not None:
        out.series = fast
        out.n_lines = len(records)
        return out
    acc: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    bad = 0
    for rec in records:
        try:
            key = (rec["split"], rec["name"])  # type: ignore[index]
            step = rec["step"]  # type: ignore[index]
            value = rec["value"]  # type: ignore[index]
        except (KeyError, TypeError):
            bad += 1
            continue
        lists = acc.get(key)
        if lists is None:
            lists = acc[key] = ([], [])
        lists[0].append(step)
        lists[1].append(value)
    if bad:
        out.problems.append(f"{bad} record(s) without step/split/name/value skipped")

    n_kept = 0
    for (split, name), (steps, values) in acc.items():
        if not isinstance(split, str) or not isinstance(name, str):
            out.problems.append(f"series with non-string split/name {split!r}/{name!r} skipped")
            continue
        try:
            if None in values:  # numpy would turn a null into NaN silently
                raise TypeError("null value")
            if not all(map(_is_step, steps)):  # int64 would truncate 1.5 to 1 silently
                raise TypeError("non-integer step")
            v = np.asarray(values, dtype=np.float64)
            s = np.asarray(steps, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            # Rare: a null or a string among the values, or a step that is not a whole number. Keep the
            # rest, say how many went.
            pairs = [(int(st), va) for st, va in zip(steps, values) if _is_step(st) and _is_number(va)]
            out.problems.append(
                f"{len(values) - len(pairs)} record(s) of {split}/{name} with a non-numeric value or a "
                f"non-integer step skipped"
            )
            if not pairs:
                continue
            s = np.asarray([p[0] for p in pairs], dtype=np.int64)
            v = np.asarray([p[1] for p in pairs], dtype=np.float64)
        out.series[(split, name)] = MetricSeries(steps=s, values=v)
        n_kept += v.size
    out.n_lines = n_kept
    return out


def _read_tail(path: Path, tail_bytes: int) -> bytes:
    """The whole lines among the last ``tail_bytes`` bytes of ``path`` (a torn last line included)."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        start = max(0, size - tail_bytes)
        f.seek(max(0, start - 1))  # one byte early: whether the window starts a line
        raw = f.read()
    if start > 0:  # drop up to the first newline: the part of a line cut by the window
        raw = raw[raw.find(b"\n") + 1:] if b"\n" in raw else b""
    return raw


# Typed as taking and giving anything: a record that is not a dict makes them raise, and _series_fast checks the
# types of what they return; either sends the file to the careful path.
_GET_KEY: Callable[[Any], Any] = operator.itemgetter("split", "name")
_GET_STEP: Callable[[Any], Any] = operator.itemgetter("step")
_GET_VALUE: Callable[[Any], Any] = operator.itemgetter("value")


def _series_fast(records: list[object]) -> dict[tuple[str, str], MetricSeries] | None:
    """The clean-file path: every record a dict with string split/name and numeric step/value.

    Field extraction runs in C (``map`` + ``itemgetter``) and the split into series is one numpy mask
    per series; on anything unusual it returns None and the careful per-record path takes over.
    """
    try:
        keys = list(map(_GET_KEY, records))
        steps = np.asarray(list(map(_GET_STEP, records)))
        if steps.dtype.kind != "i":  # a fractional or boolean step: int64 would truncate it silently
            return None
        values_list = list(map(_GET_VALUE, records))
        if None in values_list:  # numpy would turn a null into NaN silently
            return None
        values = np.asarray(values_list, dtype=np.float64)
        code_of = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if not all(isinstance(a, str) and isinstance(b, str) for a, b in code_of):
        return None
    if len(code_of) == 1:
        return {next(iter(code_of)): MetricSeries(steps=steps, values=values)}
    codes = np.fromiter(map(code_of.__getitem__, keys), dtype=np.intp, count=len(keys))
    return {key: MetricSeries(steps=steps[codes == i], values=values[codes == i]) for key, i in code_of.items()}


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_step(x: object) -> bool:
    """A whole number (an int, or a float such as 100.0 from another writer); not a bool, not 1.5."""
    if isinstance(x, bool):
        return False
    return isinstance(x, int) or (isinstance(x, float) and math.isfinite(x) and x.is_integer())


def downsample(series: MetricSeries, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of a curve for plotting, last one always kept.

    Steps logged twice (a run restarted before the writer truncated its log) keep their LAST value.
    Seeds of one config log at the same steps, so the same stride picks the same steps in each and
    the group mean per step stays well defined.
    """
    steps, values = series.steps, series.values
    if steps.size > 1 and not np.all(steps[1:] > steps[:-1]):
        # unique over the reversed array gives the first occurrence from the end = the last write
        _, idx_rev = np.unique(steps[::-1], return_index=True)
        idx = np.sort(steps.size - 1 - idx_rev)
        steps, values = steps[idx], values[idx]
    n = steps.size
    if n <= max_points:
        return steps, values
    stride = math.ceil(n / max_points)
    idx = np.arange(n - 1, -1, -stride)[::-1]
    return steps[idx], values[idx]
