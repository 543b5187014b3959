"""Invariance learning with the differentiable Laplace marginal likelihood (paper 001, LILA).

==========================  ==================================================================
piece                       paper 001
==========================  ==================================================================
:class:`AffineAugmentation`  section 3.4 and appendix A: ``x' = g(x, eps; eta)``, per example
                            and per draw ``eps ~ U[-1, 1]^6``, the matrix exponential of
                            ``sum_i eps_i eta_i G_i`` over the six affine generators, bilinear
                            resampling; differentiable in eta by reparameterisation
:class:`PointRotation`      the same for 2-D points: a rotation about the origin by ``eps eta``
:class:`InvariantModel`     eq. (16): ``f_hat(x) = 1/S sum_s f(g(x, eps_s; eta))`` (logits
                            averaged), at training and test time
:class:`DrawAverage`        ``f_hat`` on draws made beforehand, ``(B, S, ...) -> (B, C)``: the
                            module the Laplace approximation integrates over
:func:`augmented_kfac`      section 4.2, eq. (19): KFAC of the invariant model with the
                            *Kronecker product of expectations* ``E[a'] E[a']^T (x)
                            E[g'] Lambda E[g']^T``
full GGN                    eq. (17): :func:`symdisc.curvature.ggn_rows` of a
                            :class:`DrawAverage` is the GGN with averaged Jacobians (the
                            Jacobian of the average is the average of the Jacobians)
:func:`eta_gradient`        section 4.3, eq. (20): the eta-gradient of the log marginal
                            likelihood from a preconditioner accumulated once and per-batch
                            (stochastic) terms
:func:`train_invariant`     the marginal-likelihood loop of :mod:`ella.marglik` with eta as a
                            hyperparameter (own optimiser, learning rate, burn-in), and the
                            Augerino baseline (Benton et al., 2020); warns
                            (:class:`FewEtaStepsWarning`) when a schedule gives eta fewer
                            than :data:`MIN_ETA_STEPS` steps (:func:`count_eta_steps`)
==========================  ==================================================================

The augmentation parameters eta are *not* parameters of the model: an augmentation holds them
as a plain tensor attribute (a leaf that requires a gradient), so the Laplace approximation,
which integrates over the model's trainable parameters, never integrates over them, and they
enter the marginal likelihood through the augmented inputs ``x'`` (which then require a
gradient, so :class:`ella.laplace.Laplace` keeps the graph).
"""

from ella.affine import AFFINE_GENERATORS, AFFINE_NAMES, affine_matrices, affine_transform
from ella.invariance.augmentation import AffineAugmentation, Augmentation, PointRotation
from ella.invariance.kfac import AugmentedKFAC, augmented_kfac
from ella.invariance.laplace import eta_gradient, invariant_laplace
from ella.invariance.models import DrawAverage, InvariantModel
from ella.invariance.training import (
    MIN_ETA_STEPS,
    FewEtaStepsWarning,
    InvarianceConfig,
    InvarianceMethod,
    InvarianceResult,
    count_eta_steps,
    train_invariant,
)

__all__ = [
    "AFFINE_GENERATORS",
    "AFFINE_NAMES",
    "Augmentation",
    "AffineAugmentation",
    "PointRotation",
    "DrawAverage",
    "InvariantModel",
    "affine_matrices",
    "affine_transform",
    "AugmentedKFAC",
    "augmented_kfac",
    "invariant_laplace",
    "eta_gradient",
    "InvarianceMethod",
    "InvarianceConfig",
    "InvarianceResult",
    "train_invariant",
    "count_eta_steps",
    "FewEtaStepsWarning",
    "MIN_ETA_STEPS",
]
