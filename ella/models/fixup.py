"""Fixup residual networks for 32 x 32 images (Zhang et al., 2019, "Fixup initialization";
paper 001, appendix B.2 and table 2: BatchNorm conflicts with the Bayesian model, so the
CIFAR-10 ResNets of LILA use Fixup's scalar biases, multipliers and initialisation instead).

Architecture (depth ``6 n + 2``; the paper's ResNets have n = 1 (depth 8) or n = 2 (depth 14)):

* stem: 3 x 3 convolution ``in_channels -> in_planes`` (no bias, PyTorch's default init), a
  scalar bias, ReLU;
* three stages of n :class:`FixupBasicBlock` each, widths ``width``, ``2 width``, ``4 width``;
  the first block of stages 2 and 3 halves the resolution (stride 2);
* global average pooling, a scalar bias, ``nn.Linear(4 width, n_classes)``.

A basic block is ``relu(branch(x) + shortcut(x))`` with the branch

    x -> +b1a -> conv3x3(stride) -> +b1b -> relu -> +b2a -> conv3x3 -> *s -> +b2b,

``b..`` scalar biases (:class:`~ella.layers.ScalarBias`, init 0) and ``s`` a scalar multiplier
(:class:`~ella.layers.ScalarScale`, init 1). The shortcut is the identity, or -- when the block
changes the resolution or the number of channels -- the parameter-free shortcut of the LILA code
(and of He et al.'s option A): ``x + b1a`` subsampled by the stride (a 1 x 1 average pool with
stride 2) and padded with zero channels up to the block's width (so the width never shrinks).

Fixup initialisation (with L = 3 n residual branches of m = 2 layers): the first convolution of
every branch is drawn from ``N(0, 2 / (C' 3 3)) * L^(-1/(2m-2)) = ... * L^(-1/2)`` (He init scaled
down), the last convolution of every branch and the final linear layer (weight and bias) are
zero. At initialisation every branch therefore outputs exactly 0 (each block is
``relu(shortcut(x))``) and the network's logits are exactly 0.

The sizes of the paper. Appendix B.2 writes the ResNets as "(input-channels, width)" =
(8, 8), (8, 16), (16, 16) and table 2 uses "ResNet (14-16)". In the authors' code
(``classification_image.py`` of the LILA repository) the model names map to
``resnet_8_8 -> ResNet(depth=8, in_planes=8)``, ``resnet_8_16 -> ResNet(depth=8,
in_planes=16)`` and ``resnet_14_16 -> ResNet(depth=14, in_planes=16)``: the first number is the
**depth** and the second ``in_planes``, the stem's output channels, which is also the width of
the first stage (stages 16, 32, 64 for ResNet (14-16)). :func:`fixup_resnet` takes the same two
numbers (``depth``, ``in_planes``) and an optional separate ``width`` of the first stage
(default ``in_planes``, the paper's networks).

Every parameter has a KFAC rule (``nn.Conv2d`` and ``nn.Linear`` in
:mod:`symdisc.curvature.kfac.rules`, the scalars in :mod:`ella.layers.fixup`), so
``ella.laplace.Laplace(model, "classification", "kron")`` and the augmented KFAC of paper 001
(eq. 19) cover the whole network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ella.layers import check_feature_map
from ella.layers.fixup import ScalarBias, ScalarScale
from symdisc.runtime import check_int

__all__ = ["FixupBasicBlock", "FixupResNet", "fixup_resnet"]


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class FixupBasicBlock(nn.Module):
    """A Fixup basic block (B, C, H, W) -> (B, C', H / stride, W / stride), C' >= C.

    Args:
        in_channels: C.
        out_channels: C' (>= C: the shortcut pads zero channels, it never drops any).
        stride: 1, or 2 to halve the resolution (H and W even).

    Raises:
        TypeError: for non-int arguments.
        ValueError: for non-positive channels, a stride other than 1 or 2, or C' < C.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        check_int(in_channels, "in_channels", minimum=1)
        check_int(out_channels, "out_channels", minimum=1)
        check_int(stride, "stride", minimum=1)
        if stride not in (1, 2):
            raise ValueError(f"`stride` must be 1 or 2, got {stride}")
        if out_channels < in_channels:
            raise ValueError(
                f"`out_channels` must be at least `in_channels` (the shortcut pads zero channels), "
                f"got {out_channels} < {in_channels}"
            )
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.bias1a = ScalarBias()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bias1b = ScalarBias()
        self.bias2a = ScalarBias()
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.scale = ScalarScale()
        self.bias2b = ScalarBias()

    @property
    def projects(self) -> bool:
        """Whether the shortcut subsamples / pads (otherwise it is the identity)."""
        return self.stride != 1 or self.in_channels != self.out_channels

    def parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(branch(x), shortcut(x))``, each (B, C', H', W'); the branch is zero at Fixup
        initialisation. The shortcut is x, or ``x + b1a`` subsampled and zero-padded (``b1a``
        is applied once: its KFAC rule reads one input and output per forward pass)."""
        biased = self.bias1a(x)
        out = F.relu(self.bias1b(self.conv1(biased)))
        out = self.bias2b(self.scale(self.conv2(self.bias2a(out))))
        if not self.projects:
            return out, x
        short = biased[..., :: self.stride, :: self.stride]
        return out, F.pad(short, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))

    def forward(self, x: Tensor) -> Tensor:
        out, short = self.parts(x)
        return F.relu(out + short)


class FixupResNet(nn.Module):
    """A Fixup ResNet of depth ``6 n + 2`` (see the module docstring): (B, C_in, H, W) -> (B, K).

    H and W must be divisible by 4 for the two stride-2 stages to see even maps (any size works
    with the 1 x 1 average pooling shortcut; 32 x 32 for CIFAR-10).

    Args:
        depth: 6 n + 2 with n >= 1 blocks per stage (8, 14, 20, ...).
        in_planes: output channels of the stem convolution.
        width: width of the first stage (stages: width, 2 width, 4 width); >= ``in_planes``.
        n_classes: K.
        in_channels: C_in.

    Raises:
        TypeError: for non-int arguments.
        ValueError: for a depth that is not 6 n + 2, non-positive sizes or width < in_planes.
    """

    def __init__(
        self, depth: int, in_planes: int, width: int, n_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        check_int(depth, "depth", minimum=8)
        check_int(in_planes, "in_planes", minimum=1)
        check_int(width, "width", minimum=1)
        check_int(n_classes, "n_classes", minimum=1)
        check_int(in_channels, "in_channels", minimum=1)
        if (depth - 2) % 6:
            raise ValueError(f"`depth` must be 6 n + 2 (8, 14, 20, ...), got {depth}")
        if width < in_planes:
            raise ValueError(f"`width` must be at least `in_planes`, got {width} < {in_planes}")
        n = (depth - 2) // 6
        self.depth, self.n_blocks = depth, 3 * n
        self.conv1 = _conv3x3(in_channels, in_planes)
        self.bias1 = ScalarBias()
        channels = in_planes
        stages = []
        for i, w in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(FixupBasicBlock(channels, w, stride))
                channels = w
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bias2 = ScalarBias()
        self.fc = nn.Linear(channels, n_classes)
        self.reset_fixup()

    def reset_fixup(self) -> None:
        """Fixup initialisation (in place): first branch convolutions ``N(0, 2 / fan_out) *
        L^(-1/2)``, last branch convolutions and the linear layer zero, scalars 0 / 1."""
        factor = self.n_blocks ** (-0.5)  # L^(-1/(2m-2)) with m = 2 layers per branch
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, FixupBasicBlock):
                    w = m.conv1.weight
                    std = math.sqrt(2.0 / (w.shape[0] * w.shape[2] * w.shape[3])) * factor
                    w.normal_(0.0, std)
                    m.conv2.weight.zero_()
                elif isinstance(m, ScalarBias):
                    m.bias.zero_()
                elif isinstance(m, ScalarScale):
                    m.scale.fill_(1.0)
            self.fc.weight.zero_()
            self.fc.bias.zero_()

    def features(self, x: Tensor) -> Tensor:
        """Pooled features (B, 4 width) before the last scalar bias and the linear layer.

        Raises:
            TypeError: for an ``x`` that is not a tensor of the network's floating dtype.
            ValueError: for an ``x`` that is not (B, C_in, H, W) (an unbatched (C, H, W)
                image included: add the batch dimension with ``x[None]``).
        """
        check_feature_map(x, "FixupResNet", channels=self.conv1.in_channels, module=self)
        x = F.relu(self.bias1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return x.mean(dim=(-2, -1))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.bias2(self.features(x)))


def fixup_resnet(
    depth: int = 14,
    in_planes: int = 16,
    width: int | None = None,
    n_classes: int = 10,
    in_channels: int = 3,
    seed: int | None = None,
) -> FixupResNet:
    """A Fixup ResNet "(depth-in_planes)" of paper 001 (table 2: ``fixup_resnet(14, 16)``;
    appendix B.2/E: ``fixup_resnet(8, 8)``, ``fixup_resnet(8, 16)``), float32.

    Args:
        depth, in_planes, n_classes, in_channels: as :class:`FixupResNet`.
        width: width of the first stage (default ``in_planes``, as in the paper's networks).
        seed: seed of the random initialisation (the global random state is left untouched);
            None draws from the global generator.

    Raises:
        TypeError, ValueError: as :class:`FixupResNet`, or a ``seed`` that is not a
            non-negative int.
    """
    width = in_planes if width is None else width
    if seed is None:
        return FixupResNet(depth, in_planes, width, n_classes, in_channels)
    check_int(seed, "seed", minimum=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FixupResNet(depth, in_planes, width, n_classes, in_channels)
