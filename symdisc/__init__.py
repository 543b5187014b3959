"""symdisc: finding symmetries in the parameter spaces of neural networks (paper 002).

=================  ===========================================================================
module             contents
=================  ===========================================================================
``curvature``      the shared derivative layer (Jacobians, Hessian/GGN, KFAC, spectra, ...);
                   imports only torch
``runtime``        what every trainer shares: argument checks, ``NonFiniteLossError``,
                   atomic checkpoints with validated resume, the training loop
``losses``         :class:`ParamLoss` and its typed kinds: two-layer nets, the tanh net with a
                   skip, deep MLPs, losses over chosen parameters of any ``nn.Module``
``sampler``        fixed sets of (theta, X, Y) samples with their loss gradients
``actions``        group actions a_X(g, theta): :class:`MLPAction`, :class:`LinearAction`
``generators``     k learnable elements of gl(d)
``objective``      the infinitesimal (eqs. 2-4) and exponentiated (app. B.2) objectives
``trainer``        :func:`train`: Adam with step decay, on the runtime loop
``discovery``      :func:`discover`: one call from a loss to a learned symmetry
``known``          known symmetries by kind of loss: continuous ones and their tangent spaces,
                   permutations and sign flips, the null-space baseline, :class:`KnownAction`
``compose``        symmetries of larger networks induced from subnetworks (Prop. 3.1)
``metrics``        invariance error, energy outside a known space, flow drift, axioms, field
                   rank, coverage, and a verdict against random-direction baselines
``dimension``      the dimension of the symmetry algebra by learning with growing k; Lie closure
``teleport``       symmetry teleportation along a learned or known orbit (Zhao et al. 2022)
``testing``        ``assert_loss_invariant``
``plot``           generator heatmaps, training curves, loss along flows, spectra
=================  ===========================================================================
"""

import importlib

# The discovery API is loaded on first use, so that ``import symdisc.curvature`` (and so
# ``import ella``) does not load discovery and training.
_LAZY = {
    "curvature": "symdisc.curvature",
    "Discovery": "symdisc.trainer",
    "Generators": "symdisc.generators",
    "LinearAction": "symdisc.actions",
    "MLPAction": "symdisc.actions",
    "MLPLoss": "symdisc.losses",
    "ModuleLoss": "symdisc.losses",
    "ParamLoss": "symdisc.losses",
    "Samples": "symdisc.sampler",
    "TanhSkipLoss": "symdisc.losses",
    "TrainConfig": "symdisc.trainer",
    "TwoLayerLoss": "symdisc.losses",
    "discover": "symdisc.discovery",
    "mlp": "symdisc.losses",
    "module_loss": "symdisc.losses",
    "sample": "symdisc.sampler",
    "three_layer_tanh_skip": "symdisc.losses",
    "train": "symdisc.trainer",
    "two_layer": "symdisc.losses",
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'symdisc' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if _LAZY[name] == f"symdisc.{name}" else getattr(module, name)


__version__ = "0.1.0"

__all__ = [
    "curvature",
    "Discovery",
    "Generators",
    "LinearAction",
    "MLPAction",
    "MLPLoss",
    "ModuleLoss",
    "ParamLoss",
    "Samples",
    "TanhSkipLoss",
    "TrainConfig",
    "TwoLayerLoss",
    "discover",
    "mlp",
    "module_loss",
    "sample",
    "three_layer_tanh_skip",
    "train",
    "two_layer",
    "__version__",
]
