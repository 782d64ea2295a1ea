"""Data pipeline throughput: shards -> two augmented SimCLR views, vs torchvision ImageFolder over PNG files.

    python -m benchmarks.data_pipeline [--workers 0] [--batch 256] [--rounds 3] [--quick]

Two settings, each with the same images stored both ways (identical PNG bytes):

* 32 px: the first 4096 Fashion-MNIST training images (28x28 gray; the project's real data), views of 32 px,
  colour strength 0.5, no blur (official CIFAR settings). Our loader keeps gray images one channel until the
  end; ImageFolder's loader makes them RGB first — so also:
* 32rgb: 4096 smooth synthetic RGB images of 28x28, same views.
* 96 px: 1024 smooth synthetic RGB images of 96x96 (STL-10-like; nothing of that size is available offline),
  views of 96 px, strength 1.0, blur (official ImageNet settings).

Sides, each through a ``DataLoader`` with the same number of workers, batch size and shuffling:

* ours: ``ShardLoader(mode="two_view", batched_augment=True)`` — pread from the tar shards via the key index,
  torchvision's libpng decode, one batched augmentation call per batch (``BatchedSimCLRAugment``).
* ours, PIL path: the same loader with ``batched_augment=False`` (per-sample ``SimCLRAugment``), for reference.
* baseline: ``torchvision.datasets.ImageFolder`` over the PNG files with the recipe users write with
  ``torchvision.transforms`` (RandomResizedCrop(scale 0.08-1), RandomHorizontalFlip, RandomApply(ColorJitter
  (0.8s, 0.8s, 0.8s, 0.2s), p=0.8), RandomGrayscale(0.2), RandomApply(GaussianBlur, p=0.5) at 96 px, ToTensor)
  applied twice per image.

Pairs/s per core: with ``--workers 0`` everything runs in this process on one thread (one core); with W workers
the figure is divided by W. The sides alternate in rounds of one epoch each (the load of a shared machine hits
all alike); the headline is the 96 px ratio of median epoch times, both sizes are recorded.
Writes benchmarks/results/data_pipeline.json (``--quick``: data_pipeline_quick.json).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def _images(size: int, n: int, seed: int, gray: bool) -> tuple[Any, Any, str]:  # uint8 [n, H, W(, 3)], labels, name
    import numpy as np
    import torch

    if gray:
        from simclr.data.shards.sources.fashion_mnist import DEFAULT_ROOT, fashion_mnist_samples

        if (DEFAULT_ROOT / "train-images-idx3-ubyte.gz").is_file():
            src = fashion_mnist_samples("train")
            return src.images[:n].copy(), src.labels[:n].astype(np.int64), "Fashion-MNIST 28x28 gray"
    g = torch.Generator().manual_seed(seed)
    side = 28 if size <= 32 else 96
    small = torch.rand(n, 3, max(2, side // 6), max(2, side // 6), generator=g)
    big = torch.nn.functional.interpolate(small, size=(side, side), mode="bicubic", align_corners=False)
    rgb = (big.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return rgb, np.arange(n) % 10, f"synthetic RGB {side}x{side}"


def _prepare(workdir: Path, size: int, n: int, gray: bool) -> tuple[Path, Path, str]:
    """The same PNG bytes as an ImageFolder tree and as shards; returns (imagefolder root, data root, source)."""
    from simclr.data.shards.codec import encode_image
    from simclr.data.shards.sources import array_samples
    from simclr.data.shards.write import write_shards

    images, labels, desc = _images(size, n, seed=size, gray=gray)
    tag = f"{size}{'gray' if gray else 'rgb'}"
    folder = workdir / f"folder{tag}"
    for i, (im, lab) in enumerate(zip(images, labels)):
        d = folder / f"class{int(lab)}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img{i:06d}.png").write_bytes(encode_image(im, "png"))
    root = workdir / f"shards{tag}"
    write_shards(array_samples(images, labels, [f"class{i}" for i in range(10)]), root, split="train", max_count=1024)
    return folder, root, desc


def _baseline(folder: Path, size: int, strength: float, blur: bool, batch: int, workers: int) -> Callable[[], int]:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms as T

    s = strength
    steps: list[Any] = [
        T.RandomResizedCrop(size, scale=(0.08, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
        T.RandomGrayscale(p=0.2),
    ]
    if blur:
        k = 2 * ((size // 10) // 2) + 1
        steps.append(T.RandomApply([T.GaussianBlur(k, sigma=(0.1, 2.0))], p=0.5))
    steps.append(T.ToTensor())
    view = T.Compose(steps)
    ds = datasets.ImageFolder(str(folder), transform=lambda img: (view(img), view(img)))

    def epoch() -> int:
        loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
        pairs = 0
        for (v1, v2), _ in loader:
            pairs += v1.shape[0]
        return pairs

    torch.manual_seed(0)
    return epoch


def _ours(root: Path, size: int, strength: float, blur: bool, batch: int, workers: int, batched: bool) -> Callable[[], int]:
    from simclr.data.loading.loader import ShardLoader

    loader = ShardLoader(root, "train", batch_size=batch, mode="two_view", num_workers=workers, size=size,
                         strength=strength, blur=blur, batched_augment=batched)
    counter = iter(range(1 << 30))

    def epoch() -> int:
        pairs = 0
        for b in loader.epoch_iter(next(counter)):
            pairs += b["view1"].shape[0]
        return pairs

    return epoch


def _measure(sides: dict[str, Callable[[], int]], rounds: int) -> dict[str, list[float]]:
    """pairs/s of each side per round (after one warm-up epoch each: page cache, lazy imports)."""
    for f in sides.values():
        f()
    rates: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(rounds):
        for k, f in sides.items():
            t = time.perf_counter()
            pairs = f()
            rates[k].append(pairs / (time.perf_counter() - t))
    return rates


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of every side")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n32", type=int, default=4096, help="images of the 32 px setting")
    ap.add_argument("--n96", type=int, default=1024, help="images of the 96 px setting")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write the files (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="smoke run: few images, one round")
    ap.add_argument("--name", default=None, help="result name (default data_pipeline[_quick])")
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.quick:
        args.batch, args.rounds, args.n32, args.n96 = 32, 1, 64, 64

    import torch

    from benchmarks._result import write_result

    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="data_pipeline_", dir=args.workdir))
    per_size: dict[str, dict[str, Any]] = {}
    try:
        for key, size, n, gray in (("32", 32, args.n32, True), ("32rgb", 32, args.n32, False), ("96", 96, args.n96, False)):
            strength, blur = (0.5, False) if size <= 32 else (1.0, True)
            folder, root, desc = _prepare(workdir, size, n, gray)
            sides = {
                "ours": _ours(root, size, strength, blur, args.batch, args.workers, batched=True),
                "ours_pil": _ours(root, size, strength, blur, args.batch, args.workers, batched=False),
                "imagefolder": _baseline(folder, size, strength, blur, args.batch, args.workers),
            }
            rates = _measure(sides, args.rounds)
            cores = max(1, args.workers)
            med = {k: statistics.median(v) / cores for k, v in rates.items()}
            per_size[key] = {
                "images": desc,
                "n": n,
                "ours_pairs_per_s_per_core": round(med["ours"], 1),
                "ours_pil_pairs_per_s_per_core": round(med["ours_pil"], 1),
                "imagefolder_pairs_per_s_per_core": round(med["imagefolder"], 1),
                "ratio": round(med["ours"] / med["imagefolder"], 2),
                "ratio_pil_path": round(med["ours_pil"] / med["imagefolder"], 2),
            }
            print(f"{size:3d} px ({desc}): ours {med['ours']:8.1f}  ours/PIL {med['ours_pil']:8.1f}  "
                  f"ImageFolder {med['imagefolder']:8.1f} pairs/s/core  ratio {med['ours'] / med['imagefolder']:.2f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    head = per_size["96"]
    name = args.name or ("data_pipeline_quick" if args.quick else "data_pipeline")
    out = write_result(
        name,
        value=head["ours_pairs_per_s_per_core"],
        unit="pairs/s/core",
        baseline="torchvision ImageFolder over PNG files + torchvision transforms, same DataLoader workers, 96 px",
        baseline_value=head["imagefolder_pairs_per_s_per_core"],
        goal=">= 2x the ImageFolder baseline at 32 px and 96 px",
        per_size=per_size,
        min_ratio=min(v["ratio"] for v in per_size.values()),
        workers=args.workers,
        batch=args.batch,
        threads=args.threads,
        rounds=args.rounds,
        quick=args.quick,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
