"""The supervised baseline: the same architecture trained from scratch on the same label fraction."""

from __future__ import annotations

import torch

from jobs.config.stage import StageConfig
from jobs.stages.finetune import build_classifier_stage
from jobs.stages.parts import StageParts


def build(cfg: StageConfig, device: torch.device) -> StageParts:
    return build_classifier_stage(cfg, device, pretrained=False)
