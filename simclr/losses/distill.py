"""Knowledge distillation loss of SimCLRv2 (paper Sec. 2, Eq. 2-3).

The student learns the teacher's temperature-softened class distribution on unlabeled images,
optionally mixed with the ordinary cross-entropy on the labeled ones:

    L = label_weight * CE(y, student)  +  (1 - label_weight) * T^2 * CE(softmax(t / T), log_softmax(s / T))

The T^2 factor (Hinton et al. 2015) keeps the distillation gradients' scale independent of T, so a
learning rate tuned at T = 1 stays valid. The paper's alpha is ``1 - label_weight``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["distillation_loss", "IGNORE_LABEL"]

IGNORE_LABEL = -1  # label of an unlabeled sample in a mixed batch


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    labels: Tensor | None = None,
    label_weight: float = 0.0,
) -> Tensor:
    """Scalar loss, mean over the batch.

    Args:
        student_logits: [B, K], with gradient.
        teacher_logits: [B, K]; detached here (the teacher is fixed).
        temperature: T > 0 for both softmaxes.
        labels: [B] int64 class ids, ``IGNORE_LABEL`` (-1) for unlabeled rows; needed when
            ``label_weight > 0``. The label term averages over labeled rows only (0 if none).
        label_weight: weight in [0, 1] of the label cross-entropy.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not 0.0 <= label_weight <= 1.0:
        raise ValueError(f"label_weight must be in [0, 1], got {label_weight!r}")
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must both be [B, K] with equal shapes, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if label_weight > 0 and labels is None:
        raise ValueError("labels are required when label_weight > 0")

    s = student_logits.float()
    t = teacher_logits.detach().float()
    soft_targets = F.softmax(t / temperature, dim=1)
    distill = -(soft_targets * F.log_softmax(s / temperature, dim=1)).sum(dim=1).mean()
    distill = distill * (temperature**2)
    if label_weight == 0:
        return distill
    assert labels is not None
    if labels.shape != (s.shape[0],):
        raise ValueError(f"labels must be [B]={s.shape[0]}, got {tuple(labels.shape)}")
    per_row = F.cross_entropy(s, labels, ignore_index=IGNORE_LABEL, reduction="sum")
    n_labeled = (labels != IGNORE_LABEL).sum().clamp_min(1)
    label_loss = per_row / n_labeled
    return label_weight * label_loss + (1.0 - label_weight) * distill
