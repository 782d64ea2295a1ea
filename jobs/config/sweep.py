"""The schema of a sweep definition (``jobs/conf/sweep/<name>.yaml``): every default in one place.

A sweep is a set of stages; each stage's points are the union of its ``grid`` blocks, each block a
Cartesian product of ``axes`` (Hydra override keys -> value lists) times ``seeds``. A downstream stage
(finetune / linear_eval after pretrain, distill after finetune) is crossed with its parent stage's points:
each of its points starts from one parent run, copies the parent's axes named in ``inherit`` (the
architecture, for a fine-tune), and may select which parents it uses with ``parent`` (e.g. the distill
teacher: ``{model: resnet18_w05, finetune.label_fraction: 0.01}``).

Example (``jobs/conf/sweep/tiny.yaml``)::

    name: tiny
    sweep_dir: /tmp/sweeps/tiny
    overrides: [train.max_steps=4]            # every point of every stage
    stages:
      pretrain:
        grid: [{axes: {model.width: [0.25, 0.5]}}]
      finetune:
        grid: [{axes: {finetune.label_fraction: [0.01, 0.1]}}]

Unknown keys anywhere are errors (OmegaConf structured merge), reported with their dotted path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobs.config.cluster import ClusterProfile

# The stage each stage starts from; stages without an entry start from scratch.
PARENT_STAGE: dict[str, str] = {"finetune": "pretrain", "linear_eval": "pretrain", "distill": "finetune"}
# Parent axes a child copies by default (prefix match on the axis key): a fine-tune or linear eval must
# have its pretrain run's architecture; a distilled student is reported at its teacher's label fraction.
DEFAULT_INHERIT: dict[str, list[str]] = {
    "finetune": ["model", "data"],
    "linear_eval": ["model", "data"],
    "distill": ["finetune.label_fraction", "data"],
}
# Submission order: parents before children.
STAGE_ORDER: tuple[str, ...] = ("pretrain", "supervised", "finetune", "linear_eval", "distill")


@dataclass
class GridBlock:
    """One Cartesian product of axis values and seeds.

    ``seeds: null`` means: one point per parent run with the parent's seed (root stages: seed 0). With an
    explicit list, each seed takes the parent run of the same seed when there is one, else the parent's
    lowest seed (e.g. three fine-tuning seeds at 1% labels from one pretraining run).
    """

    axes: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] | None = None
    parent: dict[str, Any] = field(default_factory=dict)  # keep only parent points with these axis values
    overrides: list[str] = field(default_factory=list)  # Hydra overrides for this block's points only


@dataclass
class StageSweep:
    """A stage of the sweep: its grid, its own overrides, and resources differing from the cluster profile."""

    enabled: bool = True
    grid: list[GridBlock] = field(default_factory=lambda: [GridBlock()])
    overrides: list[str] = field(default_factory=list)
    inherit: list[str] | None = None  # None = DEFAULT_INHERIT[stage]
    resources: dict[str, Any] = field(default_factory=dict)  # ClusterProfile fields for this stage's array


@dataclass
class ReportSweep:
    """The last job: ``analysis.report.main([sweep_dir])`` after every task ended (afterany)."""

    enabled: bool = True
    resources: dict[str, Any] = field(default_factory=lambda: {"time_min": 30, "nodes": 1, "tasks_per_node": 1,
                                                               "gpus_per_node": 0})


@dataclass
class EstimateSweep:
    """What the dry run's cost estimate (jobs/sweep/cost.py) assumes where the data root cannot tell it."""

    train_samples: int | None = None  # images of data.train_split, used when its manifest is not there to count


@dataclass
class SweepConfig:
    """A whole sweep definition. ``cluster`` is composed from the ``cluster/`` config group."""

    name: str = "sweep"
    sweep_dir: str = "???"
    cluster: ClusterProfile = field(default_factory=ClusterProfile)
    overrides: list[str] = field(default_factory=list)  # Hydra overrides for every point of every stage
    # The command line's stage-config overrides: every point of every stage, applied LAST (over the stages'
    # and blocks' own overrides: the user's last word). One that sets a grid axis is an error (it would
    # collapse or silently lose the axis), so is one of the per-point fields (seed, run_dir, parent, point).
    final_overrides: list[str] = field(default_factory=list)
    stages: dict[str, StageSweep] = field(default_factory=dict)
    report: ReportSweep = field(default_factory=ReportSweep)
    estimate: EstimateSweep = field(default_factory=EstimateSweep)
