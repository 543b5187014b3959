"""Transformed digits of paper 001 (appendix B.1, in miniature): the scikit-learn 8x8 digits
upsampled to 16x16 and transformed per image; versions ``rotated``, ``partially_rotated``,
``translated``, ``scaled``, ``original``."""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ella.affine import AFFINE_NAMES, affine_matrices, affine_transform

__all__ = [
    "VERSIONS",
    "DigitsVersion",
    "digits_images",
    "transform_images",
    "transformed_digits",
    "imposed_eta",
]


DigitsVersion = Literal["rotated", "partially_rotated", "translated", "scaled", "original"]
VERSIONS: tuple[str, ...] = get_args(DigitsVersion)

TRANSLATE_FRACTION = 8 / 28
"""Largest shift as a fraction of the image side: U[-8, 8] pixels of MNIST's 28 (app. B.1)."""


def digits_images(size: int = 16) -> tuple[Tensor, Tensor]:
    """The 1797 scikit-learn digits in [0, 1], bilinearly upsampled from 8x8 to ``size``.

    Returns:
        ``(images (1797, 1, size, size) float32, labels (1797,) int64)``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp(0.0, 1.0), torch.from_numpy(digits.target.astype(np.int64))


def _version_eps(version: str, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """(eta (6,), eps (n, 6)) of the data's own transformation, in the generators of app. A."""
    eta = torch.zeros(6, dtype=torch.float64)
    eps = torch.zeros(n, 6, dtype=torch.float64)
    u = lambda: 2 * torch.rand(n, generator=g, dtype=torch.float64) - 1  # noqa: E731
    if version in ("rotated", "partially_rotated"):
        eta[2] = math.pi if version == "rotated" else math.pi / 2
        eps[:, 2] = u()
    elif version == "translated":
        eta[0] = eta[1] = 2 * TRANSLATE_FRACTION  # normalised coordinates span 2
        eps[:, 0], eps[:, 1] = u(), u()
    elif version == "scaled":  # joint scale exp(s), s ~ U[-log 2, log 2]
        eta[3] = eta[4] = math.log(2.0)
        s = u()
        eps[:, 3], eps[:, 4] = s, s
    return eta, eps


def imposed_eta(version: str) -> dict[str, float]:
    """The extent of the transformation a version imposes, per component of eta (the dashed
    reference lines of Fig. 3); empty for ``original``."""
    if version not in VERSIONS:
        raise ValueError(f"`version` must be one of {VERSIONS}, got {version!r}")
    eta, _ = _version_eps(version, 1, torch.Generator().manual_seed(0))
    return {name: float(v) for name, v in zip(AFFINE_NAMES, eta) if v != 0}


def transform_images(images: Tensor, version: str, seed: int) -> Tensor:
    """Apply a version's random transformation to every image (seeded; appendix B.1).

    ``rotated``: angle ~ U[-pi, pi]; ``partially_rotated``: U[-pi/2, pi/2]; ``translated``:
    dx, dy ~ U[-8/28, 8/28] of the side (U[-8, 8] pixels at MNIST's 28); ``scaled``: both axes
    by exp(s), s ~ U[-log 2, log 2]; ``original``: unchanged. Bilinear, zeros outside.
    """
    if version not in VERSIONS:
        raise ValueError(f"`version` must be one of {VERSIONS}, got {version!r}")
    if version == "original":
        return images.clone()
    g = torch.Generator().manual_seed(seed)
    eta, eps = _version_eps(version, images.shape[0], g)
    mats = affine_matrices(eta, eps)
    return affine_transform(images, mats.to(images.dtype))


def transformed_digits(
    version: str, seed: int, *, n_train: int = 1000, size: int = 16
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A transformed version of the upsampled digits, split by a seeded permutation.

    Returns:
        ``(x_train, y_train, x_test, y_test)``, x float32 (N, 1, size, size) in [0, 1].
    """
    images, labels = digits_images(size)
    images = transform_images(images, version, seed + 1000)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    tr, te = order[:n_train], order[n_train:]
    return images[tr], labels[tr], images[te], labels[te]
