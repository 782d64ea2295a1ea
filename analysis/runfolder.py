"""One run folder -> one flat record (a row of the runs table) plus its training curves.

The folder layout is docs/CONTRACTS.md "Run folder": ``config.json`` / ``config.yaml`` (resolved
config), ``metrics.jsonl``, ``progress.json``, ``checkpoints/ckpt-<step:08d>.pt`` and ``status.json``
(written LAST: without it the run has not finished). Nothing here imports the training code; a
checkpoint is never opened, only counted by its file name.

Every damaged or missing piece becomes a warning string naming the file, never an exception: one
bad run must not stop the report over a thousand good ones.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.convergence import assess, cut_by_max_steps, train_config
from simclr.runfolder.layout import (
    CHECKPOINTS,
    CONFIG_JSON,
    CONFIG_YAML,
    METRICS,
    PROGRESS,
    STAGES,
    STATUS,
    RunState,
    checkpoint_step,
    parse_run_name,
)
from simclr.runfolder.metrics import MetricsRead, downsample, read_metrics
from simclr.runfolder.read import read_config, read_json_object

__all__ = ["CLASSIFIER_STAGES", "MODEL_AXES", "RunRead", "read_run"]

# Stages whose result is a classifier with a test top-1 in status.json's final["test/top1"].
CLASSIFIER_STAGES: tuple[str, ...] = ("finetune", "distill", "supervised", "linear_eval")
# config["model"] keys copied as columns, with the type each is coerced to.
MODEL_AXES: dict[str, type] = {
    "depth": int,
    "width": float,
    "sk_ratio": float,
    "cifar_stem": bool,
    "num_proj_layers": int,
    "proj_out_dim": int,
}
@dataclass
class RunRead:
    """A run folder, read: ``row`` (flat, JSON-able values), curves by (split, name), warnings."""

    row: dict[str, Any]
    curves: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _coerce(value: Any, kind: type, where: str, warnings: list[str]) -> Any:
    """A config value as ``kind`` (NaN / None when absent or wrong, with a warning when wrong)."""
    missing: Any = None if kind is bool else math.nan
    if value is None:
        return missing
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return kind(value) if kind is float or float(value).is_integer() else float(value)
    warnings.append(f"{where}: expected {kind.__name__}, got {value!r}; treated as missing")
    return missing


def _finetune_value(cfg: dict[str, Any], key: str) -> Any:
    """``cfg["finetune"][key]`` (jobs.config.stage.FinetuneConfig); None when it is not there."""
    section = cfg.get("finetune")
    return section.get(key) if isinstance(section, dict) else None


def _pretrain_value(cfg: dict[str, Any], key: str, missing: Any) -> Any:
    """``cfg["pretrain"][key]`` (jobs.config.stage.PretrainConfig); ``missing`` when the config predates it."""
    section = cfg.get("pretrain")
    return section.get(key, missing) if isinstance(section, dict) else missing


def _model_axes(model: Any, prefix: str, where: str, warnings: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    if not isinstance(model, dict):
        if model is not None:
            warnings.append(f"{where}: 'model' is not a mapping; model axes missing")
        model = {}
    for key, kind in MODEL_AXES.items():
        row[prefix + key] = _coerce(model.get(key), kind, f"{where}: model.{key}", warnings)
    return row


def _checkpoints(folder: Path) -> tuple[int, float]:
    """(number of checkpoints, step of the newest) from file names only; (0, NaN) if none."""
    try:
        steps = [step for n in os.listdir(folder / CHECKPOINTS) if (step := checkpoint_step(n)) is not None]
    except OSError:
        return 0, math.nan
    return len(steps), (float(max(steps)) if steps else math.nan)


def read_run(folder: str | Path, *, max_curve_points: int = 200, names: set[str] | None = None) -> RunRead:
    """Read one run folder into a flat row (see the column list in ``analysis/collect.py``).

    ``names``: the folder's file names if the caller already listed it (saves a ``listdir``).
    ``max_curve_points``: at most this many points kept per training curve (for plots).
    """
    folder = Path(folder)
    if names is None:
        names = set(os.listdir(folder))
    warnings: list[str] = []
    point, hash8, name_seed = parse_run_name(folder.name)
    row: dict[str, Any] = {"run": folder.name, "path": str(folder), "config_id": hash8}

    # --- config: the axes --------------------------------------------------------------------
    cfg = read_config(folder, warnings, names)
    row["has_config"] = cfg is not None
    cfg_where = str(folder / (CONFIG_JSON if CONFIG_JSON in names else CONFIG_YAML))
    if cfg is None:
        warnings.append(f"{folder}: no usable config.json/config.yaml; run listed, left out of the numbers")
        cfg = {}
        # The sweep layout runs/<stage>/<run-folder> still tells the stage.
        stage = folder.parent.name if folder.parent.name in STAGES else None
    else:
        stage = cfg.get("stage")
        if stage not in STAGES:
            warnings.append(f"{cfg_where}: unknown stage {stage!r}; run left out of the numbers")
            stage = None
    row["stage"] = stage
    row["sweep"] = cfg.get("sweep") if isinstance(cfg.get("sweep"), str) else None
    row["point"] = cfg.get("point") if isinstance(cfg.get("point"), str) else point
    seed = cfg.get("seed", name_seed)
    row["seed"] = seed if isinstance(seed, int) and not isinstance(seed, bool) else name_seed
    if row["config_id"] is None:  # folder not named per contract: fall back to the point name
        row["config_id"] = row["point"]
    row.update(_model_axes(cfg.get("model"), "", cfg_where, warnings) if cfg else _model_axes({}, "", "", []))
    # Stage axes, only where the stage uses them (every config carries the finetune section's defaults).
    ft_sel = _finetune_value(cfg, "ft_proj_selector") if stage in ("finetune", "linear_eval") else None
    fraction = _finetune_value(cfg, "label_fraction") if stage in CLASSIFIER_STAGES else None
    # SimCLRv2's memory is a pretraining axis: its own for a pretraining run (a config written before the memory
    # existed had none: 0); the other stages get their pretraining run's in analysis.collect.
    memory = _pretrain_value(cfg, "memory_size", 0) if stage == "pretrain" else None
    row["memory_size"] = _coerce(memory, int, f"{cfg_where}: pretrain.memory_size", warnings)
    row["ft_proj_selector"] = _coerce(ft_sel, int, f"{cfg_where}: ft_proj_selector", warnings)
    row["label_fraction"] = _coerce(fraction, float, f"{cfg_where}: label_fraction", warnings)
    # A distillation's teacher is its parent (a fine-tuned run); collect fills its model from that run's row.
    parent = cfg.get("parent")
    t_ref = parent if stage == "distill" and isinstance(parent, str) and parent else None
    if stage == "distill" and t_ref is None:
        warnings.append(f"{cfg_where}: distill run without a 'parent' (its teacher); teacher unknown")
    row["teacher_ref"] = t_ref
    row["teacher_run"] = Path(t_ref).name if t_ref else None
    row.update(_model_axes({}, "teacher_", "", []))
    parent = cfg.get("parent")
    row["parent"] = Path(parent).name if isinstance(parent, str) and parent else None

    # --- progress / status: how far, and did it finish --------------------------------------
    progress = read_json_object(folder / PROGRESS, warnings) if PROGRESS in names else None
    status = read_json_object(folder / STATUS, warnings) if STATUS in names else None
    prog = progress or {}
    row["restarts"] = (status or {}).get("restarts", prog.get("restarts", math.nan))
    row["epoch"] = prog.get("epoch", math.nan)
    if status is not None and status.get("state") in (RunState.DONE.value, RunState.FAILED.value):
        row["state"] = status["state"]
        reason = status.get("reason")
        row["reason"] = str(reason) if reason is not None else None
        for key in ("step", "total_steps", "wall_time_s", "params", "world_size"):
            val = status.get(key)
            row[key] = val if isinstance(val, (int, float)) and not isinstance(val, bool) else math.nan
        row["device"] = status.get("device") if isinstance(status.get("device"), str) else None
        final = status.get("final")
        if not isinstance(final, dict):
            if row["state"] == "done":
                warnings.append(f"{folder / 'status.json'}: no 'final' metrics mapping")
            final = {}
    else:
        if status is not None:
            warnings.append(f"{folder / 'status.json'}: state {status.get('state')!r} is not done/failed; "
                            "run treated as unfinished")
        row["state"] = "running"
        row["step"] = prog.get("step", math.nan)
        row["total_steps"] = prog.get("total_steps", math.nan)
        if progress is None:
            row["reason"] = "no status.json and no progress.json (queued, starting, or killed early)"
        else:
            row["reason"] = (f"no status.json (running, queued or killed); "
                             f"at step {row['step']} of {row['total_steps']}")
        row.update(wall_time_s=math.nan, params=math.nan, world_size=math.nan, device=None)
        final = {}
    total = row["total_steps"]
    row["progress"] = (row["step"] / total if isinstance(total, (int, float)) and total and
                       isinstance(row["step"], (int, float)) else math.nan)
    wall, ws, device = row["wall_time_s"], row["world_size"], row["device"]
    ws_n = ws if isinstance(ws, (int, float)) and ws == ws else 1
    row["device_hours"] = wall * ws_n / 3600.0 if wall == wall else math.nan
    if device is None or row["device_hours"] != row["device_hours"]:
        row["gpu_hours"] = math.nan
    else:
        row["gpu_hours"] = row["device_hours"] if ("cuda" in device or "gpu" in device) else 0.0
    row["n_ckpts"], row["last_ckpt_step"] = _checkpoints(folder) if CHECKPOINTS in names else (0, math.nan)

    # --- metrics: best/last per series and the curves ----------------------------------------
    metrics = MetricsRead()
    if METRICS in names:
        try:
            metrics = read_metrics(folder / METRICS)
        except OSError as err:
            warnings.append(f"{folder / 'metrics.jsonl'}: unreadable ({err})")
        for problem in metrics.problems:
            warnings.append(f"{folder / 'metrics.jsonl'}: {problem}")
    row["n_metric_lines"] = metrics.n_lines
    curves: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for (split, name), series in metrics.series.items():
        row[f"last:{split}/{name}"] = series.last
        best = series.best(name)
        if best == best:
            row[f"best:{split}/{name}"] = best
        curves[(split, name)] = downsample(series, max_curve_points)
    for key, val in final.items():
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            row[f"final:{key}"] = float(val)

    # --- budget and convergence (docs/CONTRACTS.md "Convergence") -----------------------------
    train_cfg = train_config(cfg)
    batch, epochs = train_cfg.get("batch_size"), train_cfg.get("epochs")
    row["batch_size"] = batch if isinstance(batch, int) and not isinstance(batch, bool) else math.nan
    step, total = row["step"], row["total_steps"]
    seen = step * row["batch_size"] if isinstance(step, (int, float)) else math.nan
    row["images_seen"] = seen
    # Epochs run: the configured epochs scaled by the steps done; unknown when train.max_steps cut the run.
    row["cut_by_max_steps"] = cut_by_max_steps(cfg, total)
    row["epochs_done"] = math.nan
    if isinstance(epochs, (int, float)) and isinstance(total, (int, float)) and total > 0 and not row["cut_by_max_steps"]:
        row["epochs_done"] = float(epochs) * step / total
    # Images with labels that the optimiser saw (distillation learns from the teacher, pretraining from none).
    row["labelled_images_seen"] = seen if stage in ("finetune", "supervised", "linear_eval") else (
        0.0 if stage in ("pretrain", "distill") else math.nan)
    conv = assess(stage, row["state"], metrics.series, cfg, row["total_steps"])
    row["converged"], row["convergence_note"] = conv.label, conv.note

    # --- the headline numbers: test top-1/top-5 (percent) ------------------------------------
    for metric in ("top1", "top5"):
        val = row.get(f"final:test/{metric}", math.nan)
        source = "final" if val == val else None
        if stage in CLASSIFIER_STAGES and row["state"] == "done" and source is None:
            fallback = row.get(f"last:test/{metric}", math.nan)
            if fallback == fallback:
                val, source = fallback, "metrics"
                if metric == "top1":
                    warnings.append(f"{folder / 'status.json'}: final lacks test/top1; "
                                    f"last test/top1 from metrics.jsonl used")
            elif metric == "top1":  # top-5 is optional for the report: no warning for it
                warnings.append(f"{folder / 'status.json'}: final lacks test/top1 and metrics.jsonl "
                                f"has none; left empty")
        row[metric] = val
        row[f"{metric}_source"] = source
    return RunRead(row=row, curves=curves, warnings=warnings)
