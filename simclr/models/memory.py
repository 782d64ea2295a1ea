"""SimCLRv2's memory (paper sec. 2): a momentum network whose projections are queued as extra negatives.

The paper: SimCLRv2 "also incorporate[s] the memory mechanism from MoCo, which designates a memory network
(with a moving average of weights for stabilization) whose output will be buffered as negative examples".
The released code (google-research/simclr) does not have it; this follows MoCo v2 (facebookresearch/moco,
``moco/builder.py``) wherever the paper leaves a choice.

Which view goes through which network, and why:

* the ONLINE network (backbone f + projection head g, trained by the optimizer) encodes BOTH views, exactly
  as without memory: every anchor (view 1 and view 2 of each image), its positive (the other view, online)
  and the 2N-2 in-batch negatives are plain SimCLR (``simclr.losses.ntxent.nt_xent``). The paper keeps
  SimCLR's positives and adds the memory as negatives only.
* the MEMORY network (an exponential moving average of f and g, never trained, run without autograd)
  encodes VIEW 2 only, as MoCo's key encoder encodes ``im_k`` alone. Its projections are used for nothing
  in the step that makes them: they enter the queue and are negatives for the anchors of the LATER steps.
  One view suffices there (the two views of an image are samples of one distribution of crops); the second
  would double the memory forward and put two near-copies of each image in the queue, so that a queue of
  K entries would hold K/2 images and weigh each twice.

``pretrain.memory_positive=memory`` (MoCo's positive, not the paper's): the memory network encodes BOTH views
(one forward of the 2B images, so that its BN sees the batch the online network's does), each anchor's positive
is its other view's projection from the memory network, the online other view leaves that anchor's softmax, and
view 2's projections are queued. Either way the update and the encoding come before the loss; with the online
positive nothing of them enters that step's loss.

Measured (BENCHMARKS.md, "demo_quality --memory-size"): with the online positive and a queue 32x the in-batch
negatives, the anchors drifted away from the queue (``memory_neg_sim`` < 0) and learned less than without memory,
the more so the faster the memory network followed (m 0.999, 0.99, 0.9).

Order within a step ``t`` (MoCo's ``forward``): the loss uses the queue as it stood after step ``t-1``; the
memory network's weights move once towards the online weights reached after ``t-1`` optimizer steps
(``m * memory + (1 - m) * online``, parameters only, as MoCo: BN running statistics are the memory network's
own, from its own forward passes); it encodes view 2 of batch ``t``; those projections are enqueued. The
enqueue is deferred to the start of step ``t+1`` (or to a checkpoint, whichever comes first): the queue is
written in place, and the loss of step ``t`` holds it for its backward pass, which runs after the step
function returns. MoCo clones the queue every step instead; this never copies it.

Batch normalisation: the memory network is a copy of the online one, so it has the online network's BN
layers: global BN (``simclr.models.sync_bn``) when the online network has it. That keeps the queue of a
W-rank run equal to the queue of one process on the same global batch. MoCo's shuffled BN is not needed:
it stops a query and ITS OWN positive key from sharing per-device batch statistics (a shortcut to finding
the positive). With the online positive the memory network's outputs are never a positive and never a
negative of the batch that shaped their BN statistics; they are negatives of later batches only. The online
network's own shortcut (both views in one BN batch) is what global BN already closes, as in SimCLR without
memory; MoCo's positive (``memory_positive=memory``) shares its BN batch with its anchor exactly as SimCLR's
online positive does, and relies on global BN in the same way.

Distributed: each rank encodes its share of view 2 (of both views with MoCo's positive, whose keys stay on
their rank as its positives); the view-2 projections of all ranks are gathered in rank order and every rank
enqueues the same rows, so the queue is identical on every rank.

Shapes: ``queue`` [K, D] float32, rows L2-normalised; ``negatives()`` [min(fill, K), D].
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simclr import dist

__all__ = ["MomentumMemory", "ema_update", "negative_similarities"]


@torch.no_grad()
def ema_update(memory: list[Tensor], online: list[Tensor], momentum: float) -> None:
    """``memory[i] <- memory[i] * m + online[i] * (1 - m)`` in place, MoCo's formula and rounding
    (``param_k.mul_(m).add_(param_q.mul(1 - m))``); one fused call per operation over all tensors."""
    if len(memory) != len(online):
        raise ValueError(f"memory has {len(memory)} parameters, the online network {len(online)}")
    torch._foreach_mul_(memory, momentum)
    torch._foreach_add_(memory, torch._foreach_mul(online, 1.0 - momentum))


class MomentumMemory:
    """The memory network and its FIFO queue of the last ``size`` projections (module docstring).

    Args:
        backbone: the online backbone f (its parameters are read, never written).
        head: the online projection head g (``ProjectionHead``: returns ``(z, hiddens)``).
        size: K, the number of queued projections (``pretrain.memory_size``), >= 1.
        dim: D, the projection size (``model.proj_out_dim``).
        momentum: m, the EMA rate of the memory network's weights (``pretrain.memory_momentum``), in [0, 1).
        device: where the copy and the queue live (the online network's device).
        channels_last: put the copy in channels_last memory format, as the loop does the online network.

    The copy is made now: the memory network starts equal to the online network (MoCo's initialisation).
    Not an ``nn.Module`` of the trained model: its weights are no parameters of the optimizer, DDP does not
    broadcast its queue every step, and the pretrained checkpoint's ``model`` stays what later stages load.
    Its checkpoint state is :meth:`state_dict` (the loop saves it as the checkpoint's ``memory`` entry).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        size: int,
        dim: int,
        momentum: float,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError(f"pretrain.memory_size must be >= 1 for a memory, got {size}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"pretrain.memory_momentum must be in [0, 1), got {momentum}")
        self.size, self.dim, self.momentum = int(size), int(dim), float(momentum)
        self._online = nn.ModuleDict({"backbone": backbone, "head": head})
        self.network = copy.deepcopy(self._online).to(device)
        if channels_last:
            self.network.to(memory_format=torch.channels_last)
        for p in self.network.parameters():
            p.requires_grad_(False)
        self.network.train()  # always: batch statistics (global under DDP), as MoCo's key encoder
        self.queue = torch.zeros(self.size, self.dim, device=device)
        self.ptr = 0  # next row to write
        self.fill = 0  # rows holding a projection (the queue starts empty: no random negatives)
        self._pending: Tensor | None = None

    # ---- the step ------------------------------------------------------------------------------
    def negatives(self) -> Tensor:
        """The queued projections [min(fill, K), D] (a view, no copy), after enqueueing the pending ones."""
        self.flush()
        return self.queue if self.fill == self.size else self.queue[: self.fill]

    @torch.no_grad()
    def update_weights(self) -> None:
        """One EMA step of the memory network's parameters towards the online network's current ones."""
        mem: list[Tensor] = list(self.network.parameters())
        onl: list[Tensor] = [p.detach() for p in self._online.parameters()]
        ema_update(mem, onl, self.momentum)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Memory-network projections of this rank's images ``x`` [b, C, H, W] -> [b, D], float32, L2-normalised."""
        z, _ = self.network["head"](self.network["backbone"](x))
        return F.normalize(z.float(), dim=1)

    @torch.no_grad()
    def push(self, keys: Tensor) -> None:
        """Queue this rank's projections ``keys`` [b, D] (from :meth:`encode`): gathered from every rank in rank
        order -> [W*b, D], enqueued at the start of the next step (see the module docstring)."""
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be [b, {self.dim}], got {tuple(keys.shape)}")
        if self._pending is not None:
            self.flush()
        # no_grad: the gather's forward only (identity with one process)
        self._pending = dist.gather_with_grad(keys.detach().float())

    @torch.no_grad()
    def flush(self) -> None:
        """Enqueue the pending projections in place: FIFO over the last K, any batch size (K need not be a
        multiple of it; a batch larger than K keeps its last K rows)."""
        keys, self._pending = self._pending, None
        if keys is None:
            return
        n = keys.shape[0]
        take = min(n, self.size)
        # row j of the whole batch goes to (ptr + j) % K; of a batch larger than K only its last K rows survive
        rows = (self.ptr + torch.arange(n - take, n, device=self.queue.device)) % self.size
        self.queue.index_copy_(0, rows, keys[n - take :].to(self.queue.dtype))
        self.ptr = (self.ptr + n) % self.size
        self.fill = min(self.fill + n, self.size)

    # ---- checkpoint ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Memory network weights and buffers, queue [K, D], pointer and fill: all a resume needs to continue
        bit-identically (pending projections are enqueued first, as the next step would)."""
        self.flush()
        return {"network": self.network.state_dict(), "queue": self.queue, "ptr": self.ptr, "fill": self.fill,
                "size": self.size, "momentum": self.momentum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a queue of another size is refused naming ``pretrain.memory_size``."""
        queue = state["queue"]
        if tuple(queue.shape) != (self.size, self.dim):
            raise ValueError(f"checkpoint memory queue is {tuple(queue.shape)}, this run's is {(self.size, self.dim)} "
                             "(pretrain.memory_size, model.proj_out_dim)")
        self.network.load_state_dict(state["network"], strict=True)
        self.queue.copy_(queue)
        self.ptr, self.fill = int(state["ptr"]), int(state["fill"])
        self._pending = None


@torch.no_grad()
def negative_similarities(z1: Tensor, logits: Tensor, labels: Tensor, temperature: float,
                          queue: Tensor) -> tuple[Tensor, Tensor]:
    """Monitors of a stale queue: the mean cosine similarity of this rank's view-1 anchors to their in-batch
    view-2 negatives, and to the queue's entries (NaN when the queue is empty). A queue whose similarity drifts
    away from the in-batch one holds projections the online network no longer resembles.

    Args:
        z1: view-1 projections [B, D] (online, before normalisation).
        logits: [B, N] view 1 vs all view 2 over tau, ``labels`` [B] the positives (both from ``nt_xent``).
        temperature: tau of ``logits``.
        queue: [M, D] normalised entries (``MomentumMemory.negatives()``).
    Returns: two scalars (float32): in-batch, queue.
    """
    b, n = logits.shape
    pos = logits.gather(1, labels.view(-1, 1)).sum()
    # every view-2 column but the positive: N - 1 negatives per anchor
    batch = (logits.sum() - pos) * temperature / (b * max(n - 1, 1))
    if queue.shape[0] == 0:
        return batch, torch.full_like(batch, float("nan"))
    h1 = F.normalize(z1.detach().float(), dim=1)
    # mean over entries of h . q == h . mean(q): one matrix-vector product, not [B, M]
    return batch, (h1 @ queue.mean(0)).mean()
