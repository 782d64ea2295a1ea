"""The pixel baseline of the kNN monitor: weighted kNN on raw pixels, with the monitor's memory bank and test set.

A pretraining run's ``knn_top1`` (``jobs/stages/pretrain.py``) means little alone: features that score below plain
pixels have learnt nothing a kNN can use. This computes, once per data content and monitor setting (cached as
JSON), the same kNN with ``x.flatten(1)`` as the encoder: the eval-mode ShardLoader of ``data.train_split``
(world size 1, batch 512, epoch 0, the run's seed) gives the bank, its first ``pretrain.knn_train_samples``
labelled samples (0 = all); the whole eval-mode loader of ``data.eval_split`` is the test set; features are
L2-normalised by :func:`simclr.train.evaluate.embed` and scored by :func:`~simclr.train.evaluate.knn_top1`
(``k = pretrain.knn_k``, its default temperature). The training code is imported lazily (this module stays
torch-free at import) and only for this: the numbers must come from the very functions the monitor uses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["METHOD_VERSION", "PixelKnn", "default_cache_dir", "pixel_knn_for_config", "pixel_knn_for_runs",
           "pixel_knn_of_pretraining"]

METHOD_VERSION = "pixel-knn-1"  # bump when the computation changes: old cache files are then not found
_MAX_BANK_BYTES = 8 << 30  # a float32 bank [N, C*H*W] larger than this is refused (ImageNet at 224, all samples)


@dataclass(frozen=True)
class PixelKnn:
    """The pixel-kNN top-1 of one data root and monitor setting."""

    top1: float | None  # percent, None when it could not be computed
    why_missing: str | None  # e.g. "data root /x not found (a copied sweep folder?)"
    data_root: str
    image_size: int
    bank: int  # samples in the memory bank actually used
    test: int  # test samples
    k: int
    cached: bool  # read from the cache file


def default_cache_dir() -> Path:
    """``$SIMCLR_CACHE_DIR`` if set, else ``~/.cache/simclr-suite/baselines``."""
    env = os.environ.get("SIMCLR_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "simclr-suite" / "baselines"


def _settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config values the monitor's loaders and kNN use (KeyError naming a missing one)."""
    d, m, p = cfg["data"], cfg["model"], cfg["pretrain"]
    return {"root": str(d["root"]), "train_split": str(d["train_split"]), "eval_split": str(d["eval_split"]),
            "image_size": int(d["image_size"]), "in_channels": int(m["in_channels"]), "seed": int(cfg["seed"]),
            "knn_train_samples": int(p["knn_train_samples"]), "knn_k": int(p["knn_k"]),
            # eval mode ignores the augmentation knobs, but they are passed as builders.loader passes them
            "loader": {"strength": d.get("strength", 0.5), "blur": d.get("blur"),
                       "min_area": d.get("min_crop_area", 0.08), "bad_sample_budget": d.get("bad_sample_budget", 0),
                       "batched_augment": d.get("batched_augment", False)}}


def _compute(s: dict[str, Any]) -> tuple[float, int, int]:
    """``(top1 %, bank size, test size)``: the monitor's ``final_eval`` with ``x.flatten(1)`` as encoder.

    Bank features ``[N, C*H*W]`` are held whole; test batches ``[<=512, C*H*W]`` are scored one at a time
    (``knn_top1`` per batch, counts summed: the same number as over the whole test set, in bounded memory)."""
    import torch

    from simclr.data.loading.loader import ShardLoader
    from simclr.train.evaluate import EvalBatches, embed, knn_top1

    def make(split: str) -> ShardLoader:
        return ShardLoader(s["root"], split, batch_size=512, mode="eval", rank=0, world_size=1, num_workers=0,
                           seed=s["seed"], size=s["image_size"], out_channels=s["in_channels"], **s["loader"])

    train, test = make(s["train_split"]), make(s["eval_split"])
    if s["eval_split"] != s["train_split"] and test.class_names != train.class_names:
        raise ValueError(f"split {s['eval_split']!r} has the classes {test.class_names}, "
                         f"split {s['train_split']!r} {train.class_names}")
    limit = s["knn_train_samples"]
    dim = s["in_channels"] * s["image_size"] ** 2
    if 4 * dim * (min(limit, train.num_samples) if limit else train.num_samples) > _MAX_BANK_BYTES:
        raise MemoryError(f"a pixel memory bank of {limit or train.num_samples} x {dim} floats exceeds "
                          f"{_MAX_BANK_BYTES >> 30} GiB (set pretrain.knn_train_samples lower)")
    cpu = torch.device("cpu")

    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)  # [B, C, H, W] -> [B, C*H*W]

    tx, ty = embed(flat, EvalBatches(train, max_samples=limit)(), cpu, channels_last=False, limit=limit)
    correct = total = 0
    for batch in EvalBatches(test, cache_bytes=0)():
        vx, vy = embed(flat, iter([batch]), cpu, channels_last=False)
        n = int(vx.shape[0])
        correct += round(knn_top1(tx, ty, vx, vy, k=s["knn_k"]) * n / 100.0)  # exact: n <= 512
        total += n
    return 100.0 * correct / max(1, total), int(tx.shape[0]), total


def _key(s: dict[str, Any], manifests: list[Path]) -> str:
    """sha256 over the split manifests' sha256 (they hold every shard's sha256) and the monitor settings."""
    parts = [hashlib.sha256(p.read_bytes()).hexdigest() for p in manifests]
    parts += [s[n] for n in ("train_split", "eval_split", "image_size", "in_channels", "knn_train_samples",
                             "knn_k", "seed")] + [METHOD_VERSION]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _read_cache(path: Path) -> dict[str, Any] | None:
    """A complete cache record, or None (absent, unparsable or incomplete files are recomputed)."""
    try:
        rec = json.loads(path.read_text())
        ok = isinstance(rec, dict) and all(isinstance(rec.get(n), t) for n, t in
                                           (("top1", float), ("bank", int), ("test", int)))
        return rec if ok else None
    except (OSError, ValueError):
        return None


def _resolve(cfg: dict[str, Any], cache_dir: Path | None) -> tuple[PixelKnn | None, dict[str, Any], Path | None]:
    """The settings, and either an early answer (missing data, cache hit) or the cache file to fill."""
    s = _settings(cfg)
    root = Path(s["root"])
    early = {"data_root": s["root"], "image_size": s["image_size"], "k": s["knn_k"], "cached": False}
    if not root.is_dir():
        return PixelKnn(None, f"data root {root} not found (a copied sweep folder?)", bank=0, test=0, **early), s, None
    manifests = [root / split / "manifest.json" for split in dict.fromkeys((s["train_split"], s["eval_split"]))]
    for m in manifests:
        if not m.is_file():
            return PixelKnn(None, f"data root {root} has no {m.relative_to(root)}", bank=0, test=0, **early), s, None
    path = (cache_dir or default_cache_dir()) / f"pixel-knn-{_key(s, manifests)}.json"
    rec = _read_cache(path)
    if rec is None:
        return None, s, path
    early["cached"] = True
    return PixelKnn(rec["top1"], None, bank=rec["bank"], test=rec["test"], **early), s, path


def pixel_knn_for_config(cfg: dict[str, Any], *, cache_dir: Path | None = None) -> PixelKnn:
    """The pixel-kNN baseline of a resolved pretrain config (``config.json``'s dict); never raises.

    Read from ``cache_dir`` (default :func:`default_cache_dir`) when computed before, else computed on the CPU
    and cached (atomically; nothing is written into the data root). A missing data root or manifest, a config
    without a needed key, or any failure while computing gives ``top1=None`` with ``why_missing`` saying why."""
    return _for_config(cfg, cache_dir, {})


def _for_config(cfg: dict[str, Any], cache_dir: Path | None, memo: dict[Path, PixelKnn]) -> PixelKnn:
    """:func:`pixel_knn_for_config`, with the results of this process by cache file (``memo``, filled here)."""
    try:
        early, s, path = _resolve(cfg, cache_dir)
    except (KeyError, TypeError, ValueError, OSError) as e:
        raw = cfg.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        size = data.get("image_size")
        return PixelKnn(None, f"config or data unusable for the pixel kNN: {type(e).__name__}: {e}",
                        str(data.get("root")), size if isinstance(size, int) else 0, 0, 0, 0, False)
    if early is not None:
        return early
    assert path is not None
    base = PixelKnn(None, None, s["root"], s["image_size"], 0, 0, s["knn_k"], False)
    if path in memo:  # computed by this process already (its cache file may not have been writable)
        return dataclasses.replace(memo[path], data_root=s["root"])
    try:
        top1, bank, test = _compute(s)
    except Exception as e:  # the report must not die for one data root: say why, in place of the number
        res = dataclasses.replace(base, why_missing=f"pixel kNN failed: {type(e).__name__}: {e}")
    else:
        res = dataclasses.replace(base, top1=top1, bank=bank, test=test)
        try:
            from simclr.atomic import atomic_write_json

            atomic_write_json(path, {"top1": top1, "bank": bank, "test": test, "method": METHOD_VERSION,
                                     "settings": {n: v for n, v in s.items() if n not in ("root", "loader")},
                                     "computed_from": s["root"]})
        except OSError:
            pass  # a read-only cache only costs a recomputation in a later process
    memo[path] = res
    return res


def pixel_knn_for_runs(run_paths: Iterable[str | Path], *, cache_dir: Path | None = None) -> dict[str, PixelKnn]:
    """For every PRETRAIN run folder among run_paths (read its config.json; others skipped), the pixel-kNN
    baseline of its data root and monitor settings, computed once per distinct cache key. Keyed by str(path)."""
    from simclr.runfolder.read import read_config  # here: importing this module loads nothing of simclr

    out: dict[str, PixelKnn] = {}
    memo: dict[Path, PixelKnn] = {}
    for run in run_paths:
        folder = Path(run)
        cfg = read_config(folder)
        if cfg is None or cfg.get("stage") != "pretrain":
            continue
        out[str(run)] = _for_config(cfg, cache_dir, memo)
    return out


def pixel_knn_of_pretraining(runs: pd.DataFrame, *, cache_dir: Path | None = None) -> dict[str, PixelKnn]:
    """:func:`pixel_knn_for_runs` of the usable pretraining runs of a runs table (``analysis.collect``)."""
    if runs.empty:
        return {}
    pre = runs[runs["usable"].astype(bool) & (runs["stage"] == "pretrain")]
    return pixel_knn_for_runs(pre["path"], cache_dir=cache_dir) if not pre.empty else {}
