from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from simclr.runfolder.metrics import MetricSeries, downsample, is_lower_better, read_metrics


def _line(step: float, name: str, value: float, split: str = "train") -> str:
    return json.dumps({"step": step, "epoch": 0, "stage": "pretrain", "split": split, "name": name,
                       "value": value, "time": 1.0}) + "\n"


def test_clean_file_series_last_and_best(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    p.write_text(_line(0, "loss", 3.0) + _line(0, "top1", 10.0, "val") + _line(1, "loss", 1.0)
                 + _line(1, "top1", 30.0, "val") + _line(2, "loss", 2.0) + _line(2, "top1", 20.0, "val"))
    m = read_metrics(p)
    assert m.problems == []
    assert m.n_lines == 6
    loss, top1 = m.series[("train", "loss")], m.series[("val", "top1")]
    assert loss.steps.tolist() == [0, 1, 2] and loss.values.tolist() == [3.0, 1.0, 2.0]
    assert loss.last == 2.0 and loss.best("loss") == 1.0  # loss: min
    assert top1.last == 20.0 and top1.best("top1") == 30.0  # accuracy: max


def test_truncated_last_line_is_ignored_and_named(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    p.write_text(_line(0, "loss", 3.0) + _line(1, "loss", 2.0) + '{"step": 2, "epoch": 0, "sta')
    m = read_metrics(p)
    assert m.series[("train", "loss")].values.tolist() == [3.0, 2.0]
    assert len(m.problems) == 1 and "truncated last line 3" in m.problems[0]


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    p.write_text(_line(0, "loss", 3.0) + _line(1, "loss", 2.0).rstrip("\n"))
    m = read_metrics(p)
    assert m.problems == [] and m.series[("train", "loss")].values.tolist() == [3.0, 2.0]


def test_bad_middle_line_named_and_rest_kept(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    p.write_text(_line(0, "loss", 3.0) + "not json at all\n" + "\n" + _line(1, "loss", 2.0))
    m = read_metrics(p)
    assert m.series[("train", "loss")].values.tolist() == [3.0, 2.0]
    assert len(m.problems) == 1 and m.problems[0].startswith("line 2 ")


def test_records_without_keys_or_numbers_are_skipped(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    p.write_text(_line(0, "loss", 3.0) + json.dumps({"step": 1, "name": "loss"}) + "\n" + "[1, 2]\n"
                 + json.dumps({"step": 2, "split": "train", "name": "loss", "value": None}) + "\n"
                 + _line(3, "loss", 1.0))
    m = read_metrics(p)
    assert m.series[("train", "loss")].steps.tolist() == [0, 3]
    assert any("2 record(s)" in q for q in m.problems)
    assert any("1 record(s) of train/loss with a non-numeric value" in q for q in m.problems)


def test_non_integer_steps_are_skipped_not_truncated(tmp_path: Path) -> None:
    # int64 used to truncate step 1.5 to 1 (and true to 1) silently, on both read paths.
    p = tmp_path / "metrics.jsonl"
    p.write_text(_line(0, "loss", 3.0) + _line(1.5, "loss", 2.0) + _line(2.0, "loss", 1.0)
                 + _line(True, "loss", 0.5) + _line(3, "loss", 0.25))
    m = read_metrics(p)
    loss = m.series[("train", "loss")]
    assert loss.steps.tolist() == [0, 2, 3] and loss.values.tolist() == [3.0, 1.0, 0.25]
    assert any("2 record(s) of train/loss" in q and "non-integer step" in q for q in m.problems)


def test_fractional_steps_leave_the_other_series_whole(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    p.write_text(_line(0, "loss", 3.0) + _line(1, "loss", 2.0) + _line(0, "top1", 1.0, "val")
                 + _line(0.5, "top1", 2.0, "val"))
    m = read_metrics(p)
    assert m.series[("train", "loss")].steps.tolist() == [0, 1]
    assert m.series[("val", "top1")].steps.tolist() == [0]


def test_nan_values_do_not_win_best(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    p.write_text(_line(0, "top1", 5.0) + _line(1, "top1", float("nan")))
    s = read_metrics(p).series[("train", "top1")]
    assert s.best("top1") == 5.0 and math.isnan(s.last)


def test_empty_file_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    p.write_text("")
    assert read_metrics(p).series == {}
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "nope.jsonl")


def test_direction_of_metrics() -> None:
    assert is_lower_better("loss") and is_lower_better("distill_loss")
    assert is_lower_better("top1") is False and is_lower_better("knn_top1") is False
    assert is_lower_better("lr") is None


def test_downsample_keeps_last_and_bounds_points() -> None:
    s = MetricSeries(steps=np.arange(1000), values=np.arange(1000, dtype=float))
    steps, values = downsample(s, 100)
    assert len(steps) <= 100 and steps[-1] == 999 and values[-1] == 999.0
    assert np.all(np.diff(steps) > 0)


def test_downsample_repeated_steps_keep_last_write() -> None:
    # a restart re-logged steps 2..3: the later values win
    s = MetricSeries(steps=np.array([0, 1, 2, 3, 2, 3, 4]), values=np.array([0, 1, 2, 3, 20, 30, 40.0]))
    steps, values = downsample(s, 100)
    assert steps.tolist() == [0, 1, 2, 3, 4] and values.tolist() == [0, 1, 20, 30, 40]


def test_a_tail_read_keeps_whole_lines_only(tmp_path: Path) -> None:
    """``tail_bytes`` (simclr-status's latest values): the line cut by the window is dropped, not misread."""
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": i, "epoch": 0, "stage": "pretrain", "split": "train", "name": "loss",
                         "value": float(i), "time": 0.0}) for i in range(100)]
    path.write_text("\n".join(lines) + "\n")
    size = path.stat().st_size
    whole = read_metrics(path, tail_bytes=size)
    assert whole.series[("train", "loss")].steps.tolist() == list(range(100)) and not whole.problems
    line = len(lines[-1]) + 1
    tail = read_metrics(path, tail_bytes=3 * line + 5)  # three lines and a piece of a fourth
    assert tail.series[("train", "loss")].steps.tolist() == [97, 98, 99] and not tail.problems
    exact = read_metrics(path, tail_bytes=3 * line)  # the window starts exactly at a line
    assert exact.series[("train", "loss")].steps.tolist() == [97, 98, 99]
    assert read_metrics(path, tail_bytes=line - 1).series == {}
