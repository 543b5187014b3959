"""Paper 002, section 4.1 (Figs. 2 and 5): discover the data-independent symmetries of two-layer
linear and ReLU networks, and score them against the known GL(h) and rescaling symmetries.

Cases (the action reads (g, theta) only: section 4.1's data-independent setting, where a field
orthogonal to the loss gradient for every X must lie in the symmetry's tangent space):

* ``linear_1x1``: ``||W2 W1 X - Y||^2`` with scalars (m = h = n = k = 1), one generator of gl(2)
  (Fig. 2); ``cos_true`` compares the field with the rescaling tangent (W1, -W2).
* ``linear_h2``: a linear net with m = n = h = 2, two generators; known: GL(2).
* ``relu_h3``: a ReLU net with h = 3, two generators; known: positive rescaling.
* ``linear_fig5``: the linear net of Fig. 5 (W2 in R^{1x2}, W1 in R^{2x1}), two generators.

Writes ``results.json`` (metrics per case), generator heatmaps, training curves and the loss along
the learned flows next to random directions. Usage::

    python experiments/rescaling.py --out results [--seed 0] [--device cpu] [--quick]
"""

from __future__ import annotations

from functools import partial

from _discovery import discovery_experiment
from symdisc.losses import two_layer

CASES = {
    "linear_1x1": dict(loss=partial(two_layer, "identity", 1, 1, 1, 1), d=2, k=1, known="gl"),
    "linear_h2": dict(loss=partial(two_layer, "identity", 2, 2, 2, 2), d=2, k=2, known="gl"),
    "relu_h3": dict(loss=partial(two_layer, "relu", 2, 3, 2, 2), d=3, k=2, known="rescaling"),
    "linear_fig5": dict(loss=partial(two_layer, "identity", 1, 2, 1, 1), d=2, k=2, known="gl"),
}
BETA = 1.0  # the target norm of the fields (Weights.beta)
TARGETS = {
    "linear_1x1": {
        "cos_true": (">=", 0.99),
        "invariance_median": ("<=", 1e-2),
        "v_norm_mean": ("within", (BETA, 0.1)),
    },
    "linear_h2": {"energy_outside": ("<=", 0.05)},
    "relu_h3": {"energy_outside": ("<=", 0.05)},
}

if __name__ == "__main__":
    discovery_experiment("rescaling", __doc__, CASES, TARGETS, data_dependent=False, steps=5000)
