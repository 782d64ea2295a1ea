"""Before anything is queued: the data every task to be submitted will read is there.

A sweep is submitted from a login node and runs overnight; a broken data root (a deleted or truncated shard, a
manifest that does not load, a missing label-fraction key list) must be refused here, with the message the task
would have failed with, not found on the nodes. One check per data root and split: the manifest loads and every
shard and index has its recorded size (a ``stat`` each; the sha256 check stays in the task, where reading the
shards is paid anyway), and each label fraction a task trains on has its key list.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from simclr.data.errors import DataError
from simclr.data.shards.fractions import fraction_keys_file
from simclr.data.shards.shardset import check_present

# Stages that read a label fraction's key list (distill only when it mixes true labels in).
_FRACTION_STAGES = ("finetune", "supervised", "linear_eval")


def _reads(config: dict[str, Any]) -> tuple[set[tuple[str, str, int]], set[tuple[str, float, str]]]:
    data, stage = config["data"], config["stage"]
    root, budget = str(data["root"]), int(data.get("bad_sample_budget", 0))
    splits = {(root, data["train_split"], budget), (root, data["eval_split"], budget)}
    fraction = float(config["finetune"]["label_fraction"])
    uses_keys = stage in _FRACTION_STAGES or (stage == "distill" and config["distill"]["label_weight"] > 0)
    fractions = {(root, fraction, data["train_split"])} if uses_keys else set()  # 100%: no list
    return splits, fractions


def check_data(configs: Iterable[dict[str, Any]]) -> None:
    """Raise :class:`DataError` naming the file when a data root the configs read is not usable."""
    splits: set[tuple[str, str, int]] = set()
    fractions: set[tuple[str, float, str]] = set()
    for config in configs:
        s, f = _reads(config)
        splits |= s
        fractions |= f
    for root, split, budget in sorted(splits):
        check_present(root, split, bad_sample_budget=budget)
    for root, fraction, split in sorted(fractions):
        try:
            fraction_keys_file(root, fraction, split)
        except FileNotFoundError as e:
            raise DataError(str(e)) from None
