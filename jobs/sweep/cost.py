"""What a sweep costs, before it is queued: per stage its tasks, nodes x GPUs per task, time limit, allocation
hours, and the GPU-hours its training steps need at a MEASURED throughput (``simclr-sweep NAME --dry-run``).

GPU-hours = images to process / images per second of one GPU, from a table keyed by (depth, width, SK, image size,
GPU kind) and filled only from the benchmark results in ``benchmarks/results/`` (``train_step_gpu.json``,
``train_step.json``, ``gpu_step.json``): a configuration nobody measured is "unknown", never extrapolated. An
"image" here is one view through one training step (forward, backward, update); pretraining takes two views of
every image. What it leaves out is said beside the figure: evaluation passes, data loading where the benchmark
fed random tensors (a model-step figure is a floor), the frozen backbone of linear evaluation (a training step
overstates it: a ceiling), the teacher's forward in distillation (counted as a training step: a ceiling), and
scaling losses across GPUs (perfect scaling assumed).

A stage whose estimated time per task exceeds what its time limit allows counting requeues
(``time_min`` x (1 + ``max_num_timeout``)) gets a warning, printed before anything is submitted.
Torch-free: it reads JSON files and shard manifests only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.config.cluster import REPO_ROOT, ClusterProfile
from jobs.sweep.manifest import Manifest, Task

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
# (depth, width, selective kernels, image size, GPU kind): the throughput table's key
Key = tuple[int, float, bool, int, str]
CPU = "cpu"  # the GPU kind of a profile without GPUs (a CPU measurement is keyed so)


@dataclass(frozen=True)
class Throughput:
    """Training-step views per second of one device, and where the figure comes from."""

    views_per_s: float
    source: str  # the results file and what it measured
    fed: bool  # True: data loading included; False: the model step alone (random tensors on the device)


def gpu_kind(device: str) -> str:
    """A device's name as the table keys it: ``"NVIDIA H200"`` -> ``"H200"``, ``"cpu"`` -> ``"cpu"``."""
    name = device.strip()
    if name.lower() in ("", CPU):
        return CPU
    return re.sub(r"^(NVIDIA|AMD)\s+", "", name, flags=re.IGNORECASE).strip().upper()


def _width(text: str) -> float | None:
    m = re.search(r"width\s+([0-9.]+)", text)
    return float(m[1]) if m else None


def measured(results_dir: Path = RESULTS_DIR) -> dict[Key, Throughput]:
    """The throughput table, from whichever benchmark results exist (a file that is missing or does not parse
    adds nothing)."""
    table: dict[Key, Throughput] = {}

    def load(name: str) -> dict[str, Any] | None:
        try:
            rec = json.loads((results_dir / name).read_text())
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) and not rec.get("quick") else None

    # benchmarks.train_step: a CIFAR-stem ResNet-18 SimCLR step on random tensors; "images/s" counts both views.
    for name in ("train_step_gpu.json", "train_step.json"):
        rec = load(name)
        width = _width(str(rec.get("model", ""))) if rec else None
        if rec is None or width is None or rec.get("unit") != "images/s" or not rec.get("value"):
            continue
        device = str(rec.get("device", ""))
        if device.startswith("cuda"):  # the record names the GPU in its machine description
            device = str(rec.get("machine", "")).rsplit(",", 1)[-1]
        key = (18, width, False, int(rec["image_size"]), gpu_kind(device))
        table[key] = Throughput(float(rec["value"]), f"{name} (model step, {rec.get('date', '?')[:10]})", fed=False)
    # benchmarks.gpu_step: a ResNet SimCLR step at 224 px fed by shards; its unit is pairs of views per second.
    rec = load("gpu_step.json")
    if rec is not None and rec.get("value"):
        m = re.match(r"resnet(\d+) width ([0-9.]+)", str(rec.get("model", "")))
        if m:
            key = (int(m[1]), float(m[2]), False, int(rec["image_size"]), gpu_kind(str(rec.get("device", ""))))
            table[key] = Throughput(2 * float(rec["value"]), f"gpu_step.json (fed, {rec.get('date', '?')[:10]})",
                                    fed=True)
    return table


# ---------------------------------------------------------------------------------------------------
# Images each task processes
# ---------------------------------------------------------------------------------------------------
@dataclass
class DataSizes:
    """Training samples per data root (from its manifest, else the sweep's ``estimate.train_samples``) and the
    keys of each label fraction (its key list, else samples x fraction)."""

    fallback: int | None = None
    _split: dict[tuple[str, str], tuple[int | None, str]] = field(default_factory=dict)

    def samples(self, root: str, split: str) -> tuple[int | None, str]:
        """(samples, where the number comes from)."""
        if (root, split) not in self._split:
            path = Path(root) / split / "manifest.json"
            try:
                n: int | None = int(json.loads(path.read_text())["num_samples"])
                how = "counted"
            except (OSError, ValueError, KeyError, TypeError):
                n, how = self.fallback, "estimate.train_samples" if self.fallback else "unknown"
            self._split[(root, split)] = (n, how)
        return self._split[(root, split)]

    def labelled(self, root: str, split: str, fraction: float) -> int | None:
        n, how = self.samples(root, split)
        if fraction >= 1.0 or n is None:
            return n
        keys = Path(root) / split / "fractions" / f"{_percent(fraction)}percent.txt"
        if how == "counted" and keys.is_file():
            return sum(1 for line in keys.read_text().splitlines() if line.strip())
        return int(n * fraction)


def _percent(fraction: float) -> str:
    p = fraction * 100
    return str(int(round(p))) if abs(p - round(p)) < 1e-9 else f"{p:g}"


def _steps(train: Mapping[str, Any], samples: int) -> int:
    """Optimizer steps: the loop's rule (epochs x whole batches per epoch, capped by train.max_steps)."""
    n = int(train["epochs"]) * (samples // int(train["batch_size"]))
    return min(n, int(train["max_steps"])) if int(train["max_steps"]) > 0 else n


def _key(config: Mapping[str, Any], kind: str) -> Key:
    m = config["model"]
    return (int(m["depth"]), float(m["width"]), float(m["sk_ratio"]) > 0, int(config["data"]["image_size"]), kind)


def _describe(key: Key) -> str:
    depth, width, sk, size, kind = key
    return f"R{depth} {width:g}x{' SK' if sk else ''} at {size} px on {kind}"


@dataclass
class TaskCost:
    """One task's training work: view-steps of its own model, and of a teacher's forward (distillation)."""

    views: int | None
    gpu_s: float | None  # None: unknown
    why_unknown: str = ""
    floor: bool = False  # a model-step figure: data loading not counted
    ceiling: bool = False  # linear eval's frozen backbone or a teacher's forward counted as a training step


def task_cost(task: Task, teacher: Mapping[str, Any] | None, kind: str, table: Mapping[Key, Throughput],
              sizes: DataSizes) -> TaskCost:
    c = task.config
    data, stage = c["data"], c["stage"]
    if stage in ("pretrain", "distill"):
        n, _ = sizes.samples(str(data["root"]), str(data["train_split"]))
    else:
        n = sizes.labelled(str(data["root"]), str(data["train_split"]), float(c["finetune"]["label_fraction"]))
    if n is None:
        return TaskCost(None, None, "training samples unknown (no data root to count; set estimate.train_samples)")
    images = _steps(c["train"], n) * int(c["train"]["batch_size"])
    views = images * (2 if stage == "pretrain" else 1)
    keys = [_key(c, kind)] + ([_key(teacher, kind)] if stage == "distill" and teacher is not None else [])
    missing = [k for k in keys if k not in table]
    if stage == "distill" and teacher is None:
        return TaskCost(views, None, "the teacher's architecture is unknown")
    if missing:
        return TaskCost(views, None, f"no throughput measured for {_describe(missing[0])}")
    seconds = sum(views / table[k].views_per_s for k in keys)
    return TaskCost(views, seconds, floor=any(not table[k].fed for k in keys),
                    ceiling=stage == "linear_eval" or stage == "distill")


# ---------------------------------------------------------------------------------------------------
# Per stage
# ---------------------------------------------------------------------------------------------------
@dataclass
class StageCost:
    stage: str
    tasks: int
    nodes: int
    gpus: int  # per node
    time_min: int
    attempts: int  # 1 + max_num_timeout
    kind: str
    costs: list[TaskCost]
    longest: str = ""  # the key of the task that needs the most time

    @property
    def devices(self) -> int:
        return self.nodes * max(self.gpus, 1)

    @property
    def allocation_h(self) -> float:
        """Device-hours of one attempt of every task at its full time limit."""
        return self.tasks * self.devices * self.time_min / 60

    @property
    def estimate_h(self) -> float | None:
        if not self.costs or any(c.gpu_s is None for c in self.costs):
            return None
        return sum(c.gpu_s or 0.0 for c in self.costs) / 3600

    def worst_wall_h(self) -> float | None:
        """The longest task's estimated wall time (its device-seconds shared by its devices)."""
        known = [c.gpu_s for c in self.costs if c.gpu_s is not None]
        return max(known) / self.devices / 3600 if known else None


def stage_costs(manifest: Manifest, profile_of: Callable[[str], ClusterProfile],
                table: Mapping[Key, Throughput] | None = None, sizes: DataSizes | None = None) -> list[StageCost]:
    """Every stage's cost; ``profile_of(stage)`` is the cluster profile of its array."""
    table = measured() if table is None else table
    sizes = sizes or DataSizes()
    by_key = manifest.by_key()
    out: list[StageCost] = []
    for stage in manifest.stages:
        tasks = [t for t in manifest.tasks if t.stage == stage]
        if not tasks:
            continue
        p = profile_of(stage)
        kind = CPU if p.gpus_per_node == 0 else (p.gpu_kind or "")
        costs: list[TaskCost] = []
        for t in tasks:
            teacher = by_key[t.parent].config if t.parent in by_key else None
            if kind == "":
                costs.append(TaskCost(None, None, "cluster profile key gpu_kind is not set"))
            else:
                costs.append(task_cost(t, teacher, gpu_kind(kind), table, sizes))
        worst = max(range(len(tasks)), key=lambda i: costs[i].gpu_s or -1.0)
        out.append(StageCost(stage, len(tasks), p.nodes, p.gpus_per_node, p.time_min, 1 + p.max_num_timeout,
                             kind or "?", costs, tasks[worst].key))
    return out


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:,.1f}" if h >= 1 else f"{h:,.2f}"


def report(costs: list[StageCost]) -> tuple[list[str], list[str]]:
    """(the table's lines, the warnings)."""
    lines = ["# cost before the queue: allocation = tasks x nodes x devices x time limit (one attempt; all "
             "attempts counts the requeues); estimate = training views / measured views/s of one device",
             f"#   {'stage':<12} {'tasks':>5}  {'nodes x GPUs':>12}  {'limit':>7}  {'attempts':>8}  "
             f"{'allocation h (1 / all attempts)':>31}  estimated device-h"]
    warnings: list[str] = []
    for s in costs:
        unit = "GPU" if s.gpus else "CPU node"
        alloc = f"{_hours(s.allocation_h)} / {_hours(s.allocation_h * s.attempts)}"
        est = s.estimate_h
        if est is None:
            why = next(c.why_unknown for c in s.costs if c.gpu_s is None)
            figure = f"unknown: {why}"
        else:
            notes = [n for n, on in (("model step only: a floor", any(c.floor for c in s.costs)),
                                     ("frozen backbone or teacher counted as training: a ceiling",
                                      any(c.ceiling for c in s.costs))) if on]
            figure = f"{_hours(est)} {unit}-h" + (f" ({'; '.join(notes)})" if notes else "")
        lines.append(f"#   {s.stage:<12} {s.tasks:>5}  {f'{s.nodes} x {s.gpus}':>12}  {s.time_min:>4} min  "
                     f"{s.attempts:>8}  {alloc:>31}  {figure}")
        wall = s.worst_wall_h()
        limit_h = s.time_min * s.attempts / 60
        if wall is not None and wall > limit_h:
            warnings.append(
                f"stage {s.stage}: {s.longest} needs about {_hours(wall)} h on its {s.devices} {unit}(s) at the "
                f"measured rate, more than its time limit allows counting requeues ({s.time_min} min x "
                f"{s.attempts} attempts = {_hours(limit_h)} h): raise time_min, max_num_timeout or nodes in the "
                f"stage's resources")
    return lines, warnings


def print_costs(manifest: Manifest, profile_of: Callable[[str], ClusterProfile], printer: Any,
                fallback_samples: int | None = None, table: Mapping[Key, Throughput] | None = None,
                *, with_table: bool = True) -> list[str]:
    """Print the table (``with_table``) and the warnings (``[sweep] warning: ...``); returns the warnings."""
    lines, warnings = report(stage_costs(manifest, profile_of, table, DataSizes(fallback_samples)))
    for line in lines if with_table else []:
        printer(line)
    for w in warnings:
        printer(f"[sweep] warning: {w}")
    return warnings
