"""CIFAR-10 from its local python pickled batches (paper 000, tables 2 and 3; nothing is
downloaded).

The files are those of ``cifar-10-python.tar.gz`` (https://www.cs.toronto.edu/~kriz/cifar.html):
``data_batch_1`` ... ``data_batch_5`` (50,000 training images) and ``test_batch`` (10,000), each
a pickled dict whose ``b"data"`` is a (N, 3072) uint8 array of rows in channel-major order (1024
red, 1024 green, 1024 blue values, each row by row) and whose ``b"labels"`` holds N ints in
0..9. Images are standardised per channel with the training images' mean and standard deviation
(appendix F.5). The pickles are read by an unpickler that only rebuilds numpy arrays, so a
tampered file cannot run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ella.data.mnist import mnist_split, standardise
from symdisc.runtime import check_bool, check_instance, check_int

__all__ = ["CIFAR10_FILES", "CIFAR10_URL", "load_cifar10", "cifar_shaped_mnist"]

#: the python pickled batches, training batches first
CIFAR10_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
#: where the archive ``cifar-10-python.tar.gz`` is published
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_SUBDIR = "cifar-10-batches-py"
#: the globals a pickled batch may name: numpy's array reconstructors (numpy 1 spells
#: ``numpy.core``, numpy 2 ``numpy._core``) and ``_codecs.encode`` (bytes in protocol-2 pickles
#: written by python 3)
_ALLOWED_GLOBALS = {
    (f"numpy.{core}.{module}", name)
    for core in ("core", "_core")
    for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"))
    + (("numeric", "_frombuffer"),)
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core." + module.removeprefix("numpy.core.")  # no deprecation
        return super().find_class(module, name)


def _batch_dir(root: Path) -> Path:
    """``root`` or ``root/cifar-10-batches-py``, whichever holds all of :data:`CIFAR10_FILES`."""
    candidates = (root, root / _SUBDIR)
    for folder in candidates:
        if all((folder / name).is_file() for name in CIFAR10_FILES):
            return folder
    if not root.is_dir():
        problem = f"the directory {root} does not exist"
    else:
        missing = [
            f"{folder}: missing {', '.join(n for n in CIFAR10_FILES if not (folder / n).is_file())}"
            for folder in candidates
        ]
        problem = "; ".join(missing)
    raise FileNotFoundError(
        f"CIFAR-10 not found ({problem}). Expected the python pickled batches "
        f"{', '.join(CIFAR10_FILES)} in {root} or in {root / _SUBDIR}: download "
        f"cifar-10-python.tar.gz from {CIFAR10_URL} and extract it into {root} so that "
        f"{root / _SUBDIR / CIFAR10_FILES[0]} ... {root / _SUBDIR / CIFAR10_FILES[-1]} exist "
        "(nothing is downloaded here)"
    )


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(data (N, 3072) uint8, labels (N,) int64)`` of one pickled batch.

    Raises:
        ValueError: naming the file, for one that does not unpickle or has the wrong content.
    """
    with open(path, "rb") as f:
        try:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        except Exception as err:  # a corrupted pickle can fail in many ways
            raise ValueError(
                f"{path} is not a CIFAR-10 python batch (unpickling failed: {err!r})"
            ) from err
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    get = lambda key: batch.get(key.encode(), batch.get(key))
    data, labels = get("data"), get("labels")
    if data is None or labels is None:
        raise ValueError(f"{path}: expected keys b'data' and b'labels', got {sorted(batch)}")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(
            f"{path}: b'data' must be a (N, 3072) uint8 array, got {data.shape} {data.dtype}"
        )
    labels = np.asarray(labels)
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: b'labels' must hold {data.shape[0]} ints, got {labels.shape} {labels.dtype}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must be in 0..9, got {labels.min()}..{labels.max()}")
    return data, labels.astype(np.int64)


def _read_split(folder: Path, names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    """The batches ``names`` concatenated in order: (N, 3, 32, 32) float32 in [0, 1], (N,)."""
    batches = [_read_batch(folder / name) for name in names]
    data = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    images = torch.from_numpy(data).reshape(-1, 3, 32, 32).to(torch.float32).div_(255.0)
    return images, torch.from_numpy(labels)


def load_cifar10(
    root: str | os.PathLike, *, standardised: bool = True
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CIFAR-10 from the python pickled batches in ``root`` or ``root/cifar-10-batches-py``.

    Never downloads: get ``cifar-10-python.tar.gz`` from :data:`CIFAR10_URL` and extract it into
    ``root``.

    Args:
        root: directory holding :data:`CIFAR10_FILES`, directly or in ``cifar-10-batches-py/``.
        standardised: standardise each channel with the mean and standard deviation of the
            training images (over images and pixels; appendix F.5 of paper 000), the test images
            with the same training statistics; otherwise pixels stay in [0, 1].

    Returns:
        ``(x_train (50000, 3, 32, 32) float32, y_train (50000,) int64, x_test (10000, 3, 32, 32)
        float32, y_test (10000,) int64)``, in the files' order (batches 1 to 5, then the test
        batch); channels red, green, blue.

    Raises:
        TypeError: for a ``root`` that is not a path or ``standardised`` that is not a bool.
        FileNotFoundError: when a directory or file is missing; the message names the files
            expected and where to put them.
        ValueError: naming the file, for a batch that is corrupted or mis-shaped.
    """
    check_instance(root, "root", (str, os.PathLike))
    check_bool(standardised, "standardised")
    folder = _batch_dir(Path(root))
    x_train, y_train = _read_split(folder, CIFAR10_FILES[:-1])
    x_test, y_test = _read_split(folder, CIFAR10_FILES[-1:])
    if standardised:
        std, mean = torch.std_mean(x_train, dim=(0, 2, 3), keepdim=True)
        for x in (x_train, x_test):
            x.sub_(mean).div_(std)
    return x_train, y_train, x_test, y_test


def cifar_shaped_mnist(
    n_train: int = 1000, seed: int = 0, *, n_test: int | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Real MNIST digits shaped like CIFAR-10 images, for CPU-sized runs of CIFAR-10 code.

    The embedded MNIST digits (:func:`ella.data.mnist_split`, 5,000 real 28x28 digits, no
    download) split by a seeded permutation, zero-padded by 2 pixels on every side to 32x32,
    repeated over 3 channels, and standardised with the training images' scalar mean and
    standard deviation (appendix F.5 of paper 000). A stand-in for CIFAR-10 where its files are
    not at hand (``experiments/cifar_invariance.py`` without ``--data-dir``); its numbers are
    not CIFAR-10 numbers.

    Args:
        n_train: training images, in (0, 5000).
        seed: seed of the split.
        n_test: keep the first ``n_test`` test images (None: all ``5000 - n_train``).

    Returns:
        ``(x_train (n_train, 3, 32, 32) float32, y_train (n_train,) int64, x_test, y_test)``.

    Raises:
        TypeError, ValueError: as :func:`ella.data.mnist_split`, or an ``n_test`` that is not
            a positive int.
    """
    x_train, y_train, x_test, y_test = mnist_split(n_train, seed, standardised=False)
    if n_test is not None:
        check_int(n_test, "n_test", minimum=1)
        x_test, y_test = x_test[:n_test], y_test[:n_test]
    shape = lambda x: torch.nn.functional.pad(x, (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()
    x_train, x_test = standardise(shape(x_train), shape(x_test))
    return x_train, y_train, x_test, y_test
