"""The registry of KFAC layer rules: what a rule returns and how layers find their rule.

Infrastructure of KFAC (paper 000, appendix C: one Kronecker-factored block per layer). A *rule*
turns a layer's input and the gradients backpropagated to its output into the rows whose outer
products make the two Kronecker factors (:class:`KronTerms`). Rules are looked up by module type
along the MRO: :mod:`symdisc.curvature.kfac.rules` registers ``nn.Linear`` and ``nn.Conv2d``,
other packages register theirs with :func:`register_kfac_rule` (``ella.layers.kfac_rules``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["KronTerms", "KFACRule", "register_kfac_rule", "kfac_rule_for", "kfac_layers"]


@dataclass(frozen=True, repr=False)
class KronTerms:
    """What a layer rule extracts from one batch for one Kronecker-factored block.

    Attributes:
        params: names, inside the module, of the parameters the block covers: a weight whose
            shape flattens to (d_G, d_A') and, if ``bias`` is true, a bias of shape (d_G,).
        a: (R, d_A) rows whose mean outer product is the A factor (R samples x shared positions).
        g: (R', d_G) rows whose summed outer product is the G factor (all output-Hessian columns).
        bias: whether the last coordinate of ``a`` is the constant 1 of a bias.

    Either of ``a`` and ``g`` may instead be *block rows* of shape (R, K, d): shorthand for the
    R K rows ``e_k (x) x[r, k]`` of length K d, each non-zero in one block only, whose outer
    product sum is the block-diagonal ``block_diag_k(sum_r x[r, k] x[r, k]^T)``
    (:func:`symdisc.curvature.row_gram`). A factored layer's input expanded over a channel axis
    has this form; the short form saves a factor K of memory and K^2 of time.
    """

    params: tuple[str, ...]
    a: Tensor
    g: Tensor
    bias: bool

    def __repr__(self) -> str:
        return (
            f"KronTerms(params={self.params}, a={tuple(self.a.shape)}, g={tuple(self.g.shape)}, "
            f"bias={self.bias})"
        )


KFACRule = Callable[[nn.Module, Tensor, Sequence[Tensor]], list[KronTerms]]
"""``rule(module, layer_input, output_grads) -> [KronTerms]``; ``output_grads`` holds one
tensor shaped like the layer's output per output-Hessian column."""

_RULES: dict[type, KFACRule] = {}


def register_kfac_rule(module_type: type) -> Callable[[KFACRule], KFACRule]:
    """Decorator that registers the KFAC rule of a module type (and of its subclasses).

    Raises:
        TypeError: if ``module_type`` is not an ``nn.Module`` subclass.

    Example:
        >>> @register_kfac_rule(MyLayer)
        ... def _my_layer(module, layer_input, output_grads):
        ...     return [KronTerms(("weight",), a=..., g=..., bias=False)]
    """
    if not isinstance(module_type, type) or not issubclass(module_type, nn.Module):
        raise TypeError(f"`module_type` must be an nn.Module subclass, got {module_type!r}")

    def register(rule: KFACRule) -> KFACRule:
        _RULES[module_type] = rule
        return rule

    return register


def kfac_rule_for(module: nn.Module) -> KFACRule | None:
    """The rule registered for the module's type or its nearest base class, or None."""
    for cls in type(module).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return None


def kfac_layers(model: nn.Module, modules: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """``{name: module}`` of the layers KFAC covers, in ``named_modules`` order.

    Args:
        model: the network.
        modules: names of the layers to cover (default: every submodule with a rule). Layers are
            chosen by exact name, never by substring.

    Raises:
        ValueError: for a model without any layer that has a rule, or named modules that are
            not submodules of ``model`` or have no rule.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    if modules is not None and (isinstance(modules, str) or not isinstance(modules, Sequence)):
        raise TypeError(f"`modules` must be a list of layer names, got {type(modules).__name__}")
    named = dict(model.named_modules())
    if modules is None:
        layers = {n: m for n, m in named.items() if kfac_rule_for(m) is not None}
        if not layers:
            raise ValueError(
                f"`model` has no layer with a KFAC rule (rules exist for {_rule_names()})"
            )
        return layers
    missing = [n for n in modules if n not in named]
    if missing:
        raise ValueError(f"`modules` must name submodules of `model`; {missing} are not among them")
    ruleless = [n for n in modules if kfac_rule_for(named[n]) is None]
    if ruleless:
        raise ValueError(
            f"`modules` {ruleless} have no KFAC rule (rules exist for {_rule_names()})"
        )
    return {n: named[n] for n in modules}


def _rule_names() -> list[str]:
    return sorted(t.__name__ for t in _RULES)
