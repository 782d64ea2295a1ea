"""Before anything is queued: the data every task to be submitted will read is there, and big enough.

A sweep is submitted from a login node and runs overnight; a broken data root (a deleted or truncated shard, a
manifest that does not load, a missing label-fraction key list) must be refused here, with the message the task
would have failed with, not found on the nodes. One check per data root and split: the manifest loads and every
shard and index has its recorded size (a ``stat`` each; the sha256 check stays in the task, where reading the
shards is paid anyway), and each label fraction a task trains on has its key list.

Then the sizes, from the manifests just loaded and the key lists' line counts (nothing is decoded), with the
rules of the loaders each stage builds (jobs/stages/*.py; see :func:`_size_problems`). A task that would stop
on its node for the size of its data (no training batch per epoch, an evaluation with no labelled sample, an
empty kNN memory bank, a batch the ranks cannot share) is refused with its stage, point and the key to change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simclr.data.errors import DataError
from simclr.data.shards.fractions import fraction_keys_file
from simclr.data.shards.manifest import Manifest
from simclr.data.shards.shardset import check_present

# Stages that read a label fraction's key list (distill only when it mixes true labels in).
_FRACTION_STAGES = ("finetune", "supervised", "linear_eval")
# Stages that train on the labelled samples only (jobs/stages/finetune.py build_classifier_stage:
# labelled_only=True, the fraction's key list when label_fraction < 1).
_LABELLED_STAGES = _FRACTION_STAGES
# Lines of a size error before "... and N more": a grid of hundreds of points fails as one short message.
_MAX_LINES = 20


class DataSizeError(DataError):
    """Tasks whose batch or evaluation does not fit the data they read; one line per (stage, point, problem).

    A :class:`DataError` (so a ``ValueError``): simclr-sweep, simclr-resume and the demo exit 2 with it."""


@dataclass(frozen=True)
class _Fraction:
    """A label fraction's key list as the training loader reads it: its path and its number of keys."""

    path: Path
    keys: int


def _reads(config: dict[str, Any]) -> tuple[set[tuple[str, str, int]], set[tuple[str, float, str]]]:
    data, stage = config["data"], config["stage"]
    root, budget = str(data["root"]), int(data.get("bad_sample_budget", 0))
    splits = {(root, data["train_split"], budget), (root, data["eval_split"], budget)}
    fraction = float(config["finetune"]["label_fraction"])
    uses_keys = stage in _FRACTION_STAGES or (stage == "distill" and config["distill"]["label_weight"] > 0)
    fractions = {(root, fraction, data["train_split"])} if uses_keys else set()  # 100%: no list
    return splits, fractions


def _count_keys(path: Path) -> int:
    """Keys of a key list, one a line (blank lines skipped, as read_keys does), read as bytes: no decoding or
    key check here (the task does that); an ImageNet 10% list is 128k lines, a few milliseconds."""
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def check_data(configs: Iterable[dict[str, Any]], ranks: Mapping[str, int] | None = None) -> None:
    """Raise :class:`DataError` naming the file when a data root the configs read is not usable, and
    :class:`DataSizeError` naming stage, point and key when a task's data is too small for its batch or its
    evaluations. ``ranks``: DDP processes of one task per stage (nodes x tasks per node of the stage's cluster
    profile); a stage not in it, as every task of a local run, has 1."""
    configs = list(configs)
    splits: set[tuple[str, str, int]] = set()
    fractions: set[tuple[str, float, str]] = set()
    for config in configs:
        s, f = _reads(config)
        splits |= s
        fractions |= f
    manifests: dict[tuple[str, str], Manifest] = {}
    for root, split, budget in sorted(splits):
        manifests[(root, split)] = check_present(root, split, bad_sample_budget=budget)
    keys: dict[tuple[str, float, str], _Fraction] = {}
    for root, fraction, split in sorted(fractions):
        try:
            path = fraction_keys_file(root, fraction, split)
        except FileNotFoundError as e:
            raise DataError(str(e)) from None
        if path is not None:
            keys[(root, fraction, split)] = _Fraction(path, _count_keys(path))
    # (stage, point, problem) -> run folder names: the seeds of one point share its lines.
    problems: dict[tuple[str, str, str], list[str]] = {}
    for config in configs:
        for problem in _size_problems(config, (ranks or {}).get(config["stage"], 1), manifests, keys):
            where = (config["stage"], str(config.get("point", "run")), problem)
            problems.setdefault(where, []).append(Path(str(config.get("run_dir", ""))).name)
    if problems:
        raise DataSizeError(_size_message(problems))


def _size_problems(config: dict[str, Any], ranks: int, manifests: Mapping[tuple[str, str], Manifest],
                   keys: Mapping[tuple[str, float, str], _Fraction]) -> list[str]:
    """What would stop this task on its node for the size of its data, as the stage's loaders decide it.

    - Training loader (train split; drop_last: ``N // train.batch_size`` batches an epoch, simclr/data/loading/
      order.py): pretrain (two_view) and distill (labelled mode) draw on every sample, labelled or not;
      finetune, supervised and linear_eval on the labelled ones only, and with ``finetune.label_fraction < 1``
      on the fraction's key list. ``train.batch_size`` is the GLOBAL batch, cut into ``ranks`` equal shares
      (jobs/stages/builders.py loader): it must divide by the ranks and be at most N -- not N / ranks.
    - Evaluation loaders (batch 512, one process, padded, not dropped: ceil(N / 512) >= 1 batch whenever the
      split has a sample) fail only through what reads them: classify (simclr/train/evaluate.py) raises on a
      split without a labelled sample -- every classifier stage's evaluation, and pretraining's probe.
    - Pretraining's kNN, run at the end whatever ``pretrain.knn_every_epochs`` says: its memory bank is the
      labelled train samples (the first ``pretrain.knn_train_samples``), and an empty one raises. k larger than
      the bank is not an error (knn_top1 takes min(k, bank)), nor is ``train.max_steps`` against the data
      (the loop runs min(epochs x batches, max_steps) >= 1 steps once an epoch has a batch).
    - Pretraining's memory (``pretrain.memory_size``, SimCLRv2 sec. 2): the queue holds the last K projections;
      K at least the samples of an epoch (the batches an epoch has, times the batch) holds every image, so that
      every anchor meets its own earlier projection as a negative. MoCo's 65,536 is 5% of ImageNet's 1.28M.
    """
    stage, data, train = config["stage"], config["data"], config["train"]
    root = str(data["root"])
    tm, em = manifests[(root, data["train_split"])], manifests[(root, data["eval_split"])]
    batch = int(train["batch_size"])
    out: list[str] = []
    if batch % ranks:
        out.append(f"train.batch_size={batch} (the global batch) is not divisible by the {ranks} ranks of the "
                   f"stage's cluster profile (nodes x tasks_per_node): each rank takes an equal share; set "
                   f"train.batch_size to a multiple of {ranks}, or change stages.{stage}.resources")
    fraction = float(config["finetune"]["label_fraction"])
    if stage in _LABELLED_STAGES:
        listed = keys.get((root, fraction, data["train_split"]))
        if listed is not None:
            n = listed.keys
            what = f"labelled samples of finetune.label_fraction={fraction:g} (key list {listed.path})"
        else:
            n = sum(tm.label_counts)
            what = f"labelled samples of split {data['train_split']!r} (finetune.label_fraction=1: all labels)"
        fix = f"lower train.batch_size to at most {n}, or raise finetune.label_fraction"
    else:
        n, what = tm.num_samples, f"samples of split {data['train_split']!r}"
        fix = f"lower train.batch_size to at most {n}"
    if batch > n:
        out.append(f"train.batch_size={batch} exceeds the {n} {what}: the training loader drops the ragged last "
                   f"batch, so an epoch has no batch; {fix}")
    memory = int(config.get("pretrain", {}).get("memory_size", 0)) if stage == "pretrain" else 0
    per_epoch = (n // batch) * batch if batch else 0
    if memory and per_epoch and memory >= per_epoch:
        out.append(f"pretrain.memory_size={memory} holds at least the {per_epoch} samples of an epoch (split "
                   f"{data['train_split']!r}, batch {batch}): every anchor would meet its own earlier projection as "
                   f"a negative; lower pretrain.memory_size below {per_epoch} (MoCo: 65,536 of ImageNet's 1.28M)")
    eval_labelled = sum(em.label_counts)
    probe = stage == "pretrain" and bool(config["pretrain"]["probe"])
    if eval_labelled == 0 and (stage != "pretrain" or probe):
        reads = "the online probe's test accuracy" if probe else "the test accuracy"
        fix = "set data.eval_split to a labelled split" + (" or pretrain.probe=false" if probe else "")
        out.append(f"split {data['eval_split']!r} (data.eval_split) has no labelled sample: {reads} has nothing "
                   f"to score; {fix}")
    if stage == "pretrain" and sum(tm.label_counts) == 0:
        out.append(f"split {data['train_split']!r} (data.train_split) has no labelled sample: the final kNN "
                   "evaluation's memory bank (pretrain.knn_train_samples) would be empty; pretrain on a split "
                   "with labels")
    return out


def _size_message(problems: Mapping[tuple[str, str, str], list[str]]) -> str:
    lines = []
    for (stage, point, problem), runs in problems.items():
        tasks = f"{len(runs)} tasks, e.g. run {runs[0]}" if len(runs) > 1 else f"run {runs[0]}"
        lines.append(f"  - {stage}, point {point!r} ({tasks}): {problem}")
    more = f"\n  ... and {len(lines) - _MAX_LINES} more" if len(lines) > _MAX_LINES else ""
    n = len({(stage, run) for (stage, _, _), runs in problems.items() for run in runs})
    return (f"{n} task(s) would stop on their nodes for the size of their data; nothing was queued:\n"
            + "\n".join(lines[:_MAX_LINES]) + more)
