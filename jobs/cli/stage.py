"""``simclr-pretrain``, ``simclr-finetune``, ``simclr-distill``, ``simclr-supervised``, ``simclr-linear-eval``:
one stage run in this process (no SLURM), from Hydra overrides on ``jobs/conf/<stage>.yaml``."""

from __future__ import annotations

import logging
import sys

from jobs.config.stage import compose
from jobs.stages.runner import run_stage
from simclr.runfolder.layout import STAGES


def stage_main(stage: str, argv: list[str] | None = None) -> int:
    """``simclr-<stage> [hydra overrides...]``: run one stage in this process (no SLURM)."""
    assert stage in STAGES
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(
            f"usage: simclr-{stage.replace('_', '-')} run_dir=PATH [parent=RUN] [model=NAME] [data.root=PATH] "
            f"[key=value ...]\nHydra overrides on jobs/conf/{stage}.yaml; see jobs/config/stage.py for every key and "
            "its default."
        )
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = compose(stage, args)
    status = run_stage(cfg)
    print(f"{stage}: {status['state']} {status.get('final', {})}")
    return 0 if status["state"] == "done" else 1


def pretrain_main() -> int:
    return stage_main("pretrain")


def finetune_main() -> int:
    return stage_main("finetune")


def distill_main() -> int:
    return stage_main("distill")


def supervised_main() -> int:
    return stage_main("supervised")


def linear_eval_main() -> int:
    return stage_main("linear_eval")
