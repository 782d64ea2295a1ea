"""SimCLRv2's memory: FIFO queue, EMA of the weights, checkpoint state, monitors (simclr.models.memory)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from simclr.models.heads import ProjectionHead
from simclr.models.memory import MomentumMemory, ema_update, negative_similarities
from simclr.models.simclr import build_simclr_model

torch.set_num_threads(1)


class _Backbone(nn.Module):
    """A backbone of one linear layer and a BN: parameters AND buffers, as a ResNet."""

    def __init__(self, d_in: int = 6, d: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d)
        self.bn = nn.BatchNorm1d(d)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn(self.fc(x))
        return out


def _memory(size: int, dim: int = 4, momentum: float = 0.9) -> MomentumMemory:
    torch.manual_seed(0)
    backbone = _Backbone()
    return MomentumMemory(backbone, ProjectionHead(backbone.out_dim, num_layers=2, out_dim=dim), size, dim, momentum)


def _keys(start: int, n: int, dim: int = 4) -> torch.Tensor:
    """Rows whose first column is their global index: where each row went is readable."""
    k = torch.zeros(n, dim)
    k[:, 0] = torch.arange(start, start + n, dtype=torch.float32)
    return k


def test_queue_is_fifo_over_the_last_k_with_a_size_not_a_multiple_of_the_batch() -> None:
    mem = _memory(size=10)
    assert mem.negatives().shape == (0, 4) and mem.fill == 0  # starts empty: no random negatives
    seen = 0
    for step in range(1, 6):  # batches of 4 into a queue of 10: the third push wraps mid-batch
        mem.push(_keys(seen, 4))
        seen += 4
        assert mem.fill == min(seen - 4, 10)  # pending until the next step (or a checkpoint)
        q = mem.negatives()
        assert mem.fill == min(seen, 10) and q.shape == (min(seen, 10), 4)
        # exactly the last min(seen, 10) rows, each at (its index) % 10
        assert sorted(q[:, 0].tolist()) == list(map(float, range(max(0, seen - 10), seen)))
        if seen >= 10:
            assert all(int(v) % 10 == i for i, v in enumerate(q[:, 0].tolist()))
        assert mem.ptr == seen % 10, step


def test_a_batch_larger_than_the_queue_keeps_its_last_rows() -> None:
    mem = _memory(size=3)
    mem.push(_keys(0, 2))
    mem.push(_keys(2, 7))  # 9 rows written from ptr 2 on: rows 6, 7, 8 survive, at positions 6%3, 7%3, 8%3
    q = mem.negatives()
    assert q[:, 0].tolist() == [6.0, 7.0, 8.0] and mem.ptr == 0 and mem.fill == 3


def test_the_queue_is_written_in_place() -> None:
    mem = _memory(size=8)
    storage = mem.queue.data_ptr()
    for i in range(5):
        mem.push(_keys(3 * i, 3))
        assert mem.negatives().data_ptr() == storage  # a view of the one queue, never a copy


def test_ema_update_is_mocos_formula_exactly() -> None:
    # Dyadic values and m = 0.75: k*m + q*(1-m) is exact in float32, so any other formula (a lerp, a
    # k + (1-m)(q-k)) or a missed parameter shows as a difference, not as rounding.
    k = [torch.tensor([1.0, -2.0, 0.5]), torch.tensor([[4.0, 8.0]])]
    q = [torch.tensor([3.0, 2.0, -0.5]), torch.tensor([[0.0, -8.0]])]
    ema_update(k, q, 0.75)
    assert torch.equal(k[0], torch.tensor([1.5, -1.0, 0.25])) and torch.equal(k[1], torch.tensor([[3.0, 4.0]]))
    assert torch.equal(q[0], torch.tensor([3.0, 2.0, -0.5]))  # the online side untouched


def test_memory_network_moves_by_ema_of_parameters_only() -> None:
    torch.manual_seed(0)
    model = build_simclr_model(depth=18, width=0.125, cifar_stem=True, num_proj_layers=2, proj_out_dim=8,
                               num_classes=3)
    mem = MomentumMemory(model.backbone, model.head, 4, 8, 0.9)
    assert not any(p.requires_grad for p in mem.network.parameters())
    start = copy.deepcopy(mem.network.state_dict())
    for p in model.backbone.parameters():  # a pretend optimizer step
        p.data.add_(1.0)
    with torch.no_grad():
        model.probe.fc.weight.add_(5.0)  # type: ignore[union-attr]  # the probe is not part of the memory
    online = {**{f"backbone.{k}": v for k, v in model.backbone.state_dict().items()},
              **{f"head.{k}": v for k, v in model.head.state_dict().items()}}
    mem.update_weights()
    params = {n for n, _ in mem.network.named_parameters()}
    after = mem.network.state_dict()
    assert after.keys() == start.keys() == online.keys()  # backbone + head, no probe
    for name in after:
        if name in params:
            assert torch.equal(after[name], start[name] * 0.9 + online[name] * (1 - 0.9)), name
        else:  # BN running statistics: the memory network's own (MoCo updates parameters only)
            assert torch.equal(after[name], start[name]), name
    assert any(not torch.equal(after[n], start[n]) for n in params)


def test_momentum_zero_copies_and_the_memory_forward_has_no_graph() -> None:
    torch.manual_seed(0)
    backbone = _Backbone()
    head = ProjectionHead(5, num_layers=2, out_dim=4)
    mem = MomentumMemory(backbone, head, 4, 4, 0.0)
    with torch.no_grad():
        for p in backbone.parameters():
            p.mul_(-3.0)
    mem.update_weights()
    for (n, a), b in zip(mem.network["backbone"].named_parameters(), backbone.parameters()):
        assert torch.equal(a, b), n
    x = torch.randn(6, 6, requires_grad=True)
    z = mem.encode(x)
    assert not z.requires_grad and z.grad_fn is None
    assert torch.allclose(z.norm(dim=1), torch.ones(6))


def test_state_round_trip_and_a_queue_of_another_size_is_named() -> None:
    mem = _memory(size=6)
    for i in range(3):
        mem.push(_keys(4 * i, 4))
    state = mem.state_dict()  # the pending rows are enqueued first
    assert state["fill"] == 6 and state["ptr"] == 0
    other = _memory(size=6)
    other.load_state_dict(copy.deepcopy(state))
    assert torch.equal(other.negatives(), mem.negatives()) and (other.ptr, other.fill) == (mem.ptr, mem.fill)
    for a, b in zip(other.network.state_dict().values(), mem.network.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="pretrain.memory_size"):
        _memory(size=7).load_state_dict(state)


def test_negative_similarity_monitors() -> None:
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # view 2: anchor 0's positive at cos 1, its negative at cos 0.5; anchor 1's positive cos 1, negative cos 0
    tau = 0.5
    h2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = torch.nn.functional.normalize(z1, dim=1) @ h2.t() / tau
    logits[0, 1] = 0.5 / tau
    labels = torch.tensor([0, 1])
    queue = torch.tensor([[0.6, 0.8], [-1.0, 0.0]])
    batch, mem = negative_similarities(z1, logits, labels, tau, queue)
    assert batch.item() == pytest.approx((0.5 + 0.0) / 2)
    assert mem.item() == pytest.approx(((0.6 - 1.0) + (0.8 + 0.0)) / 4)
    _, empty = negative_similarities(z1, logits, labels, tau, queue[:0])
    assert torch.isnan(empty)


# ---------------------------------------------------------------- 2 ranks == 1 process (loss, gradients, queue)


def _tiny_model() -> nn.Module:
    from simclr.models.simclr import SimCLRModel

    torch.manual_seed(0)
    backbone = _Backbone()
    return SimCLRModel(backbone, ProjectionHead(backbone.out_dim, num_layers=2, out_dim=4))


def _train(model: nn.Module, v1: torch.Tensor, v2: torch.Tensor, steps: int, world: int) -> dict[str, object]:
    """``steps`` SGD steps of NT-Xent with a memory of 20 (the third step of a global batch of 8 wraps it mid-batch);
    this rank's share of each global batch ``v1``/``v2`` [steps, 8, 6]. Returns losses, gradients, memory state."""
    from simclr import dist
    from simclr.losses.ntxent import nt_xent

    model = dist.convert_sync_bn(model)  # global BN under several ranks, as pretraining
    mem = MomentumMemory(model.backbone, model.head, 20, 4, 0.5)  # type: ignore[arg-type]
    b = v1.shape[1] // world
    r = dist.rank()
    losses, grads = [], []
    for t in range(steps):
        x1, x2 = v1[t, r * b:(r + 1) * b], v2[t, r * b:(r + 1) * b]
        z1, z2 = model(torch.cat([x1, x2]))["proj"].chunk(2)
        loss, _, _ = nt_xent(z1, z2, 0.3, memory=mem.negatives())
        mem.update_weights()
        mem.push(mem.encode(x2))
        model.zero_grad()
        loss.backward()
        g = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]
        if world > 1:
            for x in g:
                torch.distributed.all_reduce(x)
                x /= world  # DDP's averaging
        with torch.no_grad():
            for p, x in zip(model.parameters(), g):
                p.sub_(0.01 * x)
        losses.append(dist.all_reduce_mean(loss.detach()).item())
        grads.append(torch.cat([x.flatten() for x in g]))
    state = mem.state_dict()
    return {"losses": losses, "grads": torch.stack(grads), "queue": state["queue"].clone(), "ptr": state["ptr"],
            "fill": state["fill"]}


def _dist_worker(rank: int, port: int, out_dir: str, v1: torch.Tensor, v2: torch.Tensor) -> None:
    import os
    from pathlib import Path

    from simclr import dist

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    dist.init_distributed(backend="gloo", timeout_s=60)
    try:
        torch.save(_train(_tiny_model(), v1, v2, steps=5, world=2), Path(out_dir) / f"{rank}.pt")
    finally:
        dist.cleanup()


@pytest.mark.slow
def test_two_ranks_equal_one_process_losses_gradients_and_queue(tmp_path: object) -> None:
    import socket
    from pathlib import Path

    import torch.multiprocessing as mp

    torch.manual_seed(3)
    v1, v2 = torch.randn(5, 8, 6), torch.randn(5, 8, 6)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_dist_worker, args=(port, str(tmp_path), v1, v2), nprocs=2, join=True)
    one = _train(_tiny_model(), v1, v2, steps=5, world=1)
    assert one["fill"] == 20 and one["ptr"] == 0  # 5 steps x 8 rows into 20: wrapped twice
    for r in (0, 1):
        two = torch.load(Path(str(tmp_path)) / f"{r}.pt")
        assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
        # per step, relative to the gradient's size (BN over few rows makes some entries 100x others)
        err = (two["grads"] - one["grads"]).norm(dim=1) / one["grads"].norm(dim=1)  # type: ignore[attr-defined]
        assert err.max().item() < 1e-4, err  # float32 reordering, grown over 5 steps (step 1: 3e-7)
        # the same queue on every rank, rows in global-batch order (gathered in rank order)
        assert torch.allclose(two["queue"], one["queue"], atol=1e-5)  # type: ignore[arg-type]
        assert (two["ptr"], two["fill"]) == (one["ptr"], one["fill"])
    # the memory mattered: without it the same steps give other losses
    assert one["losses"][-1] != pytest.approx(_plain_losses(v1, v2)[-1], rel=1e-3)


def _plain_losses(v1: torch.Tensor, v2: torch.Tensor) -> list[float]:
    from simclr.losses.ntxent import nt_xent

    model = _tiny_model()
    out = []
    for t in range(v1.shape[0]):
        z1, z2 = model(torch.cat([v1[t], v2[t]]))["proj"].chunk(2)
        loss, _, _ = nt_xent(z1, z2, 0.3)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(0.01 * p.grad)  # type: ignore[operator]
        out.append(loss.item())
    return out
