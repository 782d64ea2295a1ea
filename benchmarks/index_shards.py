"""Indexing WebDataset shards in place vs re-encoding the same images with ``simclr-shards --source imagefolder``.

    python -m benchmarks.index_shards [--shards 100] [--per-shard 1000] [--kb 100] [--rounds 2] [--workdir DIR]

The same JPEG files (about ``--kb`` KB each, 10 classes) are laid out twice: as an ImageFolder tree and as
WebDataset tars (``<class>/<img>.jpg`` + ``.cls`` members, as ``webdataset.ShardWriter`` writes them). Then,
alternating in rounds (``force``: each round does the whole job):

* in place: ``build_dataset("webdataset", ...)`` — key indexes + manifest, reading tar headers, the ``cls``
  members and a 2 KiB header of each image;
* re-encode: ``build_dataset("imagefolder", ..., image_format="jpeg")`` — the way in before: every file read,
  decoded to check it (the default), written into new tars, hashed.

Reported: seconds of each (median), the ratio, shards/s and MB/s of bytes read while indexing in place
(``/proc/self/io`` rchar: headers, label members, image headers), and the loader's pairs/s (``ShardLoader``
two_view, batched augmentation, 64 px, batch 128, no workers) on the in-place root against the re-encoded root
of the same images, alternating, median of rounds. The page cache is warm for both sides (the files were just
written); neither side is favoured by it more than by reading what it reads.
Writes benchmarks/results/index_shards.json.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any


def _jpegs(kb: int, distinct: int) -> list[bytes]:
    """``distinct`` JPEGs of about ``kb`` KB (smooth noise, quality 90); samples cycle through them."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    side = 64
    while True:
        small = rng.integers(0, 255, (side // 4, side // 4, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC)
        noise = rng.integers(-40, 40, (side, side, 3))
        arr = np.clip(np.asarray(img).astype(int) + noise, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        if len(buf.getvalue()) >= kb * 1000 or side > 2048:
            break
        side = int(side * 1.25)
    out = []
    for _ in range(distinct):
        noise = rng.integers(-40, 40, (side, side, 3))
        arr = np.clip(np.asarray(img).astype(int) + noise, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _lay_out(work: Path, shards: int, per_shard: int, kb: int) -> tuple[Path, Path, int]:
    """The ImageFolder tree and the tars of the same bytes; returns (folder root, tar folder, total bytes)."""
    images = _jpegs(kb, 64)
    folder, tars = work / "imagefolder", work / "wds"
    tars.mkdir(parents=True)
    total = 0
    for s in range(shards):
        with tarfile.open(tars / f"train-{s:06d}.tar", "w", format=tarfile.PAX_FORMAT) as t:
            for j in range(per_shard):
                i = s * per_shard + j
                cls, data = f"c{i % 10}", images[i % len(images)]
                key = f"{cls}/img{i:07d}"
                (folder / "train" / cls).mkdir(parents=True, exist_ok=True)
                (folder / "train" / f"{key}.jpg").write_bytes(data)
                for name, payload in ((f"{key}.cls", str(i % 10).encode()), (f"{key}.jpg", data)):
                    ti = tarfile.TarInfo(name)
                    ti.size = len(payload)
                    t.addfile(ti, io.BytesIO(payload))
                total += len(data)
    return folder, tars, total


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def _pairs_per_s(root: Path, batches: int, batch: int = 128) -> float:
    import torch

    from simclr.data.loading.loader import ShardLoader

    torch.set_num_threads(1)
    ld = ShardLoader(root, "train", batch_size=batch, mode="two_view", size=64, batched_augment=True, strength=1.0,
                     verify="size")
    t0 = time.perf_counter()
    n = 0
    for k, b in enumerate(ld.epoch_iter(0)):
        n += int(b["valid"].sum())
        if k + 1 == batches:
            break
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, default=100)
    p.add_argument("--per-shard", type=int, default=1000)
    p.add_argument("--kb", type=int, default=100, help="approximate JPEG size")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--loader-batches", type=int, default=30)
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed after")
    args = p.parse_args(argv)

    from benchmarks._result import write_result
    from jobs.cli.shards import build_dataset

    work = Path(tempfile.mkdtemp(prefix="index_shards-", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        folder, tars, total = _lay_out(work, args.shards, args.per_shard, args.kb)
        print(f"laid out {args.shards} x {args.per_shard} JPEGs, {total / 1e9:.2f} GB each way, "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
        inplace_s: list[float] = []
        reencode_s: list[float] = []
        read_bytes: list[int] = []
        for r in range(args.rounds):
            order = ("inplace", "reencode") if r % 2 == 0 else ("reencode", "inplace")
            for side in order:
                t0 = time.perf_counter()
                if side == "inplace":
                    before = _rchar()
                    build_dataset("webdataset", str(tars), work / "inplace", splits=["train"], fractions=(),
                                  num_classes=10, force=True)
                    read_bytes.append(_rchar() - before)
                    inplace_s.append(time.perf_counter() - t0)
                else:
                    build_dataset("imagefolder", folder, work / "reencode", splits=["train"], fractions=(),
                                  shard_size=args.per_shard, image_format="jpeg", force=True)
                    reencode_s.append(time.perf_counter() - t0)
                print(f"round {r} {side}: {time.perf_counter() - t0:.1f} s", flush=True)
        batch = min(128, args.shards * args.per_shard)
        _pairs_per_s(work / "reencode", 2, batch)  # warm-up: first-call costs (imports, kernels) on neither side
        pairs: dict[str, list[float]] = {"inplace": [], "reencode": []}
        for r in range(max(3, args.rounds)):
            for side in (("inplace", "reencode") if r % 2 == 0 else ("reencode", "inplace")):
                pairs[side].append(_pairs_per_s(work / side, args.loader_batches, batch))
        t_in, t_re = statistics.median(inplace_s), statistics.median(reencode_s)
        mb = statistics.median(read_bytes) / 1e6
        loader = {k: statistics.median(v) for k, v in pairs.items()}
        extra: dict[str, Any] = {
            "shards": args.shards, "per_shard": args.per_shard, "image_bytes_total": total,
            "inplace_s": inplace_s, "reencode_s": reencode_s, "speedup": t_re / t_in,
            "inplace_shards_per_s": args.shards / t_in, "inplace_mb_read": mb, "inplace_mb_per_s": mb / t_in,
            "inplace_read_fraction": statistics.median(read_bytes) / total,
            "loader_pairs_per_s": pairs, "loader_ratio_inplace_over_own": loader["inplace"] / loader["reencode"],
        }
        out = write_result("index_shards", value=t_in, unit="s", baseline="simclr-shards --source imagefolder "
                           "(re-encode, default image check) of the same JPEGs", baseline_value=t_re,
                           goal=">= 5x faster than re-encoding; loader pairs/s equal within noise", **extra)
        print(f"in place {t_in:.1f} s ({args.shards / t_in:.1f} shards/s, {mb:.1f} MB read = "
              f"{100 * extra['inplace_read_fraction']:.2f}% of the image bytes, {mb / t_in:.1f} MB/s); "
              f"re-encode {t_re:.1f} s; speedup {t_re / t_in:.1f}x")
        print(f"loader pairs/s: in place {loader['inplace']:.0f}, own shards {loader['reencode']:.0f} "
              f"(ratio {extra['loader_ratio_inplace_over_own']:.3f}); rounds {pairs}")
        print(f"wrote {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
