"""ImageNet-sized split start-up: the split index vs today's per-shard index reader, on a simulated 1.28 M split.

    python -m benchmarks.data_scale [--shards 1281] [--per-shard 1000] [--workers 8] [--workdir DIR]

Nothing big is written: each shard tar is a sparse file (``truncate``) of ImageNet's mean shard size, holding a
few real 16x16 JPEGs near its start, which its 1,000 index entries point at in turn; the per-shard ``.idx``
files, the manifest and the split index are real (written by the suite's own ``write_manifest``). Measured:

* opening the train split per rank: ``open_split(verify="size")`` against today's reader, ``read_index`` of
  every shard (a lower bound of what ``open_split`` did before: it also hashed each index and checked each key
  in Python), median of rounds;
* file-system calls of one open (``strace -f -c`` of a process that opens the split, minus one that only imports):
  files opened and ``stat`` calls;
* the per-epoch plan for 1,024 ranks (one rank's permutation and batches, and all 1,024 checked for equal
  counts and disjoint samples; the workers of a rank take its batches by index);
* private memory (USS: Private_Clean + Private_Dirty of /proc/PID/smaps_rollup) of each of ``--workers``
  DataLoader workers after its first batch and after 50 batches, and of one worker run alone.
Writes benchmarks/results/data_scale.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MEAN_SHARD_BYTES = 110 * 1000 * 1000  # ImageNet train: ~140 GB in 1,281 shards


def _jpegs(n: int) -> list[bytes]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, format="JPEG")
        out.append(buf.getvalue())
    return out


def simulate(root: Path, shards: int, per_shard: int, classes: int = 1000) -> Path:
    """A split of ``shards x per_shard`` samples under ``root/train`` (sparse tars, real indexes and manifest)."""
    from simclr.data.shards.index import IndexEntry, format_index
    from simclr.data.shards.manifest import ShardInfo, index_name, shard_name
    from simclr.data.shards.write import write_manifest

    import hashlib

    split = root / "train"
    split.mkdir(parents=True)
    images = _jpegs(4)
    infos = []
    for s in range(shards):
        tar = split / shard_name(s)
        spots = []
        with open(tar, "wb") as f:
            pos = 512
            for img in images:
                f.seek(pos)
                f.write(img)
                spots.append((pos, len(img)))
                pos += 512 + (len(img) + 511) // 512 * 512
            f.truncate(MEAN_SHARD_BYTES)
        entries = []
        for j in range(per_shard):
            i = s * per_shard + j
            c = i % classes
            off, size = spots[j % len(spots)]
            entries.append(IndexEntry(f"n{c:08d}/n{c:08d}_{i}", c, off, size, "RGB", 16, 16))
        text = format_index(entries).encode()
        (split / index_name(s)).write_bytes(text)
        infos.append(ShardInfo(name=shard_name(s), count=per_shard, bytes=MEAN_SHARD_BYTES, sha256="",
                               index=index_name(s), index_bytes=len(text),
                               index_sha256=hashlib.sha256(text).hexdigest(), first_key=entries[0].key))
    write_manifest(split, "train", infos, [f"n{c:08d}" for c in range(classes)], {"type": "simulated"}, "jpeg", {})
    return split


def _open_new(root: Path) -> float:
    from simclr.data.shards.shardset import open_split

    t0 = time.perf_counter()
    s = open_split(root, "train", verify="size")
    dt = time.perf_counter() - t0
    assert len(s) > 0
    return dt


def _open_old(root: Path) -> float:
    from simclr.data.shards.index import read_index
    from simclr.data.shards.manifest import Manifest

    t0 = time.perf_counter()
    m = Manifest.load(root / "train")
    parts = [read_index(root / "train" / info.index) for info in m.shards]
    dt = time.perf_counter() - t0
    assert sum(len(p) for p in parts) == m.num_samples
    return dt


_SYSCALLS = "openat,open,stat,newfstatat,statx,lstat,fstat"


def _strace(code: str) -> dict[str, int]:
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as out:
        subprocess.run(["strace", "-f", "-c", "-o", out.name, "-e", f"trace={_SYSCALLS}", sys.executable, "-c", code],
                       check=True, capture_output=True)
        counts: dict[str, int] = {}
        for line in Path(out.name).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[-1] in _SYSCALLS.split(",") and parts[3].isdigit():
                counts[parts[-1]] = int(parts[3])
        return counts


def _fs_calls(root: Path) -> dict[str, dict[str, int]]:
    imports = ("from simclr.data.shards.shardset import open_split; from simclr.data.shards.index import read_index; "
               "from simclr.data.shards.manifest import Manifest; from pathlib import Path; r = Path(%r)" % str(root))
    base = _strace(imports)
    new = _strace(imports + "; open_split(r, 'train', verify='size')")
    old = _strace(imports + "; m = Manifest.load(r / 'train'); [read_index(r / 'train' / i.index) for i in m.shards]")

    def minus(a: dict[str, int]) -> dict[str, int]:
        return {k: a.get(k, 0) - base.get(k, 0) for k in sorted(set(a) | set(base)) if a.get(k, 0) - base.get(k, 0)}

    return {"new": minus(new), "old": minus(old)}


def _plan(root: Path, ranks: int, batch: int) -> dict[str, Any]:
    import numpy as np

    from simclr.data.loading.order import epoch_permutation, rank_batches
    from simclr.data.shards.shardset import open_split

    s = open_split(root, "train", verify="size")
    t0 = time.perf_counter()
    perm = epoch_permutation(s.key_ids, seed=0, epoch=3)
    rows, valid = rank_batches(perm, batch_size=batch, world_size=ranks, rank=ranks - 1, drop_last=True)
    one_rank = time.perf_counter() - t0
    steps = {rank_batches(perm, batch_size=batch, world_size=ranks, rank=r, drop_last=True)[0].shape for r in
             range(ranks)}
    every = np.concatenate([rank_batches(perm, batch_size=batch, world_size=ranks, rank=r, drop_last=True)[0].ravel()
                            for r in range(ranks)])
    assert len(steps) == 1, steps
    assert np.unique(every).shape[0] == every.shape[0]  # no sample twice in an epoch
    resumed = rank_batches(perm, batch_size=batch, world_size=ranks, rank=ranks - 1, drop_last=True)[0][5:]
    assert np.array_equal(resumed, rows[5:])
    return {"one_rank_s": one_rank, "ranks": ranks, "batch_per_rank": batch, "steps_per_rank": int(rows.shape[0]),
            "equal_counts": True, "disjoint": True}


def _uss(pid: int) -> int:
    kb = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            kb += int(line.split()[1])
    return kb * 1024


def _children() -> list[int]:
    pid = os.getpid()
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(p) for p in text]
    return sorted(set(out))


def _worker_memory(root: Path, workers: int, batches_each: int = 50) -> dict[str, Any]:
    """USS of each worker after its first batch and after ``batches_each`` batches (eval mode, 16 px)."""
    from simclr.data.loading.loader import ShardLoader

    ld = ShardLoader(root, "train", batch_size=64, mode="eval", size=16, num_workers=workers, verify="size",
                     prefetch_factor=1)
    it = ld.epoch_iter(0)
    first: dict[int, int] = {}
    for k, _ in enumerate(it):
        if k + 1 == workers:
            first = {p: _uss(p) for p in _children()}
        if k + 1 == workers * batches_each:
            last = {p: _uss(p) for p in _children()}
            break
    getattr(it, "close")()  # a generator: stops the workers now
    growth = [last[p] / first[p] for p in first if p in last]
    return {"workers": workers, "first_batch_uss_mb": [first[p] / 1e6 for p in sorted(first)],
            "after_uss_mb": [last[p] / 1e6 for p in sorted(last)], "max_growth": max(growth),
            "main_uss_mb": _uss(os.getpid()) / 1e6}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, default=1281)
    p.add_argument("--per-shard", type=int, default=1000)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)

    from benchmarks._result import write_result

    work = Path(tempfile.mkdtemp(prefix="data_scale-", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        simulate(work, args.shards, args.per_shard)
        n = args.shards * args.per_shard
        print(f"simulated {n} samples in {args.shards} shards in {time.perf_counter() - t0:.0f} s", flush=True)
        new: list[float] = []
        old: list[float] = []
        for r in range(args.rounds):
            for side in (("new", "old") if r % 2 == 0 else ("old", "new")):
                (new if side == "new" else old).append(_open_new(work) if side == "new" else _open_old(work))
        print(f"open: split index {statistics.median(new):.3f} s, per-shard indexes {statistics.median(old):.2f} s",
              flush=True)
        fs = _fs_calls(work)
        print(f"file-system calls of one open: {fs}", flush=True)
        plan = _plan(work, 1024, 128)
        print(f"plan: {plan}", flush=True)
        mem = {"many": _worker_memory(work, args.workers), "one": _worker_memory(work, 1)}
        print(f"worker memory: {json.dumps(mem)}", flush=True)
        t_new, t_old = statistics.median(new), statistics.median(old)
        out = write_result(
            "data_scale", value=t_new, unit="s", baseline="read_index of every shard (today's reader; a lower bound)",
            baseline_value=t_old, goal="open < 1 s and >= 10x faster; worker USS after 50 batches < 1.2x its first; "
            "1,024-rank plan < 1 s with equal counts; O(1) files read per open",
            samples=n, shards=args.shards, open_new_s=new, open_old_s=old, speedup=t_old / t_new, fs_calls=fs,
            plan=plan, worker_memory=mem)
        print(f"wrote {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
