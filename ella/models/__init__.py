"""Networks of the papers' experiments: the CIFAR-10 architecture of paper 000 (table 6) with any
relaxed layer family (:mod:`~ella.models.neyshabur`)."""

from ella.models.neyshabur import GROUP_LAYERS, LAYERS, LayerSpec, count_parameters, neyshabur

__all__ = ["LayerSpec", "LAYERS", "GROUP_LAYERS", "neyshabur", "count_parameters"]
