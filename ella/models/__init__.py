"""Networks of the papers' experiments: the CIFAR-10 architecture of paper 000 (table 6) with any
relaxed layer family (:mod:`~ella.models.neyshabur`), and the FC, CONV and F-FC+CONV models of
paper 000's quadrant experiment (table 1, :mod:`~ella.models.quadrant`), and the Fixup ResNets of
paper 001's CIFAR-10 experiments (table 2, appendix B.2, :mod:`~ella.models.fixup`)."""

from ella.models.fixup import FixupBasicBlock, FixupResNet, fixup_resnet
from ella.models.neyshabur import (
    GROUP_LAYERS,
    INITS,
    LAYERS,
    MIN_IMAGE_SIZE,
    LayerSpec,
    count_parameters,
    he_rescale,
    neyshabur,
)
from ella.models.quadrant import QUADRANT_MODELS, QuadrantModel, quadrant_model

__all__ = [
    "LayerSpec",
    "LAYERS",
    "GROUP_LAYERS",
    "INITS",
    "MIN_IMAGE_SIZE",
    "neyshabur",
    "he_rescale",
    "count_parameters",
    "QUADRANT_MODELS",
    "QuadrantModel",
    "quadrant_model",
    "FixupBasicBlock",
    "FixupResNet",
    "fixup_resnet",
]
