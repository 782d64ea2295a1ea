"""Whole models: SimCLRModel outputs and probe isolation; Classifier necks and linear-eval freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simclr.models.heads import ProjectionHead
from simclr.models.simclr import Classifier, SimCLRModel, build_backbone, build_simclr_model

torch.set_num_threads(1)

MODEL = {"depth": 18, "width": 0.25, "sk_ratio": 0.0, "cifar_stem": True,
         "num_proj_layers": 3, "proj_out_dim": 16}  # fmt: skip


def test_simclr_model_outputs() -> None:
    torch.manual_seed(0)
    model = build_simclr_model(**MODEL, num_classes=10)
    out = model(torch.randn(6, 3, 16, 16))
    assert out["features"].shape == (6, 128)
    assert out["proj"].shape == (6, 16)
    assert out["probe_logits"] is not None and out["probe_logits"].shape == (6, 10)
    assert build_simclr_model(**MODEL)(torch.randn(4, 3, 16, 16))["probe_logits"] is None


def test_probe_gradient_does_not_reach_backbone_or_head() -> None:
    torch.manual_seed(0)
    model = build_simclr_model(**MODEL, num_classes=10, probe_selector=1)
    out = model(torch.randn(6, 3, 16, 16))
    nn.functional.cross_entropy(out["probe_logits"], torch.arange(6)).backward()
    assert model.probe is not None and model.probe.fc.weight.grad is not None
    assert model.probe.fc.in_features == 128  # hiddens[1] of a 128-wide head
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is None for p in model.head.parameters())


def test_contrastive_gradient_reaches_backbone_not_probe() -> None:
    torch.manual_seed(0)
    model = build_simclr_model(**MODEL, num_classes=10)
    model(torch.randn(6, 3, 16, 16))["proj"].pow(2).sum().backward()
    assert model.backbone.stem[0].weight.grad is not None
    assert model.probe is not None and model.probe.fc.weight.grad is None


@pytest.mark.parametrize(("selector", "in_dim"), [(0, 128), (1, 128), (2, 128), (-1, 16)])
def test_classifier_on_truncated_head(selector: int, in_dim: int) -> None:
    pre = build_simclr_model(**MODEL)
    clf = Classifier(pre.backbone, pre.head.truncated(selector), num_classes=5, zero_init_head=True)
    assert clf.fc.in_features == in_dim
    logits = clf(torch.randn(3, 3, 16, 16))
    assert logits.shape == (3, 5) and torch.all(logits == 0)  # zero_init_logits_layer


def test_classifier_identity_neck() -> None:
    backbone = build_backbone(18, 0.25, cifar_stem=True)
    for neck in (None, nn.Identity()):
        assert Classifier(backbone, neck, 7).fc.in_features == 128
    with pytest.raises(ValueError, match="out_dim"):
        Classifier(backbone, nn.Linear(128, 3), 7)


def test_linear_eval_freezes_backbone_and_its_bn_statistics() -> None:
    torch.manual_seed(0)
    backbone = build_backbone(18, 0.25, cifar_stem=True)
    clf = Classifier(backbone, None, 4, fine_tune_after_block=4)
    clf.train()
    assert not backbone.training and clf.fc.training
    bn = backbone.stem[1]
    before = bn.running_mean.clone()
    loss = nn.functional.cross_entropy(clf(torch.randn(4, 3, 16, 16) + 3), torch.arange(4))
    loss.backward()
    assert torch.equal(bn.running_mean, before)
    assert all(not p.requires_grad and p.grad is None for p in backbone.parameters())
    assert clf.fc.weight.grad is not None


@pytest.mark.parametrize("after_block", [-1, 0, 1, 2, 3, 4])
def test_fine_tune_after_block_trains_exactly_the_parts_after_it(after_block: int) -> None:
    """Official fine_tune_after_block: the stem and block groups 1..k get no gradient and keep their BN
    statistics; everything after them, the kept head layer and the classifier train."""
    torch.manual_seed(0)
    backbone = build_backbone(18, 0.25, cifar_stem=True)
    head = ProjectionHead(backbone.out_dim, 3)
    clf = Classifier(backbone, head.truncated(1), 4, fine_tune_after_block=after_block)
    clf.train()
    frozen = backbone.parts()[: after_block + 1]
    frozen_ids = {id(p) for part in frozen for p in part.parameters()}
    stats = {name: b.clone() for name, b in backbone.named_buffers() if "running" in name}
    loss = nn.functional.cross_entropy(clf(torch.randn(6, 3, 16, 16) * 2 + 1), torch.arange(6) % 4)
    loss.backward()
    for name, p in clf.named_parameters():
        assert (p.grad is None) == (id(p) in frozen_ids), name
    frozen_names = {f"{pname}.{n}" for pname, part in backbone.named_children() if any(part is f for f in frozen)
                    for n, _ in part.named_buffers()}
    for name, before in stats.items():
        changed = not torch.equal(dict(backbone.named_buffers())[name], before)
        assert changed == (name not in frozen_names), name
    assert all(not part.training for part in frozen) and clf.fc.training and clf.neck.training
    assert sum(p.grad is not None for p in clf.parameters()) > 0


def test_fine_tune_after_block_needs_a_resnet_for_block_groups() -> None:
    class Flat(nn.Linear):
        out_dim = 3

    Classifier(Flat(5, 3), None, 2, fine_tune_after_block=4)  # any backbone freezes whole
    with pytest.raises(ValueError, match="ResNet"):
        Classifier(Flat(5, 3), None, 2, fine_tune_after_block=2)
    with pytest.raises(ValueError, match="-1..4"):
        Classifier(build_backbone(18, 0.25, cifar_stem=True), None, 2, fine_tune_after_block=5)


def test_simclr_model_rejects_bad_probe_selector() -> None:
    backbone = build_backbone(18, 0.25, cifar_stem=True)
    with pytest.raises(ValueError, match="ft_proj_selector"):
        SimCLRModel(backbone, ProjectionHead(128, 2), num_classes=3, probe_selector=3)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_bf16_channels_last_matches_cpu_float32() -> None:
    torch.manual_seed(0)
    model = build_simclr_model(**MODEL, num_classes=10)
    x = torch.randn(16, 3, 32, 32)
    ref = model(x)["proj"]
    gpu = model.cuda().to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = gpu(x.cuda().contiguous(memory_format=torch.channels_last))["proj"]
    assert torch.allclose(out.float().cpu(), ref, atol=0.1, rtol=0.05)


@cuda
@pytest.mark.slow
def test_compiles_without_graph_breaks_and_matches_eager() -> None:
    from simclr.losses.ntxent import nt_xent

    torch.manual_seed(0)
    model = build_simclr_model(**MODEL, num_classes=10).cuda().to(memory_format=torch.channels_last)

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        z1, z2 = out["proj"].chunk(2)
        return nt_xent(z1, z2, 0.5)[0] + out["probe_logits"].logsumexp(1).mean()

    x = torch.randn(32, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    eager = loss_fn(x)
    eager.backward()
    g_eager = model.backbone.stem[0].weight.grad.clone()  # type: ignore[union-attr]
    model.zero_grad()
    compiled = torch.compile(loss_fn, fullgraph=True)(x)  # fullgraph: any graph break raises
    compiled.backward()
    assert torch.allclose(compiled, eager, rtol=1e-3, atol=1e-3)
    g = model.backbone.stem[0].weight.grad
    assert g is not None
    # different kernels (TF32 convolutions, fused reductions): agree to ~0.1% of the gradient's scale
    assert torch.allclose(g, g_eager, rtol=1e-2, atol=2e-3 * float(g_eager.abs().max()))
