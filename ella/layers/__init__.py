"""Relaxed-equivariance layers of paper 000 (section 3) and strictly equivariant subsampling.

Every layer maps (B, C, H, W) -> (B, C', H', W') and tags its parameters with a path ("fc",
"conv", "gconv"); :func:`parameter_paths` reads the tags of a whole model.
"""

from ella.layers._base import Path, RelaxedLayer, parameter_paths
from ella.layers.group import (
    GROUP_ORDER,
    GroupConv,
    GroupFC,
    GroupFFC,
    LiftingConv,
    PointwiseGroupConv,
    group_pool,
    rotate_p4,
)
from ella.layers.pooling import PolyphasePool, polyphase_pool
from ella.layers.relaxed import CONV, FC, FFC, SCONV, SFC, PathSum, PriorTarget, rbf_basis
from ella.layers.relaxed_group import (
    FieldCNN,
    FieldGCNN,
    RelaxedGroupConv,
    RelaxedLiftingConv,
    cnn_width_for,
    equivariance_error,
    layer_equivariance_errors,
    regular_to_vector,
    relaxation_penalty,
    vector_to_regular,
)

__all__ = [
    "Path",
    "RelaxedLayer",
    "parameter_paths",
    "PolyphasePool",
    "polyphase_pool",
    "PriorTarget",
    "FC",
    "CONV",
    "FFC",
    "SFC",
    "SCONV",
    "PathSum",
    "rbf_basis",
    "GROUP_ORDER",
    "LiftingConv",
    "GroupConv",
    "PointwiseGroupConv",
    "GroupFC",
    "GroupFFC",
    "group_pool",
    "rotate_p4",
    "RelaxedLiftingConv",
    "RelaxedGroupConv",
    "relaxation_penalty",
    "equivariance_error",
    "layer_equivariance_errors",
    "vector_to_regular",
    "regular_to_vector",
    "FieldGCNN",
    "FieldCNN",
    "cnn_width_for",
]
