"""ella: relaxed-equivariance layers and Laplace marginal likelihoods (papers 000, 001, 003).

Builds on :mod:`symdisc.curvature` and :mod:`symdisc.runtime` (and on nothing else of
``symdisc``).

=================  ==========================================================================
module             contents
=================  ==========================================================================
``layers``         paper 000: relaxed layers FC, CONV, F-FC, S-FC, S-CONV, path sums, tags,
                   polyphase pooling, p4 group layers; paper 003: relaxed C4 lifting and group
                   convolutions; ``layers.kfac_rules``: their KFAC rules, registered with
                   :func:`symdisc.curvature.register_kfac_rule` on import
``laplace``        papers 000/001: the Laplace log marginal likelihood with per-layer, per-path
                   priors, one class per structure (full, kron, diag) behind the ``Laplace``
                   factory; post-hoc prior tuning
``marglik``        paper 000: online marginal-likelihood training, effective numbers of
                   parameters, the table-4 report per relaxed layer
``invariance``     paper 001: augmentation distributions, invariant models, augmented KFAC
                   (eq. 19), the eta-gradient (section 4.3), LILA and Augerino training
``dynamics``       paper 003: smoke-plume simulator and C4 data sets, field networks,
                   next-frame training, sharpness and Hessian spectra
``models``         networks of the experiments: the table-6 network of paper 000 with any layer
                   family, the quadrant models of table 1
``data``           embedded and local data: toy arcs, transformed digits, quadrant canvases,
                   MNIST IDX loaders (never imports a method module)
``affine``         the affine generators and resampling shared by ``invariance`` and ``data``
``summary``        the short ``__repr__`` of the result classes (shapes, not whole tensors)
``plot``           figures (matplotlib, Agg)
``testing``        ``assert_equivariant``
=================  ==========================================================================
"""

from ella import laplace, layers, marglik, models, testing

__version__ = "0.1.0"

__all__ = ["laplace", "layers", "marglik", "models", "testing", "__version__"]
