"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (paper Sec. 2.1, Eq. 1).

Faithful to google-research/simclr `tf2/objective.py` ``add_contrastive_loss``:

* embeddings are L2-normalised (``hidden_norm=True``);
* each anchor of view 1 is classified against all view-2 embeddings (its positive among them) and
  all OTHER view-1 embeddings of the global batch; symmetrically for view 2;
* self-similarities are removed by subtracting ``LARGE_NUM`` (1e9), so their softmax weight is 0;
* negatives come from every rank (``simclr.dist.gather_with_grad``), positives are the local pairs;
* ``loss = mean over local anchors of (loss_a + loss_b)``, i.e. the SUM of both directions, not
  their average (other libraries, lightly included, report half of this value).

With several ranks, each rank's loss is over its local anchors; averaging the ranks' losses (what
DDP's gradient averaging does) gives exactly the single-process loss and gradient on the global
batch.

SimCLRv2's memory (paper sec. 2, ``simclr.models.memory``): ``memory`` [M, D] are extra negatives of
every anchor, beside its 2N-2 in-batch ones; the positive is unchanged. Per anchor i of view a:
``loss_a[i] = -s(i, i') + log(sum_{k != i} exp(s(i, k)) + sum_m exp(h_i . q_m / tau))`` over the 2N in-batch
columns and the M queue entries. Without memory (``None`` or M = 0) the code path is the one above.
With ``positives`` (MoCo's positive, ``pretrain.memory_positive=memory``) ``s(i, i')`` is the anchor against the
memory network's projection of its other view, and the online other view leaves the sum.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from simclr import dist

__all__ = ["nt_xent", "contrastive_accuracy", "LARGE_NUM"]

LARGE_NUM = 1e9
# Memory columns per block of the queue's log-sum-exp: a [2B, 4096] block stays in cache between its matmul and
# its exp (4096 was the fastest of 1k-64k for 2B = 512 on this machine's 2 cores).
MEMORY_CHUNK = 4096


# Unshifted exp() is safe while |logit| + ln M < _EXP_SAFE: each exp a normal float32 (e^+-80 within 1e-38..3e38)
# and a sum of M of them finite. The bound assumes unit queue rows, as nt_xent's ``memory`` contract states.
_EXP_SAFE = 80.0


@functools.cache
def _onednn_linear() -> Callable[[Tensor, Tensor], Tensor] | None:
    """``(x [R, K], w [C, K]) -> x @ w.T [R, C]`` by oneDNN's float32 inner product, or None where this torch has
    none that works. torch sends a float32 ``matmul`` on the CPU to MKL, which on the AMD CPUs measured here ran
    the queue's thin GEMMs ([512, 128] x [128, 4096] and [512, 4096] x [4096, 128]) at about half oneDNN's speed
    (BENCHMARKS.md, "train_step --memory"). Float32 throughout: not a reduced-precision mode."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return None

    def linear(x: Tensor, w: Tensor) -> Tensor:
        return op(x, w, None, "none", [None], "")  # type: ignore[no-any-return]

    try:  # a private op of torch's (its compiler's CPU fusions): checked once before it is trusted
        g = torch.Generator().manual_seed(0)  # not the global generator, whose state checkpoints carry
        x, w, v = (torch.randn(*shape, generator=g, dtype=torch.float32) for shape in ((3, 5), (4, 5), (3, 4)))
        ok = torch.allclose(linear(x, w), x @ w.t(), rtol=1e-5, atol=1e-5)
        ok = ok and torch.allclose(linear(v, w.t()), v @ w, rtol=1e-5, atol=1e-5)  # a transposed weight
    except (RuntimeError, TypeError):
        return None
    return linear if ok else None


def _mm_t(x: Tensor, w: Tensor) -> Tensor:
    """``x @ w.T`` for x [R, K], w [C, K] (``w`` may be a transposed view): oneDNN on the CPU in float32."""
    cpu32 = (x.device.type == "cpu" and x.dtype == w.dtype == torch.float32 and x.is_contiguous()
             and (w.is_contiguous() or w.t().is_contiguous()))  # the layouts the check tried
    linear = _onednn_linear() if cpu32 else None
    return x @ w.t() if linear is None else linear(x, w)


class _QueueLogSumExp(torch.autograd.Function):
    """``logsumexp(queries @ queue.T, dim=1)`` [R] for queries [R, D] and a queue [M, D] without gradient.

    Block by block of the queue: the block's matmul, exp in place, its row sum; the exp'd blocks are what
    backward multiplies by the queue (grad = softmax @ queue), so the [R, M] logits are never re-read for a
    max, exp'd twice or written again as a gradient (torch.logsumexp's forward and backward do all three).

    ``bound``: a bound on every |logit| known to the caller (1/tau for unit rows). Where ``bound + ln M`` is
    below ``_EXP_SAFE`` nothing can overflow or underflow, so the logits are exp'd as they are, with no max
    pass; otherwise each block is shifted by its own row max first.
    """

    @staticmethod
    def forward(ctx: Any, queries: Tensor, queue: Tensor, chunk: int, bound: float) -> Tensor:
        shifted = bound + math.log(queue.shape[0]) >= _EXP_SAFE
        exps, maxes, sums = [], [], []
        for block in torch.split(queue, chunk):
            e = _mm_t(queries, block)  # [R, C]
            if shifted:
                m = e.amax(dim=1, keepdim=True)
                e.sub_(m)
                maxes.append(m.squeeze(1))
            e.exp_()
            exps.append(e)
            sums.append(e.sum(dim=1))
        if shifted:
            mx = torch.stack(maxes)  # [blocks, R]
            top = mx.amax(dim=0)
            lse = top + (torch.stack(sums) * (mx - top).exp()).sum(dim=0).log()
        else:
            mx = torch.zeros(len(sums), queries.shape[0], dtype=queries.dtype, device=queries.device)
            lse = torch.stack(sums).sum(dim=0).log()
        ctx.save_for_backward(queue, lse, mx, *exps)
        ctx.chunk = chunk
        return lse

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        queue, lse, mx, *exps = ctx.saved_tensors
        # softmax over the whole row = block exp * exp(block shift - lse)
        scale = (mx - lse).exp() * grad  # [blocks, R]
        out = torch.zeros(scale.shape[1], queue.shape[1], dtype=queue.dtype, device=queue.device)
        for i, (e, block) in enumerate(zip(exps, torch.split(queue, ctx.chunk))):
            out.addcmul_(_mm_t(e, block.t()), scale[i].unsqueeze(1))  # e @ block
        return out, None, None, None


def nt_xent(
    z1: Tensor, z2: Tensor, temperature: float, memory: Tensor | None = None,
    positives: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """NT-Xent over the global batch, computed for this rank's anchors.

    Args:
        z1: projections of view 1, [B, D] (this rank's part of the batch).
        z2: projections of view 2, [B, D]; row i is the positive of ``z1[i]``.
        temperature: tau > 0 (official default 0.1; 0.5 for CIFAR).
        memory: optional [M, D] L2-normalised negatives, the same on every rank and without gradient (the
            memory network's queue); ``None`` or M = 0: plain NT-Xent, bit for bit.
        positives: optional ``(k1, k2)``, each [B, D] and without gradient: the memory network's projections of
            view 1 and view 2 of this rank's samples (MoCo's keys). Given, the positive of a view-1 anchor is
            ``k2[i]`` and of a view-2 anchor ``k1[i]``, in place of the other view's online projection, which
            leaves the softmax (an image is not its own negative): 2N - 2 in-batch negatives as before.

    Returns:
        loss: scalar, ``mean_i(loss_a[i] + loss_b[i])`` over this rank's B anchors (float32).
        logits: [B, W*B], view-1 vs all view-2 similarities / tau (official ``logits_ab``).
        labels: [B] int64, the column of each row's positive in ``logits`` (``rank*B + i``); with
            ``positives``, the column of its online other view, which the loss does not use.
        (``logits`` holds the in-batch columns only, with or without memory: the contrastive accuracy
        stays comparable across memory sizes.)

    Computed in float32 whatever the input dtype (safe under autocast).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be [B, D] with equal shapes, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}"
        )
    b = z1.shape[0]
    if b == 0:
        raise ValueError("z1 and z2 must hold at least one row")
    if memory is not None and (memory.dim() != 2 or memory.shape[1] != z1.shape[1]):
        raise ValueError(f"memory must be [M, {z1.shape[1]}], got {tuple(memory.shape)}")
    if positives is not None and (len(positives) != 2 or any(k.shape != z1.shape for k in positives)):
        raise ValueError(f"positives must be two [B, D] = {tuple(z1.shape)}, got {[tuple(k.shape) for k in positives]}")
    # float32 even under autocast: the -LARGE_NUM mask and the softmax need the range.
    with torch.autocast(device_type=z1.device.type, enabled=False):
        if (memory is not None and memory.shape[0] > 0) or positives is not None:
            queue = memory.detach().float() if memory is not None else z1.new_zeros(0, z1.shape[1])
            pos = None if positives is None else (positives[0].detach().float(), positives[1].detach().float())
            return _nt_xent_memory_fp32(z1.float(), z2.float(), float(temperature), queue, pos)
        return _nt_xent_fp32(z1.float(), z2.float(), float(temperature))


def _in_batch_logits(z1: Tensor, z2: Tensor, temperature: float) -> tuple[Tensor, Tensor, Tensor, int]:
    """Both views' anchors against the global batch: ``logits`` [2B, 2N] with each anchor's own column at
    -LARGE_NUM, ``queries`` [2B, D] (normalised, over tau), ``idx`` [B] the global index of each local anchor, N."""
    b, d = z1.shape
    h1 = F.normalize(z1, dim=1)
    h2 = F.normalize(z2, dim=1)
    local = torch.cat([h1, h2], dim=1)  # [B, 2D]: one row holds both views of a sample
    # One collective for both views; identity with one process.
    both = dist.gather_with_grad(local)  # [N, 2D], N = W*B, rank-major
    n = both.shape[0]
    # One matmul instead of the official four: rows [a; b] x columns [A | B] gives
    # [[aa, ab], [ba, bb]] of shape [2B, 2N]. Scaling the 2B query rows by 1/tau is cheaper than
    # scaling the product.
    queries = torch.cat([h1, h2], dim=0) / temperature  # [2B, D]
    keys = torch.cat([both[:, :d], both[:, d:]], dim=0)  # [2N, D]
    logits = queries @ keys.t()
    idx = torch.arange(b, device=z1.device) + dist.rank() * b  # global index of each local anchor
    rows = torch.arange(2 * b, device=z1.device)
    # Official: logits_aa - masks * LARGE_NUM. Writing -LARGE_NUM gives the same softmax (the self
    # term's exp() is exactly 0 either way) and a zero gradient for it.
    logits[rows, torch.cat([idx, idx + n])] = -LARGE_NUM
    return logits, queries, idx, n


def _nt_xent_fp32(z1: Tensor, z2: Tensor, temperature: float) -> tuple[Tensor, Tensor, Tensor]:
    b = z1.shape[0]
    logits, _, idx, n = _in_batch_logits(z1, z2, temperature)
    # CE over the 2B rows (columns are a permutation of the official [ab, aa] concat, which CE
    # does not see); sum / B == mean over anchors of (loss_a + loss_b).
    loss = F.cross_entropy(logits, torch.cat([idx + n, idx]), reduction="sum") / b
    return loss, logits[:b, n:], idx


def _nt_xent_memory_fp32(
    z1: Tensor, z2: Tensor, temperature: float, memory: Tensor, positives: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_nt_xent_fp32` with the M ``memory`` columns (M may be 0) in every row's softmax, and with
    ``positives`` the memory network's (:func:`nt_xent`)."""
    b = z1.shape[0]
    logits, queries, idx, n = _in_batch_logits(z1, z2, temperature)
    rows = torch.arange(2 * b, device=z1.device)
    # The in-batch and memory parts' log-sum-exps are combined, so the [2B, 2N + M] matrix that a concatenation
    # and cross_entropy would build (M = 65536: 2B x M floats) is never copied.
    # rows of queries have norm 1/tau and the queue's rows norm 1: every logit lies in [-1/tau, 1/tau]
    positive_cols = torch.cat([idx + n, idx])
    if positives is None:
        positive = logits[rows, positive_cols]
        lse = torch.logsumexp(logits, dim=1)
    else:
        # each anchor's positive is the memory network's projection of its other view; the online one is masked
        # out (the returned logits keep it, so the contrastive accuracy stays the online views')
        k1, k2 = F.normalize(positives[0], dim=1), F.normalize(positives[1], dim=1)
        positive = (queries * torch.cat([k2, k1], dim=0)).sum(dim=1)  # [2B]
        online = logits[:b, n:].clone()  # [B, N], before the online positives are masked
        logits[rows, positive_cols] = -LARGE_NUM
        lse = torch.logaddexp(torch.logsumexp(logits, dim=1), positive)
    if memory.shape[0] > 0:
        lse = torch.logaddexp(lse, _QueueLogSumExp.apply(queries, memory, MEMORY_CHUNK, 1.0 / temperature))
    loss = (lse - positive).sum() / b
    return loss, (logits[:b, n:] if positives is None else online), idx


def contrastive_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of anchors whose most similar view-2 embedding is their positive (official
    ``contrast_acc``). ``logits`` [B, N], ``labels`` [B] from :func:`nt_xent`."""
    return (logits.argmax(dim=1) == labels).float().mean()
