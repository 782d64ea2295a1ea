"""NT-Xent: the official formulation (slow reference), closed forms, and 2 ranks == 1 process."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from simclr import dist
from simclr.losses.ntxent import contrastive_accuracy, nt_xent

torch.set_num_threads(1)


def official_reference(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """A direct transcription of tf2/objective.py add_contrastive_loss (one replica), row by row."""
    h1, h2 = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    b = h1.shape[0]
    masks = torch.eye(b, dtype=torch.float64)
    logits_aa = h1 @ h1.t() / tau - masks * 1e9
    logits_bb = h2 @ h2.t() / tau - masks * 1e9
    logits_ab = h1 @ h2.t() / tau
    logits_ba = h2 @ h1.t() / tau
    total = torch.zeros((), dtype=torch.float64)
    for i in range(b):  # softmax_cross_entropy_with_logits with one-hot label i over [ab, aa]
        row_a = torch.cat([logits_ab[i], logits_aa[i]])
        row_b = torch.cat([logits_ba[i], logits_bb[i]])
        total = total + (torch.logsumexp(row_a, 0) - row_a[i]) + (torch.logsumexp(row_b, 0) - row_b[i])
    return total / b


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_matches_official_formulation_with_gradients(tau: float) -> None:
    torch.manual_seed(0)
    z1 = torch.randn(12, 7, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(12, 7, dtype=torch.float64, requires_grad=True)
    loss, logits, labels = nt_xent(z1 * 3.0, z2, tau)
    ref = official_reference(z1 * 3.0, z2, tau)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    g = torch.autograd.grad(loss, (z1, z2))
    g_ref = torch.autograd.grad(ref, (z1, z2))
    for a, b in zip(g, g_ref):
        assert torch.allclose(a.double(), b, atol=1e-5)
    assert logits.shape == (12, 12) and torch.equal(labels, torch.arange(12))
    expected_ab = F.normalize(z1.detach() * 3, dim=1) @ F.normalize(z2.detach(), dim=1).t() / tau
    assert torch.allclose(logits.double(), expected_ab, atol=1e-5)


def test_identical_orthonormal_views_closed_form() -> None:
    b, tau = 8, 0.2
    z = torch.eye(b, 16)[:, torch.randperm(16)] * 5.0  # orthogonal, any norm
    loss, logits, labels = nt_xent(z, z.clone(), tau)
    # each anchor: positive sim 1/tau, 2b-2 negatives at 0 (self masked out)
    per_direction = -1 / tau + math.log(math.exp(1 / tau) + 2 * b - 2)
    assert loss.item() == pytest.approx(2 * per_direction, rel=1e-6)
    assert contrastive_accuracy(logits, labels).item() == 1.0


def test_all_orthogonal_embeddings_give_log_2b_minus_1() -> None:
    b = 5
    basis = torch.eye(2 * b)
    loss, _, _ = nt_xent(basis[:b], basis[b:], 0.1)  # every pair, positives included, orthogonal
    assert loss.item() == pytest.approx(2 * math.log(2 * b - 1), rel=1e-6)


def test_collapsed_embeddings_give_log_2b_minus_1() -> None:
    b = 6
    z = torch.ones(b, 4)
    loss, _, _ = nt_xent(z, z, 0.5)  # all similarities equal: uniform over the 2b-1 candidates
    assert loss.item() == pytest.approx(2 * math.log(2 * b - 1), rel=1e-6)


def test_float32_under_autocast() -> None:
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    ref, _, _ = nt_xent(z1, z2, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logits, _ = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.1)
    assert loss.dtype == torch.float32 and logits.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=2e-2)


# ---------------------------------------------------------------- with SimCLRv2's memory (extra negatives)


def reference_with_memory(z1: torch.Tensor, z2: torch.Tensor, tau: float, queue: torch.Tensor,
                          keys: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The official formulation above with the queue's M columns in each row's softmax (float64, row by row);
    with ``keys`` (k1, k2), a view-a anchor's positive is the other view's key instead of its online projection."""
    h1, h2 = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    q = queue.double()
    b = h1.shape[0]
    masks = torch.eye(b, dtype=torch.float64)
    aa, bb = h1 @ h1.t() / tau - masks * 1e9, h2 @ h2.t() / tau - masks * 1e9
    ab, ba = h1 @ h2.t() / tau, h2 @ h1.t() / tau
    if keys is not None:  # the key's similarity where the online positive was
        k1, k2 = (F.normalize(k.double(), dim=1) for k in keys)
        ab = ab - torch.diag(torch.diagonal(ab)) + torch.diag((h1 * k2).sum(1) / tau)
        ba = ba - torch.diag(torch.diagonal(ba)) + torch.diag((h2 * k1).sum(1) / tau)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(b):
        row_a = torch.cat([ab[i], aa[i], h1[i] @ q.t() / tau])
        row_b = torch.cat([ba[i], bb[i], h2[i] @ q.t() / tau])
        total = total + (torch.logsumexp(row_a, 0) - row_a[i]) + (torch.logsumexp(row_b, 0) - row_b[i])
    return total / b


def test_memory_negatives_closed_form() -> None:
    """Identical orthonormal views, M queue entries orthogonal to every anchor: each anchor's positive at 1/tau,
    its 2b-2 in-batch and M memory negatives at 0."""
    b, m, tau = 4, 5, 0.25
    basis = torch.eye(b + m) * 3.0
    z = basis[:b]
    loss, _, _ = nt_xent(z, z.clone(), tau, memory=basis[b:] / 3.0)
    per_direction = -1 / tau + math.log(math.exp(1 / tau) + 2 * b - 2 + m)
    assert loss.item() == pytest.approx(2 * per_direction, rel=1e-6)


def test_memory_entries_equal_to_the_anchors_closed_form() -> None:
    """Collapsed projections, M queue entries equal to them: every one of the 2b-1+M candidates at 1/tau."""
    b, m = 3, 7
    z = torch.ones(b, 4)
    loss, _, _ = nt_xent(z, z, 0.5, memory=F.normalize(torch.ones(m, 4), dim=1))
    assert loss.item() == pytest.approx(2 * math.log(2 * b - 1 + m), rel=1e-6)


def test_memory_matches_the_reference_with_gradients() -> None:
    torch.manual_seed(1)
    z1 = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    queue = F.normalize(torch.randn(9, 5), dim=1)
    loss, logits, labels = nt_xent(z1, z2, 0.3, memory=queue)
    ref = reference_with_memory(z1, z2, 0.3, queue)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, r in zip(torch.autograd.grad(loss, (z1, z2)), torch.autograd.grad(ref, (z1, z2))):
        assert torch.allclose(a.double(), r, atol=1e-5)
    plain, plain_logits, _ = nt_xent(z1, z2, 0.3)
    assert loss.item() > plain.item()  # more negatives, same positive: a larger loss
    assert torch.equal(logits, plain_logits) and torch.equal(labels, torch.arange(6))  # in-batch logits as before


@pytest.mark.parametrize("chunk", [1, 4, 9, 100])
def test_memory_in_blocks_matches_the_reference(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """The queue's log-sum-exp block by block (blocks of one entry, uneven blocks, one block): the same loss and
    gradients, also at tau 0.05 where the blocks' maxima are far apart, and at tau 0.01, where exp() of a logit
    (up to 1/tau = 100) overflows float32 and each block must be shifted by its max."""
    import simclr.losses.ntxent as ntxent

    monkeypatch.setattr(ntxent, "MEMORY_CHUNK", chunk)
    torch.manual_seed(4)
    z1 = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    queue = F.normalize(torch.randn(11, 6), dim=1)
    queue[3] = F.normalize(z1.detach()[0].float(), dim=0)  # one entry very close to an anchor: a large block max
    for tau in (0.5, 0.05, 0.01):
        loss, _, _ = nt_xent(z1, z2, tau, memory=queue)
        assert torch.isfinite(loss)
        ref = reference_with_memory(z1, z2, tau, queue)
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
        for a, r in zip(torch.autograd.grad(loss, (z1, z2)), torch.autograd.grad(ref, (z1, z2))):
            assert torch.allclose(a.double(), r, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("m", [9, 0, None])
def test_memory_positives_match_the_reference_with_gradients(m: int | None) -> None:
    """MoCo's positive (pretrain.memory_positive=memory): the memory network's projection of the other view, no
    gradient through it; with a queue, an empty one and none."""
    torch.manual_seed(6)
    z1 = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    k1, k2 = torch.randn(6, 5), torch.randn(6, 5)
    queue = F.normalize(torch.randn(m or 0, 5), dim=1)
    loss, logits, labels = nt_xent(z1, z2, 0.3, memory=None if m is None else queue, positives=(k1, k2))
    ref = reference_with_memory(z1, z2, 0.3, queue, keys=(k1, k2))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, r in zip(torch.autograd.grad(loss, (z1, z2)), torch.autograd.grad(ref, (z1, z2))):
        assert torch.allclose(a.double(), r, atol=1e-5)
    _, plain_logits, _ = nt_xent(z1, z2, 0.3)
    assert torch.equal(logits, plain_logits) and torch.equal(labels, torch.arange(6))  # online views' accuracy


def test_memory_positives_equal_to_the_online_views_give_the_online_positive_loss() -> None:
    """Keys equal to the online projections: the same logits as SimCLR's positive, so the same loss; the
    gradient differs, as none flows into the keys."""
    torch.manual_seed(7)
    z1, z2 = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    queue = F.normalize(torch.randn(3, 4), dim=1)
    online, _, _ = nt_xent(z1, z2, 0.5, memory=queue)
    keyed, _, _ = nt_xent(z1, z2, 0.5, memory=queue, positives=(z1.detach(), z2.detach()))
    assert keyed.item() == pytest.approx(online.item(), rel=1e-6)
    g_online, g_keyed = torch.autograd.grad(online, z1), torch.autograd.grad(keyed, z1)
    assert not torch.allclose(g_online[0], g_keyed[0], atol=1e-4)


def test_memory_positives_of_another_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="positives"):
        nt_xent(torch.randn(2, 3), torch.randn(2, 3), 0.1, positives=(torch.randn(2, 3), torch.randn(3, 3)))
    with pytest.raises(ValueError, match="positives"):
        nt_xent(torch.randn(2, 3), torch.randn(2, 3), 0.1, positives=(torch.randn(2, 3),))  # type: ignore[arg-type]


def test_no_memory_and_an_empty_memory_are_plain_nt_xent_bit_for_bit() -> None:
    torch.manual_seed(2)
    z1, z2 = torch.randn(8, 6, requires_grad=True), torch.randn(8, 6, requires_grad=True)
    ref, ref_logits, _ = nt_xent(z1, z2, 0.2)
    g_ref = torch.autograd.grad(ref, (z1, z2))
    for memory in (None, torch.zeros(0, 6)):
        loss, logits, _ = nt_xent(z1, z2, 0.2, memory=memory)
        assert torch.equal(loss, ref) and torch.equal(logits, ref_logits)
        for a, b in zip(torch.autograd.grad(loss, (z1, z2)), g_ref):
            assert torch.equal(a, b)


def test_the_queue_gemms_run_on_onednn_here_and_equal_matmul() -> None:
    """The queue's two GEMMs go to oneDNN's float32 inner product on the CPU (MKL's ran them at half its speed on
    the AMD CPUs measured): this torch has it, and it gives matmul's values, weight plain or transposed; other
    dtypes and a non-contiguous input take matmul."""
    import simclr.losses.ntxent as ntxent

    assert ntxent._onednn_linear() is not None  # else the memory's step cost is back at MKL's (BENCHMARKS.md)
    torch.manual_seed(5)
    q, block, e = torch.randn(64, 16), torch.randn(300, 16), torch.randn(64, 300)
    assert torch.allclose(ntxent._mm_t(q, block), q @ block.t(), rtol=1e-5, atol=1e-5)  # forward: q @ block.T
    assert torch.allclose(ntxent._mm_t(e, block.t()), e @ block, rtol=1e-5, atol=1e-4)  # backward: e @ block
    q64, b64 = q.double(), block.double()
    assert torch.equal(ntxent._mm_t(q64, b64), q64 @ b64.t())
    assert torch.equal(ntxent._mm_t(e.t().contiguous().t(), block.t()), e.t().contiguous().t() @ block)


def test_the_onednn_check_leaves_the_global_random_state_alone() -> None:
    """The once-per-process check of the oneDNN op must not draw from torch's global generator: its state is saved
    in every checkpoint, and a resumed process runs the check again."""
    import simclr.losses.ntxent as ntxent

    ntxent._onednn_linear.cache_clear()
    before = torch.get_rng_state()
    assert ntxent._onednn_linear() is not None
    assert torch.equal(torch.get_rng_state(), before)


def test_the_queue_log_sum_exp_uses_the_onednn_gemms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both of the queue's GEMMs (forward and backward) go through _mm_t's oneDNN path, not matmul."""
    import simclr.losses.ntxent as ntxent

    real = ntxent._onednn_linear()
    assert real is not None
    calls: list[tuple[int, ...]] = []

    def counting(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(w.shape))
        return real(x, w)

    monkeypatch.setattr(ntxent, "_onednn_linear", lambda: counting)
    monkeypatch.setattr(ntxent, "MEMORY_CHUNK", 4)
    z1, z2 = torch.randn(3, 5, requires_grad=True), torch.randn(3, 5, requires_grad=True)
    loss, _, _ = nt_xent(z1, z2, 0.5, memory=F.normalize(torch.randn(10, 5), dim=1))
    loss.backward()
    assert calls == [(4, 5), (4, 5), (2, 5), (5, 4), (5, 4), (5, 2)]  # 3 blocks forward, 3 backward


def test_memory_of_another_width_is_refused() -> None:
    with pytest.raises(ValueError, match="memory"):
        nt_xent(torch.randn(2, 3), torch.randn(2, 3), 0.1, memory=torch.randn(4, 5))


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_invalid_temperature_names_it(tau: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.randn(2, 3), torch.randn(2, 3), tau)


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="z1 and z2"):
        nt_xent(torch.randn(2, 3), torch.randn(3, 3), 0.1)


# ---------------------------------------------------------------- 2 ranks == 1 process


def _worker(
    rank: int, port: int, out_dir: str, z1: torch.Tensor, z2: torch.Tensor, tau: float, device: str
) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    dist.init_distributed(backend="gloo", timeout_s=60)
    try:
        b = z1.shape[0] // 2
        # A tiny "network" whose parameters every rank shares, as under DDP.
        w = torch.nn.Parameter(torch.eye(z1.shape[1], device=device) + 0.1)
        mine1 = z1[rank * b : (rank + 1) * b].to(device) @ w
        mine2 = z2[rank * b : (rank + 1) * b].to(device) @ w
        loss, logits, labels = nt_xent(mine1, mine2, tau)
        loss.backward()
        assert w.grad is not None
        grad = w.grad.clone()
        torch.distributed.all_reduce(grad)
        grad /= 2  # DDP's gradient averaging
        torch.save({"loss": dist.all_reduce_mean(loss.detach()).cpu(), "grad": grad.cpu(),
                    "logits": logits.detach().cpu(), "labels": labels.cpu()},
                   Path(out_dir) / f"{rank}.pt")  # fmt: skip
    finally:
        dist.cleanup()


DEVICES = [
    "cpu",
    # gloo with CUDA tensors, both ranks on one GPU: the gather's autograd on device tensors
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_two_ranks_equal_one_process_on_the_global_batch(tmp_path: Path, device: str) -> None:
    torch.manual_seed(0)
    z1, z2, tau = torch.randn(8, 5), torch.randn(8, 5), 0.3
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path), z1, z2, tau, device), nprocs=2, join=True)

    w = torch.nn.Parameter(torch.eye(5) + 0.1)
    loss, logits, labels = nt_xent(z1 @ w, z2 @ w, tau)
    loss.backward()
    assert w.grad is not None
    for r in (0, 1):
        res = torch.load(tmp_path / f"{r}.pt")
        assert res["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
        assert torch.allclose(res["grad"], w.grad, atol=1e-5, rtol=1e-4)
        assert torch.allclose(res["logits"], logits[4 * r : 4 * r + 4], atol=1e-5)
        assert torch.equal(res["labels"], labels[4 * r : 4 * r + 4])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    torch.manual_seed(0)
    z1, z2 = torch.randn(64, 32), torch.randn(64, 32)
    ref, ref_logits, _ = nt_xent(z1, z2, 0.1)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, logits, labels = nt_xent(z1.cuda(), z2.cuda(), 0.1)
    assert loss.dtype == torch.float32 and labels.device.type == "cuda"
    assert loss.item() == pytest.approx(ref.item(), rel=1e-4)
    assert torch.allclose(logits.cpu(), ref_logits, atol=1e-3)
