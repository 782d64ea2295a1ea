"""Sweep definition -> validated stage config points (the tasks of the manifest), before anything is queued.

:func:`compose_sweep` builds a :class:`~jobs.config.sweep.SweepConfig` from ``jobs/conf/sweep/<name>.yaml``
and Hydra command-line overrides (the ``cluster/`` group selects the profile, e.g. ``cluster=local_executor``).
Overrides whose first key is a stage config field (``data.root=...``, ``train.epochs=2``, ``model=...``)
apply to every point of every stage, so one command line can retarget a whole sweep.

:func:`expand` crosses each stage's grid blocks with its parent stage's points and composes every point's
config exactly as ``jobs.config.stage.compose(stage, overrides)`` would, but without paying Hydra's ~70 ms per
point: Hydra composes once per distinct set of config-group choices (``model=...``), the plain
``key=value`` overrides are then applied to that dict and the result goes through ``jobs.config.stage.from_dict``
(unknown keys, types and values all checked). A bad key anywhere fails the whole sweep, naming the stage,
the block and the key, before any sbatch.

Run folder of a point: ``<sweep_dir>/runs/<stage>/<readable-name>-<hash8>-s<seed>``. The hash covers the
resolved config minus ``run_dir``, ``seed``, ``sweep`` and ``point`` (the parent run folder counted without
its seed suffix), so the seeds of one config point share it and the folder is found again by any rerun.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re
import typing
from pathlib import Path
from typing import Any

from jobs.config.cluster import validate as validate_profile
from jobs.config.compose import CONFIG_NAME, compose_config, conf_path, group_options, parse_overrides
from jobs.config.stage import RESTART_FREE_KEYS, StageConfig, flatten, from_dict, legacy_hidden, to_dict, validate
from jobs.config.structured import merge_onto
from jobs.config.sweep import DEFAULT_INHERIT, PARENT_STAGE, STAGE_ORDER, SweepConfig
from jobs.sweep.manifest import Task
from simclr.runfolder.layout import STAGES, digest, point_name, run_folder_name

# Short names for the usual ablation axes in readable point names (SimCLRv2 sec. 4 ablations).
AXIS_ABBREV: dict[str, str] = {
    "model.depth": "d",
    "model.width": "w",
    "model.sk_ratio": "sk",
    "model.num_proj_layers": "proj",
    "finetune.ft_proj_selector": "sel",
    "finetune.label_fraction": "lf",
    "train.epochs": "ep",
    "train.batch_size": "bs",
    "optim.base_lr": "lr",
    "pretrain.temperature": "tau",
    "pretrain.memory_size": "mem",
    "pretrain.memory_momentum": "mm",
    "pretrain.memory_positive": "pos",
    "distill.temperature": "dtau",
}
_HASH_EXCLUDE = ("run_dir", "seed", "sweep", "point")
_STAGE_FIELDS = frozenset(StageConfig.__dataclass_fields__) - {"stage"}
_UNQUOTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SweepError(ValueError):
    """A sweep definition that cannot be expanded; the message names the stage, block and key."""


# ---------------------------------------------------------------------------------------------------
# Composing the sweep definition
# ---------------------------------------------------------------------------------------------------
def _override_key(override: str) -> str:
    key = override.split("=", 1)[0].lstrip("+~")
    return key.split("@", 1)[0]


def split_cli_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(sweep-definition overrides, stage-config overrides): ``train.epochs=1`` goes to every stage,
    ``sweep_dir=...`` / ``cluster=...`` / ``stages.x...`` to the sweep definition."""
    sweep_ov: list[str] = []
    stage_ov: list[str] = []
    for ov in overrides:
        if "=" not in ov:
            raise SweepError(f"override {ov!r}: expected key=value (Hydra override syntax)")
        head = _override_key(ov).split(".", 1)[0]
        (stage_ov if head in _STAGE_FIELDS else sweep_ov).append(ov)
    return sweep_ov, stage_ov


def compose_sweep(name: str, overrides: list[str] | None = None) -> SweepConfig:
    """``jobs/conf/sweep/<name>.yaml`` + Hydra overrides -> a checked :class:`SweepConfig`."""
    if not CONFIG_NAME.match(name) or not conf_path("sweep", f"{name}.yaml").is_file():
        raise SweepError(f"sweep definition {name!r}: no file jobs/conf/sweep/{name}.yaml "
                         f"(known: {group_options('sweep')})")
    # The sweep YAMLs start from sweep_schema, so `stages.x.enabled=false` or `report.enabled=false` need
    # no '+' on the command line, and a misspelt key fails while composing.
    sweep_ov, stage_ov = split_cli_overrides(list(overrides or []))
    data = compose_config(f"sweep/{name}", sweep_ov, schema=SweepConfig, error=SweepError,
                          label=f"sweep {name!r}", prefix=f"sweep {name!r}: ")
    data.pop("defaults", None)
    cfg = sweep_from_dict(data)
    cfg.final_overrides = list(cfg.final_overrides) + stage_ov
    return cfg


def _check_overrides(sweep: SweepConfig) -> None:
    """Overrides that no point would honour are refused, naming the override: a per-point field anywhere
    (sweep, stage or block overrides), or a grid axis in ``final_overrides``. Once per sweep, before expansion."""
    for ov in [*sweep.overrides, *sweep.final_overrides]:
        key = _override_key(ov)
        if key in FIXED_FIELDS:
            raise SweepError(f"override {ov!r}: '{key}' is set per point by the sweep; "
                             + ("give seeds in the grid blocks, e.g. 'stages.pretrain.grid=[{seeds:[0,1,2]}]'"
                                if key == "seed" else "it cannot be overridden"))
    for stage, st in sweep.stages.items():
        for b, block in enumerate(st.grid):
            for ov in [*st.overrides, *block.overrides]:
                if _override_key(ov) in FIXED_FIELDS:
                    raise SweepError(f"sweep definition stages.{stage}: override {ov!r} (stage or "
                                     f"stages.{stage}.grid[{b}] overrides) sets '{_override_key(ov)}', which the "
                                     "sweep sets per point (seeds: give them in the grid block)")
    for ov in sweep.final_overrides:
        key = _override_key(ov)
        for stage, st in sweep.stages.items():
            for b, block in enumerate(st.grid):
                if key in block.axes:
                    raise SweepError(
                        f"override {ov!r}: '{key}' is an axis of the sweep (stages.{stage}.grid[{b}].axes: "
                        f"{block.axes[key]}); change the grid instead, e.g. "
                        f"'stages.{stage}.grid=[{{axes:{{{key}:[...]}}}}]', or write a sweep definition")


def sweep_from_dict(data: dict[str, Any]) -> SweepConfig:
    """Merge onto the schema: unknown keys and ill-typed values raise SweepError naming the dotted key."""
    obj = merge_onto(SweepConfig, data, label="sweep definition", error=SweepError)
    if obj.sweep_dir in ("", "???"):
        raise SweepError("sweep definition key 'sweep_dir': is required (the sweep folder)")
    # The profile's own checks (ValueError naming the key); the merge above made it a ClusterProfile already.
    validate_profile(obj.cluster)
    for stage in obj.stages:
        if stage not in STAGES:
            raise SweepError(f"sweep definition key 'stages.{stage}': unknown stage (one of {STAGES})")
    return obj


# ---------------------------------------------------------------------------------------------------
# Hydra override rendering and fast composition
# ---------------------------------------------------------------------------------------------------
def render_value(value: Any) -> str:
    """A Python value in Hydra override syntax (strings quoted unless they are plain identifiers)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{render_value(v)}" for k, v in value.items()) + "}"
    s = str(value)
    if _UNQUOTED.match(s) and s not in ("null", "true", "false", "nan", "inf"):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _is_group(key: str) -> bool:
    """Whether an override key selects a config group (``model=resnet50``) rather than a value."""
    return "." not in key and conf_path(key).is_dir() and key not in ("cluster", "sweep")


# Per-point fields the sweep sets itself (always with the right type): they are applied after validation
# of the rest, so that points differing only in them are type-checked by OmegaConf once.
FIXED_FIELDS = ("seed", "point", "parent", "run_dir")


@functools.lru_cache(maxsize=None)
def _nested_fields(cls: type) -> tuple[tuple[str, type | None], ...]:
    """(field name, dataclass type of the field or None) of a dataclass, resolved once."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name] if dataclasses.is_dataclass(hints[f.name]) else None)
                 for f in dataclasses.fields(cls))


def _dataclass_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Nested dataclass from a (complete, already type-checked) dict: cheap, for ``jobs.config.stage.validate``."""
    kwargs = {name: _dataclass_from_dict(sub, data[name]) if sub is not None else data[name]
              for name, sub in _nested_fields(cls)}
    return cls(**kwargs)


class PointComposer:
    """``jobs.config.stage.compose(stage, overrides)`` for many points, fast.

    Hydra composes once per (stage, config-group choices); each distinct override string is parsed once;
    OmegaConf's structured merge (unknown keys, types) runs once per distinct set of value overrides,
    with :data:`FIXED_FIELDS` set afterwards and every point then checked by ``jobs.config.stage.validate``.
    """

    def __init__(self) -> None:
        self._base: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
        self._parsed: dict[str, tuple[bool, str, Any]] = {}
        self._checked: dict[tuple[Any, ...], str] = {}

    def _base_config(self, stage: str, groups: tuple[str, ...]) -> dict[str, Any]:
        """The stage YAML with these group choices, resolved but not yet validated (a copy)."""
        key = (stage, groups)
        if key not in self._base:
            # The same composition as jobs.config.stage.compose (the stage YAMLs, the groups chosen).
            self._base[key] = compose_config(stage, list(groups), schema=StageConfig, error=SweepError,
                                             label=f"stage config {stage!r}")
        fresh: dict[str, Any] = json.loads(json.dumps(self._base[key]))  # a deep copy the caller may change
        return fresh

    def _parse(self, text: str) -> tuple[bool, str, Any]:
        """(is a group choice, key, value) of one override, parsed once."""
        if text not in self._parsed:
            (ov,) = parse_overrides([text], error=SweepError)
            if ov.kind == "delete" or ov.sweep or ov.package is not None:
                raise SweepError(f"override {text!r}: only key=value overrides are allowed in a sweep")
            self._parsed[text] = (_is_group(ov.key), ov.key, ov.value)
        return self._parsed[text]

    def compose(self, stage: str, overrides: list[str], fixed: dict[str, Any] | None = None) -> dict[str, Any]:
        """The resolved, validated config dict; ValueError naming the override or key when invalid.

        ``fixed``: values of :data:`FIXED_FIELDS` set last (they win over any override of the same key).
        """
        fixed = dict(fixed or {})
        groups: list[str] = []
        values: list[tuple[str, Any]] = []
        for text in overrides:
            is_group, key, value = self._parse(text)
            if is_group:
                groups.append(f"{key}={value}")
            elif key in FIXED_FIELDS and key not in fixed:
                fixed[key] = value
            elif key not in FIXED_FIELDS:
                values.append((key, value))
        sig = (stage, tuple(groups), json.dumps(values, sort_keys=False, default=repr))
        if sig not in self._checked:
            cfg = self._base_config(stage, tuple(groups))
            for key, value in values:
                node: Any = cfg
                parts = key.split(".")
                for part in parts[:-1]:
                    if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
                        raise SweepError(f"unknown config key '{key}' (stage {stage})")
                    node = node[part]
                if parts[-1] not in node:
                    raise SweepError(f"unknown config key '{key}' (stage {stage})")
                node[parts[-1]] = value
            cfg["stage"] = stage
            # Placeholders for the per-point fields: the full OmegaConf check, once per signature.
            cfg.update({"run_dir": "/_", "parent": "/_", "point": "p"})
            self._checked[sig] = json.dumps(to_dict(from_dict(cfg)))
        point: dict[str, Any] = json.loads(self._checked[sig])
        for key in FIXED_FIELDS:
            point[key] = fixed.get(key, StageConfig.__dataclass_fields__[key].default)
        validate(_dataclass_from_dict(StageConfig, point))
        return point


# ---------------------------------------------------------------------------------------------------
# Names and hashes
# ---------------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        s = "true" if value else "false"
    elif isinstance(value, float):
        s = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        s = "+".join(_fmt(v) for v in value)
    elif value is None:
        s = "none"
    else:
        s = str(value)
    return re.sub(r"[^A-Za-z0-9_.+]", "_", s)


def axis_label(key: str, value: Any) -> str:
    """One part of a readable point name: ``lf0.01``, ``w0.5``, ``resnet18_w05`` (group choice)."""
    if "." not in key:
        return _fmt(value) if _is_group(key) else f"{key}{_fmt(value)}"
    return f"{AXIS_ABBREV.get(key, key.rsplit('.', 1)[-1])}{_fmt(value)}"


# The speed and bookkeeping knobs among RESTART_FREE_KEYS (not the paths: another data.root may hold other
# data) count in a point's hash as their defaults: a rerun with more data workers or another log cadence got
# new run folders and trained every finished point again. A config that keeps the defaults hashes as before.
_HASH_AS_DEFAULT = sorted(RESTART_FREE_KEYS - {"run_dir", "parent", "data.root", "sweep", "point"})


@functools.cache
def _knob_defaults() -> dict[str, Any]:
    flat = flatten(to_dict(StageConfig()))
    return {k: flat[k] for k in _HASH_AS_DEFAULT if k in flat}


def config_hash(config: dict[str, Any]) -> str:
    """8 hex digits identifying a config point (seeds share it; the parent counts without its seed; the
    speed and bookkeeping knobs count as their defaults; a key added later counts only where it changes what the
    stage does, jobs.config.stage.ADDED_KEYS)."""
    c = {k: v for k, v in legacy_hidden(config).items() if k not in _HASH_EXCLUDE}
    for key, default in _knob_defaults().items():
        section, name = key.split(".", 1)
        if isinstance(c.get(section), dict) and name in c[section]:
            c[section][name] = default
    if c.get("parent"):
        c["parent"] = point_name(str(c["parent"]))
    return digest(c)


def _matches(a: Any, b: Any) -> bool:
    return bool(a == b) or str(a) == str(b)


def _select(config: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


# ---------------------------------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------------------------------
def enabled_stages(sweep: SweepConfig) -> list[str]:
    return [s for s in STAGE_ORDER if s in sweep.stages and sweep.stages[s].enabled]


def expand(sweep: SweepConfig, composer: PointComposer | None = None) -> list[Task]:
    """Every task of the sweep, parents before children, each with a validated config."""
    _check_overrides(sweep)  # (also for a SweepConfig built without compose_sweep)
    composer = composer or PointComposer()
    sweep_dir = Path(sweep.sweep_dir).expanduser().resolve()
    stages = enabled_stages(sweep)
    if not stages:
        raise SweepError("sweep definition key 'stages': no enabled stage")
    by_stage: dict[str, list[Task]] = {}
    for stage in stages:
        st = sweep.stages[stage]
        parent_stage = PARENT_STAGE.get(stage)
        if parent_stage is not None and parent_stage not in by_stage:
            raise SweepError(
                f"sweep definition key 'stages.{stage}': starts from stage {parent_stage}, "
                f"which is not enabled in this sweep"
            )
        inherit = list(st.inherit) if st.inherit is not None else DEFAULT_INHERIT.get(stage, [])
        tasks: list[Task] = []
        seen: set[str] = set()
        for b, block in enumerate(st.grid):
            where = f"stages.{stage}.grid[{b}]"
            for axis, vals in block.axes.items():
                if not isinstance(vals, list) or not vals:
                    raise SweepError(f"sweep definition key '{where}.axes.{axis}': needs a non-empty list")
            if block.seeds is not None and (not block.seeds or any(s < 0 for s in block.seeds)):
                raise SweepError(f"sweep definition key '{where}.seeds': needs a non-empty list of seeds >= 0")
            combos = [dict(zip(block.axes, c)) for c in itertools.product(*block.axes.values())]
            if parent_stage is None:
                if block.parent:
                    raise SweepError(f"sweep definition key '{where}.parent': stage {stage} has no parent stage")
                for combo in combos:
                    for seed in block.seeds if block.seeds is not None else [0]:
                        t = _make_task(composer, sweep, sweep_dir, stage, where, combo, {}, seed, None, [], block)
                        if t.key not in seen:
                            seen.add(t.key)
                            tasks.append(t)
                continue
            parents = _filter_parents(by_stage[parent_stage], block.parent, f"{where}.parent", parent_stage)
            groups: dict[str, list[Task]] = {}
            for p in parents:
                groups.setdefault(f"{p.point}-{p.hash}", []).append(p)
            for members in groups.values():
                members = sorted(members, key=lambda t: t.seed)
                for combo in combos:
                    seeds = block.seeds if block.seeds is not None else [m.seed for m in members]
                    for seed in seeds:
                        parent = next((m for m in members if m.seed == seed), members[0])
                        t = _make_task(composer, sweep, sweep_dir, stage, where, combo, parent.axes, seed,
                                       parent, inherit, block)
                        if t.key not in seen:
                            seen.add(t.key)
                            tasks.append(t)
        by_stage[stage] = tasks
    return [t for s in stages for t in by_stage[s]]


def _filter_parents(parents: list[Task], sel: dict[str, Any], where: str, parent_stage: str) -> list[Task]:
    out = parents
    for key, want in sel.items():
        kept = []
        for p in out:
            if key in p.axes:
                ok = _matches(p.axes[key], want)
            else:
                found, have = _select(p.config, key)
                if not found:
                    raise SweepError(f"sweep definition key '{where}.{key}': no such axis or config key "
                                     f"in stage {parent_stage}")
                ok = _matches(have, want)
            if ok:
                kept.append(p)
        out = kept
    if not out:
        raise SweepError(f"sweep definition key '{where}': no {parent_stage} point matches {dict(sel)}")
    return out


def _make_task(
    composer: PointComposer,
    sweep: SweepConfig,
    sweep_dir: Path,
    stage: str,
    where: str,
    combo: dict[str, Any],
    parent_axes: dict[str, Any],
    seed: int,
    parent: Task | None,
    inherit: list[str],
    block: Any,
) -> Task:
    def inherited(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in inherit)

    st = sweep.stages[stage]
    own = dict(combo)
    inh_axes = {k: v for k, v in parent_axes.items() if inherited(k) and k not in own}
    axes = {**inh_axes, **own}
    # Inherit from the parent's RESOLVED config (not only its axes): a fine-tune must have exactly its
    # pretrain run's architecture even when that came from a stage override rather than an axis.
    # ... except what this point sets itself: its axes, and its stage's and block's overrides (e.g. pretraining
    # at 20 px and fine-tuning at 28 px on the same data set).
    own_keys = list(own) + [_override_key(o) for o in [*st.overrides, *block.overrides]]
    inh_values: list[str] = []
    if parent is not None:
        flat = flatten(parent.config)
        for key, value in flat.items():
            if inherited(key) and not any(key == k or key.startswith(k + ".") for k in own_keys):
                inh_values.append(f"{key}={render_value(value)}")
    # Readable name: the parent's inherited axes, then the point's own; when the parent differs in more than
    # what is inherited (a distill teacher), the parent's whole name instead: "<own>-from-<teacher>".
    if parent is not None and any(k not in inh_axes for k in parent.axes):
        parts = [axis_label(k, v) for k, v in own.items()] + [f"from-{parent.point}"]
    else:
        parts = [axis_label(k, v) for k, v in axes.items()]
    point = "-".join(parts) if parts else stage
    base_ov = list(sweep.overrides) + list(st.overrides) + list(block.overrides) + inh_values
    axis_ov = [f"{k}={render_value(v)}" for k, v in own.items()] + list(sweep.final_overrides)
    # No `sweep=` override: the key collides with the `sweep/` config group, so Hydra would read it as a
    # group choice; the field is set on the composed config instead.
    fixed = [f"seed={seed}", f"point={render_value(point)}"]
    if parent is not None:
        fixed.append(f"parent={render_value(parent.run_dir)}")
    overrides = base_ov + axis_ov + fixed + ["run_dir=/_"]
    fixed_values = {"seed": seed, "point": point, "parent": parent.run_dir if parent is not None else None,
                    "run_dir": "/_"}
    try:
        config = composer.compose(stage, overrides, fixed_values)
    except ValueError as e:
        raise SweepError(f"sweep {where} point {point!r} (seed {seed}): {e}") from None
    config["sweep"] = sweep.name
    h = config_hash(config)
    run_dir = sweep_dir / "runs" / stage / run_folder_name(point, h, seed)
    config["run_dir"] = str(run_dir)
    overrides[-1] = f"run_dir={render_value(str(run_dir))}"
    return Task(
        key=f"{stage}/{run_dir.name}",
        stage=stage,
        point=point,
        seed=seed,
        hash=h,
        run_dir=str(run_dir),
        parent=parent.key if parent is not None else None,
        axes=axes,
        overrides=overrides,
        config=config,
    )
