"""What a stage injects into the one training loop (docs/DESIGN.md principle 2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from simclr.train.loop import EpochLoader, Evaluator, FinalEval, Stateful, StepFn


@dataclass
class StageParts:
    """What a stage injects into the loop (each stage module's ``build(cfg, device)`` returns one)."""

    model: nn.Module
    loader: EpochLoader
    optimizer: torch.optim.Optimizer
    lr_at: Callable[[int], float]
    step_fn: StepFn
    evaluators: tuple[Evaluator, ...] = ()
    final_eval: FinalEval | None = None
    # State beside the model, checkpointed under its name (pretraining's memory: "memory").
    state: dict[str, Stateful] = field(default_factory=dict)
