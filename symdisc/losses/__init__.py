"""The loss zoo: pure losses ``L(params, X, Y)`` of one sample, each of its own type.

Paper 002, section 2: symmetry discovery works on a loss of parameters theta and one data sample
``(X, Y)``. :class:`ParamLoss` is the base (a function and its shapes); its typed kinds say which
network they are, and :mod:`symdisc.known` and :mod:`symdisc.compose` dispatch on that type:

=========================  =====================================  ==============================
kind                       built by                               paper 002
=========================  =====================================  ==============================
:class:`TwoLayerLoss`      :func:`two_layer`                      section 4.1, 4.2, cor. C.1
:class:`TanhSkipLoss`      :func:`three_layer_tanh_skip`          section 4.2 (Fig. 4)
:class:`MLPLoss`           :func:`mlp`                            section 3, corollary C.2
:class:`ModuleLoss`        :func:`module_loss`                    any ``nn.Module`` (section 4)
=========================  =====================================  ==============================
"""

from symdisc.losses.activations import (
    ACTIVATIONS,
    HOMOGENEOUS,
    INVERTIBLE,
    LEAKY_SLOPE,
    ODD,
    Activation,
    activation_derivative,
    activation_fn,
    activation_inverse,
)
from symdisc.losses.base import ParamLoss
from symdisc.losses.deep import MLPLoss, mlp, mlp_forward
from symdisc.losses.module import DataSampler, ModuleLoss, module_loss
from symdisc.losses.zoo import Output, TanhSkipLoss, TwoLayerLoss, three_layer_tanh_skip, two_layer

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "DataSampler",
    "HOMOGENEOUS",
    "INVERTIBLE",
    "LEAKY_SLOPE",
    "MLPLoss",
    "ModuleLoss",
    "ODD",
    "Output",
    "ParamLoss",
    "TanhSkipLoss",
    "TwoLayerLoss",
    "activation_derivative",
    "activation_fn",
    "activation_inverse",
    "mlp",
    "mlp_forward",
    "module_loss",
    "three_layer_tanh_skip",
    "two_layer",
]
