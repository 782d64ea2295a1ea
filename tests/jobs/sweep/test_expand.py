"""Grid expansion: points, parents, seeds, names and hashes, validation before anything is submitted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobs.config.stage import compose, legacy_hidden, to_dict
from jobs.sweep.expand import (
    PointComposer,
    SweepError,
    compose_sweep,
    config_hash,
    expand,
    render_value,
    split_cli_overrides,
    sweep_from_dict,
)


def sweep(tmp_path: Path, stages: dict[str, Any], **top: Any) -> Any:
    d = {"name": "t", "sweep_dir": str(tmp_path / "sw"), "overrides": ["data.root=/data/x", "train.max_steps=3"],
         "stages": stages, **top}
    return sweep_from_dict(d)


TWO_BY_TWO = {
    "pretrain": {"grid": [{"axes": {"model.width": [0.25, 0.5]}}]},
    "finetune": {"grid": [{"axes": {"finetune.label_fraction": [0.01, 0.1]}}]},
}


def test_two_points_by_two_fractions(tmp_path: Path) -> None:
    tasks = expand(sweep(tmp_path, TWO_BY_TWO))
    pre = [t for t in tasks if t.stage == "pretrain"]
    ft = [t for t in tasks if t.stage == "finetune"]
    assert len(pre) == 2 and len(ft) == 4
    by_key = {t.key: t for t in tasks}
    for t in ft:
        parent = by_key[t.parent]  # type: ignore[index]
        # the fine-tune has its pretrain run's architecture and points at its run folder
        assert t.config["model"] == parent.config["model"]
        assert t.config["parent"] == parent.run_dir
        assert t.axes["model.width"] == parent.axes["model.width"]
    assert sorted(t.point for t in ft) == ["w0.25-lf0.01", "w0.25-lf0.1", "w0.5-lf0.01", "w0.5-lf0.1"]
    # parents before children; stage folders; names <point>-<hash8>-s<seed>
    assert [t.stage for t in tasks] == ["pretrain"] * 2 + ["finetune"] * 4
    for t in tasks:
        path = Path(t.run_dir)
        assert path.parent == tmp_path / "sw" / "runs" / t.stage
        assert path.name == f"{t.point}-{t.hash}-s{t.seed}" and t.config["run_dir"] == t.run_dir
        assert t.config["point"] == t.point and t.config["sweep"] == "t" and t.config["train"]["max_steps"] == 3


def test_run_folders_are_stable_and_never_from_job_ids(tmp_path: Path) -> None:
    a = expand(sweep(tmp_path, TWO_BY_TWO))
    b = expand(sweep(tmp_path, TWO_BY_TWO))
    assert [t.run_dir for t in a] == [t.run_dir for t in b]
    # a changed value changes the hash of that stage's points (and so of their dependants' parents)
    c = expand(sweep(tmp_path, TWO_BY_TWO, overrides=["data.root=/data/x", "train.max_steps=4"]))
    assert not set(t.run_dir for t in a) & set(t.run_dir for t in c)


def test_seeds_share_the_hash_and_pick_their_parent(tmp_path: Path) -> None:
    stages = {
        "pretrain": {"grid": [{"seeds": [0, 1]}]},
        "finetune": {"grid": [{"axes": {"finetune.label_fraction": [0.01]}, "seeds": [0, 1, 2]},
                              {"axes": {"finetune.label_fraction": [0.1]}}]},
    }
    tasks = expand(sweep(tmp_path, stages))
    pre = {t.seed: t for t in tasks if t.stage == "pretrain"}
    one = sorted((t for t in tasks if t.axes.get("finetune.label_fraction") == 0.01), key=lambda t: t.seed)
    ten = sorted((t for t in tasks if t.axes.get("finetune.label_fraction") == 0.1), key=lambda t: t.seed)
    assert [t.seed for t in one] == [0, 1, 2] and len({t.hash for t in one}) == 1
    # same seed upstream when there is one, else the lowest
    assert [t.parent for t in one] == [pre[0].key, pre[1].key, pre[0].key]
    # seeds: null inherits the parents' seeds: one fine-tune per pretrain run
    assert [(t.seed, t.parent) for t in ten] == [(0, pre[0].key), (1, pre[1].key)]
    assert [t.config["seed"] for t in one] == [0, 1, 2]


def test_distill_selects_its_teacher_and_inherits_the_label_fraction(tmp_path: Path) -> None:
    stages = {
        "pretrain": {"grid": [{"axes": {"model": ["resnet18_w025", "resnet18_w05"]}}]},
        "finetune": {"grid": [{"axes": {"finetune.label_fraction": [0.01, 0.1]}}]},
        "distill": {"grid": [{"parent": {"model": "resnet18_w05", "finetune.label_fraction": 0.01},
                              "axes": {"model": ["resnet18_w025"]}}]},
    }
    tasks = expand(sweep(tmp_path, stages))
    d = [t for t in tasks if t.stage == "distill"]
    assert len(d) == 1
    teacher = {t.key: t for t in tasks}[d[0].parent]  # type: ignore[index]
    assert teacher.axes == {"model": "resnet18_w05", "finetune.label_fraction": 0.01}
    assert d[0].config["model"]["width"] == 0.25 and teacher.config["model"]["width"] == 0.5
    assert d[0].config["finetune"]["label_fraction"] == 0.01
    assert d[0].point == "resnet18_w025-from-resnet18_w05-lf0.01"


def test_a_child_stage_override_wins_over_the_inherited_value(tmp_path: Path) -> None:
    stages = {
        "pretrain": {"grid": [{"axes": {"model": ["resnet18_w05"]}}], "overrides": ["data.image_size=20"]},
        "finetune": {"grid": [{"axes": {"finetune.ft_proj_selector": [0]}},
                              {"axes": {"finetune.ft_proj_selector": [1]}, "overrides": ["data.strength=0.3"]}],
                     "overrides": ["data.image_size=28"]},
        "linear_eval": {"grid": [{}]},
    }
    tasks = expand(sweep(tmp_path, stages))
    size = {(t.stage, t.config["finetune"]["ft_proj_selector"]): t.config["data"]["image_size"] for t in tasks}
    # the fine-tunes set their own size; linear eval sets none and inherits the pretraining run's data config
    assert size == {("pretrain", 1): 20, ("finetune", 0): 28, ("finetune", 1): 28, ("linear_eval", 0): 20}
    ft = {t.config["finetune"]["ft_proj_selector"]: t for t in tasks if t.stage == "finetune"}
    assert ft[1].config["data"]["strength"] == 0.3 and ft[0].config["data"]["strength"] == 0.5
    assert all(t.config["model"]["width"] == 0.5 for t in tasks)  # the architecture is still inherited


def test_fast_composition_equals_jobs_config_compose(tmp_path: Path) -> None:
    stages = {
        "pretrain": {"grid": [{"axes": {"model": ["resnet18_w05"], "pretrain.temperature": [0.5]}}],
                     "overrides": ["optim.base_lr=0.5"]},
        "finetune": {"grid": [{"axes": {"finetune.ft_proj_selector": [0, 2]}}]},
    }
    for t in expand(sweep(tmp_path, stages)):
        # `sweep` is set on the config directly (the key collides with the sweep/ config group in Hydra)
        assert t.config == dict(to_dict(compose(t.stage, t.overrides)), sweep="t")


@pytest.mark.parametrize(
    "stages, match",
    [
        ({"pretrain": {"grid": [{"axes": {"model.widht": [0.5]}}]}}, "model.widht"),
        ({"pretrain": {"grid": [{"axes": {"model.width": [-1.0]}}]}}, "model.width"),
        ({"pretrain": {"overrides": ["train.epochs=0"]}}, "train.epochs"),
        ({"pretrain": {"grid": [{"axes": {"model": ["resnet999"]}}]}}, "resnet999"),
        ({"pretrain": {"grid": [{"axes": {"model.width": []}}]}}, "axes.model.width"),
        ({"finetune": {}}, "stages.finetune"),
        ({"pretrain": {}, "finetune": {"grid": [{"parent": {"model.width": 3.0}}]}}, "parent"),
        ({"pretrain": {}, "finetune": {"grid": [{"parent": {"nosuch.key": 1}}]}}, "nosuch.key"),
        ({"pretrain": {"grid": [{"seeds": []}]}}, "seeds"),
        ({"pretrain": {"enabled": False}}, "stages"),
    ],
)
def test_bad_definitions_fail_naming_the_key(tmp_path: Path, stages: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        expand(sweep(tmp_path, stages))


def test_unknown_definition_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="stages.pretrain.gird"):
        sweep(tmp_path, {"pretrain": {"gird": []}})
    with pytest.raises(SweepError, match="stages.pretrian"):
        sweep(tmp_path, {"pretrian": {}})
    with pytest.raises(ValueError, match="partition"):
        sweep(tmp_path, {"pretrain": {}}, cluster={"partition": "a;b"})


def test_cli_overrides_split_between_definition_and_stage_configs() -> None:
    sweep_ov, stage_ov = split_cli_overrides(
        ["sweep_dir=/x", "cluster=local_executor", "cluster.partition=high", "train.epochs=2", "model=resnet50",
         "data.root=/d", "+stages.pretrain.overrides=[]", "seed=3"])
    assert sweep_ov == ["sweep_dir=/x", "cluster=local_executor", "cluster.partition=high",
                        "+stages.pretrain.overrides=[]"]
    assert stage_ov == ["train.epochs=2", "model=resnet50", "data.root=/d", "seed=3"]
    with pytest.raises(SweepError, match="key=value"):
        split_cli_overrides(["oops"])


def test_shipped_sweeps_compose(tmp_path: Path) -> None:
    tiny = compose_sweep("tiny", [f"sweep_dir={tmp_path}", "data.root=/d", "cluster=local_executor",
                                  "train.max_steps=2"])
    assert tiny.cluster.executor == "local" and "train.max_steps=2" in tiny.final_overrides
    tasks = expand(tiny)
    assert len(tasks) == 6 and all(t.config["train"]["max_steps"] == 2 for t in tasks)
    demo = expand(compose_sweep("demo", [f"sweep_dir={tmp_path}", "data.root=/d"]))
    count = {s: sum(t.stage == s for t in demo) for s in ("pretrain", "finetune", "linear_eval", "supervised",
                                                          "distill")}
    assert count == {"pretrain": 2, "finetune": 8, "linear_eval": 2, "supervised": 4, "distill": 4}
    with pytest.raises(SweepError, match="nosuch"):
        compose_sweep("nosuch", [])
    with pytest.raises(ValueError, match="partition"):
        compose_sweep("tiny", ["cluster.partition=debug;ls"])


def test_command_line_overrides_win_over_the_stages_and_blocks_own(tmp_path: Path) -> None:
    """`simclr-sweep demo train.epochs=3` trains every point 3 epochs: the demo's stage and block overrides
    (train.epochs=1 / 15 / 2) used to win over the command line silently."""
    demo = expand(compose_sweep("demo", [f"sweep_dir={tmp_path}", "data.root=/d", "train.epochs=3",
                                         "data.image_size=24"]))
    assert {t.config["train"]["epochs"] for t in demo} == {3}
    assert {t.config["data"]["image_size"] for t in demo} == {24}  # pretraining's stage override (20) too


@pytest.mark.parametrize("override, named", [
    ("model=resnet50", "'model' is an axis of the sweep (stages.pretrain.grid[0].axes"),
    ("finetune.label_fraction=0.5", "'finetune.label_fraction' is an axis"),
    ("seed=7", "'seed' is set per point by the sweep; give seeds in the grid blocks"),
    ("run_dir=/elsewhere", "'run_dir' is set per point"),
    ("stages.pretrain.overrides=['seed=7']", "override 'seed=7' (stage or stages.pretrain.grid[0] overrides)"),
])
def test_overrides_no_point_would_honour_are_refused(tmp_path: Path, override: str, named: str) -> None:
    """They were dropped without a word: every demo point stayed ResNet-18, every seed stayed 0."""
    with pytest.raises(SweepError) as e:
        expand(compose_sweep("demo", [f"sweep_dir={tmp_path}", "data.root=/d", override]))
    assert named in str(e.value)


def test_config_hash_ignores_seed_run_dir_and_parent_seed() -> None:
    base = {"stage": "finetune", "seed": 0, "run_dir": "/a", "sweep": "s", "point": "p", "parent": "/r/x-1234abcd-s0",
            "model": {"width": 1.0}}
    same = dict(base, seed=2, run_dir="/b", parent="/r/x-1234abcd-s2")
    other = dict(base, model={"width": 2.0})
    assert config_hash(base) == config_hash(same) != config_hash(other)


def test_speed_and_bookkeeping_knobs_do_not_move_a_point(tmp_path: Path) -> None:
    """A rerun with more data workers or another log cadence got new run folders: every finished point trained
    again. A path (data.root) still counts: another path may hold other data."""
    import hashlib
    import json

    base = expand(sweep(tmp_path, TWO_BY_TWO))
    knobs = expand(sweep(tmp_path, TWO_BY_TWO, overrides=[
        "data.root=/data/x", "train.max_steps=3", "data.num_workers=7", "train.log_every=3", "train.threads=4",
        "train.checkpoint_every=5", "train.keep_checkpoints=4", "train.compile=true", "data.bad_sample_budget=2"]))
    assert [t.key for t in knobs] == [t.key for t in base]
    assert knobs[0].config["data"]["num_workers"] == 7  # the task still runs with the new value
    moved = expand(sweep(tmp_path, TWO_BY_TWO, overrides=["data.root=/data/y", "train.max_steps=3"]))
    assert not {t.key for t in moved} & {t.key for t in base}
    # a config that keeps the knobs' defaults hashes as before the knobs were neutralised (no sweep re-trains)
    # (and the keys added since, at the values that did what runs did before them: ADDED_KEYS)
    cfg = {k: v for k, v in legacy_hidden(base[0].config).items() if k not in ("run_dir", "seed", "sweep", "point")}
    old = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:8]
    assert base[0].hash == old


def test_memory_keys_count_in_the_hash_only_when_set(tmp_path: Path) -> None:
    """A sweep written before SimCLRv2's memory keeps its folders; a memory point gets folders of its own."""
    base = expand(sweep(tmp_path, TWO_BY_TWO))
    common = ["data.root=/data/x", "train.max_steps=3"]
    off = expand(sweep(tmp_path, TWO_BY_TWO, overrides=[*common, "pretrain.memory_size=0"]))
    on = expand(sweep(tmp_path, TWO_BY_TWO, overrides=[*common, "pretrain.memory_size=4096"]))
    other_m = expand(sweep(tmp_path, TWO_BY_TWO, overrides=[*common, "pretrain.memory_size=4096",
                                                           "pretrain.memory_momentum=0.99"]))
    online = expand(sweep(tmp_path, TWO_BY_TWO, overrides=[*common, "pretrain.memory_size=4096",
                                                          "pretrain.memory_positive=online"]))
    moco = expand(sweep(tmp_path, TWO_BY_TWO, overrides=[*common, "pretrain.memory_size=4096",
                                                        "pretrain.memory_positive=memory"]))
    assert [t.key for t in off] == [t.key for t in base]
    assert [t.key for t in online] == [t.key for t in on]  # the default positive, named or not: the same runs
    hashes = [{t.hash for t in tasks} for tasks in (base, on, other_m, moco)]
    assert len(set.union(*hashes)) == sum(map(len, hashes))


def test_memory_size_is_an_ablation_axis_with_a_short_name(tmp_path: Path) -> None:
    tasks = expand(sweep(tmp_path, {"pretrain": {"grid": [{"axes": {"pretrain.memory_size": [0, 4096]}}]}}))
    assert sorted(t.point for t in tasks) == ["mem0", "mem4096"]
    assert sorted(t.config["pretrain"]["memory_size"] for t in tasks) == [0, 4096]


# The demo's run folders before issue 19 added model.cifar_stem=auto, finetune.zero_init_logits and
# finetune.fine_tune_after_block (expanded at bb9f60b): the demo pins what it ran, so it finds the same folders
# and, the hash covering the whole resolved config, trains exactly what it trained.
DEMO_RUNS_BEFORE_ISSUE_19 = [
    "pretrain/resnet18_w025-34da51df-s0", "pretrain/resnet18_w05-e03f5f16-s0",
    "supervised/resnet18_w025-lf0.01-784896a0-s0", "supervised/resnet18_w025-lf0.01-784896a0-s1",
    "supervised/resnet18_w025-lf0.01-784896a0-s2", "supervised/resnet18_w025-lf0.1-f63a8736-s0",
    "finetune/resnet18_w025-lf0.01-sel1-b1151ab4-s0", "finetune/resnet18_w025-lf0.01-sel1-b1151ab4-s1",
    "finetune/resnet18_w025-lf0.01-sel1-b1151ab4-s2", "finetune/resnet18_w025-lf0.01-sel0-a27de2ca-s0",
    "finetune/resnet18_w025-lf0.01-sel0-a27de2ca-s1", "finetune/resnet18_w025-lf0.01-sel0-a27de2ca-s2",
    "finetune/resnet18_w05-lf0.01-sel1-f0691da1-s0", "finetune/resnet18_w025-lf0.1-sel1-f78c20e3-s0",
    "linear_eval/resnet18_w025-d20aa693-s0", "linear_eval/resnet18_w05-924992bb-s0",
    "distill/resnet18_w025-from-resnet18_w05-lf0.01-sel1-4784898e-s0",
    "distill/resnet18_w025-from-resnet18_w025-lf0.01-sel1-47fb2bb7-s0",
    "distill/resnet18_w025-from-resnet18_w025-lf0.01-sel1-47fb2bb7-s1",
    "distill/resnet18_w025-from-resnet18_w025-lf0.01-sel1-47fb2bb7-s2",
]


def test_the_demo_trains_what_it_trained_before_the_official_defaults() -> None:
    tasks = expand(compose_sweep("demo"))
    assert [t.key for t in tasks] == DEMO_RUNS_BEFORE_ISSUE_19
    for t in tasks:
        f = t.config["finetune"]
        assert t.config["model"]["cifar_stem"] is True
        if t.stage in ("finetune", "linear_eval", "supervised"):
            assert f["zero_init_logits"] is False
            assert f["fine_tune_after_block"] == (4 if t.stage == "linear_eval" else -1)
        if t.stage == "linear_eval":
            assert f["augment"] is False


def test_an_added_key_moves_a_point_only_where_it_changes_what_runs(tmp_path: Path) -> None:
    base = {t.key for t in expand(sweep(tmp_path, TWO_BY_TWO))}  # zero_init_logits: true (the default)
    zero = expand(sweep(tmp_path, TWO_BY_TWO, overrides=["data.root=/data/x", "train.max_steps=3",
                                                         "finetune.zero_init_logits=false"]))
    # pretraining does not read it: same folders; fine-tuning does: new ones
    assert {t.key for t in zero if t.stage == "pretrain"} <= base
    assert not {t.key for t in zero if t.stage == "finetune"} & base


def test_render_value_round_trips_through_hydra() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for v in [0.01, 3, True, None, "plain", "/a/b c/it's", "0.5", [1, 2], "null"]:
        (ov,) = parser.parse_overrides([f"k={render_value(v)}"])
        assert ov.value() == v


def test_composer_rejects_sweep_syntax() -> None:
    with pytest.raises(SweepError, match="only key=value"):
        PointComposer().compose("pretrain", ["train.epochs=1,2", "run_dir=/x", "data.root=/d"])


def test_composition_errors_of_the_definition_are_sweep_errors_naming_the_key_or_override() -> None:
    """An interpolation that does not resolve escaped as OmegaConf's own error (not a SweepError, no sweep named);
    an override that does not parse was reported as Hydra's "no viable alternative at input '['", without it."""
    with pytest.raises(SweepError, match=r"^sweep 'tiny': Interpolation key 'nope' not found"):
        compose_sweep("tiny", ["sweep_dir=${nope}", "data.root=/d"])
    with pytest.raises(SweepError, match=r"^sweep 'tiny': bad override 'cluster\.time_min=\[': "):
        compose_sweep("tiny", ["cluster.time_min=["])


def test_a_definition_that_does_not_parse_is_a_sweep_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A YAML syntax error in a sweep definition escaped as yaml's own ParserError (a traceback)."""
    import jobs.config.compose

    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "mine.yaml").write_text("# @package _global_\ndefaults: [/sweep_schema]\nname: [mine\n")
    monkeypatch.setattr(jobs.config.compose, "CONF_DIR", tmp_path)
    with pytest.raises(SweepError, match=r"(?s)^sweep 'mine': while parsing .*mine\.yaml"):
        compose_sweep("mine", [])
