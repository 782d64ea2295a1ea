"""Config -> library objects: the translation every stage shares (backbone, loaders, optimizer, schedule).

The library parts take keyword arguments, never a config object (docs/DESIGN.md); this module is the one place
that reads config sections and calls them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from jobs.config.stage import StageConfig, cifar_stem
from simclr import dist
from simclr.data.loading.loader import Mode, ShardLoader
from simclr.data.shards.manifest import Manifest
from simclr.models.heads import ProjectionHead
from simclr.models.resnet import ResNet
from simclr.models.simclr import SimCLRModel, build_backbone, build_simclr_model
from simclr.optim.lars import LARS, param_groups_for_lars
from simclr.optim.schedule import WarmupCosine, scaled_lr
from simclr.train.loop import LoopSettings, total_steps


def backbone(cfg: StageConfig) -> ResNet:
    m = cfg.model
    return build_backbone(m.depth, m.width, m.sk_ratio, cifar_stem(m, cfg.data.image_size), m.in_channels)


def projection_head(cfg: StageConfig, in_dim: int) -> ProjectionHead:
    return ProjectionHead(in_dim, num_layers=cfg.model.num_proj_layers, out_dim=cfg.model.proj_out_dim)


def simclr_model(cfg: StageConfig, num_classes: int | None) -> SimCLRModel:
    """Backbone + projection head (+ online probe when ``num_classes``), as pretraining builds it."""
    m = cfg.model
    return build_simclr_model(m.depth, m.width, m.sk_ratio, cifar_stem(m, cfg.data.image_size), m.num_proj_layers,
                              m.proj_out_dim,
                              num_classes=num_classes, in_channels=m.in_channels)


def loader(
    cfg: StageConfig,
    *,
    split: str,
    mode: Mode,
    keys_file: Path | None = None,
    labelled_only: bool = False,
    distributed: bool = True,
    batch_size: int | None = None,
    drop_last: bool | None = None,
    with_clean: bool = False,
) -> ShardLoader:
    """A loader for this rank. ``cfg.train.batch_size`` is the GLOBAL batch; each rank gets its share."""
    world = dist.world_size() if distributed else 1
    rank = dist.rank() if distributed else 0
    global_batch = batch_size or cfg.train.batch_size
    if global_batch % world:
        raise ValueError(f"train.batch_size={global_batch} is not divisible by the world size {world}")
    d = cfg.data
    out = ShardLoader(
        d.root,
        split,
        batch_size=global_batch // world,
        mode=mode,
        rank=rank,
        world_size=world,
        num_workers=d.num_workers,
        seed=cfg.seed,
        size=d.image_size,
        strength=d.strength,
        blur=d.blur,
        min_area=d.min_crop_area,
        with_clean=with_clean,
        keys_file=keys_file,
        labelled_only=labelled_only,
        bad_sample_budget=d.bad_sample_budget,
        out_channels=cfg.model.in_channels,
        batched_augment=d.batched_augment,
        drop_last=drop_last,
    )
    if split != d.train_split:
        # Labels are indices into the class list: a split numbered otherwise would score every prediction
        # against another class (shards written by hand, or by an older jobs.cli.shards, per split).
        train_classes = Manifest.load(Path(d.root) / d.train_split).class_names
        if out.class_names != train_classes:
            raise ValueError(f"data.root={d.root}: split {split!r} has the classes {out.class_names}, split "
                             f"{d.train_split!r} {train_classes}: rewrite the shards with simclr-shards "
                             "(it numbers every split by the train split's classes)")
    return out


def optimizer(cfg: StageConfig, model: nn.Module) -> torch.optim.Optimizer:
    """LARS / SGD / AdamW over the trainable parameters of ``model``; BN and biases get no weight decay
    (and no LARS adaptation), as the official lars_optimizer.py."""
    o = cfg.optim
    groups = param_groups_for_lars(model, weight_decay=o.weight_decay)
    if o.name == "lars":
        return LARS(groups, lr=0.0, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=o.momentum, nesterov=o.momentum > 0)
    return torch.optim.AdamW(groups, lr=0.0)


def lr_schedule(cfg: StageConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """Peak LR scaled by the global batch (official run.py), linear warm-up, cosine decay to 0."""
    o = cfg.optim
    peak = o.base_lr if o.lr_scaling == "none" else scaled_lr(o.base_lr, cfg.train.batch_size, o.lr_scaling)
    warmup = min(total_steps - 1, int(round(o.warmup_epochs * steps_per_epoch))) if total_steps > 1 else 0
    return WarmupCosine(total_steps=total_steps, warmup_steps=max(0, warmup), peak_lr=peak)


def steps(cfg: StageConfig, steps_per_epoch: int) -> int:
    """Optimizer steps of the run: the loop's own rule (epochs, capped by train.max_steps)."""
    return total_steps(LoopSettings(epochs=cfg.train.epochs, max_steps=cfg.train.max_steps), steps_per_epoch)


def device() -> torch.device:
    """One process per GPU: the local rank's GPU under SLURM/torchrun, else the CPU."""
    if torch.cuda.is_available():
        idx = dist.local_rank() % torch.cuda.device_count()
        torch.cuda.set_device(idx)
        return torch.device("cuda", idx)
    return torch.device("cpu")

