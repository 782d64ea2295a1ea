"""SimCLR augmentation throughput: the batched tensor path vs the per-sample PIL path, side by side.

    python -m benchmarks.augment [--batch 256] [--rounds 5] [--threads 1] [--device cpu] [--quick]

Both paths make the two views of the same decoded images with the same seeds and the same recipe
(``simclr.data.augment``): random resized crop, flip, colour jitter in random order (p 0.8), grayscale (p 0.2),
blur (p 0.5, on for 96 px as the official ImageNet setting, off for 32 px as CIFAR). Inputs: smooth synthetic
RGB images (no CIFAR / STL-10 offline) of 32x32 for 32 px views (strength 0.5, CIFAR) and 96x96 for 96 px views
(strength 1.0, STL-10-like). Decoding is not timed (benchmarks.data_pipeline times the whole pipeline).

* PIL path: ``SimCLRAugment(img, seed)`` per image and view, stacked into a batch — what a DataLoader worker
  does with per-sample transforms.
* batched path: ``BatchedSimCLRAugment(uint8 [2B, 3, H, W], seeds)`` — one call per batch.

Pairs/s per core: one thread (``--threads``), no workers. The two paths alternate in rounds (the load of a
shared machine hits both alike); the headline is the ratio of the median round times at 96 px; both sizes are
recorded. Writes benchmarks/results/augment.json (``--quick``: augment_quick.json).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _images(n: int, size: int, seed: int) -> "torch.Tensor":  # uint8 [n, 3, size, size]
    import torch

    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, max(2, size // 6), max(2, size // 6), generator=g)
    big = torch.nn.functional.interpolate(small, size=(size, size), mode="bicubic", align_corners=False)
    return (big.clamp(0, 1) * 255).round().to(torch.uint8)


def _sides(batch: int, size: int, device: str) -> dict[str, Callable[[], None]]:
    import torch
    from PIL import Image

    from simclr.data.augment.batched import BatchedSimCLRAugment
    from simclr.data.augment.simclr import SimCLRAugment, view_seed

    strength = 0.5 if size <= 32 else 1.0
    x = _images(batch, size, seed=size)
    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in x]
    seeds = torch.tensor([[view_seed(0, 0, f"k{i}", v) for i in range(batch)] for v in (0, 1)])
    per_sample = SimCLRAugment(size, strength)
    batched = BatchedSimCLRAugment(size, strength)
    x_dev = x.to(device)

    def run_pil() -> None:
        for v in (0, 1):
            torch.stack([per_sample(im, int(s)) for im, s in zip(pil, seeds[v])])

    def run_batched() -> None:
        out = batched(x_dev.repeat(2, 1, 1, 1), seeds.reshape(-1))
        if out.device.type == "cuda":
            torch.cuda.synchronize()

    return {"pil": run_pil, "batched": run_batched}


def _measure(sides: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    for f in sides.values():  # warm-up (allocations, lazy imports)
        f()
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(rounds):
        for k, f in sides.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256, help="pairs per batch")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 96])
    ap.add_argument("--device", default="cpu", help="device of the batched path (the PIL path is CPU)")
    ap.add_argument("--quick", action="store_true", help="smoke run: small batch, one round")
    ap.add_argument("--name", default=None, help="result name (default augment[_quick])")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.rounds = 16, 1

    import torch

    from benchmarks._result import write_result

    torch.set_num_threads(args.threads)
    per_size: dict[int, dict[str, float]] = {}
    for size in args.sizes:
        times = _measure(_sides(args.batch, size, args.device), args.rounds)
        med = {k: args.batch / statistics.median(v) for k, v in times.items()}
        best = {k: args.batch / min(v) for k, v in times.items()}
        per_size[size] = {
            "pil_pairs_per_s": round(med["pil"], 1),
            "batched_pairs_per_s": round(med["batched"], 1),
            "ratio": round(med["batched"] / med["pil"], 2),
            "ratio_best": round(best["batched"] / best["pil"], 2),
        }
        print(f"{size:3d} px: PIL {med['pil']:8.1f} pairs/s   batched {med['batched']:8.1f} pairs/s   "
              f"ratio {med['batched'] / med['pil']:.2f} (best-round ratio {best['batched'] / best['pil']:.2f})")
    head = max(per_size)
    name = args.name or ("augment_quick" if args.quick else "augment")
    out = write_result(
        name,
        value=per_size[head]["batched_pairs_per_s"],
        unit="pairs/s",
        baseline=f"per-sample PIL path (SimCLRAugment), {head} px, same seeds, same process",
        baseline_value=per_size[head]["pil_pairs_per_s"],
        goal=">= 2x the PIL path at 32 px and 96 px",
        per_size={str(k): v for k, v in per_size.items()},
        min_ratio=min(v["ratio"] for v in per_size.values()),
        batch=args.batch,
        threads=args.threads,
        device=args.device,
        rounds=args.rounds,
        quick=args.quick,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
