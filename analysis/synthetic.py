"""Synthetic run folders in exactly the format the training loop writes, with numbers the caller chooses.

Used by the tests (known numbers in, exact table values out), by ``benchmarks/report.py`` (a thousand folders
of a thousand metric lines) and handy for trying the report without a cluster. The config is the stage
schema's own resolved config (``jobs.config.stage``, every key the loop saves) with the caller's values; the
folder is named by :mod:`simclr.runfolder.layout`. ``tests/jobs/stages/test_stages.py`` checks that a
synthetic folder has the files, keys and value types of a real one. The damage that real sweeps leave behind
(no config, a truncated last metrics line, a missing final metric, an unfinished or failed run) is one
keyword away.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from simclr.runfolder.layout import (
    CHECKPOINTS,
    CONFIG_JSON,
    CONFIG_YAML,
    METRICS,
    PROGRESS,
    STATUS,
    checkpoint_name,
    digest,
    run_folder_name,
)

__all__ = ["model_config", "stage_config", "write_run"]

# The series each stage logs as it trains (simclr.train.loop: "train" every log_every steps, "val" from the
# epoch-end evaluators); a finished run's final evaluation adds one "test" line per entry of its final record.
_STAGE_SERIES: dict[str, tuple[tuple[str, str], ...]] = {
    "pretrain": (("train", "loss"), ("train", "lr"), ("train", "contrastive_acc"),
                 ("train", "probe_top1"), ("val", "knn_top1")),
    "finetune": (("train", "loss"), ("train", "lr"), ("train", "top1")),
    "supervised": (("train", "loss"), ("train", "lr"), ("train", "top1")),
    "linear_eval": (("train", "loss"), ("train", "lr"), ("train", "top1")),
    "distill": (("train", "distill_loss"), ("train", "lr"), ("train", "agreement")),
}


def model_config(depth: int = 18, width: float = 1.0, sk_ratio: float = 0.0, cifar_stem: bool = True,
                 num_proj_layers: int = 3, proj_out_dim: int = 128) -> dict[str, Any]:
    """The ``model`` part of a resolved config."""
    return {"depth": depth, "width": width, "sk_ratio": sk_ratio, "cifar_stem": cifar_stem,
            "num_proj_layers": num_proj_layers, "proj_out_dim": proj_out_dim}


@functools.cache
def _schema_config() -> dict[str, Any]:
    from jobs.config.stage import StageConfig, to_dict  # the schema only: torch-free

    return to_dict(StageConfig())


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """``extra`` into ``base`` in place, section by section (``{"train": {"epochs": 5}}`` keeps the rest)."""
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def stage_config(stage: str, **values: Any) -> dict[str, Any]:
    """The resolved config the loop saves for a ``stage`` run: the schema's defaults, then ``values`` merged in
    section by section."""
    config = copy.deepcopy(_schema_config())
    config["stage"] = stage
    _merge(config, values)
    return config


def _metric_value(name: str, step: int, total: int, seed: int, final: float) -> float:
    """A smooth, deterministic curve per metric, ending near ``final`` for accuracies."""
    t = (step + 1) / max(total, 1)
    if name.endswith("loss"):
        return 4.0 * math.exp(-3.0 * t) + 0.1 + 0.01 * seed
    if name == "lr":
        return 0.3 * (1.0 - t)
    return final * (1.0 - math.exp(-4.0 * t)) / (1.0 - math.exp(-4.0))


def write_run(
    root: str | Path,
    *,
    stage: str,
    seed: int = 0,
    model: dict[str, Any] | None = None,
    ft_proj_selector: int | None = None,
    label_fraction: float | None = None,
    teacher: str | None = None,
    sweep: str | None = "synthetic",
    point: str | None = None,
    state: str = "done",
    reason: str | None = None,
    top1: float | None = None,
    top5: float | None = None,
    final: dict[str, float] | None = None,
    params: int = 1_000_000,
    total_steps: int = 100,
    metric_lines: int = 30,
    wall_time_s: float = 3600.0,
    world_size: int = 1,
    device: str = "cuda",
    write_config: bool = True,
    config_format: str = "both",
    truncate_last_line: bool = False,
    extra_config: dict[str, Any] | None = None,
    curves: Mapping[str, Callable[[float], float]] | None = None,
    parent: str | None = None,
) -> Path:
    """Write one run folder under ``root/runs/<stage>/`` and return its path.

    ``state``: ``done`` / ``failed`` (status.json written), ``running`` (progress.json only, at half
    the steps) or ``queued`` (config only). ``top1``/``top5``: the test accuracy put in
    ``final["test/top1"]``/``["test/top5"]`` (omit to leave it out: the "missing metric" case);
    ``final`` adds more entries. ``metric_lines``: how many metrics.jsonl lines (spread round-robin
    over the stage's series, see ``_STAGE_SERIES``). ``teacher``: the teacher's run folder (path or
    name) for distill runs. ``config_format``: ``json``, ``yaml`` or ``both``. ``curves``: series chosen by
    the caller, ``{"train/loss": f, ...}`` with ``f`` of the run's progress ``t`` in [0, 1]; each replaces the
    stage's default curve of that name (or is added) and takes the same share of the ``metric_lines``.
    ``parent``: the run folder it started from (config ``parent``: a fine-tune's pretraining run).
    """
    if stage not in _STAGE_SERIES:
        raise ValueError(f"stage {stage!r} is not one of {sorted(_STAGE_SERIES)}")
    if state not in ("done", "failed", "running", "queued"):
        raise ValueError(f"state {state!r} is not done/failed/running/queued")
    model = model if model is not None else model_config()
    if point is None:
        point = (f"{stage}-r{model['depth']}w{model['width']:g}sk{model['sk_ratio']:g}"
                 f"-h{model['num_proj_layers']}")
        if ft_proj_selector is not None:
            point += f"-ft{ft_proj_selector}"
        if label_fraction is not None:
            point += f"-lf{label_fraction:g}"
    finetune: dict[str, Any] = {}
    if ft_proj_selector is not None:
        finetune["ft_proj_selector"] = ft_proj_selector
    if label_fraction is not None:
        finetune["label_fraction"] = label_fraction
    # A distillation's parent is its teacher (a fine-tuned run); the others' is the run they start from.
    config = stage_config(stage, seed=seed, sweep=sweep, point=point, model=model, finetune=finetune,
                          parent=teacher if stage == "distill" and teacher is not None else parent)
    _merge(config, extra_config or {})
    point_cfg = {k: v for k, v in config.items() if k not in ("seed", "run_dir")}
    folder = Path(root) / "runs" / stage / run_folder_name(point, digest(point_cfg), seed)
    config["run_dir"] = str(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if write_config:
        if config_format in ("json", "both"):
            (folder / CONFIG_JSON).write_text(json.dumps(config, indent=1))
        if config_format in ("yaml", "both"):
            import yaml

            (folder / CONFIG_YAML).write_text(yaml.safe_dump(config, sort_keys=True))
    if state == "queued":
        return folder

    finished = state in ("done", "failed")
    last_step = total_steps if state == "done" else total_steps // 2
    chosen = dict(curves or {})
    added = [(n.split("/", 1)[0], n.split("/", 1)[1]) for n in chosen]
    series = _STAGE_SERIES[stage] + tuple(x for x in added if x not in _STAGE_SERIES[stage])
    acc_final = top1 if top1 is not None else 50.0
    lines: list[str] = []
    t0 = 1.7e9
    k = len(series)
    n_steps = max(1, metric_lines // k)
    for i in range(metric_lines):
        split, name = series[i % k]
        step = (i // k) * last_step // n_steps
        f = chosen.get(f"{split}/{name}")
        value = f(step / max(total_steps, 1)) if f is not None else _metric_value(name, step, total_steps, seed,
                                                                                  acc_final)
        lines.append(f'{{"step": {step}, "epoch": {step * 10 // max(total_steps, 1)}, "stage": "{stage}", '
                     f'"split": "{split}", "name": "{name}", "value": {float(value)!r}, "time": {t0 + i}}}\n')
    fin: dict[str, float] = {}
    if finished:
        if top1 is not None:
            fin["test/top1"] = top1
        if top5 is not None:
            fin["test/top5"] = top5
        fin.update(final or {})
        for i, (key, val) in enumerate(fin.items()):
            split, name = key.split("/", 1) if "/" in key else ("test", key)
            lines.append(f'{{"step": {last_step}, "epoch": {last_step * 10 // max(total_steps, 1)}, "stage": '
                         f'"{stage}", "split": "{split}", "name": "{name}", "value": {float(val)!r}, '
                         f'"time": {t0 + metric_lines + i}}}\n')
    text = "".join(lines)
    if truncate_last_line:
        text += '{"step": 99, "epoch": 9, "stage": "' + stage + '", "split": "tr'
    (folder / METRICS).write_text(text)
    (folder / PROGRESS).write_text(json.dumps(
        {"step": last_step, "total_steps": total_steps, "epoch": last_step * 10 // max(total_steps, 1),
         "restarts": 0, "time": t0 + metric_lines}))
    ckpt = folder / CHECKPOINTS
    ckpt.mkdir(exist_ok=True)
    (ckpt / checkpoint_name(last_step)).write_bytes(b"")
    if finished:
        (folder / STATUS).write_text(json.dumps({
            "state": state, "reason": reason if state == "failed" else None, "step": last_step,
            "total_steps": total_steps, "wall_time_s": wall_time_s, "params": params,
            "world_size": world_size, "device": device, "final": fin, "restarts": 0,
            "time": t0 + metric_lines + 1}))
    return folder
