"""Run one stage in this process: the function every job (local, SLURM task, multi-node rank) calls.

``run_stage(config)`` validates the config, sets up the distributed group from the environment (submitit's
``TorchDistributedEnvironment`` / torchrun variables), builds the stage's parts, and hands them to the one
training loop, which resumes from the run folder's latest checkpoint. It is idempotent: a run folder whose
status is *done* returns that status at once.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from jobs.stages import builders
from jobs.stages.parts import StageParts
from jobs.stages.registry import BUILDERS
from jobs.config.stage import ConfigError, StageConfig, config_changes, from_dict, to_dict
from simclr import dist
from simclr.train.loop import LoopSettings, fit
from simclr.train.preempt import PreemptionRequested
from simclr.runfolder.layout import RunState
from simclr.runfolder.write import RunFolder

log = logging.getLogger(__name__)


def settings_of(cfg: StageConfig) -> LoopSettings:
    t = cfg.train
    return LoopSettings(
        epochs=t.epochs,
        max_steps=t.max_steps,
        log_every=t.log_every,
        checkpoint_every=t.checkpoint_every,
        keep_checkpoints=t.keep_checkpoints,
        eval_every_epochs=t.eval_every_epochs,
        amp=t.amp,
        channels_last=t.channels_last,
        compile=t.compile,
    )


def check_same_run(run: RunFolder, cfg: StageConfig) -> None:
    """A run folder belongs to the config that started it: resuming it, or taking its *done* status, under a
    different one would mix two recipes in one set of weights or report the old recipe's result as the new one.
    Raises ConfigError naming the changed keys (the folder is left untouched)."""
    try:
        saved = run.read_config()
    except FileNotFoundError:
        return  # a new run (or one that never got as far as writing its config)
    except ValueError as e:  # written atomically, so this is damage from outside: say so, do not guess
        raise ConfigError(f"{run.path / 'config.json'}: unreadable ({e}); move the run folder away to start again")
    try:
        changes = config_changes(saved, cfg)
    except ConfigError as e:  # e.g. a key this version no longer knows
        raise ConfigError(f"{run.path / 'config.json'}: {e}") from None
    if changes:
        raise ConfigError(
            f"run folder {run.path} holds a {saved.get('stage', '?')} run of another config ({'; '.join(changes)}); "
            "give this config its own run_dir (sweeps do: their folder names carry a hash of the config)"
        )


def run_stage(config: dict[str, Any] | StageConfig) -> dict[str, Any]:
    """Run (or resume, or skip when done) one stage; returns its final status record.

    Raises ``PreemptionRequested`` after a checkpoint when a preemption signal arrived; any other error is
    recorded as a *failed* status (with the reason) and re-raised.
    """
    cfg = config if isinstance(config, StageConfig) else from_dict(config)
    started_dist = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_distributed():
        dist.init_distributed(timeout_s=cfg.train.dist_timeout_s)
        started_dist = True
    run = RunFolder(cfg.run_dir, stage=cfg.stage, writer=dist.rank() == 0)
    try:
        check_same_run(run, cfg)
        done = run.read_status()
        if done is not None and done.get("state") == RunState.DONE.value:
            log.info("%s is done already: skipped", cfg.run_dir)
            return done
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        torch.manual_seed(cfg.seed)
        device = builders.device()
        try:
            # The config is valid (checked above, before the folder is touched); what fails from here on
            # (missing data, a parent run that is not done, training errors) is recorded in status.json.
            parts: StageParts = BUILDERS[cfg.stage](cfg, device)
            resolved = to_dict(cfg)
            run.write_config(resolved)
            result = fit(
                run=run,
                model=parts.model,
                loader=parts.loader,
                optimizer=parts.optimizer,
                lr_at=parts.lr_at,
                step_fn=parts.step_fn,
                settings=settings_of(cfg),
                config=resolved,
                device=device,
                evaluators=parts.evaluators,
                final_eval=parts.final_eval,
                state=parts.state,
            )
        except PreemptionRequested:
            raise
        except BaseException as e:
            run.write_status(RunState.FAILED.value, reason=f"{type(e).__name__}: {e}", world_size=dist.world_size())
            raise
        return result.status
    finally:
        if started_dist:
            dist.cleanup()
