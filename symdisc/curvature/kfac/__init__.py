"""Kronecker-factored approximate curvature (KFAC) of the GGN, per layer (paper 000, appendix C).

=============  ================================================================================
module         contents
=============  ================================================================================
``core``       the one accumulation core (:func:`accumulate_kfac`, per batch :func:`kfac_batch`)
               and its variants (:class:`KFACVariant`; :class:`StandardKFAC` behind
               :func:`kfac` and :func:`kfac_with_loss`)
``registry``   :class:`KronTerms`, :func:`register_kfac_rule`, :func:`kfac_rule_for`,
               :func:`kfac_layers`
``rules``      the rules of ``nn.Linear`` and ``nn.Conv2d`` (registered on import)
=============  ================================================================================
"""

from symdisc.curvature.kfac import rules  # noqa: F401  (registers the nn.Linear/Conv2d rules)
from symdisc.curvature.kfac.core import (
    BiasHandling,
    BlockSums,
    FisherType,
    KFACVariant,
    KronFactors,
    StandardKFAC,
    accumulate_kfac,
    drop_softmax_null,
    forward_with_layer_inputs,
    kfac,
    kfac_batch,
    kfac_with_loss,
    layer_terms,
    row_gram,
)
from symdisc.curvature.kfac.registry import (
    KFACRule,
    KronTerms,
    kfac_layers,
    kfac_rule_for,
    register_kfac_rule,
)

__all__ = [
    "FisherType",
    "BiasHandling",
    "KronFactors",
    "KronTerms",
    "BlockSums",
    "KFACRule",
    "KFACVariant",
    "StandardKFAC",
    "kfac",
    "kfac_with_loss",
    "accumulate_kfac",
    "kfac_batch",
    "row_gram",
    "drop_softmax_null",
    "forward_with_layer_inputs",
    "layer_terms",
    "register_kfac_rule",
    "kfac_rule_for",
    "kfac_layers",
]
