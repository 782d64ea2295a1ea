"""The GPU training step (issue 5): ResNet-50 1x at 224 px, one SimCLR step on two views, images/s.

    python -m benchmarks.gpu_step [--batch 256] [--steps 30] [--workers 8]     # on a GPU machine, < 5 min
    python -m benchmarks.gpu_step --quick                                       # tiny, on the CPU (smoke)

Two figures, side by side in one run:
- *model step*: bf16 autocast, channels_last, NT-Xent over both views, LARS — fed with random tensors
  already on the GPU (the ceiling);
- *fed step*: the same step fed by the real input path — WebDataset shards written on the spot (random
  JPEGs), ``ShardLoader`` worker processes decoding, and the batched augmentation on the GPU.
An image = one pair of views. Goals: model step >= 1,500 images/s on one H100; fed >= 80% of it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._result import write_result
from simclr.data.loading.loader import ShardLoader
from simclr.data.shards.sources import array_samples
from simclr.data.shards.write import write_shards
from simclr.losses.ntxent import nt_xent
from simclr.models.heads import ProjectionHead
from simclr.models.resnet import ResNet
from simclr.models.simclr import SimCLRModel
from simclr.optim.lars import LARS, param_groups_for_lars


def make_step(model: torch.nn.Module, device: torch.device, amp: bool) -> Any:
    opt = LARS(param_groups_for_lars(model, 1e-6), lr=0.3, momentum=0.9, weight_decay=1e-6)

    def step(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        x = torch.cat([v1, v2]).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            z1, z2 = model(x)["proj"].float().chunk(2)
            loss, _, _ = nt_xent(z1, z2, 0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        return loss.detach()

    return step


def timed(step: Any, batches: Any, steps: int, warmup: int, device: torch.device, batch: int) -> float:
    it = iter(batches)
    for _ in range(warmup):
        step(*next(it))
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*next(it))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256, help="images (pairs) per step")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--images", type=int, default=2048, help="synthetic images written as shards")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny model/images on the CPU: a smoke run, not a figure")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.quick
    device = torch.device("cuda" if cuda else "cpu")
    if args.quick:
        depth, width, cifar, size, src, args.batch, args.steps, args.warmup, args.images, args.workers = (
            18, 0.125, True, 32, 40, 8, 2, 1, 32, 0)
    else:
        depth, width, cifar, size, src = 50, 1.0, False, 224, 256
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    backbone = ResNet(depth=depth, width=width, cifar_stem=cifar)
    model = SimCLRModel(backbone, ProjectionHead(backbone.out_dim, 3, 128)).to(device)
    model = model.to(memory_format=torch.channels_last)
    if args.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    step = make_step(model, device, amp=cuda)

    # 1. model step alone: random views already on the device.
    def synthetic() -> Any:
        v = torch.rand(args.batch, 3, size, size, device=device)
        while True:
            yield v, v.flip(3)

    model_ips = timed(step, synthetic(), args.steps, args.warmup, device, args.batch)
    print(f"[gpu_step] model step: {model_ips:.0f} images/s ({2 * model_ips:.0f} views/s) on {device}", flush=True)

    # 2. fed step: shards written now -> ShardLoader workers -> batched augmentation on the device.
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        imgs = rng.integers(0, 256, size=(args.images, src, src, 3), dtype=np.uint8)
        write_shards(array_samples(imgs, np.arange(args.images) % 10, [str(i) for i in range(10)]), Path(tmp),
                     split="train", image_format="jpeg", max_count=256)
        loader = ShardLoader(tmp, "train", batch_size=args.batch, mode="two_view", num_workers=args.workers,
                             size=size, strength=1.0, blur=not cifar, batched_augment=True,
                             augment_device=device if cuda else None, pin_memory=cuda)

        def fed() -> Any:
            epoch = 0
            while True:
                for b in loader.epoch_iter(epoch):
                    yield b["view1"].to(device, non_blocking=True), b["view2"].to(device, non_blocking=True)
                epoch += 1

        fed_ips = timed(step, fed(), args.steps, args.warmup, device, args.batch)
    print(f"[gpu_step] fed step: {fed_ips:.0f} images/s ({fed_ips / model_ips:.0%} of the model step)", flush=True)
    name = "gpu_step_quick" if args.quick else "gpu_step"
    write_result(
        name,
        round(fed_ips, 1),
        "images/s (pairs of views), fed by shards + GPU augmentation",
        "model step alone (random views on the device)",
        round(model_ips, 1),
        "model step >= 1500 images/s on one H100; fed >= 80% of the model step",
        model_step_images_per_s=round(model_ips, 1),
        device=torch.cuda.get_device_name(0) if cuda else "cpu",
        batch=args.batch,
        steps=args.steps,
        workers=args.workers,
        image_size=size,
        model=f"resnet{depth} width {width}",
        compile=args.compile,
        torch=torch.__version__,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
