"""ella: relaxed-equivariance layers and Laplace marginal likelihoods (papers 000, 001, 003).

Builds on :mod:`symdisc.curvature` (and on nothing else of ``symdisc``). The layers, the marginal
likelihood and the invariance learning land with their own issues.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
