"""Structured configs for every pipeline stage: every default lives here, in exactly one place.

A stage config is built from Hydra's config groups in ``jobs/conf`` (``model/``, ``data/``, ``stage/``) plus
command-line overrides, merged into :class:`StageConfig`. Unknown keys are errors (OmegaConf structured
merge), and :func:`validate` rejects invalid values with a ``ValueError`` naming the dotted key - all before
any run folder is touched or any job is queued.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from jobs.config.compose import compose_config
from jobs.config.structured import merge_onto
from simclr.runfolder.layout import STAGES

DEPTHS = (18, 34, 50, 101, 152, 200)
CIFAR_STEM_MAX_SIZE = 32  # official tf2/run.py: cifar_stem = image_size <= 32
DISTILL_INITS = ("scratch", "pretrained", "teacher")
TEACHER_VIEWS = ("augmented", "clean")


@dataclass
class ModelConfig:
    """Backbone + projection head (SimCLRv2 sec. 2: deeper/wider ResNets, SK, a 3-layer head)."""

    depth: int = 18
    width: float = 1.0
    sk_ratio: float = 0.0
    # "auto": the CIFAR stem (3x3 stride 1, no max-pool) when data.image_size <= 32, as official tf2/run.py
    # (`cifar_stem=FLAGS.image_size <= 32`); true/false force it. A built config holds the resolved bool
    # (:func:`resolve`), so config.json records the stem the run used.
    cifar_stem: bool | str = "auto"
    in_channels: int = 3
    num_proj_layers: int = 3
    proj_out_dim: int = 128


@dataclass
class DataConfig:
    """Where the shards are and how images are turned into tensors."""

    root: str = "???"
    train_split: str = "train"
    eval_split: str = "test"
    image_size: int = 32
    # Colour-jitter strength: the official code uses 1.0 for ImageNet and 0.5 for CIFAR-size images.
    strength: float = 0.5
    # Smallest random-resized-crop area (fraction of the image): 0.08 in the paper (ImageNet); larger values keep
    # more of a small image in each view.
    min_crop_area: float = 0.08
    blur: bool | None = None
    num_workers: int = 0
    bad_sample_budget: int = 0
    batched_augment: bool = False


@dataclass
class OptimConfig:
    """LARS/SGD with the official LR scaling and warm-up + cosine schedule (SimCLR appendix B.1)."""

    name: str = "lars"  # lars | sgd | adamw
    base_lr: float = 0.3
    lr_scaling: str = "linear"  # linear: base*B/256, sqrt: base*sqrt(B) (official run.py)
    weight_decay: float = 1e-6
    momentum: float = 0.9
    warmup_epochs: float = 0.0


@dataclass
class TrainConfig:
    """Length of the run, batch, logging and checkpoint cadence, speed switches."""

    epochs: int = 1
    max_steps: int = 0  # 0 = no cap; otherwise stop after this many optimizer steps
    batch_size: int = 256  # GLOBAL batch: per-rank batch = batch_size / world_size
    log_every: int = 10
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    eval_every_epochs: int = 1
    channels_last: bool = True
    compile: bool = False
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | off
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default
    dist_timeout_s: int = 120  # a dead rank makes the others fail after this long


@dataclass
class PretrainConfig:
    """Contrastive pretraining (NT-Xent) with the online probe and a kNN monitor."""

    temperature: float = 0.2
    probe: bool = True
    knn_k: int = 20
    knn_train_samples: int = 5000  # train samples forming the kNN memory bank (0 = all)
    knn_every_epochs: int = 1
    # SimCLRv2 sec. 2's memory (MoCo): a moving average of backbone + head whose projections of view 2 are queued
    # as extra negatives. 0 = off (the loss of plain SimCLR, bit for bit).
    memory_size: int = 0  # queued projections (MoCo: 65536)
    memory_momentum: float = 0.999  # EMA rate of the memory network's weights (MoCo's m)
    # Each anchor's positive: "online" (the other view through the online network, as SimCLR and the paper's
    # memory, which buffers the memory network's output "as negative examples") or "memory" (MoCo's: the memory
    # network's projection of the other view). "memory" needs memory_size > 0.
    memory_positive: str = "online"


@dataclass
class FinetuneConfig:
    """Fine-tuning / supervised / linear-eval classifier on a label fraction (SimCLRv2 sec. 2, step 2)."""

    ft_proj_selector: int = 1  # 0 = drop the head, k = keep its first k layers, -1 = all
    label_fraction: float = 0.01  # must have a key list in <root>/train/fractions (1.0 = all labels)
    label_smoothing: float = 0.0
    augment: bool = True  # crop + flip on the labelled images (official fine-tuning augmentation)
    # Official zero_init_logits_layer (set True in the README's fine-tune and linear-eval commands): the
    # classifier's weights and bias start at 0, so step 0 predicts uniformly. Read by finetune, linear_eval and
    # supervised (a distill student keeps its own start).
    zero_init_logits: bool = True
    # Official fine_tune_after_block: -1 trains everything, 0 freezes the stem, k = 1..4 the stem and block
    # groups 1..k (4: the whole backbone, linear evaluation). Frozen parts get no gradient and keep their BN
    # statistics (eval mode), as the official non-trainable Keras layers. linear_eval needs 4, supervised -1.
    fine_tune_after_block: int = -1


@dataclass
class DistillConfig:
    """Distillation of a fine-tuned teacher into a student on all unlabelled images (sec. 2, step 3)."""

    temperature: float = 1.0
    label_weight: float = 0.0  # weight of the true-label loss on the labelled subset
    # Student start: "scratch" (random, as the paper), "pretrained" (the backbone and kept head layers of the
    # pretraining run the teacher was fine-tuned from) or "teacher" (a copy of the fine-tuned teacher: self-training,
    # best with teacher_view=clean so that the student has something to learn). The last two need the student
    # to have the teacher's architecture.
    init: str = "scratch"
    # What the teacher labels: "augmented" (the student's own crop, as the official code) or "clean" (the
    # un-augmented image; the student still learns from the crop, so it must be invariant to it).
    teacher_view: str = "augmented"


@dataclass
class StageConfig:
    """Everything one stage run needs. ``parent``: the run folder it starts from (pretrain run for
    finetune/linear_eval, fine-tuned teacher run for distill)."""

    stage: str = "pretrain"
    run_dir: str = "???"
    seed: int = 0
    sweep: str | None = None
    point: str = "run"
    parent: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


class ConfigError(ValueError):
    """An invalid or unknown config key; the message names the dotted key."""


def _require(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {msg}")


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.,=+-]+$")


def validate(cfg: StageConfig) -> StageConfig:
    """Reject invalid values, naming the key. Returns ``cfg`` unchanged when valid."""
    _require(cfg.stage in STAGES, "stage", f"{cfg.stage!r} is not one of {STAGES}")
    _require(cfg.run_dir not in ("", "???"), "run_dir", "is required")
    _require(bool(_SAFE_NAME.match(cfg.point)), "point", f"{cfg.point!r} must match {_SAFE_NAME.pattern}")
    m = cfg.model
    _require(m.depth in DEPTHS, "model.depth", f"{m.depth} is not one of {DEPTHS}")
    _require(m.width > 0, "model.width", f"must be > 0, got {m.width}")
    _require(0.0 <= m.sk_ratio < 1.0, "model.sk_ratio", f"must be in [0, 1), got {m.sk_ratio}")
    _require(isinstance(m.cifar_stem, bool) or m.cifar_stem == "auto", "model.cifar_stem",
             f"must be true, false or auto, got {m.cifar_stem!r}")
    _require(m.in_channels in (1, 3), "model.in_channels", f"must be 1 or 3, got {m.in_channels}")
    _require(m.num_proj_layers >= 1, "model.num_proj_layers", f"must be >= 1, got {m.num_proj_layers}")
    _require(m.proj_out_dim >= 1, "model.proj_out_dim", f"must be >= 1, got {m.proj_out_dim}")
    d = cfg.data
    _require(d.root not in ("", "???"), "data.root", "is required (a folder made by jobs.cli.shards)")
    _require(d.image_size >= 8, "data.image_size", f"must be >= 8, got {d.image_size}")
    _require(d.strength >= 0, "data.strength", f"must be >= 0, got {d.strength}")
    _require(0 < d.min_crop_area <= 1, "data.min_crop_area", f"must be in (0, 1], got {d.min_crop_area}")
    _require(d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}")
    _require(d.bad_sample_budget >= 0, "data.bad_sample_budget", "must be >= 0")
    o = cfg.optim
    _require(o.name in ("lars", "sgd", "adamw"), "optim.name", f"{o.name!r} is not lars|sgd|adamw")
    _require(o.base_lr > 0, "optim.base_lr", f"must be > 0, got {o.base_lr}")
    _require(o.lr_scaling in ("linear", "sqrt", "none"), "optim.lr_scaling", "must be linear|sqrt|none")
    _require(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    _require(0 <= o.momentum < 1, "optim.momentum", "must be in [0, 1)")
    _require(o.warmup_epochs >= 0, "optim.warmup_epochs", "must be >= 0")
    t = cfg.train
    _require(t.epochs >= 1, "train.epochs", f"must be >= 1, got {t.epochs}")
    _require(t.max_steps >= 0, "train.max_steps", "must be >= 0")
    _require(t.batch_size >= 2, "train.batch_size", f"must be >= 2, got {t.batch_size}")
    _require(t.log_every >= 1, "train.log_every", "must be >= 1")
    _require(t.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
    _require(t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
    _require(t.eval_every_epochs >= 0, "train.eval_every_epochs", "must be >= 0")
    _require(t.amp in ("auto", "bf16", "off"), "train.amp", f"{t.amp!r} is not auto|bf16|off")
    _require(t.threads >= 0, "train.threads", "must be >= 0")
    _require(t.dist_timeout_s >= 1, "train.dist_timeout_s", "must be >= 1")
    p = cfg.pretrain
    _require(p.temperature > 0, "pretrain.temperature", f"must be > 0, got {p.temperature}")
    _require(p.knn_k >= 1, "pretrain.knn_k", "must be >= 1")
    _require(not isinstance(p.memory_size, bool) and p.memory_size >= 0, "pretrain.memory_size",
             f"must be an integer >= 0 (0 = no memory), got {p.memory_size!r}")
    # m = 1 would freeze the memory network at its random start; m = 0 copies the online weights every step.
    _require(0 <= p.memory_momentum < 1, "pretrain.memory_momentum", f"must be in [0, 1), got {p.memory_momentum}")
    _require(p.memory_positive in ("online", "memory"), "pretrain.memory_positive",
             f"{p.memory_positive!r} is not online|memory")
    _require(p.memory_positive == "online" or p.memory_size > 0, "pretrain.memory_positive",
             "=memory takes its positives from the memory network, which pretrain.memory_size=0 turns off")
    f = cfg.finetune
    _require(f.ft_proj_selector >= -1, "finetune.ft_proj_selector", "must be -1, 0 or a layer count")
    _require(
        f.ft_proj_selector <= m.num_proj_layers,
        "finetune.ft_proj_selector",
        f"{f.ft_proj_selector} > model.num_proj_layers={m.num_proj_layers}",
    )
    _require(0 < f.label_fraction <= 1, "finetune.label_fraction", f"must be in (0, 1], got {f.label_fraction}")
    _require(0 <= f.label_smoothing < 1, "finetune.label_smoothing", "must be in [0, 1)")
    _require(-1 <= f.fine_tune_after_block <= 4, "finetune.fine_tune_after_block",
             f"must be -1 (train everything), 0 (freeze the stem) .. 4 (freeze the backbone), got {f.fine_tune_after_block}")
    if cfg.stage == "linear_eval":
        _require(f.fine_tune_after_block == 4, "finetune.fine_tune_after_block",
                 f"linear_eval trains on the frozen backbone (4), got {f.fine_tune_after_block}: that is a finetune run")
    if cfg.stage == "supervised":
        _require(f.fine_tune_after_block == -1, "finetune.fine_tune_after_block",
                 f"supervised starts from random weights, so nothing may be frozen (-1), got {f.fine_tune_after_block}")
    s = cfg.distill
    _require(s.temperature > 0, "distill.temperature", f"must be > 0, got {s.temperature}")
    _require(0 <= s.label_weight <= 1, "distill.label_weight", f"must be in [0, 1], got {s.label_weight}")
    _require(s.init in DISTILL_INITS, "distill.init", f"must be one of {DISTILL_INITS}, got {s.init!r}")
    _require(s.teacher_view in TEACHER_VIEWS, "distill.teacher_view",
             f"must be one of {TEACHER_VIEWS}, got {s.teacher_view!r}")
    if cfg.stage in ("finetune", "linear_eval", "distill"):
        _require(cfg.parent is not None and cfg.parent != "", "parent", f"stage {cfg.stage} needs a parent run folder")
    return cfg


def cifar_stem(model: ModelConfig, image_size: int) -> bool:
    """The stem a model gets: ``model.cifar_stem`` when stated, else official run.py's ``image_size <= 32``."""
    if isinstance(model.cifar_stem, bool):
        return model.cifar_stem
    if model.cifar_stem != "auto":
        raise ConfigError(f"config key 'model.cifar_stem': must be true, false or auto, got {model.cifar_stem!r}")
    return image_size <= CIFAR_STEM_MAX_SIZE


def resolve(cfg: StageConfig) -> StageConfig:
    """Replace the values derived from others by what they resolve to (``model.cifar_stem: auto`` -> a bool), so
    a run folder's config says what ran. In place; returns ``cfg``. A resolved config resolves to itself."""
    cfg.model.cifar_stem = cifar_stem(cfg.model, cfg.data.image_size)
    return cfg


def from_dict(data: dict[str, Any]) -> StageConfig:
    """Merge a plain (possibly partial) dict onto the defaults and resolve it; unknown keys raise ConfigError
    naming them. A key of ADDED_KEYS the dict lacks takes its old value (a config saved before the key existed:
    a run folder's, or a task of a manifest written then, which ``simclr-resume`` submits again)."""
    return validate(resolve(merge_onto(StageConfig, with_old_values(data), label="config", error=ConfigError)))


def to_dict(cfg: StageConfig) -> dict[str, Any]:
    """Plain, JSON-serialisable dict of a config (the form saved in run folders and checkpoints)."""
    return dataclasses.asdict(cfg)


# Keys that may change between two starts of one run without changing what it trains: paths (a sweep or a data
# set moved to another file system), labels, and the speed and bookkeeping knobs of the job that runs it.
RESTART_FREE_KEYS = frozenset({
    "run_dir", "parent", "data.root", "sweep", "point",
    "data.num_workers", "data.bad_sample_budget",
    "train.threads", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
    "train.dist_timeout_s", "train.compile",
})


# Keys added after run folders were written, each with the value that does what every run did before the key
# existed, for each stage that reads it (the other stages ignore it). A saved config without the key means that
# value (config_changes), and a point that has it hashes as if the key did not exist
# (jobs.sweep.expand.config_hash), so a sweep finished before keeps its run folders.
ADDED_KEYS: dict[str, dict[str, Any]] = {
    "finetune.zero_init_logits": {"finetune": False, "linear_eval": False, "supervised": False},
    "finetune.fine_tune_after_block": {"finetune": -1, "linear_eval": 4, "supervised": -1},
    # SimCLRv2's memory (issue 20): off, and the momentum's default, is what every pretraining ran before
    "pretrain.memory_size": {"pretrain": 0},
    "pretrain.memory_momentum": {"pretrain": 0.999},
    "pretrain.memory_positive": {"pretrain": "online"},
}


def with_old_values(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with each ADDED_KEYS key it lacks set to the value from before the key, for the stages that
    read it (a copy where anything is added)."""
    stage = config.get("stage", StageConfig.stage)
    out = config
    for key, before in ADDED_KEYS.items():
        section, name = key.split(".", 1)
        node = config.get(section, {})
        if stage in before and isinstance(node, dict) and name not in node:
            if out is config:
                out = dict(config)
            out[section] = {**out.get(section, {}), name: before[stage]}
    return out


def legacy_hidden(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of the nested ``config`` without the ADDED_KEYS that its stage ignores or that hold the value from
    before the key existed (what a config written before it would hash to)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    stage = config.get("stage")
    for key, before in ADDED_KEYS.items():
        section, name = key.split(".", 1)
        node = out.get(section)
        if isinstance(node, dict) and name in node and (stage not in before or node[name] == before[stage]):
            del node[name]
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a.b": value}`` with dotted keys (the form of Hydra overrides and error messages)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(saved: dict[str, Any], new: StageConfig) -> list[str]:
    """What ``new`` changes from the config ``saved`` in a run folder, ignoring RESTART_FREE_KEYS:
    ``["optim.name: 'lars' -> 'sgd'", ...]`` (a key the saved config lacks compares with its default)."""
    # A key written before it existed ran as its old value; one the stage does not read changes nothing.
    old = flatten(to_dict(merge_onto(StageConfig, with_old_values(saved), label="config", error=ConfigError)))
    cur = flatten(to_dict(new))
    ignored = {key for key, before in ADDED_KEYS.items() if new.stage not in before}
    return [f"{k}: {old.get(k)!r} -> {cur[k]!r}" for k in sorted(cur)
            if k not in RESTART_FREE_KEYS and k not in ignored and old.get(k) != cur[k]]


def compose(stage: str, overrides: list[str] | None = None) -> StageConfig:
    """Build a stage's config from ``jobs/conf`` (Hydra compose API) plus Hydra-style overrides,
    e.g. ``["model=resnet18_w025", "data.root=/data/fmnist", "train.epochs=5"]``."""
    # The stage YAMLs start from stage_schema (their first default), so Hydra itself rejects unknown keys and
    # ill-typed values while composing; errors as ConfigError naming the key or the override.
    fields = compose_config(stage, list(overrides or []), schema=StageConfig, error=ConfigError,
                            label=f"stage config {stage!r}")
    fields["stage"] = stage
    return from_dict(fields)
