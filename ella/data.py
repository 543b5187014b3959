"""Data sets of the invariance experiments (paper 001, section 5 and appendix B).

* :func:`rotation_toy`: 2-D points on arcs made by a soft rotational invariance about the
  origin, labelled by radius band and arc (section 5.1, appendix B.4);
* :func:`digits_images` and :func:`transformed_digits`: the scikit-learn 8x8 digits upsampled
  to 16x16 and transformed per image (appendix B.1, in miniature): versions ``rotated``,
  ``partially_rotated``, ``translated``, ``scaled``, ``original``;
* :func:`read_idx` and :func:`load_mnist`: MNIST / Fashion-MNIST from local IDX files (the
  paper-scale data, where it exists; nothing is downloaded).
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ella.invariance import affine_matrices, affine_transform

__all__ = [
    "VERSIONS",
    "DigitsVersion",
    "rotation_toy",
    "digits_images",
    "transform_images",
    "transformed_digits",
    "imposed_eta",
    "read_idx",
    "load_mnist",
]

DigitsVersion = Literal["rotated", "partially_rotated", "translated", "scaled", "original"]
VERSIONS: tuple[str, ...] = get_args(DigitsVersion)

TRANSLATE_FRACTION = 8 / 28
"""Largest shift as a fraction of the image side: U[-8, 8] pixels of MNIST's 28 (app. B.1)."""


def rotation_toy(
    n: int,
    seed: int,
    *,
    n_sectors: int = 2,
    n_rings: int = 2,
    n_classes: int = 2,
    max_angle_deg: float = 60.0,
    radius: tuple[float, float] = (0.5, 2.0),
    jitter_deg: float = 2.0,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """2-D points with a soft ``+-max_angle_deg`` rotational invariance about the origin.

    Every point picks a sector s (of ``n_sectors``, base direction ``2 pi s / n_sectors``,
    jittered by N(0, jitter_deg^2)) and a radius r ~ U[radius], and is rotated about the origin
    by U[-max, max] degrees. With the default 2 sectors and 60 degrees the two arcs of 120
    degrees are separated by gaps of 60 degrees; with 3 sectors they would tile the circle, and
    a rotation of a point near an arc's end would carry it into the next arc, whose label
    differs, so the largest label-preserving extent would be smaller than the generating one
    (measured: the full-GGN LILA then learns 37-41 degrees, the KFAC one 60-64). The label
    is ``(ring + s) mod n_classes`` with ``ring`` the index of r among ``n_rings`` equal bands:
    within an arc it depends on the radius only (a rotation-invariant rule that a
    non-invariant network must learn as curved boundaries), and it changes from one arc to the
    next (so that a rotation much beyond the arc's half-width mixes the classes).

    Returns:
        ``(x (n, 2), y (n,))``; the same seed gives the same points.
    """
    if n < 1 or n_classes < 2 or n_sectors < 1 or n_rings < 1:
        raise ValueError(
            f"`n` must be >= 1, `n_classes` >= 2 and `n_sectors`, `n_rings` >= 1, got "
            f"{n}, {n_classes}, {n_sectors}, {n_rings}"
        )
    g = torch.Generator().manual_seed(seed)
    sector = torch.randint(0, n_sectors, (n,), generator=g)
    lo, hi = radius
    r = lo + (hi - lo) * torch.rand(n, generator=g, dtype=dtype)
    ring = ((r - lo) / ((hi - lo) / n_rings)).floor().long().clamp(max=n_rings - 1)
    y = (ring + sector) % n_classes
    base = 2 * math.pi * sector.to(dtype) / n_sectors
    base = base + math.radians(jitter_deg) * torch.randn(n, generator=g, dtype=dtype)
    turn = math.radians(max_angle_deg) * (2 * torch.rand(n, generator=g, dtype=dtype) - 1)
    theta = base + turn
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1), y


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
    from ella.invariance import AFFINE_NAMES

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


# --------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------

_IDX_TYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array of its shape and type.

    Raises:
        ValueError: for a file that is not IDX (wrong magic number or size).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (magic {raw[:4]!r})")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    count = int(np.prod(shape)) if shape else 0
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(
            f"{path}: header says shape {shape} of {dtype} ({count * dtype.itemsize} bytes), "
            f"the file holds {len(raw) - offset}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)


def load_mnist(
    root: str | Path, split: Literal["train", "test"] = "train"
) -> tuple[Tensor, Tensor]:
    """MNIST or Fashion-MNIST (same file layout) from a local directory of IDX files.

    Looks for ``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` with or without ``.gz`` in
    ``root``. Nothing is downloaded.

    Returns:
        ``(images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64)``.

    Raises:
        FileNotFoundError: naming the files looked for.
        ValueError: for an unknown split or inconsistent files.
    """
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}")
    root = Path(root)
    prefix = "train" if split == "train" else "t10k"

    def find(stem: str) -> Path:
        for name in (stem, f"{stem}.gz"):
            if (root / name).exists():
                return root / name
        raise FileNotFoundError(f"neither {stem} nor {stem}.gz in {root}")

    images = read_idx(find(f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"images {images.shape} and labels {labels.shape} do not match")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return x, torch.from_numpy(labels.astype(np.int64))
