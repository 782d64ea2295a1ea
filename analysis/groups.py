"""Runs -> groups over seeds: one row per (stage, model axes, head, fine-tune layer, label fraction).

Which config axes make a group depends on the stage, because an axis that a stage does not use
must not split its seeds (a supervised baseline has no projection head to fine-tune from):

- ``pretrain``: backbone (depth, width, SK, stem) + head (layers, output dim) + memory (SimCLRv2 section 2's
  queue size, ``memory_size``; 0 = none)
- ``finetune``: backbone + head + memory (of the pretraining run) + ``ft_proj_selector`` + ``label_fraction``
- ``linear_eval``: backbone + head + memory + ``ft_proj_selector`` (the head layer the linear classifier
  reads, where the config has one) + ``label_fraction``
- ``supervised``: backbone + ``label_fraction``
- ``distill``: student backbone + head + memory (of the teacher's pretraining) + ``label_fraction`` + the
  teacher's backbone, head and fine-tune layer (SimCLRv2 section 2, "distillation via unlabeled examples")

Only ``usable`` runs (finished, with a config, no duplicates) enter a group. The spread is the
sample standard deviation over seeds (ddof=1), NaN with one seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.labels import fraction_label, ft_label, head_label, is_missing, memory_label, model_label, num_label

__all__ = [
    "BACKBONE",
    "HEAD",
    "MEMORY",
    "TEACHER",
    "STAGE_KEYS",
    "GROUP_KEYS",
    "metric_series",
    "group_runs",
    "group_label",
    "disambiguate",
    "distinct_labels",
    "key_label",
    "check_groups",
    "keys_frame",
]

BACKBONE: tuple[str, ...] = ("depth", "width", "sk_ratio", "cifar_stem")
HEAD: tuple[str, ...] = ("num_proj_layers", "proj_out_dim")
TEACHER: tuple[str, ...] = ("teacher_depth", "teacher_width", "teacher_sk_ratio", "teacher_num_proj_layers",
                            "teacher_ft_proj_selector", "teacher_label_fraction")
MEMORY: tuple[str, ...] = ("memory_size",)
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "pretrain": BACKBONE + HEAD + MEMORY,
    "finetune": BACKBONE + HEAD + MEMORY + ("ft_proj_selector", "label_fraction"),
    "linear_eval": BACKBONE + HEAD + MEMORY + ("ft_proj_selector", "label_fraction"),
    "supervised": BACKBONE + ("label_fraction",),
    "distill": BACKBONE + HEAD + MEMORY + ("label_fraction",) + TEACHER,
}
GROUP_KEYS: tuple[str, ...] = tuple(dict.fromkeys(k for keys in STAGE_KEYS.values() for k in keys))


def metric_series(runs: pd.DataFrame, name: str) -> pd.Series:
    """One number per run for metric ``name``: a column of that name if there is one, else the
    status.json final value (``final:<split>/<name>``, test before val before train), else the last
    logged value (``last:<split>/<name>``, val before train)."""
    if name in runs.columns:
        return pd.to_numeric(runs[name], errors="coerce")
    out = pd.Series(np.nan, index=runs.index, dtype=np.float64)
    for col in (f"final:test/{name}", f"final:val/{name}", f"final:train/{name}",
                f"last:val/{name}", f"last:train/{name}", f"last:test/{name}"):
        if col in runs.columns:
            out = out.fillna(pd.to_numeric(runs[col], errors="coerce"))
    return out


def keys_frame(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Key columns as plain floats (booleans -> 0/1) so NaN groups and sorting behave."""
    out = pd.DataFrame(index=frame.index)
    for k in keys:
        col = frame[k]
        if col.dtype == object or col.dtype == bool:
            col = col.map(lambda v: np.nan if is_missing(v) else float(v))
        out[k] = pd.to_numeric(col, errors="coerce").astype(np.float64)
    return out


def group_runs(runs: pd.DataFrame, values: Sequence[str] = ("top1",)) -> pd.DataFrame:
    """Aggregate the usable runs of every stage over seeds.

    Returns one row per group, columns: ``stage``, every ``GROUP_KEYS`` column (NaN where the stage
    does not use it), for each metric ``v`` in ``values``: ``v_mean``, ``v_std``, ``v_n`` (runs with
    a value); ``n_runs``, ``seeds`` (e.g. "0,1,2"), ``params`` (mean), ``gpu_hours`` and
    ``device_hours`` (sums), ``n_config_ids``, ``paths`` (";"-joined run folders), ``label``; for
    distill also ``teacher_mean``/``teacher_std``/``teacher_n`` over the distinct teacher runs.
    The first metric is also exposed as ``mean``/``std``/``n``.
    """
    columns = ["stage", *GROUP_KEYS]
    empty = pd.DataFrame(columns=columns + [f"{v}_{s}" for v in values for s in ("mean", "std", "n")] + [
        "n_runs", "seeds", "params", "gpu_hours", "device_hours", "n_config_ids", "paths", "teacher_mean",
        "teacher_std", "teacher_n", "mean", "std", "n", "label"])
    if runs.empty or "usable" not in runs:
        return empty
    use = runs[runs["usable"].astype(bool)]
    vals = pd.DataFrame({v: metric_series(use, v) for v in values}, index=use.index)
    parts: list[pd.DataFrame] = []
    for stage, keys in STAGE_KEYS.items():
        mask = (use["stage"] == stage).to_numpy()
        if not mask.any():
            continue
        sub = use[mask]
        frame = keys_frame(sub, keys)
        # One vectorised groupby per stage (a report over thousands of runs calls this several times).
        gid = frame.groupby(list(keys), dropna=False, sort=True).ngroup().to_numpy()
        agg = frame.groupby(gid, sort=True)[list(keys)].first()
        for v in values:
            x = vals.loc[mask, v].groupby(gid)
            agg[f"{v}_mean"], agg[f"{v}_std"], agg[f"{v}_n"] = x.mean(), x.std(ddof=1), x.count()
        agg["n_runs"] = np.bincount(gid)
        agg["seeds"] = sub["seed"].groupby(gid).agg(
            lambda s: ",".join(map(str, sorted({int(v) for v in s if not is_missing(v)}))))
        agg["params"] = pd.to_numeric(sub["params"], errors="coerce").groupby(gid).mean()
        for col in ("gpu_hours", "device_hours"):
            agg[col] = pd.to_numeric(sub[col], errors="coerce").groupby(gid).sum(min_count=1)
        agg["n_config_ids"] = sub["config_id"].groupby(gid).nunique()
        agg["paths"] = sub["path"].astype(str).groupby(gid).agg(";".join)
        if stage == "distill":  # teacher top-1 over the DISTINCT teacher runs of the group
            t = pd.DataFrame({"gid": gid, "path": sub["teacher_path"].to_numpy(),
                              "top1": pd.to_numeric(sub["teacher_top1"], errors="coerce").to_numpy()})
            t = t.dropna().drop_duplicates(["gid", "path"]).groupby("gid")["top1"]
            agg["teacher_mean"], agg["teacher_std"], agg["teacher_n"] = t.mean(), t.std(ddof=1), t.count()
            agg["teacher_n"] = agg["teacher_n"].fillna(0).astype(int)
        agg.insert(0, "stage", stage)
        parts.append(agg.reset_index(drop=True))
    if not parts:
        return empty
    out = pd.concat(parts, ignore_index=True)
    for c in GROUP_KEYS:
        if c not in out:
            out[c] = np.nan
    for c in ("teacher_mean", "teacher_std", "teacher_n"):
        if c not in out:
            out[c] = np.nan
    first = values[0]
    out["mean"], out["std"], out["n"] = out[f"{first}_mean"], out[f"{first}_std"], out[f"{first}_n"]
    out["label"] = distinct_labels(out.to_dict("records"))
    rest = [c for c in out.columns if c not in columns]
    return out[columns + rest]


def group_label(row: dict[str, object] | pd.Series) -> str:
    """``finetune R50 2× SK · head 3, ft 1 · 1%`` (distill: ``... ← teacher R152 3× SK, ft 1``); with SimCLRv2's
    memory in the pretraining: ``finetune R50 1× · head 3, ft 1 · memory 65,536 · 1%``."""
    parts = [str(row["stage"]), model_label(row["depth"], row["width"], row["sk_ratio"])]
    if row["stage"] != "supervised":
        head = head_label(row.get("num_proj_layers"), row.get("ft_proj_selector"))
        if head:
            parts[-1] += f" · {head}"
    memory = row.get("memory_size")
    if row["stage"] != "supervised" and not is_missing(memory) and float(memory) > 0:  # type: ignore[arg-type]
        parts.append(memory_label(memory))
    if not is_missing(row.get("label_fraction")):
        parts.append(fraction_label(row["label_fraction"]))
    label = " · ".join([" ".join(parts[:2]), *parts[2:]])
    if row["stage"] == "distill":
        teacher = model_label(row.get("teacher_depth"), row.get("teacher_width"), row.get("teacher_sk_ratio"))
        t_ft = row.get("teacher_ft_proj_selector")
        label += f" ← teacher {teacher}" + ("" if is_missing(t_ft) else f", ft {ft_label(t_ft)}")
    return label


# How a key that group_label leaves out reads when it is what tells two groups apart.
_KEY_LABELS: dict[str, Callable[[object], str]] = {
    "cifar_stem": lambda v: "CIFAR stem" if v in (True, 1, 1.0) else "ImageNet stem",
    "proj_out_dim": lambda v: f"out dim {num_label(v)}",
    "teacher_num_proj_layers": lambda v: f"teacher head {num_label(v)}",
    "teacher_label_fraction": lambda v: f"teacher at {fraction_label(v)}",
    "memory_size": lambda v: memory_label(v),
}


def key_label(key: str, value: object) -> str:
    """A group key and its value as a label reads them: ``CIFAR stem``, ``out dim 64``, ``width 2``."""
    if is_missing(value):
        return f"{key} —"
    try:
        return _KEY_LABELS[key](value) if key in _KEY_LABELS else f"{key} {num_label(value)}"
    except (TypeError, ValueError):
        return f"{key} {value}"


def _same(a: object, b: object) -> bool:
    return (is_missing(a) and is_missing(b)) or (not is_missing(a) and not is_missing(b) and a == b)


def disambiguate(labels: Sequence[str], rows: Sequence[dict[str, object]], keys: Sequence[str]) -> list[str]:
    """``labels`` (one per row), each that reads like another's extended with those of ``keys`` whose values
    tell the rows apart (``... · CIFAR stem, out dim 64``); a label that is unique stays as it is."""
    out = list(labels)
    alike: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        alike.setdefault(lab, []).append(i)
    for idx in alike.values():
        if len(idx) < 2:
            continue
        differ = [k for k in keys if any(not _same(rows[i].get(k), rows[idx[0]].get(k)) for i in idx[1:])]
        if differ:
            for i in idx:
                out[i] += " · " + ", ".join(key_label(k, rows[i].get(k)) for k in differ)
    return out


def distinct_labels(rows: Sequence[dict[str, object]]) -> list[str]:
    """:func:`group_label` of each group row, plus the keys that tell apart groups whose labels would read
    the same (the stem, the projection's output size, the teacher's head or label fraction): two such
    groups were separate rows of a table under one name. (A label starts with its stage, so groups alike
    are of one stage and differ in its keys.)"""
    labels = [group_label(r) for r in rows]
    out = list(labels)
    for stage in dict.fromkeys(str(r["stage"]) for r in rows):
        idx = [i for i, r in enumerate(rows) if str(r["stage"]) == stage]
        for i, lab in zip(idx, disambiguate([labels[i] for i in idx], [rows[i] for i in idx],
                                            STAGE_KEYS.get(stage, GROUP_KEYS))):
            out[i] = lab
    return out


def check_groups(runs: pd.DataFrame) -> list[str]:
    """Warnings for groups that pool different config points (e.g. the same axes in two sweeps with
    different epochs or learning rates): the mean over such a group mixes experiments. Flagged when
    the points come from different sweeps or two of them share a seed. Each warning names one config
    file per config point."""
    warnings: list[str] = []
    if runs.empty or "usable" not in runs:
        return warnings
    use = runs[runs["usable"].astype(bool)]
    for stage, keys in STAGE_KEYS.items():
        sub = use[use["stage"] == stage]
        if sub.empty:
            continue
        frame = keys_frame(sub, keys)
        frame["config_id"] = sub["config_id"]
        frame["path"] = sub["path"]
        frame["sweep"] = sub["sweep"]
        for key, g in frame.groupby(list(keys), dropna=False, sort=True):
            # Several config points in one group are expected when a per-seed setting (e.g. the teacher
            # run of a distill point) is part of the hash; they are a problem when two of them share a
            # seed (two experiments) or come from different sweeps (settings may differ).
            if g["config_id"].nunique(dropna=True) <= 1:
                continue
            per_seed = sub.loc[g.index].groupby("seed")["config_id"].nunique()
            if not ((per_seed > 1).any() or g["sweep"].nunique(dropna=False) > 1):
                continue
            examples = g.drop_duplicates("config_id")
            where = ", ".join(f"{Path(p) / 'config.json'} (sweep {s!r})"
                              for p, s in zip(examples["path"], examples["sweep"]))
            label = group_label({"stage": stage, **dict(zip(keys, key if isinstance(key, tuple) else (key,)))})
            warnings.append(f"group '{label}' pools {g['config_id'].nunique()} different config points "
                            f"(other settings differ): {where}")
    return warnings
