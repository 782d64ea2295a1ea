"""Stage name -> the function that builds its parts: how the runner finds a stage (no import by name)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from jobs.config.stage import StageConfig
from jobs.stages import distill, finetune, linear_eval, pretrain, supervised
from jobs.stages.parts import StageParts

BUILDERS: dict[str, Callable[[StageConfig, torch.device], StageParts]] = {
    "pretrain": pretrain.build,
    "finetune": finetune.build,
    "distill": distill.build,
    "supervised": supervised.build,
    "linear_eval": linear_eval.build,
}
