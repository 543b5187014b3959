"""Relaxed-equivariance layers of paper 000 (section 3, eqs. 1-7; App. A-B, eqs. 10-11;
App. F.2-F.4) and the relaxed group convolutions of paper 003 ("Relaxed G-CNN").

Every planar layer maps (B, C, H, W) -> (B, C', H', W'), every group layer (B, C, 4, H, W) ->
(B, C', 4, H', W'), and tags its parameters with a path ("fc", "conv", "gconv");
:func:`parameter_paths` reads the tags of a whole model. :func:`check_feature_map` and
:func:`check_kernel_size` are the checks the layers make, for networks built from them.

The layers' KFAC rules (:mod:`ella.layers.kfac_rules`, paper 000, section 5 and App. C) are
registered with :func:`symdisc.curvature.register_kfac_rule` when this package is imported.
"""

from ella.layers._base import (
    GROUP_ORDER,
    Path,
    RelaxedLayer,
    check_feature_map,
    check_input_dtype,
    check_kernel_size,
    parameter_paths,
)
from ella.layers.fixup import ScalarBias, ScalarScale
from ella.layers.group import (
    GroupConv,
    GroupFC,
    GroupFFC,
    GroupPool,
    LiftingConv,
    PointwiseGroupConv,
    group_pool,
    rotate_p4,
)
from ella.layers.octahedral import (
    OCTAHEDRAL_INVERSE,
    OCTAHEDRAL_ORDER,
    OCTAHEDRAL_PRODUCT,
    OCTAHEDRAL_ROTATIONS,
    OctahedralGroupConv,
    OctahedralLiftingConv,
    cnn3d_channels,
    octahedral_equivariance_error,
    rotate_o,
    rotate_volume,
)
from ella.layers.pooling import PolyphasePool, Subsampling, polyphase_pool, subsample
from ella.layers.relaxed import CONV, FC, FFC, SCONV, SFC, PathSum, PriorTarget, rbf_basis
from ella.layers.relaxed_group import (
    RELAXATION_PATH,
    RelaxedGroupConv,
    RelaxedLiftingConv,
    equivariance_error,
    layer_equivariance_errors,
    prior_paths,
    relaxation_penalty,
)
from ella.layers.steerable import (
    FieldType,
    RelaxedSteerableConv,
    SteerableConv,
    basis_dimension,
    field_action,
    rep_dim,
    rep_matrix,
    rotate_field,
    steerable_basis,
    steerable_kernel,
    steerable_relaxation_penalty,
)

__all__ = [
    "Path",
    "RelaxedLayer",
    "parameter_paths",
    "check_feature_map",
    "check_input_dtype",
    "check_kernel_size",
    "PolyphasePool",
    "polyphase_pool",
    "subsample",
    "Subsampling",
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
    "GroupPool",
    "rotate_p4",
    "RelaxedLiftingConv",
    "RelaxedGroupConv",
    "relaxation_penalty",
    "RELAXATION_PATH",
    "prior_paths",
    "equivariance_error",
    "layer_equivariance_errors",
    "ScalarBias",
    "ScalarScale",
    "OCTAHEDRAL_ORDER",
    "OCTAHEDRAL_ROTATIONS",
    "OCTAHEDRAL_PRODUCT",
    "OCTAHEDRAL_INVERSE",
    "rotate_volume",
    "rotate_o",
    "OctahedralLiftingConv",
    "OctahedralGroupConv",
    "octahedral_equivariance_error",
    "cnn3d_channels",
    "FieldType",
    "rep_dim",
    "rep_matrix",
    "steerable_kernel",
    "steerable_basis",
    "basis_dimension",
    "rotate_field",
    "field_action",
    "SteerableConv",
    "RelaxedSteerableConv",
    "steerable_relaxation_penalty",
]

from ella.layers import kfac_rules  # noqa: E402,F401  (registers the KFAC rules)
