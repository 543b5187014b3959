"""ella: relaxed-equivariance layers and Laplace marginal likelihoods (papers 000, 001, 003).

Builds on :mod:`symdisc.curvature` (and on nothing else of ``symdisc``).

=============  ==============================================================================
module         contents
=============  ==============================================================================
``layers``     relaxed layers FC, CONV, F-FC, S-FC, S-CONV, p4 group layers, path sums, tags,
               polyphase pooling; relaxed and strict C4 group convolutions (paper 003)
``models``     the architecture of paper 000, table 6, with any layer family
``testing``    ``assert_equivariant``
``laplace``    the Laplace log marginal likelihood with per-layer, per-path priors (full, kron,
               diag)
``kfac``       KFAC rules of the relaxed layers (FC, CONV, F-FC, S-FC, S-CONV) and the p4 group
               layers, registered with :func:`symdisc.curvature.register_kfac_rule` on import
``marglik``    online marginal-likelihood training, effective numbers of parameters
``invariance`` augmentation distributions, invariant models, augmented KFAC/GGN and invariance
               learning by the marginal likelihood (paper 001) or Augerino
``data``       the toy and transformed-digits data of paper 001, local MNIST IDX loaders
``plume``      a 2-D smoke-plume simulator, its C4 data sets and the next-frame task
``dynamics``   training on the next-frame task; sharpness and Hessian spectra (paper 003)
``plot``       figures (matplotlib, Agg)
=============  ==============================================================================
"""

from ella import laplace, layers, marglik, models, testing

__version__ = "0.1.0"

__all__ = ["kfac", "laplace", "layers", "marglik", "models", "testing", "__version__"]
