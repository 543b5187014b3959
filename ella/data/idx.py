"""MNIST / Fashion-MNIST from local IDX files (the paper-scale data; nothing is downloaded).

The data of paper 001's MNIST experiments (section 5.2, appendix B.1) and of paper 000's image
tasks, read from files a user points to; infrastructure, no equation.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["read_idx", "load_mnist"]

#: where the IDX files are published (MNIST and Fashion-MNIST use the same file names)
MNIST_SOURCES = (
    "MNIST: https://yann.lecun.com/exdb/mnist/",
    "Fashion-MNIST: https://github.com/zalandoresearch/fashion-mnist",
)

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
    ``root``. Nothing is downloaded: put the files of MNIST (https://yann.lecun.com/exdb/mnist/)
    or Fashion-MNIST (https://github.com/zalandoresearch/fashion-mnist; same names) there.

    Returns:
        ``(images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64)``.

    Raises:
        FileNotFoundError: naming the files looked for, where, and where to get them.
        ValueError: for an unknown split or inconsistent files.
    """
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}")
    root = Path(root)
    prefix = "train" if split == "train" else "t10k"

    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    found = {
        stem: next((root / n for n in (stem, f"{stem}.gz") if (root / n).is_file()), None)
        for stem in stems
    }
    missing = [stem for stem, path in found.items() if path is None]
    if missing:
        where = f"{root}" if root.is_dir() else f"{root} (the directory does not exist)"
        raise FileNotFoundError(
            f"missing {' and '.join(missing)} (with or without .gz) in {where}: the {split} split "
            f"needs {stems[0]} and {stems[1]} there, from MNIST or Fashion-MNIST (same file "
            f"names; {'; '.join(MNIST_SOURCES)}); nothing is downloaded"
        )
    images = read_idx(found[stems[0]])
    labels = read_idx(found[stems[1]])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"images {images.shape} and labels {labels.shape} do not match")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return x, torch.from_numpy(labels.astype(np.int64))
