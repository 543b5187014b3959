"""symdisc: finding symmetries in the parameter spaces of neural networks (paper 002).

=================  ===========================================================================
module             contents
=================  ===========================================================================
``curvature``      the shared derivative layer (Jacobians, Hessian/GGN, KFAC, spectra, ...)
``losses``         the loss zoo: :class:`ParamLoss`, two-layer nets, the tanh net with a skip
``sampler``        fixed sets of (theta, X, Y) samples with their loss gradients
``actions``        group actions a_X(g, theta): :class:`MLPAction`, :class:`LinearAction`
``generators``     k learnable elements of gl(d)
``objective``      the infinitesimal (eqs. 2-4) and exponentiated (app. B.2) objectives
``train``          the trainer: Adam with step decay, checkpoints, resume, NaN stop
``discover``       one call from a loss to a learned symmetry
``known``          known symmetries, their tangent spaces, the null-space baseline
``compose``        symmetries of larger networks induced from subnetworks (Prop. 3.1)
``metrics``        invariance error, energy outside a known space, flow drift, axioms
``plot``           generator heatmaps, training curves, loss along flows, spectra
=================  ===========================================================================
"""

from symdisc import curvature
from symdisc.actions import LinearAction, MLPAction
from symdisc.discover import discover
from symdisc.generators import Generators
from symdisc.losses import ParamLoss, mlp, module_loss, three_layer_tanh_skip, two_layer
from symdisc.sampler import Samples, sample
from symdisc.train import Discovery, TrainConfig, train

__version__ = "0.1.0"

__all__ = [
    "curvature",
    "Discovery",
    "Generators",
    "LinearAction",
    "MLPAction",
    "ParamLoss",
    "Samples",
    "TrainConfig",
    "discover",
    "mlp",
    "module_loss",
    "sample",
    "three_layer_tanh_skip",
    "train",
    "two_layer",
    "__version__",
]
