"""Cluster profiles: where and how the stage tasks of a sweep run.

A profile (``jobs/conf/cluster/<name>.yaml``, merged onto :class:`ClusterProfile`) says which SLURM
partition/account/QoS, how long, how many nodes, tasks and GPUs per node, CPUs, memory, how many array
tasks at once, how often a task may time out and be requeued, shell setup lines and extra ``#SBATCH``
flags -- or ``executor: local`` for submitit's LocalExecutor where there is no SLURM at all.

Every value is checked by :func:`validate` before any ``sbatch``: the values end up in ``#SBATCH`` lines of
a shell script, so a partition called ``debug;rm -rf ~`` or a flag value holding a newline is refused, as
are impossible shapes (more tasks per node than GPUs per node when GPUs are requested, a time limit shorter
than the preemption signal's lead time). The error is a ``ValueError`` naming the profile key.

:func:`slurm_parameters` turns a profile into submitit's SLURM parameters (one place, used both to submit
and by ``--dry-run`` to print the sbatch script without a cluster); :func:`make_executor` builds the
submitit executor.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from jobs.config.compose import CONFIG_NAME, conf_path, group_options, hydra_errors
from jobs.config.structured import merge_onto, plain_dict

EXECUTORS = ("slurm", "local")
SIGTERM_ACTIONS = ("requeue", "stop")  # = jobs.sweep.entry.SIGTERM_ACTIONS (the task side reads them)
# The task process's module on the compute node instead of submitit.core._submit: it installs its signal
# handlers before anything heavy is imported (jobs/sweep/entry.py). A name, not an import: config imports no sweep.
TASK_ENTRY = "jobs.sweep.entry"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent

# Names SLURM accepts for partitions/accounts/QoS; commas separate alternatives (``-p a,b``).
_SLURM_NAME = re.compile(r"^[A-Za-z0-9_.+-]+(,[A-Za-z0-9_.+-]+)*$")
# An extra sbatch flag: ``--<key>=<value>``; keys are long option names.
_FLAG_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
# Flag values: no shell/sbatch metacharacters, no whitespace. Covers gres=gpu:a100:4, constraint=a100&ib
# is refused on purpose (use the '|'-free list form, or a setup line): keeping the set closed is the point.
_FLAG_VALUE = re.compile(r"^[A-Za-z0-9_.,:=@%+/\[\]-]*$")
# Flags the job layer sets itself; a profile overriding them would break arrays, logs or dependencies.
_RESERVED_FLAGS = frozenset(
    {"array", "dependency", "output", "error", "open-mode", "signal", "job-name", "hold", "wrap", "parsable",
     "requeue", "no-requeue", "kill-on-invalid-dep"}
)
# Flags that profile keys own: submitit appends the extra flags after its own, so an extra flag would silently
# replace the key's value (``sbatch: {time: 2-00:00:00}`` with ``time_min: 60``: SLURM's limit 2 days, the
# time-out accounting still 60 min; ``nodes: 4`` past the local executor's check).
_PROFILE_FLAGS = {
    "time": "time_min", "nodes": "nodes", "ntasks": "nodes and tasks_per_node",
    "ntasks-per-node": "tasks_per_node", "cpus-per-task": "cpus_per_task", "mem": "mem_gb",
    "mem-per-cpu": "mem_gb", "mem-per-gpu": "mem_gb", "partition": "partition", "account": "account",
    "qos": "qos", "gpus": "gpus_per_node", "gpus-per-node": "gpus_per_node", "gpus-per-task": "gpus_per_node",
}


@dataclass
class ClusterProfile:
    """Resources and placement of every task of a sweep (per-stage ``resources`` may override fields).

    ``time_min`` is the SLURM time limit of ONE task attempt; a task that reaches it is signalled
    ``signal_delay_s`` seconds earlier, checkpoints and requeues itself, at most ``max_num_timeout`` times.
    """

    executor: str = "slurm"  # slurm | local (submitit's LocalExecutor: no SLURM needed)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 60
    nodes: int = 1
    tasks_per_node: int = 1  # = GPUs per node for DDP on GPUs: one task (process) per GPU
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None  # None: do not ask (the cluster's default)
    array_parallelism: int = 64  # tasks of one stage array running at once (--array=0-N%P)
    max_num_timeout: int = 3  # requeues after hitting the time limit; preemptions do not count
    signal_delay_s: int = 60  # USR2 this long before the time limit (SLURM may send it up to 30 s early)
    setup: list[str] = field(default_factory=list)  # shell lines run before the task (module load ...)
    sbatch: dict[str, str] = field(default_factory=dict)  # extra #SBATCH --key=value flags
    python: str | None = None  # interpreter on the compute nodes; None = the submitting one
    # What a SIGTERM means to a task (preemption without preempt_send_user_signal, the time limit, scancel):
    # requeue = as the preemption signal (checkpoint at the next step, requeue); stop = end as a recorded failure.
    sigterm: str = "requeue"
    # The GPU model of the nodes (e.g. "H200", "A100"): the key of the measured throughput the dry run's cost
    # estimate uses (jobs/sweep/cost.py); None: the estimate says unknown. Informative only: no #SBATCH line.
    gpu_kind: str | None = None


def _require(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ValueError(f"cluster profile key '{key}': {msg}")


def validate(profile: ClusterProfile) -> ClusterProfile:
    """Reject values that would make a broken or dangerous sbatch script; returns ``profile`` when valid."""
    p = profile
    _require(p.executor in EXECUTORS, "executor", f"{p.executor!r} is not one of {EXECUTORS}")
    _require(p.sigterm in SIGTERM_ACTIONS, "sigterm", f"{p.sigterm!r} is not one of {SIGTERM_ACTIONS}")
    for key in ("partition", "account", "qos"):
        value = getattr(p, key)
        if value is not None:
            _require(
                isinstance(value, str) and bool(_SLURM_NAME.match(value)),
                key,
                f"{value!r} is not a SLURM name (letters, digits, '_.+-', comma-separated)",
            )
    if p.gpu_kind is not None:
        _require(bool(_SLURM_NAME.match(p.gpu_kind)) and "," not in p.gpu_kind, "gpu_kind",
                 f"{p.gpu_kind!r} is not a GPU model name such as H200")
    _require(p.time_min > 0, "time_min", f"must be > 0 minutes, got {p.time_min}")
    _require(p.nodes >= 1, "nodes", f"must be >= 1, got {p.nodes}")
    _require(p.tasks_per_node >= 1, "tasks_per_node", f"must be >= 1, got {p.tasks_per_node}")
    _require(p.gpus_per_node >= 0, "gpus_per_node", f"must be >= 0, got {p.gpus_per_node}")
    if p.gpus_per_node > 0:
        _require(
            p.tasks_per_node == p.gpus_per_node,
            "tasks_per_node",
            f"{p.tasks_per_node} tasks per node with gpus_per_node={p.gpus_per_node}: one task (DDP process) "
            "drives one GPU, so they must be equal (fewer tasks leave GPUs idle)",
        )
    _require(p.cpus_per_task >= 1, "cpus_per_task", f"must be >= 1, got {p.cpus_per_task}")
    if p.mem_gb is not None:
        _require(p.mem_gb > 0, "mem_gb", f"must be > 0 (or null), got {p.mem_gb}")
    _require(p.array_parallelism >= 1, "array_parallelism", f"must be >= 1, got {p.array_parallelism}")
    _require(p.max_num_timeout >= 0, "max_num_timeout", f"must be >= 0, got {p.max_num_timeout}")
    _require(p.signal_delay_s >= 0, "signal_delay_s", f"must be >= 0, got {p.signal_delay_s}")
    _require(
        p.signal_delay_s < p.time_min * 60,
        "signal_delay_s",
        f"{p.signal_delay_s} s is not shorter than time_min={p.time_min} min",
    )
    for i, line in enumerate(p.setup):
        _require(
            isinstance(line, str) and "\n" not in line and "\x00" not in line,
            f"setup[{i}]",
            "must be one shell line (no newline)",
        )
    for k, v in p.sbatch.items():
        _require(isinstance(k, str) and bool(_FLAG_KEY.match(k)), f"sbatch.{k}", "is not a long sbatch option name")
        _require(k not in _RESERVED_FLAGS, f"sbatch.{k}", "is set by the job layer itself")
        _require(k not in _PROFILE_FLAGS, f"sbatch.{k}", f"use the profile key {_PROFILE_FLAGS.get(k)} instead")
        _require(
            isinstance(v, (str, int, float, bool)) and bool(_FLAG_VALUE.match(str(v))),
            f"sbatch.{k}",
            f"value {v!r} holds whitespace or shell metacharacters",
        )
    if p.python is not None:
        _require("\n" not in p.python and p.python.strip() != "", "python", "must be one non-empty command")
    if p.executor == "local":
        _require(p.nodes == 1, "nodes", "the local executor runs on this one machine: nodes must be 1")
        # submitit would start that many copies of the one pipeline process, each running every task.
        _require(p.tasks_per_node == 1, "tasks_per_node",
                 "the local executor runs each task as one process: tasks_per_node must be 1")
    return profile


def profile_from_dict(data: dict[str, Any]) -> ClusterProfile:
    """Merge a (partial) dict onto the defaults; unknown keys or ill-typed values raise ValueError naming them."""
    return validate(merge_onto(ClusterProfile, data, label="cluster profile"))


def profile_to_dict(profile: ClusterProfile) -> dict[str, Any]:
    return dataclasses.asdict(profile)


def load_profile(name: str, overrides: dict[str, Any] | None = None) -> ClusterProfile:
    """``jobs/conf/cluster/<name>.yaml`` merged with ``overrides``, validated."""
    _require(bool(CONFIG_NAME.match(name)), "name", f"{name!r} is not a profile name")
    path = conf_path("cluster", f"{name}.yaml")
    if not path.is_file():
        raise ValueError(f"cluster profile '{name}': no file {path} (known: {group_options('cluster')})")
    with hydra_errors(ValueError, prefix=f"cluster profile {path}: "):  # a YAML or interpolation error
        fields = plain_dict(OmegaConf.load(path), label=f"cluster profile {path}")
    fields.pop("defaults", None)
    if overrides:
        fields = {**fields, **overrides}
    return profile_from_dict(fields)


def slurm_parameters(
    profile: ClusterProfile,
    *,
    job_name: str = "simclr",
    dependency: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """submitit ``SlurmExecutor.update_parameters`` keywords (SLURM-native names) for ``profile``.

    The repository root goes on ``PYTHONPATH`` in the setup lines: the pickled callables are imported by
    module path on the compute node (``jobs.sweep.launch.StageTask``), whatever folder ``sbatch`` ran from.
    """
    validate(profile)
    return _slurm_parameters(profile, job_name=job_name, dependency=dependency, extra=extra)


def _slurm_parameters(profile: ClusterProfile, *, job_name: str, dependency: str | None,
                      extra: dict[str, Any] | None) -> dict[str, Any]:
    """:func:`slurm_parameters` of a profile its caller validated."""
    additional: dict[str, Any] = {k: v for k, v in profile.sbatch.items()}
    if dependency:
        additional["dependency"] = dependency
        # A task whose upstream failed must END (not sit in the queue as DependencyNeverSatisfied
        # forever), so that the report job's afterany fires and `resume` sees it as not done.
        additional["kill-on-invalid-dep"] = "yes"
    additional.update(extra or {})
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": profile.time_min,
        "nodes": profile.nodes,
        "ntasks_per_node": profile.tasks_per_node,
        "cpus_per_task": profile.cpus_per_task,
        "signal_delay_s": profile.signal_delay_s,
        "array_parallelism": profile.array_parallelism,
        "setup": [f"export PYTHONPATH={REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}",
                  f"export SIMCLR_SIGTERM={profile.sigterm}", *profile.setup],
        "additional_parameters": additional,
    }
    if profile.gpus_per_node > 0:
        params["gpus_per_node"] = profile.gpus_per_node
    if profile.partition:
        params["partition"] = profile.partition
    if profile.account:
        params["account"] = profile.account
    if profile.qos:
        params["qos"] = profile.qos
    if profile.mem_gb is not None:
        mem = profile.mem_gb
        params["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
    return params


def task_command(python: str, folder: str | Path) -> str:
    """The task's command line in the sbatch script (after ``srun ...``): the early-signal entry point."""
    return " ".join([python, "-u -m", TASK_ENTRY, shlex.quote(str(folder))])


def make_executor(profile: ClusterProfile, folder: str | Path, *, job_name: str = "simclr",
                  dependency: str | None = None, extra: dict[str, Any] | None = None) -> Any:
    """A submitit executor for ``profile`` writing its pickles and logs under ``folder``.

    SLURM: a ``SlurmExecutor`` (what ``AutoExecutor(cluster="slurm")`` wraps) with ``max_num_timeout`` given
    to the constructor -- submitit ignores it in ``update_parameters``. Local: a ``LocalExecutor`` with the
    profile's time limit, tasks and setup. ``profile`` is validated here, once, before anything is written.
    """
    validate(profile)
    if profile.executor == "local":
        from submitit.local.local import LocalExecutor

        local = LocalExecutor(folder, max_num_timeout=profile.max_num_timeout, python=profile.python)
        local.update_parameters(
            timeout_min=profile.time_min,
            tasks_per_node=profile.tasks_per_node,
            gpus_per_node=profile.gpus_per_node,
            signal_delay_s=profile.signal_delay_s,
            setup=[f"export PYTHONPATH={REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}", *profile.setup],
        )
        return local
    from submitit.slurm.slurm import SlurmExecutor

    class _Executor(SlurmExecutor):
        """submitit's SLURM executor with the task started by :data:`TASK_ENTRY` (same arguments)."""

        @property
        def _submitit_command_str(self) -> str:
            return task_command(self.python, self.folder)

    ex = _Executor(folder, max_num_timeout=profile.max_num_timeout, python=profile.python)
    ex.update_parameters(**_slurm_parameters(profile, job_name=job_name, dependency=dependency, extra=extra))
    return ex
