"""simclr/models: ResNet backbones (depth, width, SK), projection head, probes, whole models."""

from simclr.models.heads import LinearProbe, ProjectionHead, SupervisedHead
from simclr.models.resnet import ResNet
from simclr.models.simclr import Classifier, SimCLRModel, build_backbone, build_simclr_model

__all__ = [
    "ResNet",
    "ProjectionHead",
    "LinearProbe",
    "SupervisedHead",
    "SimCLRModel",
    "Classifier",
    "build_backbone",
    "build_simclr_model",
]
