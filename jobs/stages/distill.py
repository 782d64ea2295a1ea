"""Stage 3: distillation of a fine-tuned teacher into a student on ALL unlabelled images (SimCLRv2 sec. 2).

The teacher (``parent``: a finished finetune run) is fixed; its softened predictions softmax(t/T) on each
augmented batch (or, with ``distill.teacher_view=clean``, on the same images un-augmented) are the targets of
the student's log_softmax(s/T) (loss scaled by T^2). The student is ``cfg.model`` (the same architecture for
self-distillation, or a smaller one) with a linear classifier, trained from scratch (``distill.init=scratch``,
as the paper), or — for a student with the teacher's architecture — started from the backbone and kept head
layers of the pretraining run the teacher was fine-tuned from (``distill.init=pretrained``: the task-agnostic
representation is reused, only the task is distilled), or from the teacher itself (``distill.init=teacher``:
self-training). With ``distill.label_weight > 0`` the true labels of the labelled subset (the teacher's label
fraction) are mixed in.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from jobs.stages import builders
from jobs.config.stage import StageConfig, from_dict
from jobs.stages.finetune import classifier, load_trained
from jobs.stages.parts import StageParts
from simclr import dist
from simclr.losses.distill import IGNORE_LABEL, distillation_loss
from simclr.models.simclr import Classifier
from simclr.train.evaluate import EvalBatches, classify
from simclr.train.loop import Batch
from simclr.data.shards.fractions import fraction_keys_file
from simclr.runfolder.write import RunFolder


def teacher_of(cfg: StageConfig, num_classes: int, device: torch.device) -> nn.Module:
    """The fine-tuned teacher, rebuilt from its run's config and loaded from its last checkpoint."""
    assert cfg.parent is not None
    tcfg = from_dict(RunFolder(cfg.parent).read_config())
    if tcfg.stage not in ("finetune", "supervised", "distill"):
        raise ValueError(f"config key 'parent': a distill teacher must be a classifier run, got stage {tcfg.stage!r}")
    net = builders.backbone(tcfg)
    teacher = Classifier(net, _neck(tcfg, net.out_dim), num_classes)
    load_trained(cfg.parent, teacher)
    teacher.eval().requires_grad_(False).to(device)
    if cfg.train.channels_last:
        teacher.to(memory_format=torch.channels_last)
    return teacher


def _neck(tcfg: StageConfig, in_dim: int) -> nn.Module:
    """The layers between the teacher's backbone and its classifier, as its run built them."""
    if tcfg.stage == "finetune":
        return builders.projection_head(tcfg, in_dim).truncated(tcfg.finetune.ft_proj_selector)
    if tcfg.stage == "distill" and tcfg.distill.init != "scratch" and tcfg.parent is not None:
        # A student started from its teacher's pretraining run or from the teacher (student_of) kept the head
        # layers its teacher was fine-tuned with: as a teacher of the next round it must be rebuilt with them
        # (with an Identity neck its checkpoint did not load).
        own_teacher = from_dict(RunFolder(tcfg.parent).read_config())
        return builders.projection_head(tcfg, in_dim).truncated(own_teacher.finetune.ft_proj_selector)
    return nn.Identity()


def student_of(cfg: StageConfig, num_classes: int) -> Classifier:
    """The student: ``cfg.model`` from scratch, or started from the teacher's pretraining run or the teacher."""
    if cfg.distill.init == "scratch":
        return Classifier(builders.backbone(cfg), nn.Identity(), num_classes)
    assert cfg.parent is not None
    tcfg = from_dict(RunFolder(cfg.parent).read_config())
    if tcfg.stage != "finetune" or tcfg.parent is None:
        raise ValueError(
            f"config key 'distill.init'={cfg.distill.init} needs a teacher fine-tuned from a pretraining run; "
            f"the teacher {cfg.parent} is a {tcfg.stage} run"
        )
    # Same construction as fine-tuning (it checks that cfg.model matches the pretraining run's, naming the key).
    # The student trains whole and starts its classifier as a distill student always did (not the fine-tuning
    # stage's zero init): finetune's freezing and zero-init keys are not distill's.
    start = replace(cfg, parent=tcfg.parent, finetune=replace(
        cfg.finetune, ft_proj_selector=tcfg.finetune.ft_proj_selector, fine_tune_after_block=-1,
        zero_init_logits=False))
    student = classifier(start, num_classes, pretrained=True)
    if cfg.distill.init == "teacher":
        load_trained(cfg.parent, student)
    return student


def build(cfg: StageConfig, device: torch.device) -> StageParts:
    clean = cfg.distill.teacher_view == "clean"
    train = builders.loader(cfg, split=cfg.data.train_split, mode="labelled", with_clean=clean)
    test_batches = EvalBatches(builders.loader(cfg, split=cfg.data.eval_split, mode="eval", distributed=False, batch_size=512))
    teacher = teacher_of(cfg, train.num_classes, device)
    student: nn.Module = student_of(cfg, train.num_classes)
    student = dist.convert_sync_bn(student)  # global BN under DDP (a no-op with one process)
    T = cfg.distill.temperature
    label_weight = cfg.distill.label_weight
    # The labelled subset whose true labels are mixed in: the fraction's key list, or with label_fraction=1.0
    # (no list) every labelled sample (label >= 0); the unlabelled ones (-1) are distilled only.
    labelled: set[str] | None = None
    if label_weight > 0:
        keys = fraction_keys_file(cfg.data.root, cfg.finetune.label_fraction, cfg.data.train_split)
        labelled = set(keys.read_text().split()) if keys else None

    def step_fn(module: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = batch["image"]
        with torch.no_grad():
            t_logits = teacher(batch["clean"] if clean else x).float()
        s_logits = module(x).float()
        labels = None
        if label_weight > 0:
            y = batch["label"]
            mask = y >= 0
            if labelled is not None:
                mask &= torch.tensor([k in labelled for k in batch["key"]], dtype=torch.bool, device=y.device)
            labels = torch.where(mask, batch["label"], torch.full_like(batch["label"], IGNORE_LABEL))
        loss = distillation_loss(s_logits, t_logits, T, labels=labels, label_weight=label_weight)
        agree = (s_logits.argmax(1) == t_logits.argmax(1)).float().mean() * 100
        return loss, {"distill_loss": loss.detach(), "agreement": agree.detach()}

    cl = cfg.train.channels_last

    def evaluate(m: nn.Module) -> dict[str, float]:
        return classify(m, test_batches(), device, channels_last=cl, reference=teacher)

    n_steps = builders.steps(cfg, len(train))
    return StageParts(
        model=student,
        loader=train,
        optimizer=builders.optimizer(cfg, student),
        lr_at=builders.lr_schedule(cfg, n_steps, len(train)),
        step_fn=step_fn,
        evaluators=(lambda m, epoch: evaluate(m),),
        final_eval=evaluate,
    )
