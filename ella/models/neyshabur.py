"""The CIFAR-10 architecture of paper 000 (App. F.1, table 6, after Neyshabur 2020), with any
relaxed layer in place of its eight 3 x 3 convolutions.

Layers (alpha = ``alpha``, resolutions for ``image_size`` = 32; they scale with image_size / 32;
images smaller than 32 x 32, such as MNIST's 28 x 28, are zero-padded to 32 x 32 first, see
below):

====  ==========================  ==================
#     input                       output
====  ==========================  ==================
1     Cin x 32 x 32               a x 32 x 32
2     a x 32 x 32                 2a x 16 x 16  (halving)
3     2a x 16 x 16                2a x 16 x 16
4     2a x 16 x 16                4a x 8 x 8    (halving)
5     4a x 8 x 8                  4a x 8 x 8
6     4a x 8 x 8                  8a x 4 x 4    (halving)
7     8a x 4 x 4                  8a x 2 x 2    (halving)
8     8a x 2 x 2                  16a x 1 x 1   (halving)
9     ``nn.Conv2d(16a, 64a, 1)``  + ReLU
10    ``nn.Conv2d(64a, n_classes, 1)``, flattened to (B, n_classes)
====  ==========================  ==================

Layers 1-8 are relaxed layers followed by ReLU (table 6 has typos in the channels of rows 3, 5
and 8; the table above is the one that reproduces table 2's parameter counts). A halving layer
maps directly to the smaller resolution (FC, F-FC, S-FC) or convolves at full resolution and
subsamples with polyphase pooling (CONV, S-CONV), so CONV networks are strictly equivariant to
circular translations up to layer 8 and invariant after it. Layers 9 and 10 are plain, untagged
``nn.Conv2d`` (1 x 1 on a 1 x 1 map: no spatial structure to relax); ``parameter_paths`` does not
list them.

Parameter counts (:func:`count_parameters`, alpha = 10, 3 x 32 x 32, 10 classes) count *every*
parameter: FC/CONV weights, F-FC factors, anchor values u and lengthscales omega of sparse layers
(one omega per anchor, shared over channels: 2,197 in all S-FC layers, 40 in all S-CONV layers),
learnable anchor positions if any (fixed positions are buffers and do not count), all biases (FC:
C'H'W'; CONV, S-CONV, F-FC, S-FC: C'), and layers 9-10 (108,800 weights + 650 biases):

=============  ===========  ============  ===========  =========
layer          all          of which      table 2      rounded
                            biases
=============  ===========  ============  ===========  =========
fc             133,635,690  28,010        133.6 M      133.6
conv               338,770   1,100        0.3 M        0.3
fc+conv        133,865,010  28,460        133.9 M      133.9
ffc              1,540,940   1,100        1.5 M        1.5
ffc+conv         1,770,260   1,550        1.8 M        1.8
sfc                834,017   1,100        0.8 M        0.8
sconv              237,090   1,100        0.2 M        0.2
sfc+sconv          961,657   1,550        1.0 M        1.0
=============  ===========  ============  ===========  =========

All eight rows match, and the CONV count equals the 338,770 that table 7 of the paper gives for
its "Classical CNN" at alpha = 10. The rule needs the C'H'W' bias of FC (without it FC+CONV would
be 133.8 M) and per-channel biases in F-FC and S-FC (with C'H'W' ones F-FC would be 1.6 M and
S-FC 0.9 M). The lengthscales do not move any row (2,237 in all); whether they count is a
convention.

Images smaller than 32 x 32 (``image_size`` < 32, e.g. MNIST's 28 x 28, table 3 of the paper)
are zero-padded to 32 x 32 by a first child ``pad`` (``nn.ZeroPad2d``: ``(32 - N) // 2`` pixels
before, the rest after, on both axes), and the network above runs unchanged. Why padding and not
a resolution rule for 28: every halving layer needs an even size (polyphase pooling, App. F.2),
and 28 -> 14 -> 7 cannot halve three more times, so a 28-pixel network would need a different
layer list than table 6; padding keeps the table's layers, resolutions and parameter counts (a
28 x 28 network has exactly the parameters of the 32 x 32 one), and it is what LeNet-style MNIST
networks do. The pad value is 0 in the model's input space, i.e. the mean pixel of standardised
images (F.5), not the background; circular shifts of the padded 32 x 32 canvas stay exact
symmetries of CONV networks. Sizes above 32 must be multiples of 32. Sizes below 16
(:data:`MIN_IMAGE_SIZE`) are refused: table 6 is a 32 x 32 network (the paper pads only MNIST's
28 x 28, table 3), and a smaller image would sit in a canvas of more than 3/4 zeros, almost
surely a mistake (e.g. a channel count passed as the size); upsample such images first.

The group networks (:data:`GROUP_LAYERS`: "gconv", "pointwise_gconv", "gffc", "ffc+conv+gconv")
lift the image to p4 feature maps (constant over the rotations), use group layers 1-8 and take
the maximum over the rotations before layer 9. "gconv" has 1,025,380 parameters and
"pointwise_gconv" 338,770 at alpha = 10: exactly the "Full" and "Pointwise" rows of table 7.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ella.layers import CONV, FC, FFC, SCONV, SFC, GroupPool, PathSum, PriorTarget
from ella.layers import group_paths as gp
from symdisc.runtime import check_choice, check_int

__all__ = [
    "LayerSpec", "LAYERS", "GROUP_LAYERS", "INITS", "MIN_IMAGE_SIZE", "neyshabur", "he_rescale",
    "count_parameters",
]  # fmt: skip

#: the smallest ``image_size`` of :func:`neyshabur`: smaller images are refused rather than
#: zero-padded into a 32 x 32 canvas that would be more than 3/4 padding (module docstring)
MIN_IMAGE_SIZE = 16

#: the initialisations of :func:`neyshabur` (its ``init`` argument)
INITS = ("default", "he")


@dataclass(frozen=True)
class LayerSpec:
    """What a layer builder gets: the shapes of one of layers 1-8, and options.

    ``prior_on`` is passed to the sparse layers (S-FC, S-CONV): it decides where the Laplace
    prior sits and what the posterior is over (table 2's rows "u": ``"anchors"``, "omega":
    ``"lengthscales"``; see :class:`~ella.layers.SFC` and :func:`ella.laplace.prior_groups`).
    """

    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    prior_on: PriorTarget = "anchors"


def _shapes(s: LayerSpec) -> tuple[int, int, int, int]:
    return s.in_channels, s.out_channels, s.in_size, s.out_size


#: Builders of layers 1-8 by name. Add an entry ``LAYERS["name"] = lambda spec: module`` to offer
#: a new layer (e.g. group convolutions) to :func:`neyshabur`.
LAYERS: dict[str, Callable[[LayerSpec], nn.Module]] = {
    "fc": lambda s: FC(*_shapes(s)),
    "conv": lambda s: CONV(*_shapes(s)),
    "fc+conv": lambda s: PathSum(FC(*_shapes(s)), CONV(*_shapes(s))),
    "ffc": lambda s: FFC(*_shapes(s)),
    "ffc+conv": lambda s: PathSum(FFC(*_shapes(s)), CONV(*_shapes(s))),
    "sfc": lambda s: SFC(*_shapes(s), prior_on=s.prior_on),
    "sconv": lambda s: SCONV(*_shapes(s), prior_on=s.prior_on),
    "sfc+sconv": lambda s: PathSum(
        SFC(*_shapes(s), prior_on=s.prior_on), SCONV(*_shapes(s), prior_on=s.prior_on)
    ),
    # layers on p4 feature maps (B, C, 4, H, W), see GROUP_LAYERS
    "gconv": lambda s: gp.gconv_path(*_shapes(s)),
    "pointwise_gconv": lambda s: gp.pointwise_gconv_path(*_shapes(s)),
    "gffc": lambda s: gp.ffc_path(*_shapes(s)),
    "ffc+conv+gconv": lambda s: gp.GroupPathSum(
        gp.ffc_path(*_shapes(s)), gp.conv_path(*_shapes(s)), gp.gconv_path(*_shapes(s))
    ),
}

#: The names in :data:`LAYERS` whose layers act on p4 feature maps: their network lifts the
#: input to the group first (:class:`~ella.layers.group_paths.Lift`) and takes the maximum over
#: the rotations after layer 8 (:class:`~ella.layers.GroupPool`), so that with only
#: GCONV paths it is invariant to quarter turns of the image (paper 000, App. B and F.3).
GROUP_LAYERS = frozenset({"gconv", "pointwise_gconv", "gffc", "ffc+conv+gconv"})


def neyshabur(
    layer: str, alpha: int = 10, in_channels: int = 3, n_classes: int = 10, image_size: int = 32,
    *, prior_on: PriorTarget = "anchors", init: str = "default",
) -> nn.Sequential:  # fmt: skip
    """The architecture of table 6 with ``layer`` for layers 1-8: (B, Cin, N, N) -> (B, n_classes).

    Args:
        layer: a key of :data:`LAYERS` ("fc", "conv", "fc+conv", "ffc", "ffc+conv", "sfc",
            "sconv", "sfc+sconv"; on p4 feature maps "gconv", "pointwise_gconv", "gffc",
            "ffc+conv+gconv"; and whatever was registered).
        alpha: the width multiplier a.
        in_channels: Cin.
        n_classes: outputs of layer 10.
        image_size: N, from :data:`MIN_IMAGE_SIZE` = 16 to 32 (zero-padded to 32, module
            docstring) or a multiple of 32
            (resolutions N, N/2, N/2, N/4, N/4, N/8, N/16, N/32).
        prior_on: passed to the sparse layers (their ``prior_target``): "anchors" (prior and
            posterior over u, table 2 rows "u"), "lengthscales" (over omega, rows "omega") or
            "weights" (over the induced weights); other layers ignore it.
        init: "default": every layer's own initialisation, ``U(+-1/sqrt(fan_in))`` (the
            ``nn.Conv2d`` scale); without normalisation each ReLU layer then shrinks the second
            moment of the features ~6 x (CONV; F-FC's product of two such factors ~18 x), so
            the deep networks at small alpha barely train in a few epochs. "he": after
            construction, :func:`he_rescale` sets the weights of layers 1-9 to He's
            variance-preserving scale for ReLU networks (each layer's gain 2 on the features
            it gets from Gaussian images, split evenly over its paths).

    Returns:
        ``nn.Sequential`` with children ``layer1``, ``relu1``, ..., ``layer8``, ``relu8``,
        ``conv9``, ``relu9``, ``conv10``, ``flatten`` (group networks: ``lift`` first and
        ``rotation_pool`` after ``relu8``; ``image_size`` < 32: ``pad`` before everything);
        slicing it gives the feature maps. For ``image_size`` > 32 layer 8 ends at
        (N/32) x (N/32), and a global average pool ``pool`` (strictly invariant, no
        parameters) comes before ``conv9``.

    Raises:
        ValueError: unknown ``layer`` or ``init``, non-positive sizes, ``image_size`` below 16
            (:data:`MIN_IMAGE_SIZE`), or above 32 and not divisible by 32.
        TypeError: non-int sizes.
    """
    check_choice(layer, "layer", sorted(LAYERS))
    a = check_int(alpha, "alpha", minimum=1)
    check_int(in_channels, "in_channels", minimum=1)
    check_int(n_classes, "n_classes", minimum=1)
    n = check_int(image_size, "image_size", minimum=1)
    check_choice(init, "init", INITS)
    if n > 32 and n % 32:
        raise ValueError(f"`image_size` must be at most 32 or divisible by 32, got {image_size}")
    if n < MIN_IMAGE_SIZE:
        raise ValueError(
            f"`image_size` must be at least {MIN_IMAGE_SIZE}: table 6 is the network of 32 x 32 "
            f"images (CIFAR-10; 28 x 28 MNIST is zero-padded to 32), and {n} x {n} images would "
            f"be padded to a 32 x 32 canvas of more than 3/4 zeros; got {image_size}. Upsample "
            "the images (torch.nn.functional.interpolate) to at least 16 x 16, or use a smaller "
            "network"
        )
    children: dict[str, nn.Module] = {}
    if n < 32:  # zero-pad to 32 x 32 (module docstring: why not a 28-pixel resolution rule)
        before = (32 - n) // 2
        children["pad"] = _PadTo32(n, before)
        n = 32
    channels = [in_channels, a, 2 * a, 2 * a, 4 * a, 4 * a, 8 * a, 8 * a, 16 * a]
    sizes = [n, n, n // 2, n // 2, n // 4, n // 4, n // 8, n // 16, n // 32]
    group = layer in GROUP_LAYERS
    if group:
        children["lift"] = gp.Lift()
    for i in range(8):
        spec = LayerSpec(channels[i], channels[i + 1], sizes[i], sizes[i + 1], prior_on)
        children[f"layer{i + 1}"] = LAYERS[layer](spec)
        children[f"relu{i + 1}"] = nn.ReLU()
    if group:
        children["rotation_pool"] = GroupPool()
    if n > 32:  # layer 8 ends at (N/32) x (N/32): average it to 1 x 1 (global pooling)
        children["pool"] = nn.AdaptiveAvgPool2d(1)
    children["conv9"] = nn.Conv2d(16 * a, 64 * a, 1)
    children["relu9"] = nn.ReLU()
    children["conv10"] = nn.Conv2d(64 * a, n_classes, 1)
    children["flatten"] = nn.Flatten(1)
    model = nn.Sequential(OrderedDict(children))
    if init == "he":
        he_rescale(model)
    return model


class _PadTo32(nn.ZeroPad2d):
    """``nn.ZeroPad2d`` from N x N to 32 x 32 that first checks that its input is N x N (a
    wrong size would otherwise fail later, in layer 1, with the padded size in the message)."""

    def __init__(self, size: int, before: int) -> None:
        after = 32 - size - before
        super().__init__((before, after, before, after))
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[-2:]) != (self.size,) * 2:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"neyshabur(image_size={self.size}): `x` must be (B, C, {self.size}, "
                f"{self.size}) images (zero-padded to 32 x 32 inside), got {got}"
            )
        return super().forward(x)


#: parameters that a path's output (bias aside) is not linear in: biases, RBF lengthscales and
#: anchor positions of the sparse layers
_NOT_WEIGHT_LIKE = re.compile(r"^(bias|omega\d*|z\d*)$")


def _paths(layer: nn.Module) -> list[nn.Module]:
    """The paths of one of layers 1-8: a path sum's summands, or the layer itself."""
    if isinstance(layer, PathSum):
        return list(layer.layers)
    if isinstance(layer, gp.GroupPathSum):
        return list(layer.branches)
    return [layer]


@torch.no_grad()
def _rescale_path(path: nn.Module, x: Tensor, gain: float) -> float:
    """Scale the weight-like parameters of ``path`` so that ``E|path(x)|^2 = gain E|x|^2``
    with its biases set to 0; return the factor s applied to the output. The output is
    multilinear in the d weight-like tensors (FC, CONV, GCONV weights: d = 1; F-FC's theta1,
    theta2 or S-FC's u1, u2: d = 2; S-CONV's u: d = 1), so each is scaled by s^(1/d)."""
    params = dict(path.named_parameters())
    biases = {n: p.clone() for n, p in params.items() if n.rsplit(".", 1)[-1] == "bias"}
    weights = [p for n, p in params.items() if not _NOT_WEIGHT_LIKE.match(n.rsplit(".", 1)[-1])]
    for name in biases:
        params[name].zero_()
    measured = float(path(x).square().mean() / x.square().mean())
    scale = math.sqrt(gain / measured)
    for p in weights:
        p.mul_(scale ** (1.0 / len(weights)))
    for name, value in biases.items():
        params[name].copy_(value)
    return scale


@torch.no_grad()
def he_rescale(model: nn.Sequential, n_probe: int = 16, seed: int = 0) -> nn.Sequential:
    """Rescale the weights of a :func:`neyshabur` network in place to He's variance-preserving
    scale for ReLU networks (He et al. 2015) and return it.

    He's condition ``Var(w) = 2 / fan_in`` is ``E|y|^2 = 2 E|x|^2`` for a layer y = W x with
    i.i.d. weights and x the output of the previous ReLU: a gain of 2 that the next ReLU halves.
    Layers 1-8 are not all plain ``W x`` with i.i.d. weights (F-FC and S-FC weights are
    products of two factors, S-CONV and S-FC weights are smooth RBF combinations of anchor
    values, so the non-zero mean of ReLU features adds up coherently; halving layers pool by
    polyphase), so the gain is measured on the features the layer actually gets at
    initialisation rather than read off a fan-in: a probe of ``n_probe`` Gaussian images
    ``N(0, I)`` of the network's input shape (standardised images, F.5; drawn from its own
    ``torch.Generator`` seeded with ``seed``, the global random state is not touched) is passed
    through the network layer by layer, and before each of layers 1-8 and ``conv9`` (all
    followed by ReLU) every path of the layer, its biases set to 0, gets gain ``2 / P`` on that
    layer's input, P the number of paths (independent paths add their second moments: the
    layer's gain is 2 and no path is favoured at initialisation). A path is rescaled through
    its weight-like parameters (all but biases, lengthscales omega and anchor positions z);
    ``conv10`` (the logits) and every bias, omega and z keep their values. For a CONV layer on
    a zero-mean input this is ``Var(w) = 2 / (C S^2)``, CONV's own fan-in, up to the probe's
    sampling error.
    """
    gen = torch.Generator().manual_seed(check_int(seed, "seed"))
    check_int(n_probe, "n_probe", minimum=1)
    if not (isinstance(model, nn.Sequential) and hasattr(model, "layer1")):
        raise TypeError(
            f"`model` must be a network of :func:`neyshabur` (an nn.Sequential with `layer1`), "
            f"got {type(model).__name__}"
        )
    first = model.layer1
    param = next(first.parameters())
    shape = (n_probe, first.in_channels, first.in_size, first.in_size)
    h = torch.randn(shape, generator=gen).to(param.device, param.dtype)
    for name, child in model.named_children():
        if name == "pad":
            continue  # the probe already has the padded size
        if name.startswith("layer") or name == "conv9":
            paths = _paths(child) if name != "conv9" else [child]
            for path in paths:
                _rescale_path(path, h, 2.0 / len(paths))
        if name == "conv9":
            break
        h = child(h)
    return model


def count_parameters(
    layer: str, alpha: int = 10, in_channels: int = 3, n_classes: int = 10, image_size: int = 32
) -> int:
    """Number of parameters of ``neyshabur(layer, ...)``, every parameter counted (module
    docstring), from shapes only: the model is built on the ``meta`` device, so nothing is
    allocated and the 133.6M-parameter FC model costs nothing."""
    with torch.device("meta"):
        model = neyshabur(layer, alpha, in_channels, n_classes, image_size)
    return sum(p.numel() for p in model.parameters())
