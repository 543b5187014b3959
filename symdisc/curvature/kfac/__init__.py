"""Kronecker-factored approximate curvature (KFAC) of the GGN, per layer."""

from symdisc.curvature.kfac.core import (
    BiasHandling,
    FisherType,
    KFACRule,
    KronFactors,
    KronTerms,
    drop_softmax_null,
    forward_with_layer_inputs,
    kfac,
    kfac_rule_for,
    kfac_with_loss,
    layer_terms,
    register_kfac_rule,
    row_gram,
)

__all__ = [
    "FisherType",
    "BiasHandling",
    "KronFactors",
    "KronTerms",
    "KFACRule",
    "kfac",
    "kfac_with_loss",
    "row_gram",
    "drop_softmax_null",
    "forward_with_layer_inputs",
    "layer_terms",
    "register_kfac_rule",
    "kfac_rule_for",
]
