"""MNIST / Fashion-MNIST from local IDX files (the paper-scale data; nothing is downloaded).

The data of paper 001's MNIST experiments (section 5.2, appendix B.1) and of paper 000's image
tasks, read from files a user points to; infrastructure, no equation.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from symdisc.runtime import check_choice, check_path

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

    The format (LeCun's MNIST page): two zero bytes, a type byte (0x08 uint8 ... 0x0E float64),
    the number of dimensions n, n big-endian uint32 sizes, then the values, big-endian.

    Raises:
        TypeError: for a ``path`` that is not a str or path.
        FileNotFoundError: naming the path, when it does not exist.
        ValueError: naming the file and what was expected, for a directory, a file that is not
            IDX (wrong magic number), a truncated or corrupted one (header or values shorter
            than the header says, or a ``.gz`` that does not decompress).
    """
    path = check_path(path, "path", exists=True)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip: BadGzipFile, truncated stream
        raise ValueError(
            f"{path}: expected a gzip-compressed IDX file (by its .gz suffix), but it does not "
            f"decompress ({err}); download it again"
        ) from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(
            f"{path} is not an IDX file: expected the magic bytes 00 00 <type in "
            f"{sorted(_IDX_TYPES)}> <ndim>, got {raw[:4]!r}"
        )
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ValueError(
            f"{path}: truncated IDX header: expected {ndim} sizes ({offset} bytes), the file "
            f"holds {len(raw)} bytes"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape)) if shape else 0
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(
            f"{path}: truncated or corrupted IDX file: the header says shape {shape} of {dtype} "
            f"({count * dtype.itemsize} bytes), the file holds {len(raw) - offset}"
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
        TypeError: for a ``root`` that is not a str or path.
        FileNotFoundError: naming the files looked for, where, and where to get them.
        ValueError: for an unknown split, or files that are not IDX, are truncated or do not
            match (naming the files).
    """
    root = check_path(root, "root")
    check_choice(split, "split", ("train", "test"))
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
        raise ValueError(
            f"{root}: expected images (N, 28, 28) and labels (N,) of one N in "
            f"{found[stems[0]].name} and {found[stems[1]].name}, got {images.shape} and "
            f"{labels.shape}"
        )
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return x, torch.from_numpy(labels.astype(np.int64))
