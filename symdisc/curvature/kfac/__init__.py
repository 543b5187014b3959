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

from symdisc.curvature.kfac import (
    core,
    registry,
    rules,  # noqa: F401  (registers the nn.Linear/Conv2d rules)
)
from symdisc.curvature.kfac.core import *  # noqa: F403
from symdisc.curvature.kfac.registry import *  # noqa: F403

__all__ = [*core.__all__, *registry.__all__]
