"""The quadrant digits of paper 000 (section 6.1, table 1: "adapting symmetry to task"), in
miniature: the scikit-learn 8x8 digits, each placed in one of the four quadrants of a zero
16x16 canvas.

Two tasks: ``digit`` (10 classes) is translation invariant; ``digit_quadrant`` (the digit and
its quadrant, 40 classes) cannot be solved under strict translation invariance. The paper uses
MNIST on a larger canvas; this is the same construction on the digits that ship with
scikit-learn.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from symdisc.runtime import check_choice, check_int

__all__ = ["QUADRANT_CLASSES", "QUADRANT_SIZE", "QUADRANT_TASKS", "QuadrantTask", "quadrant_digits"]

QuadrantTask = Literal["digit", "digit_quadrant"]
QUADRANT_TASKS: tuple[str, ...] = get_args(QuadrantTask)
#: number of classes of each task: the digit, or ``digit + 10 * quadrant``
QUADRANT_CLASSES = {"digit": 10, "digit_quadrant": 40}
#: side of the canvas: four 8x8 quadrants
QUADRANT_SIZE = 16


def quadrant_digits(
    task: QuadrantTask, seed: int, n_train: int = 1200
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The scikit-learn digits on a 16x16 canvas, one quadrant per image (seeded).

    Pixels are scaled to [0, 1], placed on a zero canvas in quadrant q (0: upper left, 1: upper
    right, 2: lower left, 3: lower right), and the canvases standardised with one scalar mean
    and standard deviation of the training canvases (so a shift of the digit is still a shift
    of the whole input). Labels: the digit (``task="digit"``) or ``digit + 10 * q``
    (``task="digit_quadrant"``). The quadrants and the split come from one
    ``numpy.random.default_rng(seed)``, so both tasks see the same images: the split is a
    seeded permutation, the first ``n_train`` images train, the rest (597 for the default) test.

    Returns:
        ``(X_train, y_train, X_test, y_test)``: X float32 of shape (N, 1, 16, 16), y int64 of
        shape (N,), N = ``n_train`` for the training part and 1797 - ``n_train`` for the test.

    Raises:
        ValueError: for an unknown ``task``, or ``n_train`` outside (0, 1797).
        TypeError: for a ``seed`` or ``n_train`` that is not an int.
    """
    check_choice(task, "task", QuadrantTask)
    check_int(seed, "seed")
    check_int(n_train, "n_train")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # (1797, 8, 8)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    n = len(labels)
    if not 0 < n_train < n:
        raise ValueError(f"`n_train` must be in (0, {n}), got {n_train}")
    quadrant = rng.integers(0, 4, size=n)
    canvas = np.zeros((n, 1, QUADRANT_SIZE, QUADRANT_SIZE), dtype=np.float32)
    half = QUADRANT_SIZE // 2
    for i in range(n):
        r, c = divmod(int(quadrant[i]), 2)
        canvas[i, 0, r * half : (r + 1) * half, c * half : (c + 1) * half] = images[i]
    target = labels if task == "digit" else labels + 10 * quadrant
    order = rng.permutation(n)
    train, test = order[:n_train], order[n_train:]
    mean, std = canvas[train].mean(), canvas[train].std()
    x = torch.from_numpy((canvas - mean) / std)
    y = torch.from_numpy(target)
    return x[train], y[train], x[test], y[test]
