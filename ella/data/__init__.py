"""Data sets of the experiments of paper 001 (section 5 and appendix B) and paper 000 (table 1).

* :func:`rotation_toy`: 2-D points on arcs made by a soft rotational invariance about the
  origin, labelled by radius band and arc (section 5.1, appendix B.4);
* :func:`digits_images` and :func:`transformed_digits`: the scikit-learn 8x8 digits upsampled
  to 16x16 and transformed per image (appendix B.1, in miniature): versions ``rotated``,
  ``partially_rotated``, ``translated``, ``scaled``, ``original``;
* :func:`quadrant_digits`: the scikit-learn digits in one quadrant of a 16x16 canvas, tasks
  ``digit`` and ``digit_quadrant`` (paper 000, section 6.1, table 1);
* :func:`read_idx` and :func:`load_mnist`: MNIST / Fashion-MNIST from local IDX files (the
  paper-scale data, where it exists; nothing is downloaded).


Data modules never import a method module (:mod:`ella.invariance`, :mod:`ella.laplace`, ...).
"""

from ella.data.digits import (
    VERSIONS,
    DigitsVersion,
    digits_images,
    imposed_eta,
    transform_images,
    transformed_digits,
)
from ella.data.idx import load_mnist, read_idx
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
    "rotation_toy",
    "digits_images",
    "transform_images",
    "transformed_digits",
    "imposed_eta",
    "read_idx",
    "load_mnist",
    "QUADRANT_CLASSES",
    "QUADRANT_SIZE",
    "QUADRANT_TASKS",
    "QuadrantTask",
    "quadrant_digits",
]
