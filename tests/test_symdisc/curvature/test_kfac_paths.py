"""The KFAC core's fast paths against their slow twins, in float64: the scalar backpropagation
of the output-Hessian columns (without ``create_graph``) against the ``grad_outputs`` one (with
it), the one-copy rows of the ``nn.Linear`` and ``nn.Conv2d`` rules against unfold and
concatenation, the layer-by-layer reduction against :func:`layer_terms`, and a KFAC fit that
never loads sympy (torch's shape check of a tensor ``grad_outputs`` imports it: 32 MB)."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from symdisc.curvature import StandardKFAC, kfac, kfac_batch, kfac_layers, kfac_rule_for
from symdisc.curvature.kfac.core import forward_with_layer_inputs, layer_terms

DTYPE = torch.float64


def small_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5),
    ).to(DTYPE)
    x = torch.randn(6, 2, 6, 6, dtype=DTYPE)
    y = torch.randint(0, 5, (6,))
    return model.eval(), x, y


@pytest.mark.parametrize("fisher", ["type2", "mc"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_scalar_backprop_equals_grad_outputs_backprop(fisher, loss):
    """``create_graph=False`` backpropagates ``<outputs, c>``; ``create_graph=True`` passes c
    as ``grad_outputs``: the same factors."""
    model, x, y = small_cnn()
    if loss == "mse":
        y = torch.randn(6, 5, dtype=DTYPE)
    options = {"loss": loss, "fisher": fisher, "generator": 3}
    fast = kfac(model, [(x[:4], y[:4]), (x[4:], y[4:])], **options)
    slow = kfac(model, [(x[:4], y[:4]), (x[4:], y[4:])], create_graph=True, **options)
    assert fast.keys() == slow.keys()
    for key in fast:
        torch.testing.assert_close(fast[key].A, slow[key].A.detach(), rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(fast[key].G, slow[key].G.detach(), rtol=1e-13, atol=1e-15)


def test_rule_rows_equal_unfold_and_concatenation():
    """The rules' one-copy rows: ``[patches, 1]`` from F.unfold and the output gradients of
    every column concatenated column after column, as the slow reference builds them."""
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1).to(DTYPE)
    x = torch.randn(5, 3, 7, 7, dtype=DTYPE)
    grads = [torch.randn(5, 4, 4, 4, dtype=DTYPE) for _ in range(3)]
    (term,) = kfac_rule_for(conv)(conv, x, grads)
    patches = F.unfold(x, 3, padding=1, stride=2)  # (N, C k k, L)
    a_ref = torch.cat(
        [patches.transpose(1, 2).reshape(-1, 27), torch.ones(5 * 16, 1, dtype=DTYPE)], dim=1
    )
    g_ref = torch.cat([g.flatten(2).transpose(1, 2).reshape(-1, 4) for g in grads])
    assert torch.equal(term.a, a_ref) and torch.equal(term.g, g_ref) and term.bias
    linear = nn.Linear(6, 2, bias=False).to(DTYPE)
    xl = torch.randn(4, 6, dtype=DTYPE)
    gl = [torch.randn(4, 2, dtype=DTYPE) for _ in range(2)]
    (term,) = kfac_rule_for(linear)(linear, xl, gl)
    assert torch.equal(term.a, xl) and torch.equal(term.g, torch.cat(gl)) and not term.bias


def test_rule_rows_keep_the_graph_of_the_inputs():
    """With ``create_graph`` the rows are differentiable in the layer input (the copies into a
    new tensor are recorded by autograd)."""
    conv = nn.Conv2d(2, 3, 3).to(DTYPE)
    x = torch.randn(2, 2, 5, 5, dtype=DTYPE, requires_grad=True)
    (term,) = kfac_rule_for(conv)(conv, x, [torch.randn(2, 3, 3, 3, dtype=DTYPE)])
    (grad,) = torch.autograd.grad((term.a**2).sum(), x)
    (ref,) = torch.autograd.grad((F.unfold(x, 3) ** 2).sum(), x)
    torch.testing.assert_close(grad, ref, rtol=1e-14, atol=1e-14)


def test_layer_terms_leaves_captured_unchanged_and_matches_the_batch_sums():
    """:func:`layer_terms` (public) does not consume the caller's captured dict, and its rows'
    Gram matrices are the block sums that the layer-by-layer core accumulates."""
    model, x, _ = small_cnn()
    layers = kfac_layers(model)
    point = {n: p.detach().requires_grad_(True) for n, p in model.named_parameters()}
    outputs, captured = forward_with_layer_inputs(model, layers, point, x, False)
    columns = StandardKFAC().output_columns(outputs.detach(), "cross_entropy")
    keys = list(captured)
    terms = layer_terms(layers, outputs, captured, columns, False)
    assert list(captured) == keys
    _, blocks = kfac_batch(model, x, StandardKFAC(), loss="cross_entropy")
    for name, (term,) in terms.items():
        torch.testing.assert_close(blocks[name].aa, term.a.T @ term.a, rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(blocks[name].gg, term.g.T @ term.g, rtol=1e-13, atol=1e-14)


def test_kfac_batch_outputs_keep_their_graph():
    """kfac_batch returns the outputs with their graph (the accumulation core alone frees it)."""
    model, x, _ = small_cnn()
    x.requires_grad_(True)
    outputs, _ = kfac_batch(model, x, StandardKFAC(), loss="cross_entropy")
    (grad,) = torch.autograd.grad(outputs.sum(), x)  # raises if the graph was freed
    (ref,) = torch.autograd.grad(model(x).sum(), x)
    torch.testing.assert_close(grad, ref, rtol=1e-13, atol=1e-14)


def test_a_kfac_fit_does_not_import_sympy():
    """A tensor ``grad_outputs`` makes torch.autograd.grad import sympy (32 MB resident, most
    of the KFAC fit's peak memory in a fresh process); the fit must not need one."""
    code = (
        "import sys, torch\n"
        "from torch import nn\n"
        "from symdisc.curvature import kfac\n"
        "m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3))\n"
        "x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])\n"
        "kfac(m.eval(), [(x, y)], loss='cross_entropy')\n"
        "kfac(m.eval(), [(x, torch.randn(4, 3))], loss='mse', fisher='mc', generator=0)\n"
        "print('sympy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("bias", ["folded", "separate"])
def test_chunked_kfac_equals_unchunked(bias):
    """Chunks of samples give the same factors and loss as whole batches (sums over samples)."""
    from symdisc.curvature import kfac_with_loss

    model, x, y = small_cnn()
    data = [(x[:5], y[:5]), (x[5:], y[5:])]
    whole, loss = kfac_with_loss(model, data, loss="cross_entropy", bias=bias, chunk_size=len(x))
    for chunk in (1, 2, 4, None):
        part, loss_c = kfac_with_loss(
            model, data, loss="cross_entropy", bias=bias, chunk_size=chunk
        )
        assert part.keys() == whole.keys()
        torch.testing.assert_close(loss_c, loss, rtol=1e-13, atol=1e-13)
        for key in whole:
            torch.testing.assert_close(part[key].A, whole[key].A, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(part[key].G, whole[key].G, rtol=1e-12, atol=1e-14)


def test_automatic_chunks_hold_at_most_the_entry_cap(monkeypatch):
    """The default chunk is sized from a one-sample pass: C outputs x E layer-output entries
    per sample; lowering the entry cap splits each batch into chunks of cap // (C E) samples,
    the sample cap bounds them too, and the factors stay the sums over all samples."""
    from symdisc.curvature.kfac import core

    model, x, y = small_cnn()
    whole = kfac(model, [(x, y)], loss="cross_entropy", chunk_size=len(x))
    sizes: list[int] = []
    forward = core.forward_with_layer_inputs

    def spy(model, layers, point, inputs, keep_graph):
        sizes.append(inputs.shape[0])
        return forward(model, layers, point, inputs, keep_graph)

    per_sample = 5 * (3 * 3 * 3 + 4 * 3 * 3 + 5)  # C = 5 outputs x the three layers' outputs
    monkeypatch.setattr(core, "forward_with_layer_inputs", spy)
    monkeypatch.setattr(core, "KFAC_CHUNK_ENTRIES", 4 * per_sample + 1)
    chunked = kfac(model, [(x, y)], loss="cross_entropy")
    assert sizes == [1, 4, 2]  # the sizing pass, then 6 samples in chunks of 4
    sizes.clear()
    monkeypatch.setattr(core, "KFAC_CHUNK_ENTRIES", 2**24)
    monkeypatch.setattr(core, "KFAC_CHUNK_SAMPLES", 5)
    capped = kfac(model, [(x, y)], loss="cross_entropy")
    assert sizes == [1, 5, 1]  # entries allow all 6, the sample cap allows 5
    for key in whole:
        torch.testing.assert_close(capped[key].A, whole[key].A, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(capped[key].G, whole[key].G, rtol=1e-12, atol=1e-14)
    for key in whole:
        torch.testing.assert_close(chunked[key].A, whole[key].A, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(chunked[key].G, whole[key].G, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunk", [0, -1, 1.5, "2"])
def test_bad_chunk_size_is_named(chunk):
    model, x, y = small_cnn()
    with pytest.raises((ValueError, TypeError), match="chunk_size"):
        kfac(model, [(x, y)], loss="cross_entropy", chunk_size=chunk)
