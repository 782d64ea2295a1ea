"""Whole models: the SimCLR pretraining model and the classifier used by the other stages.

Official reference: google-research/simclr `tf2/model.py` ``Model``: backbone -> projection head,
plus a supervised head fed with ``stop_gradient`` of a head layer while pretraining
(``lineareval_while_pretraining``), or with ``hiddens[ft_proj_selector]`` when fine-tuning.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from simclr.models.heads import LinearProbe, ProjectionHead, SupervisedHead
from simclr.models.resnet import ResNet

__all__ = ["SimCLRModel", "Classifier", "build_backbone", "build_simclr_model"]


def build_backbone(
    depth: int,
    width: float = 1.0,
    sk_ratio: float = 0.0,
    cifar_stem: bool = False,
    in_channels: int = 3,
) -> ResNet:
    """The ResNet of the resolved config's ``model`` keys (see docs/CONTRACTS.md)."""
    return ResNet(depth, width=width, sk_ratio=sk_ratio, cifar_stem=cifar_stem, in_channels=in_channels)


class SimCLRModel(nn.Module):
    """Backbone f, projection head g and an optional online linear probe.

    ``forward(x [N, C, H, W]) -> {"features": h [N, d], "proj": z [N, proj_dim],
    "probe_logits": [N, num_classes] or None}``.

    For pretraining, ``x`` is both views concatenated along the batch (view 1 then view 2), as the
    official model does, so BN statistics cover both views; split ``proj`` in halves for
    :func:`simclr.losses.ntxent.nt_xent`. The probe reads ``hiddens[probe_selector]`` with a
    stop-gradient (official: ``ft_proj_selector`` also picks the probe's input; default 0 = h).
    """

    def __init__(
        self,
        backbone: ResNet | nn.Module,
        head: ProjectionHead,
        num_classes: int | None = None,
        probe_selector: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.probe_selector = head._check_selector(probe_selector)
        self.probe: LinearProbe | None = None
        if num_classes is not None:
            self.probe = LinearProbe(head.layer_dims()[self.probe_selector], num_classes)

    def forward(self, x: Tensor) -> dict[str, Tensor | None]:
        h = self.backbone(x)
        z, hiddens = self.head(h)
        probe_logits = None if self.probe is None else self.probe(hiddens[self.probe_selector])
        return {"features": h, "proj": z, "probe_logits": probe_logits}


class Classifier(nn.Module):
    """Backbone -> neck -> linear classifier: [B, C, H, W] -> logits [B, num_classes].

    One class for fine-tuning (neck = ``ProjectionHead.truncated(ft_proj_selector)``), supervised
    baselines and distillation students (neck ``None`` = identity), and linear evaluation
    (``fine_tune_after_block=4``).

    Args:
        backbone: module mapping images to [B, backbone.out_dim].
        neck: module mapping [B, backbone.out_dim] to [B, neck.out_dim]; ``None`` or
            ``nn.Identity()`` for none.
        num_classes: output classes.
        fine_tune_after_block: official flag: -1 trains everything; k = 0..4 freezes the stem and block groups
            1..k (:meth:`ResNet.parts`; 4 = the whole backbone, any module, linear evaluation). Frozen parts
            get no gradient and keep their BN in eval mode (statistics unchanged), as the official
            non-trainable Keras layers; the neck and the classifier always train.
        zero_init_head: official ``zero_init_logits_layer``: weights and bias of the classifier start at 0.
    """

    def __init__(
        self,
        backbone: ResNet | nn.Module,
        neck: nn.Module | None,
        num_classes: int,
        fine_tune_after_block: int = -1,
        zero_init_head: bool = False,
    ) -> None:
        super().__init__()
        backbone_dim = getattr(backbone, "out_dim", None)
        if not isinstance(backbone_dim, int):
            raise ValueError("backbone must expose an int `out_dim`")
        if not -1 <= fine_tune_after_block <= 4:
            raise ValueError(f"fine_tune_after_block must be in -1..4, got {fine_tune_after_block!r}")
        if 0 <= fine_tune_after_block < 4 and not isinstance(backbone, ResNet):
            raise ValueError(f"fine_tune_after_block={fine_tune_after_block} freezes block groups: needs a ResNet")
        if neck is None or isinstance(neck, nn.Identity):
            neck = nn.Identity()
            in_dim = backbone_dim
        else:
            neck_dim = getattr(neck, "out_dim", None)
            if not isinstance(neck_dim, int):
                raise ValueError("neck must expose an int `out_dim` (e.g. ProjectionHead.truncated(k))")
            in_dim = neck_dim
        self.backbone = backbone
        self.neck = neck
        self.fc = SupervisedHead(in_dim, num_classes, zero_init=zero_init_head)
        self.fine_tune_after_block = int(fine_tune_after_block)
        for part in self.frozen_parts():
            part.requires_grad_(False)
            part.eval()

    def frozen_parts(self) -> list[nn.Module]:
        """The backbone parts ``fine_tune_after_block`` freezes (looked up each time: a global-BN conversion
        replaces the BN modules inside them, not the parts)."""
        k = self.fine_tune_after_block
        if k < 0:
            return []
        if k == 4:
            return [self.backbone]
        assert isinstance(self.backbone, ResNet)
        return list(self.backbone.parts()[: k + 1])

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        for part in self.frozen_parts():
            part.eval()  # frozen BN statistics, as a non-trainable Keras layer
        return self

    def features(self, x: Tensor) -> Tensor:
        """Backbone features [B, backbone.out_dim] (the frozen parts computed without autograd)."""
        h: Tensor
        k = self.fine_tune_after_block
        if k == 4:
            with torch.no_grad():
                h = self.backbone(x)
        elif k >= 0:
            h = self.backbone(x, frozen_through=k)
        else:
            h = self.backbone(x)
        return h

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.fc(self.neck(self.features(x)))
        return logits


def build_simclr_model(
    depth: int,
    width: float = 1.0,
    sk_ratio: float = 0.0,
    cifar_stem: bool = False,
    num_proj_layers: int = 3,
    proj_out_dim: int = 128,
    num_classes: int | None = None,
    in_channels: int = 3,
    probe_selector: int = 0,
) -> SimCLRModel:
    """SimCLRModel from the resolved config's ``model`` keys (docs/CONTRACTS.md), e.g.
    ``build_simclr_model(**cfg["model"], num_classes=10)``."""
    backbone = build_backbone(depth, width, sk_ratio, cifar_stem, in_channels)
    head = ProjectionHead(backbone.out_dim, num_layers=num_proj_layers, out_dim=proj_out_dim)
    return SimCLRModel(backbone, head, num_classes=num_classes, probe_selector=probe_selector)
