"""The one composition path: the conf folder, the schemas, Hydra's errors mapped naming the key or the override,
and the override parser (the demo finds ``data.root`` with it, PointComposer reads every point's overrides)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from jobs.config import compose as cc
from jobs.config.compose import (
    CONF_DIR,
    CONFIG_NAME,
    compose_config,
    conf_path,
    group_options,
    SCHEMA_NAMES,
    hydra_errors,
    parse_overrides,
    register_schema,
)
from jobs.config.stage import StageConfig
from jobs.config.sweep import SweepConfig

REPO = Path(__file__).resolve().parents[3]


class Oops(ValueError):
    """A caller's own error class."""


# ------------------------------------------------------------------------------------------------ the conf folder
def test_the_conf_folder_is_the_packages_jobs_conf() -> None:
    assert CONF_DIR == REPO / "jobs" / "conf"
    assert (CONF_DIR / "pretrain.yaml").is_file() and conf_path("sweep", "demo.yaml").is_file()
    assert group_options("cluster") == ["example_gpu", "local", "local_executor"]
    assert group_options("sweep") == ["demo", "simclrv2_cifar10", "simclrv2_imagenet", "tiny"]


@pytest.mark.parametrize("name, ok", [("demo", True), ("my-gpu_2.v1", True), ("../demo", False), ("a/b", False),
                                      ("*", False), ("", False), ("a b", False)])
def test_config_names_are_plain_file_names(name: str, ok: bool) -> None:
    assert bool(CONFIG_NAME.match(name)) is ok


def test_every_reader_follows_the_one_conf_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage configs, the sweep definitions and the cluster profiles are all read from CONF_DIR (the folder
    was worked out three times, in three modules)."""
    from jobs.config.cluster import load_profile
    from jobs.config.stage import ConfigError, compose
    from jobs.sweep.expand import SweepError, compose_sweep

    conf = tmp_path / "conf"
    (conf / "sweep").mkdir(parents=True)
    (conf / "cluster").mkdir()
    (conf / "pretrain.yaml").write_text("defaults:\n  - stage_schema\n  - _self_\nseed: 7\n")
    (conf / "cluster" / "mine.yaml").write_text("partition: mine\n")
    (conf / "sweep" / "only.yaml").write_text("# @package _global_\ndefaults:\n  - /sweep_schema\n  - _self_\n"
                                              "name: only\nsweep_dir: /tmp/only\n")
    monkeypatch.setattr(cc, "CONF_DIR", conf)
    assert compose("pretrain", ["run_dir=/r", "data.root=/d"]).seed == 7
    with pytest.raises(ConfigError, match="Cannot find primary config 'finetune'"):
        compose("finetune", ["run_dir=/r", "data.root=/d", "parent=/p"])
    assert load_profile("mine").partition == "mine"
    with pytest.raises(ValueError, match=re.escape(f"no file {conf / 'cluster' / 'local.yaml'} (known: ['mine'])")):
        load_profile("local")
    assert compose_sweep("only").sweep_dir == "/tmp/only"
    with pytest.raises(SweepError, match=re.escape("(known: ['only'])")):
        compose_sweep("demo")


# ------------------------------------------------------------------------------------------------ the schemas
def test_both_schemas_are_registered_under_the_names_the_yamls_use() -> None:
    from hydra.core.config_store import ConfigStore

    assert (register_schema(StageConfig), register_schema(SweepConfig)) == ("stage_schema", "sweep_schema")
    assert sorted(SCHEMA_NAMES.values()) == ["stage_schema", "sweep_schema"]
    stored = ConfigStore.instance().list("/")
    assert "stage_schema.yaml" in stored and "sweep_schema.yaml" in stored
    for yaml_file, schema in [("pretrain.yaml", "stage_schema"), ("finetune.yaml", "stage_schema"),
                              ("sweep/tiny.yaml", "/sweep_schema"), ("sweep/demo.yaml", "/sweep_schema")]:
        assert OmegaConf.load(CONF_DIR / yaml_file).defaults[0] == schema
    with pytest.raises(KeyError):
        register_schema(Oops)


def test_compose_config_gives_a_plain_resolved_dict() -> None:
    data = compose_config("pretrain", ["model=resnet50", "data.root=/d"], schema=StageConfig, error=Oops, label="x")
    assert isinstance(data, dict) and isinstance(data["model"], dict)
    assert data["model"]["depth"] == 50 and data["data"]["root"] == "/d"
    assert "defaults" not in data


# ------------------------------------------------------------------------------------------------ the error mapping
@pytest.mark.parametrize("override, named", [
    ("train.epochz=1", "train.epochz"),  # unknown key (the schema): Hydra's message, then its cause's
    ("train.epochs=abc", "train.epochs"),  # ill-typed value
    ("model=resnet404", "model/resnet404"),  # missing option of a group
    ("train.epochs=[", "bad override 'train.epochs=['"),  # does not parse
    ("data.root=${nope}", "Interpolation key 'nope' not found"),  # resolution
])
def test_composition_errors_become_the_callers_class_naming_the_key(override: str, named: str) -> None:
    with pytest.raises(Oops) as e:
        compose_config("pretrain", [override], schema=StageConfig, error=Oops, label="stage config 'pretrain'",
                       prefix="P: ")
    assert str(e.value).startswith("P: ") and named in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no Hydra traceback behind it


def test_every_mapped_exception_kind(tmp_path: Path) -> None:
    from hydra.errors import ConfigCompositionException, HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    def mapped(exc: BaseException) -> str:
        with pytest.raises(Oops) as e:
            with hydra_errors(Oops, prefix="P: "):
                raise exc
        return str(e.value)

    assert mapped(OverrideParseException(override="a=[", message="no viable")) == "P: bad override 'a=[': no viable"
    with pytest.raises(Oops, match=r"^P: config key 'a\.b' is required$"):
        with hydra_errors(Oops, prefix="P: "):
            OmegaConf.create({"a": {"b": "???"}}).a.b
    try:
        raise ConfigCompositionException("Could not override 'x'") from KeyError("x not in Schema")
    except ConfigCompositionException as exc:
        assert mapped(exc) == "P: Could not override 'x': 'x not in Schema'"
    assert mapped(ConfigCompositionException("plain")) == "P: plain"
    assert mapped(HydraException("hydra says")) == "P: hydra says"
    assert mapped(OmegaConfBaseException("omegaconf says")) == "P: omegaconf says"
    bad = tmp_path / "bad.yaml"
    bad.write_text("x: [1\n")
    assert "bad.yaml" in mapped(_yaml_error(bad))


def _yaml_error(path: Path) -> BaseException:
    try:
        OmegaConf.load(path)
    except Exception as e:
        return e
    raise AssertionError("no YAML error")


def test_other_exceptions_pass_through_unchanged() -> None:
    for exc in (Oops("ours"), KeyError("k"), ValueError("v")):
        with pytest.raises(type(exc)) as e:
            with hydra_errors(Oops):
                raise exc
        assert e.value is exc


def test_a_config_that_is_not_a_mapping_or_does_not_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "listy.yaml").write_text("- a\n- b\n")
    (tmp_path / "broken.yaml").write_text("x: [1\n")
    monkeypatch.setattr(cc, "CONF_DIR", tmp_path)
    with pytest.raises(Oops, match="^P: primary config 'listy' must be a DictConfig"):
        compose_config("listy", schema=StageConfig, error=Oops, label="L", prefix="P: ")
    with pytest.raises(Oops, match=r"(?s)^P: while parsing .*broken\.yaml"):  # was yaml's raw ParserError
        compose_config("broken", schema=StageConfig, error=Oops, label="L", prefix="P: ")


# ------------------------------------------------------------------------------------------------ the override parser
@pytest.mark.parametrize("text, key, value, kind", [
    ("data.root=/d", "data.root", "/d", "set"),
    ("data.root='/a=b'", "data.root", "/a=b", "set"),  # '=' inside a (quoted) value
    ("data.root='/my data/x'", "data.root", "/my data/x", "set"),  # quotes removed
    ('data.root="/q d"', "data.root", "/q d", "set"),
    ("data.root='it\\'s'", "data.root", "it's", "set"),
    ("data.root=/a b", "data.root", "/a b", "set"),  # inner whitespace is part of an unquoted value
    ("+data.root=/x", "data.root", "/x", "add"),
    ("++data.root=/y", "data.root", "/y", "force_add"),
    ("~data.root", "data.root", None, "delete"),
    ("~data.root=/z", "data.root", "/z", "delete"),
    ("data=imagefolder", "data", "imagefolder", "set"),
    ("train.epochs=3", "train.epochs", 3, "set"),
    ("optim.base_lr=0.5", "optim.base_lr", 0.5, "set"),
    ("train.compile=true", "train.compile", True, "set"),
    ("parent=null", "parent", None, "set"),
    ("x=[1,2]", "x", [1, 2], "set"),
    ("x={a:1}", "x", {"a": 1}, "set"),
    ("data.root=", "data.root", "", "set"),
])
def test_overrides_parse_as_hydra_reads_them(text: str, key: str, value: object, kind: str) -> None:
    (ov,) = parse_overrides([text])
    assert (ov.text, ov.key, ov.value, ov.kind) == (text, key, value, kind)
    assert ov.package is None and not ov.sweep
    assert ov.sets_value is (kind != "delete")


def test_packages_and_sweeps_are_told_apart() -> None:
    pkg, sweep, rng = parse_overrides(["data@foo=bar", "train.epochs=1,2", "train.epochs=range(1,3)"])
    assert (pkg.key, pkg.package, pkg.value) == ("data", "foo", "bar")
    assert sweep.sweep and rng.sweep and not sweep.sets_value


@pytest.mark.parametrize("text", ["data.root=/a=b", "oops", "cluster.partition=debug;ls", "train.epochs=[",
                                  "train.epochs=int(abc)"])
def test_an_override_that_does_not_parse_raises_the_callers_class_naming_it(text: str) -> None:
    with pytest.raises(Oops, match="^" + re.escape(f"bad override {text!r}: ")):
        parse_overrides(["train.epochs=1", text], error=Oops)
