"""Relaxed-equivariance layers of paper 000 (section 3) and strictly equivariant subsampling.

Every layer maps (B, C, H, W) -> (B, C', H', W') and tags its parameters with a path ("fc",
"conv", "gconv"); :func:`parameter_paths` reads the tags of a whole model.

The layers' KFAC rules (:mod:`ella.layers.kfac_rules`) are registered with
:func:`symdisc.curvature.register_kfac_rule` when this package is imported.
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
    RelaxedGroupConv,
    RelaxedLiftingConv,
    equivariance_error,
    layer_equivariance_errors,
    relaxation_penalty,
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
]

from ella.layers import kfac_rules  # noqa: E402,F401  (registers the KFAC rules)
