"""Stage 2: fine-tuning from the middle of the projection head on a label fraction (SimCLRv2 sec. 2).

The pretrained backbone and the first ``ft_proj_selector`` layers of the projection head (official meaning:
0 = drop the head, k = keep k layers, -1 = all) are kept, a linear classifier is added, and everything is
trained on the labelled subset (``<root>/train/fractions/<p>percent.txt``). Reports test top-1 / top-5.
The same build, with a fresh backbone, is the supervised baseline (jobs/stages/supervised.py), and with a frozen
backbone (``finetune.fine_tune_after_block=4``) the linear evaluation (jobs/stages/linear_eval.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from jobs.stages import builders
from jobs.config.stage import StageConfig, from_dict
from jobs.stages.parts import StageParts
from simclr import dist
from simclr.data.loading.loader import Mode
from simclr.models.simclr import Classifier
from simclr.train import checkpoint as ckpt
from simclr.train.evaluate import EvalBatches, classify
from simclr.train.loop import Batch
from simclr.data.shards.fractions import fraction_keys_file
from simclr.runfolder.write import RunFolder


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def load_trained(run_dir: str | Path, model: ModuleT) -> ModuleT:
    """Load a finished parent run's last checkpoint into ``model`` (strict); returns ``model``."""
    parent = RunFolder(run_dir)
    status = parent.read_status()
    if status is None or status.get("state") != "done":
        raise RuntimeError(f"parent run {run_dir} is not done (status: {status and status.get('state')})")
    loaded = ckpt.load_latest(parent.checkpoints)
    if loaded is None:
        raise FileNotFoundError(f"parent run {run_dir} has no loadable checkpoint")
    model.load_state_dict(loaded[0]["model"], strict=True)
    return model


def classifier(cfg: StageConfig, num_classes: int, *, pretrained: bool) -> Classifier:
    """Backbone + kept head layers + linear classifier; weights from ``cfg.parent`` when ``pretrained``. The
    classifier starts at 0 with ``finetune.zero_init_logits``; ``finetune.fine_tune_after_block`` freezes the
    stem and block groups through it (4: the backbone, linear evaluation)."""
    if pretrained:
        assert cfg.parent is not None
        parent_cfg = from_dict(RunFolder(cfg.parent).read_config())
        for key in ("depth", "width", "sk_ratio", "cifar_stem", "in_channels", "num_proj_layers", "proj_out_dim"):
            if getattr(parent_cfg.model, key) != getattr(cfg.model, key):
                raise ValueError(
                    f"config key 'model.{key}'={getattr(cfg.model, key)} differs from the parent run's "
                    f"{getattr(parent_cfg.model, key)} ({cfg.parent})"
                )
        # The parent's online probe saw the same data set: it has ``num_classes`` outputs (a different data
        # set shows up as a strict-load error naming the probe's shapes).
        probe_classes = num_classes if parent_cfg.pretrain.probe else None
        full = load_trained(cfg.parent, builders.simclr_model(parent_cfg, probe_classes))
        net, head = full.backbone, full.head
    else:
        net = builders.backbone(cfg)
        head = None
    neck = head.truncated(cfg.finetune.ft_proj_selector) if head is not None else nn.Identity()
    if head is None and cfg.finetune.ft_proj_selector != 0:
        raise ValueError("config key 'finetune.ft_proj_selector' must be 0 without a pretrained head (supervised)")
    f = cfg.finetune
    return Classifier(net, neck, num_classes, fine_tune_after_block=f.fine_tune_after_block,
                      zero_init_head=f.zero_init_logits)


def build_classifier_stage(cfg: StageConfig, device: torch.device, *, pretrained: bool) -> StageParts:
    keys = fraction_keys_file(cfg.data.root, cfg.finetune.label_fraction, cfg.data.train_split)
    mode: Mode = "labelled" if cfg.finetune.augment else "eval"
    # Training drops the ragged last batch (never padded duplicates), also without augmentation. Only labelled
    # samples: label_fraction=1.0 (no key list) on a split that also holds unlabelled ones (label -1) means
    # all LABELLED samples, never -1 targets for the cross-entropy.
    train = builders.loader(cfg, split=cfg.data.train_split, mode=mode, keys_file=keys, labelled_only=True,
                            drop_last=True)
    test_batches = EvalBatches(builders.loader(cfg, split=cfg.data.eval_split, mode="eval", distributed=False, batch_size=512))
    model: nn.Module = classifier(cfg, train.num_classes, pretrained=pretrained)
    model = dist.convert_sync_bn(model)  # global BN under DDP (a no-op with one process)
    smoothing = cfg.finetune.label_smoothing

    may_hold_invalid = mode == "eval" and cfg.data.bad_sample_budget > 0

    def step_fn(module: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = module(batch["image"]).float()
        y = batch["label"]
        # Decided once, not by a per-step device sync: only the eval-mode loader with a bad-sample budget
        # hands out -1 slots (a substitute); labelled_only keeps unlabelled samples out.
        keep = y >= 0
        if may_hold_invalid and not bool(keep.all()):
            # Without augmentation the train loader is in eval mode, where a bad image's substitute slot is
            # label -1 (data.bad_sample_budget > 0): it counts for nothing, as in an evaluation. (The
            # all-labelled batch takes the unchanged path, so results stay bit-identical.)
            logits, y = logits[keep], y[keep]
            if y.numel() == 0:  # zero loss, yet every parameter in the graph (DDP expects a gradient);
                # top1 NaN = not measured on this rank (every rank reports the same metric names)
                return logits.sum() * 0.0, {"top1": torch.tensor(float("nan"), device=logits.device)}
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        return loss, {"top1": (logits.argmax(1) == y).float().mean().detach() * 100}

    cl = cfg.train.channels_last
    n_steps = builders.steps(cfg, len(train))
    return StageParts(
        model=model,
        loader=train,
        optimizer=builders.optimizer(cfg, model),  # frozen parameters are left out
        lr_at=builders.lr_schedule(cfg, n_steps, len(train)),
        step_fn=step_fn,
        evaluators=(lambda m, epoch: classify(m, test_batches(), device, channels_last=cl),),
        final_eval=lambda m: classify(m, test_batches(), device, channels_last=cl),
    )


def build(cfg: StageConfig, device: torch.device) -> StageParts:
    return build_classifier_stage(cfg, device, pretrained=True)
