"""What every layer of :mod:`ella.layers` shares (paper 000, section 3 and App. A): the path tags
of its parameters, their initialisation, the circular convolution and the checks of its sizes and
feature maps.

Paper 000 places one prior per layer *and path* (section 3.2: a fully connected path, a
convolutional path, a group-convolutional path, summed as in eq. 4 and App. A, eq. 10).
Parameters say which path they belong to through an explicit tag held by the layer, never through
their names, so that ``ella.laplace`` can group them reliably.

Feature maps are planar, ``(B, C, H, W)``, or on the group p4, ``(B, C, 4, H, W)`` (batch,
channel, rotation, space; :data:`GROUP_ORDER` rotations).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symdisc.runtime import check_choice, check_instance, check_int

Path = Literal["fc", "conv", "gconv"]

GROUP_ORDER = 4
"""The number of rotations of p4 = Z2 ⋊ C4, the size of the rotation axis of a group map."""

__all__ = [
    "GROUP_ORDER",
    "Path",
    "RelaxedLayer",
    "parameter_paths",
    "check_feature_map",
    "check_input_dtype",
    "check_kernel_size",
    "check_out_size",
    "check_shape",
    "uniform_",
    "circular_pad",
    "circular_conv",
]


def uniform_(tensor: Tensor, fan_in: int) -> Tensor:
    """Fill ``tensor`` in place from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (the scale of the
    ``nn.Linear`` and ``nn.Conv2d`` defaults) and return it."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


class RelaxedLayer(nn.Module):
    """Base class: a map of feature maps (B, C, H, W) -> (B, C', H', W') (or of group maps
    (B, C, 4, H, W)) whose parameters are tagged with the path they belong to.

    Subclasses call :meth:`tag` for every parameter they register (``self.tag("weight", "fc")``),
    or register and tag it in one step with :meth:`init_parameter` and :meth:`init_bias`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.paths: dict[str, Path] = {}

    def tag(self, name: str, path: Path) -> None:
        """Record that the parameter ``name`` of this module belongs to ``path``."""
        check_choice(path, "path", Path)
        if name not in dict(self.named_parameters(recurse=False)):
            raise ValueError(f"`name` must be a parameter of this layer, got {name!r}")
        self.paths[name] = path

    def init_parameter(
        self, name: str, shape: tuple[int, ...], fan_in: int, path: Path
    ) -> nn.Parameter:
        """Register the parameter ``name`` of ``shape``, drawn by :func:`uniform_` with
        ``fan_in``, and tag it with ``path``."""
        param = nn.Parameter(uniform_(torch.empty(shape), fan_in))
        self.register_parameter(name, param)
        self.tag(name, path)
        return param

    def init_bias(self, bias: bool, shape: tuple[int, ...], fan_in: int, path: Path) -> None:
        """With ``bias``, the parameter ``bias`` as in :meth:`init_parameter`; else ``None``."""
        if bias:
            self.init_parameter("bias", shape, fan_in, path)
        else:
            self.register_parameter("bias", None)


def parameter_paths(model: nn.Module) -> dict[str, tuple[str, Path]]:
    """``{parameter name: (layer name, path)}`` for every tagged parameter of ``model``."""
    out: dict[str, tuple[str, Path]] = {}
    for layer_name, module in model.named_modules():
        for name, path in getattr(module, "paths", {}).items():
            full = f"{layer_name}.{name}" if layer_name else name
            out[full] = (layer_name, path)
    return out


# --------------------------------------------------------------------------------------------
# circular convolution
# --------------------------------------------------------------------------------------------


def circular_pad(x: Tensor, kernel_size: int) -> Tensor:
    """Pad the last two dims of ``x`` circularly by ``kernel_size // 2`` on every side (no copy
    when that is 0): an odd S x S filter then keeps the spatial size."""
    pad = kernel_size // 2
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="circular")
    return x


def circular_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None, groups: int = 1) -> Tensor:
    """``conv2d`` (a cross-correlation) of ``x`` (B, C, H, W) with odd S x S filters ``weight``
    (C', C / groups, S, S) and circular padding (paper 000, eq. 3): (B, C', H, W)."""
    return F.conv2d(circular_pad(x, weight.shape[-1]), weight, bias, groups=groups)


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------


def check_kernel_size(kernel_size: object) -> int:
    """``kernel_size`` as a positive odd int (a filter needs a centre pixel to pad and rotate
    about).

    Raises:
        TypeError: for a non-int.
        ValueError: for a non-positive or even int.
    """
    k = check_int(kernel_size, "kernel_size", minimum=1)
    if k % 2 == 0:
        raise ValueError(
            f"`kernel_size` must be odd (a filter needs a centre pixel to rotate about), got {k}"
        )
    return k


def check_out_size(in_size: int, out_size: int) -> None:
    """Check that a layer keeps the resolution or halves an even one.

    Raises:
        ValueError: unless ``out_size`` is ``in_size``, or ``in_size // 2`` with an even
            ``in_size``.
    """
    if out_size not in (in_size, in_size // 2) or (out_size != in_size and in_size % 2):
        raise ValueError(
            f"`out_size` must be in_size={in_size} or in_size // 2 with an even in_size, "
            f"got out_size={out_size}"
        )


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # pragma: no cover  (an older torch without the device argument)
        return torch.is_autocast_enabled()


def check_input_dtype(x: Tensor, layer: str, module: nn.Module | None = None) -> Tensor:
    """``x`` if its dtype is floating and, for a ``module`` with parameters, the dtype of its
    first parameter (any floating dtype under autocast, which casts inside the layer).

    Raises:
        TypeError: naming ``x``, the expected and the given dtype, and the fix.
    """
    want = None if module is None else next((p.dtype for p in module.parameters()), None)
    if x.is_floating_point() and (want is None or x.dtype == want or _autocast_on(x.device.type)):
        return x
    if want is None:
        raise TypeError(f"{layer}: `x` must be a floating tensor, got dtype {x.dtype}")
    raise TypeError(
        f"{layer}: `x` must have the layer's floating dtype {want}, got {x.dtype} "
        f"(convert it with `x.to({want})`, or the layer with `.to({x.dtype})`)"
    )


def check_feature_map(
    x: object,
    layer: str,
    *,
    group: bool = False,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    module: nn.Module | None = None,
) -> Tensor:
    """``x`` if it is a planar feature map ``(B, C, H, W)`` (or, with ``group``, a group feature
    map ``(B, C, 4, H, W)``) with ``C == channels`` and ``(H, W) == size`` when given.

    Args:
        x: the input.
        layer: the name of the layer or function, put in front of the messages.
        group: whether a group map is expected.
        channels: the expected C, or None for any.
        size: the expected (H, W), or None for any.
        module: the layer whose parameters' dtype ``x`` must have (:func:`check_input_dtype`),
            or None for any floating dtype.

    Raises:
        TypeError: if ``x`` is not a floating Tensor (of ``module``'s dtype).
        ValueError: naming the expected and the given shape.
    """
    x = check_instance(x, "x", Tensor)
    if group:
        kind, dims = "group", f"(B, C, {GROUP_ORDER}, H, W)"
        ok = x.dim() == 5 and x.shape[2] == GROUP_ORDER
    else:
        kind, dims, ok = "planar", "(B, C, H, W)", x.dim() == 4
    if not ok:
        raise ValueError(
            f"{layer}: `x` must be a {kind} feature map of shape {dims}, got shape {tuple(x.shape)}"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{layer}: `x` must have {channels} input channels (dim 1), got {x.shape[1]} "
            f"(shape {tuple(x.shape)})"
        )
    if size is not None and tuple(x.shape[-2:]) != size:
        raise ValueError(
            f"{layer}: `x` must have spatial size {size}, got {tuple(x.shape[-2:])} "
            f"(shape {tuple(x.shape)})"
        )
    return check_input_dtype(x, layer, module)


def check_shape(
    x: object, expected: tuple[int, ...], layer: str, module: nn.Module | None = None
) -> Tensor:
    """``x`` if it has shape ``(B, *expected)``: ``expected`` is (C, H, W) for a planar map and
    (C, 4, H, W) for a group map; a floating dtype, ``module``'s when given
    (:func:`check_input_dtype`).

    Raises:
        TypeError: if ``x`` is not a floating Tensor (of ``module``'s dtype).
        ValueError: naming the expected and the given shape.
    """
    x = check_instance(x, "x", Tensor)
    if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        dims = "(B, C, H, W)" if len(expected) == 3 else f"(B, C, {GROUP_ORDER}, H, W)"
        raise ValueError(
            f"{layer} expects input of shape {dims} = (B, {', '.join(map(str, expected))}), "
            f"got shape {tuple(x.shape)}"
        )
    return check_input_dtype(x, layer, module)
