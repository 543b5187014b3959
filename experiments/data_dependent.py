"""Paper 002, section 4.2 (Figs. 3, 4 and 6): discover data-dependent symmetries of networks with
no known continuous data-independent symmetry.

Cases (the action reads X as well as (g, theta)):

* ``sigmoid_3x3``: ``||W2 sigmoid(W1 X) - Y||^2`` with W1 in R^{3x3}, W2 in R^{1x3}, one data
  point X in R^3 (Figs. 3 and 6), generators in gl(3).
* ``tanh_2layer``: the same two-layer network with tanh in place of sigmoid (section 4.2).
* ``tanh_skip``: the three-layer tanh network with a skip connection (Fig. 4), W1, W2 in R^{2x2},
  W3 in R^{1x2}, X in R^2, generators in gl(2).

The normalised invariance error and the loss drift along the learned flows (against random
directions) are the scores, with the associativity error of the learned action and the
``field_rank`` of the k fields; no known symmetry is assumed. Writes ``results.json`` and, per case,
generator heatmaps, training curves and the loss along the flows. Usage::

    python experiments/data_dependent.py --out results [--seed 0] [--device cpu] [--quick]
"""

from __future__ import annotations

from functools import partial

from _discovery import discovery_experiment
from symdisc.losses import three_layer_tanh_skip, two_layer
from symdisc.objective import Weights

CASES = {
    "sigmoid_3x3": dict(loss=partial(two_layer, "sigmoid", m=1, h=3, n=3, k=1), d=3, k=2),
    "tanh_2layer": dict(loss=partial(two_layer, "tanh", m=1, h=3, n=3, k=1), d=3, k=2),
    "tanh_skip": dict(loss=partial(three_layer_tanh_skip, n=2, h=2, m=1, k=1), d=2, k=2),
}
TARGETS = {
    name: {"invariance_median": ("<=", 0.05), "flow_drift_ratio": ("<=", 0.1)} for name in CASES
}
# The default "fields" form of the objective (scale-free invariance, orthogonal fields). With the
# paper's form the invariance term had to weigh 30, not 10: at 10 the fields of the tanh net
# stopped at a median invariance error of 0.023 and a flow drift ratio of 0.12 after 8000 steps.
WEIGHTS = Weights()

if __name__ == "__main__":
    discovery_experiment(
        "data_dependent", __doc__, CASES, TARGETS, data_dependent=True, steps=8000, weights=WEIGHTS
    )
