"""Evaluators the stages inject into the loop: classification accuracy and the kNN monitor.

Both run over a full (world size 1) evaluation loader on every rank, so every rank computes the same numbers
without a collective - simple and exact at the cost of duplicated work under DDP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Batch = dict[str, Any]


def _images(batch: Batch, device: torch.device, channels_last: bool) -> torch.Tensor:
    x: torch.Tensor = batch["image"].to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def classify(
    model: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterator[Batch],
    device: torch.device,
    *,
    channels_last: bool = True,
    reference: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy in percent of ``model(images) -> logits[B, K]`` over ``batches``; with a
    ``reference`` model (a distillation teacher) also ``agreement``: % of samples where both argmaxes agree.
    Padded slots (label -1) count for nothing."""
    correct1 = correct5 = total = agree = 0
    for batch in batches:
        x = _images(batch, device, channels_last)
        logits = model(x).float()
        y = batch["label"].to(device)
        keep = y >= 0
        logits, y = logits[keep], y[keep]
        if reference is not None:
            agree += int((reference(x).float()[keep].argmax(1) == logits.argmax(1)).sum())
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top == y[:, None]
        correct1 += int(hit[:, 0].sum())
        correct5 += int(hit.any(dim=1).sum())
        total += int(y.numel())
    if total == 0:
        raise ValueError("evaluation loader yielded no labelled sample")
    res = {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total}
    if reference is not None:
        res["agreement"] = 100.0 * agree / total
    return res


@torch.no_grad()
def embed(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterator[Batch],
    device: torch.device,
    *,
    channels_last: bool = True,
    limit: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised features ``[N, D]`` and labels ``[N]`` (first ``limit`` samples when > 0)."""
    feats: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    n = 0
    for batch in batches:
        f = encoder(_images(batch, device, channels_last)).float()
        y = batch["label"].to(device)
        keep = y >= 0  # padded slots of the last evaluation batch carry label -1
        f, y = f[keep], y[keep]
        feats.append(F.normalize(f, dim=1))
        labels.append(y)
        n += f.shape[0]
        if limit and n >= limit:
            break
    x, y = torch.cat(feats), torch.cat(labels)
    return (x[:limit], y[:limit]) if limit else (x, y)


@torch.no_grad()
def knn_top1(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> float:
    """Weighted kNN accuracy (percent) on normalised features, the monitor of Wu et al. (2018) used by
    SimCLR reimplementations: each of the k nearest train samples votes exp(cos / T) for its class."""
    c = int(num_classes or int(train_y.max()) + 1)
    k = min(k, train_x.shape[0])
    correct = 0
    for i in range(0, test_x.shape[0], chunk):
        sim = test_x[i : i + chunk] @ train_x.T  # [b, N]
        w, idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], c, device=sim.device)
        votes.scatter_add_(1, train_y[idx], (w / temperature).exp())
        correct += int((votes.argmax(1) == test_y[i : i + chunk]).sum())
    return 100.0 * correct / max(1, test_x.shape[0])


def knn_evaluator(
    encoder_of: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]],
    train_batches: Callable[[], Iterator[Batch]],
    test_batches: Callable[[], Iterator[Batch]],
    device: torch.device,
    *,
    k: int,
    train_limit: int,
    channels_last: bool = True,
    name: str = "knn_top1",
) -> Callable[[nn.Module, int], dict[str, float]]:
    """An epoch-end evaluator for the loop: kNN accuracy of ``encoder_of(model)`` features."""

    def run(model: nn.Module, epoch: int) -> dict[str, float]:
        enc = encoder_of(model)
        tx, ty = embed(enc, train_batches(), device, channels_last=channels_last, limit=train_limit)
        vx, vy = embed(enc, test_batches(), device, channels_last=channels_last)
        return {name: knn_top1(tx, ty, vx, vy, k=k)}

    return run


class EvalBatches:
    """Evaluation batches of a loader (epoch 0), decoded once and kept in memory when they are small.

    Evaluations repeat over the same fixed images (no augmentation), so decoding them every epoch is wasted
    work; a large split (over ``cache_bytes``) is streamed every time instead.
    """

    def __init__(self, loader: Any, cache_bytes: int = 512 << 20, max_samples: int = 0) -> None:
        """``max_samples`` > 0: only the batches up to that many labelled samples (a kNN memory bank of the
        first N images): a reader that stopped there left the generator unfinished, so nothing was cached
        and the bank was decoded again at every evaluation."""
        self.loader = loader
        self.cache_bytes = cache_bytes
        self.max_samples = max_samples
        self._cache: list[Batch] | None = None

    def __call__(self) -> Iterator[Batch]:
        if self._cache is not None:
            return iter(self._cache)
        return self._fill()

    def _fill(self) -> Iterator[Batch]:
        kept: list[Batch] | None = []
        size = n = 0
        for batch in self.loader.epoch_iter(0):
            # Kept BEFORE the batch is handed out: a reader may stop at any batch and never resume us.
            if kept is not None:
                size += int(batch["image"].numel() * batch["image"].element_size())
                if size > self.cache_bytes:
                    kept = None
                else:
                    kept.append({"image": batch["image"], "label": batch["label"]})
            last = False
            if self.max_samples:
                n += int((batch["label"] >= 0).sum())
                last = n >= self.max_samples
            if last and kept is not None:
                self._cache = kept
            yield batch
            if last:
                return
        if kept is not None:
            self._cache = kept
