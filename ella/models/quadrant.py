"""The models of paper 000's quadrant experiment (section 6.1, table 1), in miniature: FC, CONV
and the learnable-symmetry F-FC+CONV on the 16x16 canvases of :func:`ella.data.quadrant_digits`.

Four relaxed layers, each halving the resolution, with ReLU after each, then a plain
``nn.Linear``:

====  ====================  ==================
#     input                 output
====  ====================  ==================
1     1 x 16 x 16           a x 8 x 8
2     a x 8 x 8             2a x 4 x 4
3     2a x 4 x 4            4a x 2 x 2
4     4a x 2 x 2            8a x 1 x 1
5     flattened 8a          ``n_classes`` (``nn.Linear``)
====  ====================  ==================

The relaxed layers are those of :data:`ella.models.LAYERS`: ``fc`` (FC), ``conv`` (CONV with
polyphase pooling in every halving layer, so the network is exactly invariant to circular
shifts of the canvas: a 1 x 1 map at the end) and ``ffc_conv`` (``PathSum(FFC, CONV)``, the
paper's learnable symmetry, "F-FC+CONV").
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from ella.models.neyshabur import LAYERS, LayerSpec
from symdisc.runtime import check_choice, check_int

__all__ = ["QUADRANT_MODELS", "QuadrantModel", "quadrant_model"]

QuadrantModel = Literal["fc", "conv", "ffc_conv"]
QUADRANT_MODELS: tuple[str, ...] = get_args(QuadrantModel)
#: the name in :data:`LAYERS` of each model's relaxed layers
_LAYER_OF = {"fc": "fc", "conv": "conv", "ffc_conv": "ffc+conv"}
#: side of the input canvas (four halvings down to 1 x 1)
_SIZE = 16


def quadrant_model(
    kind: QuadrantModel, n_classes: int, alpha: int = 4, seed: int = 0
) -> nn.Sequential:
    """Relaxed layers 1x16 -> a x8 -> 2a x4 -> 4a x2 -> 8a x1 (ReLU after each), flatten, then
    ``nn.Linear(8a, n_classes)``; ``a`` = ``alpha``.

    The initial weights are drawn after ``torch.manual_seed(seed)`` (torch's global generator,
    which the layers' initialisations read), so a seed gives the same model every time.

    Shapes: input (B, 1, 16, 16), output (B, ``n_classes``) logits. With ``kind="conv"`` the
    output is exactly invariant to circular shifts of the input.

    Raises:
        ValueError: for an unknown ``kind``, or ``n_classes`` or ``alpha`` below 1.
        TypeError: for an ``n_classes``, ``alpha`` or ``seed`` that is not an int.
    """
    check_choice(kind, "kind", QuadrantModel)
    check_int(n_classes, "n_classes", minimum=1)
    check_int(alpha, "alpha", minimum=1)
    check_int(seed, "seed")
    build = LAYERS[_LAYER_OF[kind]]
    torch.manual_seed(seed)
    channels = (1, alpha, 2 * alpha, 4 * alpha, 8 * alpha)
    sizes = (_SIZE, _SIZE // 2, _SIZE // 4, _SIZE // 8, _SIZE // 16)
    modules: list[nn.Module] = []
    for i in range(4):
        spec = LayerSpec(channels[i], channels[i + 1], sizes[i], sizes[i + 1])
        modules += [build(spec), nn.ReLU()]
    modules += [nn.Flatten(), nn.Linear(channels[-1], n_classes)]
    return nn.Sequential(*modules)
