"""LR scaling and warm-up + cosine schedule at chosen steps (official WarmUpAndCosineDecay)."""

from __future__ import annotations

import math

import pytest

from simclr.optim.schedule import WarmupCosine, scaled_lr, train_steps_for, warmup_steps_for


def test_scaled_lr() -> None:
    assert scaled_lr(0.3, 4096, "linear") == pytest.approx(4.8)
    assert scaled_lr(0.075, 4096, "sqrt") == pytest.approx(4.8)  # README: same LR at 4096
    assert scaled_lr(0.3, 256) == pytest.approx(0.3)
    assert scaled_lr(1.0, 100, "sqrt") == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("args", "name"),
    [((0.3, 256, "log"), "scaling"), ((0.3, 0, "linear"), "batch_size"), ((-1.0, 256, "linear"), "base_lr")],
)
def test_scaled_lr_rejects(args: tuple, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        scaled_lr(*args)


def test_warmup_cosine_values_at_chosen_steps() -> None:
    s = WarmupCosine(total_steps=110, warmup_steps=10, peak_lr=2.0)
    assert s(0) == 0.0
    assert s(5) == pytest.approx(1.0)
    assert s(10) == pytest.approx(2.0)
    assert s(35) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert s(60) == pytest.approx(1.0)
    assert s(110) == pytest.approx(0.0, abs=1e-12)
    assert s(500) == pytest.approx(0.0, abs=1e-12)
    values = [s(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay after warm-up


def test_no_warmup_starts_at_peak() -> None:
    s = WarmupCosine(total_steps=10, warmup_steps=0, peak_lr=1.5)
    assert s(0) == 1.5 and s(5) == pytest.approx(0.75)
    assert WarmupCosine(total_steps=4, warmup_steps=4, peak_lr=1.0)(4) == 0.0


def test_state_dict_round_trip() -> None:
    s = WarmupCosine(100, 7, 0.4)
    t = WarmupCosine(1, 0, 0.0)
    t.load_state_dict(s.state_dict())
    assert [t(i) for i in range(0, 120, 9)] == [s(i) for i in range(0, 120, 9)]
    with pytest.raises(ValueError, match="peak_lr"):
        t.load_state_dict({"total_steps": 3, "warmup_steps": 1})


@pytest.mark.parametrize(
    ("args", "name"),
    [((0, 0, 1.0), "total_steps"), ((10, 11, 1.0), "warmup_steps"), ((10, -1, 1.0), "warmup_steps"),
     ((10, 1, -1.0), "peak_lr")],
)  # fmt: skip
def test_warmup_cosine_rejects(args: tuple, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        WarmupCosine(*args)


def test_official_step_counts() -> None:
    # ImageNet (1,281,167 images), 100 epochs at 4096, 10 warm-up epochs
    assert train_steps_for(1_281_167, 100, 4096) == 31_279
    assert warmup_steps_for(10, 1_281_167, 4096) == 3_127
