"""Projection head (official nonlinear mode), ft_proj_selector semantics, probe stop-gradient."""

from __future__ import annotations

import pytest
import torch

from simclr.models.heads import LinearBN, LinearProbe, ProjectionHead, SupervisedHead

torch.set_num_threads(1)


def test_layers_follow_official_layout() -> None:
    head = ProjectionHead(64, num_layers=3, out_dim=16)
    assert head.layer_dims() == [64, 64, 64, 16]  # hidden width = input width (official)
    assert head.out_dim == 16
    for layer in head.layers[:-1]:
        assert layer.linear.bias is None and layer.bn.bias is not None and layer.relu
    last = head.layers[-1]
    assert last.linear.bias is None and last.bn.bias is None and not last.relu
    assert not any(k.endswith("layers.2.bn.bias") for k in head.state_dict())
    assert ProjectionHead(64, num_layers=2, out_dim=8, mid_dim=32).layer_dims() == [64, 32, 8]


def test_forward_returns_output_and_every_hidden() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(32, num_layers=3, out_dim=8)
    h = torch.randn(16, 32)
    z, hiddens = head(h)
    assert len(hiddens) == 4 and hiddens[0] is h and hiddens[-1] is z
    assert [t.shape[1] for t in hiddens] == [32, 32, 32, 8]
    assert all((t >= 0).all() for t in hiddens[1:3])  # middle layers end with ReLU
    assert (z < 0).any()  # the last does not
    # BN in training mode: the last layer's output has zero mean per unit (no beta)
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-5)


@pytest.mark.parametrize("selector", [-1, 0, 1, 2, 3])
def test_truncated_head_gives_hiddens_of_selector(selector: int) -> None:
    torch.manual_seed(0)
    head = ProjectionHead(32, num_layers=3, out_dim=8)
    head.eval()  # running statistics: outputs depend only on the weights
    for m in head.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    h = torch.randn(5, 32)
    _, hiddens = head(h)
    neck = head.truncated(selector)
    assert torch.allclose(neck(h), hiddens[selector])
    assert neck.out_dim == hiddens[selector].shape[1]
    # the neck shares the head's (pretrained) layers
    assert {id(p) for p in neck.parameters()} <= {id(p) for p in head.parameters()}
    assert len(neck) == (3 if selector == -1 else selector)


@pytest.mark.parametrize("selector", [-2, 4, 1.0, True])
def test_invalid_selector_names_the_argument(selector: object) -> None:
    with pytest.raises(ValueError, match="ft_proj_selector"):
        ProjectionHead(32, num_layers=3).truncated(selector)  # type: ignore[arg-type]


def test_zero_layers_is_identity() -> None:
    head = ProjectionHead(32, num_layers=0, out_dim=8)
    h = torch.randn(4, 32)
    z, hiddens = head(h)
    assert z is h and hiddens == [h] and head.out_dim == 32
    assert head.truncated(-1).out_dim == 32


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"in_dim": 0}, "in_dim"), ({"in_dim": 8, "num_layers": -1}, "num_layers"),
     ({"in_dim": 8, "out_dim": 0}, "out_dim"), ({"in_dim": 8, "mid_dim": 0}, "mid_dim")],
)  # fmt: skip
def test_invalid_head_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ProjectionHead(**kwargs)


def test_linear_probe_stops_gradient() -> None:
    torch.manual_seed(0)
    h = torch.randn(4, 8, requires_grad=True)
    probe = LinearProbe(8, 3)
    probe(h * 2).sum().backward()
    assert h.grad is None
    assert probe.fc.weight.grad is not None
    assert isinstance(probe.fc, SupervisedHead)


def test_supervised_head_init() -> None:
    torch.manual_seed(0)
    fc = SupervisedHead(512, 100)
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(fc.bias == 0)
    assert torch.all(SupervisedHead(8, 2, zero_init=True).weight == 0)
    with pytest.raises(ValueError, match="num_classes"):
        SupervisedHead(8, 0)


def test_linear_bn_head_init_std() -> None:
    torch.manual_seed(0)
    layer = LinearBN(256, 256, center=True, relu=True)
    assert layer.linear.weight.std().item() == pytest.approx(0.01, rel=0.05)
