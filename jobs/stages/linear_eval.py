"""Linear evaluation: the pretrained backbone frozen (``finetune.fine_tune_after_block=4``, which validation
requires for this stage: no gradient, BN in eval mode), a linear classifier trained on top, with the official
crop + flip on the labelled images (``finetune.augment``)."""

from __future__ import annotations

import torch

from jobs.config.stage import StageConfig
from jobs.stages.finetune import build_classifier_stage
from jobs.stages.parts import StageParts


def build(cfg: StageConfig, device: torch.device) -> StageParts:
    return build_classifier_stage(cfg, device, pretrained=True)
