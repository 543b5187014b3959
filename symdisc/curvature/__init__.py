"""Derivatives and curvature of losses in a network's parameters, in pure ``torch.func``.

The shared layer under papers 000 and 001 (GGN, KFAC for the Laplace marginal likelihood,
eq. 9 and eqs. 7, 17, 19), 003 (Hessian spectra and sharpness) and 002 (the gradients and
Jacobians of discovery). Imports only torch.

Parameters are ``dict[str, Tensor]``; models and losses are pure functions of them (see
:func:`functional`). Curvature matrices are matrix-free operators with ``@`` (and ``to_dense``
for small models); estimators are plain functions of such an operator or of a dense matrix.

=====================  =====================================================================
module                 contents
=====================  =====================================================================
``derivatives``        per-sample Jacobians, JVP, VJP
``hessian``            :class:`HessianOperator` (cached-``vjp`` or ``jvp`` products), dense
``ggn``                :class:`GGNOperator`, dense GGN, for mse and cross-entropy
``kfac``               per-layer Kronecker factors, with a registry for new layer types
``spectrum``           dense eigenvalues, Lanczos, stochastic Lanczos quadrature
``trace``              Hutchinson, Hutch++
``sharpness``          mean loss change over random directions at several radii
``distributed``        data-parallel reductions on ``torch.distributed``: an operator summing the
                       ranks' products, KFAC factors and sharpness of all ranks' data
``reference``          dense brute-force twins (``torch.func.hessian``, per-sample Jacobians) that
                       tests and benchmarks share; import it as ``symdisc.curvature.reference``
=====================  =====================================================================
"""

from symdisc.curvature._linop import CurvatureOperator
from symdisc.curvature.derivatives import (
    jacobian_vector_product,
    per_sample_jacobian,
    vector_jacobian_product,
)
from symdisc.curvature.distributed import (
    DistributedOperator,
    all_reduce_sum,
    check_group,
    check_replicated,
    distributed_kfac,
    distributed_kfac_with_loss,
    distributed_sharpness,
    reduce_kfac,
    shard_sizes,
    shard_weight,
)
from symdisc.curvature.functional import ModelFn, Params, flatten, functional, num_params, unflatten
from symdisc.curvature.ggn import GGNOperator, ggn, ggn_rows
from symdisc.curvature.hessian import HessianOperator, NonFiniteCurvatureError, hessian
from symdisc.curvature.kfac import (
    BlockSums,
    KFACRule,
    KFACVariant,
    KronFactors,
    KronTerms,
    LayerBatch,
    StandardKFAC,
    accumulate_kfac,
    drop_softmax_null,
    kfac,
    kfac_batch,
    kfac_layers,
    kfac_rule_for,
    kfac_with_loss,
    register_kfac_rule,
    row_gram,
)
from symdisc.curvature.losses import (
    Loss,
    Reduction,
    loss_value,
    output_hessian_sqrt,
    reduction_scale,
    sample_output_gradients,
    supervised_loss,
)
from symdisc.curvature.sharpness import SharpnessResult, random_directions, sharpness
from symdisc.curvature.spectrum import (
    LanczosResult,
    SpectralDensity,
    eigenvalues,
    lanczos,
    slq_density,
)
from symdisc.curvature.trace import TraceEstimate, hutchinson, hutchpp

__all__ = [
    "BlockSums",
    "CurvatureOperator",
    "DistributedOperator",
    "GGNOperator",
    "HessianOperator",
    "KFACRule",
    "KFACVariant",
    "KronFactors",
    "KronTerms",
    "LanczosResult",
    "LayerBatch",
    "Loss",
    "ModelFn",
    "NonFiniteCurvatureError",
    "Params",
    "Reduction",
    "SharpnessResult",
    "SpectralDensity",
    "StandardKFAC",
    "TraceEstimate",
    "accumulate_kfac",
    "all_reduce_sum",
    "check_group",
    "check_replicated",
    "distributed_kfac",
    "distributed_kfac_with_loss",
    "distributed_sharpness",
    "drop_softmax_null",
    "eigenvalues",
    "flatten",
    "functional",
    "ggn",
    "ggn_rows",
    "hessian",
    "hutchinson",
    "hutchpp",
    "jacobian_vector_product",
    "kfac",
    "kfac_batch",
    "kfac_layers",
    "kfac_rule_for",
    "kfac_with_loss",
    "lanczos",
    "loss_value",
    "num_params",
    "output_hessian_sqrt",
    "per_sample_jacobian",
    "random_directions",
    "reduce_kfac",
    "reduction_scale",
    "register_kfac_rule",
    "row_gram",
    "sample_output_gradients",
    "shard_sizes",
    "shard_weight",
    "sharpness",
    "slq_density",
    "supervised_loss",
    "unflatten",
    "vector_jacobian_product",
]
