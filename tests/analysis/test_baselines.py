"""analysis.baselines: kNN on raw pixels with the kNN monitor's memory bank and test set (jobs/stages/pretrain.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from analysis.baselines import PixelKnn, pixel_knn_for_config, pixel_knn_for_runs
from analysis.synthetic import model_config, write_run
from simclr.data.loading.loader import ShardLoader


def pretrain_cfg(root: Path | str, *, k: int = 20, bank: int = 0, seed: int = 0, size: int = 28,
                 depth: int = 18) -> dict[str, Any]:
    """The parts of a resolved pretrain config (jobs/config/stage.py) the baseline reads."""
    return {"stage": "pretrain", "seed": seed,
            "model": {**model_config(depth=depth), "in_channels": 3},
            "data": {"root": str(root), "train_split": "train", "eval_split": "test", "image_size": size,
                     "strength": 0.5, "min_crop_area": 0.08, "blur": None, "num_workers": 2,
                     "bad_sample_budget": 0, "batched_augment": False},
            "pretrain": {"temperature": 0.2, "probe": True, "knn_k": k, "knn_train_samples": bank,
                         "knn_every_epochs": 1}}


def reference_top1(root: Path, *, k: int, bank: int, seed: int, size: int, t: float = 0.1) -> tuple[float, int, int]:
    """Brute-force weighted kNN on flattened, L2-normalised eval-mode images, written out independently."""

    def images(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        ld = ShardLoader(root, split, batch_size=512, mode="eval", seed=seed, size=size, out_channels=3)
        xs, ys = [], []
        for b in ld.epoch_iter(0):
            keep = b["label"] >= 0
            xs.append(b["image"][keep].reshape(int(keep.sum()), -1).double())
            ys.append(b["label"][keep])
        x = torch.cat(xs)
        return x / x.norm(dim=1, keepdim=True), torch.cat(ys)

    tx, ty = images("train")
    if bank:
        tx, ty = tx[:bank], ty[:bank]
    vx, vy = images("test")
    classes = int(ty.max()) + 1
    correct = 0
    for x, y in zip(vx, vy):
        sim = tx @ x  # [N]
        order = torch.argsort(sim, descending=True, stable=True)[: min(k, len(ty))]
        votes = torch.zeros(classes, dtype=torch.float64)
        for j in order:
            votes[ty[j]] += torch.exp(sim[j] / t)
        correct += int(int(votes.argmax()) == int(y))
    return 100.0 * correct / len(vy), len(ty), len(vy)


@pytest.mark.parametrize(("k", "bank"), [(20, 0), (5, 50)])
def test_equals_a_brute_force_reference(tiny_root: Path, tmp_path: Path, k: int, bank: int) -> None:
    res = pixel_knn_for_config(pretrain_cfg(tiny_root, k=k, bank=bank, seed=3), cache_dir=tmp_path)
    top1, n_bank, n_test = reference_top1(tiny_root, k=k, bank=bank, seed=3, size=28)
    assert res.why_missing is None and res.top1 is not None
    assert res.top1 == pytest.approx(top1, abs=1e-9)
    assert (res.bank, res.test, res.k, res.image_size, res.cached) == (n_bank, n_test, k, 28, False)
    assert res.bank == (bank or 240) and res.test == 100
    assert res.top1 > 40.0  # Fashion-MNIST pixels are far above chance (10 %)


def test_cached_corrupt_cache_and_changed_setting(tiny_root: Path, tmp_path: Path) -> None:
    cfg = pretrain_cfg(tiny_root, bank=50)
    first = pixel_knn_for_config(cfg, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and not first.cached
    second = pixel_knn_for_config(cfg, cache_dir=tmp_path)
    assert second.cached and second.top1 == first.top1 and (second.bank, second.test) == (50, 100)
    files[0].write_text('{"top1": 12.5, "bank"')  # a half-written file is never taken as whole
    third = pixel_knn_for_config(cfg, cache_dir=tmp_path)
    assert not third.cached and third.top1 == first.top1
    assert json.loads(files[0].read_text())["top1"] == first.top1  # rewritten whole
    other = pixel_knn_for_config(pretrain_cfg(tiny_root, bank=50, k=5), cache_dir=tmp_path)
    assert not other.cached and len(list(tmp_path.glob("*.json"))) == 2
    assert not list(tiny_root.rglob("pixel-knn-*"))  # nothing written into the data root


def test_missing_data_never_raises(tmp_path: Path) -> None:
    gone = tmp_path / "copied" / "data"
    res = pixel_knn_for_config(pretrain_cfg(gone), cache_dir=tmp_path / "cache")
    assert res.top1 is None and res.why_missing is not None and str(gone) in res.why_missing
    (tmp_path / "empty" / "train").mkdir(parents=True)
    res = pixel_knn_for_config(pretrain_cfg(tmp_path / "empty"), cache_dir=tmp_path / "cache")
    assert res.top1 is None and res.why_missing is not None and "train/manifest.json" in res.why_missing
    broken = pretrain_cfg(gone)
    del broken["pretrain"]
    res = pixel_knn_for_config(broken, cache_dir=tmp_path / "cache")
    assert res.top1 is None and res.why_missing is not None and "pretrain" in res.why_missing
    assert not (tmp_path / "cache").exists()


def test_runs_sharing_a_data_root_compute_once(tiny_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    a, b = (write_run(sweep, stage="pretrain", seed=0, model=model_config(depth=d),
                      extra_config={k: v for k, v in pretrain_cfg(tiny_root, bank=50, depth=d).items()
                                    if k in ("data", "pretrain", "model")}) for d in (18, 50))
    ft = write_run(sweep, stage="finetune", seed=0, label_fraction=0.1, ft_proj_selector=1,
                   extra_config={"data": pretrain_cfg(tiny_root)["data"]})
    bare = sweep / "not-a-run"
    bare.mkdir()
    cache = tmp_path / "cache"
    res = pixel_knn_for_runs([a, str(b), ft, bare, sweep / "absent"], cache_dir=cache)
    assert set(res) == {str(a), str(b)}
    assert len(list(cache.glob("*.json"))) == 1
    assert res[str(a)].top1 is not None and res[str(a)].top1 == res[str(b)].top1
    assert isinstance(res[str(a)], PixelKnn) and res[str(a)].bank == 50


def test_import_is_torch_free() -> None:
    code = "import sys, analysis.baselines; assert 'torch' not in sys.modules and 'simclr' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
