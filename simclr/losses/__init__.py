"""simclr/losses: NT-Xent with cross-rank negatives, distillation."""

from simclr.losses.distill import distillation_loss
from simclr.losses.ntxent import contrastive_accuracy, nt_xent

__all__ = ["nt_xent", "contrastive_accuracy", "distillation_loss"]
