"""Distillation loss: T^2-scaled soft cross-entropy, its gradient, mixing with labels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from simclr.losses.distill import IGNORE_LABEL, distillation_loss

torch.set_num_threads(1)


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0])
def test_value_is_t_squared_soft_cross_entropy(T: float) -> None:
    torch.manual_seed(0)
    s, t = torch.randn(6, 4), torch.randn(6, 4)
    p_t = F.softmax(t / T, dim=1)
    expected = T**2 * -(p_t * F.log_softmax(s / T, dim=1)).sum(1).mean()
    assert distillation_loss(s, t, T).item() == pytest.approx(expected.item(), rel=1e-6)


def test_student_equal_to_teacher_gives_teacher_entropy() -> None:
    t = torch.tensor([[math.log(1.0), math.log(3.0)]])  # softmax = [1/4, 3/4] at T = 1
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert distillation_loss(t.clone(), t, 1.0).item() == pytest.approx(entropy, rel=1e-6)


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_gradient_closed_form(T: float) -> None:
    # d/ds [T^2 * mean_i CE(softmax(t/T), log_softmax(s/T))] = T * (softmax(s/T) - softmax(t/T)) / B
    torch.manual_seed(0)
    s = torch.randn(5, 3, requires_grad=True)
    t = torch.randn(5, 3, requires_grad=True)
    distillation_loss(s, t, T).backward()
    assert s.grad is not None
    expected = T * (F.softmax(s / T, 1) - F.softmax(t / T, 1)).detach() / 5
    assert torch.allclose(s.grad, expected, atol=1e-6)
    assert t.grad is None  # the teacher is fixed


def test_label_mixing_over_labeled_rows_only() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.tensor([2, IGNORE_LABEL, 0, IGNORE_LABEL])
    distill = distillation_loss(s, t, 2.0)
    label_ce = F.cross_entropy(s[[0, 2]], labels[[0, 2]])
    got = distillation_loss(s, t, 2.0, labels=labels, label_weight=0.3)
    assert got.item() == pytest.approx(0.3 * label_ce.item() + 0.7 * distill.item(), rel=1e-6)
    only_labels = distillation_loss(s, t, 2.0, labels=labels, label_weight=1.0)
    assert only_labels.item() == pytest.approx(label_ce.item(), rel=1e-6)
    none_labeled = torch.full((4,), IGNORE_LABEL)
    assert distillation_loss(s, t, 2.0, labels=none_labeled, label_weight=1.0).item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"temperature": 0.0}, "temperature"), ({"temperature": 1.0, "label_weight": 1.5}, "label_weight"),
     ({"temperature": 1.0, "label_weight": 0.5}, "labels")],
)  # fmt: skip
def test_invalid_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        distillation_loss(torch.randn(2, 3), torch.randn(2, 3), **kwargs)
    with pytest.raises(ValueError, match="student_logits"):
        distillation_loss(torch.randn(2, 3), torch.randn(2, 4), 1.0)
