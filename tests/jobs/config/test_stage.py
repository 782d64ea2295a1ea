"""Stage configs: defaults in one place, unknown keys and invalid values rejected naming the key."""

from __future__ import annotations

import re

import pytest

from jobs.config.stage import ConfigError, compose, from_dict, to_dict
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
    ],
)
def test_invalid_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose("pretrain", BASE + [override])


def test_memory_is_off_by_default_and_set_by_its_keys() -> None:
    assert compose("pretrain", BASE).pretrain.memory_size == 0
    cfg = compose("pretrain", BASE + ["pretrain.memory_size=65536", "pretrain.memory_momentum=0.99"])
    assert (cfg.pretrain.memory_size, cfg.pretrain.memory_momentum) == (65536, 0.99)


def test_unknown_key_in_dict_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        from_dict({"run_dir": "/r", "data": {"root": "/d"}, "optim": {"lr": 1.0}})


def test_required_keys() -> None:
    with pytest.raises(ConfigError, match="run_dir"):
        compose("pretrain", ["data.root=/d"])
    with pytest.raises(ConfigError, match="parent"):
        compose("finetune", BASE)


def test_model_group_selects_architecture() -> None:
    cfg = compose("pretrain", BASE + ["model=resnet50"])
    assert (cfg.model.depth, cfg.model.width, cfg.model.cifar_stem) == (50, 1.0, False)


@pytest.mark.parametrize("override", ["train.epochs=[", "data.root=/a=b", "train.epochs=int(abc)"])
def test_an_override_that_does_not_parse_is_a_config_error_naming_it(override: str) -> None:
    """It escaped as Hydra's own OverrideParseException (not a ValueError, no key named)."""
    with pytest.raises(ConfigError, match="^" + re.escape(f"bad override {override!r}: ")):
        compose("pretrain", BASE + [override])
