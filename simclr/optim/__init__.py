"""simclr/optim: LARS, learning-rate scaling and schedule."""

from simclr.optim.lars import LARS, param_groups_for_lars
from simclr.optim.schedule import WarmupCosine, scaled_lr

__all__ = ["LARS", "param_groups_for_lars", "WarmupCosine", "scaled_lr"]
