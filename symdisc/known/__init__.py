"""Known parameter-space symmetries of the loss zoo (paper 002, section 2, appendices A, B.1).

By kind of loss (:mod:`symdisc.losses`), dispatched on its type:

* :mod:`~symdisc.known.continuous`: the continuous symmetries of a two-layer net ("gl",
  "rescaling", "data_dependent_gl", "softmax_shift") as tangent vectors (Theorem B.1) and as
  finite actions; their tangent bases score learned fields.
* :mod:`~symdisc.known.deep`: "gl" and "rescaling" of deep nets, at every hidden layer
  (:func:`symdisc.losses.mlp`, and :func:`symdisc.losses.module_loss` of an ``nn.Sequential`` of
  ``nn.Linear`` layers with ReLU, LeakyReLU or no activation), through the same functions.
* :mod:`~symdisc.known.discrete`: permutations and sign flips of hidden units (appendix A) of
  two-layer and tanh-skip nets.
* :mod:`~symdisc.known.baseline`: the closed-form null-space baseline (eq. 6 on every sample).
* :mod:`~symdisc.known.action`: :class:`KnownAction`, a known symmetry as an Action.

A symmetry asked of a kind of loss it is not known for raises a TypeError naming the kind.
"""

from symdisc.known.action import KnownAction
from symdisc.known.baseline import NullSpace, null_space
from symdisc.known.continuous import (
    SYMMETRIES,
    Ansatz,
    algebra_shape,
    exp_map,
    gl_ansatz,
    group_action,
    infinitesimal_action,
    tangent_basis,
    unit_generators,
)
from symdisc.known.discrete import flip_signs, permute_hidden

__all__ = [
    "SYMMETRIES",
    "Ansatz",
    "KnownAction",
    "NullSpace",
    "algebra_shape",
    "exp_map",
    "flip_signs",
    "gl_ansatz",
    "group_action",
    "infinitesimal_action",
    "null_space",
    "permute_hidden",
    "tangent_basis",
    "unit_generators",
]
