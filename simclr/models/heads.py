"""SimCLRv2 heads: the deep projection head g(.) and the supervised (linear) heads.

Official reference: google-research/simclr `tf2/model.py` (``LinearLayer``, ``ProjectionHead`` with
``proj_head_mode='nonlinear'``, ``SupervisedHead``) and the flags ``num_proj_layers`` (3),
``proj_out_dim`` (128), ``ft_proj_selector`` (0) of `tf2/run.py`. SimCLRv2 paper Sec. 2: a deeper
projection head, fine-tuned "from a middle layer" of it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ProjectionHead", "HeadPrefix", "LinearProbe", "SupervisedHead", "LinearBN"]

_HEAD_INIT_STD = 0.01  # official LinearLayer: RandomNormal(stddev=0.01)


class SupervisedHead(nn.Linear):
    """Linear classifier layer (official ``SupervisedHead``/``head_supervised``): N(0, 0.01) weights,
    zero bias. A distinct type so that LARS parameter grouping can give it weight decay without
    layer adaptation, as the official optimizer set-up does (see ``simclr.optim.lars``).

    ``zero_init=True`` is the official ``zero_init_logits_layer`` flag used for fine-tuning.
    """

    def __init__(self, in_dim: int, num_classes: int, zero_init: bool = False) -> None:
        if in_dim < 1:
            raise ValueError(f"in_dim must be >= 1, got {in_dim!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        super().__init__(in_dim, num_classes, bias=True)
        if zero_init:
            nn.init.zeros_(self.weight)
        else:
            nn.init.normal_(self.weight, std=_HEAD_INIT_STD)
        nn.init.zeros_(self.bias)


class LinearBN(nn.Module):
    """One projection-head layer: Linear (no bias) -> BN [-> ReLU]. [B, in_dim] -> [B, out_dim].

    Official ``LinearLayer(use_bn=True, use_bias=b)``: the dense layer never has a bias when BN
    follows; ``use_bias`` becomes BN's ``center`` (beta). Middle layers: beta + ReLU; last: neither.
    """

    def __init__(self, in_dim: int, out_dim: int, center: bool, relu: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=False)
        nn.init.normal_(self.linear.weight, std=_HEAD_INIT_STD)
        self.bn = nn.BatchNorm1d(out_dim, eps=1e-5, momentum=0.1)
        if not center:
            self.bn.register_parameter("bias", None)  # gamma only, like TF's BN(center=False)
        self.relu = relu
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.linear(x))
        return F.relu(x, inplace=True) if self.relu else x  # BN keeps its input, not its output


class HeadPrefix(nn.Sequential):
    """The first k layers of a :class:`ProjectionHead` (shared modules), with ``out_dim``.

    Empty (k = 0) acts as identity. Used as the "neck" of a fine-tuned classifier.
    """

    def __init__(self, layers: list[nn.Module], out_dim: int) -> None:
        super().__init__(*layers)
        self.out_dim = out_dim


class ProjectionHead(nn.Module):
    """Nonlinear projection head g(.): ``num_layers`` x (Linear + BN [+ ReLU]).

    Every layer but the last keeps the width (``mid_dim``, default ``in_dim`` as in the official code,
    whose hidden layers take the input's last dimension) and has BN beta + ReLU; the last maps to
    ``out_dim`` with neither. ``num_layers=0`` is the official ``proj_head_mode='none'``: z = h.

    ``forward(h [B, in_dim]) -> (z [B, out_dim], hiddens)`` with ``hiddens[0] = h`` and
    ``hiddens[k]`` the output of layer k (k = 1..num_layers); ``hiddens[ft_proj_selector]`` is the
    official fine-tuning input.
    """

    def __init__(
        self, in_dim: int, num_layers: int = 3, out_dim: int = 128, mid_dim: int | None = None
    ) -> None:
        super().__init__()
        if not isinstance(in_dim, int) or in_dim < 1:
            raise ValueError(f"in_dim must be a positive int, got {in_dim!r}")
        if not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"num_layers (num_proj_layers) must be an int >= 0, got {num_layers!r}")
        if not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"out_dim (proj_out_dim) must be a positive int, got {out_dim!r}")
        if mid_dim is not None and (not isinstance(mid_dim, int) or mid_dim < 1):
            raise ValueError(f"mid_dim must be a positive int or None, got {mid_dim!r}")
        mid = in_dim if mid_dim is None else mid_dim
        self.in_dim = in_dim
        self.num_layers = num_layers
        layers = []
        dim = in_dim
        for j in range(num_layers):
            last = j == num_layers - 1
            layers.append(LinearBN(dim, out_dim if last else mid, center=not last, relu=not last))
            dim = out_dim if last else mid
        self.layers = nn.ModuleList(layers)
        self.out_dim = dim  # == out_dim, or in_dim when num_layers == 0

    def forward(self, h: Tensor) -> tuple[Tensor, list[Tensor]]:
        hiddens = [h]
        for layer in self.layers:
            hiddens.append(layer(hiddens[-1]))
        return hiddens[-1], hiddens

    def layer_dims(self) -> list[int]:
        """Width of ``hiddens[k]`` for k = 0..num_layers."""
        return [self.in_dim] + [layer.out_dim for layer in self.layers]  # type: ignore[misc]

    def _check_selector(self, ft_proj_selector: int) -> int:
        if (
            not isinstance(ft_proj_selector, int)
            or isinstance(ft_proj_selector, bool)
            or not -1 <= ft_proj_selector <= self.num_layers
        ):
            raise ValueError(
                f"ft_proj_selector must be an int in [-1, {self.num_layers}] for a head with "
                f"{self.num_layers} layers, got {ft_proj_selector!r}"
            )
        return self.num_layers if ft_proj_selector == -1 else ft_proj_selector

    def truncated(self, ft_proj_selector: int) -> HeadPrefix:
        """The layers kept for fine-tuning (official ``ft_proj_selector``).

        0 -> none (identity on h), k -> layers 1..k, -1 -> all layers. The returned module shares
        this head's layers (and so its pretrained weights); it maps h to ``hiddens[k]``.
        """
        k = self._check_selector(ft_proj_selector)
        return HeadPrefix(list(self.layers[:k]), self.layer_dims()[k])


class LinearProbe(nn.Module):
    """Online linear evaluation head trained during pretraining (official
    ``lineareval_while_pretraining``): logits = W · stop_gradient(h) + b. [B, in_dim] -> [B, classes].

    The stop-gradient keeps label information out of the representation being pretrained.
    """

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = SupervisedHead(in_dim, num_classes)

    def forward(self, h: Tensor) -> Tensor:
        logits: Tensor = self.fc(h.detach())
        return logits
