"""The ONE training loop. Stages differ only in what they inject (docs/DESIGN.md principle 2).

A stage hands :func:`fit` a model, a loader, an optimizer, a learning-rate schedule, a step function that
turns a batch into a loss, and evaluators. The loop owns everything else: device placement, DDP wrapping,
autocast, logging to the run folder, atomic periodic checkpoints, exact resume, preemption at a step
boundary, and the final status record.

Exact resume: the data order and every augmentation are functions of (seed, epoch, sample key, view) (see
``simclr.data``), so a checkpoint only needs (epoch, batch_in_epoch) to continue the identical sample
sequence, plus the model, optimizer, RNG states and the metrics-file offset. On CPU, a run stopped at any
step and resumed ends bit-identical to an uninterrupted one (tests/simclr/train/test_loop.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from simclr import dist
from simclr.train import checkpoint as ckpt
from simclr.train import preempt
from simclr.runfolder.write import RunFolder

log = logging.getLogger(__name__)

Batch = dict[str, Any]
#: ``step_fn(module, batch) -> (loss, metrics)``; ``module`` is the (possibly DDP-wrapped) model.
StepFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, Mapping[str, torch.Tensor | float]]]
#: ``evaluator(model, epoch) -> metrics`` run on every rank at epoch ends; logged on split "val".
Evaluator = Callable[[nn.Module, int], Mapping[str, float]]
#: ``final_eval(model) -> metrics`` run once at the end; logged on split "test" and put in status.json.
FinalEval = Callable[[nn.Module], Mapping[str, float]]


class Stateful(Protocol):
    """State a stage keeps beside the model (e.g. ``simclr.models.memory.MomentumMemory``), checkpointed under its
    name: ``state_dict()`` at every save, ``load_state_dict(...)`` at resume."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# The checkpoint entries the loop itself writes; any other entry is a stage's state (``fit(state=...)``).
LOOP_KEYS = frozenset({"model", "optimizer", "step", "epoch", "batch_in_epoch", "rng", "config", "code_version",
                       "metrics_offset", "restarts", "wall_time_s"})


class EpochLoader(Protocol):
    """What the loop needs of a loader (``simclr.data.loading.loader.ShardLoader`` is one)."""

    def __len__(self) -> int: ...

    def epoch_iter(self, epoch: int, start_step: int = 0) -> Iterator[Batch]: ...


@dataclass
class LoopSettings:
    """How long and how often; see ``jobs.config.stage.TrainConfig`` for the user-facing defaults."""

    epochs: int
    max_steps: int = 0
    log_every: int = 10
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    eval_every_epochs: int = 1
    amp: str = "auto"
    channels_last: bool = True
    compile: bool = False


@dataclass
class TrainResult:
    status: dict[str, Any]
    final: dict[str, float] = field(default_factory=dict)


def total_steps(settings: LoopSettings, steps_per_epoch: int) -> int:
    n = settings.epochs * steps_per_epoch
    return min(n, settings.max_steps) if settings.max_steps > 0 else n


def _to_device(batch: Batch, device: torch.device, channels_last: bool) -> Batch:
    out: Batch = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA by default ('auto'); fp32 on CPU, where bf16 changes results (its speed there depends
    on the CPU: 1.2x faster for the tiny ResNet on this AVX512-BF16 EPYC; opt in with amp='bf16')."""
    use = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def fit(
    *,
    run: RunFolder,
    model: nn.Module,
    loader: EpochLoader,
    optimizer: torch.optim.Optimizer,
    lr_at: Callable[[int], float],
    step_fn: StepFn,
    settings: LoopSettings,
    config: dict[str, Any],
    device: torch.device,
    evaluators: tuple[Evaluator, ...] = (),
    final_eval: FinalEval | None = None,
    ddp: bool | None = None,
    state: Mapping[str, Stateful] | None = None,
) -> TrainResult:
    """Train ``model`` to the end (or to a preemption), resuming from ``run``'s latest checkpoint.

    ``state``: a stage's other state, by checkpoint entry name (e.g. ``{"memory": ...}``), saved with every
    checkpoint and restored at resume. A checkpoint must hold exactly these entries beside the loop's own:
    one without an entry this run needs, or with one it does not know, raises
    :class:`simclr.train.checkpoint.CheckpointMismatch` naming the entry (a checkpoint written under another
    config; no fallback to an older one, which would be of the same run).

    Raises :class:`simclr.train.preempt.PreemptionRequested` after saving a checkpoint when a preemption
    signal arrived on any rank. Writes ``status.json`` (done) last on success.
    """
    extra: Mapping[str, Stateful] = dict(state or {})
    clash = sorted(set(extra) & LOOP_KEYS)
    if clash:
        raise ValueError(f"stage state names {clash} are the loop's own checkpoint entries")
    start_wall = time.time()
    steps_per_epoch = len(loader)
    if steps_per_epoch <= 0:
        raise ValueError("loader yields no batch per epoch: batch_size larger than the data on this rank?")
    n_total = total_steps(settings, steps_per_epoch)
    n_params = sum(p.numel() for p in model.parameters())

    model.to(device)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)

    # ---- resume ---------------------------------------------------------------------------------
    step, epoch, batch_in_epoch, restarts, wall_before = 0, 0, 0, 0, 0.0
    # Loaded on the CPU: load_state_dict copies onto the model's device and the optimizer moves its state
    # to its parameters' devices, while RNG states must stay CPU byte tensors (on cuda:k they break resume).
    loaded = ckpt.load_latest(run.checkpoints, map_location="cpu")
    if loaded is not None:
        state, path = loaded
        ckpt.check_entries(state, path, needed=extra.keys(), known=LOOP_KEYS)
        model.load_state_dict(state["model"], strict=True)
        for name, obj in extra.items():
            obj.load_state_dict(state[name])
        optimizer.load_state_dict(state["optimizer"])
        ckpt.set_rng_state(state["rng"])
        step, epoch, batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        restarts = int(state.get("restarts", 0)) + 1
        wall_before = float(state.get("wall_time_s", 0.0))
        run.truncate_metrics(int(state["metrics_offset"]))
        log.info("resumed from %s (step %d, epoch %d, batch %d)", path, step, epoch, batch_in_epoch)
    else:
        # Training starts again at step 0: the lines of an attempt that died before its first checkpoint (or
        # whose checkpoints are all damaged) go, or every step up to it was logged twice.
        run.truncate_metrics(0)
    run.clear_status()

    use_ddp = dist.is_distributed() if ddp is None else ddp
    module: nn.Module = model
    if use_ddp:
        module = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if settings.compile:
        module = torch.compile(module)  # type: ignore[assignment]

    saved_step = step if loaded is not None else -1

    def save(at_step: int, at_epoch: int, at_batch: int) -> None:
        # Every rank must agree on the state; only rank 0 writes.
        nonlocal saved_step
        saved_step = at_step
        if dist.rank() == 0:
            ckpt.save_checkpoint(
                run.checkpoints,
                at_step,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": at_step,
                    "epoch": at_epoch,
                    "batch_in_epoch": at_batch,
                    "rng": ckpt.rng_state(),
                    "config": config,
                    "code_version": ckpt.code_version(),
                    "metrics_offset": run.metrics_offset(),
                    "restarts": restarts,
                    "wall_time_s": wall_before + time.time() - start_wall,
                    **{name: obj.state_dict() for name, obj in extra.items()},
                },
                keep=settings.keep_checkpoints,
            )
        dist.barrier()

    def progress() -> None:
        run.write_progress(step=step, total_steps=n_total, epoch=epoch, restarts=restarts)

    progress()
    amp_ctx = autocast_context(device, settings.amp)
    while step < n_total:
        module.train()
        t0 = time.time()
        n_seen = 0
        for batch in loader.epoch_iter(epoch, start_step=batch_in_epoch):
            batch = _to_device(batch, device, settings.channels_last)
            lr = lr_at(step)
            _set_lr(optimizer, lr)
            with amp_ctx:
                loss, metrics = step_fn(module, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            step += 1
            batch_in_epoch += 1
            n_seen += 1
            if step % settings.log_every == 0 or step == n_total:
                values = _global_mean({"loss": loss.detach(), **metrics}, device)
                values["lr"] = lr
                if not math.isfinite(values["loss"]):
                    raise FloatingPointError(f"loss is {values['loss']} at step {step}")
                values["images_per_s"] = n_seen * _batch_size(batch) * dist.world_size() / max(time.time() - t0, 1e-9)
                run.log(step=step, epoch=epoch, split="train", values=values)
                progress()
            stop = _any_rank(preempt.requested(), device)
            if stop or step % settings.checkpoint_every == 0:
                _check_finite(model, loss.detach(), device, step)
                save(step, epoch, batch_in_epoch)
            if stop:
                progress()
                raise preempt.PreemptionRequested(preempt.signum(), step)
            if step >= n_total:
                break
        else:
            # The epoch ran out: evaluate, then move on.
            evaluated = bool(settings.eval_every_epochs and (epoch + 1) % settings.eval_every_epochs == 0)
            if evaluated:
                _evaluate(run, model, evaluators, step, epoch)
            epoch += 1
            batch_in_epoch = 0
            # A signal that came during the evaluation (which may outlast the signal's lead time): stop now,
            # not after the next step.
            if evaluated and _any_rank(preempt.requested(), device):
                _check_finite(model, loss.detach(), device, step)
                save(step, epoch, 0)
                progress()
                raise preempt.PreemptionRequested(preempt.signum(), step)
            continue
        break

    # The last checkpoint is the trained model that downstream stages load. It is written BEFORE the final
    # evaluation, so that a job killed during that evaluation resumes here and only evaluates again.
    # Decided from state every rank shares (never from the folder, which rank 0 may be writing right now):
    # a rank that skipped this collective save would leave the others waiting in its barrier.
    if saved_step != step:
        save(step, epoch, batch_in_epoch)
    final: dict[str, float] = {}
    if final_eval is not None:
        model.eval()
        with preempt.interruptible(step, enabled=dist.rank() == 0):
            final = {k: float(v) for k, v in final_eval(model).items()}
        run.log(step=step, epoch=epoch, split="test", values=final)
    status = run.write_status(
        "done",
        step=step,
        total_steps=n_total,
        wall_time_s=wall_before + time.time() - start_wall,
        params=n_params,
        world_size=dist.world_size(),
        device=str(device),
        restarts=restarts,
        final={f"test/{k}": v for k, v in final.items()},
    )
    progress()
    return TrainResult(status=status, final=final)


def _batch_size(batch: Batch) -> int:
    for v in batch.values():
        if isinstance(v, torch.Tensor):
            return int(v.shape[0])
    return 0


def _global_mean(metrics: Mapping[str, torch.Tensor | float], device: torch.device) -> dict[str, float]:
    """Metrics of the GLOBAL batch: each rank computed them on its share, so average over ranks.

    Every rank must report the same names. For a metric other than the loss a NaN means "not measured on
    this rank's share" (e.g. no labelled sample for the online probe): it is averaged over the ranks that
    measured it, and one that no rank measured is left out. A NaN loss on any rank stays NaN (divergence).
    """
    names = list(metrics)
    v = torch.tensor([float(metrics[k]) for k in names], dtype=torch.float64, device=device)
    seen = (~v.isnan()).double()
    strict = torch.tensor([k == "loss" for k in names], device=device)
    t = torch.cat([torch.where(strict, v, torch.nan_to_num(v, nan=0.0)), torch.where(strict, 1.0, seen)])
    if dist.is_distributed():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    total, count = t[: len(names)], t[len(names):]
    return {k: s / c for k, s, c in zip(names, total.tolist(), count.tolist()) if c > 0}


def _any_rank(flag: bool, device: torch.device) -> bool:
    """A preemption signal may reach one rank only; all ranks must stop at the same step."""
    if not dist.is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


def _check_finite(model: nn.Module, loss: torch.Tensor, device: torch.device, step: int) -> None:
    """Refuse to checkpoint a model gone NaN/inf: the loss (checked on log steps only) and the weights the
    last update produced, on every rank (a collective under DDP: every rank saves at the same step). A saved
    NaN model would push good checkpoints out and be what every restart loads."""
    ok = torch.isfinite(loss).all()
    with torch.no_grad():
        for p in model.parameters():
            ok = ok & torch.isfinite(p).all()
    t = ok.to(device=device, dtype=torch.float32).reshape(1)
    if dist.is_distributed():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    if not t.item() > 0:
        raise FloatingPointError(f"loss or weights not finite at step {step}; not checkpointed (the last "
                                 "checkpoint stays the newest)")


def _evaluate(run: RunFolder, model: nn.Module, evaluators: tuple[Evaluator, ...], step: int, epoch: int) -> None:
    if not evaluators:
        return
    was_training = model.training
    model.eval()
    values: dict[str, float] = {}
    with torch.no_grad():
        for ev in evaluators:
            values.update({k: float(v) for k, v in ev(model, epoch).items()})
    run.log(step=step, epoch=epoch, split="val", values=values)
    model.train(was_training)
