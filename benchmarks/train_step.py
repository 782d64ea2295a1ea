"""SimCLR training-step throughput on CPU: this library vs the `lightly` package, side by side.

    python -m benchmarks.train_step [--width 0.25] [--batch 256] [--rounds 6] [--steps 3]
                                    [--extra-width 1.0] [--device cuda --amp bfloat16] [--quick]
    python -m benchmarks.train_step --memory 65536      # SimCLRv2's memory on against off

One step = both views of ``batch`` images (32 px) through a CIFAR-stem ResNet-18, the 3-layer
projection head (hidden = feature width, 128 out), NT-Xent (tau 0.5) and a LARS update. Images/s
counts both views (2 x batch per step). Data loading is not part of it: both sides train on the
same fixed random tensors.

* ours: ``simclr.models.build_simclr_model`` in channels_last memory format, the two views in one
  forward pass (official: BN statistics over both views), ``simclr.losses.nt_xent``,
  ``simclr.optim.LARS`` with the official parameter groups.
* lightly: its SimCLR recipe as its examples write it: ``ResNetGenerator('resnet-18', width)``
  without the classifier + ``SimCLRProjectionHead(d, d, 128, num_layers=3)``, one forward pass
  per view, ``NTXentLoss``, ``lightly.utils.lars.LARS``.

``--memory K``: instead of lightly, the same step with SimCLRv2's memory (``simclr.models.memory``: the EMA
update, the memory network's forward of view 2 without autograd, K queued negatives in the loss, the
enqueue) against the step without it, alternating in the same way; the queue is full (K entries) from the
first timed step. The headline is the median step time with memory over without (goal <= 1.35x); written to
train_step_memory.json.

Both run in the same process, with the same threads (2 by default) and the same allocator:
the script re-executes itself with tcmalloc preloaded when it is installed (Debian
``libtcmalloc-minimal4``), else with glibc's large-block tunables (``--allocator`` chooses). The two sides alternate in rounds so that
the load of a shared machine hits both alike; the headline is the ratio of median step times,
the best-step ratio is recorded too. Writes benchmarks/results/train_step.json
(``--quick``: a few small steps, written to train_step_quick.json, for the smoke test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
# glibc serves blocks above M_MMAP_THRESHOLD (dynamic, at most 32 MiB) with fresh mmaps whose pages
# fault in on first touch: a [512, 16, 32, 32] float32 activation is 32 MiB, so every step would
# page-fault its activations in again. These settings keep such blocks in the heap.
GLIBC_TUNED = {
    "MALLOC_MMAP_THRESHOLD_": str(256 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_TOP_PAD_": str(256 << 20),
}
_REEXEC_MARK = "SIMCLR_BENCH_ALLOCATOR"


def _allocator(choice: str) -> str:
    """Re-run this command (once) with the chosen allocator set up; return its description.

    auto: tcmalloc if installed, else tuned glibc. Both sides of the comparison share it.
    """
    if os.environ.get(_REEXEC_MARK):
        return os.environ[_REEXEC_MARK]
    if choice == "auto":
        choice = "tcmalloc" if Path(TCMALLOC).exists() else "glibc-tuned"
    env = dict(os.environ)
    if choice == "tcmalloc":
        if not Path(TCMALLOC).exists():
            raise SystemExit(f"--allocator tcmalloc: {TCMALLOC} not found (Debian: libtcmalloc-minimal4)")
        env["LD_PRELOAD"] = (TCMALLOC + " " + env.get("LD_PRELOAD", "")).strip()
    elif choice == "glibc-tuned":
        env.update(GLIBC_TUNED)
    env[_REEXEC_MARK] = choice
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.train_step", *sys.argv[1:]], env)
    raise AssertionError("unreachable")


def _ours(
    width: float, batch: int, size: int, tau: float, compile_model: bool, device: str, amp: str, memory: int = 0
) -> Callable[[], float]:
    import torch

    from simclr.losses.ntxent import nt_xent
    from simclr.models.memory import MomentumMemory
    from simclr.models.simclr import build_simclr_model
    from simclr.optim.lars import LARS, param_groups_for_lars

    torch.manual_seed(0)
    model = build_simclr_model(depth=18, width=width, cifar_stem=True, num_proj_layers=3, proj_out_dim=128)
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = LARS(param_groups_for_lars(model, weight_decay=1e-6), lr=0.3, momentum=0.9, weight_decay=1e-6)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2 * batch, 3, size, size, generator=g)
    x = x.to(device).contiguous(memory_format=torch.channels_last)
    fwd = torch.compile(model) if compile_model else model
    autocast = _autocast(device, amp)
    mem = None
    if memory:
        mem = MomentumMemory(model.backbone, model.head, memory, 128, 0.999, device=device, channels_last=True)
        # a full queue from the first step: the cost of K negatives, not of a filling queue
        mem.push(torch.nn.functional.normalize(torch.randn(memory, 128, generator=g), dim=1).to(device))
        mem.flush()

    def step() -> float:
        with autocast():
            z = fwd(x)["proj"]
        queue = None if mem is None else mem.negatives()
        loss, _, _ = nt_xent(z[:batch], z[batch:], tau, memory=queue)  # float32 inside
        if mem is not None:
            with autocast():
                mem.update_weights()
                mem.push(mem.encode(x[batch:]))
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        return float(loss.detach().item())

    return step


def _lightly(width: float, batch: int, size: int, tau: float, device: str, amp: str) -> Callable[[], float]:
    import torch
    from lightly.loss import NTXentLoss
    from lightly.models import ResNetGenerator
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.utils.lars import LARS as LightlyLARS

    torch.manual_seed(0)
    resnet = ResNetGenerator("resnet-18", width=width)
    backbone = torch.nn.Sequential(
        *list(resnet.children())[:-1], torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    dim = int(512 * width)
    model = torch.nn.Sequential(backbone, SimCLRProjectionHead(dim, dim, 128, num_layers=3)).to(device)
    criterion = NTXentLoss(temperature=tau)
    opt = LightlyLARS(model.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-6)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(batch, 3, size, size, generator=g).to(device)
    x1 = torch.randn(batch, 3, size, size, generator=g).to(device)
    autocast = _autocast(device, amp)

    def step() -> float:
        with autocast():
            z0, z1 = model(x0), model(x1)
        loss = criterion(z0.float(), z1.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach().item())

    return step


def _autocast(device: str, amp: str) -> Callable[[], Any]:
    import contextlib

    import torch

    if amp == "none":
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=torch.device(device).type, dtype=getattr(torch, amp))


def _measure(
    sides: dict[str, Callable[[], float]], rounds: int, steps: int, warmup: int
) -> dict[str, list[float]]:
    for step in sides.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))  # alternate who goes first
        for name in order:
            for _ in range(steps):
                t0 = time.perf_counter()
                sides[name]()
                times[name].append(time.perf_counter() - t0)
    return times


def _measure_pair(args: argparse.Namespace, width: float, rounds: int, steps: int, warmup: int) -> dict[str, Any]:
    """Build both sides at ``width`` and time them; images/s (median and best) per side."""
    tau = 0.5  # official CIFAR-10 setting
    sides: dict[str, Callable[[], float]] = {
        "ours": _ours(width, args.batch, args.size, tau, args.compile, args.device, args.amp)
    }
    result: dict[str, Any] = {"width": width, "lightly_version": None, "lightly_error": None}
    if args.memory:
        sides["memory"] = _ours(width, args.batch, args.size, tau, args.compile, args.device, args.amp, args.memory)
    try:
        if args.memory:
            raise ImportError("--memory compares memory on against off, not against lightly")
        import lightly

        result["lightly_version"] = lightly.__version__
        sides["lightly"] = _lightly(width, args.batch, args.size, tau, args.device, args.amp)
    except ImportError as e:  # the test suite's fresh venv need not have it
        result["lightly_error"] = f"lightly not importable: {e}"
    times = _measure(sides, rounds, steps, warmup)
    imgs = 2 * args.batch
    for k, v in times.items():
        result[f"{k}_step_median_s"] = statistics.median(v)
        result[f"{k}_median"] = imgs / statistics.median(v)
        result[f"{k}_best"] = imgs / min(v)
        result[f"{k}_steps"] = len(v)
        print(
            f"width {width:<5} {k:8s} median {result[f'{k}_median']:8.1f} img/s   "
            f"best {result[f'{k}_best']:8.1f} img/s   ({len(v)} steps)",
            flush=True,
        )
    return result


def _write_memory(args: argparse.Namespace, res: dict[str, Any], allocator: str, torch_version: str) -> int:
    """The memory comparison's record: step time with memory over without (median and best)."""
    from benchmarks._result import write_result

    ratio = res["memory_step_median_s"] / res["ours_step_median_s"]
    name = args.name or ("train_step_memory_quick" if args.quick else "train_step_memory")
    out = write_result(
        name,
        value=round(ratio, 3),
        unit="x step time (memory on / off)",
        baseline="the same step without memory (pretrain.memory_size=0)",
        baseline_value=1.0,
        goal="<= 1.35x the step time without memory",
        memory_size=args.memory,
        images_per_s_memory=round(res["memory_median"], 1),
        images_per_s_plain=round(res["ours_median"], 1),
        step_s_memory=round(res["memory_step_median_s"], 4),
        step_s_plain=round(res["ours_step_median_s"], 4),
        ratio_best=round(res["ours_best"] / res["memory_best"], 3),
        model=f"ResNet-18 CIFAR stem, width {args.width}, 3-layer head -> 128",
        batch=args.batch,
        image_size=args.size,
        threads=args.threads,
        allocator=allocator,
        device=args.device,
        amp=args.amp,
        timed_steps=res["ours_steps"],
        torch=torch_version,
        quick=args.quick,
    )
    print(f"memory {args.memory}: {ratio:.3f}x the step time without memory; wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=0.25, help="ResNet width multiplier (0.25: base width 16)")
    ap.add_argument("--batch", type=int, default=256, help="images per view per step")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--extra-width", type=float, default=None,
                    help="also time this width (e.g. 1.0), 3 rounds of 1 step, recorded under 'extra'")
    ap.add_argument("--compile", action="store_true", help="torch.compile our model (slow to start)")
    ap.add_argument("--allocator", default="auto", choices=["auto", "tcmalloc", "glibc-tuned", "glibc"],
                    help="auto: tcmalloc if installed, else glibc with large-block tunables")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--amp", default="none", choices=["none", "bfloat16", "float16"], help="autocast dtype")
    ap.add_argument("--memory", type=int, default=0,
                    help="time SimCLRv2's memory with this many queued negatives against no memory (not lightly)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny batch, few steps")
    ap.add_argument("--name", default=None, help="result name (default train_step[_quick])")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.rounds, args.steps, args.warmup = 16, 1, 1, 1

    allocator = _allocator(args.allocator)

    import torch

    from benchmarks._result import write_result

    torch.set_num_threads(args.threads)
    main_res = _measure_pair(args, args.width, args.rounds, args.steps, args.warmup)
    if args.memory:
        return _write_memory(args, main_res, allocator, torch.__version__)
    extra = None
    if args.extra_width is not None:
        r = _measure_pair(args, args.extra_width, rounds=3, steps=1, warmup=1)
        extra = {
            "width": r["width"],
            "value": round(r["ours_median"], 1),
            "baseline_value": round(r["lightly_median"], 1) if "lightly_median" in r else None,
            "ratio": round(r["ours_median"] / r["lightly_median"], 3) if "lightly_median" in r else None,
            "ratio_best": round(r["ours_best"] / r["lightly_best"], 3) if "lightly_best" in r else None,
            "timed_steps": r["ours_steps"],
        }
    has_base = "lightly_median" in main_res
    name = args.name or ("train_step_quick" if args.quick else "train_step")
    out = write_result(
        name,
        value=round(main_res["ours_median"], 1),
        unit="images/s",
        baseline=f"lightly {main_res['lightly_version']} SimCLR recipe" if has_base else "lightly (not installed)",
        baseline_value=round(main_res["lightly_median"], 1) if has_base else None,
        goal=">= 1.3x lightly (images/s, same model width, batch, loss, optimizer)",
        ratio_best=round(main_res["ours_best"] / main_res["lightly_best"], 3) if has_base else None,
        value_best=round(main_res["ours_best"], 1),
        baseline_value_best=round(main_res["lightly_best"], 1) if has_base else None,
        model=f"ResNet-18 CIFAR stem, width {args.width}, 3-layer head -> 128",
        batch=args.batch,
        image_size=args.size,
        views=2,
        threads=args.threads,
        allocator=allocator,
        compiled=args.compile,
        device=args.device,
        amp=args.amp,
        timed_steps=main_res["ours_steps"],
        torch=torch.__version__,
        lightly=main_res["lightly_version"],
        lightly_error=main_res["lightly_error"],
        extra=extra,
        quick=args.quick,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
