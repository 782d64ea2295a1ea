"""Stage configs: defaults in one place, unknown keys and invalid values rejected naming the key."""

from __future__ import annotations

import re

import pytest

from jobs.config.stage import ConfigError, StageConfig, compose, config_changes, from_dict, to_dict
from simclr.runfolder.layout import STAGES

BASE = ["run_dir=/tmp/r", "data.root=/tmp/d"]


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_composes(stage: str) -> None:
    over = BASE + (["parent=/tmp/p"] if stage in ("finetune", "linear_eval", "distill") else [])
    cfg = compose(stage, over)
    assert cfg.stage == stage and cfg.run_dir == "/tmp/r"
    assert from_dict(to_dict(cfg)) == cfg  # the saved form round-trips


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.depth=19", "model.depth"),
        ("model.width=0", "model.width"),
        ("model.sk_ratio=1.0", "model.sk_ratio"),
        ("pretrain.temperature=0", "pretrain.temperature"),
        ("train.batch_size=1", "train.batch_size"),
        ("optim.name=adam", "optim.name"),
        ("train.amp=fp8", "train.amp"),
        ("train.epochs=abc", "train.epochs"),
        ("+model.colour=red", "model.colour"),
        ("finetune.ft_proj_selector=4", "finetune.ft_proj_selector"),
        ("data.min_crop_area=0", "data.min_crop_area"),
        ("data.min_crop_area=1.5", "data.min_crop_area"),
        ("distill.init=copy", "distill.init"),
        ("pretrain.memory_size=-1", "pretrain.memory_size"),
        ("pretrain.memory_size=1.5", "pretrain.memory_size"),
        ("pretrain.memory_momentum=1.0", "pretrain.memory_momentum"),
        ("pretrain.memory_momentum=-0.1", "pretrain.memory_momentum"),
        ("pretrain.memory_positive=key", "pretrain.memory_positive"),
        ("pretrain.memory_positive=memory", "pretrain.memory_positive"),  # without a memory_size
    ],
)
def test_invalid_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose("pretrain", BASE + [override])


def test_memory_is_off_by_default_and_set_by_its_keys() -> None:
    assert compose("pretrain", BASE).pretrain.memory_size == 0
    cfg = compose("pretrain", BASE + ["pretrain.memory_size=65536", "pretrain.memory_momentum=0.99"])
    assert (cfg.pretrain.memory_size, cfg.pretrain.memory_momentum) == (65536, 0.99)
    assert cfg.pretrain.memory_positive == "online"  # the paper's: the memory's outputs are negatives only
    cfg = compose("pretrain", BASE + ["pretrain.memory_size=16", "pretrain.memory_positive=memory"])
    assert cfg.pretrain.memory_positive == "memory"


def test_unknown_key_in_dict_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        from_dict({"run_dir": "/r", "data": {"root": "/d"}, "optim": {"lr": 1.0}})


def test_required_keys() -> None:
    with pytest.raises(ConfigError, match="run_dir"):
        compose("pretrain", ["data.root=/d"])
    with pytest.raises(ConfigError, match="parent"):
        compose("finetune", BASE)


def test_model_group_selects_architecture() -> None:
    cfg = compose("pretrain", BASE + ["model=resnet50", "data.image_size=224"])
    assert (cfg.model.depth, cfg.model.width, cfg.model.cifar_stem) == (50, 1.0, False)


@pytest.mark.parametrize("model", ["resnet18_w025", "resnet50"])
@pytest.mark.parametrize(("stem", "size", "want"), [
    ("auto", 32, True), ("auto", 224, False), ("auto", 33, False), ("auto", 20, True),
    ("true", 32, True), ("true", 224, True), ("false", 32, False), ("false", 224, False),
])
def test_cifar_stem_auto_follows_the_image_size_and_a_stated_value_wins(model: str, stem: str, size: int,
                                                                       want: bool) -> None:
    """Official run.py: cifar_stem = image_size <= 32; the resolved bool is what the run folder records."""
    over = [f"model={model}", f"data.image_size={size}"] + ([] if stem == "auto" else [f"model.cifar_stem={stem}"])
    cfg = compose("pretrain", BASE + over)
    assert cfg.model.cifar_stem is want
    saved = to_dict(cfg)
    assert saved["model"]["cifar_stem"] is want and from_dict(saved) == cfg
    assert StageConfig().model.cifar_stem == "auto"


def test_cifar_stem_takes_only_a_bool_or_auto() -> None:
    with pytest.raises(ConfigError, match=r"model\.cifar_stem"):
        compose("pretrain", BASE + ["model.cifar_stem=maybe"])


@pytest.mark.parametrize(("stage", "after_block", "ok"), [
    ("finetune", -1, True), ("finetune", 0, True), ("finetune", 4, True), ("finetune", 5, False),
    ("finetune", -2, False), ("linear_eval", 4, True), ("linear_eval", 2, False), ("supervised", -1, True),
    ("supervised", 0, False),
])
def test_fine_tune_after_block_is_checked_per_stage(stage: str, after_block: int, ok: bool) -> None:
    over = BASE + ([] if stage == "supervised" else ["parent=/tmp/p"]) + [f"finetune.fine_tune_after_block={after_block}"]
    if ok:
        assert compose(stage, over).finetune.fine_tune_after_block == after_block
    else:
        with pytest.raises(ConfigError, match=r"finetune\.fine_tune_after_block"):
            compose(stage, over)


def test_official_classifier_defaults_per_stage() -> None:
    """Zero-initialised logits for fine-tuning and linear eval (README commands); linear eval on the frozen
    backbone with crop + flip."""
    ft = compose("finetune", BASE + ["parent=/tmp/p"]).finetune
    lin = compose("linear_eval", BASE + ["parent=/tmp/p"]).finetune
    sup = compose("supervised", BASE).finetune
    assert (ft.zero_init_logits, ft.fine_tune_after_block) == (True, -1)
    assert (lin.zero_init_logits, lin.fine_tune_after_block, lin.augment) == (True, 4, True)
    assert (sup.zero_init_logits, sup.fine_tune_after_block) == (False, -1)


def test_a_config_saved_before_the_added_keys_means_their_old_behaviour() -> None:
    """A run folder written before finetune.zero_init_logits / fine_tune_after_block existed ran with a random
    classifier start and, for linear eval, the frozen backbone: asking for that again is no change."""
    for stage, extra in [("finetune", ["parent=/tmp/p"]), ("linear_eval", ["parent=/tmp/p"]), ("supervised", [])]:
        new = compose(stage, BASE + extra + ["finetune.zero_init_logits=false"])
        saved = to_dict(new)
        del saved["finetune"]["zero_init_logits"], saved["finetune"]["fine_tune_after_block"]
        assert config_changes(saved, new) == []
        zero = compose(stage, BASE + extra + ["finetune.zero_init_logits=true"]) if stage != "supervised" else None
        if zero is not None:
            assert config_changes(saved, zero) == ["finetune.zero_init_logits: False -> True"]
    pre = compose("pretrain", BASE)
    saved = to_dict(pre)
    del saved["finetune"]["zero_init_logits"]
    assert config_changes(saved, pre) == []  # pretraining does not read it


def test_a_task_of_a_manifest_written_before_the_added_keys_runs_as_then() -> None:
    """simclr-resume submits a manifest's recorded configs again: a linear eval recorded without
    fine_tune_after_block is still valid (it froze the backbone), a fine-tune keeps its random classifier start."""
    for stage, after_block in [("linear_eval", 4), ("finetune", -1)]:
        saved = to_dict(compose(stage, BASE + ["parent=/tmp/p"]))
        del saved["finetune"]["zero_init_logits"], saved["finetune"]["fine_tune_after_block"]
        f = from_dict(saved).finetune
        assert (f.zero_init_logits, f.fine_tune_after_block) == (False, after_block)


@pytest.mark.parametrize("override", ["train.epochs=[", "data.root=/a=b", "train.epochs=int(abc)"])
def test_an_override_that_does_not_parse_is_a_config_error_naming_it(override: str) -> None:
    """It escaped as Hydra's own OverrideParseException (not a ValueError, no key named)."""
    with pytest.raises(ConfigError, match="^" + re.escape(f"bad override {override!r}: ")):
        compose("pretrain", BASE + [override])
