"""ResNet backbone: official parameter counts, shapes, init, TF-exact padding, argument checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from simclr.models.resnet import (
    BasicBlock,
    BottleneckBlock,
    ResNet,
    ResNetDPool,
    SelectiveKernelConv,
    tf_same_max_pool_3x3s2,
)

torch.set_num_threads(1)

# google-research/simclr README, "Pre-trained models for SimCLRv2" (Table 1 of the paper):
# (depth, width, SK, "Param (M)"). SK means sk_ratio = 0.0625.
OFFICIAL_PARAMS_M = [
    (50, 1, False, 24),
    (50, 1, True, 35),
    (50, 2, False, 94),
    (50, 2, True, 140),
    (101, 1, False, 43),
    (101, 1, True, 65),
    (101, 2, False, 170),
    (101, 2, True, 257),
    (152, 1, False, 58),
    (152, 1, True, 89),
    (152, 2, False, 233),
    (152, 2, True, 354),
    (152, 3, True, 795),
]


def tf_variable_count(model: torch.nn.Module) -> int:
    """What TF counts as the model's variables: weights plus BN moving mean/variance.

    (Counting trainable parameters only gives 232 and 353 for the two ResNet-152 2x rows, not the
    README's 233 and 354, so the README counts all variables.)
    """
    n = sum(p.numel() for p in model.parameters())
    n += sum(b.numel() for k, b in model.named_buffers() if not k.endswith("num_batches_tracked"))
    return n


@pytest.mark.parametrize(("depth", "width", "sk", "millions"), OFFICIAL_PARAMS_M)
def test_parameter_count_matches_official_readme(depth: int, width: int, sk: bool, millions: int) -> None:
    with torch.device("meta"):  # no memory: the 3x ResNet-152 has 795 M variables
        model = ResNet(depth, width=width, sk_ratio=0.0625 if sk else 0.0)
    assert round(tf_variable_count(model) / 1e6) == millions


def test_resnet50_equals_torchvision_resnet50_without_fc() -> None:
    # Same architecture family (v1.5, projection in every group's first block): same weights count.
    with torch.device("meta"):
        ours = ResNet(50)
        tv = torchvision.models.resnet50()
    tv_count = sum(p.numel() for n, p in tv.named_parameters() if not n.startswith("fc."))
    assert sum(p.numel() for p in ours.parameters()) == tv_count == 23_508_032


def test_resnet18_has_official_projection_in_group1() -> None:
    # Official resnet.py gives group 1's first block a projection shortcut even for basic blocks;
    # torchvision does not: the difference is one 64x64 1x1 conv plus its BN (gamma, beta).
    with torch.device("meta"):
        ours = ResNet(18)
        tv = torchvision.models.resnet18()
    tv_count = sum(p.numel() for n, p in tv.named_parameters() if not n.startswith("fc."))
    assert sum(p.numel() for p in ours.parameters()) == tv_count + 64 * 64 + 2 * 64
    assert ours.group1[0].shortcut is not None and ours.group1[1].shortcut is None


@pytest.mark.parametrize(
    ("depth", "width", "out_dim"),
    [(18, 1.0, 512), (34, 0.5, 256), (50, 1.0, 2048), (50, 0.25, 512), (18, 0.25, 128), (101, 2.0, 4096)],
)
def test_out_dim(depth: int, width: float, out_dim: int) -> None:
    with torch.device("meta"):
        assert ResNet(depth, width=width).out_dim == out_dim


@pytest.mark.parametrize(
    ("depth", "sk", "cifar", "size", "spatial"),
    [
        (18, 0.0, True, 32, [32, 32, 16, 8, 4]),
        (18, 0.0625, False, 64, [16, 16, 8, 4, 2]),
        (50, 0.0625, False, 65, [17, 17, 9, 5, 3]),  # odd sizes: TF SAME / FixedPadding arithmetic
        (50, 0.0, True, 32, [32, 32, 16, 8, 4]),
    ],
)
def test_forward_shapes(depth: int, sk: float, cifar: bool, size: int, spatial: list[int]) -> None:
    model = ResNet(depth, width=0.25, sk_ratio=sk, cifar_stem=cifar)
    x = torch.randn(2, 3, size, size)
    maps = model.forward_groups(x)
    assert [m.shape[-1] for m in maps] == spatial
    out = model(x)
    assert out.shape == (2, model.out_dim)
    assert torch.allclose(out, maps[-1].mean((2, 3)))


def test_grayscale_input_channels() -> None:
    model = ResNet(18, width=0.25, cifar_stem=True, in_channels=1)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 128)


def test_channels_last_gives_same_features() -> None:
    torch.manual_seed(0)
    model = ResNet(50, width=0.25, sk_ratio=0.0625).eval()
    x = torch.randn(2, 3, 48, 48)
    ref = model(x)
    model_cl = model.to(memory_format=torch.channels_last)
    out = model_cl(x.to(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)


def test_last_bn_of_each_block_is_zero_initialised() -> None:
    model = ResNet(50, width=0.25, sk_ratio=0.0625)
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, BottleneckBlock))]
    assert len(blocks) == 16
    for block in blocks:
        last = block.bn3 if isinstance(block, BottleneckBlock) else block.bn2
        assert torch.all(last.weight == 0)
    others = [
        m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
        and not any(m is (b.bn3 if isinstance(b, BottleneckBlock) else b.bn2) for b in blocks)
    ]  # fmt: skip
    assert others and all(torch.all(m.weight == 1) for m in others)
    # So at init every block is relu(shortcut): a block without projection is the identity on
    # non-negative inputs.
    block = model.group2[1].eval()
    x = torch.rand(2, block.conv1.in_channels, 8, 8)
    assert torch.equal(block(x), x)


def test_conv_init_is_tf_variance_scaling() -> None:
    torch.manual_seed(0)
    model = ResNet(18, width=1.0, cifar_stem=True)
    w = model.group4[1].conv2.weight  # 512 x 512 x 3 x 3
    fan_in = 512 * 9
    assert w.std().item() == pytest.approx(math.sqrt(1.0 / fan_in), rel=0.02)
    # truncated at 2 std of the underlying normal
    assert w.abs().max().item() <= 2 * math.sqrt(1.0 / fan_in) / 0.87962566103423978 + 1e-7


@pytest.mark.parametrize(("h", "w"), [(8, 8), (7, 7), (8, 7), (7, 8), (112, 112)])
def test_max_pool_equals_tf_same(h: int, w: int) -> None:
    x = torch.randn(2, 3, h, w)
    # TF SAME: total pad = max((out - 1) * 2 + 3 - size, 0), before = total // 2, rest after.
    def pads(n: int) -> tuple[int, int]:
        total = max((math.ceil(n / 2) - 1) * 2 + 3 - n, 0)
        return total // 2, total - total // 2

    (pt, pb), (pl, pr) = pads(h), pads(w)
    ref = F.max_pool2d(F.pad(x, (pl, pr, pt, pb), value=float("-inf")), 3, 2)
    assert torch.equal(tf_same_max_pool_3x3s2(x), ref)


def test_resnet_d_pool_stride1_averages_valid_pixels_only() -> None:
    x = torch.arange(9.0).view(1, 1, 3, 3)
    out = ResNetDPool(1)(x)
    expected = torch.tensor(
        [
            [(0 + 1 + 3 + 4) / 4, (1 + 2 + 4 + 5) / 4, (2 + 5) / 2],
            [(3 + 4 + 6 + 7) / 4, (4 + 5 + 7 + 8) / 4, (5 + 8) / 2],
            [(6 + 7) / 2, (7 + 8) / 2, 8.0],
        ]
    )
    assert torch.allclose(out[0, 0], expected)


def test_resnet_d_pool_stride2_pads_zero_at_the_end() -> None:
    x = torch.arange(9.0).view(1, 1, 3, 3)
    out = ResNetDPool(2)(x)
    expected = torch.tensor([[(0 + 1 + 3 + 4) / 4, (2 + 5) / 4], [(6 + 7) / 4, 8 / 4]])
    assert torch.allclose(out[0, 0], expected)
    y = torch.randn(2, 4, 6, 6)
    assert torch.allclose(ResNetDPool(2)(y), F.avg_pool2d(y, 2, 2))


def test_selective_kernel_with_equal_logits_averages_the_two_streams() -> None:
    torch.manual_seed(0)
    sk = SelectiveKernelConv(8, 8, stride=1, sk_ratio=0.0625).eval()
    torch.nn.init.zeros_(sk.fc2.weight)  # equal mixing logits -> softmax 1/2, 1/2
    x = torch.randn(2, 8, 5, 5)
    streams = F.relu(sk.bn(sk.conv(x)))
    assert torch.allclose(sk(x), 0.5 * (streams[:, :8] + streams[:, 8:]), atol=1e-6)
    assert sk.fc1.out_channels == 32  # max(int(8 * 0.0625), min_dim=32)


def test_sk_uses_resnet_d_stem_and_shortcuts() -> None:
    model = ResNet(50, width=0.25, sk_ratio=0.0625)
    convs = [m for m in model.stem if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [
        ((3, 3), (2, 2), 8), ((3, 3), (1, 1), 8), ((3, 3), (1, 1), 16)
    ]
    assert isinstance(model.group2[0].shortcut[0], ResNetDPool)
    assert isinstance(model.group2[0].conv2, SelectiveKernelConv)
    plain = ResNet(50, width=0.25)
    assert plain.stem[0].kernel_size == (7, 7)
    assert not any(isinstance(m, (ResNetDPool, SelectiveKernelConv)) for m in plain.modules())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"depth": 19}, "depth"),
        ({"depth": 50, "width": 0}, "width"),
        ({"depth": 50, "width": -1.0}, "width"),
        ({"depth": 50, "sk_ratio": 1.0}, "sk_ratio"),
        ({"depth": 50, "sk_ratio": -0.1}, "sk_ratio"),
        ({"depth": 18, "in_channels": 0}, "in_channels"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ResNet(**kwargs)
