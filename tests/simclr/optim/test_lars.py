"""LARS against hand-computed steps of the official update; parameter groups of the official set-up."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from simclr.models.simclr import Classifier, build_backbone, build_simclr_model
from simclr.optim.lars import LARS, param_groups_for_lars

torch.set_num_threads(1)


def _param(values: list[float], grad: list[float]) -> nn.Parameter:
    p = nn.Parameter(torch.tensor(values, dtype=torch.float64))
    p.grad = torch.tensor(grad, dtype=torch.float64)
    return p


def test_two_steps_by_hand() -> None:
    p = _param([3.0, 4.0], [0.3, 0.4])
    opt = LARS([p], lr=2.0, momentum=0.9, weight_decay=0.1, trust_coefficient=0.001)
    # step 1: g' = g + 0.1 w = [0.6, 0.8] (norm 1); ||w|| = 5; ratio = 0.001 * 5 / 1 = 0.005
    #         v = 2 * 0.005 * g' = [0.006, 0.008]; w = [2.994, 3.992]
    opt.step()
    assert p.tolist() == pytest.approx([2.994, 3.992], abs=1e-12)
    # step 2 (same raw gradient): g' = [0.3 + 0.2994, 0.4 + 0.3992] = [0.5994, 0.7992]
    g2 = [0.5994, 0.7992]
    ratio = 0.001 * math.hypot(2.994, 3.992) / math.hypot(*g2)
    v = [0.9 * 0.006 + 2 * ratio * g2[0], 0.9 * 0.008 + 2 * ratio * g2[1]]
    opt.step()
    assert p.tolist() == pytest.approx([2.994 - v[0], 3.992 - v[1]], abs=1e-12)
    assert p.grad.tolist() == [0.3, 0.4]  # the optimizer does not modify .grad


def test_excluded_group_is_momentum_sgd_with_lr_in_the_buffer() -> None:
    p = _param([3.0, 4.0], [0.5, -1.0])
    opt = LARS([{"params": [p], "weight_decay": 0.0, "exclude_from_adaptation": True}], lr=0.1)
    opt.step()
    assert p.tolist() == pytest.approx([3.0 - 0.05, 4.0 + 0.1], abs=1e-12)
    opt.step()  # v = 0.9 * v + lr * g
    assert p.tolist() == pytest.approx([3.0 - 0.05 - 0.095, 4.0 + 0.1 + 0.19], abs=1e-12)


def test_zero_weight_or_zero_gradient_gives_ratio_one() -> None:
    zero_w = _param([0.0, 0.0], [1.0, 2.0])
    zero_g = _param([1.0, 1.0], [0.0, 0.0])
    opt = LARS([zero_w, zero_g], lr=0.5, momentum=0.0)
    opt.step()
    assert zero_w.tolist() == pytest.approx([-0.5, -1.0])  # plain lr * g, not eta-scaled
    assert zero_g.tolist() == [1.0, 1.0]


def test_nesterov_by_hand() -> None:
    p = _param([3.0, 4.0], [0.6, 0.8])  # ||w|| = 5, ||g|| = 1 -> ratio 0.005
    opt = LARS([p], lr=2.0, momentum=0.9, nesterov=True)
    opt.step()
    step = 2 * 0.005 * 0.6, 2 * 0.005 * 0.8  # v = step; update = 0.9 v + step
    assert p.tolist() == pytest.approx([3.0 - 1.9 * step[0], 4.0 - 1.9 * step[1]], abs=1e-12)


def test_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    a = nn.Linear(4, 3)
    b = nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    opt_a = LARS(param_groups_for_lars(a, 1e-4), lr=0.3)
    x = torch.randn(8, 4)
    a(x).pow(2).sum().backward()
    opt_a.step()
    b.load_state_dict(a.state_dict())
    opt_b = LARS(param_groups_for_lars(b, 1e-4), lr=0.3)
    buf = io.BytesIO()  # through bytes, as a checkpoint does (and no tensor shared with opt_a)
    torch.save(opt_a.state_dict(), buf)
    buf.seek(0)
    opt_b.load_state_dict(torch.load(buf, weights_only=True))
    for m, opt in ((a, opt_a), (b, opt_b)):
        m.zero_grad()
        m(x).pow(2).sum().backward()
        opt.step()
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_param_groups_follow_official_exclusions() -> None:
    model = build_simclr_model(depth=18, width=0.25, cifar_stem=True, num_proj_layers=3,
                               proj_out_dim=16, num_classes=10)  # fmt: skip
    groups = {g["name"]: g for g in param_groups_for_lars(model, weight_decay=1e-6)}
    assert set(groups) == {"default", "bn_bias", "head"}
    names = {id(p): n for n, p in model.named_parameters()}
    default = {names[id(p)] for p in groups["default"]["params"]}
    bn_bias = {names[id(p)] for p in groups["bn_bias"]["params"]}
    head = {names[id(p)] for p in groups["head"]["params"]}
    assert head == {"probe.fc.weight"}
    assert "probe.fc.bias" in bn_bias and "head.layers.0.bn.weight" in bn_bias
    assert "backbone.stem.1.weight" in bn_bias and "backbone.stem.0.weight" in default
    assert all(n.endswith(".weight") and ".bn" not in n for n in default)
    assert len(default) + len(bn_bias) + len(head) == len(names)  # each parameter exactly once
    assert (groups["default"]["weight_decay"], groups["default"]["exclude_from_adaptation"]) == (1e-6, False)
    assert (groups["bn_bias"]["weight_decay"], groups["bn_bias"]["exclude_from_adaptation"]) == (0.0, True)
    assert (groups["head"]["weight_decay"], groups["head"]["exclude_from_adaptation"]) == (1e-6, True)


def test_param_groups_skip_frozen_parameters() -> None:
    clf = Classifier(build_backbone(18, 0.25, cifar_stem=True), None, 5, fine_tune_after_block=4)
    groups = param_groups_for_lars(clf, 0.0)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == 2 and all(p.requires_grad for p in params)


def test_one_training_step_changes_adapted_weights_by_about_eta_lr() -> None:
    torch.manual_seed(0)
    model = build_simclr_model(depth=18, width=0.25, cifar_stem=True, num_proj_layers=2, proj_out_dim=8)
    opt = LARS(param_groups_for_lars(model, 1e-6), lr=1.0, momentum=0.9)
    w = model.backbone.stem[0].weight
    before = w.detach().clone()
    z = model(torch.randn(8, 3, 8, 8))["proj"]
    z.pow(2).sum().backward()
    opt.step()
    # first step: ||dw|| = lr * eta * ||w|| exactly (the trust ratio normalises the gradient)
    assert (w - before).norm().item() == pytest.approx(1e-3 * before.norm().item(), rel=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"lr": -1.0}, "lr"), ({"lr": 0.1, "momentum": 1.0}, "momentum"),
     ({"lr": 0.1, "weight_decay": -1.0}, "weight_decay"),
     ({"lr": 0.1, "trust_coefficient": 0.0}, "trust_coefficient")],
)  # fmt: skip
def test_invalid_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        LARS([nn.Parameter(torch.zeros(2))], **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_step_equals_cpu_step() -> None:
    torch.manual_seed(0)
    cpu = build_simclr_model(depth=18, width=0.25, cifar_stem=True, num_proj_layers=2, proj_out_dim=8,
                             num_classes=3)  # fmt: skip
    gpu = build_simclr_model(depth=18, width=0.25, cifar_stem=True, num_proj_layers=2, proj_out_dim=8,
                             num_classes=3).cuda()  # fmt: skip
    gpu.load_state_dict(cpu.state_dict())
    for p_cpu, p_gpu in zip(cpu.parameters(), gpu.parameters()):
        p_cpu.grad = torch.randn_like(p_cpu)
        p_gpu.grad = p_cpu.grad.cuda()
    opts = [LARS(param_groups_for_lars(m, 1e-4), lr=0.5) for m in (cpu, gpu)]
    for _ in range(2):
        for opt in opts:
            opt.step()
    for p_cpu, p_gpu in zip(cpu.parameters(), gpu.parameters()):
        assert torch.allclose(p_gpu.cpu(), p_cpu, atol=1e-6, rtol=1e-5)
