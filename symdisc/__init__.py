"""symdisc: finding symmetries in the parameter spaces of neural networks.

The shared derivative layer lives in :mod:`symdisc.curvature`; the discovery framework of
paper 002 (Lie generators and learned group actions) builds on it.
"""

from symdisc import curvature

__version__ = "0.1.0"

__all__ = ["curvature", "__version__"]
