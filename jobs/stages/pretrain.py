"""Stage 1: SimCLR contrastive pretraining (SimCLRv2 sec. 2; official run.py train_mode=pretrain).

NT-Xent over the global batch (negatives gathered from every rank), LARS with warm-up + cosine, global
(synchronised) BN under DDP, a stop-gradient linear probe trained online on the labelled samples, and a kNN
monitor on the evaluation split at epoch ends. With ``pretrain.memory_size`` > 0, SimCLRv2's memory
(``simclr.models.memory``): a moving average of backbone + head encodes view 2, its projections queued as
extra negatives; checkpointed as the ``memory`` entry. ``pretrain.memory_positive=memory`` (MoCo's positive) has it
encode both views, and each anchor's positive is its other view's projection from the memory network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jobs.stages import builders
from jobs.config.stage import StageConfig
from jobs.stages.parts import StageParts
from simclr import dist
from simclr.losses.ntxent import contrastive_accuracy, nt_xent
from simclr.models.memory import MomentumMemory, negative_similarities
from simclr.train.evaluate import EvalBatches, classify, embed, knn_evaluator, knn_top1
from simclr.train.loop import Batch


def build(cfg: StageConfig, device: torch.device) -> StageParts:
    train = builders.loader(cfg, split=cfg.data.train_split, mode="two_view")
    model: nn.Module = builders.simclr_model(cfg, train.num_classes if cfg.pretrain.probe else None)
    model = dist.convert_sync_bn(model)  # global BN (SimCLR sec. 2.4): statistics over all ranks
    n_steps = builders.steps(cfg, len(train))
    temperature = cfg.pretrain.temperature
    probe = cfg.pretrain.probe
    memory: MomentumMemory | None = None
    if cfg.pretrain.memory_size > 0:
        # A copy of the online backbone and head AFTER the global-BN conversion: it normalises as they do.
        memory = MomentumMemory(model.backbone, model.head, cfg.pretrain.memory_size,  # type: ignore[arg-type]
                                cfg.model.proj_out_dim, cfg.pretrain.memory_momentum, device=device,
                                channels_last=cfg.train.channels_last)

    memory_positive = cfg.pretrain.memory_positive == "memory"

    def step_fn(module: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = torch.cat([batch["view1"], batch["view2"]])
        out = module(x)
        z1, z2 = out["proj"].float().chunk(2)
        queue = memory.negatives() if memory is not None else None  # the queue as of the previous step
        keys: tuple[torch.Tensor, torch.Tensor] | None = None  # MoCo's positives
        queued: torch.Tensor | None = None  # view 2's memory projections, for the queue
        if memory is not None:
            # MoCo's order: the memory network moves towards the weights the last optimizer step left, then
            # encodes view 2 for the queue (enqueued at the next step, after this backward); with MoCo's positive
            # view 1 too, in one forward of both views (its BN sees the batch the online network's does)
            memory.update_weights()
            if memory_positive:
                k1, queued = memory.encode(x).chunk(2)
                keys = (k1, queued)
            else:
                queued = memory.encode(batch["view2"])
        loss, logits, labels = nt_xent(z1, z2, temperature, memory=queue, positives=keys)
        metrics = {
            "contrastive_loss": loss.detach(),
            "contrastive_acc": contrastive_accuracy(logits, labels).detach() * 100,
        }
        if memory is not None and queue is not None:
            batch_sim, queue_sim = negative_similarities(z1, logits.detach(), labels, temperature, queue)
            metrics.update(memory_fill=torch.tensor(memory.fill / memory.size), batch_neg_sim=batch_sim,
                           memory_neg_sim=queue_sim)
            if keys is not None:  # how close each view-1 anchor is to its positive from the memory network
                metrics["memory_pos_sim"] = (F.normalize(z1.detach(), dim=1) * keys[1]).sum(1).mean()
            assert queued is not None
            memory.push(queued)
        if probe:
            y = batch["label"].repeat(2)
            keep = (y >= 0).float()
            n = keep.sum()
            pl = out["probe_logits"].float()
            # A masked mean, added even when this rank's batch holds no label (then 0): under DDP every rank
            # must use the probe's parameters every step, or the gradient reduction fails on the next one.
            # The probe sees detached features: this adds to the loss without touching the encoder.
            ce = F.cross_entropy(pl, y.clamp(min=0), reduction="none")
            probe_loss = (ce * keep).sum() / n.clamp(min=1)
            loss = loss + probe_loss
            # NaN = not measured on this rank: the loop averages over the ranks that measured it.
            nan = torch.full_like(n, float("nan"))
            metrics["probe_loss"] = torch.where(n > 0, probe_loss.detach(), nan)
            hit = ((pl.argmax(1) == y).float() * keep).sum()
            metrics["probe_top1"] = torch.where(n > 0, hit / n.clamp(min=1) * 100, nan).detach()
        return loss, metrics

    cl = cfg.train.channels_last
    knn_train = builders.loader(cfg, split=cfg.data.train_split, mode="eval", distributed=False, batch_size=512)
    knn_test = builders.loader(cfg, split=cfg.data.eval_split, mode="eval", distributed=False, batch_size=512)
    knn_train_batches = EvalBatches(knn_train, max_samples=cfg.pretrain.knn_train_samples)
    knn_test_batches = EvalBatches(knn_test)

    def features(m: nn.Module):  # type: ignore[no-untyped-def]
        return lambda x: m.backbone(x)  # type: ignore[operator]

    evaluators = []
    every = cfg.pretrain.knn_every_epochs
    if every > 0:
        knn = knn_evaluator(features, knn_train_batches, knn_test_batches, device, k=cfg.pretrain.knn_k,
                            train_limit=cfg.pretrain.knn_train_samples, channels_last=cl)
        # Its own cadence, at the loop's evaluation epochs (train.eval_every_epochs): every N-th epoch.
        evaluators.append(lambda m, epoch: knn(m, epoch) if (epoch + 1) % every == 0 else {})

    def final_eval(m: nn.Module) -> dict[str, float]:
        tx, ty = embed(features(m), knn_train_batches(), device, channels_last=cl, limit=cfg.pretrain.knn_train_samples)
        vx, vy = embed(features(m), knn_test_batches(), device, channels_last=cl)
        res = {"knn_top1": knn_top1(tx, ty, vx, vy, k=cfg.pretrain.knn_k)}
        if probe:
            res["probe_top1"] = classify(lambda x: m(x)["probe_logits"], knn_test_batches(), device, channels_last=cl)["top1"]
        return res

    return StageParts(
        model=model,
        loader=train,
        optimizer=builders.optimizer(cfg, model),
        lr_at=builders.lr_schedule(cfg, n_steps, len(train)),
        step_fn=step_fn,
        evaluators=tuple(evaluators),
        final_eval=final_eval,
        state={} if memory is None else {"memory": memory},
    )
