"""What every relaxed-equivariance layer shares: the path tags of its parameters.

Paper 000 places one prior per layer *and path* (a fully connected path, a convolutional path, a
group-convolutional path). Parameters say which path they belong to through an explicit tag held
by the layer, never through their names, so that ``ella.laplace`` can group them reliably.
"""

from __future__ import annotations

from typing import Literal, get_args

from torch import nn

Path = Literal["fc", "conv", "gconv"]

__all__ = ["Path", "RelaxedLayer", "parameter_paths"]


class RelaxedLayer(nn.Module):
    """Base class: a map of feature maps (B, C, H, W) -> (B, C', H', W') whose parameters are
    tagged with the path they belong to.

    Subclasses call :meth:`tag` for every parameter they register (``self.tag("weight", "fc")``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.paths: dict[str, Path] = {}

    def tag(self, name: str, path: Path) -> None:
        """Record that the parameter ``name`` of this module belongs to ``path``."""
        if path not in get_args(Path):
            raise ValueError(f"`path` must be one of {get_args(Path)}, got {path!r}")
        if name not in dict(self.named_parameters(recurse=False)):
            raise ValueError(f"`name` must be a parameter of this layer, got {name!r}")
        self.paths[name] = path


def parameter_paths(model: nn.Module) -> dict[str, tuple[str, Path]]:
    """``{parameter name: (layer name, path)}`` for every tagged parameter of ``model``."""
    out: dict[str, tuple[str, Path]] = {}
    for layer_name, module in model.named_modules():
        for name, path in getattr(module, "paths", {}).items():
            full = f"{layer_name}.{name}" if layer_name else name
            out[full] = (layer_name, path)
    return out
