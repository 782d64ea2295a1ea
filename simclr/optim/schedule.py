"""Learning-rate scaling and the warm-up + cosine schedule of SimCLR.

Official reference: google-research/simclr `tf2/model.py` ``WarmUpAndCosineDecay`` and
``get_train_steps``, flags ``learning_rate`` (0.3), ``learning_rate_scaling`` ('linear'),
``warmup_epochs`` (10). SimCLR paper Sec. B.1 / SimCLRv2 README: sqrt scaling (LR = 0.075 x sqrt(B))
trains better at small batch sizes.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["scaled_lr", "WarmupCosine", "train_steps_for", "warmup_steps_for"]


def scaled_lr(base_lr: float, batch_size: int, scaling: str = "linear") -> float:
    """Peak learning rate for a global batch: ``linear`` = base * B / 256, ``sqrt`` = base * sqrt(B)."""
    if not base_lr >= 0:
        raise ValueError(f"base_lr must be >= 0, got {base_lr!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if scaling == "linear":
        return base_lr * batch_size / 256.0
    if scaling == "sqrt":
        return base_lr * math.sqrt(batch_size)
    raise ValueError(f"scaling must be 'linear' or 'sqrt', got {scaling!r}")


def train_steps_for(num_examples: int, epochs: float, batch_size: int) -> int:
    """Official ``get_train_steps``: ``num_examples * epochs // batch_size + 1``."""
    if num_examples < 1 or batch_size < 1 or epochs < 0:
        raise ValueError(
            f"need num_examples >= 1, batch_size >= 1, epochs >= 0; got {num_examples}, "
            f"{batch_size}, {epochs}"
        )
    return int(num_examples * epochs // batch_size) + 1


def warmup_steps_for(warmup_epochs: float, num_examples: int, batch_size: int) -> int:
    """Official: ``int(round(warmup_epochs * num_examples // batch_size))``."""
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs!r}")
    return int(round(warmup_epochs * num_examples // batch_size))


class WarmupCosine:
    """step -> learning rate: linear warm-up from 0 to ``peak_lr`` over ``warmup_steps``, then cosine
    decay to 0 at ``total_steps`` (and 0 after). Stateless apart from its settings, which
    ``state_dict`` saves and ``load_state_dict`` restores (checkpoint contract).

    Set it on the optimizer each step: ``for g in opt.param_groups: g["lr"] = sched(step)``.
    """

    def __init__(self, total_steps: int, warmup_steps: int, peak_lr: float) -> None:
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
        if not isinstance(warmup_steps, int) or not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"warmup_steps must be an int in [0, total_steps={total_steps}], got {warmup_steps!r}"
            )
        if not peak_lr >= 0:
            raise ValueError(f"peak_lr must be >= 0, got {peak_lr!r}")
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.peak_lr = float(peak_lr)

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step!r}")
        if step < self.warmup_steps:
            return step / self.warmup_steps * self.peak_lr
        decay_steps = self.total_steps - self.warmup_steps
        if decay_steps == 0:
            return 0.0
        progress = min(step - self.warmup_steps, decay_steps) / decay_steps
        return self.peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def state_dict(self) -> dict[str, Any]:
        return {
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "peak_lr": self.peak_lr,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the settings (validated as in the constructor)."""
        missing = {"total_steps", "warmup_steps", "peak_lr"} - set(state)
        if missing:
            raise ValueError(f"schedule state lacks keys {sorted(missing)}")
        self.__init__(int(state["total_steps"]), int(state["warmup_steps"]), float(state["peak_lr"]))  # type: ignore[misc]

    def __repr__(self) -> str:
        return (
            f"WarmupCosine(total_steps={self.total_steps}, warmup_steps={self.warmup_steps}, "
            f"peak_lr={self.peak_lr})"
        )
