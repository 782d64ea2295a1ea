"""ResNet backbones of SimCLRv2: depth, width multiplier, selective kernels (SK), CIFAR stem.

A PyTorch re-statement of google-research/simclr `tf2/resnet.py` (post-activation ResNet v1.5):

* Depths 18/34 use basic blocks, 50/101/152/200 bottleneck blocks (stride on the 3x3 conv).
* Every block group's FIRST block has a projection shortcut (1x1 conv + BN), even in group 1 where the
  shape would allow an identity: the official code always passes ``use_projection=True`` there.
* ``sk_ratio > 0`` (paper: 0.0625, SimCLRv2 Sec. 4) turns on Selective Kernels
  (arXiv:1903.06586) in bottleneck blocks and the ResNet-D changes (arXiv:1812.01187) that the
  official code couples with it: a deep stem of three 3x3 convs, and projection shortcuts that
  average-pool before a stride-1 1x1 conv.
* ``cifar_stem``: a single 3x3 stride-1 conv, no max-pool (official: ``image_size <= 32``).
* The last BN of each residual branch starts with gamma = 0, so every block starts as identity.
* Conv kernels use TF's ``VarianceScaling()`` default (fan-in, truncated normal), BN eps 1e-5,
  momentum 0.1 (TF decay 0.9, the official ``batch_norm_decay``).
* TF "SAME" padding is reproduced exactly where it is asymmetric (the stem's 3x3/2 max-pool on
  even sizes, the ResNet-D average pools), so converted official weights give the same features.

Parameter counts match the official SimCLRv2 README table (tests pin them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ResNet", "BasicBlock", "BottleneckBlock", "SelectiveKernelConv", "DEPTHS"]

# depth -> (block kind, blocks per group); official `resnet.resnet()` model_params.
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}

BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # PyTorch convention; equals TF's decay 0.9 (official flag batch_norm_decay)
SK_MIN_DIM = 32  # official SK_Conv2D min_dim
# TF's truncated_normal draws from a normal cut at 2 std, whose std is then 0.8796...; VarianceScaling
# divides by this constant so the truncated distribution has the intended std.
_TRUNC_NORMAL_STD_CORRECTION = 0.87962566103423978


def variance_scaling_(weight: Tensor) -> Tensor:
    """In-place init equal to ``tf.keras.initializers.VarianceScaling()`` (scale 1, fan_in, truncated).

    Args:
        weight: conv kernel [out, in, kh, kw] (or any tensor whose dims 1.. are the fan-in).
    """
    fan_in = weight[0].numel()
    std = math.sqrt(1.0 / fan_in) / _TRUNC_NORMAL_STD_CORRECTION
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free conv with the official padding.

    TF's ``Conv2dFixedPadding`` pads (k-1)//2 before and the rest after for stride > 1, and uses
    SAME for stride 1; for the odd kernels used here both equal a symmetric ``k // 2``.
    """
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False)
    variance_scaling_(conv.weight)
    return conv


def _bn(channels: int, zero_init: bool = False) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    if zero_init:
        nn.init.zeros_(bn.weight)
    return bn


def tf_same_max_pool_3x3s2(x: Tensor) -> Tensor:
    """``tf.keras.layers.MaxPooling2D(3, 2, 'SAME')`` on [B, C, H, W] without copying the input.

    TF pads (0, 1) on an even side and (1, 1) on an odd side; PyTorch's ``padding=1`` would shift
    every window by one pixel on even sizes (e.g. 112x112 after the 224-px stem).
    """
    h, w = x.shape[-2], x.shape[-1]
    if h % 2 == 0 and w % 2 == 0:
        # Windows start at 0, 2, ...; ceil_mode lets the last window hang over the end (= pad 0|1).
        return F.max_pool2d(x, 3, 2, padding=0, ceil_mode=True)
    if h % 2 == 1 and w % 2 == 1:
        return F.max_pool2d(x, 3, 2, padding=1)
    x = F.pad(x, (w % 2, 1, h % 2, 1), value=float("-inf"))  # odd side (1, 1), even (0, 1)
    return F.max_pool2d(x, 3, 2)


class ResNetDPool(nn.Module):
    """ResNet-D shortcut average pool, exactly as the official code does it.

    stride 2: ``FixedPadding(2)`` (zero pad 0 before, 1 after) then a 2x2/2 VALID pool; on even sizes
    the pad is never read, so it is skipped. stride 1: a 2x2/1 SAME pool, which TF averages over the
    valid pixels only (``count_include_pad=False``).
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            # Windows [i, i+1]; PyTorch's symmetric pad gives windows [i-1, i], so drop the first.
            return F.avg_pool2d(x, 2, 1, padding=1, count_include_pad=False)[..., 1:, 1:]
        h, w = x.shape[-2], x.shape[-1]
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2))
        return F.avg_pool2d(x, 2, self.stride)


def _projection_shortcut(in_ch: int, out_ch: int, stride: int, resnet_d: bool) -> nn.Sequential:
    if resnet_d:
        return nn.Sequential(ResNetDPool(stride), _conv(in_ch, out_ch, 1, 1), _bn(out_ch))
    return nn.Sequential(_conv(in_ch, out_ch, 1, stride), _bn(out_ch))


class SelectiveKernelConv(nn.Module):
    """SK conv of official ``SK_Conv2D``: two 3x3 streams (one conv of 2x filters, split), mixed by
    a softmax over streams computed from the globally pooled sum of both.

    Shapes: [B, in_ch, H, W] -> [B, filters, H/stride, W/stride].
    """

    def __init__(self, in_ch: int, filters: int, stride: int, sk_ratio: float) -> None:
        super().__init__()
        self.filters = filters
        self.conv = _conv(in_ch, 2 * filters, 3, stride)
        self.bn = _bn(2 * filters)
        mid = max(int(filters * sk_ratio), SK_MIN_DIM)
        self.fc1 = nn.Conv2d(filters, mid, 1, bias=False)  # on the [B, filters, 1, 1] stream sum
        variance_scaling_(self.fc1.weight)
        self.fc_bn = _bn(mid)
        self.fc2 = nn.Conv2d(mid, 2 * filters, 1, bias=False)
        variance_scaling_(self.fc2.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.conv(x)), inplace=True)
        b, _, h, w = x.shape
        streams = x.view(b, 2, self.filters, h, w)  # TF splits the channel axis: first half = stream 0
        pooled = streams.sum(1).mean((2, 3), keepdim=True)  # [B, filters, 1, 1]
        mixing: Tensor = self.fc2(F.relu(self.fc_bn(self.fc1(pooled))))
        mixing = mixing.view(b, 2, self.filters, 1, 1).softmax(dim=1)
        return (streams * mixing).sum(1)


class BasicBlock(nn.Module):
    """Official ``ResidualBlock``: 3x3(stride)-BN-ReLU-3x3-BN(gamma 0) + shortcut, ReLU.

    SK is not used in basic blocks (as in the official code); ``resnet_d`` only changes the shortcut.
    """

    expansion = 1

    def __init__(
        self, in_ch: int, filters: int, stride: int, use_projection: bool, sk_ratio: float
    ) -> None:
        super().__init__()
        out_ch = filters * self.expansion
        self.shortcut = (
            _projection_shortcut(in_ch, out_ch, stride, sk_ratio > 0) if use_projection else None
        )
        self.conv1 = _conv(in_ch, filters, 3, stride)
        self.bn1 = _bn(filters)
        self.conv2 = _conv(filters, filters, 3, 1)
        self.bn2 = _bn(filters, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        # In place where autograd allows (BN saves its input, not its output): on CPU every fresh
        # activation-sized allocation costs page faults, so fewer allocations is faster.
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += shortcut
        return F.relu(out, inplace=True)


class BottleneckBlock(nn.Module):
    """Official ``BottleneckBlock``: 1x1-BN-ReLU, 3x3(stride)-BN-ReLU or SK conv, 1x1(4x)-BN(gamma 0)."""

    expansion = 4

    def __init__(
        self, in_ch: int, filters: int, stride: int, use_projection: bool, sk_ratio: float
    ) -> None:
        super().__init__()
        out_ch = filters * self.expansion
        self.shortcut = (
            _projection_shortcut(in_ch, out_ch, stride, sk_ratio > 0) if use_projection else None
        )
        self.conv1 = _conv(in_ch, filters, 1, 1)
        self.bn1 = _bn(filters)
        self.conv2: nn.Module
        if sk_ratio > 0:
            self.conv2 = SelectiveKernelConv(filters, filters, stride, sk_ratio)
        else:
            self.conv2 = nn.Sequential(
                _conv(filters, filters, 3, stride), _bn(filters), nn.ReLU(inplace=True)
            )
        self.conv3 = _conv(filters, out_ch, 1, 1)
        self.bn3 = _bn(out_ch, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)  # in place: see BasicBlock.forward
        out = self.conv2(out)
        out = self.bn3(self.conv3(out))
        out += shortcut
        return F.relu(out, inplace=True)


class ResNet(nn.Module):
    """SimCLRv2 backbone: images [B, C, H, W] -> globally average-pooled features [B, out_dim].

    Args:
        depth: 18, 34, 50, 101, 152 or 200.
        width: width multiplier (paper: 1, 2, 3; fractional such as 0.25 for tests). Channel counts are
            ``round(64 * width)`` etc.
        sk_ratio: selective-kernel reduction ratio; 0 disables SK and ResNet-D (paper: 0.0625).
        cifar_stem: 3x3 stride-1 stem without max-pool, for ~32 px images.
        in_channels: input channels (3 for RGB, 1 for grayscale data).

    ``out_dim`` is ``round(512 * width) * expansion`` (2048 for ResNet-50 1x).
    Works in channels_last memory format (``model.to(memory_format=torch.channels_last)``).
    """

    def __init__(
        self,
        depth: int,
        width: float = 1.0,
        sk_ratio: float = 0.0,
        cifar_stem: bool = False,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth!r}")
        if not isinstance(width, (int, float)) or isinstance(width, bool) or not width > 0:
            raise ValueError(f"width must be a number > 0, got {width!r}")
        if not isinstance(sk_ratio, (int, float)) or not 0.0 <= sk_ratio < 1.0:
            raise ValueError(f"sk_ratio must be in [0, 1), got {sk_ratio!r}")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        base = int(round(64 * width))
        if base < 2:
            raise ValueError(f"width {width!r} is too small: the stem would have {base} channels")

        self.depth = depth
        self.width = float(width)
        self.sk_ratio = float(sk_ratio)
        self.cifar_stem = bool(cifar_stem)
        kind, blocks = DEPTHS[depth]
        block: type[BasicBlock] | type[BottleneckBlock] = (
            BasicBlock if kind == "basic" else BottleneckBlock
        )

        stem: list[nn.Module]
        if cifar_stem:
            stem = [_conv(in_channels, base, 3, 1), _bn(base), nn.ReLU(inplace=True)]
        elif sk_ratio > 0:  # ResNet-D deep stem
            half = base // 2
            stem = [
                _conv(in_channels, half, 3, 2), _bn(half), nn.ReLU(inplace=True),
                _conv(half, half, 3, 1), _bn(half), nn.ReLU(inplace=True),
                _conv(half, base, 3, 1), _bn(base), nn.ReLU(inplace=True),
            ]  # fmt: skip
        else:
            stem = [_conv(in_channels, base, 7, 2), _bn(base), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*stem)
        self.max_pool = not cifar_stem

        groups = []
        in_ch = base
        for i, n_blocks in enumerate(blocks):
            filters = int(round(64 * (2**i) * width))
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n_blocks):
                layers.append(
                    block(in_ch, filters, stride if j == 0 else 1, j == 0, self.sk_ratio)
                )
                in_ch = filters * block.expansion
            groups.append(nn.Sequential(*layers))
        self.group1, self.group2, self.group3, self.group4 = groups
        self.out_dim: int = in_ch

    def forward_groups(self, x: Tensor) -> list[Tensor]:
        """Feature maps after the stem (incl. max-pool) and after each of the 4 block groups."""
        x = self.stem(x)
        if self.max_pool:
            x = tf_same_max_pool_3x3s2(x)
        outs = [x]
        for group in (self.group1, self.group2, self.group3, self.group4):
            x = group(x)
            outs.append(x)
        return outs

    def parts(self) -> tuple[nn.Module, ...]:
        """The stem and block groups 1-4, in order: official ``fine_tune_after_block=k`` freezes ``parts()[:k+1]``."""
        return (self.stem, self.group1, self.group2, self.group3, self.group4)

    def forward(self, x: Tensor, frozen_through: int = -1) -> Tensor:
        """[B, C, H, W] -> [B, out_dim] (official ``final_avg_pool``).

        ``frozen_through=k`` (0-4) runs ``parts()[:k+1]`` without autograd: the official ``stop_gradient`` before
        block group k+1 under ``fine_tune_after_block=k`` (nothing upstream is trained, so nothing is recorded).
        """
        if frozen_through < 0:
            x = self.stem(x)
            if self.max_pool:
                x = tf_same_max_pool_3x3s2(x)
            x = self.group4(self.group3(self.group2(self.group1(x))))
            return x.mean((2, 3))
        grad = torch.is_grad_enabled()
        with torch.set_grad_enabled(False):
            x = self.stem(x)
            if self.max_pool:
                x = tf_same_max_pool_3x3s2(x)
        for i, group in enumerate((self.group1, self.group2, self.group3, self.group4), start=1):
            with torch.set_grad_enabled(grad and i > frozen_through):
                x = group(x)
        return x.mean((2, 3))

    def extra_repr(self) -> str:
        return (
            f"depth={self.depth}, width={self.width}, sk_ratio={self.sk_ratio}, "
            f"cifar_stem={self.cifar_stem}, out_dim={self.out_dim}"
        )
