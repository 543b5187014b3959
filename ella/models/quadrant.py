"""The models of paper 000's quadrant experiment (section 6.1, table 1): FC, CONV and the
learnable-symmetry F-FC+CONV on the canvases of :func:`ella.data.quadrant_digits`.

L = log2(size) relaxed layers, each halving the resolution, with ReLU after each, then a plain
``nn.Linear``; for the default 32x32 canvas (L = 5):

====  ====================  ==================
#     input                 output
====  ====================  ==================
1     1 x 32 x 32           a x 16 x 16
2     a x 16 x 16           2a x 8 x 8
3     2a x 8 x 8            4a x 4 x 4
4     4a x 4 x 4            8a x 2 x 2
5     8a x 2 x 2            16a x 1 x 1
6     flattened 16a         ``n_classes`` (``nn.Linear``)
====  ====================  ==================

(a 16x16 canvas drops layer 1: four layers from 1 x 16 x 16 to 8a x 1 x 1.)

The relaxed layers are ``fc`` (FC), ``conv`` (CONV) and ``ffc_conv`` (``PathSum(FFC, CONV)``,
the paper's learnable symmetry, "F-FC+CONV"). The CONV layers subsample by stride (component
(0, 0)) in every layer but the last, which polyphase-pools its 2 x 2 map to 1 x 1
(:func:`ella.layers.subsample`): the CONV network is then exactly invariant to circular shifts
of the canvas by multiples of half its side, i.e. to moving the digit to another quadrant
(it is equivariant to even shifts before the last layer, not to all shifts). With polyphase
pooling in every layer (strictly invariant to every circular shift) the CONV network underfit
on the real-MNIST quadrants: 72% test accuracy after 10 epochs at alpha = 4 (train 70%),
against 88% with stride and 93% with max pooling, and the marginal likelihood then preferred the
F-FC paths of F-FC+CONV (higher prior precision on CONV in 4 of 5 layers): the per-sample
choice of one of four phases in every layer multiplies the arrangements the network must learn.

In ``ffc_conv`` the F-FC path of every layer starts at zero output (its theta1 = 0; theta2 and
the bias as usual), so the network starts as the CONV network and the F-FC path grows only as
far as the data ask, as in residual pathway priors (Finzi et al., 2021). With both paths at
their default initialisation the sum trained worse than either path alone (real-MNIST
``digit``, alpha = 4, 30 epochs, seed 0: F-FC+CONV 88.8% MAP and 89.1% marglik, against 94.6%
for CONV and 91.6% for FC; the F-FC path fits the training set before the CONV path has learnt
the invariant solution, and 28 marginal-likelihood updates did not undo it: 88.3%); started at
zero it reached 92.2% MAP and 94.7% marglik (91.2% on ``digit_quadrant``).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from ella.layers import CONV, FC, FFC, PathSum
from symdisc.runtime import check_choice, check_int

__all__ = ["QUADRANT_MODELS", "QuadrantModel", "quadrant_model"]

QuadrantModel = Literal["fc", "conv", "ffc_conv"]
QUADRANT_MODELS: tuple[str, ...] = get_args(QuadrantModel)


def _layer(kind: str, shape: tuple[int, int, int, int], last: bool) -> nn.Module:
    """One relaxed layer of ``kind`` for ``shape`` (C, C', H, H'); CONV subsamples by stride
    except in the ``last`` layer, and the F-FC path of F-FC+CONV starts at zero (module
    docstring)."""
    if kind == "fc":
        return FC(*shape)
    conv = CONV(*shape, subsampling="polyphase" if last else "stride")
    if kind == "conv":
        return conv
    ffc = FFC(*shape)
    with torch.no_grad():
        ffc.theta1.zero_()
    return PathSum(ffc, conv)


def quadrant_model(
    kind: QuadrantModel, n_classes: int, alpha: int = 4, seed: int = 0, size: int = 32
) -> nn.Sequential:
    """Relaxed layers 1 x size -> a x size/2 -> ... -> 2^(L-1) a x 1 (ReLU after each), flatten,
    then ``nn.Linear(2^(L-1) a, n_classes)``; ``a`` = ``alpha``, L = log2(``size``).

    The initial weights are drawn after ``torch.manual_seed(seed)`` (torch's global generator,
    which the layers' initialisations read), so a seed gives the same model every time.

    Shapes: input (B, 1, size, size), output (B, ``n_classes``) logits. With ``kind="conv"``
    the output is exactly invariant to circular shifts of the input by multiples of size / 2.

    Raises:
        ValueError: for an unknown ``kind``, ``n_classes`` or ``alpha`` below 1, or a ``size``
            that is not a power of two of at least 2.
        TypeError: for an ``n_classes``, ``alpha``, ``seed`` or ``size`` that is not an int.
    """
    check_choice(kind, "kind", QuadrantModel)
    check_int(n_classes, "n_classes", minimum=1)
    check_int(alpha, "alpha", minimum=1)
    check_int(seed, "seed")
    check_int(size, "size", minimum=2)
    if size & (size - 1):
        raise ValueError(f"`size` must be a power of two, got {size}")
    n_layers = size.bit_length() - 1
    torch.manual_seed(seed)
    channels = (1, *(alpha * 2**i for i in range(n_layers)))
    sizes = tuple(size >> i for i in range(n_layers + 1))
    modules: list[nn.Module] = []
    for i in range(n_layers):
        shape = (channels[i], channels[i + 1], sizes[i], sizes[i + 1])
        modules += [_layer(kind, shape, last=i == n_layers - 1), nn.ReLU()]
    modules += [nn.Flatten(), nn.Linear(channels[-1], n_classes)]
    return nn.Sequential(*modules)
