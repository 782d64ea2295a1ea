"""The convergence rule (docs/CONTRACTS.md "Convergence") on synthetic curves and on real ones."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from analysis.convergence import assess, labelled_set_size
from simclr.runfolder.metrics import read_metrics
from analysis.runfolder import read_run
from analysis.synthetic import write_run

DATA = Path(__file__).parent / "data"
SMALL = {"train": {"batch_size": 32, "epochs": 5, "max_steps": 0}}  # 100 steps x 32 / 5 = 640 images


def plateau(t: float) -> float:
    return 0.05 + 2.3 * math.exp(-12.0 * t)


def fitted(t: float) -> float:
    return 100.0 * (1.0 - math.exp(-12.0 * t))


def noisy_plateau(t: float) -> float:  # a plateau with per-batch noise, as a real loss has
    return plateau(t) + 0.05 * math.sin(97.0 * t)


def falling(t: float) -> float:
    return 2.3 * (1.0 - 0.8 * t)


def run(tmp: Path, stage: str = "supervised", **curves) -> dict:  # type: ignore[no-untyped-def, type-arg]
    # 120 lines over the stage's three series (train/top1 among them): 40 points each
    folder = write_run(tmp, stage=stage, label_fraction=0.01, top1=60.0, metric_lines=120,
                       extra_config=SMALL, curves={k.replace("__", "/"): f for k, f in curves.items()})
    return read_run(folder).row


def test_converged_run(tmp_path: Path) -> None:
    row = run(tmp_path, train__loss=plateau, train__top1=fitted)
    assert (row["converged"], row["convergence_note"]) == ("true", "")


def test_plateaued_noisy_loss_is_converged(tmp_path: Path) -> None:
    row = run(tmp_path, train__loss=noisy_plateau, train__top1=fitted)
    assert row["converged"] == "true", row["convergence_note"]


def test_still_falling_loss_is_not_converged(tmp_path: Path) -> None:
    row = run(tmp_path, train__loss=falling, train__top1=fitted)
    assert row["converged"] == "false"
    # logged at steps 0, 2, 5, ..., 97: the last quarter (steps 75..97) falls 2.3 * 0.8 * 22 / 100 = 0.405, a
    # quarter of the whole drop (first quarter's mean minus the fitted end), with no noise
    assert row["convergence_note"].startswith("train loss still falling: -0.405 over the last quarter of steps "
                                              "(26% of its whole drop")


def test_underfit_on_a_small_labelled_set(tmp_path: Path) -> None:
    row = run(tmp_path, train__loss=plateau, train__top1=lambda t: 50.0 * (1.0 - math.exp(-12.0 * t)))
    assert row["converged"] == "false"
    assert row["convergence_note"].startswith("train top-1 50.0% on about 640 labelled images")


def test_underfit_rule_is_for_small_labelled_sets_only(tmp_path: Path) -> None:
    folder = write_run(tmp_path, stage="supervised", label_fraction=1.0, top1=60.0, metric_lines=160,
                       extra_config={"train": {"batch_size": 256, "epochs": 1, "max_steps": 0}},
                       curves={"train/loss": plateau, "train/top1": lambda t: 50.0})
    assert read_run(folder).row["converged"] == "true"  # 25.6k images: a plateau at 50% may be real
    # linear eval trains one layer: its train top-1 has no reason to reach 100%
    row = run(tmp_path, stage="linear_eval", train__loss=plateau, train__top1=lambda t: 50.0)
    assert row["converged"] == "true"


def test_unfinished_or_short_runs_are_unknown(tmp_path: Path) -> None:
    folder = write_run(tmp_path, stage="supervised", label_fraction=0.01, state="running", metric_lines=160,
                       extra_config=SMALL, curves={"train/loss": falling})
    assert read_run(folder).row["converged"] == "unknown"
    folder = write_run(tmp_path, stage="supervised", label_fraction=0.01, top1=1.0, metric_lines=12,
                       extra_config=SMALL, curves={"train/loss": falling, "train/top1": fitted})
    row = read_run(folder).row
    assert (row["converged"], row["convergence_note"]) == ("unknown", "4 train loss points logged; the rule needs 8")


def test_labelled_set_size_from_the_budget() -> None:
    assert labelled_set_size({"train": {"batch_size": 32, "epochs": 20, "max_steps": 0}}, 360) == 576.0
    assert math.isnan(labelled_set_size({"train": {"batch_size": 128, "epochs": 1, "max_steps": 250}}, 250))
    assert math.isnan(labelled_set_size({}, 100))


@pytest.mark.parametrize("name, expected", [
    # `make demo` before issue 16: supervised, R18 0.25x, 1% labels (600 images), batch 64, 15 epochs (135
    # steps) with crop + flip; train top-1 about 50% at the end, test top-1 47.6
    ("demo_supervised_1pct_15ep.jsonl", "false"),
    # the demo's recipe since: batch 32, 20 epochs (360 steps), no augmentation; train top-1 100% from epoch 16
    ("demo_supervised_1pct_20ep_noaug.jsonl", "true"),
])
def test_real_demo_curves(name: str, expected: str) -> None:
    series = read_metrics(DATA / name).series
    epochs, batch, steps = (15, 64, 135) if "15ep" in name else (20, 32, 360)
    cfg = {"train": {"batch_size": batch, "epochs": epochs, "max_steps": 0}}
    conv = assess("supervised", "done", series, cfg, steps)
    assert conv.label == expected, conv.note
    if expected == "false":
        assert "train top-1" in conv.note and "576 labelled images" in conv.note
